"""`fxbench compare A B`: paired differences (B - A) of every shared metric, with a paired bootstrap.

Pairing: the two per-sample tables are joined on image_id; for each metric only the images where the metric's
column is finite in BOTH results are kept (an image one side could not score, e.g. NaN with a reason, is
dropped from both sides: never is each side averaged over its own rows). Each bootstrap resample draws those
images (stratified by label) once and recomputes the metric for both submissions on that same draw, so the
image-to-image variation that both share cancels in the difference. ``n`` is the number of paired images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ResultError
from ..results.metrics import LABEL, REDUCERS, MetricDef, count_rows
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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def resolve_result(ref: str, *, results_dir: str | Path) -> LoadedResult:
    """A result.json, a run folder holding one, or a submission id (``id`` or ``v1/id``) in the store."""
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
    if len(hits) > 1:
        options = ", ".join(f"{h.parent.name}/{sid}" for h in hits)
        raise ResultError(f"{ref!r}: submission id found in several versions; say which: {options}")
    return hits[0]


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


def compare_results(
    a: LoadedResult, b: LoadedResult, *, prefixes: tuple[str, ...] = (), n_resamples: int | None = None,
    seed: int | None = None, alpha: float | None = None,
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

    da, db = _paired_tables(a, b)
    ids = sorted(set(a.result["metrics"]) & set(b.result["metrics"]))
    if prefixes:
        ids = [i for i in ids if any(i.startswith(p) for p in prefixes)]
        if not ids:
            raise ResultError(f"no metric shared by both results starts with {', '.join(prefixes)}")
    if not ids:
        raise ResultError(f"{a.ref} and {b.ref} have no metric in common")
    out, skipped, cache = [], [], {}
    for mid in ids:
        ma, mb = a.result["metrics"][mid], b.result["metrics"][mid]
        if ma["definition"] != mb["definition"]:
            skipped.append({"id": mid, "reason": "defined differently in the two results"})
            continue
        m = MetricDef.from_json(mid, ma["definition"], ma["higher_is_better"])
        out.append(paired_difference(da, db, m, n_resamples=n_resamples, seed=seed, alpha=alpha, cache=cache))
    return Comparison(
        a=a.ref, b=b.ref, version=ba["version"], n_shared=len(da), n_resamples=n_resamples, seed=seed,
        alpha=alpha, metrics=out, skipped=skipped, notes=notes,
    )


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


def format_table(c: Comparison) -> str:
    from tabulate import tabulate

    def f(x: float | None, spec: str = ".4f") -> str:
        return "n/a" if x is None else format(x, spec)

    level = round(100 * (1 - c.alpha))
    rows = [
        [d.id, f(d.a), f(d.b), f(d.diff, "+.4f"),
         "n/a" if d.ci_low is None else f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]", f(d.p_value, ".3g"),
         d.n if d.n == d.n_a == d.n_b else f"{d.n} (A {d.n_a}, B {d.n_b})"]
        for d in c.metrics
    ]
    headers = ["metric", "A", "B", "B - A", f"{level}% CI", "p", "n paired"]
    lines = [
        f"A = {c.a}", f"B = {c.b}",
        (f"benchmark {c.version}; {c.n_shared} shared images; paired bootstrap, {c.n_resamples} resamples "
         f"stratified by label, seed {c.seed}; each metric on the images finite in both results (n paired)"),
        "",
        tabulate(rows, headers=headers, disable_numparse=True),
    ]
    lines += [f"skipped {s['id']}: {s['reason']}" for s in c.skipped]
    lines += [f"note: {n}" for n in c.notes]
    return "\n".join(lines)
