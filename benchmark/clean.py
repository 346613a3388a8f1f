"""The clean battery: the fracture probability of every evaluation image, and the clean metrics."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from .battery import BatteryResult, EvalSet, RunContext, ShardOutput
from .results.metrics import MetricDef


def model_device(model: torch.nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int) -> torch.Tensor:
    """Fracture probabilities (softmax of the two canonical logits), on the CPU."""
    device = model_device(model)
    out = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size].to(device))
        out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
    return torch.cat(out) if out else torch.empty(0)


class CleanBattery:
    name = "clean"

    def shards(self, evalset: EvalSet, config: dict[str, Any]) -> list[str]:
        return [f"chunk-{i:03d}" for i, _ in enumerate(evalset.chunks(config["chunk_size"]))]

    def run_shard(self, key, *, model, evalset: EvalSet, config, ctx: RunContext) -> ShardOutput:
        lo, hi = evalset.chunks(config["chunk_size"])[int(key.split("-")[1])]
        p = predict(model, evalset.x[lo:hi], batch_size=config["batch_size"])
        pred = (p >= config["threshold"]).long()
        y = evalset.y[lo:hi]
        samples = pd.DataFrame(
            {
                "image_id": evalset.ids[lo:hi],
                "clean/p_fracture": p.double().numpy(),
                "clean/pred": pred.numpy(),
                "clean/correct": (pred == y).double().numpy(),
            }
        )
        return ShardOutput(samples=samples)

    def finalize(self, outputs, *, model, evalset, config, ctx) -> BatteryResult:
        samples = pd.concat([outputs[k].samples for k in sorted(outputs)], ignore_index=True)
        return BatteryResult(samples=samples, metrics=self.expected_metrics(config),
                             info={"threshold": config["threshold"]})

    def expected_metrics(self, config: dict[str, Any]) -> list[MetricDef]:
        return [
            MetricDef("clean/accuracy", "clean/correct"),
            MetricDef("clean/balanced_accuracy", "clean/correct", reduce="balanced_accuracy"),
            MetricDef("clean/sensitivity", "clean/correct", where={"label": 1}),
            MetricDef("clean/specificity", "clean/correct", where={"label": 0}),
            MetricDef("clean/auroc", "clean/p_fracture", reduce="auroc"),
        ]
