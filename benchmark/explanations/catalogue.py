"""The explanation battery's columns and metric catalogue: a pure function of the spec's configuration.

``expected_metrics(config)`` is every metric the spec defines (what specs/<v>/metrics.json records);
``metric_defs(cfg, with_adv=False)`` leaves out the under-attack ones for a run without attacked images.
Ids follow ``fxbench.results.metric_ids``.
"""

from __future__ import annotations

from typing import Any

from ..results.metric_ids import VS_REF, adv_variant, attack_variant, drop_variant, xai_id, xai_image_id
from ..results.metrics import MetricDef
from .config import XaiConfig, parse_config

MASK_PX = xai_image_id("mask_px")
MASK_TERCILE = xai_image_id("mask_tercile")  # 1 small, 2 medium, 3 large (cut points from the spec)
DETECTED = xai_image_id("detected")  # 1.0 the model says fracture on the clean image, 0.0 it misses it
TERCILES = {1: "mask-small", 2: "mask-medium", 3: "mask-large"}
COMPLETENESS = "completeness_error"
LABEL = {"label": 1}  # every explanation metric is over the fractured images


def column(method: str, metric: str, variant: str | None = None) -> str:
    return xai_id(method, metric, variant=variant)


def attacked_column(attack: str) -> str:
    """1.0/True where the robustness battery stored an attacked point for the image."""
    return xai_image_id("adversarial", threat=attack)


def flipped_column(attack: str) -> str:
    """v2: 1.0 where the stored attacked point flipped the label, 0.0 where not, NaN where none was stored."""
    return xai_image_id("flipped", threat=attack)


def attack_parts(cfg: XaiConfig) -> list[tuple[str, bool]]:
    """(variant, higher is better when the metric's is) of the under-attack columns: v2 the score on the attacked
    images and the drop clean - attacked (a smaller drop is better); v3 with a noise control the score on the
    attacked images, on the noise control, attacked - noise and noise - clean (a larger difference is better)."""
    tag = cfg.under_attack.attack
    if cfg.under_attack.noise_control == "none":
        return [(adv_variant(tag), True), (drop_variant(tag), False)]
    return [(attack_variant(p, tag), True) for p in ("adv", "noise", "adv_minus_noise", "noise_minus_clean")]


def attack_columns(method: str, cfg: XaiConfig) -> list[str]:
    """The under-attack columns of ``method``, per metric (``attack_parts``)."""
    return [column(method, m, v) for m in cfg.under_attack.metrics for v, _ in attack_parts(cfg)]


def columns_of(name: str, cfg: XaiConfig, with_adv: bool) -> list[str]:
    """Every per-sample column a map produces (all NaN with a reason when the method is unsupported)."""
    out = [column(name, m) for m in cfg.localisation]
    out += [column(name, m) for m, c in cfg.model_metrics.items() if name in c.methods]
    if cfg.completeness is not None and name == cfg.completeness.method:
        out.append(column(name, COMPLETENESS))
    if with_adv and name in cfg.under_attack.methods:
        out += attack_columns(name, cfg)
    return out


def subgroups(cfg: XaiConfig) -> list[tuple[str, dict[str, Any]]]:
    """(variant, row filter) of every subgroup the spec asks for."""
    groups: list[tuple[str, dict[str, Any]]] = []
    if cfg.subgroups.hardware:
        groups += [("hardware", {"hardware": True}), ("no_hardware", {"hardware": False})]
    groups += [(f"region-{r}", {r: True}) for r in cfg.subgroups.regions]
    if cfg.subgroups.mask_terciles_px is not None:
        groups += [(g, {MASK_TERCILE: float(t)}) for t, g in TERCILES.items()]
    if cfg.subgroups.detection:
        groups += [("detected", {DETECTED: 1.0}), ("missed", {DETECTED: 0.0})]
    return groups


def metric_defs(cfg: XaiConfig, *, with_adv: bool) -> list[MetricDef]:
    label = dict(LABEL)  # a fresh dict per call, shared by this call's definitions (as before)
    groups = subgroups(cfg)
    chosen = {**cfg.localisation, **cfg.model_metrics}
    vs = cfg.vs_reference
    defs = []
    for name in cfg.maps:
        for metric, choice in chosen.items():
            if name not in choice.methods:
                continue
            col, hib = column(name, metric), choice.metric.higher_is_better
            red = choice.metric.reduce  # mean; v3 enrichment: median
            defs.append(MetricDef(col, col, red, hib, label))
            if vs is not None and name in cfg.methods and metric in vs.metrics:
                d = column(name, metric, VS_REF)
                defs.append(MetricDef(d, d, red, hib, label))
            if metric in cfg.subgroups.metrics:
                defs += [
                    MetricDef(column(name, metric, g), col, red, hib, {**label, **w})
                    for g, w in groups
                ]
            if with_adv and name in cfg.under_attack.methods and metric in cfg.under_attack.metrics:
                tag = cfg.under_attack.attack
                adv = column(name, metric, adv_variant(tag))
                for variant, same in attack_parts(cfg):
                    c = column(name, metric, variant)
                    defs.append(MetricDef(c, c, red, hib if same else not hib, label))
                if not cfg.under_attack.clean_fallback and cfg.under_attack.points == "cascade":
                    f = flipped_column(tag)
                    for part, v in (("flipped", 1.0), ("not_flipped", 0.0)):
                        split = column(name, metric, adv_variant(tag, part))
                        defs.append(MetricDef(split, adv, "mean", hib, {**label, f: v}))
        if cfg.completeness is not None and name == cfg.completeness.method:
            c = column(name, COMPLETENESS)
            defs.append(MetricDef(c, c, "mean", False, label))
    return defs


def expected_metrics(config: dict[str, Any] | XaiConfig) -> list[MetricDef]:
    """All metrics the spec defines; a run without the robustness battery reports no under-attack ones."""
    return metric_defs(parse_config(config), with_adv=True)
