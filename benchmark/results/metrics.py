"""Metrics as data: every metric is a reducer over a column of samples.parquet.

A metric is defined by (reducer, column, filter), stored in result.json beside its value, so that the
leaderboard and `fxbench compare` recompute any metric from the per-sample file without importing the
battery that produced it. Confidence intervals come from a stratified (by label) bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ..registry import Registry

LABEL = "label"  # 1 = fracture, 0 = no fracture

Reducer = Callable[[pd.DataFrame, "MetricDef"], float]
REDUCERS: Registry[Reducer] = Registry("reducer")


@dataclass(frozen=True)
class MetricDef:
    """``id`` e.g. ``clean/accuracy``; ``column`` in samples.parquet; ``where`` keeps rows whose columns equal
    the given values (e.g. ``{"label": 1}``); ``reduce`` names a registered reducer."""

    id: str
    column: str
    reduce: str = "mean"
    higher_is_better: bool = True
    where: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "reduce": self.reduce, "where": dict(self.where)}

    @classmethod
    def from_json(cls, metric_id: str, definition: dict[str, Any], higher_is_better: bool) -> MetricDef:
        return cls(id=metric_id, higher_is_better=higher_is_better, **definition)

    def rows(self, df: pd.DataFrame) -> pd.DataFrame:
        for col, val in self.where.items():
            df = df[df[col] == val]
        return df


@dataclass(frozen=True)
class MetricValue:
    value: float
    ci_low: float
    ci_high: float
    n: int
    higher_is_better: bool
    definition: dict[str, Any]
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {
            "value": _f(self.value),
            "ci_low": _f(self.ci_low),
            "ci_high": _f(self.ci_high),
            "n": int(self.n),
            "higher_is_better": bool(self.higher_is_better),
            "definition": self.definition,
        }
        if self.note:
            d["note"] = self.note
        return d


def _f(x: float) -> float | None:
    """JSON has no NaN: an undefined score is stored as null (its reason goes in ``note``)."""
    return None if x is None or not np.isfinite(x) else float(x)


@REDUCERS.register("mean")
def _mean(df: pd.DataFrame, m: MetricDef) -> float:
    v = df[m.column].astype(float).to_numpy()
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


@REDUCERS.register("median")
def _median(df: pd.DataFrame, m: MetricDef) -> float:
    """The median of the finite values (v3: heavy-tailed per-image scores such as enrichment)."""
    v = df[m.column].astype(float).to_numpy()
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


PER_ROW = ("mean", "median")  # reducers of per-row values: n counts the finite rows


@REDUCERS.register("balanced_accuracy")
def _balanced_accuracy(df: pd.DataFrame, m: MetricDef) -> float:
    """Mean of per-class recall; ``column`` holds 1 where the sample was classified correctly."""
    c = df[m.column].astype(float).to_numpy()
    y = df[LABEL].to_numpy()
    recalls = [c[y == k].mean() for k in (0, 1) if (y == k).any()]
    return float(np.mean(recalls)) if len(recalls) == 2 else float("nan")


@REDUCERS.register("auroc")
def _auroc(df: pd.DataFrame, m: MetricDef) -> float:
    """Area under the ROC curve of score ``column`` against the label (Mann-Whitney U, ties count half)."""
    s = df[m.column].astype(float).to_numpy()
    y = df[LABEL].to_numpy().astype(bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = pd.Series(np.concatenate([pos, neg])).rank(method="average").to_numpy()
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def count_rows(df: pd.DataFrame, m: MetricDef) -> int:
    if m.reduce in PER_ROW:
        return int(np.isfinite(df[m.column].astype(float).to_numpy()).sum())
    return int(len(df))


def bootstrap_indices(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Stratified by label: each resample keeps the class counts, so balanced metrics stay defined.
    Cached (read-only): most metrics of a result share one label vector, and checking a stored result
    recomputes every CI."""
    labels = np.ascontiguousarray(labels)
    return _bootstrap_indices(labels.tobytes(), labels.dtype.str, n_resamples, seed)


@lru_cache(maxsize=8)  # each entry is n_resamples x n int64 (6 MB for the eval split)
def _bootstrap_indices(blob: bytes, dtype: str, n_resamples: int, seed: int) -> np.ndarray:
    labels = np.frombuffer(blob, dtype=dtype)
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, labels.size), dtype=np.int64)
    start = 0
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        out[:, start : start + idx.size] = idx[rng.integers(0, idx.size, size=(n_resamples, idx.size))]
        start += idx.size
    out.flags.writeable = False
    return out


def resample_stats(df: pd.DataFrame, m: MetricDef, idx: np.ndarray) -> np.ndarray:
    """The metric on each bootstrap resample (rows of ``idx``); vectorised for the mean."""
    if m.reduce == "mean":
        v = df[m.column].astype(float).to_numpy()[idx]
        ok = np.isfinite(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok, v, 0.0).sum(axis=1) / ok.sum(axis=1)
    if m.reduce == "median":
        return median_rows(df[m.column].astype(float).to_numpy()[idx])
    if m.reduce == "balanced_accuracy":  # the reducer per resample, vectorised (v3's corruption battery has
        v = df[m.column].astype(float).to_numpy()  # ~140 of them); same sums: 0/1 columns give equal bits
        if np.isfinite(v).all():
            g, y = v[idx], df[LABEL].to_numpy()[idx]
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls = [np.where(y == k, g, 0.0).sum(axis=1) / (y == k).sum(axis=1) for k in (0, 1)]
            return (recalls[0] + recalls[1]) / 2
    reduce = REDUCERS.get(m.reduce)
    df = df[list(dict.fromkeys([m.column, LABEL]))]  # only what the reducer reads: resampling ~300 columns is slow
    return np.array([reduce(df.iloc[i], m) for i in idx])


def median_rows(v: np.ndarray) -> np.ndarray:
    """The median of the finite values of each row (NaN for a row without any), vectorised."""
    v = np.where(np.isfinite(v), v, np.nan)
    out = np.full(len(v), np.nan)
    ok = np.isfinite(v).any(axis=1)
    if ok.any():
        out[ok] = np.nanmedian(v[ok], axis=1)
    return out


def compute_metric(df: pd.DataFrame, m: MetricDef, *, n_resamples: int, seed: int, alpha: float = 0.05) -> MetricValue:
    reduce = REDUCERS.get(m.reduce)
    sub = m.rows(df).reset_index(drop=True)
    value = reduce(sub, m) if len(sub) else float("nan")
    n = count_rows(sub, m) if len(sub) else 0
    lo = hi = float("nan")
    if n >= 2 and np.isfinite(value):
        idx = bootstrap_indices(sub[LABEL].to_numpy(), n_resamples, seed)
        stats = resample_stats(sub, m, idx)
        stats = stats[np.isfinite(stats)]
        if stats.size:
            lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    note = None if np.isfinite(value) else "undefined on these samples (no rows, or all NaN)"
    return MetricValue(float(value), float(lo), float(hi), n, m.higher_is_better, m.to_json(), note)


def compute_metrics(
    df: pd.DataFrame, defs: list[MetricDef], *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, MetricValue]:
    ids = [m.id for m in defs]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ValueError(f"duplicate metric ids: {sorted(dupes)}")
    return {m.id: compute_metric(df, m, n_resamples=n_resamples, seed=seed) for m in defs}
