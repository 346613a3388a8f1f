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
