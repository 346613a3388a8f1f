"""The corruption battery: every evaluation image under MedMNIST-C's X-ray corruptions at five severities.

Shards are chunks of the evaluation images in evalset order, the clean battery's chunks. Per shard and per
(corruption, severity): the corrupted images (each from its own seed), the model's decision on them, whether
it is right, and the paired drop from the clean decision (read from the clean battery, or recomputed the same
way when a run leaves the clean battery out). On the fractured images of the stability subset, the explanation
endpoint on the clean image and on every stability condition's corrupted image, and their drop.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import decision
from ..battery import BatteryResult, EvalSet, RunContext, ShardOutput, chunk_index, chunk_keys, derive_seed
from ..clean import clean_logits
from ..errors import EvaluationBug
from ..explanations.methods import UnsupportedMethod
from ..models.device import model_device
from ..results.metric_ids import CLEAN_SHIFT, clean_id, reason_column, shift_id
from ..results.metrics import MetricDef
from . import catalogue
from .catalogue import CORRECT, P_FRACTURE, column, xai_column
from .config import CorruptionConfig, parse_config
from .ops import corrupt
from .stability import attribution_maps, score

NAME = "corruptions"


def image_seeds(run_seed: int, corruption: str, severity: int, ids: list[str]) -> list[int]:
    """The one seed rule of a corrupted image: the run seed, the corruption, the severity and the image id."""
    return [derive_seed(run_seed, NAME, corruption, severity, i) for i in ids]


@torch.no_grad()
def corrupted_logits(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int, where: str) -> torch.Tensor:
    """N x 2 canonical logits on the CPU, in the clean battery's batches; non-finite logits are the submission's."""
    device = model_device(model)
    out = []
    for i in range(0, len(x), batch_size):
        z = model(x[i : i + batch_size].to(device)).float().cpu()
        decision.require_finite(z, where=where)
        out.append(z)
    return torch.cat(out) if out else torch.empty(0, 2)


class CorruptionBattery:
    name = NAME

    def configure(self, config: dict[str, Any] | CorruptionConfig) -> CorruptionConfig:
        return parse_config(config)

    def shards(self, evalset: EvalSet, config) -> list[str]:
        return chunk_keys(len(evalset.chunks(parse_config(config).chunk_size)))

    def run_shard(self, key, *, model, evalset: EvalSet, config, ctx: RunContext) -> ShardOutput:
        cfg = parse_config(config)
        chunks = evalset.chunks(cfg.chunk_size)
        lo, hi = chunks[chunk_index(key, len(chunks), battery=self.name)]
        ids, x, y = evalset.ids[lo:hi], evalset.x[lo:hi], evalset.y[lo:hi]
        clean_correct, source = self._clean_correct(ctx, model, ids, x, y, cfg)
        data: dict[str, Any] = {"image_id": list(ids)}
        timings: dict[str, float] = {}
        stab = _Stability(cfg, evalset, lo, hi, model, ctx)
        for c, s in cfg.conditions:
            t0 = time.perf_counter()
            shift = shift_id(c, s)
            xc = corrupt(x, cfg.corruptions[c].op, cfg.corruptions[c].param(s), image_seeds(ctx.seed, c, s, ids))
            z = corrupted_logits(model, xc, batch_size=cfg.batch_size, where=f"on corrupted images ({shift})")
            correct = (decision.predict(z) == y).double().numpy()
            data[column(shift, P_FRACTURE)] = torch.softmax(z, dim=1)[:, 1].double().numpy()
            data[column(shift)] = correct
            data[column(shift, drop=True)] = clean_correct - correct
            if (c, s) in cfg.stability_conditions:
                stab.condition(shift, xc)
            timings[shift] = round(time.perf_counter() - t0, 3)
        for pooled, members in catalogue.mean_shifts(cfg).items():
            data[column(pooled)] = np.mean([data[column(m)] for m in members], axis=0)
            data[column(pooled, drop=True)] = np.mean([data[column(m, drop=True)] for m in members], axis=0)
        stab.put(data)
        info = {"clean_source": {source: len(ids)}, "timings_s": timings, "stability_images": stab.n}
        if stab.unsupported:
            info["unsupported"] = {cfg.stability.method: stab.unsupported}
        return ShardOutput(samples=pd.DataFrame(data), info=info)

    def _clean_correct(self, ctx: RunContext, model, ids, x, y, cfg: CorruptionConfig) -> tuple[np.ndarray, str]:
        """1.0 where the clean image is classified correctly: the clean battery's column, or (a run without the
        clean battery) the same decision on the same batches."""
        clean = ctx.previous.get("clean")
        col = clean_id(CORRECT)
        if clean is not None and col in clean.samples:
            known = clean.samples.set_index("image_id")[col]
            if all(i in known.index for i in ids):
                return known.loc[list(ids)].to_numpy(dtype=np.float64), "clean battery"
        z = clean_logits(model, x, batch_size=cfg.batch_size)
        return (decision.predict(z) == y).double().numpy(), "recomputed"

    def finalize(self, outputs: dict[str, ShardOutput], *, model, evalset, config, ctx) -> BatteryResult:
        cfg = parse_config(config)
        expected = self.shards(evalset, cfg)
        if sorted(outputs) != expected:
            raise EvaluationBug(f"{self.name}: shards {sorted(outputs)} != expected {expected}")
        samples = pd.concat([outputs[k].samples for k in expected], ignore_index=True)
        source: dict[str, int] = {}
        timings: dict[str, float] = {}
        for k in expected:
            for s, n in outputs[k].info.get("clean_source", {}).items():
                source[s] = source.get(s, 0) + int(n)
            for shift, t in outputs[k].info.get("timings_s", {}).items():
                timings[shift] = round(timings.get(shift, 0.0) + float(t), 3)
        info = {
            "source": cfg.source,
            "conditions": len(cfg.conditions),
            "clean_source": source,
            "stability": None if cfg.stability is None else {
                "method": cfg.stability.method, "endpoint": cfg.stability.endpoint,
                "images": sum(int(outputs[k].info.get("stability_images", 0)) for k in expected),
                "unsupported": next((o.info["unsupported"] for o in outputs.values() if "unsupported" in o.info), {}),
            },
            "timings_s": timings,
        }
        return BatteryResult(samples=samples, metrics=self.expected_metrics(cfg), info=info)

    def expected_metrics(self, config) -> list[MetricDef]:
        return catalogue.expected_metrics(config)


class _Stability:
    """The explanation endpoint on one shard's fractured images of the stability subset: clean, then one
    corrupted copy per stability condition."""

    def __init__(self, cfg: CorruptionConfig, evalset: EvalSet, lo: int, hi: int, model, ctx: RunContext):
        self.cfg, self.model, self.ctx = cfg, model, ctx
        self.n_rows = hi - lo
        self.values: dict[str, np.ndarray] = {}
        self.rows = np.array([], dtype=int)
        self.n = 0
        self.unsupported: str | None = None
        st = cfg.stability
        if st is None:
            return
        from ..explanations.selection import first_fractured_ids

        subset = set(first_fractured_ids(evalset, None if st.samples == "all" else st.samples))
        y = evalset.y[lo:hi].numpy()
        self.reasons = [None if i in subset else ("not fractured" if y[j] != 1 else
                        f"not in the stability subset (the first {st.samples} fractured ids)")
                        for j, i in enumerate(evalset.ids[lo:hi])]
        self.rows = np.array([j for j, r in enumerate(self.reasons) if r is None], dtype=int)
        self.n = len(self.rows)
        self.masks = evalset.masks[lo:hi][self.rows]
        self.device = model_device(model, ctx.device)
        if self.n:
            clean = evalset.x[lo:hi][self.rows]
            self.values[CLEAN_SHIFT] = self._endpoint(CLEAN_SHIFT, clean)

    def _endpoint(self, shift: str, x: torch.Tensor) -> np.ndarray:
        st = self.cfg.stability
        torch.manual_seed(derive_seed(self.ctx.seed, NAME, st.method, shift))  # methods that draw noise
        try:
            maps = attribution_maps(self.model, x, method=st.method, params=st.params, batch_size=st.batch_size,
                                    device=self.device)
        except UnsupportedMethod as e:  # Captum cannot explain this model: NaN with the reason, the run goes on
            self.unsupported = e.reason
            return np.full(len(x), np.nan)
        return score(st.endpoint, maps, self.masks, x)

    def condition(self, shift: str, xc: torch.Tensor) -> None:
        if self.n:
            self.values[shift] = self._endpoint(shift, xc[self.rows])

    def put(self, data: dict[str, Any]) -> None:
        """The endpoint columns (NaN with a reason outside the subset), the drops and the mean."""
        if self.cfg.stability is None:
            return
        clean = self._column(data, xai_column(self.cfg, CLEAN_SHIFT), self.values.get(CLEAN_SHIFT))
        conds = [shift_id(c, s) for c, s in self.cfg.stability_conditions]
        for shift in conds:
            got = self._column(data, xai_column(self.cfg, shift), self.values.get(shift))
            self._column(data, xai_column(self.cfg, shift, drop=True), None, full=clean - got)
        for pooled, members in catalogue.stability_mean_shifts(self.cfg).items():
            stack = np.array([data[xai_column(self.cfg, m)] for m in members])
            drops = np.array([data[xai_column(self.cfg, m, drop=True)] for m in members])
            with warnings.catch_warnings():  # nanmean of an all-NaN row (outside the subset): NaN, no warning
                warnings.simplefilter("ignore", RuntimeWarning)
                self._column(data, xai_column(self.cfg, pooled), None, full=np.nanmean(stack, axis=0))
                self._column(data, xai_column(self.cfg, pooled, drop=True), None, full=np.nanmean(drops, axis=0))

    def _column(self, data, col: str, sub: np.ndarray | None, *, full: np.ndarray | None = None) -> np.ndarray:
        if full is None:
            full = np.full(self.n_rows, np.nan)
            if sub is not None:
                full[self.rows] = sub
        data[col] = full
        why = f"unsupported: {self.unsupported}" if self.unsupported else "undefined (empty mask)"
        reasons = [r if r is not None else (None if np.isfinite(v) else why) for r, v in zip(self.reasons, full)]
        if any(r is not None for r in reasons):
            data[reason_column(col)] = reasons
        return full

