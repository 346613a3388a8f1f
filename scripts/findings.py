"""Print the README's Findings (Markdown) from the stored results of a benchmark version.

    python scripts/findings.py [--results leaderboard/results] [--version v2] [--baseline fxb-resnet10t-erm]

v1/v2: for each headline metric, the value per model, the paired difference against the ERM baseline and,
for an attribution method's score, against the best trivial reference map of the same model (ref_centre,
ref_anatomy, ref_edge: the one with the best mean), each with its 95% paired bootstrap CI, n and p.

v3 (the version's explanation spec declares ``statistics``): one section per claim of the spec, one table per
model: the claim's primary comparison first (tested alone at alpha), then its family with Holm-adjusted p,
each with the median per-image difference, the signed-rank p and, where the spec gives a margin, the TOST
equivalence test ("no difference" is only ever claimed that way). Results whose ids match ``--seed-pattern``
(default ``<recipe>-s<k>``) are one recipe's seeds: resampled over seeds as well as images.

Every difference uses the code behind `fxbench compare` (fxbench.leaderboard.compare): only images finite
on both sides, one stratified draw shared by both.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
from fxbench.leaderboard.compare import (
    LoadedResult,
    MetricDiff,
    fmt_p,
    grouped_difference,
    paired_difference,
    resolve_result,
)
from fxbench.leaderboard.stats import adjust_p, margin_for, version_statistics
from fxbench.results.metric_ids import VS_REF, try_parse, xai_id
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


# -- v3: claims ------------------------------------------------------------------------------------------------


def seed_groups(results: dict[str, LoadedResult], pattern: str) -> dict[str, list[LoadedResult]]:
    """Recipe -> its results (several seeds where the ids match ``pattern``, else the result alone)."""
    rx = re.compile(pattern)
    out: dict[str, list[LoadedResult]] = {}
    for sid, r in sorted(results.items()):
        m = rx.match(sid)
        out.setdefault(m.group("recipe") if m else sid, []).append(r)
    return out


def shared_tables(groups: list[list[LoadedResult]]) -> list[list[pd.DataFrame]]:
    """Every table of the given groups restricted to the images all of them share, in one order."""
    members = [r for g in groups for r in g]
    keep = set(members[0].samples["image_id"])
    for r in members[1:]:
        keep &= set(r.samples["image_id"])
    order = members[0].samples["image_id"][members[0].samples["image_id"].isin(keep)].to_numpy()
    return [[r.samples.set_index("image_id").loc[order].reset_index() for r in g] for g in groups]


def best_reference(r: LoadedResult, metric: str, refs: list[str], hib: bool) -> str | None:
    """The reference the battery chose (components.explanations.best_reference), else the best stored value."""
    chosen = ((r.result.get("components") or {}).get("explanations") or {}).get("best_reference") or {}
    if chosen.get(metric):
        return chosen[metric]
    vals = {x: r.result["metrics"].get(xai_id(x, metric), {}).get("value") for x in refs}
    vals = {x: v for x, v in vals.items() if v is not None}
    return (max if hib else min)(vals, key=vals.get) if vals else None


def claim_ids(claim: dict, methods: list[str]) -> list[str]:
    """The claim's primary id, then its family expanded over the methods (the primary left out)."""
    suffix = f"/{VS_REF}" if claim["against"] == "best_reference" else ""
    family = [f"xai/{m}/{f}{suffix}" for f in claim["family"] for m in methods]
    return [claim["primary"]] + [i for i in dict.fromkeys(family) if i != claim["primary"]]


def one_difference(mid: str, a: list[LoadedResult], b: list[LoadedResult], claim: dict, rules: dict,
                   boot: dict) -> MetricDiff | None:
    """B - A for one id: a model against the baseline, or (best_reference) the method against its own best
    reference on the same images (each seed against its own)."""
    p = try_parse(mid)
    head = xai_id(p.method, p.metric) if claim["against"] == "best_reference" else mid
    first = (a or b)[0]
    mj = first.result["metrics"].get(head)
    if mj is None or any(head not in r.result["metrics"] for r in (*a, *b)):
        return None
    m = MetricDef.from_json(head, mj["definition"], mj["higher_is_better"])
    margin = margin_for(p.metric, rules)
    if claim["against"] == "baseline":
        ta, tb = shared_tables([a, b])
        return grouped_difference(ta, tb, m, **boot, id=mid, margin=margin)
    (tb,) = shared_tables([b])
    ta = []
    refs = [x for x in TRIVIAL_V3 if any(xai_id(x, p.metric) in r.result["metrics"] for r in b)]
    for r, t in zip(b, tb):
        ref = best_reference(r, p.metric, refs, m.higher_is_better)
        if ref is None:
            return None
        t = t.copy()
        t[m.column] = t[xai_id(ref, p.metric)]  # A = the reference's scores in the method's column
        ta.append(t)
    return grouped_difference(ta, tb, m, **boot, id=mid, margin=margin)


TRIVIAL_V3 = ("ref_random", "ref_edge", "ref_centre", "ref_anatomy", "ref_centre_anatomy", "ref_prior",
              "ref_prior_anatomy")


def fmt3(d: MetricDiff) -> str:
    if d.n < MIN_N:
        return f"{d.diff:+.4f} (n={d.n}: too small)"
    return f"{d.diff:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}], n={d.n}"


def verdict(d: MetricDiff, alpha: float) -> str:
    if d.margin is None:
        return "no margin: never called equivalent"
    if d.p_equivalence is None:
        return "n/a"
    word = "equivalent" if d.p_equivalence < alpha else "not shown equivalent"
    return f"{word} within ±{d.margin:g} (TOST {d.equivalence_test} p={fmt_p(d.p_equivalence)})"


def claims_report(results: dict[str, LoadedResult], rules: dict, *, baseline: str, methods: list[str],
                  seed_pattern: str, version: str) -> str:
    groups = seed_groups(results, seed_pattern)
    any_r = next(iter(results.values()))
    b = {"n_resamples": 1000, "seed": 0, **any_r.result["benchmark"]["config"].get("bootstrap", {})}
    alpha = float(rules.get("alpha", b.get("alpha", 0.05)))
    boot = {"n_resamples": int(b["n_resamples"]), "seed": int(b["seed"]), "alpha": alpha}
    seeds = ", ".join(f"{k} ({len(v)} seeds)" for k, v in groups.items() if len(v) > 1) or "none"
    lines = [
        f"Benchmark {version}. Each claim: its primary comparison tested alone at {alpha:g}, its family "
        f"{rules.get('correction', 'holm').title()}-adjusted; differences paired over the images finite in both, "
        f"{boot['n_resamples']} bootstrap resamples (stratified by label; recipes with several seeds: seeds "
        f"resampled too: {seeds}); beside each, the median per-image difference and the signed-rank p; "
        "\"equivalent\" only from a TOST inside the spec's margin. No CI below n = " + f"{MIN_N}.", ""]
    for name, claim in (rules.get("claims") or {}).items():
        lines += [f"### {name}: {claim.get('question', '')}", ""]
        if claim["against"] == "baseline" and baseline not in groups:
            lines += [f"(no baseline {baseline!r} among the results)", ""]
            continue
        others = [g for g in groups if g != baseline] if claim["against"] == "baseline" else list(groups)
        for recipe in others:
            a = groups[baseline] if claim["against"] == "baseline" else []
            what = f"{recipe} - {baseline}" if a else f"{recipe}: method - its best reference"
            rows = [(mid, one_difference(mid, a, groups[recipe], claim, rules, boot)) for mid in claim_ids(claim, methods)]
            rows = [(mid, d) for mid, d in rows if d is not None and d.diff is not None]
            if not rows:
                continue
            fam = [i for i, (mid, d) in enumerate(rows) if mid != claim["primary"] and d.p_value is not None
                   and d.n >= MIN_N]
            adj = adjust_p([rows[i][1].p_value for i in fam], rules.get("correction", "holm"))
            for i, pa in zip(fam, adj):
                rows[i] = (rows[i][0], replace(rows[i][1], p_adjusted=pa))
            lines += [f"**{what}**", "", "| role | metric | B - A [95% CI], n | p | median diff, p (Wilcoxon) | "
                      "equivalence |", "| --- | --- | --- | --- | --- | --- |"]
            for mid, d in rows:
                primary = mid == claim["primary"]
                p = d.p_value if primary else d.p_adjusted
                wil = "—" if d.median_diff is None else f"{d.median_diff:+.4f}, p={fmt_p(d.p_wilcoxon)}"
                lines.append(f"| {'**primary**' if primary else 'family'} | `{mid}` | {fmt3(d)} | "
                             f"{fmt_p(p)}{'' if primary else ' (Holm)'} | {wil} | {verdict(d, alpha)} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("leaderboard/results"))
    ap.add_argument("--version", default="v2")
    ap.add_argument("--baseline", default="fxb-resnet10t-erm")
    ap.add_argument("--methods", default="saliency,input_x_gradient,integrated_gradients,gradcam,occlusion")
    ap.add_argument("--seed-pattern", default=r"^(?P<recipe>.+)-s(?P<seed>[0-9]+)$",
                    help="v3: ids matching this are seeds of one recipe (named by the group 'recipe')")
    args = ap.parse_args()
    results = load(args.results, args.version)
    rules = version_statistics(args.version)
    if rules:
        print(claims_report(results, rules, baseline=args.baseline, methods=args.methods.split(","),
                            seed_pattern=args.seed_pattern, version=args.version))
        return
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
