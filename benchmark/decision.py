"""The one decision rule of fxbench: every battery (and `validate`) calls a fracture through here.

A fracture is called when the fracture logit is at least the other logit (p(fracture) >= 0.5): a tie is a
fracture. Clinically a missed fracture is the costlier error, so a model that cannot decide is read as
flagging the image for review. v1 had two rules (the clean battery's p >= 0.5, the robustness battery's
argmax, where a tie is "no fracture"), so a single-logit relu(z) model scored 0.50 clean and 0.958 robust.
Logits that are not finite are refused here: argmax([nan, nan]) = 0 would silently read as "no fracture".
"""

from __future__ import annotations

import torch

from .errors import ModelMisbehaviour

THRESHOLD = 0.5  # p(fracture) at which a fracture is called; the clean spec's `threshold` must equal it
FRACTURE = 1


def margin(logits: torch.Tensor) -> torch.Tensor:
    """z_fracture - z_other per image (N x 2 canonical logits): a fracture is called iff margin >= 0."""
    return logits[:, FRACTURE] - logits[:, 1 - FRACTURE]


def require_finite(logits: torch.Tensor, *, where: str) -> None:
    """Raise ModelMisbehaviour (a submission error) when any logit is NaN or infinite."""
    bad = ~torch.isfinite(logits)
    if bool(bad.any()):
        rows = int(bad.any(dim=1).sum()) if logits.ndim == 2 else int(bad.sum())
        raise ModelMisbehaviour(
            f"the model returned NaN or infinite logits for {rows} of {logits.shape[0]} images {where}; "
            "an evaluable classifier gives finite logits for every input in [0, 1]"
        )


def predict(logits: torch.Tensor, *, where: str = "") -> torch.Tensor:
    """Predicted class (int64, 1 = fracture) of N x 2 canonical logits; refuses non-finite logits."""
    require_finite(logits, where=where)
    return (margin(logits.float()) >= 0).long()


def correct_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How far each image is on the correct side of the rule: > 0 or (label 1 and == 0) means correct."""
    m = margin(logits.float())
    return torch.where(y == FRACTURE, m, -m)


# ---- tolerances on the decision margin (v3) ----------------------------------------------------------------
# A constant added to both logits changes no decision, so no tolerance may grow with it: v2 allowed differences
# of rtol x max |logit|, and adding 1000 to both logits made every consistency check 1000x looser. From v3 every
# tolerance is measured on the margin z_fracture - z_other, and logits whose common offset leaves float32 unable
# to resolve the margin are refused (`require_resolvable`).

F32_SPACING = 2.0**-23  # float32's relative spacing: a logit of size L is rounded to within L * 2**-24
ROUNDING_ULPS = 4  # F32_SPACING x L is 1-2 ulps of a logit L; the margin of two rounded logits is off by <= 1


def margin_scale(logits: torch.Tensor) -> float:
    """The model's typical margin on a batch of (clean) images: the median |z_fracture - z_other|. Tolerances are
    relative to max(|margin|, this), so they scale with the model's logits (x 1e4 or x 1e-4 alike) and do not
    shrink to nothing at a point on the decision boundary."""
    if len(logits) == 0:
        return 0.0
    return float(margin(logits.double()).abs().median())


def rounding(logits: torch.Tensor) -> torch.Tensor:
    """Per image, what float32 rounding alone can move the margin by: ROUNDING_ULPS spacings at the largest
    |logit| (a common offset of 1e6 makes this 2: no margin below that means anything)."""
    return ROUNDING_ULPS * F32_SPACING * logits.double().abs().amax(dim=1)


def margin_tolerance(logits: torch.Tensor, rtol: float, scale: float) -> torch.Tensor:
    """Per image, the largest difference of margins that counts as the same answer: rtol x max(|margin|, scale)
    plus float32 rounding at the logits' size (float64, N)."""
    m = margin(logits.double()).abs()
    return rtol * torch.clamp(m, min=scale) + rounding(logits)


def margin_differs(a: torch.Tensor, b: torch.Tensor, rtol: float, scale: float) -> torch.Tensor:
    """Per image: do two evaluations of the same input (N x 2 logits each) give margins further apart than
    ``margin_tolerance`` of the larger one allows? (Whether the same decision is being scored.)"""
    tol = torch.maximum(margin_tolerance(a, rtol, scale), margin_tolerance(b, rtol, scale))
    return (margin(a.double()) - margin(b.double())).abs() > tol


def logits_differ(a: torch.Tensor, b: torch.Tensor, rtol: float, scale: float) -> torch.Tensor:
    """Per image: does either logit differ by more than ``margin_tolerance`` allows? Stricter than
    ``margin_differs`` (the explanation battery reads the fracture logit itself, so a model may not shift both
    logits in some batches either), and as little loosened by a common offset: the allowance is the margin's."""
    tol = torch.maximum(margin_tolerance(a, rtol, scale), margin_tolerance(b, rtol, scale))
    return ((a.double() - b.double()).abs() > tol[:, None]).any(dim=1)


def require_resolvable(logits: torch.Tensor, *, resolution: float, where: str) -> float:
    """Refuse logits whose common offset is so large that float32 cannot resolve the margin: the float32
    spacing at the largest |logit| (median over the images) must stay below ``resolution`` x the typical
    margin. Returns the margin scale."""
    scale = margin_scale(logits)
    if len(logits) == 0:
        return scale
    spacing = float((F32_SPACING * logits.double().abs().amax(dim=1)).median())
    if spacing > resolution * scale:
        big = float(logits.double().abs().max())
        raise ModelMisbehaviour(
            f"the model's logits {where} carry a common offset far above their difference (largest |logit| "
            f"{big:.3g}, typical |z_fracture - z_other| {scale:.3g}): float32 resolves the margin there only "
            f"to {spacing:.3g}, so no consistency check can tell noise from a decision. The decision depends on "
            "z_fracture - z_other only; subtract the common offset (e.g. return [0, z_fracture - z_other])"
        )
    return scale
