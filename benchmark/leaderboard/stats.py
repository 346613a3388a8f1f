"""Statistics of paired comparisons, used by `fxbench compare` and scripts/findings.py.

- ``p_value``: the two-sided paired-bootstrap p-value (v1/v2's only test).
- ``adjust_p``: Holm's step-down (family-wise error) or Benjamini-Hochberg (false discovery rate).
- ``tost_paired``: the equivalence test for "no difference" (two one-sided paired t-tests against -margin and
  +margin; equivalent when the larger p is below alpha), for a mean over images from one result per side;
  ``tost_bootstrap`` the same question on a bootstrap distribution (other reducers, or several seeds).
- ``wilcoxon_p``: the signed-rank test on the per-image differences, beside the mean's bootstrap (relevance
  mass is heavy-tailed: a mean difference can hide a consistent per-image one).
- ``seed_means``: resampling over seeds as well as images. A recipe trained with several seeds is a group of
  results; each bootstrap draw takes the images once (shared by both sides, as for one result) and, per side,
  draws that side's seeds with replacement and averages their scores on the drawn images. With one seed per
  side this is exactly the paired image bootstrap.
- ``version_statistics``: the v3 rules (primary comparisons, equivalence margins) from the version's spec.

tests/test_v3_stats.py checks Holm against statsmodels, TOST against statsmodels' ``ttost_paired`` and the
signed-rank p against scipy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ResultError

CORRECTIONS = {"holm": "Holm step-down (family-wise error rate)", "bh": "Benjamini-Hochberg (false discovery rate)",
               "none": "none"}


def p_value(diffs: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value for "no difference": twice the smaller tail at 0, with the +1 correction
    that keeps it above zero for a finite number of resamples."""
    d = diffs[np.isfinite(diffs)]
    if d.size == 0:
        return None
    tail = min((d <= 0).sum(), (d >= 0).sum()) + 1
    return float(min(1.0, 2 * tail / (d.size + 1)))


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


@dataclass(frozen=True)
class Tost:
    """Two one-sided tests of H0: diff <= -margin and H0: diff >= +margin; ``p`` = the larger p-value, so the
    difference is shown to lie inside (-margin, +margin) at level alpha when p < alpha."""

    p: float
    p_lower: float  # against diff <= -margin
    p_upper: float  # against diff >= +margin
    margin: float
    test: str  # "paired t" | "bootstrap"


def tost_paired(d: np.ndarray, margin: float) -> Tost | None:
    """Paired t TOST on per-image differences ``d`` (NaN dropped); None below 2 images. Without any spread
    (every image moved by the same amount) the t statistics are infinite: p = 0 inside the margin, 1 outside."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2 or margin <= 0:
        return None
    se = d.std(ddof=1) / np.sqrt(d.size)
    if not se > 0:
        p_lo, p_hi = float(not d.mean() > -margin), float(not d.mean() < margin)
        return Tost(max(p_lo, p_hi), p_lo, p_hi, float(margin), "paired t")
    df = d.size - 1
    p_lower = float(stats.t.sf((d.mean() + margin) / se, df))
    p_upper = float(stats.t.cdf((d.mean() - margin) / se, df))
    return Tost(max(p_lower, p_upper), p_lower, p_upper, float(margin), "paired t")


def tost_bootstrap(stats: np.ndarray, margin: float) -> Tost | None:
    """TOST on a bootstrap distribution of the difference: each one-sided p is the share of draws on the
    wrong side of its margin (+1 correction, as ``p_value``)."""
    s = np.asarray(stats, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0 or margin <= 0:
        return None
    p_lower = float(((s <= -margin).sum() + 1) / (s.size + 1))
    p_upper = float(((s >= margin).sum() + 1) / (s.size + 1))
    return Tost(max(p_lower, p_upper), p_lower, p_upper, float(margin), "bootstrap")


def wilcoxon_p(d: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p on per-image differences (scipy; zero differences dropped, as
    Wilcoxon's original rule); None when fewer than 2 non-zero differences remain."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if (d != 0).sum() < 2:
        return None
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def seed_means(per_seed: np.ndarray, n_resamples: int, rng: np.random.Generator | None) -> np.ndarray:
    """``per_seed``: S x B, the metric of each seed on each image resample. Per resample, S seeds drawn with
    replacement and averaged (one seed: that seed's row, no draw)."""
    per_seed = np.asarray(per_seed, dtype=float)
    s, b = per_seed.shape
    if s == 1:
        return per_seed[0]
    draws = rng.integers(0, s, size=(b, s))
    with np.errstate(invalid="ignore"):
        return np.nanmean(per_seed[draws, np.arange(b)[:, None]], axis=1)


def version_statistics(version: str) -> dict[str, Any]:
    """The ``statistics`` block of a version's explanation spec (v3 on), or {} (v1, v2, unknown versions)."""
    from ..definition import load_definition

    try:
        spec = load_definition(version).batteries.get("explanations") or {}
    except Exception:  # noqa: BLE001 - an unknown version has no rules; compare still works
        return {}
    return dict(spec.get("statistics") or {})


def primary_ids(rules: dict[str, Any], against: str = "baseline") -> list[str]:
    """The claims' primary metric ids that compare two models (``against: baseline``), in the spec's order."""
    return [c["primary"] for c in (rules.get("claims") or {}).values() if c.get("against") == against]


def margin_for(metric: str | None, rules: dict[str, Any]) -> float | None:
    """The equivalence margin of a metric name (the part after xai/<method>/), or None: never "equivalent"."""
    m = (rules.get("equivalence_margins") or {}).get(metric) if metric else None
    return None if m is None else float(m)
