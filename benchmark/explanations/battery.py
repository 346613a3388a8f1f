"""The explanation battery: attributions of the fracture logit on the fractured images, scored against masks.

Shards are chunks of the fractured evaluation images (in evalset order). Per shard and per map (attribution
method or reference map): localisation scores for every image, model-based scores for the images of the
model-metric subset, and, when the robustness battery stored adversarial images, localisation scores on
them and the drop from clean. ``finalize`` adds the metric definitions, flags and the gallery.
"""

from __future__ import annotations

import hashlib
import itertools
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..battery import BatteryResult, EvalSet, Flag, RunContext, ShardOutput
from ..errors import EvaluationBug
from ..results.metrics import MetricDef
from .config import XaiConfig, parse_config
from .gallery import overlay_png
from .methods import METHODS, UnsupportedMethod, attribute
from .metrics import MetricInputs, Scores
from .references import reference_maps

PREFIX = "xai"


def column(method: str, metric: str, variant: str | None = None) -> str:
    return f"{PREFIX}/{method}/{metric}" + (f"/{variant}" if variant else "")


def reason_column(col: str) -> str:
    return f"{col}/nan_reason"


def attacked_column(attack: str) -> str:
    return f"{PREFIX}/adv-{attack}/adversarial"


def sub_seed(seed: int, *parts: str) -> int:
    h = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(h[:4], "little")


def model_device(model: torch.nn.Module, fallback: torch.device) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return fallback


def fractured_rows(evalset: EvalSet) -> list[int]:
    return [i for i in range(len(evalset)) if int(evalset.y[i]) == 1]


def first_fractured_ids(evalset: EvalSet, n: int) -> list[str]:
    """The fixed image choice for the gallery and the model-metric subset: by image id, not by order."""
    return sorted(evalset.ids[i] for i in fractured_rows(evalset))[:n]


@contextmanager
def _quiet():
    # Captum announces every hook it sets; the battery reports what matters in info and flags.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


class _Columns:
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
    name = "explanations"

    def shards(self, evalset: EvalSet, config: dict[str, Any]) -> list[str]:
        cfg = parse_config(config)
        n = len(fractured_rows(evalset))
        return [f"chunk-{i:03d}" for i in range((n + cfg.chunk_size - 1) // cfg.chunk_size)]

    # -- one shard -------------------------------------------------------------------------------------

    def run_shard(
        self, key: str, *, model: torch.nn.Module, evalset: EvalSet, config: dict[str, Any], ctx: RunContext
    ) -> ShardOutput:
        cfg = parse_config(config)
        rows = self._rows(key, evalset, cfg)
        seed = ctx.shard_seed(self.name, key)
        device = model_device(model, ctx.device)
        ids = [evalset.ids[i] for i in rows]
        x, masks = evalset.x[rows].float(), evalset.masks[rows].bool()
        cols = _Columns(ids)
        info: dict[str, Any] = {"unsupported": {}, "failed": {}, "timings_s": {}}
        adv, adv_status = self._adversarial(ctx, ids, x, cfg)
        info["under_attack"] = adv_status
        if adv is not None:
            cols.data[attacked_column(cfg.under_attack.attack)] = adv[1]
        subset = set(first_fractured_ids(evalset, cfg.model_samples))
        in_subset = np.array([i in subset for i in ids], dtype=bool)

        for name in cfg.maps:
            t0 = time.perf_counter()
            try:
                maps = self._maps(name, model, x, masks, cfg, sub_seed(seed, name), device)
            except UnsupportedMethod as e:
                info["unsupported"][name] = e.reason
                for col in self._columns_of(name, cfg, adv is not None):
                    cols.missing(col, f"unsupported: {e.reason}")
                continue
            inputs = _metric_inputs(x, maps, masks, model, device, cfg, sub_seed(seed, name, "metrics"))
            for metric, choice in cfg.localisation.items():
                cols.put(column(name, metric), choice.metric.score(inputs, choice.params))
            self._model_metrics(name, inputs, in_subset, cfg, cols, info, seed)
            if adv is not None and name in cfg.under_attack.methods:
                self._under_attack(name, model, adv[0], masks, cfg, cols, seed, device, info)
            info["timings_s"][name] = round(time.perf_counter() - t0, 3)
        return ShardOutput(samples=pd.DataFrame(cols.data), info={**info, "nan": cols.nan})

    def _rows(self, key: str, evalset: EvalSet, cfg: XaiConfig) -> list[int]:
        try:
            i = int(key.removeprefix("chunk-"))
        except ValueError:
            raise EvaluationBug(f"explanations: unknown shard key {key!r}") from None
        rows = fractured_rows(evalset)[i * cfg.chunk_size : (i + 1) * cfg.chunk_size]
        if not rows:
            raise EvaluationBug(f"explanations: shard {key!r} has no fractured images")
        return rows

    def _maps(
        self,
        name: str,
        model,
        x: torch.Tensor,
        masks: torch.Tensor,
        cfg: XaiConfig,
        seed: int,
        device: torch.device,
    ) -> torch.Tensor:
        if name in cfg.references:
            return reference_maps(name, x, masks, params=cfg.references[name], seed=seed)
        torch.manual_seed(seed)  # SmoothGrad's noise
        with _quiet():
            return attribute(
                model, x.to(device), name=name, params=cfg.methods[name], batch_size=cfg.batch_size
            )

    def _explainer(self, name: str, cfg: XaiConfig, device: torch.device):
        """Quantus's explain_func for metrics that re-explain perturbed inputs."""

        def explain(model, inputs, targets, **_):
            x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
            t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
            with _quiet():
                return attribute(
                    model, x, name=name, params=cfg.methods[name], target=t, batch_size=cfg.batch_size
                ).numpy()

        return explain

    def _model_metrics(
        self,
        name: str,
        inputs: MetricInputs,
        in_subset: np.ndarray,
        cfg: XaiConfig,
        cols: _Columns,
        info: dict,
        seed: int,
    ) -> None:
        for metric, choice in cfg.model_metrics.items():
            if name not in choice.methods:
                continue
            col = column(name, metric)
            values = np.full(len(in_subset), np.nan)
            reasons: list[str | None] = [
                f"not in the model-metric subset (first {cfg.model_samples} fractured ids)"
            ] * len(in_subset)
            if in_subset.any():
                sub = MetricInputs(
                    inputs.x[in_subset],
                    inputs.maps[in_subset],
                    inputs.masks[in_subset],
                    inputs.model,
                    self._explainer(name, cfg, torch.device(inputs.device)) if name in METHODS else None,
                    inputs.device,
                    inputs.batch_size,
                    sub_seed(seed, name, metric),
                )
                try:
                    with _quiet():
                        s = choice.metric.score(sub, choice.params)
                except UnsupportedMethod as e:
                    s = Scores(
                        np.full(in_subset.sum(), np.nan), [f"unsupported: {e.reason}"] * int(in_subset.sum())
                    )
                except (torch.OutOfMemoryError, EvaluationBug):
                    raise
                except Exception as e:  # noqa: BLE001 -- a Quantus failure on one map must not lose the run
                    msg = f"{type(e).__name__}: {str(e)[:300]}"
                    info["failed"][col] = msg
                    s = Scores(
                        np.full(in_subset.sum(), np.nan), [f"metric failed: {msg}"] * int(in_subset.sum())
                    )
                values[in_subset] = s.values
                for j, r in zip(np.flatnonzero(in_subset), s.reasons):
                    reasons[j] = r
            cols.put(col, Scores(values, reasons))

    def _under_attack(
        self, name, model, x_adv, masks, cfg: XaiConfig, cols: _Columns, seed, device, info
    ) -> None:
        tag = cfg.under_attack.attack
        try:
            # The clean image's seed: random maps and SmoothGrad noise are paired, so the drop is the attack's
            maps = self._maps(name, model, x_adv, masks, cfg, sub_seed(seed, name), device)
        except UnsupportedMethod as e:
            info["unsupported"][f"{name}/adv-{tag}"] = e.reason
            for metric in cfg.under_attack.metrics:
                for v in (f"adv-{tag}", f"drop-{tag}"):
                    cols.missing(column(name, metric, v), f"unsupported: {e.reason}")
            return
        inputs = _metric_inputs(x_adv, maps, masks, model, device, cfg, sub_seed(seed, name, "metrics"))
        for metric in cfg.under_attack.metrics:
            choice = cfg.localisation[metric]
            s = choice.metric.score(inputs, choice.params)
            cols.put(column(name, metric, f"adv-{tag}"), s)
            clean = cols.data[column(name, metric)]
            clean_reasons = cols.data.get(reason_column(column(name, metric)), [None] * cols.n)
            drop = clean - s.values
            reasons = [rc or ra for rc, ra in zip(clean_reasons, s.reasons)]
            cols.put(column(name, metric, f"drop-{tag}"), Scores(drop, reasons))

    def _adversarial(self, ctx: RunContext, ids: list[str], x: torch.Tensor, cfg: XaiConfig):
        """(adversarial images, which ones were attacked) or None, and a status for info."""
        if cfg.under_attack is None:
            return None, {"status": "not in spec"}
        tag = cfg.under_attack.attack
        prefix = f"adv/{tag}/"
        tensors = ctx.load_tensors("robustness")
        if not any(k.startswith(prefix) for k in tensors) and "robustness" not in ctx.previous:
            return None, {
                "status": "skipped",
                "reason": f"the robustness battery stored no '{prefix}*' images",
            }
        images, attacked = [], []
        for i, image_id in enumerate(ids):
            t = tensors.get(prefix + image_id)
            if (
                t is None
            ):  # the attack failed on it: the image stayed robust, so its clean image is what was seen
                images.append(x[i])
                attacked.append(False)
                continue
            t = t.detach().to("cpu", torch.float32)
            if t.numel() != x[i].numel() or not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
                raise EvaluationBug(
                    f"robustness tensor {prefix + image_id}: shape {tuple(t.shape)} or values "
                    "outside [0, 1]; expected a canonical 1 x 224 x 224 image"
                )
            images.append(t.reshape(x[i].shape))
            attacked.append(True)
        status = {
            "status": "computed",
            "attack": tag,
            "adversarial": int(sum(attacked)),
            "clean_fallback": int(len(attacked) - sum(attacked)),
        }
        return (torch.stack(images), attacked), status

    def _columns_of(self, name: str, cfg: XaiConfig, with_adv: bool) -> list[str]:
        out = [column(name, m) for m in cfg.localisation]
        out += [column(name, m) for m, c in cfg.model_metrics.items() if name in c.methods]
        if with_adv and name in cfg.under_attack.methods:
            tag = cfg.under_attack.attack
            out += [column(name, m, f"{v}-{tag}") for m in cfg.under_attack.metrics for v in ("adv", "drop")]
        return out

    # -- finalize --------------------------------------------------------------------------------------

    def finalize(
        self,
        outputs: dict[str, ShardOutput],
        *,
        model: torch.nn.Module,
        evalset: EvalSet,
        config: dict[str, Any],
        ctx: RunContext,
    ) -> BatteryResult:
        cfg = parse_config(config)
        expected = self.shards(evalset, config)
        if sorted(outputs) != expected:
            raise EvaluationBug(f"explanations: shards {sorted(outputs)} != expected {expected}")
        samples = pd.concat([outputs[k].samples for k in expected], ignore_index=True)
        with_adv = any(o.info.get("under_attack", {}).get("status") == "computed" for o in outputs.values())
        metrics = self.metric_defs(cfg, with_adv=with_adv)
        for m in metrics:
            if m.column not in samples:
                samples[m.column] = np.nan
        info, flags = self._summary(outputs, cfg, with_adv)
        files = self._gallery(model, evalset, cfg, ctx, skip=set(info["unsupported"]))
        info["gallery"] = sorted(files)
        return BatteryResult(samples=samples, metrics=metrics, flags=flags, files=files, info=info)

    def expected_metrics(self, config: dict[str, Any]) -> list[MetricDef]:
        """All metrics the spec defines; a run without the robustness battery reports no under-attack ones."""
        return self.metric_defs(parse_config(config), with_adv=True)

    def metric_defs(self, cfg: XaiConfig, *, with_adv: bool) -> list[MetricDef]:
        label = {"label": 1}
        groups: list[tuple[str, dict[str, Any]]] = []
        if cfg.subgroups.hardware:
            groups += [("hardware", {"hardware": True}), ("no_hardware", {"hardware": False})]
        groups += [(f"region-{r}", {r: True}) for r in cfg.subgroups.regions]
        chosen = {**cfg.localisation, **cfg.model_metrics}
        defs = []
        for name in cfg.maps:
            for metric, choice in chosen.items():
                if name not in choice.methods:
                    continue
                col, hib = column(name, metric), choice.metric.higher_is_better
                defs.append(MetricDef(col, col, "mean", hib, label))
                if metric in cfg.subgroups.metrics:
                    defs += [
                        MetricDef(column(name, metric, g), col, "mean", hib, {**label, **w})
                        for g, w in groups
                    ]
                if with_adv and name in cfg.under_attack.methods and metric in cfg.under_attack.metrics:
                    tag = cfg.under_attack.attack
                    adv, drop = column(name, metric, f"adv-{tag}"), column(name, metric, f"drop-{tag}")
                    defs.append(MetricDef(adv, adv, "mean", hib, label))
                    defs.append(MetricDef(drop, drop, "mean", not hib, label))  # a smaller loss is better
        return defs

    def _summary(self, outputs: dict[str, ShardOutput], cfg: XaiConfig, with_adv: bool):
        unsupported: dict[str, str] = {}
        failed: dict[str, str] = {}
        timings: Counter = Counter()
        nan: dict[str, Counter] = {}
        attack = {"status": "skipped"}
        for key in sorted(outputs):
            o = outputs[key].info
            for k, v in o.get("unsupported", {}).items():
                unsupported.setdefault(k, v)
            failed.update(o.get("failed", {}))
            timings.update(o.get("timings_s", {}))
            for col, counts in o.get("nan", {}).items():
                nan.setdefault(col, Counter()).update(counts)
            a = o.get("under_attack", {})
            if a.get("status") == "computed":
                prev = (
                    attack if attack.get("status") == "computed" else {"adversarial": 0, "clean_fallback": 0}
                )
                attack = {
                    **a,
                    "adversarial": prev["adversarial"] + a["adversarial"],
                    "clean_fallback": prev["clean_fallback"] + a["clean_fallback"],
                }
            elif attack.get("status") != "computed":
                attack = a
        flags = [Flag("xai-method-unsupported", f"{k}: {v}") for k, v in sorted(unsupported.items())]
        flags += [Flag("xai-metric-failed", f"{k}: {v}") for k, v in sorted(failed.items())]
        if cfg.under_attack is not None and not with_adv:
            flags.append(Flag("xai-under-attack-skipped", attack.get("reason", "no adversarial images")))
        info = {
            "methods": list(cfg.methods),
            "references": list(cfg.references),
            "unsupported": unsupported,
            "failed": failed,
            "under_attack": attack,
            "nan": {c: dict(sorted(v.items())) for c, v in sorted(nan.items())},
            "timings_s": {k: round(v, 3) for k, v in sorted(timings.items())},
        }
        return info, flags

    def _gallery(
        self, model, evalset: EvalSet, cfg: XaiConfig, ctx: RunContext, skip: set[str]
    ) -> dict[str, bytes]:
        ids = first_fractured_ids(evalset, cfg.gallery.images)
        if not ids:
            return {}
        rows = [evalset.ids.index(i) for i in ids]
        x, masks = evalset.x[rows].float(), evalset.masks[rows].bool()
        seed = ctx.shard_seed(self.name, "gallery")
        device = model_device(model, ctx.device)
        files = {}
        for name in cfg.maps:
            if name in skip:
                continue
            try:
                maps = self._maps(name, model, x, masks, cfg, sub_seed(seed, name), device).numpy()
            except UnsupportedMethod:
                continue
            for j, image_id in enumerate(ids):
                files[f"gallery/{image_id}/{name}.png"] = overlay_png(
                    x[j, 0].numpy(),
                    maps[j, 0],
                    masks[j, 0].numpy(),
                    title=f"{image_id}  {name}",
                    style=cfg.gallery,
                )
        return files


def _metric_inputs(x, maps, masks, model, device, cfg, seed: int) -> MetricInputs:
    """What every metric scores: images, their maps and masks (numpy), the model, and a seed."""
    return MetricInputs(x.numpy(), maps.numpy(), masks.numpy(), model, None, str(device), cfg.batch_size, seed)
