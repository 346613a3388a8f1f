"""What ``finalize`` adds to the merged shards: info and flags summed over shards, the paired differences
against the best trivial reference (v2) and the completeness check of Integrated Gradients."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from ..battery import Flag, ShardOutput
from ..results.metric_ids import VS_REF
from .catalogue import COMPLETENESS, column
from .config import XaiConfig


def summarise(outputs: dict[str, ShardOutput], cfg: XaiConfig, with_adv: bool) -> tuple[dict[str, Any], list[Flag]]:
    """The battery's info (unsupported methods, failed metrics, NaN counts with reasons, timings, the
    attack status, the metric paths) over every shard, and the flags that qualify the numbers."""
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


def vs_reference_columns(samples: pd.DataFrame, cfg: XaiConfig, info: dict) -> pd.DataFrame:
    """Per image: the method's score minus the best trivial reference's score on the same image (the
    reference with the best mean (v3 enrichment: median) on this result's images, per metric). A method that does not beat
    what a map knowing nothing about the model gets shows it here, with a paired CI. Returns the new columns
    (one frame, joined once by the caller: a column at a time fragments a wide frame); the choice in ``info``."""
    vs = cfg.vs_reference
    out: dict[str, Any] = {}
    if vs is None:
        return pd.DataFrame(out, index=samples.index)
    best: dict[str, str | None] = {}
    for metric in vs.metrics:
        m = cfg.localisation[metric].metric
        hib = m.higher_is_better
        # the strongest reference by the metric's own reducer (v3 enrichment: the median)
        means = {
            r: getattr(samples[column(r, metric)], m.reduce)() for r in vs.references if column(r, metric) in samples
        }
        means = {r: v for r, v in means.items() if np.isfinite(v)}
        ref = (max if hib else min)(means, key=means.get) if means else None
        best[metric] = ref
        for name in cfg.methods:
            col = column(name, metric)
            if col not in samples:
                continue
            d = column(name, metric, VS_REF)
            out[d] = np.nan if ref is None else samples[col] - samples[column(ref, metric)]
    info["best_reference"] = best
    return pd.DataFrame(out, index=samples.index)


def check_completeness(samples: pd.DataFrame, cfg: XaiConfig, info: dict, flags: list[Flag]) -> None:
    """The median relative completeness error of the spec's method, in info; a flag above the bound."""
    if cfg.completeness is None:
        return
    c = samples.get(column(cfg.completeness.method, COMPLETENESS))
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
