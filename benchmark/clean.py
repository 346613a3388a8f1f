"""The clean battery: the fracture probability of every evaluation image, and the clean metrics."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from . import decision
from .battery import BatteryResult, EvalSet, RunContext, ShardOutput, chunk_index, chunk_keys
from .errors import FxbenchError
from .models.device import model_device
from .results.metric_ids import clean_id
from .results.metrics import MetricDef


@torch.no_grad()
def clean_logits(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int) -> torch.Tensor:
    """N x 2 canonical logits on the CPU; non-finite logits are a submission error (decision.require_finite)."""
    device = model_device(model)
    out = []
    for i in range(0, len(x), batch_size):
        z = model(x[i : i + batch_size].to(device)).float().cpu()
        decision.require_finite(z, where="on clean evaluation images")
        out.append(z)
    return torch.cat(out) if out else torch.empty(0, 2)


def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int) -> torch.Tensor:
    """Fracture probabilities (softmax of the two canonical logits), on the CPU."""
    return torch.softmax(clean_logits(model, x, batch_size=batch_size), dim=1)[:, 1]


def _check_threshold(config: dict[str, Any]) -> None:
    if float(config["threshold"]) != decision.THRESHOLD:
        raise FxbenchError(f"clean spec: 'threshold' is {config['threshold']!r}, but fxbench has one decision "
                           f"rule for every battery (p(fracture) >= {decision.THRESHOLD}; fxbench.decision).")


class CleanBattery:
    name = "clean"

    def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        _check_threshold(config)
        return config

    def shards(self, evalset: EvalSet, config: dict[str, Any]) -> list[str]:
        return chunk_keys(len(evalset.chunks(config["chunk_size"])))

    def run_shard(self, key, *, model, evalset: EvalSet, config, ctx: RunContext) -> ShardOutput:
        chunks = evalset.chunks(config["chunk_size"])
        lo, hi = chunks[chunk_index(key, len(chunks), battery=self.name)]
        _check_threshold(config)
        z = clean_logits(model, evalset.x[lo:hi], batch_size=config["batch_size"])
        p = torch.softmax(z, dim=1)[:, 1]
        pred = decision.predict(z)  # the one rule (a tie is a fracture), on the logits, not the rounded p
        y = evalset.y[lo:hi]
        samples = pd.DataFrame(
            {
                "image_id": evalset.ids[lo:hi],
                clean_id("p_fracture"): p.double().numpy(),
                clean_id("pred"): pred.numpy(),
                clean_id("correct"): (pred == y).double().numpy(),
            }
        )
        return ShardOutput(samples=samples)

    def finalize(self, outputs, *, model, evalset, config, ctx) -> BatteryResult:
        samples = pd.concat([outputs[k].samples for k in sorted(outputs)], ignore_index=True)
        return BatteryResult(samples=samples, metrics=self.expected_metrics(config),
                             info={"threshold": config["threshold"]})

    def expected_metrics(self, config: dict[str, Any]) -> list[MetricDef]:
        return [
            MetricDef(clean_id("accuracy"), clean_id("correct")),
            MetricDef(clean_id("balanced_accuracy"), clean_id("correct"), reduce="balanced_accuracy"),
            MetricDef(clean_id("sensitivity"), clean_id("correct"), where={"label": 1}),
            MetricDef(clean_id("specificity"), clean_id("correct"), where={"label": 0}),
            MetricDef(clean_id("auroc"), clean_id("p_fracture"), reduce="auroc"),
        ]
