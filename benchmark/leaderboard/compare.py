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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ResultError
from ..results.metric_ids import ROBUST, clean_id, try_parse
from ..results.metrics import LABEL, REDUCERS, MetricDef, count_rows
from . import corruption_columns
from .resample import Resampler
from .store import VERSION_RE, read_json, read_samples, samples_path


@dataclass(frozen=True)
class LoadedResult:
    ref: str  # what the user typed
    path: Path
    result: dict[str, Any]
    samples: pd.DataFrame

    @property
    def id(self) -> str:
        return self.result["submission"]["id"]


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def resolve_result(ref: str, *, results_dir: str | Path) -> LoadedResult:
    """A result.json, a run folder holding one, or a submission id (``id`` or ``v1/id``) in the store; a bare
    id found in several versions means the newest version's."""
    path = Path(ref)
    if path.is_dir():
        path = path / "result.json"
    elif not path.is_file():
        path = _lookup_id(ref, Path(results_dir))
    result = read_json(path)
    samples = read_samples(samples_path(path, result), result, path)
    return LoadedResult(ref=ref, path=path, result=result, samples=samples)


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


def p_value(diffs: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value for "no difference": twice the smaller tail at 0, with the +1 correction
    that keeps it above zero for a finite number of resamples."""
    d = diffs[np.isfinite(diffs)]
    if d.size == 0:
        return None
    tail = min((d <= 0).sum(), (d >= 0).sum()) + 1
    return float(min(1.0, 2 * tail / (d.size + 1)))


CORRECTIONS = {"holm": "Holm step-down (family-wise error rate)", "bh": "Benjamini-Hochberg (false discovery rate)",
               "none": "none"}
DEFAULT_MIN_N_FOR_CI = 20  # v2's rule; v1 declares none and gets the same in compare
HEADLINE_CLEAN = tuple(clean_id(m) for m in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auroc"))


def adjust_p(p: list[float], method: str) -> list[float]:
    """Adjusted p-values, in the input order. Holm: step-down, max-accumulated; BH: step-up, min-accumulated
    from the largest. Both capped at 1."""
    if method not in CORRECTIONS:
        raise ResultError(f"--correction {method!r}: choose one of {', '.join(CORRECTIONS)}")
    m = len(p)
    if method == "none" or m == 0:
        return list(p)
    order = np.argsort(p, kind="stable")
    ps = np.asarray(p, dtype=float)[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ps))
    else:
        adj = np.minimum.accumulate((m / np.arange(1, m + 1) * ps)[::-1])[::-1]
        adj = np.minimum(1.0, adj)
    out = np.empty(m)
    out[order] = adj
    return [float(x) for x in out]


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


def compare_results(
    a: LoadedResult, b: LoadedResult, *, prefixes: tuple[str, ...] = (), n_resamples: int | None = None,
    seed: int | None = None, alpha: float | None = None, select: str = "all", correction: str = "none",
) -> Comparison:
    ba, bb = a.result["benchmark"], b.result["benchmark"]
    if ba["version"] != bb["version"]:
        raise ResultError(
            f"cannot compare {a.ref} (benchmark {ba['version']}) with {b.ref} (benchmark {bb['version']}): "
            "different benchmark versions measure different things"
        )
    fa, fb = ba["dataset"]["fingerprint"], bb["dataset"]["fingerprint"]
    if fa != fb:
        raise ResultError(
            f"cannot compare {a.ref} with {b.ref}: computed on different data "
            f"(dataset fingerprints {fa[:12]}... and {fb[:12]}...)"
        )
    notes = []
    if ba["config_hash"] != bb["config_hash"]:
        notes.append(
            f"different battery configurations ({ba['preset']} {ba['config_hash']} vs "
            f"{bb['preset']} {bb['config_hash']}): differences include the configuration's effect"
        )
    boot = {"n_resamples": 1000, "seed": 0, "alpha": 0.05, **ba.get("config", {}).get("bootstrap", {})}
    n_resamples = int(n_resamples if n_resamples is not None else boot["n_resamples"])
    seed = int(seed if seed is not None else boot["seed"])
    alpha = float(alpha if alpha is not None else boot["alpha"])

    if correction not in CORRECTIONS:
        raise ResultError(f"--correction {correction!r}: choose one of {', '.join(CORRECTIONS)}")
    da, db = _paired_tables(a, b)
    warnings = _coverage_warnings(a, b, len(da))
    ids = sorted(set(a.result["metrics"]) & set(b.result["metrics"]))
    if not ids:
        raise ResultError(f"{a.ref} and {b.ref} have no metric in common")
    if prefixes:
        select = "prefix"
        ids = [i for i in ids if any(i.startswith(p) for p in prefixes)]
        if not ids:
            raise ResultError(f"no metric shared by both results starts with {', '.join(prefixes)}")
    elif select == "headline":
        ids = headline_ids(ids, ba["version"]) or ids
    min_n = int(_version_leaderboard(ba["version"]).get("min_n_for_ci") or DEFAULT_MIN_N_FOR_CI)
    out, skipped, cache = [], [], {}
    for mid in ids:
        ma, mb = a.result["metrics"][mid], b.result["metrics"][mid]
        if ma["definition"] != mb["definition"]:
            skipped.append({"id": mid, "reason": "defined differently in the two results"})
            continue
        m = MetricDef.from_json(mid, ma["definition"], ma["higher_is_better"])
        out.append(paired_difference(da, db, m, n_resamples=n_resamples, seed=seed, alpha=alpha, cache=cache))
    out = _adjusted(out, min_n=min_n, correction=correction)
    return Comparison(
        a=a.ref, b=b.ref, version=ba["version"], n_shared=len(da), n_resamples=n_resamples, seed=seed,
        alpha=alpha, metrics=out, skipped=skipped, notes=notes, selection=select, correction=correction,
        min_n_for_ci=min_n, n_a=len(a.samples), n_b=len(b.samples), warnings=warnings,
    )


def _adjusted(diffs: list[MetricDiff], *, min_n: int, correction: str) -> list[MetricDiff]:
    """Mark rows under min_n (no CI or p shown, not in the family) and adjust the others' p-values."""
    from dataclasses import replace

    diffs = [replace(d, too_small=d.n < min_n) for d in diffs]
    family = [i for i, d in enumerate(diffs) if d.p_value is not None and not d.too_small]
    adj = adjust_p([diffs[i].p_value for i in family], correction)
    for i, p in zip(family, adj):
        diffs[i] = replace(diffs[i], p_adjusted=p)
    return diffs


def _coverage_warnings(a: LoadedResult, b: LoadedResult, n_shared: int) -> list[str]:
    """A loud warning when the two results were computed on different images: every number is then on the
    shared images only and differs from what each result file says."""
    na, nb = len(a.samples), len(b.samples)
    if na == nb == n_shared:
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
    id: str | None = None, cache: dict | None = None,
) -> MetricDiff:
    """B - A for one metric on aligned tables (same image_id order): only the images finite in both, one
    stratified bootstrap draw shared by both sides, a two-sided p-value. Used by `fxbench compare` and
    scripts/findings.py."""
    n_a, n_b = count_rows(m.rows(da), m), count_rows(m.rows(db), m)
    ok = finite_in_both(da, db, m)
    pa, pb = da[ok].reset_index(drop=True), db[ok].reset_index(drop=True)
    n = count_rows(m.rows(pa), m)
    nan = MetricDiff(id=id or m.id, a=None, b=None, diff=None, ci_low=None, ci_high=None, p_value=None,
                     n_a=n_a, n_b=n_b, higher_is_better=m.higher_is_better, n=n)
    if n == 0 or not len(pa):
        return nan
    va, vb = _value(pa, m), _value(pb, m)
    key = (ok.tobytes(), n_resamples, seed)  # the same rows kept: the same draws (cache per table pair)
    res = None if cache is None else cache.get(key)
    if res is None:
        res = Resampler.stratified(pa[LABEL].to_numpy(), n_resamples=n_resamples, seed=seed)
        if cache is not None:
            cache[key] = res
    stats = res.metric(pb, m) - res.metric(pa, m)
    finite = stats[np.isfinite(stats)]
    lo = hi = float("nan")
    if finite.size and np.isfinite(vb - va):
        lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return MetricDiff(
        id=id or m.id, a=_num(va), b=_num(vb), diff=_num(vb - va), ci_low=_num(lo), ci_high=_num(hi),
        p_value=p_value(stats) if np.isfinite(vb - va) else None, n_a=n_a, n_b=n_b,
        higher_is_better=m.higher_is_better, n=n,
    )


def _paired_tables(a: LoadedResult, b: LoadedResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both per-sample tables restricted to the shared image ids, in the same row order."""
    shared = a.samples["image_id"][a.samples["image_id"].isin(set(b.samples["image_id"]))]
    if shared.empty:
        raise ResultError(f"{a.ref} and {b.ref} share no evaluated image")
    da = a.samples.set_index("image_id").loc[shared.to_numpy()].reset_index()
    db = b.samples.set_index("image_id").loc[shared.to_numpy()].reset_index()
    bad = da[LABEL].to_numpy() != db[LABEL].to_numpy()
    if bad.any():
        raise ResultError(f"image {da['image_id'][bad].iloc[0]} has different labels in {a.ref} and {b.ref}")
    return da, db


def fmt_p(p: float | None) -> str:
    """One format for every p-value: three decimals, "<0.001" below that."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_table(c: Comparison) -> str:
    from tabulate import tabulate

    def f(x: float | None, spec: str = ".4f") -> str:
        return "n/a" if x is None else format(x, spec)

    level = round(100 * (1 - c.alpha))
    small = f"n<{c.min_n_for_ci}"
    rows = []
    for d in c.metrics:
        ci = "n/a" if d.ci_low is None else f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]"
        rows.append([
            d.id, f(d.a), f(d.b), f(d.diff, "+.4f"), small if d.too_small else ci,
            "-" if d.too_small else fmt_p(d.p_value), "-" if d.too_small else fmt_p(d.p_adjusted),
            d.n if d.n == d.n_a == d.n_b else f"{d.n} (A {d.n_a}, B {d.n_b})",
        ])
    short = {"holm": "Holm", "bh": "BH", "none": "unadj."}[c.correction]
    headers = ["metric", "A", "B", "B - A", f"{level}% CI", "p", f"p ({short})", "n paired"]
    shown = {"headline": "headline metrics (--all for every shared metric)", "all": "shared metrics (--all)",
             "prefix": "metrics chosen with --metric"}[c.selection]
    family = sum(d.p_adjusted is not None for d in c.metrics)
    lines = [f"WARNING: {w}" for w in c.warnings] + [
        f"A = {c.a}", f"B = {c.b}",
        (f"benchmark {c.version}; {c.n_shared} shared images; paired bootstrap, {c.n_resamples} resamples "
         f"stratified by label, seed {c.seed}; each metric on the images finite in both results (n paired)"),
        f"showing {len(c.metrics)} {shown}",
        (f"p: two-sided paired bootstrap; p ({short}): adjusted for the {family} comparisons shown, "
         f"{CORRECTIONS[c.correction]}; no CI or p below {c.min_n_for_ci} paired images ({small})"),
        "",
        tabulate(rows, headers=headers, disable_numparse=True),
    ]
    lines += [f"skipped {s['id']}: {s['reason']}" for s in c.skipped]
    lines += [f"note: {n}" for n in c.notes]
    lines += [f"WARNING: {w}" for w in c.warnings]  # again at the end, where a long table leaves the reader
    return "\n".join(lines)
