"""Cheap consistency checks of a stored result: what the batteries write per image must agree with itself, with
the result's battery details (``components``) and with its flags.

Each check is a rule the batteries follow by construction (clean.py, robustness/battery.py, explanations/), so
a genuine result always passes, whatever the model; a result whose rows were edited by hand usually does not:

- clean: ``correct`` is ``pred == label``; ``pred`` is ``p_fracture >= 0.5`` (outside a band of 1e-6 around
  0.5, where float32 rounding of the softmax may decide either way);
- robust, per budget: ``correct <= clean correct``; ``broken`` is ``clean correct and not correct``; ``attack``
  is ``clean`` exactly where the clean image is misclassified and names an attack exactly where broken; the
  perturbation ``norm`` is finite exactly where broken and within eps (plus the spec's verification tolerance);
  within a norm, a larger budget never has more correct points, and a point broken at two budgets keeps the
  same attack and norm (the cascade keeps the first adversarial example); ``min_eps_broken`` is the smallest
  L-inf budget that broke the point (0 when misclassified clean);
- explanations: scores only on fractured images; ``detected`` is the clean prediction; ``flipped`` is given
  only where an attacked point can exist (fractured, correct clean), and is ``broken`` where the point is the
  cascade's (v1/v2); v3's fixed-step points come from another attack (APGD-CE at exactly eps, in the
  explanation battery), which may flip a point the cascade's early-stopped attacks left robust;
- components: the robustness curve's accuracy, points entering each budget and breaks per attack are the
  per-sample file's;
- flags re-derived where the files allow: ``quick-preset`` iff the preset is not full; Square's
  ``gradient-masking-suspected`` from the per-sample attacks (AutoAttack's rule, the spec's alpha); the
  robustness checks' flags from their counts in ``components.robustness.checks``.

The columns these rules read are required of every result of a real benchmark version. What such checks cannot
see (outcomes rewritten consistently) is what the audit and CI provenance are for (evidence.py, audit.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ResultError
from ..results.metric_ids import (
    NORM_COLUMNS,
    ROBUST,
    XAI,
    clean_id,
    robust_id,
    robust_norm_column,
    threat_parts,
    threat_sort_key,
    try_parse,
    xai_image_id,
)
from ..results.metrics import LABEL

P_BAND = 1e-6  # |p_fracture - 0.5| within which the decision may go either way (float32 softmax rounding)
CLEAN_ATTACK = "clean"  # the robustness battery's 'attack' of a point misclassified clean (cascade.CLEAN)
SQUARE = "square"  # the black-box attack of AutoAttack's check_square_sr
DEFAULT_VERIFY = {"linf_atol": 1e-6, "l2_rtol": 1e-5}


def robust_budgets(df: pd.DataFrame) -> dict[str, list[str]]:
    """norm -> the budgets with a ``robust/<budget>/correct`` column, smallest first."""
    found: dict[str, list[str]] = {}
    for c in df.columns:
        p = try_parse(c)
        if p is not None and p.family == ROBUST and p.threat is not None and p.metric == "correct":
            found.setdefault(threat_parts(p.threat)[0], []).append(p.threat)
    return {n: sorted(bs, key=threat_sort_key) for n, bs in found.items()}


def eps_pixels(budget: str) -> float:
    norm, eps = threat_parts(budget)
    return eps / 255 if norm == "linf" else eps


def _floats(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(float)


def _ids(df: pd.DataFrame, bad: np.ndarray) -> str:
    ids = df["image_id"].to_numpy()[np.asarray(bad, bool)]
    return f"{len(ids)} image(s), e.g. {ids[0]}" if len(ids) else ""


class _Problems:
    def __init__(self, df: pd.DataFrame):
        self.df, self.items = df, []

    def where(self, bad: Iterable[bool], what: str) -> None:
        bad = np.asarray(list(bad) if not isinstance(bad, np.ndarray | pd.Series) else bad, bool)
        if bad.any():
            self.items.append(f"{what} ({_ids(self.df, bad)})")

    def add(self, what: str) -> None:
        self.items.append(what)


def required_columns(df: pd.DataFrame) -> list[str]:
    """The per-sample columns the rules above read and every battery writes: refused when absent, so that a
    forger cannot skip a rule by dropping its column."""
    need = [clean_id("pred"), clean_id("correct"), clean_id("p_fracture")]
    budgets = robust_budgets(df)
    for bs in budgets.values():
        need += [robust_id(b, m) for b in bs for m in ("broken", "attack", "norm")]
    if budgets.get("linf"):
        need.append(robust_norm_column("linf", NORM_COLUMNS[0]))
    return [c for c in need if c not in df.columns]


def check_consistency(result: dict[str, Any], df: pd.DataFrame, *, source: str) -> None:
    """Raise a ResultError naming every rule the result breaks (see the module docstring)."""
    missing = required_columns(df)
    if missing:
        raise ResultError(f"{source}: per-sample column {missing[0]!r} is missing"
                          + (f" ({len(missing) - 1} more)" if len(missing) > 1 else "")
                          + "; every run writes it, and the consistency checks read it")
    out = _Problems(df)
    clean_correct = _clean(df, out)
    config = (result.get("benchmark", {}).get("config") or {}).get("batteries", {}).get("robustness") or {}
    first = _robust(df, clean_correct, config, out)
    xai = (result.get("benchmark", {}).get("config") or {}).get("batteries", {}).get("explanations") or {}
    _xai(df, clean_correct, (xai.get("under_attack") or {}).get("points"), out)
    _components(result, df, clean_correct, first, out)
    _flags(result, df, first, config, out)
    if out.items:
        more = f"; and {len(out.items) - 4} more" if len(out.items) > 4 else ""
        raise ResultError(f"{source}: the per-sample outcomes contradict each other or the result: "
                          + "; ".join(out.items[:4]) + more)


def _clean(df: pd.DataFrame, out: _Problems) -> np.ndarray:
    label = _floats(df, LABEL)
    pred, correct, p = _floats(df, clean_id("pred")), _floats(df, clean_id("correct")), _floats(df, clean_id("p_fracture"))
    out.where(~np.isin(pred, (0.0, 1.0)), "clean/pred is not 0 or 1")
    out.where(~np.isin(correct, (0.0, 1.0)), "clean/correct is not 0 or 1")
    out.where(np.isin(correct, (0.0, 1.0)) & (correct != (pred == label)), "clean/correct is not clean/pred == label")
    out.where(~((p >= 0) & (p <= 1)), "clean/p_fracture is not a probability")
    decided = np.abs(p - 0.5) > P_BAND
    out.where(decided & ((p >= 0.5) != (pred == 1)), "clean/pred is not p_fracture >= 0.5")
    return correct == 1


def _robust(df: pd.DataFrame, clean_correct: np.ndarray, config: dict, out: _Problems) -> dict[str, np.ndarray]:
    """The rules per budget; returns, per norm, the index of the first budget that broke each point (-1: none)."""
    verify = {**DEFAULT_VERIFY, **(config.get("verify") or {})}
    first: dict[str, np.ndarray] = {}
    for norm, budgets in robust_budgets(df).items():
        first_broken = np.full(len(df), -1)
        prev_correct = prev_attack = prev_norm = None
        for k, b in enumerate(budgets):
            correct = _floats(df, robust_id(b, "correct"))
            broken = df[robust_id(b, "broken")].to_numpy()
            broken_ok = np.isin(broken, (True, False))
            broken = broken_ok & (broken == True)  # noqa: E712 - numpy element-wise
            attack = df[robust_id(b, "attack")].fillna("").astype(str).to_numpy()
            dist = _floats(df, robust_id(b, "norm"))
            out.where(~np.isin(correct, (0.0, 1.0)), f"robust/{b}/correct is not 0 or 1")
            out.where(~broken_ok, f"robust/{b}/broken is not true or false")
            out.where((correct == 1) & ~clean_correct, f"robust/{b}/correct on images misclassified clean")
            out.where(broken != (clean_correct & (correct == 0)), f"robust/{b}/broken is not 'correct clean and "
                      f"not robust/{b}/correct'")
            out.where((attack == CLEAN_ATTACK) != ~clean_correct, f"robust/{b}/attack is not 'clean' exactly where "
                      "the clean image is misclassified")
            out.where(clean_correct & ((attack != "") != broken), f"robust/{b}/attack names an attack where the "
                      "point is not broken, or none where it is")
            out.where(np.isfinite(dist) != broken, f"robust/{b}/norm is not given exactly where the point is broken")
            eps = eps_pixels(b)
            limit = eps + verify["linf_atol"] if norm == "linf" else eps * (1 + verify["l2_rtol"])
            out.where(np.isfinite(dist) & ((dist > limit) | (dist < 0)), f"robust/{b}/norm is outside the budget "
                      f"(eps {eps:.6g}, at most {limit:.6g})")
            if prev_correct is not None:
                out.where(correct > prev_correct, f"robust/{b}/correct where the smaller budget "
                          f"{budgets[k - 1]} is broken (robust accuracy must fall as eps grows)")
                both = broken & (first_broken >= 0)
                out.where(both & ((attack != prev_attack) | (dist != prev_norm)), f"robust/{b}: a point broken "
                          f"at {budgets[k - 1]} changed its attack or perturbation (the cascade keeps the first "
                          "adversarial example)")
            first_broken = np.where((first_broken < 0) & broken, k, first_broken)
            prev_correct, prev_attack, prev_norm = correct, attack, dist
        first[norm] = first_broken
        if norm == "linf":
            col = robust_norm_column("linf", NORM_COLUMNS[0])
            have = _floats(df, col)
            eps = np.array([threat_parts(b)[1] for b in budgets] + [np.nan])
            want = np.where(~clean_correct, 0.0, eps[first_broken])  # index -1: never broken -> NaN
            out.where(~((have == want) | (np.isnan(have) & np.isnan(want))), f"{col} is not the smallest L-inf "
                      "budget that broke the point")
    return first


def _xai(df: pd.DataFrame, clean_correct: np.ndarray, points: str | None, out: _Problems) -> None:
    fractured = _floats(df, LABEL) == 1
    scores = [c for c in df.columns if (p := try_parse(c)) is not None and p.family == XAI and p.method is not None]
    for c in scores:
        v = _floats(df, c)
        if np.isfinite(v[~fractured]).any():
            out.where(~fractured & np.isfinite(v), f"{c} has scores on images without a fracture")
            break
    detected = xai_image_id("detected")
    if detected in df.columns:
        d = _floats(df, detected)
        out.where(fractured & (d != _floats(df, clean_id("pred"))), f"{detected} is not the clean prediction")
    for c in df.columns:
        p = try_parse(c)
        if p is None or p.family != XAI or p.method is not None or p.metric != "flipped" or p.threat is None:
            continue
        col = robust_id(p.threat, "broken")
        f = _floats(df, c)
        if col not in df.columns:
            out.add(f"{c} without its robustness column {col}")
            continue
        broken = df[col].to_numpy() == True  # noqa: E712
        out.where(np.isfinite(f) & ~(fractured & clean_correct), f"{c} is given where no attacked point can be "
                  "stored (misclassified clean, or no fracture)")
        if points != "fixed_step":  # v1/v2: the cascade's stored point; v3 makes its own (another attack)
            out.where(np.isfinite(f) & (f != broken), f"{c} is not {col}")


def _curve_counts(df: pd.DataFrame, clean_correct: np.ndarray, first: dict[str, np.ndarray], budget: str):
    """(points entering the budget, {attack: points first broken at it}) from the per-sample file."""
    norm = threat_parts(budget)[0]
    k = robust_budgets(df)[norm].index(budget)
    entering = int((clean_correct & ((first[norm] < 0) | (first[norm] >= k))).sum())
    new = first[norm] == k
    attacks = df[robust_id(budget, "attack")].fillna("").astype(str).to_numpy()[new]
    names, counts = np.unique(attacks, return_counts=True)
    return entering, {str(a): int(n) for a, n in zip(names, counts, strict=True)}


def _components(result: dict[str, Any], df: pd.DataFrame, clean_correct: np.ndarray,
                first: dict[str, np.ndarray], out: _Problems) -> None:
    rob = _dict(_dict(result.get("components")).get("robustness"))
    if not rob:
        return
    if "preset" in rob and rob["preset"] != result["benchmark"]["preset"]:
        out.add(f"components.robustness was computed with preset {rob['preset']!r}, the result says "
                f"{result['benchmark']['preset']!r}")
    curve = rob.get("curve")
    if not isinstance(curve, list):
        return
    have = {b for bs in robust_budgets(df).values() for b in bs}
    listed = {c.get("budget") for c in curve if isinstance(c, dict)}
    if listed != have:
        out.add(f"components.robustness.curve lists budgets {sorted(map(str, listed))}, the per-sample file has "
                f"{sorted(have)}")
        return
    for c in curve:
        b = c["budget"]
        entering, breaks = _curve_counts(df, clean_correct, first, b)
        acc = float(_floats(df, robust_id(b, "correct")).mean())
        told = _dict(c.get("broken_by"))
        counts = {a: _count(v) for a, v in told.items()}
        same_breaks = None not in counts.values() and {a: v for a, v in counts.items() if v} == breaks
        if not (_close(c.get("robust_accuracy"), acc) and c.get("robust_at_start") == entering and same_breaks):
            out.add(f"components.robustness.curve at {b} (robust accuracy {c.get('robust_accuracy')}, "
                    f"{c.get('robust_at_start')} points entering, broken by {told}) is not the per-sample file's "
                    f"({acc:.6g}, {entering}, {breaks})")


def _dict(x: Any) -> dict:
    """Battery details are free-form JSON (the schema does not fix them): anything but a mapping counts as none."""
    return x if isinstance(x, dict) else {}


def _count(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _close(a: Any, b: float) -> bool:
    return isinstance(a, int | float) and not isinstance(a, bool) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def square_flag_due(df: pd.DataFrame, first: dict[str, np.ndarray], config: dict) -> bool | None:
    """AutoAttack's check_square_sr on the per-sample file: at some budget, robust accuracy after Square is
    below the white-box attacks' by more than alpha. None when the spec has no such check or no Square."""
    attacks = [a.get("name") for a in config.get("attacks") or [] if isinstance(a, dict)]
    alpha = config.get("square_flag_alpha")
    if SQUARE not in attacks or not isinstance(alpha, int | float):
        return None
    n = len(df)
    clean_correct = _floats(df, clean_id("correct")) == 1
    for bs in robust_budgets(df).values():
        for b in bs:
            entering, breaks = _curve_counts(df, clean_correct, first, b)
            acc_after, left = {"clean": entering / n}, entering
            for a in attacks:  # the same arithmetic as the battery's finalize and pyautoattack's check
                left -= breaks.get(a, 0)
                acc_after[a] = left / n
            if len(acc_after) > 2 and acc_after[SQUARE] < min(v for k, v in acc_after.items() if k != SQUARE) - alpha:
                return True
    return False


def _flags(result: dict[str, Any], df: pd.DataFrame, first: dict[str, np.ndarray], config: dict,
           out: _Problems) -> None:
    codes = {f.get("code") for f in result.get("flags") or [] if isinstance(f, dict)}
    preset = result["benchmark"]["preset"]
    due: dict[str, bool] = {"quick-preset": preset != "full"}
    square = square_flag_due(df, first, config)
    if square is not None:
        due["gradient-masking-suspected"] = square
    checks = _dict(_dict(_dict(result.get("components")).get("robustness")).get("checks"))
    if checks:
        unbounded, transfer = _dict(checks.get("unbounded")), _dict(checks.get("transfer"))
        fd = _dict(checks.get("finite_differences"))
        if _count(unbounded.get("survived")) is not None:
            due["unbounded-attack-failed"] = unbounded["survived"] > 0
        if transfer:
            due["check-not-run"] = "skipped" in transfer
        if _count(transfer.get("broken")) is not None:
            due["transfer-attack-succeeded"] = transfer["broken"] > 0
        share = _dict(_dict(config.get("checks")).get("finite_differences")).get("max_share")
        if _count(fd.get("mismatched")) is not None and _count(fd.get("checked")) is not None:
            if fd["mismatched"] == 0:  # a chunk flags only points that disagree
                due["gradient-mismatch"] = False
            # over the share in total means over it in some chunk (each chunk flags its own)
            if isinstance(share, int | float) and fd["mismatched"] > share * fd["checked"]:
                due["gradient-mismatch"] = True
    for code, should in sorted(due.items()):
        if should and code not in codes:
            out.add(f"flag {code} is missing, but the result's own files call for it")
        elif not should and code in codes:
            out.add(f"flag {code} is present, but the result's own files do not call for it")


def copied_rows(a: pd.DataFrame, b: pd.DataFrame, *, min_shared: int = 2) -> tuple[str, int] | None:
    """(column, images) where two results share the same model-dependent value on at least ``min_shared``
    images, each value unique within its own column: a float a model computed (the clean probability, an
    attribution method's relevance mass) that two different runs never share. Reference maps and constant
    values are left out. None when the two look like different runs."""
    cols = [clean_id("p_fracture")] + sorted(
        c for c in set(a.columns) & set(b.columns)
        if (p := try_parse(c)) is not None and p.family == XAI and p.headline and not p.method.startswith("ref_")
        and p.metric == "relevance_mass_accuracy")
    left, right = a.set_index("image_id"), b.set_index("image_id")
    shared = left.index.intersection(right.index)
    for c in cols:
        if c not in left or c not in right:
            continue
        x = pd.to_numeric(left.loc[shared, c], errors="coerce")
        y = pd.to_numeric(right.loc[shared, c], errors="coerce")
        fine = np.isfinite(x) & (x > 0) & (x < 1) & ~x.duplicated(keep=False) & ~y.duplicated(keep=False)
        n = int(((x == y) & fine).sum())
        if n >= min_shared:
            return c, n
    return None


__all__ = ["P_BAND", "check_consistency", "copied_rows", "eps_pixels", "required_columns",
           "robust_budgets", "square_flag_due"]
