"""Bootstrap a metric over resampled images, fast.

A resample is stored as counts (how often each row was drawn), so the mean, balanced accuracy and AUROC of
all resamples are a few matrix products instead of one pandas call per resample. The reducers in
``fxbench.results.metrics`` stay the definition: any other reducer, or a column with NaNs where a
per-class statistic would see them, goes through the reducer itself, and the tests check both paths agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..results.metrics import LABEL, REDUCERS, MetricDef, bootstrap_indices, median_rows


@dataclass(frozen=True)
class Resampler:
    idx: np.ndarray  # (B, n) row indices of each resample
    counts: np.ndarray  # (B, n) how often each row is drawn

    @classmethod
    def stratified(cls, labels: np.ndarray, *, n_resamples: int, seed: int) -> Resampler:
        """Resample rows keeping the class counts (as the result files' CIs do)."""
        idx = bootstrap_indices(np.asarray(labels), n_resamples, seed)
        b, n = idx.shape
        flat = (idx + np.arange(b)[:, None] * n).ravel()
        counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        return cls(idx=idx, counts=counts)

    def metric(self, df: pd.DataFrame, m: MetricDef) -> np.ndarray:
        """The metric on every resample of ``df``'s rows; ``m.where`` is applied inside each resample."""
        mask = np.ones(len(df), dtype=bool)
        for col, val in m.where.items():
            mask &= (df[col] == val).to_numpy()
        v = df[m.column].astype(float).to_numpy()
        if m.reduce == "mean":
            ok = mask & np.isfinite(v)
            return _ratio(self.counts @ np.where(ok, v, 0.0), self.counts @ ok)
        if m.reduce == "median":  # v3: the rows of each resample, as drawn (repeats included)
            return median_rows(np.where(mask, v, np.nan)[self.idx])
        finite = bool(np.isfinite(v[mask]).all())
        y = df[LABEL].to_numpy()
        if m.reduce == "balanced_accuracy" and finite:
            recalls = []
            for k in (0, 1):
                ok = mask & (y == k)
                recalls.append(_ratio(self.counts @ np.where(ok, v, 0.0), self.counts @ ok))
            return (recalls[0] + recalls[1]) / 2
        if m.reduce == "auroc" and finite:
            pos, neg = mask & (y == 1), mask & (y == 0)
            sp, sn = v[pos][:, None], v[neg][None, :]
            kernel = (sp > sn) + 0.5 * (sp == sn)
            cp, cn = self.counts[:, pos], self.counts[:, neg]
            return _ratio(np.einsum("bi,ij,bj->b", cp, kernel, cn), cp.sum(axis=1) * cn.sum(axis=1))
        return self.metric_reference(df, m)

    def metric_reference(self, df: pd.DataFrame, m: MetricDef) -> np.ndarray:
        """One reducer call per resample: the definition the fast paths are tested against."""
        reduce = REDUCERS.get(m.reduce)
        out = []
        for i in self.idx:
            rows = m.rows(df.iloc[i])
            out.append(reduce(rows, m) if len(rows) else float("nan"))
        return np.array(out, dtype=float)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
