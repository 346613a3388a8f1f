"""What one result answers, as data: the two questions first, each read against its trivial reference.

``summarise(result)`` is a pure function of a result.json dict (no I/O, no torch). `fxbench run` prints it
(cli/run.py) and the leaderboard shows its headline on each submission's page, so both say the same thing:

1. Does the model still find the fracture under attack? The version's headline robust score (balanced
   accuracy at the headline budget, from v2) against the constant classifier, which scores exactly 0.5.
2. Does it look at the fracture? Each attribution method's primary localisation score minus the best trivial
   map's (centre prior, anatomy, edges), per image, with its CI (``xai/<method>/<metric>/vs-best-ref``).

Then (v3 on) the corruption battery's means over its corruptions and their paired drops from clean (a
constant classifier: 0.500 and a drop of 0), the details (clean scores, sensitivity and specificity), the
reference maps apart from the methods, and plain warnings: a constant or at-chance classifier ranks above every model an attack breaks, and its
explanation scores say nothing about where a fracture detector looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .metric_ids import (
    CORRUPT,
    VS_REF,
    clean_id,
    corrupt_id,
    mean_shift,
    robust_id,
    threat_parts,
    try_parse,
    xai_id,
)

CHANCE = 0.5  # balanced accuracy of every constant classifier (and of a fair coin, in expectation)
PRIMARY_DEFAULT = "relevance_mass_accuracy"  # v2's primary localisation score (leaderboard, scatter, findings)
CEILING = "ref_mask"  # the mask itself: the best any map can score, not a trivial reference
MIN_N_FOR_CI = 20  # as specs/v2/benchmark.yaml: below this a percentile-bootstrap CI is not printed


@dataclass(frozen=True)
class Score:
    """One metric of the result: value, 95% CI (None when undefined or n is too small), n."""

    id: str
    label: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    note: str = ""  # how to read it, where a reference helps (e.g. what a constant classifier scores)

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None


@dataclass(frozen=True)
class Comparison:
    """``score`` read against a reference value: the difference and what its CI says."""

    score: Score
    reference: float | None
    reference_label: str
    difference: Score | None  # score - reference, with the CI of the difference
    verdict: str  # above | below | at (exactly the reference, CI included) | undecided | no-ci | n/a


@dataclass(frozen=True)
class MethodLine:
    method: str
    metric: str
    score: Score  # the method's own score
    reference: str | None  # the best trivial map for this metric (per the battery), e.g. ref_edge
    reference_value: float | None
    difference: Score | None  # xai/<method>/<metric>/vs-best-ref: paired, per image
    verdict: str


@dataclass
class RunSummary:
    title: str
    robust: Comparison | None  # question 1
    clean: Comparison | None  # clean balanced accuracy against chance (reads question 1's context)
    primary_metric: str | None  # question 2's localisation score
    methods: list[MethodLine] = field(default_factory=list)
    references: list[Score] = field(default_factory=list)  # reference maps on the primary metric
    best_reference: str | None = None
    details: list[Score] = field(default_factory=list)
    corruptions: list[Score] = field(default_factory=list)  # v3 on: pooled over the preset's corruptions
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: list[dict[str, str]] = field(default_factory=list)


def verdict(lo: float | None, hi: float | None, reference: float = 0.0) -> str:
    """above / below: the whole 95% CI is on that side of ``reference``; at: the CI is the reference itself (a
    constant answer); undecided: it includes it."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "no-ci"
    if lo == hi == reference:
        return "at"
    if lo > reference:
        return "above"
    if hi < reference:
        return "below"
    return "undecided"


def _score(metrics: dict[str, Any], mid: str, label: str, min_n: int, note: str = "") -> Score | None:
    m = metrics.get(mid)
    if not m:
        return None
    n = m.get("n")
    lo, hi = m.get("ci_low"), m.get("ci_high")
    if n is not None and n < min_n:
        lo = hi = None
    return Score(mid, label, m.get("value"), lo, hi, n, note)


def _against(score: Score | None, reference: float, label: str) -> Comparison | None:
    if score is None:
        return None
    if score.value is None:
        return Comparison(score, reference, label, None, "n/a")
    diff = Score(f"{score.id} - {reference:g}", f"minus {label}", score.value - reference,
                 None if score.ci_low is None else score.ci_low - reference,
                 None if score.ci_high is None else score.ci_high - reference, score.n)
    return Comparison(score, reference, label, diff, verdict(score.ci_low, score.ci_high, reference))


def _config(result: dict[str, Any], battery: str) -> dict[str, Any]:
    return ((result.get("benchmark") or {}).get("config") or {}).get("batteries", {}).get(battery) or {}


def headline_threat(result: dict[str, Any]) -> str | None:
    """The robustness battery's headline budget (``linf-4``) as the result records it."""
    comp = (result.get("components") or {}).get("robustness") or {}
    threat = comp.get("headline") or _config(result, "robustness").get("headline")
    return threat if isinstance(threat, str) else None


def primary_metric(result: dict[str, Any]) -> str | None:
    """The version's primary localisation score: the explanation battery's ``primary`` key where the result's
    config defines one (v3 on), else relevance mass (v2); None when the result has no explanation scores."""
    cfg = _config(result, "explanations")
    declared = (cfg.get("primary_endpoint") or cfg.get("primary")  # v3: `primary_endpoint` (shuffled AUC)
                or (cfg.get("vs_reference") or {}).get("primary"))
    metrics = result.get("metrics") or {}
    found = {p.metric for mid in metrics if (p := try_parse(mid)) is not None and p.headline}
    for name in (declared, PRIMARY_DEFAULT):
        if isinstance(name, str) and name in found:
            return name
    return None


def _methods_and_references(result: dict[str, Any], metric: str) -> tuple[list[str], list[str]]:
    comp = (result.get("components") or {}).get("explanations") or {}
    cfg = _config(result, "explanations")
    refs_declared = list((cfg.get("references") or {}).keys())
    have = {p.method for mid in result["metrics"] if (p := try_parse(mid)) is not None and p.headline
            and p.metric == metric}
    refs = [r for r in refs_declared if r in have] or sorted(m for m in have if m.startswith("ref_"))
    order = [m for m in comp.get("methods") or [] if m in have and m not in refs]
    methods = order + sorted(have - set(order) - set(refs))
    return methods, refs


def summarise(result: dict[str, Any], *, min_n_for_ci: int = MIN_N_FOR_CI,
              eval_counts: tuple[int, int] | None = None) -> RunSummary:
    """The summary of one result.json dict. ``eval_counts``: (images, fractured) of the benchmark's evaluation
    split, for the note on what a smaller sample's CIs mean; None leaves that sentence out."""
    metrics = result.get("metrics") or {}
    sub = result.get("submission") or {}
    threat = headline_threat(result)
    s = RunSummary(title=f"{sub.get('id', '?')}: {sub.get('name', '')}", robust=None, clean=None,
                   primary_metric=None, flags=list(result.get("flags") or []))
    budget = _budget_text(threat) if threat else ""

    # Question 1: the headline robust score against the constant classifier.
    if threat:
        robust = _score(metrics, robust_id(threat, "balanced_accuracy"), f"robust balanced accuracy, {budget}",
                        min_n_for_ci)
        if robust is None:  # v1 results: robust accuracy was the headline
            robust = _score(metrics, robust_id(threat, "accuracy"), f"robust accuracy, {budget}", min_n_for_ci)
        label = "constant classifier" if robust is not None and robust.id.endswith("balanced_accuracy") else ""
        s.robust = _against(robust, CHANCE, label or "chance") if robust is not None else None
    s.clean = _against(_score(metrics, clean_id("balanced_accuracy"), "clean balanced accuracy", min_n_for_ci),
                       CHANCE, "constant classifier")
    ds = (result.get("benchmark") or {}).get("dataset") or {}
    n, n_frac = ds.get("n"), ds.get("n_fracture")
    normals = f"{(n - n_frac) / n:.3f}" if isinstance(n, int) and isinstance(n_frac, int) and n else "the share"
    rows = [(clean_id("sensitivity"), "clean sensitivity", "share of fractures found"),
            (clean_id("specificity"), "clean specificity", "share of normal images cleared"),
            (clean_id("auroc"), "clean AUROC", "0.500 for a constant score")]
    if threat:
        rows += [(robust_id(threat, "sensitivity"), f"robust sensitivity, {budget}", ""),
                 (robust_id(threat, "specificity"), f"robust specificity, {budget}", ""),
                 (robust_id(threat, "accuracy"), f"robust accuracy, {budget}",
                  f"v1's headline; always 'no fracture' scores {normals} here")]
    for mid, label, note in rows:
        sc = _score(metrics, mid, label, min_n_for_ci, note)
        if sc is not None and sc.id != (s.robust.score.id if s.robust else None):
            s.details.append(sc)

    # Question 2: each method's primary localisation score against the best trivial map, per image.
    s.primary_metric = metric = primary_metric(result)
    if metric is not None:
        methods, refs = _methods_and_references(result, metric)
        best = ((result.get("components") or {}).get("explanations") or {}).get("best_reference") or {}
        s.best_reference = best.get(metric) if isinstance(best.get(metric), str) else None
        ref_value = (metrics.get(xai_id(s.best_reference, metric)) or {}).get("value") if s.best_reference else None
        for m in methods:
            score = _score(metrics, xai_id(m, metric), m, min_n_for_ci)
            diff = _score(metrics, xai_id(m, metric, variant=VS_REF), f"{m} minus the best trivial map",
                          min_n_for_ci)
            v = "n/a" if diff is None or diff.value is None else verdict(diff.ci_low, diff.ci_high)
            s.methods.append(MethodLine(m, metric, score, s.best_reference, ref_value, diff, v))
        refs_scored = [sc for r in refs if (sc := _score(metrics, xai_id(r, metric), r, min_n_for_ci))]
        s.references = sorted(refs_scored, key=lambda sc: (sc.label == CEILING, -(sc.value or 0.0), sc.label))

    s.corruptions = _corruption_scores(metrics, min_n_for_ci)
    s.warnings = _warnings(s, metrics, result)
    s.notes = _notes(s, result, eval_counts)
    return s


def _corruption_scores(metrics: dict[str, Any], min_n: int) -> list[Score]:
    """The corruption battery's pooled scores (mean over corruptions and severities), then each explanation
    endpoint's; ids through the one grammar, absent ids skipped."""
    shift = mean_shift()
    rows = [(corrupt_id(shift, "balanced_accuracy"), "corrupted balanced accuracy (mean)",
             f"a constant classifier: {CHANCE:.3f}"),
            (corrupt_id(shift, "balanced_accuracy", drop=True), "corruption drop (clean - corrupted)",
             "paired per image; a constant classifier: 0.000"),
            (corrupt_id(shift, "sensitivity"), "corrupted sensitivity (mean)", ""),
            (corrupt_id(shift, "specificity"), "corrupted specificity (mean)", "")]
    for mid in sorted(metrics):
        p = try_parse(mid)
        if p is not None and p.family == CORRUPT and p.shift == shift and p.method is not None:
            what = "drop under corruption" if p.variant else "under corruption (mean)"
            rows.append((mid, f"{p.method}: {p.metric.replace('_', ' ')} {what}", ""))
    return [sc for mid, label, note in rows if (sc := _score(metrics, mid, label, min_n, note)) is not None]


def _budget_text(threat: str) -> str:
    norm, eps = threat_parts(threat)
    return f"L-inf {eps:g}/255" if norm == "linf" else f"L2 {eps:g}"


def _value(metrics: dict[str, Any], mid: str) -> float | None:
    v = (metrics.get(mid) or {}).get("value")
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _warnings(s: RunSummary, metrics: dict[str, Any], result: dict[str, Any]) -> list[str]:
    out = []
    sens, spec = _value(metrics, clean_id("sensitivity")), _value(metrics, clean_id("specificity"))
    constant = None
    if sens == 0.0 and spec is not None:
        constant = "no fracture"
    elif spec == 0.0 and sens is not None:
        constant = "fracture"
    xai_note = (" Its explanation scores mean nothing: they describe maps of a model that does not tell "
                "fractures apart, not where a fracture detector looks.") if s.methods else ""
    if constant:
        zero = "sensitivity" if constant == "no fracture" else "specificity"
        out.append(
            f"this model answers '{constant}' for every image (clean {zero} 0.000): a constant classifier. Its "
            f"balanced accuracy is chance (0.500) clean and under attack, because no attack can change a constant "
            f"answer, so it sits above every model an attack breaks (robust 0.000) without detecting anything."
            + xai_note)
    elif s.clean is not None and s.clean.verdict in ("undecided", "below"):
        c = s.clean.score
        ci = f" [{c.ci_low:.3f}, {c.ci_high:.3f}]" if c.has_ci else ""
        where = "cannot be told from" if s.clean.verdict == "undecided" else "is below"
        out.append(
            f"clean balanced accuracy {c.value:.3f}{ci} {where} chance (0.500) at n = {c.n}: on these images the "
            "model does not detect fractures better than a constant answer, and its robust score and explanation "
            "scores cannot be read as a fracture detector's.")
    if s.robust is not None and s.robust.score.value is not None and not constant:
        if s.robust.score.value == 0.0:
            out.append(f"{s.robust.score.label} is 0.000: the attack flipped every image; a constant classifier "
                       "(0.500) ranks above this model.")
    if any(f.get("code") == "zero-gradients" for f in s.flags) and not constant:
        out.append("zero-gradients flag: the model's gradients vanish on some images; gradient attacks and "
                   "gradient maps there are unreliable (see the flag below).")
    return out


def _notes(s: RunSummary, result: dict[str, Any], eval_counts: tuple[int, int] | None) -> list[str]:
    ds = (result.get("benchmark") or {}).get("dataset") or {}
    n, n_frac = ds.get("n"), ds.get("n_fracture")
    out = []
    c = s.clean.score if s.clean is not None else None
    smaller = isinstance(n, int) and eval_counts is not None and n < eval_counts[0]
    if c is not None and c.has_ci and (smaller or not ds.get("leaderboard_eligible", True)):
        half = (c.ci_high - c.ci_low) / 2
        text = (f"{n} images ({n_frac} fractured): the 95% CI on balanced accuracy is about +-{half:.2f} here, so "
                f"a model has to score above about {CHANCE + half:.2f} to be told from chance (0.5)")
        if smaller and isinstance(n_frac, int) and 0 < n_frac < n:
            # balanced accuracy's standard error ~ sqrt(1/n_fracture + 1/n_normal) / 2: scale by the class counts
            big_n, big_pos = eval_counts
            ratio = math.sqrt((1 / big_pos + 1 / (big_n - big_pos)) / (1 / n_frac + 1 / (n - n_frac)))
            text += (f"; the benchmark's evaluation split ({big_n} images, {big_pos} fractured) narrows it to about "
                     f"+-{half * ratio:.2f} (`fxbench data prepare`)")
        out.append(text + ".")
    if s.methods and s.primary_metric:
        names = {"relevance_mass_accuracy": "relevance mass (the share of the map inside the expert mask)",
                 "shuffled_auc": "shuffled AUC (this image's fracture pixels against where other images' "
                                 "fractures lie: a position prior scores 0.500)"}
        out.append(f"explanations are read on {names.get(s.primary_metric, s.primary_metric.replace('_', ' '))}, "
                   "each method minus the best trivial map on the same image; every other score is in result.json.")
    return out
