"""The leaderboard's content as data: ranked tables per (version, preset) and the methods view.

Markdown, CSV, JSON and the site are renderings of these objects, so they always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..results.metric_ids import (
    ROBUST,
    MetricId,
    clean_id,
    parse,
    robust_id,
    threat_sort_key,
    try_parse,
    xai_id,
)
from ..results.metrics import REDUCERS
from . import corruption_columns
from .evidence import LEVELS
from .layout import Layout
from .method_ranks import method_ranks
from .resample import Resampler
from .stats import version_statistics
from .store import StoredResult, VersionSpec


def robust_threat(mid: str) -> str | None:
    """The budget of a ``robust/<budget>/...`` id, else None."""
    p = try_parse(mid)
    return p.threat if p is not None and p.family == ROBUST else None


def xai_headline(mid: str) -> MetricId | None:
    """A parsed ``xai/<method>/<metric>`` headline score (no subgroup or attack variant), else None."""
    p = try_parse(mid)
    return p if p is not None and p.headline else None


@dataclass(frozen=True)
class Column:
    key: str  # metric id, or one of: rank, submission, training, flags
    header: str
    group: str = ""


@dataclass
class Row:
    rank: int | None  # None: shown without a rank (quick preset, flagged)
    result: StoredResult
    reason: str = ""  # flagged table: why the result is not ranked


@dataclass(frozen=True)
class Ranking:
    """A version's ranking rules (``leaderboard:`` in specs/<v>/benchmark.yaml) and its eval split counts.

    Versions without that section (v1) keep the layout's rules and render exactly as before."""

    rank_by: tuple[str, ...]
    unranked_flags: frozenset[str]
    min_n_for_ci: int
    n: int  # eval split images, from the split manifest (never from a result file)
    n_fracture: int
    reference_submissions: frozenset[str] = frozenset()  # trivial references the version names: never ranked
    require_evidence: frozenset[str] = frozenset()  # v3: a full result is ranked only with one of these (evidence.py)
    # v3: the explanation battery's primary endpoint (shuffled AUC): the headline localisation column and the
    # scatter's x, from the version's spec; None keeps the layout's (relevance mass)
    primary_localisation: str | None = None

    @property
    def robust_metric(self) -> str:
        return parse(self.rank_by[0]).metric


@dataclass(frozen=True)
class ReferenceRow:
    """A trivial classifier's scores, computed from the split counts: shown in every table, never ranked."""

    name: str
    metrics: dict[str, dict[str, Any]]


@dataclass
class BoardTable:
    version: str
    preset: str
    columns: list[Column]
    rows: list[Row]
    kind: str = "main"  # main (full preset) | quick | flagged | unranked (flagged or without evidence, v3)
    references: list[ReferenceRow] = field(default_factory=list)
    note: str = ""  # e.g. why the table is empty
    min_n_for_ci: int | None = None  # below this n a score is printed without a CI ("n too small")
    rank_by: tuple[str, ...] = ()  # the sort keys the rows are in (the first is the headline score)

    @property
    def unranked(self) -> bool:
        """The table of results kept out of the ranking, each with its reason."""
        return self.kind in ("flagged", "unranked")


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
    ranks: Any = None  # v3 on: method_ranks.MethodRanks (bootstrap rank intervals, agreement of the metrics)


def budget_label(budget: str) -> str:
    norm, _, eps = budget.partition("-")
    return f"L∞ {eps}/255" if norm == "linf" else f"L2 {eps}"


def budgets(results: list[StoredResult], metric: str) -> list[str]:
    """Perturbation budgets with a ``robust/<budget>/<metric>`` score, L-inf first, by size."""
    found = {}
    for r in results:
        for mid in r.metrics:
            b = robust_threat(mid)
            if b is not None and mid == robust_id(b, metric):
                found[b] = threat_sort_key(b)
    return sorted(found, key=lambda b: found[b])


def methods(results: list[StoredResult], layout: Layout, *, references: bool) -> list[str]:
    out = set()
    for r in results:
        for mid in r.metrics:
            p = xai_headline(mid)
            if p and (p.method in layout.reference_maps) == references:
                out.add(p.method)
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


def version_ranking(version: str) -> Ranking | None:
    """The ranking rules of ``version`` from its benchmark.yaml, or None where it declares none (v1)."""
    from ..data.manifest import load_manifest
    from ..definition import load_definition

    d = load_definition(version)
    sec = d.raw.get("leaderboard")
    if not sec:
        return None
    manifest = load_manifest()
    counts = manifest.raw["counts"][d.raw["dataset"]["split"]] if manifest else None
    if not counts:
        raise ValueError(f"benchmark {version}: no split counts in the manifest for the reference rows")
    need = frozenset(sec.get("require_evidence") or ())
    if not need <= set(LEVELS):
        raise ValueError(f"benchmark {version}: require_evidence {sorted(need)} names levels other than {LEVELS}")
    primary = None
    if "explanations" in d.raw.get("batteries", ()):
        primary = d.battery_config("explanations", "full").get("primary_endpoint")
    return Ranking(
        primary_localisation=primary,
        require_evidence=need,
        rank_by=tuple(sec["rank_by"]),
        unranked_flags=frozenset(sec.get("unranked_flags") or ()),
        min_n_for_ci=int(sec.get("min_n_for_ci", 20)),
        reference_submissions=frozenset(sec.get("reference_submissions") or ()),
        n=int(counts["n"]),
        n_fracture=int(counts["n_fracture"]),
    )


def reference_rows(ranking: Ranking, budget_ids: list[str]) -> list[ReferenceRow]:
    """Always "no fracture", always "fracture" and a fair coin, from the eval split's counts. A constant
    answer cannot be changed by an attack, and the attacker cannot steer a coin: robust = clean."""
    pos, n = ranking.n_fracture, ranking.n
    neg = n - pos

    def scores(acc, sens, spec):
        out = {"accuracy": acc, "balanced_accuracy": (sens + spec) / 2, "sensitivity": sens, "specificity": spec}
        return out

    rows = []
    for name, sc in [
        ("always 'no fracture'", scores(neg / n, 0.0, 1.0)),
        ("always 'fracture'", scores(pos / n, 1.0, 0.0)),
        ("chance (fair coin, expected)", scores(0.5, 0.5, 0.5)),
    ]:
        m = {clean_id(k): v for k, v in sc.items()} | {clean_id("auroc"): 0.5}
        for b in budget_ids:
            m |= {robust_id(b, k): v for k, v in sc.items()}
        rows.append(ReferenceRow(name, {k: {"value": v, "ci_low": None, "ci_high": None} for k, v in m.items()}))
    return rows


def ranked_layout(layout: Layout, ranking: Ranking) -> Layout:
    """The version's rules over the layout: its sort keys, balanced accuracy as the clean and robust column."""
    clean = ("clean/balanced_accuracy", "clean/sensitivity", "clean/specificity")
    out = replace(layout, rank_by=ranking.rank_by, clean=clean, robust_metric=ranking.robust_metric)
    primary = ranking.primary_localisation
    if primary is None:
        return out
    # the primary endpoint first, as many headline columns as the layout asks for
    shown = (primary, *(m for m in layout.localisation if m != primary))[: len(layout.localisation)]
    return replace(out, localisation=shown, scatter_x=primary)


def unranked_reason(r: StoredResult, ranking: Ranking) -> str:
    """Why a result is kept out of the ranking: its unranked flags, and (a full result of a version that
    requires evidence, not a reference submission) the evidence it lacks."""
    reasons = [f"{f['code']}: {f.get('message', '')}" for f in r.flags if f["code"] in ranking.unranked_flags]
    if r.preset == "full" and r.id not in ranking.reference_submissions:
        reasons.append(r.evidence.missing(ranking.require_evidence))
    return "; ".join(x for x in reasons if x)


def version_tables(
    version: str, by_preset: dict[str, list[StoredResult]], layout: Layout, ranking: Ranking | None
) -> list[BoardTable]:
    """v1: one ranked table per preset with results. Versions with ranking rules: the full-preset table
    always (empty with a note when there are no full results), a "flagged: not ranked" table for results
    carrying an unranked flag, and the quick-preset table without rank numbers; reference rows in each."""
    if ranking is None:  # v1: its own columns and sort keys; quick results unranked as from v2
        tables = [main_table(version, p, rs, layout) for p, rs in by_preset.items() if rs or p == "full"]
        for t in tables:
            if t.preset != "full":
                t.rows = [Row(None, row.result) for row in t.rows]
                t.columns = [c for c in t.columns if c.key != "rank"]
                t.kind = "quick"
            elif not t.rows:
                t.note = ("No full-preset results for this version: only quick-preset results (reduced "
                          "batteries) were computed. They are listed below, unranked.")
        return tables
    tables = []
    flagged_all = []
    for preset in ("full", "quick"):
        rs = by_preset.get(preset, [])
        flagged = [r for r in rs if unranked_reason(r, ranking)]
        flagged_all += flagged
        kept = [r for r in rs if r not in flagged]
        if preset == "quick" and not kept:
            continue
        t = main_table(version, preset, kept, layout, ranking=ranking)
        if preset == "full" and not kept:
            t.note = (
                "No full-preset results yet: this table fills as submissions are run with the full batteries "
                "(GPU). Quick-preset results are listed below, unranked."
            )
        tables.append(t)
    if flagged_all:
        t = main_table(version, "full", flagged_all, layout, ranking=ranking)
        t.kind = "unranked" if ranking.require_evidence else "flagged"
        t.rows = [Row(None, row.result, unranked_reason(row.result, ranking)) for row in t.rows]
        t.columns = [c for c in t.columns if c.key != "rank"] + [Column("reason", "reason not ranked")]
        tables.append(t)
    return tables


def main_table(
    version: str, preset: str, results: list[StoredResult], layout: Layout, *, ranking: Ranking | None = None
) -> BoardTable:
    if ranking is not None:
        layout = ranked_layout(layout, ranking)
    cols = [Column("rank", "rank"), Column("submission", "submission"), Column("training", "training")]
    names = {"clean/accuracy": "clean acc", "clean/sensitivity": "clean sensitivity",
             "clean/balanced_accuracy": "clean bal. acc", "clean/specificity": "clean specificity",
             "clean/auroc": "clean AUROC"}
    for mid in layout.clean:
        if any(mid in r.metrics for r in results):
            cols.append(Column(mid, names.get(mid, mid.split("/", 1)[1]), "clean"))
    for b in budgets(results, layout.robust_metric):
        cols.append(Column(robust_id(b, layout.robust_metric), f"robust {budget_label(b)}", "robust"))
    cols += [Column(*c) for c in corruption_columns.board_columns(mid for r in results for mid in r.metrics)]
    for m in methods(results, layout, references=False):
        for metric in layout.localisation:
            mid = xai_id(m, metric)
            if any(mid in r.metrics for r in results):
                cols.append(Column(mid, f"{m} {metric.replace('_', ' ')}", "localisation"))
    cols.append(Column("flags", "flags"))
    if ranking is not None:  # v2 on: which evidence each entry carries (evidence.py)
        cols.append(Column("evidence", "evidence"))
    if ranking is None:
        return BoardTable(version=version, preset=preset, columns=cols, rows=rank(results, layout),
                          rank_by=layout.rank_by)
    refs = [r for r in results if r.id in ranking.reference_submissions]
    rows = rank([r for r in results if r not in refs], layout)
    if preset != "full":  # quick-preset results never get rank numbers, nor a rank column
        rows = [Row(None, row.result) for row in rows]
        cols = [c for c in cols if c.key != "rank"]
    rows += [Row(None, r) for r in sorted(refs, key=lambda r: r.id)]  # evaluated like any model, never ranked
    if not results:  # the empty full table still shows the headline columns
        b = robust_threat(ranking.rank_by[0])
        cols[3:3] = [Column(mid, names.get(mid, mid), "clean") for mid in layout.clean]
        if b is not None:
            cols.insert(3 + len(layout.clean), Column(ranking.rank_by[0], f"robust {budget_label(b)}", "robust"))
    what = layout.robust_metric.replace("balanced_accuracy", "bal. acc").replace("_", " ")
    cols = [replace(c, header=f"robust {what} {c.header[len('robust '):]}") if c.group == "robust" else c
            for c in cols]
    budget_ids = [b for c in cols if (b := robust_threat(c.key)) is not None]
    return BoardTable(
        version=version,
        preset=preset,
        columns=cols,
        rows=rows,
        kind="main" if preset == "full" else "quick",
        references=[replace(r, metrics=corruption_columns.with_reference_values(r.metrics, [c.key for c in cols]))
                    for r in reference_rows(ranking, budget_ids)],  # constant answers: corrupted = clean
        min_n_for_ci=ranking.min_n_for_ci,
        rank_by=layout.rank_by,
    )


def methods_view(
    version: str, preset: str, results: list[StoredResult], layout: Layout, spec: VersionSpec,
    *, trivial: frozenset[str] = frozenset(),
) -> MethodsView:
    plain = methods(results, layout, references=False)
    refs = methods(results, layout, references=True)
    names = sorted({p.metric for r in results for mid in r.metrics if (p := xai_headline(mid))})
    lower = {p.metric for r in results for mid, m in r.metrics.items()
             if (p := xai_headline(mid)) and not m["higher_is_better"]}
    cols = []
    for kind, _ in layout.methods_view:
        mine = sorted((n for n in names if layout.kind_of(n) == kind), key=lambda n: (layout.rank_in_kind(n), n))
        cols += [Column(n, n.replace("_", " ") + (" (lower is better)" if n in lower else ""), kind) for n in mine]
    view = MethodsView(version=version, preset=preset, methods=plain + refs, references=refs, columns=cols, pooled={})
    resamplers: dict[tuple[str, ...], tuple[Resampler, list]] = {}
    for method in view.methods:
        for col in cols:
            mid = xai_id(method, col.key)
            having = [r for r in results if mid in r.metrics]
            for r in having:
                view.per_submission.setdefault(r.id, {})[(method, col.key)] = r.metrics[mid]
            # a reference submission (a constant model: constant maps) would pull every method's mean
            # towards its trivial scores: pooled over real submissions only
            having = [r for r in having if r.id not in trivial]
            if having:
                view.pooled[(method, col.key)] = pooled_score(having, mid, spec, resamplers)
    if version_statistics(version):  # v3 on: rank intervals of the methods (method_ranks.py)
        boot = spec.bootstrap
        view.ranks = method_ranks([r for r in results if r.id not in trivial], plain, [c.key for c in cols],
                                  n_resamples=int(boot["n_resamples"]), seed=int(boot["seed"]),
                                  alpha=float(boot.get("alpha", 0.05)))
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


TRIVIAL_EXCLUDED = ("ref_mask", "ref_random")  # the ceiling, and chance: not what anatomy or position give


def best_trivial_map(results: list[StoredResult], metric: str) -> tuple[str, dict[str, Any]] | None:
    """(reference map, its metric) of the best trivial map on ``metric``, the one each method is read against
    (``.../vs-best-ref``): the explanation battery's own choice (``components.explanations.best_reference``)
    where a result records it, else the best-scoring of the results' trivial maps (not the mask, the
    ceiling, nor the random map). Trivial maps do not depend on the model: taken from the first result that
    has one."""
    for r in results:
        named = (((r.result.get("components") or {}).get("explanations") or {}).get("best_reference") or {}).get(metric)
        if isinstance(named, str) and xai_id(named, metric) in r.metrics:
            return named, r.metrics[xai_id(named, metric)]
    for r in results:
        found = [(p.method, m) for mid, m in r.metrics.items() if (p := xai_headline(mid)) and p.metric == metric
                 and p.method.startswith("ref_") and p.method not in TRIVIAL_EXCLUDED and m["value"] is not None]
        if found:
            sign = 1 if found[0][1]["higher_is_better"] else -1
            return max(found, key=lambda x: (sign * x[1]["value"], x[0]))
    return None
