"""The explanation battery: attributions of the fracture logit on the fractured images, scored against masks.

Shards are chunks of the fractured evaluation images (in evalset order). Per shard and per map (attribution
method or reference map): localisation scores for every image, model-based scores for the images of the
model-metric subset, and, when the robustness battery stored attacked images, localisation scores on them
and the drop from clean. ``finalize`` adds the metric definitions, the paired differences against the best
trivial reference (v2), flags and the gallery.
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
from . import fast
from .config import XaiConfig, parse_config
from .gallery import choose_images, overlay_png, panels_png
from .methods import METHODS, UnsupportedMethod, attribute, one_channel
from .metrics import METRICS, MetricInputs, Scores
from .references import reference_maps

PREFIX = "xai"


def column(method: str, metric: str, variant: str | None = None) -> str:
    return f"{PREFIX}/{method}/{metric}" + (f"/{variant}" if variant else "")


def reason_column(col: str) -> str:
    return f"{col}/nan_reason"


def attacked_column(attack: str) -> str:
    return f"{PREFIX}/adv-{attack}/adversarial"


def flipped_column(attack: str) -> str:
    """v2: 1.0 where the stored attacked point flipped the label, 0.0 where not, NaN where none was stored."""
    return f"{PREFIX}/adv-{attack}/flipped"


MASK_PX = f"{PREFIX}/mask_px"
MASK_TERCILE = f"{PREFIX}/mask_tercile"  # 1 small, 2 medium, 3 large (cut points from the spec)
DETECTED = f"{PREFIX}/detected"  # 1.0 the model says fracture on the clean image, 0.0 it misses it
TERCILES = {1: "mask-small", 2: "mask-medium", 3: "mask-large"}
VS_REF = "vs-best-ref"


def sub_seed(seed: int, *parts: str) -> int:
    h = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(h[:4], "little")


def model_device(model: torch.nn.Module, fallback: torch.device) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return fallback


def fractured_rows(evalset: EvalSet) -> list[int]:
    return [i for i in range(len(evalset)) if int(evalset.y[i]) == 1]


def first_fractured_ids(evalset: EvalSet, n: int | None) -> list[str]:
    """The fixed image choice for the model-metric subset: by image id, not by order (None: all)."""
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
            if not cfg.under_attack.clean_fallback:
                cols.data[flipped_column(cfg.under_attack.attack)] = adv[2]
        self._subgroup_columns(cols, ctx, ids, masks, cfg)
        subset = set(first_fractured_ids(evalset, cfg.model_samples))
        in_subset = np.array([i in subset for i in ids], dtype=bool)
        image_seeds = self._image_seeds(ctx, ids, cfg)

        for name in cfg.maps:
            t0 = time.perf_counter()
            try:
                maps, signed = self._maps(name, model, x, masks, cfg, sub_seed(seed, name), device)
            except UnsupportedMethod as e:
                info["unsupported"][name] = e.reason
                for col in self._columns_of(name, cfg, adv is not None):
                    cols.missing(col, f"unsupported: {e.reason}")
                continue
            inputs = _metric_inputs(x, maps, masks, model, device, cfg, sub_seed(seed, name, "metrics"))
            bad = int((~torch.isfinite(maps.reshape(len(maps), -1)).all(dim=1)).sum())
            if bad:
                info.setdefault("nonfinite_maps", {})[name] = bad
            for metric, choice in cfg.localisation.items():
                cols.put(column(name, metric), choice.metric.score(inputs, choice.params))
            signed_inputs = _metric_inputs(x, signed, masks, model, device, cfg, inputs.seed)
            self._model_metrics(name, inputs, signed_inputs, in_subset, image_seeds, cfg, cols, info, seed)
            if cfg.completeness is not None and name == cfg.completeness.method:
                cols.put(column(name, "completeness_error"), completeness_error(model, x, signed, device))
            if adv is not None and name in cfg.under_attack.methods:
                self._under_attack(name, model, adv, masks, cfg, cols, seed, device, info)
            info["timings_s"][name] = round(time.perf_counter() - t0, 3)
        return ShardOutput(samples=pd.DataFrame(cols.data), info={**info, "nan": cols.nan})

    def _image_seeds(self, ctx: RunContext, ids: list[str], cfg: XaiConfig):
        """v2: seeds from the run seed and the image id (per image) or the run seed alone (per metric),
        never the shard's: a score must not depend on which images share its shard."""
        return _RunSeeds(ctx.seed, ids) if cfg.per_image_seeds else None

    def _subgroup_columns(self, cols: _Columns, ctx: RunContext, ids, masks, cfg: XaiConfig) -> None:
        """v2: mask size and its tercile; detected (clean prediction fracture) or missed."""
        cuts = cfg.subgroups.mask_terciles_px
        if cuts is not None:
            px = masks.reshape(len(masks), -1).sum(dim=1).numpy().astype(np.float64)
            cols.data[MASK_PX] = px
            cols.data[MASK_TERCILE] = np.where(px <= cuts[0], 1.0, np.where(px <= cuts[1], 2.0, 3.0))
        if cfg.subgroups.detection:
            clean = ctx.previous.get("clean")
            pred = None
            if clean is not None and "clean/pred" in clean.samples:
                pred = clean.samples.set_index("image_id")["clean/pred"]
            cols.data[DETECTED] = [
                float(pred[i] == 1) if pred is not None and i in pred.index else np.nan for i in ids
            ]

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the reduced map the localisation metrics see, the signed map faithfulness sees in v2)."""
        if name in cfg.references:
            m = reference_maps(name, x, masks, params=cfg.references[name], seed=seed)
            return m, m
        p = cfg.methods[name]
        torch.manual_seed(seed)  # SmoothGrad's noise
        with _quiet():
            signed = attribute(
                model, x.to(device), name=name, params=p, batch_size=cfg.batch_size, signed=True
            )
            if name == "smoothgrad":  # its rule sits inside the noise average: a separate call, same noise
                torch.manual_seed(seed)
                reduced = attribute(model, x.to(device), name=name, params=p, batch_size=cfg.batch_size)
            else:
                reduced = one_channel(signed, p.rule)
        return reduced, signed

    def _explainer(self, name: str, cfg: XaiConfig, device: torch.device, signed: bool = False):
        """Quantus's explain_func for metrics that re-explain perturbed inputs (the map the metric saw)."""

        def explain(model, inputs, targets, **_):
            x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
            t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
            with _quiet():
                return attribute(
                    model,
                    x,
                    name=name,
                    params=cfg.methods[name],
                    target=t,
                    batch_size=cfg.batch_size,
                    signed=signed,
                ).numpy()

        return explain

    def _model_metrics(
        self,
        name: str,
        inputs: MetricInputs,
        signed_inputs: MetricInputs,
        in_subset: np.ndarray,
        image_seeds,
        cfg: XaiConfig,
        cols: _Columns,
        info: dict,
        seed: int,
    ) -> None:
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
                    explain = self._explainer(name, cfg, torch.device(inputs.device), signed=choice.signed)
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
                    with _quiet():
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

    def _under_attack(
        self, name, model, adv, masks, cfg: XaiConfig, cols: _Columns, seed, device, info
    ) -> None:
        x_adv, missing = adv[0], adv[3]
        tag = cfg.under_attack.attack
        attacked = np.asarray(cols.data[attacked_column(tag)], dtype=bool)
        # v1 scores every image (clean ones standing in); v2 only the stored attacked points
        keep = np.ones(len(attacked), dtype=bool) if cfg.under_attack.clean_fallback else attacked
        variants = [column(name, m, f"{v}-{tag}") for m in cfg.under_attack.metrics for v in ("adv", "drop")]
        if not keep.any():
            for col in variants:
                cols.put(col, Scores(np.full(cols.n, np.nan), list(missing)))
            return
        rows = np.flatnonzero(keep)
        try:
            # The clean image's seed: random maps and SmoothGrad noise are paired, so the drop is the attack's
            maps, _ = self._maps(name, model, x_adv[rows], masks[rows], cfg, sub_seed(seed, name), device)
        except UnsupportedMethod as e:
            info["unsupported"][f"{name}/adv-{tag}"] = e.reason
            for col in variants:
                cols.missing(col, f"unsupported: {e.reason}")
            return
        inputs = _metric_inputs(
            x_adv[rows], maps, masks[rows], model, device, cfg, sub_seed(seed, name, "metrics")
        )
        for metric in cfg.under_attack.metrics:
            choice = cfg.localisation[metric]
            part = choice.metric.score(inputs, choice.params)
            values = np.full(cols.n, np.nan)
            values[rows] = part.values
            reasons = list(missing)
            for j, r in zip(rows, part.reasons):
                reasons[j] = r
            cols.put(column(name, metric, f"adv-{tag}"), Scores(values, reasons))
            clean = cols.data[column(name, metric)]
            clean_reasons = cols.data.get(reason_column(column(name, metric)), [None] * cols.n)
            drop = clean - values
            cols.put(
                column(name, metric, f"drop-{tag}"),
                Scores(drop, [rc or ra for rc, ra in zip(clean_reasons, reasons)]),
            )

    def _adversarial(self, ctx: RunContext, ids: list[str], x: torch.Tensor, cfg: XaiConfig):
        """(attacked images, which ones the attack stored, flipped 1/0/NaN) or None, and a status for info.

        v1 (``clean_fallback``): an image without a stored example stands in with its clean image. v2: the
        robustness battery stores the headline attack's final point for every fractured image classified
        correctly clean, flipped or not; an image without one is never replaced by its clean image: its
        under-attack scores are NaN with the reason (the fourth element: a reason per image, or None)."""
        missing: list[str | None] = [None] * len(ids)
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
        broken = _column_by_id(ctx, "robustness", f"robust/{tag}/broken")
        correct = _column_by_id(ctx, "clean", "clean/correct")
        images, attacked, flipped = [], [], []
        for i, image_id in enumerate(ids):
            t = tensors.get(prefix + image_id)
            if t is None:
                images.append(x[i])  # a placeholder: v2 never scores it (v1 scored it as the clean image)
                attacked.append(False)
                flipped.append(np.nan)
                if correct.get(image_id) == 0:
                    missing[i] = "misclassified clean: not attacked"
                else:
                    missing[i] = f"no attacked point stored ({prefix}{image_id})"
                continue
            t = t.detach().to("cpu", torch.float32)
            if t.numel() != x[i].numel() or not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
                raise EvaluationBug(
                    f"robustness tensor {prefix + image_id}: shape {tuple(t.shape)} or values "
                    "outside [0, 1]; expected a canonical 1 x 224 x 224 image"
                )
            images.append(t.reshape(x[i].shape))
            attacked.append(True)
            b = broken.get(image_id)
            flipped.append(np.nan if b is None or b != b else float(bool(b)))
        status = {
            "status": "computed",
            "attack": tag,
            "adversarial": int(sum(attacked)),
            "clean_fallback": int(len(attacked) - sum(attacked)) if cfg.under_attack.clean_fallback else 0,
        }
        if not cfg.under_attack.clean_fallback:
            f = np.asarray(flipped)
            status.update(
                {
                    "scored": int(sum(attacked)),
                    "flipped": int((f == 1).sum()),
                    "not_flipped": int((f == 0).sum()),
                    "flip_unknown": int(sum(attacked) - (f == 1).sum() - (f == 0).sum()),
                    "not_scored": int(len(attacked) - sum(attacked)),
                }
            )
        return (torch.stack(images), attacked, flipped, missing), status

    def _columns_of(self, name: str, cfg: XaiConfig, with_adv: bool) -> list[str]:
        out = [column(name, m) for m in cfg.localisation]
        out += [column(name, m) for m, c in cfg.model_metrics.items() if name in c.methods]
        if cfg.completeness is not None and name == cfg.completeness.method:
            out.append(column(name, "completeness_error"))
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
        info, flags = self._summary(outputs, cfg, with_adv)
        self._vs_reference(samples, cfg, info)
        if cfg.completeness is not None:
            c = samples.get(column(cfg.completeness.method, "completeness_error"))
            med = float(np.nanmedian(c)) if c is not None and np.isfinite(c).any() else float("nan")
            info["completeness"] = {
                "method": cfg.completeness.method,
                "median_error": med,
                "bound": cfg.completeness.bound,
            }
            if med > cfg.completeness.bound:
                flags.append(
                    Flag(
                        "xai-completeness",
                        f"{cfg.completeness.method}: median relative "
                        f"completeness error {med:.3f} exceeds the bound {cfg.completeness.bound}",
                    )
                )
        for m in metrics:
            if m.column not in samples:
                samples[m.column] = np.nan
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
        if cfg.subgroups.mask_terciles_px is not None:
            groups += [(g, {MASK_TERCILE: float(t)}) for t, g in TERCILES.items()]
        if cfg.subgroups.detection:
            groups += [("detected", {DETECTED: 1.0}), ("missed", {DETECTED: 0.0})]
        chosen = {**cfg.localisation, **cfg.model_metrics}
        vs = cfg.vs_reference
        defs = []
        for name in cfg.maps:
            for metric, choice in chosen.items():
                if name not in choice.methods:
                    continue
                col, hib = column(name, metric), choice.metric.higher_is_better
                defs.append(MetricDef(col, col, "mean", hib, label))
                if vs is not None and name in cfg.methods and metric in vs.metrics:
                    d = column(name, metric, VS_REF)
                    defs.append(MetricDef(d, d, "mean", hib, label))
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
                    if not cfg.under_attack.clean_fallback:
                        f = flipped_column(tag)
                        for part, v in (("flipped", 1.0), ("not_flipped", 0.0)):
                            defs.append(MetricDef(f"{adv}/{part}", adv, "mean", hib, {**label, f: v}))
            if cfg.completeness is not None and name == cfg.completeness.method:
                c = column(name, "completeness_error")
                defs.append(MetricDef(c, c, "mean", False, label))
        return defs

    def _vs_reference(self, samples: pd.DataFrame, cfg: XaiConfig, info: dict) -> None:
        """Per image: the method's score minus the best trivial reference's score on the same image (the
        reference with the best mean on this result's images, per metric). A method that does not beat
        what a map knowing nothing about the model gets shows it here, with a paired CI."""
        vs = cfg.vs_reference
        if vs is None:
            return
        best: dict[str, str | None] = {}
        for metric in vs.metrics:
            hib = cfg.localisation[metric].metric.higher_is_better
            means = {
                r: samples[column(r, metric)].mean() for r in vs.references if column(r, metric) in samples
            }
            means = {r: v for r, v in means.items() if np.isfinite(v)}
            ref = (max if hib else min)(means, key=means.get) if means else None
            best[metric] = ref
            for name in cfg.methods:
                col = column(name, metric)
                if col not in samples:
                    continue
                d = column(name, metric, VS_REF)
                if ref is None:
                    samples[d] = np.nan
                    continue
                samples[d] = samples[col] - samples[column(ref, metric)]
        info["best_reference"] = best

    def _summary(self, outputs: dict[str, ShardOutput], cfg: XaiConfig, with_adv: bool):
        unsupported: dict[str, str] = {}
        failed: dict[str, str] = {}
        paths: dict[str, set[str]] = {}
        timings: Counter = Counter()
        nan: dict[str, Counter] = {}
        attack = {"status": "skipped"}
        for key in sorted(outputs):
            o = outputs[key].info
            for k, v in o.get("unsupported", {}).items():
                unsupported.setdefault(k, v)
            failed.update(o.get("failed", {}))
            for col, path in o.get("metric_paths", {}).items():
                paths.setdefault(col, set()).add(path)
            timings.update(o.get("timings_s", {}))
            for col, counts in o.get("nan", {}).items():
                nan.setdefault(col, Counter()).update(counts)
            a = o.get("under_attack", {})
            if a.get("status") == "computed":
                prev = attack if attack.get("status") == "computed" else {}
                attack = {
                    **a,
                    **{k: prev.get(k, 0) + v for k, v in a.items() if isinstance(v, int)},
                }
            elif attack.get("status") != "computed":
                attack = a
        flags = [Flag("xai-method-unsupported", f"{k}: {v}") for k, v in sorted(unsupported.items())]
        flags += [Flag("xai-metric-failed", f"{k}: {v}") for k, v in sorted(failed.items())]
        nonfinite: Counter = Counter()
        for key in sorted(outputs):
            nonfinite.update(outputs[key].info.get("nonfinite_maps", {}))
        if nonfinite:
            what = "scored as all-zero maps" if cfg.constant_maps == "score" else "NaN"
            flags += [Flag("xai-nonfinite-attribution", f"{k}: {v} map(s) with NaN or infinite values ({what})")
                      for k, v in sorted(nonfinite.items())]
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
            "nonfinite_maps": dict(sorted(nonfinite.items())),
        }
        if paths:  # per model-metric column: "fast" (explanations/fast.py) or "quantus" (the library itself)
            info["metric_paths"] = {c: "+".join(sorted(v)) for c, v in sorted(paths.items())}
        return info, flags

    def _gallery_v2(
        self, model, evalset: EvalSet, cfg: XaiConfig, ctx: RunContext, skip: set[str]
    ) -> dict[str, bytes]:
        """Per chosen image and map: clean and attacked image side by side (the attacked one where the
        robustness battery stored it), titles with P(fracture) and the map's relevance mass on that image;
        references under ``gallery/<id>/references/``, apart from the methods."""
        rows_fr = fractured_rows(evalset)
        ids = [evalset.ids[i] for i in rows_fr]
        px = [int(evalset.masks[i].sum()) for i in rows_fr]
        chosen = choose_images(ids, px, cfg.gallery.images, cfg.gallery.exclude)
        if not chosen:
            return {}
        rows = [evalset.ids.index(i) for i in chosen]
        x, masks = evalset.x[rows].float(), evalset.masks[rows].bool()
        seed = ctx.shard_seed(self.name, "gallery")
        device = model_device(model, ctx.device)
        tag = cfg.under_attack.attack if cfg.under_attack is not None else None
        tensors = ctx.load_tensors("robustness") if tag else {}
        adv = [tensors.get(f"adv/{tag}/{i}") for i in chosen]
        p_clean = _p_fracture(model, x, device)
        rma = METRICS.get("relevance_mass_accuracy")
        files = {}
        for name in cfg.maps:
            if name in skip or name == "ref_mask":
                continue
            try:
                maps = self._maps(name, model, x, masks, cfg, sub_seed(seed, name), device)[0]
            except UnsupportedMethod:
                continue
            score = rma.score(_metric_inputs(x, maps, masks, model, device, cfg, 0), None).values
            folder = "references/" if name in cfg.references else ""
            for j, image_id in enumerate(chosen):
                m = masks[j, 0].numpy()
                panels = [{
                    "image": x[j, 0].numpy(), "attribution": maps[j, 0].numpy(), "mask": m,
                    "title": f"clean  P(fracture) {p_clean[j]:.2f}  rel. mass {score[j]:.2f}",
                }]
                if adv[j] is not None:
                    xa = adv[j].detach().to("cpu", torch.float32).reshape(1, *x.shape[1:])
                    ma = self._maps(name, model, xa, masks[j : j + 1], cfg, sub_seed(seed, name), device)[0]
                    sa = rma.score(_metric_inputs(xa, ma, masks[j : j + 1], model, device, cfg, 0), None).values
                    panels.append({
                        "image": xa[0, 0].numpy(), "attribution": ma[0, 0].numpy(), "mask": m,
                        "title": f"attacked ({tag})  P(fracture) {_p_fracture(model, xa, device)[0]:.2f}  "
                        f"rel. mass {sa[0]:.2f}",
                    })
                files[f"gallery/{image_id}/{folder}{name}.png"] = panels_png(
                    panels, style=cfg.gallery, suptitle=f"{image_id}  {name}  (mask {int(m.sum())} px, cyan)"
                )
        return files

    def _gallery(
        self, model, evalset: EvalSet, cfg: XaiConfig, ctx: RunContext, skip: set[str]
    ) -> dict[str, bytes]:
        if cfg.gallery.choice == "mask_size_quantiles":
            return self._gallery_v2(model, evalset, cfg, ctx, skip)
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
                maps = self._maps(name, model, x, masks, cfg, sub_seed(seed, name), device)[0].numpy()
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


def _p_fracture(model, x: torch.Tensor, device) -> np.ndarray:
    with torch.no_grad():
        return model(x.to(device)).float().softmax(dim=1)[:, 1].cpu().numpy()


def _metric_inputs(x, maps, masks, model, device, cfg, seed: int) -> MetricInputs:
    """What every metric scores: images, their maps and masks (numpy), the model, and a seed."""
    return MetricInputs(
        x.numpy(),
        maps.numpy(),
        masks.numpy(),
        model,
        None,
        str(device),
        cfg.batch_size,
        seed,
        ties=cfg.ties,
        constant_maps=cfg.constant_maps,
    )


class _RunSeeds:
    def __init__(self, run_seed: int, ids: list[str]):
        self.run_seed, self.ids = run_seed, ids

    def metric(self, name: str, metric: str) -> int:
        return sub_seed(self.run_seed, "xai", name, metric)

    def __call__(self, name: str, metric: str, keep: np.ndarray) -> np.ndarray:
        return np.array(
            [sub_seed(self.run_seed, "xai", name, metric, i) for i, k in zip(self.ids, keep) if k], dtype=np.int64
        )


def _column_by_id(ctx: RunContext, battery: str, col: str) -> dict[str, Any]:
    prev = ctx.previous.get(battery)
    if prev is None or col not in prev.samples:
        return {}
    return dict(zip(prev.samples["image_id"], prev.samples[col]))


def completeness_error(model, x: torch.Tensor, signed: torch.Tensor, device) -> Scores:
    """|sum of the attributions - (f(x) - f(black))| / |f(x) - f(black)|, f the fracture logit: how far
    Integrated Gradients (baseline black) is from its completeness axiom at the spec's number of steps."""
    with torch.no_grad():
        fx = model(x.to(device))[:, 1].double().cpu()
        f0 = model(torch.zeros_like(x).to(device))[:, 1].double().cpu()
    delta = (fx - f0).numpy()
    total = signed.reshape(len(signed), -1).double().sum(dim=1).numpy()
    small = np.abs(delta) < 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(small, np.nan, np.abs(total - delta) / np.abs(delta))
    reasons = ["f(x) = f(black): the relative error is undefined" if b else None for b in small]
    return Scores(err, reasons)
