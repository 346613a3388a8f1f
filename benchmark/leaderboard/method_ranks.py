"""The methods view's ranks (v3): bootstrap rank intervals of the attribution methods per metric, and how far
the metrics agree on the ranking.

A method's score on a metric is pooled over the submissions as the methods view pools it (the mean of the
submissions' scores on the images all of them share). Each bootstrap draw resamples those images (stratified by
label, once for every submission, method and metric) and ranks the methods on every metric (1 = best in the
metric's direction, ties share the mean rank); a method's interval is the 2.5th to 97.5th percentile of its
ranks over the draws. Overlapping intervals mean the data do not order those methods on that metric.

Agreement between metrics (LATEC aggregates ranks across metrics; Quantus users ask whether they may): Kendall's
W over the metrics that score every ranked method (1 = the metrics rank the methods identically, 0 = no
agreement beyond chance; with m metrics, the mean pairwise Spearman correlation is (m W - 1) / (m - 1)), the
pairwise Kendall tau of the metrics' point rankings, and how many metrics put the same method first.

Shown for versions whose explanation spec declares ``statistics`` (v3 on): v1 and v2 pages stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from ..results.metric_ids import xai_id
from ..results.metrics import REDUCERS
from .resample import Resampler


@dataclass(frozen=True)
class RankInterval:
    rank: float  # on the pooled point estimates
    low: float  # percentiles of the bootstrap ranks
    high: float


@dataclass
class MethodRanks:
    methods: list[str]
    metrics: list[str]  # metric names (the part after xai/<method>/)
    ranks: dict[tuple[str, str], RankInterval]
    n_resamples: int
    kendall_w: float | None = None  # over ``agreeing``
    agreeing: list[str] = field(default_factory=list)  # metrics that score every method
    tau: dict[tuple[str, str], float] = field(default_factory=dict)  # pairwise Kendall tau of the point ranks
    top: dict[str, str] = field(default_factory=dict)  # metric -> its best method


def rank_rows(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Ranks (1 = best) of each column's finite values, ties sharing the mean rank; NaN stays NaN.
    ``values``: methods x draws."""
    v = np.where(np.isfinite(values), values, np.nan)
    df = pd.DataFrame(-v if higher_is_better else v)
    return df.rank(axis=0, method="average", na_option="keep").to_numpy()


def kendall_w(ranks: np.ndarray) -> float | None:
    """Kendall's coefficient of concordance of ``ranks`` (metrics x methods, each row a ranking 1..n; ties
    without correction)."""
    m, n = ranks.shape
    if m < 2 or n < 2:
        return None
    s = ((ranks.sum(axis=0) - m * (n + 1) / 2) ** 2).sum()
    return float(12 * s / (m**2 * (n**3 - n)))


def method_ranks(results: list[Any], methods: list[str], metrics: list[str], *, n_resamples: int, seed: int,
                 alpha: float = 0.05) -> MethodRanks | None:
    """``results``: stored results (``samples``, ``metrics``, ``metric_def``) pooled as the methods view does."""
    from scipy.stats import kendalltau

    if len(results) == 0 or len(methods) < 2:
        return None
    shared = set(results[0].samples["image_id"])
    for r in results[1:]:
        shared &= set(r.samples["image_id"])
    order = sorted(shared)
    tables = [r.samples.set_index("image_id").loc[order].reset_index() for r in results]
    res = Resampler.stratified(tables[0]["label"].to_numpy(), n_resamples=n_resamples, seed=seed)
    out = MethodRanks(methods=list(methods), metrics=[], ranks={}, n_resamples=n_resamples)
    point_ranks: dict[str, np.ndarray] = {}
    for metric in metrics:
        points, draws, hib = [], [], None
        for method in methods:
            mid = xai_id(method, metric)
            vals, boots = [], []
            for r, df in zip(results, tables):
                if mid not in r.metrics:
                    continue
                m = r.metric_def(mid)
                hib = m.higher_is_better
                rows = m.rows(df)
                v = REDUCERS.get(m.reduce)(rows, m) if len(rows) else float("nan")
                if np.isfinite(v):
                    vals.append(v)
                    boots.append(res.metric(df, m))
            points.append(np.mean(vals) if vals else np.nan)
            draws.append(np.mean(boots, axis=0) if boots else np.full(n_resamples, np.nan))
        points, draws = np.array(points, dtype=float), np.array(draws, dtype=float)
        if np.isfinite(points).sum() < 2:
            continue
        out.metrics.append(metric)
        pr = rank_rows(points[:, None], hib)[:, 0]
        br = rank_rows(draws, hib)
        for i, method in enumerate(methods):
            if np.isfinite(pr[i]):
                lo, hi = np.nanquantile(br[i], [alpha / 2, 1 - alpha / 2])
                out.ranks[(method, metric)] = RankInterval(float(pr[i]), float(lo), float(hi))
        point_ranks[metric] = pr
        out.top[metric] = methods[int(np.nanargmin(pr))]
    full = [m for m in out.metrics if np.isfinite(point_ranks[m]).all()]
    out.agreeing = full
    if len(full) >= 2:
        out.kendall_w = kendall_w(np.array([point_ranks[m] for m in full]))
        for a, b in combinations(full, 2):
            out.tau[(a, b)] = float(kendalltau(point_ranks[a], point_ranks[b]).statistic)
    return out


def _cell(r: RankInterval | None) -> str:
    return "" if r is None else f"{r.rank:g} [{r.low:g}, {r.high:g}]"


def _agreement(mr: MethodRanks) -> str:
    if mr.kendall_w is None:
        return "Too few metrics score every method to measure their agreement."
    taus = list(mr.tau.values())
    best = pd.Series(list(mr.top.values())).value_counts()
    return (f"Agreement of the {len(mr.agreeing)} metrics that score every method: Kendall's W = "
            f"{mr.kendall_w:.2f} (1: identical rankings), pairwise Kendall tau from {min(taus):+.2f} to "
            f"{max(taus):+.2f} (median {float(np.median(taus)):+.2f}); {int(best.iloc[0])} of {len(mr.top)} "
            f"metrics rank {best.index[0]} first.")


def markdown(mr: MethodRanks) -> str:
    """The ranks as a Markdown table (methods x metrics) with the agreement line."""
    from tabulate import tabulate

    rows = [[m] + [_cell(mr.ranks.get((m, k))) for k in mr.metrics] for m in mr.methods]
    return (f"Rank of each method per metric (1 = best) with its 95% bootstrap interval ({mr.n_resamples} image "
            "resamples); overlapping intervals: the data do not order those methods. " + _agreement(mr) + "\n\n"
            + tabulate(rows, headers=["method", *mr.metrics], tablefmt="github", disable_numparse=True))


def html(mr: MethodRanks) -> str:
    head = "".join(f"<th>{escape(k)}</th>" for k in ["method", *mr.metrics])
    body = "\n".join(
        "<tr>" + f"<td>{escape(m)}</td>" + "".join(f"<td class=\"num\">{escape(_cell(mr.ranks.get((m, k))))}</td>"
                                                 for k in mr.metrics) + "</tr>"
        for m in mr.methods)
    return (f"<h2>Method ranks</h2><p>Rank of each method per metric (1 = best) with its 95% bootstrap interval "
            f"({mr.n_resamples} image resamples). {escape(_agreement(mr))}</p>"
            f"<table id=\"method-ranks\"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>")
