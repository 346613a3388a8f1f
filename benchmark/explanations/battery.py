"""The explanation battery: attributions of the fracture logit on the fractured images, scored against masks.

Shards are chunks of the fractured evaluation images (in evalset order). Per shard and per map (attribution
method or reference map): localisation scores for every image, model-based scores for the images of the
model-metric subset, and, when the robustness battery stored attacked images, localisation scores on them
and the drop from clean. ``finalize`` adds the metric definitions, the paired differences against the best
trivial reference (v2), flags and the gallery.

The parts: ``selection`` (images, shards, seeds), ``maps`` (maps and metric inputs), ``attacked`` (the
stored attacked points), ``perturbed`` (v3: the battery's own fixed-step attacked point and noise control),
``under_attack`` (the scores on them), ``catalogue`` (columns and metric definitions), ``summaries`` (info and
flags over shards), ``gallery`` (the pictures).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..battery import BatteryResult, EvalSet, RunContext, ShardOutput
from ..errors import EvaluationBug
from ..models import model_device
from ..results.metric_ids import clean_id, reason_column
from ..results.metrics import MetricDef
from . import catalogue, fast
from .attacked import load_attacked
from .catalogue import COMPLETENESS, DETECTED, MASK_PX, MASK_TERCILE, attacked_column, column, flipped_column
from .config import XaiConfig, parse_config
from .gallery import gallery_files
from .maps import completeness_error, compute_maps, explainer, for_localisation, metric_inputs, quiet
from .methods import METHODS, UnsupportedMethod
from .metrics import MetricInputs, Scores
from .perturbed import perturbed_inputs
from .selection import BATTERY, RunSeeds, first_fractured_ids, shard_keys, shard_rows, sub_seed
from .summaries import check_completeness, summarise, vs_reference_columns
from .under_attack import score_under_attack


class Columns:
    """Per-sample columns of one shard plus the NaN reasons, counted for info."""

    def __init__(self, ids: list[str]):
        self.data: dict[str, Any] = {"image_id": list(ids)}
        self.n = len(ids)
        self.nan: dict[str, dict[str, int]] = {}

    def put(self, col: str, scores: Scores) -> None:
        self.data[col] = scores.values.astype(np.float64)
        # A reason only where the value is NaN, and never a NaN without one.
        reasons = [
            None if np.isfinite(v) else (r or "undefined") for v, r in zip(scores.values, scores.reasons)
        ]
        if any(r is not None for r in reasons):
            self.data[reason_column(col)] = reasons
            self.nan[col] = dict(Counter(r for r in reasons if r is not None))

    def missing(self, col: str, reason: str) -> None:
        self.put(col, Scores(np.full(self.n, np.nan), [reason] * self.n))


class ExplanationBattery:
    name = BATTERY

    def configure(self, config: dict[str, Any] | XaiConfig) -> XaiConfig:
        """The typed configuration (parse once, pass it to the other methods; it pickles, and an
        ``XaiConfig`` comes back unchanged)."""
        return parse_config(config)

    def shards(self, evalset: EvalSet, config: dict[str, Any] | XaiConfig) -> list[str]:
        return shard_keys(evalset, parse_config(config).chunk_size)

    # -- one shard -------------------------------------------------------------------------------------

    def run_shard(
        self, key: str, *, model: torch.nn.Module, evalset: EvalSet, config: dict[str, Any] | XaiConfig,
        ctx: RunContext,
    ) -> ShardOutput:
        cfg = parse_config(config)
        rows = shard_rows(key, evalset, cfg.chunk_size)
        seed = ctx.shard_seed(self.name, key)
        device = model_device(model, ctx.device)
        ids = [evalset.ids[i] for i in rows]
        x, masks = evalset.x[rows].float(), evalset.masks[rows].bool()
        cols = Columns(ids)
        info: dict[str, Any] = {"unsupported": {}, "failed": {}, "timings_s": {}}
        if cfg.under_attack is not None and cfg.under_attack.points == "fixed_step":  # v3: made here
            adv, adv_status = perturbed_inputs(model, ctx.seed, ids, x, cfg, device)
        else:
            adv, adv_status = load_attacked(ctx, ids, x, cfg)
        info["under_attack"] = adv_status
        if adv is not None:
            cols.data[attacked_column(adv.attack)] = adv.attacked
            if not cfg.under_attack.clean_fallback:
                cols.data[flipped_column(adv.attack)] = adv.flipped
        self._subgroup_columns(cols, ctx, ids, masks, cfg)
        subset = set(first_fractured_ids(evalset, cfg.model_samples))
        in_subset = np.array([i in subset for i in ids], dtype=bool)
        image_seeds = self.image_seeds(ctx, ids, cfg)

        for name in cfg.maps:
            t0 = time.perf_counter()
            try:
                maps, signed = compute_maps(name, model, x, masks, cfg, sub_seed(seed, name), device)
            except UnsupportedMethod as e:
                info["unsupported"][name] = e.reason
                for col in catalogue.columns_of(name, cfg, adv is not None):
                    cols.missing(col, f"unsupported: {e.reason}")
                continue
            inputs = metric_inputs(x, maps, masks, model, device, cfg, sub_seed(seed, name, "metrics"))
            bad = int((~torch.isfinite(maps.reshape(len(maps), -1)).all(dim=1)).sum())
            if bad:
                info.setdefault("nonfinite_maps", {})[name] = bad
            loc = for_localisation(name, maps, cfg)  # v3: at the common scale; v1/v2: the map itself
            loc_inputs = inputs if loc is maps else metric_inputs(x, loc, masks, model, device, cfg, inputs.seed)
            for metric, choice in cfg.localisation.items():
                cols.put(column(name, metric), choice.metric.score(loc_inputs, choice.params))
            signed_inputs = metric_inputs(x, signed, masks, model, device, cfg, inputs.seed)
            self.model_metrics(name, inputs, signed_inputs, in_subset, image_seeds, cfg, cols, info, seed)
            if cfg.completeness is not None and name == cfg.completeness.method:
                cols.put(column(name, COMPLETENESS), completeness_error(model, x, signed, device))
            if adv is not None and name in cfg.under_attack.methods:
                score_under_attack(name, model, adv, masks, cfg, cols, seed, device, info)
            info["timings_s"][name] = round(time.perf_counter() - t0, 3)
        return ShardOutput(samples=pd.DataFrame(cols.data), info={**info, "nan": cols.nan})

    def image_seeds(self, ctx: RunContext, ids: list[str], cfg: XaiConfig) -> RunSeeds | None:
        """v2: seeds from the run seed and the image id (per image) or the run seed alone (per metric),
        never the shard's: a score must not depend on which images share its shard."""
        return RunSeeds(ctx.seed, ids) if cfg.per_image_seeds else None

    def _subgroup_columns(self, cols: Columns, ctx: RunContext, ids, masks, cfg: XaiConfig) -> None:
        """v2: mask size and its tercile; detected (clean prediction fracture) or missed."""
        cuts = cfg.subgroups.mask_terciles_px
        if cuts is not None:
            px = masks.reshape(len(masks), -1).sum(dim=1).numpy().astype(np.float64)
            cols.data[MASK_PX] = px
            cols.data[MASK_TERCILE] = np.where(px <= cuts[0], 1.0, np.where(px <= cuts[1], 2.0, 3.0))
        if cfg.subgroups.detection:
            clean = ctx.previous.get("clean")
            pred = None
            if clean is not None and clean_id("pred") in clean.samples:
                pred = clean.samples.set_index("image_id")[clean_id("pred")]
            cols.data[DETECTED] = [
                float(pred[i] == 1) if pred is not None and i in pred.index else np.nan for i in ids
            ]

    def model_metrics(
        self,
        name: str,
        inputs: MetricInputs,
        signed_inputs: MetricInputs,
        in_subset: np.ndarray,
        image_seeds: RunSeeds | None,
        cfg: XaiConfig,
        cols: Columns,
        info: dict,
        seed: int,
    ) -> None:
        """The model metrics of map ``name`` on the images of the model-metric subset (NaN elsewhere)."""
        n_sub = int(in_subset.sum())
        why = "not in the model-metric subset" + (
            f" (first {cfg.model_samples} fractured ids)" if cfg.model_samples else ""
        )
        for metric, choice in cfg.model_metrics.items():
            if name not in choice.methods:
                continue
            col = column(name, metric)
            values = np.full(len(in_subset), np.nan)
            reasons: list[str | None] = [why] * len(in_subset)
            if n_sub:
                src = signed_inputs if choice.signed else inputs
                explain = None
                if name in METHODS:
                    explain = explainer(name, cfg, torch.device(inputs.device), signed=choice.signed)
                sub = MetricInputs(
                    src.x[in_subset],
                    src.maps[in_subset],
                    src.masks[in_subset],
                    src.model,
                    explain,
                    src.device,
                    src.batch_size,
                    sub_seed(seed, name, metric) if image_seeds is None else image_seeds.metric(name, metric),
                    None if image_seeds is None else image_seeds(name, metric, in_subset),
                    src.ties,
                    src.constant_maps,
                    reference=fast.requested_path() == "quantus",
                    explain_random=name in METHODS and METHODS.get(name).random,
                )
                # provenance: which implementation computed the column (fast.py or Quantus itself)
                info.setdefault("metric_paths", {})[col] = fast.path_for(metric, sub, choice.params)
                try:
                    with quiet():
                        s = choice.metric.score(sub, choice.params)
                except UnsupportedMethod as e:
                    s = Scores(np.full(n_sub, np.nan), [f"unsupported: {e.reason}"] * n_sub)
                except (torch.OutOfMemoryError, EvaluationBug):
                    raise
                except Exception as e:  # noqa: BLE001 -- a Quantus failure on one map must not lose the run
                    msg = f"{type(e).__name__}: {str(e)[:300]}"
                    info["failed"][col] = msg
                    s = Scores(np.full(n_sub, np.nan), [f"metric failed: {msg}"] * n_sub)
                values[in_subset] = s.values
                for j, r in zip(np.flatnonzero(in_subset), s.reasons):
                    reasons[j] = r
            cols.put(col, Scores(values, reasons))

    # -- finalize --------------------------------------------------------------------------------------

    def finalize(
        self,
        outputs: dict[str, ShardOutput],
        *,
        model: torch.nn.Module,
        evalset: EvalSet,
        config: dict[str, Any] | XaiConfig,
        ctx: RunContext,
    ) -> BatteryResult:
        cfg = parse_config(config)
        expected = self.shards(evalset, cfg)
        if sorted(outputs) != expected:
            raise EvaluationBug(f"explanations: shards {sorted(outputs)} != expected {expected}")
        samples = pd.concat([outputs[k].samples for k in expected], ignore_index=True)
        with_adv = any(o.info.get("under_attack", {}).get("status") == "computed" for o in outputs.values())
        metrics = self.metric_defs(cfg, with_adv=with_adv)
        info, flags = summarise(outputs, cfg, with_adv)
        samples = pd.concat([samples, vs_reference_columns(samples, cfg, info)], axis=1)
        check_completeness(samples, cfg, info, flags)
        absent = [m.column for m in metrics if m.column not in samples]
        if absent:
            samples = pd.concat([samples, pd.DataFrame(np.nan, index=samples.index, columns=absent)], axis=1)
        files = gallery_files(
            model, evalset, cfg, ctx, skip=set(info["unsupported"]), device=model_device(model, ctx.device)
        )
        info["gallery"] = sorted(files)
        return BatteryResult(samples=samples, metrics=metrics, flags=flags, files=files, info=info)

    def expected_metrics(self, config: dict[str, Any] | XaiConfig) -> list[MetricDef]:
        """All metrics the spec defines; a run without the robustness battery reports no under-attack ones."""
        return catalogue.expected_metrics(config)

    def metric_defs(self, cfg: XaiConfig, *, with_adv: bool) -> list[MetricDef]:
        return catalogue.metric_defs(cfg, with_adv=with_adv)
