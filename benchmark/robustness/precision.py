"""Reduced-precision search, float32 verdict (fxbench-AA v3, spec key ``search_dtype``).

On an accelerator an attack's forward and backward passes may run under bfloat16 autocast (``SearchModel``):
the attack only *searches* there. Two rules keep the number a float32 number:

- In the search a point counts as broken only when its correct-class margin is below ``-rtol * max(1, |z|)``
  (``search_broken``; the spec's ``search_margin_rtol``, several times the largest bf16-vs-fp32 margin error
  measured on the baselines), so an attack does not stop on a point that only bfloat16 rounding calls broken.
- Every verdict is a float32 forward pass of fxbench's own (the cascade's ``verdict`` phase): an attacked point
  is adversarial only if the float32 model misclassifies it by fxbench's rule, and a point the search left
  unbroken is still checked in float32 at its best point (so a search too cautious near the boundary loses
  nothing it found).

FAB is never run reduced: its minimal-norm points lie on the decision boundary by construction, where a
bfloat16 verdict inside the attack would keep points that float32 does not call adversarial.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from .. import decision

DTYPES = {"bfloat16": torch.bfloat16}


class SearchModel(nn.Module):
    """The attacks' view of the (counting) model under autocast: logits come back as float32 tensors."""

    def __init__(self, model: nn.Module, dtype: str) -> None:
        super().__init__()
        self.model = model
        self.dtype = DTYPES[dtype]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            z = self.model(x)
        return z.float()


def search_broken(z: torch.Tensor, y: torch.Tensor, rtol: float) -> torch.Tensor:
    """Broken for the search: fxbench's rule at full precision (rtol 0), else a margin beyond the rounding."""
    if rtol <= 0:
        return decision.predict(z) != y
    decision.require_finite(z, where="during a reduced-precision attack search")
    scale = z.float().abs().amax(dim=1).clamp(min=1.0)
    return decision.correct_margin(z, y) < -rtol * scale


def cautious_square(attack, rtol: float) -> None:
    """Make a pyautoattack SquareAttack (margin loss) stop querying a point only once its margin is below the
    search tolerance: the margin it tests is shifted by ``rtol * max(1, |z|)``; its loss, which it minimises,
    is unchanged."""
    if rtol <= 0:
        return

    def margin_and_loss(self, x, y):
        logits = self.predict(x)
        rows = torch.arange(x.shape[0], device=logits.device)
        z_y = logits[rows, y].clone()
        others = logits.clone()
        others[rows, y] = -float("inf")
        margin = z_y - others.max(dim=-1)[0]
        loss = margin if self.loss == "margin" else -torch.nn.functional.cross_entropy(logits, y, reduction="none")
        return margin + rtol * logits.abs().amax(dim=1).clamp(min=1.0), loss

    if attack.targeted:
        raise ValueError("cautious_square: the cascade runs Square untargeted only")
    attack.margin_and_loss = types.MethodType(margin_and_loss, attack)
