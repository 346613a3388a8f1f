"""The leaderboard's content as data: ranked tables per (version, preset) and the methods view.

Markdown, CSV, JSON and the site are renderings of these objects, so they always agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results.metrics import REDUCERS
from .layout import Layout
from .resample import Resampler
from .store import StoredResult, VersionSpec

BUDGET_RE = re.compile(r"^robust/((linf|l2)-([0-9.]+))/")
XAI_RE = re.compile(r"^xai/([a-z0-9_+-]+)/([a-z0-9_+-]+)$")  # headline scores only: no subgroup suffix


@dataclass(frozen=True)
class Column:
    key: str  # metric id, or one of: rank, submission, training, flags
    header: str
    group: str = ""


@dataclass
class Row:
    rank: int
    result: StoredResult


@dataclass
class BoardTable:
    version: str
    preset: str
    columns: list[Column]
    rows: list[Row]


@dataclass
class PooledScore:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_submissions: int


@dataclass
class MethodsView:
    version: str
    preset: str
    methods: list[str]  # attribution methods, then reference maps
    references: list[str]
    columns: list[Column]  # key = metric name (the part after xai/<method>/), group = kind
    pooled: dict[tuple[str, str], PooledScore]
    per_submission: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)


def budget_label(budget: str) -> str:
    norm, _, eps = budget.partition("-")
    return f"L∞ {eps}/255" if norm == "linf" else f"L2 {eps}"


def budgets(results: list[StoredResult], metric: str) -> list[str]:
    """Perturbation budgets with a ``robust/<budget>/<metric>`` score, L-inf first, by size."""
    found = {}
    for r in results:
        for mid in r.metrics:
            m = BUDGET_RE.match(mid)
            if m and mid == f"robust/{m.group(1)}/{metric}":
                found[m.group(1)] = (m.group(2) != "linf", float(m.group(3)))
    return sorted(found, key=lambda b: found[b])


def methods(results: list[StoredResult], layout: Layout, *, references: bool) -> list[str]:
    out = set()
    for r in results:
        for mid in r.metrics:
            m = XAI_RE.match(mid)
            if m and (m.group(1) in layout.reference_maps) == references:
                out.add(m.group(1))
    if references:
        return [m for m in layout.reference_maps if m in out]
    return sorted(out)


def training_text(training: dict[str, Any]) -> str:
    if not training:
        return "not declared"
    if not training.get("adversarial"):
        return "standard" + (f" ({training['method']})" if training.get("method") else "")
    eps = training.get("eps")
    eps = eps.get("text") if isinstance(eps, dict) else eps
    parts = [p for p in (training.get("method"), training.get("norm"), eps and f"eps {eps}") if p]
    return "adversarial" + (f" ({', '.join(map(str, parts))})" if parts else "")


def _sort_key(r: StoredResult, keys: tuple[str, ...]) -> tuple:
    out = []
    for k in keys:
        v = r.metrics.get(k, {}).get("value")
        out += [v is None, -(v or 0.0)]  # missing last, then descending
    return tuple(out)


def rank(results: list[StoredResult], layout: Layout) -> list[Row]:
    """Sorted by layout.rank_by (descending); equal keys share a rank (1, 1, 3); ids break display ties."""
    ordered = sorted(results, key=lambda r: (_sort_key(r, layout.rank_by), r.id))
    rows, prev, current = [], None, 0
    for i, r in enumerate(ordered, start=1):
        key = _sort_key(r, layout.rank_by)
        if key != prev:
            current, prev = i, key
        rows.append(Row(rank=current, result=r))
    return rows


def main_table(version: str, preset: str, results: list[StoredResult], layout: Layout) -> BoardTable:
    cols = [Column("rank", "rank"), Column("submission", "submission"), Column("training", "training")]
    names = {"clean/accuracy": "clean acc", "clean/sensitivity": "clean sensitivity",
             "clean/balanced_accuracy": "clean bal. acc", "clean/specificity": "clean specificity",
             "clean/auroc": "clean AUROC"}
    for mid in layout.clean:
        if any(mid in r.metrics for r in results):
            cols.append(Column(mid, names.get(mid, mid.split("/", 1)[1]), "clean"))
    for b in budgets(results, layout.robust_metric):
        cols.append(Column(f"robust/{b}/{layout.robust_metric}", f"robust {budget_label(b)}", "robust"))
    for m in methods(results, layout, references=False):
        for metric in layout.localisation:
            mid = f"xai/{m}/{metric}"
            if any(mid in r.metrics for r in results):
                cols.append(Column(mid, f"{m} {metric.replace('_', ' ')}", "localisation"))
    cols.append(Column("flags", "flags"))
    return BoardTable(version=version, preset=preset, columns=cols, rows=rank(results, layout))


def methods_view(
    version: str, preset: str, results: list[StoredResult], layout: Layout, spec: VersionSpec
) -> MethodsView:
    plain = methods(results, layout, references=False)
    refs = methods(results, layout, references=True)
    names = sorted({XAI_RE.match(mid).group(2) for r in results for mid in r.metrics if XAI_RE.match(mid)})
    lower = {XAI_RE.match(mid).group(2) for r in results for mid, m in r.metrics.items()
             if XAI_RE.match(mid) and not m["higher_is_better"]}
    cols = []
    for kind, _ in layout.methods_view:
        mine = sorted((n for n in names if layout.kind_of(n) == kind), key=lambda n: (layout.rank_in_kind(n), n))
        cols += [Column(n, n.replace("_", " ") + (" (lower is better)" if n in lower else ""), kind) for n in mine]
    view = MethodsView(version=version, preset=preset, methods=plain + refs, references=refs, columns=cols, pooled={})
    resamplers: dict[tuple[str, ...], tuple[Resampler, list]] = {}
    for method in view.methods:
        for col in cols:
            mid = f"xai/{method}/{col.key}"
            having = [r for r in results if mid in r.metrics]
            for r in having:
                view.per_submission.setdefault(r.id, {})[(method, col.key)] = r.metrics[mid]
            if having:
                view.pooled[(method, col.key)] = pooled_score(having, mid, spec, resamplers)
    return view


def pooled_score(results: list[StoredResult], mid: str, spec: VersionSpec, cache: dict) -> PooledScore:
    """Mean over submissions of each one's score, on the images all of them were evaluated on; the CI
    resamples those images (stratified by label) once per draw for every submission, so that the
    submissions' shared dependence on the same images is kept."""
    key = tuple(r.id for r in results)
    if key not in cache:
        ids = set(results[0].samples["image_id"])
        for r in results[1:]:
            ids &= set(r.samples["image_id"])
        shared = sorted(ids)
        tables = [r.samples.set_index("image_id").loc[shared].reset_index() for r in results]
        boot = spec.bootstrap
        res = Resampler.stratified(tables[0]["label"].to_numpy(), n_resamples=int(boot["n_resamples"]),
                                   seed=int(boot["seed"]))
        cache[key] = (res, tables)
    res, tables = cache[key]
    values, draws = [], []
    for r, df in zip(results, tables):
        m = r.metric_def(mid)
        rows = m.rows(df)
        v = REDUCERS.get(m.reduce)(rows, m) if len(rows) else float("nan")
        if np.isfinite(v):
            values.append(v)
            draws.append(res.metric(df, m))
    if not values:
        return PooledScore(None, None, None, 0)
    stats = np.mean(draws, axis=0)
    stats = stats[np.isfinite(stats)]
    alpha = float(spec.bootstrap.get("alpha", 0.05))
    lo = hi = None
    if stats.size:
        lo, hi = (float(q) for q in np.quantile(stats, [alpha / 2, 1 - alpha / 2]))
    return PooledScore(float(np.mean(values)), lo, hi, len(values))
