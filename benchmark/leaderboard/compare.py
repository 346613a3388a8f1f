"""`fxbench compare A B`: paired differences (B - A) of every shared metric, with a paired bootstrap.

Pairing: the two per-sample tables are joined on image_id; for each metric only the images where the metric's
column is finite in BOTH results are kept (an image one side could not score, e.g. NaN with a reason, is
dropped from both sides: never is each side averaged over its own rows). Each bootstrap resample draws those
images (stratified by label) once and recomputes the metric for both submissions on that same draw, so the
image-to-image variation that both share cancels in the difference. ``n`` is the number of paired images.

What is printed (issue 13): the headline metrics by default (`headline_ids`; `--all` for every shared metric,
`--metric PREFIX` for a chosen few); p-values adjusted for the number of comparisons shown (Holm's step-down
by default, controlling the chance of any false "significant" among them; Benjamini-Hochberg on request,
controlling the share of false discoveries), the method named in the output; no CI or p-value for a metric
over fewer paired images than the version's `min_n_for_ci`; a warning when the two results cover different
images.

v3 (the version's explanation spec declares ``statistics``; stats.py): the claims' primary comparisons are
marked and tested alone at alpha, Holm runs over the other rows; beside each difference the median per-image
difference and the Wilcoxon signed-rank p; for metrics with an equivalence margin, TOST's p ("no difference"
only below alpha). A side may be a recipe's several seeds (``A1,A2,A3``, the results of one recipe): the
bootstrap then resamples seeds as well as images (``stats.seed_means``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ResultError
from ..results.metric_ids import ROBUST, clean_id, try_parse
from ..results.metrics import LABEL, PER_ROW, REDUCERS, MetricDef, count_rows
from . import corruption_columns
from .compare_text import fmt_p, format_table
from .resample import Resampler
from .stats import (
    CORRECTIONS,
    adjust_p,
    margin_for,
    p_value,
    primary_ids,
    seed_means,
    tost_bootstrap,
    tost_paired,
    version_statistics,
    wilcoxon_p,
)
from .store import VERSION_RE, read_json, read_samples, samples_path

__all__ = ["CORRECTIONS", "adjust_p", "compare_results", "fmt_p", "format_table", "grouped_difference", "p_value",
           "paired_difference", "resolve_pair", "resolve_result"]


@dataclass(frozen=True)
class LoadedResult:
    ref: str  # what the user typed
    path: Path
    result: dict[str, Any]
    samples: pd.DataFrame
    seeds: tuple[LoadedResult, ...] = ()  # a recipe's several seeds ("A1,A2,..."): this is then the first

    @property
    def id(self) -> str:
        return self.result["submission"]["id"]

    @property
    def members(self) -> tuple[LoadedResult, ...]:
        return self.seeds or (self,)


@dataclass(frozen=True)
class MetricDiff:
    id: str
    a: float | None
    b: float | None
    diff: float | None  # b - a
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # two-sided, paired bootstrap
    n_a: int  # rows with a finite score in A (before pairing)
    n_b: int
    higher_is_better: bool
    n: int = 0  # paired images: finite in both, the rows every number of this line is computed on
    p_adjusted: float | None = None  # p after the comparison's multiple-comparison correction
    too_small: bool = False  # n below the version's min_n_for_ci: no CI or p-value is shown
    # v3 (stats.py): the median per-image difference and its signed-rank p (mean and median metrics), the
    # equivalence margin and TOST's p where the version gives a margin; a claim's primary comparison
    median_diff: float | None = None
    p_wilcoxon: float | None = None
    margin: float | None = None
    p_equivalence: float | None = None
    equivalence_test: str | None = None
    primary: bool = False
    n_seeds_a: int = 1
    n_seeds_b: int = 1


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    version: str
    n_shared: int
    n_resamples: int
    seed: int
    alpha: float
    metrics: list[MetricDiff]
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    direction: str = "b - a"
    selection: str = "all"  # headline | all | prefix
    correction: str = "none"  # holm | bh | none, over the metrics with a p-value shown
    min_n_for_ci: int = 0
    n_a: int = 0  # images in A's and B's per-sample tables (n_shared of them in both)
    n_b: int = 0
    warnings: list[str] = field(default_factory=list)
    statistics: bool = False  # v3: the version's rules apply (primary comparisons, Wilcoxon, TOST)
    seeds_a: list[str] = field(default_factory=list)  # the results of each side (several: a recipe's seeds)
    seeds_b: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def resolve_result(ref: str, *, results_dir: str | Path) -> LoadedResult:
    """A result.json, a run folder holding one, or a submission id (``id`` or ``v1/id``) in the store; a bare
    id found in several versions means the newest version's. ``A1,A2,...``: one recipe's several seeds, each
    resolved the same way (the first one carries them in ``seeds``)."""
    if "," in ref:
        parts = [p for p in ref.split(",") if p]
        members = tuple(resolve_result(p, results_dir=results_dir) for p in parts)
        if len({m.path.resolve() for m in members}) != len(members):
            raise ResultError(f"{ref!r}: the same result twice among the seeds")
        first = members[0]
        return LoadedResult(ref=ref, path=first.path, result=first.result, samples=first.samples, seeds=members)
    path = Path(ref)
    if path.is_dir():
        path = path / "result.json"
    elif not path.is_file():
        path = _lookup_id(ref, Path(results_dir))
    result = read_json(path)
    samples = read_samples(samples_path(path, result), result, path)
    return LoadedResult(ref=ref, path=path, result=result, samples=samples)


def resolve_pair(a: str, b: str, *, results_dir: str | Path) -> tuple[LoadedResult, LoadedResult]:
    """Two results to compare. Two bare ids mean the newest version holding *both* (a v3 result of one model
    must not turn a comparison both have in v2 into a cross-version error); otherwise each as
    ``resolve_result``."""
    root = Path(results_dir)
    if all(_bare_id(r) for r in (a, b)):
        both = [f for f in root.glob("v*") if VERSION_RE.match(f.name)
                and (f / f"{a}.json").is_file() and (f / f"{b}.json").is_file()]
        if both:
            v = max(both, key=lambda f: int(f.name[1:])).name
            return resolve_result(f"{v}/{a}", results_dir=root), resolve_result(f"{v}/{b}", results_dir=root)
    return resolve_result(a, results_dir=root), resolve_result(b, results_dir=root)


def _bare_id(ref: str) -> bool:
    return "/" not in ref and "," not in ref and not Path(ref).exists()


def _lookup_id(ref: str, root: Path) -> Path:
    version, _, sid = ref.rpartition("/")
    folders = [root / version] if version else sorted(p for p in root.glob("v*") if VERSION_RE.match(p.name))
    hits = [f / f"{sid}.json" for f in folders if (f / f"{sid}.json").is_file()]
    if not hits:
        raise ResultError(f"{ref!r}: not a result file, a result folder, or a submission id in {root}")
    # A bare id means the newest version holding that id (the current benchmark's once it has a result there);
    # `v1/id` names an older one. Versions are ordered by number, not as strings (v10 after v9).
    return max(hits, key=lambda h: int(h.parent.name[1:]))


def _value(df: pd.DataFrame, m: MetricDef) -> float:
    rows = m.rows(df)
    return REDUCERS.get(m.reduce)(rows, m) if len(rows) else float("nan")


def _num(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


DEFAULT_MIN_N_FOR_CI = 20  # v2's rule; v1 declares none and gets the same in compare
HEADLINE_CLEAN = tuple(clean_id(m) for m in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auroc"))


def headline_ids(ids: list[str], version: str) -> list[str]:
    """The metrics a reader compares first: the version's ranking keys, the clean scores, accuracy and
    balanced accuracy at every budget, and the leaderboard's localisation scores for every attribution
    method that is not a reference map (the columns of the main table, from the layout)."""
    from .layout import load_layout

    layout = load_layout()
    keep = set(layout.rank_by) | set(HEADLINE_CLEAN) | set(layout.clean)
    keep |= set(_version_leaderboard(version).get("rank_by") or ())
    keep |= set(corruption_columns.HEADERS)  # v3 on: the mean corrupted balanced accuracy and its drop
    refs = set(layout.reference_maps)
    out = []
    for mid in ids:
        p = try_parse(mid)
        if mid in keep or (p is not None and p.family == ROBUST and p.metric in ("accuracy", "balanced_accuracy")):
            out.append(mid)
        elif p is not None and p.headline and p.metric in layout.localisation and p.method not in refs:
            out.append(mid)
    return out


def _version_leaderboard(version: str) -> dict[str, Any]:
    from ..definition import load_definition

    try:
        return load_definition(version).raw.get("leaderboard") or {}
    except Exception:  # noqa: BLE001 - an unknown version has no rules; compare still works
        return {}


def _check_comparable(a: LoadedResult, b: LoadedResult) -> list[str]:
    """Refuse results of different versions or data; notes for different configurations."""
    first = a.members[0].result["benchmark"]
    notes = []
    for r in (*a.members, *b.members):
        br = r.result["benchmark"]
        if br["version"] != first["version"]:
            raise ResultError(
                f"cannot compare {a.members[0].ref} (benchmark {first['version']}) with {r.ref} (benchmark "
                f"{br['version']}): different benchmark versions measure different things"
            )
        fa, fb = first["dataset"]["fingerprint"], br["dataset"]["fingerprint"]
        if fa != fb:
            raise ResultError(
                f"cannot compare {a.members[0].ref} with {r.ref}: computed on different data "
                f"(dataset fingerprints {fa[:12]}... and {fb[:12]}...)"
            )
        if br["config_hash"] != first["config_hash"] and not notes:
            notes.append(
                f"different battery configurations ({first['preset']} {first['config_hash']} vs "
                f"{br['preset']} {br['config_hash']}): differences include the configuration's effect"
            )
    return notes


def compare_results(
    a: LoadedResult, b: LoadedResult, *, prefixes: tuple[str, ...] = (), n_resamples: int | None = None,
    seed: int | None = None, alpha: float | None = None, select: str = "all", correction: str = "none",
) -> Comparison:
    notes = _check_comparable(a, b)
    ba = a.result["benchmark"]
    boot = {"n_resamples": 1000, "seed": 0, "alpha": 0.05, **ba.get("config", {}).get("bootstrap", {})}
    n_resamples = int(n_resamples if n_resamples is not None else boot["n_resamples"])
    seed = int(seed if seed is not None else boot["seed"])
    alpha = float(alpha if alpha is not None else boot["alpha"])

    if correction not in CORRECTIONS:
        raise ResultError(f"--correction {correction!r}: choose one of {', '.join(CORRECTIONS)}")
    tas, tbs = _paired_tables(a, b)
    warnings = _coverage_warnings(a, b, len(tas[0]))
    ids = sorted(set.intersection(*(set(r.result["metrics"]) for r in (*a.members, *b.members))))
    if not ids:
        raise ResultError(f"{a.ref} and {b.ref} have no metric in common")
    rules = version_statistics(ba["version"])
    primary = [i for i in primary_ids(rules) if i in ids]
    if prefixes:
        select = "prefix"
        ids = [i for i in ids if any(i.startswith(p) for p in prefixes)]
        if not ids:
            raise ResultError(f"no metric shared by both results starts with {', '.join(prefixes)}")
    elif select == "headline":
        ids = headline_ids(ids, ba["version"]) or ids
    if rules:  # v3: the claims' primary comparisons first
        ids = [i for i in primary if i in ids or select != "prefix"] + [i for i in ids if i not in primary]
    min_n = int(_version_leaderboard(ba["version"]).get("min_n_for_ci") or DEFAULT_MIN_N_FOR_CI)
    out, skipped, cache = [], [], {}
    for mid in ids:
        defs = [r.result["metrics"][mid] for r in (*a.members, *b.members)]
        if any(d["definition"] != defs[0]["definition"] for d in defs):
            skipped.append({"id": mid, "reason": "defined differently in the two results"})
            continue
        m = MetricDef.from_json(mid, defs[0]["definition"], defs[0]["higher_is_better"])
        p = try_parse(mid)
        d = grouped_difference(tas, tbs, m, n_resamples=n_resamples, seed=seed, alpha=alpha, cache=cache,
                               margin=margin_for(p.metric if p is not None else None, rules) if rules else None)
        out.append(replace(d, primary=mid in primary) if rules else d)
    out = _adjusted(out, min_n=min_n, correction=correction)
    return Comparison(
        a=a.ref, b=b.ref, version=ba["version"], n_shared=len(tas[0]), n_resamples=n_resamples, seed=seed,
        alpha=alpha, metrics=out, skipped=skipped, notes=notes, selection=select, correction=correction,
        min_n_for_ci=min_n, n_a=len(a.samples), n_b=len(b.samples), warnings=warnings, statistics=bool(rules),
        seeds_a=[r.ref for r in a.members], seeds_b=[r.ref for r in b.members],
    )


def _adjusted(diffs: list[MetricDiff], *, min_n: int, correction: str) -> list[MetricDiff]:
    """Mark rows under min_n (no CI or p shown, not in the family) and adjust the others' p-values. A claim's
    primary comparison (v3) is tested alone: its p stays as it is and it is not in the family."""
    diffs = [replace(d, too_small=d.n < min_n) for d in diffs]
    for i, d in enumerate(diffs):
        if d.primary and d.p_value is not None and not d.too_small:
            diffs[i] = replace(d, p_adjusted=d.p_value)
    family = [i for i, d in enumerate(diffs) if d.p_value is not None and not d.too_small and not d.primary]
    adj = adjust_p([diffs[i].p_value for i in family], correction)
    for i, p in zip(family, adj):
        diffs[i] = replace(diffs[i], p_adjusted=p)
    return diffs


def _coverage_warnings(a: LoadedResult, b: LoadedResult, n_shared: int) -> list[str]:
    """A loud warning when the two results were computed on different images: every number is then on the
    shared images only and differs from what each result file says."""
    na, nb = len(a.samples), len(b.samples)
    if na == nb == n_shared and all(len(r.samples) == n_shared for r in (*a.members, *b.members)):
        return []
    la, lb = a.result["benchmark"].get("limit"), b.result["benchmark"].get("limit")
    why = f" (--limit: A {la if la is not None else 'none'}, B {lb if lb is not None else 'none'})" if la != lb else ""
    return [f"the two results cover different images{why}: A has {na}, B has {nb}, {n_shared} in both. Every "
            "number below is computed on the shared images only, so A's and B's values differ from their "
            "result files and from the leaderboard."]


def finite_in_both(da: pd.DataFrame, db: pd.DataFrame, m: MetricDef) -> np.ndarray:
    """Rows (of two aligned tables) where the metric's column is finite on both sides and its row filter
    holds on both sides. A filter on an image property (label, hardware) agrees anyway; one on a model's
    own behaviour (an attack flipped its label, it detected the fracture) does not, and applying it to each
    side separately would compare two different sets of images."""
    va = pd.to_numeric(da[m.column], errors="coerce").to_numpy(dtype=float)
    vb = pd.to_numeric(db[m.column], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(va) & np.isfinite(vb)
    for col, val in m.where.items():
        ok &= (da[col] == val).to_numpy() & (db[col] == val).to_numpy()
    return ok


def paired_difference(
    da: pd.DataFrame, db: pd.DataFrame, m: MetricDef, *, n_resamples: int, seed: int, alpha: float,
    id: str | None = None, cache: dict | None = None, margin: float | None = None,
) -> MetricDiff:
    """B - A for one metric on aligned tables (same image_id order): only the images finite in both, one
    stratified bootstrap draw shared by both sides, a two-sided p-value. Used by `fxbench compare` and
    scripts/findings.py."""
    return grouped_difference([da], [db], m, n_resamples=n_resamples, seed=seed, alpha=alpha, id=id, cache=cache,
                              margin=margin)


def grouped_difference(
    tas: list[pd.DataFrame], tbs: list[pd.DataFrame], m: MetricDef, *, n_resamples: int, seed: int, alpha: float,
    id: str | None = None, cache: dict | None = None, margin: float | None = None,
) -> MetricDiff:
    """``paired_difference`` for a recipe's several seeds per side (aligned tables): a side's value is the
    mean of its seeds' values; each bootstrap draw resamples the images (shared) and, per side, the seeds
    (``stats.seed_means``). One table per side is exactly the paired image bootstrap."""
    ok = np.ones(len(tas[0]), dtype=bool)
    for t in (*tas, *tbs):
        ok &= finite_in_both(tas[0], t, m)
    n_a = count_rows(m.rows(tas[0]), m) if len(tas) == 1 else 0
    n_b = count_rows(m.rows(tbs[0]), m) if len(tbs) == 1 else 0
    pas = [t[ok].reset_index(drop=True) for t in tas]
    pbs = [t[ok].reset_index(drop=True) for t in tbs]
    n = count_rows(m.rows(pas[0]), m)
    n_a, n_b = (n_a, n_b) if len(tas) == len(tbs) == 1 else (n, n)
    nan = MetricDiff(id=id or m.id, a=None, b=None, diff=None, ci_low=None, ci_high=None, p_value=None,
                     n_a=n_a, n_b=n_b, higher_is_better=m.higher_is_better, n=n, n_seeds_a=len(tas),
                     n_seeds_b=len(tbs), margin=margin)
    if n == 0 or not len(pas[0]):
        return nan
    va = float(np.mean([_value(t, m) for t in pas]))
    vb = float(np.mean([_value(t, m) for t in pbs]))
    key = (ok.tobytes(), n_resamples, seed)  # the same rows kept: the same draws (cache per table pair)
    res = None if cache is None else cache.get(key)
    if res is None:
        res = Resampler.stratified(pas[0][LABEL].to_numpy(), n_resamples=n_resamples, seed=seed)
        if cache is not None:
            cache[key] = res
    rng = np.random.default_rng([seed, 1]) if len(tas) > 1 or len(tbs) > 1 else None
    stats = (seed_means(np.array([res.metric(t, m) for t in pbs]), n_resamples, rng)
             - seed_means(np.array([res.metric(t, m) for t in pas]), n_resamples, rng))
    finite = stats[np.isfinite(stats)]
    lo = hi = float("nan")
    if finite.size and np.isfinite(vb - va):
        lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    out = MetricDiff(
        id=id or m.id, a=_num(va), b=_num(vb), diff=_num(vb - va), ci_low=_num(lo), ci_high=_num(hi),
        p_value=p_value(stats) if np.isfinite(vb - va) else None, n_a=n_a, n_b=n_b,
        higher_is_better=m.higher_is_better, n=n, n_seeds_a=len(tas), n_seeds_b=len(tbs), margin=margin,
    )
    return _per_image_tests(out, pas, pbs, m, stats, margin)


def _per_image_tests(d: MetricDiff, pas, pbs, m: MetricDef, stats: np.ndarray, margin: float | None) -> MetricDiff:
    """v3 beside the bootstrap: per-image differences (seeds averaged) with their median and signed-rank p,
    and TOST where a margin is given (paired t for a mean of one result per side, else on the bootstrap)."""
    if d.diff is None:
        return d
    per_image = None
    if m.reduce in PER_ROW:
        rows = [m.rows(t)[m.column].astype(float).to_numpy() for t in (*pas, *pbs)]
        k = len(pas)
        per_image = np.mean(rows[k:], axis=0) - np.mean(rows[:k], axis=0)
    tost = None
    if margin is not None:
        single = len(pas) == len(pbs) == 1
        tost = tost_paired(per_image, margin) if single and m.reduce == "mean" else tost_bootstrap(stats, margin)
    return replace(
        d,
        median_diff=None if per_image is None else _num(float(np.median(per_image))),
        p_wilcoxon=None if per_image is None else wilcoxon_p(per_image),
        p_equivalence=None if tost is None else tost.p,
        equivalence_test=None if tost is None else tost.test,
    )


def _paired_tables(a: LoadedResult, b: LoadedResult) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """Every per-sample table of both sides restricted to the image ids all of them share, in one row order."""
    members = (*a.members, *b.members)
    keep = set(members[0].samples["image_id"])
    for r in members[1:]:
        keep &= set(r.samples["image_id"])
    shared = a.samples["image_id"][a.samples["image_id"].isin(keep)]
    if shared.empty:
        raise ResultError(f"{a.ref} and {b.ref} share no evaluated image")
    tables = [r.samples.set_index("image_id").loc[shared.to_numpy()].reset_index() for r in members]
    labels = tables[0][LABEL].to_numpy()
    for r, t in zip(members, tables):
        bad = t[LABEL].to_numpy() != labels
        if bad.any():
            raise ResultError(f"image {t['image_id'][bad].iloc[0]} has different labels in {a.ref} and {r.ref}")
    return tables[: len(a.members)], tables[len(a.members) :]
