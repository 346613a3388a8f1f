"""The module the attacks see: the canonical model plus pass counters (for the GPU floor).

It also keeps the logits attached to the input's graph when the model ignores its input (a constant model):
otherwise APGD's torch.autograd.grad fails instead of finding a zero gradient.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn


class CountingModel(nn.Module):
    """Counts images through forward passes, forward passes with a graph to the input, and backward passes,
    per ``phase`` (set by the caller to the running attack's name)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.phase = "other"
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: {"fwd": 0, "fwd_grad": 0, "bwd": 0})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A copy: Square writes into the logits it gets, which must not reach the model's own tensors.
        z = self.model(x).clone()
        n = int(x.shape[0])
        c = self.counts[self.phase]
        c["fwd"] += n
        if torch.is_grad_enabled() and x.requires_grad:
            c["fwd_grad"] += n
            if not z.requires_grad:
                z = z + 0.0 * x.reshape(n, -1).sum(dim=1, keepdim=True)
            z.register_hook(lambda g, c=c, n=n: c.__setitem__("bwd", c["bwd"] + n))
        return z

    def totals(self) -> dict[str, dict[str, int]]:
        return {k: dict(v) for k, v in sorted(self.counts.items())}
