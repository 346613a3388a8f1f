"""Print the README's Findings table (Markdown) from the stored v2 results.

    python scripts/findings.py [--results leaderboard/results] [--version v2] [--baseline fxb-resnet10t-erm]

For each headline metric: the value per model, the paired difference against the ERM baseline and, for an
attribution method's score, against the best trivial reference map of the same model (ref_centre,
ref_anatomy, ref_edge: the one with the best mean), each with its 95% paired bootstrap CI, n and p. Every
difference uses fxbench.leaderboard.compare.paired_difference, the code behind `fxbench compare`: only
images finite on both sides, one stratified draw shared by both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from fxbench.leaderboard.compare import LoadedResult, paired_difference, resolve_result
from fxbench.results.metrics import MetricDef

TRIVIAL = ("ref_centre", "ref_anatomy", "ref_edge")
CLASSIFIER = ["robust/linf-4/balanced_accuracy", "clean/balanced_accuracy"]
XAI = [
    "pointing_game",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "auc_anatomy",
    "coverage_at_15",
    "faithfulness_correlation",
    "pixel_flipping",
    "mprt",
    "max_sensitivity",
    "relevance_mass_accuracy/adv-linf-4",
    "relevance_mass_accuracy/adv-linf-4/flipped",
    "relevance_mass_accuracy/adv-linf-4/not_flipped",
    "pointing_game/adv-linf-4",
]
MIN_N = 20  # no CI below this many images (the leaderboard's rule)


def load(results: Path, version: str) -> dict[str, LoadedResult]:
    out = {}
    for p in sorted((results / version).glob("*.json")):
        r = resolve_result(str(p), results_dir=results)
        out[r.id] = r
    if not out:
        raise SystemExit(f"no results under {results / version}")
    return out


def metric_def(r: LoadedResult, mid: str) -> MetricDef | None:
    m = r.result["metrics"].get(mid)
    return None if m is None else MetricDef.from_json(mid, m["definition"], m["higher_is_better"])


def aligned(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    shared = a["image_id"][a["image_id"].isin(set(b["image_id"]))].to_numpy()
    return (a.set_index("image_id").loc[shared].reset_index(), b.set_index("image_id").loc[shared].reset_index())


def fmt(d, value: bool = False) -> str:
    if d is None or d.diff is None:
        return "n/a"
    if d.n < MIN_N:
        return f"{d.diff:+.3f} (n={d.n}: too small)"
    return f"{d.diff:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}], n={d.n}, p={d.p_value:.3g}"


def vs_reference(r: LoadedResult, mid: str, boot: dict):
    """The method's score minus the best trivial reference's, on the same model and images."""
    parts = mid.split("/")
    m = metric_def(r, mid)
    if m is None or parts[0] != "xai":
        return None, None
    best, best_v = None, None
    for ref in TRIVIAL:
        rid = "/".join(["xai", ref, *parts[2:]])
        rv = r.result["metrics"].get(rid, {}).get("value")
        if rv is not None and (best_v is None or (rv > best_v if m.higher_is_better else rv < best_v)):
            best, best_v = ref, rv
    if best is None:
        return None, None
    ref_col = metric_def(r, "/".join(["xai", best, *parts[2:]])).column
    da = r.samples.copy()
    da[m.column] = r.samples[ref_col]  # the reference's scores in the method's column: A = reference
    return best, paired_difference(da, r.samples, m, **boot, id=mid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("leaderboard/results"))
    ap.add_argument("--version", default="v2")
    ap.add_argument("--baseline", default="fxb-resnet10t-erm")
    ap.add_argument("--methods", default="saliency,input_x_gradient,integrated_gradients,gradcam,occlusion")
    args = ap.parse_args()
    results = load(args.results, args.version)
    base = results.get(args.baseline)
    any_r = next(iter(results.values()))
    b = {"n_resamples": 1000, "seed": 0, "alpha": 0.05, **any_r.result["benchmark"]["config"].get("bootstrap", {})}
    boot = {"n_resamples": int(b["n_resamples"]), "seed": int(b["seed"]), "alpha": float(b["alpha"])}
    mids = CLASSIFIER + [f"xai/{m}/{x}" for m in args.methods.split(",") for x in XAI]
    lines = [
        f"Benchmark {args.version}; differences are paired (same images, finite in both), 95% bootstrap CI "
        f"({boot['n_resamples']} resamples, stratified by label), two-sided p; no CI below n = {MIN_N}.",
        "",
        "| metric | model | value | vs " + args.baseline + " | vs best trivial reference |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mid in mids:
        for sid, r in sorted(results.items()):
            m = metric_def(r, mid)
            if m is None:
                continue
            v = r.result["metrics"][mid]
            value = "n/a" if v["value"] is None else f"{v['value']:.3f} (n={v['n']})"
            vs_base = "—"
            if base is not None and sid != args.baseline and metric_def(base, mid) is not None:
                da, db = aligned(base.samples, r.samples)
                vs_base = fmt(paired_difference(da, db, m, **boot, id=mid))
            ref, d = vs_reference(r, mid, boot)
            vs_ref = "—" if ref is None else f"{fmt(d)} ({ref})"
            direction = "" if m.higher_is_better else " (lower is better)"
            lines.append(f"| `{mid}`{direction} | {sid} | {value} | {vs_base} | {vs_ref} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
