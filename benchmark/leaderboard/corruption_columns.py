"""Which corruption scores the leaderboard shows, and what the trivial reference rows score on them.

Kept apart from ``corruption_view`` (the renderings) so that ``tables`` can use it without an import circle.
Everything is read from metric ids through ``fxbench.results.metric_ids``; a version without corruption
metrics (v1, v2) gets no column, no reference value and no view, so its generated files do not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..results.metric_ids import CORRUPT, clean_id, corrupt_id, mean_shift, shift_parts, try_parse

GROUP = "corruption"  # the column group of the boards
MEAN_BA = corrupt_id(mean_shift(), "balanced_accuracy")
MEAN_DROP = corrupt_id(mean_shift(), "balanced_accuracy", drop=True)
HEADERS = {MEAN_BA: "corrupted bal. acc (mean)", MEAN_DROP: "corruption drop (clean - corrupted)"}


def board_columns(metric_ids: Iterable[str]) -> list[tuple[str, str, str]]:
    """(key, header, group) of the corruption columns a board shows, for the ids its results hold."""
    have = set(metric_ids)
    return [(k, HEADERS[k], GROUP) for k in (MEAN_BA, MEAN_DROP) if k in have]


def reference_value(metrics: dict[str, dict[str, Any]], key: str) -> dict[str, Any] | None:
    """A constant answer (or a fair coin) does not change under any corruption: its corrupted score is its clean
    score and its drop 0. None for keys that are not classification scores under a corruption."""
    p = try_parse(key)
    if p is None or p.family != CORRUPT or p.method is not None:
        return None
    if p.variant is not None:
        return {"value": 0.0, "ci_low": None, "ci_high": None}
    clean = metrics.get(clean_id(p.metric))
    return None if clean is None else {"value": clean["value"], "ci_low": None, "ci_high": None}


def with_reference_values(metrics: dict[str, dict[str, Any]], keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    out = dict(metrics)
    for k in keys:
        v = reference_value(metrics, k)
        if v is not None:
            out[k] = v
    return out


def conditions(metric_ids: Iterable[str]) -> tuple[list[str], list[int]]:
    """(corruptions, severities) with a per-condition balanced accuracy, sorted."""
    corruptions, severities = set(), set()
    for mid in metric_ids:
        p = try_parse(mid)
        if p is None or p.family != CORRUPT or p.method is not None or p.variant is not None:
            continue
        if p.metric != "balanced_accuracy":
            continue
        c, s = shift_parts(p.shift)
        if c is not None:
            corruptions.add(c)
            severities.add(s)
    return sorted(corruptions), sorted(severities)


def stability_ids(metric_ids: Iterable[str]) -> dict[str, str]:
    """The explanation-stability headline ids present: clean, mean under corruption, mean drop."""
    out = {}
    for mid in sorted(metric_ids):
        p = try_parse(mid)
        if p is None or p.family != CORRUPT or p.method is None:
            continue
        if p.shift == "clean":
            out.setdefault("clean", mid)
        elif p.shift == mean_shift():
            out.setdefault("drop" if p.variant else "corrupted", mid)
    return out
