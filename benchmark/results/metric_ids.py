"""Metric ids: the one grammar of the per-sample columns and metric ids of every battery (benchmark/README.md,
"Metric ids"). Batteries build ids with the builders here; the leaderboard and ``compare`` read them with
``parse`` / ``try_parse``; nothing else formats or splits an id by hand.

Grammar (each NAME snake_case from ``[a-z0-9_.+-]``, never "nan_reason")::

    id       := clean | robust | xai | corrupt
    clean    := "clean/" METRIC                              clean/accuracy, clean/p_fracture (a column)
    robust   := "robust/" THREAT "/" METRIC                  robust/linf-4/accuracy, robust/linf-4/broken
              | "robust/" NORM "/" METRIC                    per-norm column: robust/linf/min_eps_broken
    THREAT   := NORM "-" EPS                                 linf-4 (eps 4/255), l2-1.75 (eps in pixels)
    NORM     := "linf" | "l2"
    xai      := "xai/" METHOD "/" METRIC ["/" VARIANT]       xai/saliency/pointing_game[/hardware]
              | "xai/" IMAGE                                 per-image columns: xai/mask_px, xai/mask_tercile,
              | "xai/adv-" THREAT "/" IMAGE                  xai/detected, xai/adv-linf-4/flipped
    VARIANT  := SUBGROUP                                     hardware, no_hardware, region-hand, mask-small,
                                                             detected, missed
              | "vs-best-ref"                                minus the best trivial reference, per image
              | "adv-" THREAT ["/" ("flipped" | "not_flipped")]   on the attacked images
              | "drop-" THREAT                               clean minus attacked
              | "noise-" THREAT                              on the random-noise control (v3)
              | "adv_minus_noise-" THREAT                    attacked minus noise control (v3)
              | "noise_minus_clean-" THREAT                  noise control minus clean (v3)

    corrupt  := "corrupt/" SHIFT "/" METRIC ["/drop"]         corrupt/gaussian_noise-3/balanced_accuracy,
                                                             corrupt/gaussian_noise-3/correct (a column),
                                                             corrupt/mean/balanced_accuracy/drop
              | "corrupt/" SHIFT "/xai/" METHOD "/" METRIC ["/drop"]   an explanation endpoint on the
                                                             corrupted (or, SHIFT "clean", the clean) image
    SHIFT    := CORRUPTION "-" SEVERITY                      gaussian_noise-3 (severity 0..9; 0 = the image as is)
              | "mean-" SEVERITY                             mean over the corruptions at one severity
              | "mean"                                       mean over every corruption and severity
              | "clean"                                      the uncorrupted image (explanation endpoints only)
    CORRUPTION := [a-z][a-z0-9_]*, neither "mean" nor "clean"

"drop" is the paired difference clean minus corrupted, per image (so a balanced-accuracy drop is the clean
balanced accuracy minus the corrupted one, exactly: the reducer is linear in the column).

A METHOD (attribution method or reference map) or IMAGE column never starts with "adv-". The NaN reasons of a per-sample
column sit in ``<column>/nan_reason`` (``reason_column``): not a metric id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CLEAN, ROBUST, XAI, CORRUPT = "clean", "robust", "xai", "corrupt"
FAMILIES = (CLEAN, ROBUST, XAI, CORRUPT)
NORMS = ("linf", "l2")
VS_REF = "vs-best-ref"
FLIP_PARTS = ("flipped", "not_flipped")  # split of an adv- variant by whether the attack flipped the label
REASON = "nan_reason"
NORM_COLUMNS = ("min_eps_broken",)  # per-norm per-sample columns (robust/<norm>/<name>): never metric ids

NAME = re.compile(r"[a-z0-9_.+-]+")
THREAT = re.compile(r"(linf|l2)-([0-9]+(?:\.[0-9]+)?)")
# the parts of an under-attack variant: v2 adv / drop; v3 adds the noise control and the two differences
ATTACK_PARTS = ("adv", "drop", "noise", "adv_minus_noise", "noise_minus_clean")
_ATTACK_VARIANT = re.compile(rf"({'|'.join(ATTACK_PARTS)})-({THREAT.pattern})(?:/({'|'.join(FLIP_PARTS)}))?")
MEAN_SHIFT, CLEAN_SHIFT, DROP = "mean", "clean", "drop"  # corrupt/: pooled shifts, the clean image, paired drop
CORRUPTION = re.compile(r"[a-z][a-z0-9_]*")
SHIFT = re.compile(r"(?:([a-z][a-z0-9_]*)-([0-9]))|mean|clean")


@dataclass(frozen=True)
class MetricId:
    """A parsed id. ``str(mid)`` gives the id back."""

    family: str  # clean | robust | xai | corrupt
    metric: str  # the score or column name (an xai per-image column: mask_px, flipped, ...)
    threat: str | None = None  # robust: the budget; xai: the attack of an adv-/drop- variant or image column
    method: str | None = None  # xai: the attribution method or reference map; None for a per-image column
    variant: str | None = None  # xai: what follows METHOD/METRIC (a subgroup, vs-best-ref, adv-/drop-...);
    # robust: the norm of a per-norm column (threat None); corrupt: "drop" or None
    shift: str | None = None  # corrupt: <corruption>-<severity>, mean-<severity>, mean or clean

    def __str__(self) -> str:
        if self.family == CORRUPT:
            return corrupt_id(self.shift, self.metric, method=self.method, drop=self.variant == DROP)
        if self.family == CLEAN:
            return clean_id(self.metric)
        if self.family == ROBUST:
            if self.threat is None:
                return robust_norm_column(self.variant, self.metric)
            return robust_id(self.threat, self.metric)
        if self.method is None:
            return xai_image_id(self.metric, threat=self.threat)
        return xai_id(self.method, self.metric, variant=self.variant)

    @property
    def headline(self) -> bool:
        """An xai METHOD/METRIC score without a variant (the leaderboard's localisation columns)."""
        return self.family == XAI and self.method is not None and self.variant is None

    @property
    def attack_part(self) -> str | None:
        """``adv``, ``drop`` (v2), ``noise``, ``adv_minus_noise``, ``noise_minus_clean`` (v3) for an
        under-attack xai variant, else None."""
        m = _ATTACK_VARIANT.fullmatch(self.variant or "") if self.family == XAI else None
        return m.group(1) if m else None

    @property
    def under_attack(self) -> bool:
        """An xai score on attacked images (``adv-<threat>``, its flipped split, or ``drop-<threat>``)."""
        return self.attack_part is not None


def _name(part: str, what: str) -> str:
    if not isinstance(part, str) or not NAME.fullmatch(part) or part == REASON:
        raise ValueError(f"metric id: {what} {part!r} is not a name of [a-z0-9_.+-]")
    return part


def is_threat(text: str) -> bool:
    return THREAT.fullmatch(text) is not None


def _threat(threat: str | None) -> str:
    if threat is None or not is_threat(threat):
        raise ValueError(f"metric id: threat {threat!r} is not <linf|l2>-<eps>")
    return threat


def threat_parts(threat: str) -> tuple[str, float]:
    """(norm, eps as written: 1/255 units for linf, pixels for l2)."""
    m = THREAT.fullmatch(_threat(threat))
    return m.group(1), float(m.group(2))


def threat_sort_key(threat: str) -> tuple[bool, float]:
    """L-inf first, then L2; by size within a norm."""
    norm, eps = threat_parts(threat)
    return norm != "linf", eps


# -- builders -----------------------------------------------------------------------------------------------


def clean_id(metric: str) -> str:
    return f"{CLEAN}/{_name(metric, 'metric')}"


def robust_id(threat: str, metric: str) -> str:
    return f"{ROBUST}/{_threat(threat)}/{_name(metric, 'metric')}"


def robust_norm_column(norm: str, metric: str) -> str:
    """A per-sample column about every budget of one norm (e.g. the smallest eps that broke the image)."""
    if norm not in NORMS or metric not in NORM_COLUMNS:
        raise ValueError(f"metric id: robust/{norm}/{metric} is not a per-norm column ({NORMS} x {NORM_COLUMNS})")
    return f"{ROBUST}/{norm}/{_name(metric, 'metric')}"


def xai_id(method: str, metric: str, *, variant: str | None = None) -> str:
    if _name(method, "method").startswith("adv-"):
        raise ValueError(f"metric id: method {method!r} must not start with 'adv-'")
    out = f"{XAI}/{method}/{_name(metric, 'metric')}"
    if variant is None:
        return out
    if "/" in variant and not _ATTACK_VARIANT.fullmatch(variant):
        raise ValueError(f"metric id: variant {variant!r} has a '/' but is not adv-<threat>/<flip part>")
    for part in variant.split("/"):
        _name(part, "variant")
    return f"{out}/{variant}"


def adv_variant(threat: str, part: str | None = None) -> str:
    """``adv-<threat>``: the score on the attacked images; with ``part`` their flipped / not_flipped split."""
    if part is not None and part not in FLIP_PARTS:
        raise ValueError(f"metric id: {part!r} is not one of {FLIP_PARTS}")
    return f"adv-{_threat(threat)}" + (f"/{part}" if part else "")


def drop_variant(threat: str) -> str:
    """``drop-<threat>``: the clean score minus the score on the attacked image."""
    return f"drop-{_threat(threat)}"


def attack_variant(part: str, threat: str) -> str:
    """``<part>-<threat>`` for any part of ``ATTACK_PARTS`` (v3: ``noise``, the random-noise control at the
    same budget; ``adv_minus_noise``, attacked minus noise; ``noise_minus_clean``, noise minus clean)."""
    if part not in ATTACK_PARTS:
        raise ValueError(f"metric id: {part!r} is not one of {ATTACK_PARTS}")
    return f"{part}-{_threat(threat)}"


def xai_image_id(name: str, *, threat: str | None = None) -> str:
    """A per-image xai column: ``xai/<name>``, or ``xai/adv-<threat>/<name>`` about the stored attacked point."""
    if _name(name, "column").startswith("adv-"):
        raise ValueError(f"metric id: column {name!r} must not start with 'adv-'")
    return f"{XAI}/" + (f"adv-{_threat(threat)}/" if threat is not None else "") + name


def reason_column(column: str) -> str:
    """The per-sample column holding why ``column`` is NaN on a row."""
    return f"{column}/{REASON}"


def is_shift(text: str) -> bool:
    """A corruption condition (``gaussian_noise-3``), ``mean-<severity>``, ``mean`` or ``clean``."""
    m = SHIFT.fullmatch(text) if isinstance(text, str) else None
    return m is not None and m.group(1) != CLEAN_SHIFT


def shift_id(corruption: str, severity: int) -> str:
    """``<corruption>-<severity>``: one corruption at one severity (0 = the image as it is)."""
    if not isinstance(corruption, str) or not CORRUPTION.fullmatch(corruption) or corruption in (MEAN_SHIFT, CLEAN_SHIFT):
        raise ValueError(f"metric id: corruption {corruption!r} is not a name of [a-z0-9_] (nor mean / clean)")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 9:
        raise ValueError(f"metric id: severity {severity!r} is not a whole number from 0 to 9")
    return f"{corruption}-{severity}"


def mean_shift(severity: int | None = None) -> str:
    """``mean`` (every corruption and severity) or ``mean-<severity>`` (every corruption at one severity)."""
    if severity is None:
        return MEAN_SHIFT
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 9:
        raise ValueError(f"metric id: severity {severity!r} is not a whole number from 0 to 9")
    return f"{MEAN_SHIFT}-{severity}"


def shift_parts(shift: str) -> tuple[str | None, int | None]:
    """(corruption or None for mean/clean, severity or None): ``gaussian_noise-3`` -> ("gaussian_noise", 3),
    ``mean-3`` -> (None, 3), ``mean`` / ``clean`` -> (None, None)."""
    if not is_shift(shift):
        raise ValueError(f"metric id: {shift!r} is not <corruption>-<severity>, mean-<severity>, mean or clean")
    m = SHIFT.fullmatch(shift)
    if m.group(1) is None:
        return None, None
    return (None if m.group(1) == MEAN_SHIFT else m.group(1)), int(m.group(2))


def corrupt_id(shift: str, metric: str, *, method: str | None = None, drop: bool = False) -> str:
    """``corrupt/<shift>/<metric>[/drop]`` or, for an explanation endpoint of ``method``,
    ``corrupt/<shift>/xai/<method>/<metric>[/drop]``. ``clean`` is a shift of explanation endpoints only,
    and has no drop."""
    shift_parts(shift)
    if shift == CLEAN_SHIFT and (method is None or drop):
        raise ValueError("metric id: corrupt/clean/ holds the clean explanation endpoint only (no drop)")
    if _name(metric, "metric") == DROP:
        raise ValueError("metric id: 'drop' is a variant, not a metric")
    if method is not None and _name(method, "method").startswith("adv-"):
        raise ValueError(f"metric id: method {method!r} must not start with 'adv-'")
    mid = f"{CORRUPT}/{shift}/" + (f"{XAI}/{method}/" if method is not None else "") + metric
    return f"{mid}/{DROP}" if drop else mid


# -- parsers ------------------------------------------------------------------------------------------------


def parse(mid: str) -> MetricId:
    """The parts of a metric id or per-sample column; ValueError when it does not follow the grammar."""
    parts = mid.split("/") if isinstance(mid, str) else []
    if len(parts) < 2 or not all(NAME.fullmatch(p) for p in parts) or REASON in parts:
        raise ValueError(f"not a metric id: {mid!r}")
    family, rest = parts[0], parts[1:]
    if family == CLEAN and len(rest) == 1:
        return MetricId(CLEAN, rest[0])
    if family == ROBUST and len(rest) == 2 and is_threat(rest[0]):
        return MetricId(ROBUST, rest[1], threat=rest[0])
    if family == ROBUST and len(rest) == 2 and rest[0] in NORMS and rest[1] in NORM_COLUMNS:
        return MetricId(ROBUST, rest[1], variant=rest[0])  # a per-norm column: no threat
    if family == CORRUPT and len(rest) >= 2 and is_shift(rest[0]):
        drop = rest[-1] == DROP
        body = rest[1:-1] if drop else rest[1:]
        if len(body) == 1 or (len(body) == 3 and body[0] == XAI):
            out = MetricId(CORRUPT, body[-1], method=body[1] if len(body) == 3 else None,
                           variant=DROP if drop else None, shift=rest[0])
            try:
                same = str(out) == mid  # the builder's checks (no drop of the clean endpoint, ...)
            except ValueError:
                same = False
            if same:
                return out
        raise ValueError(f"not a metric id: {mid!r}")
    if family == XAI:
        if len(rest) == 1 and not rest[0].startswith("adv-"):
            return MetricId(XAI, rest[0])
        if rest[0].startswith("adv-"):
            if len(rest) == 2 and is_threat(rest[0][4:]):
                return MetricId(XAI, rest[1], threat=rest[0][4:])
        elif len(rest) == 2:
            return MetricId(XAI, rest[1], method=rest[0])
        else:
            variant = "/".join(rest[2:])
            attack = _ATTACK_VARIANT.fullmatch(variant)
            if attack or len(rest) == 3:
                return MetricId(XAI, rest[1], threat=attack.group(2) if attack else None, method=rest[0],
                                variant=variant)
    raise ValueError(f"not a metric id: {mid!r}")


def try_parse(mid: str) -> MetricId | None:
    """``parse``, or None for a string that is not a metric id."""
    try:
        return parse(mid)
    except ValueError:
        return None
