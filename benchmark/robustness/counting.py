"""The module the attacks see: the canonical model plus pass counters and the submission's guards.

Every forward pass the attacks make goes through here, so this is where non-finite logits and non-finite input
gradients are caught (a ModelMisbehaviour: the submission's fault). It also keeps the logits attached to the
input's graph when the model ignores its input (a constant model): otherwise APGD's torch.autograd.grad fails
instead of finding a zero gradient.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from .. import decision
from ..errors import EvaluationBug, ModelMisbehaviour


class _GuardInputGradient(torch.autograd.Function):
    """Identity whose backward refuses a non-finite gradient reaching the input (the model's backward made it:
    the gradient arriving at the logits is checked separately)."""

    @staticmethod
    def forward(ctx, x, phase):  # noqa: ARG004
        ctx.phase = phase
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        if not bool(torch.isfinite(g).all()):
            n = int((~torch.isfinite(g.reshape(g.shape[0], -1))).any(dim=1).sum())
            raise ModelMisbehaviour(
                f"the model's input gradient is NaN or infinite for {n} of {g.shape[0]} images (during "
                f"{ctx.phase}) although its logits are finite: a gradient an attack cannot use (NaN gradients "
                "freeze APGD, sign(NaN) = 0), so the robustness number would be inflated"
            )
        return g, None


class CountingModel(nn.Module):
    """Counts images through forward passes, forward passes with a graph to the input, and backward passes,
    per ``phase`` (set by the caller to the running attack's name)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.phase = "other"
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: {"fwd": 0, "fwd_grad": 0, "bwd": 0})
        self.calls: dict[str, int] = defaultdict(int)  # model calls (batches) per phase, whatever their size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        c = self.counts[self.phase]
        c["fwd"] += n
        self.calls[self.phase] += 1
        grad = torch.is_grad_enabled() and x.requires_grad
        if grad:
            x = _GuardInputGradient.apply(x, self.phase)
        # A copy: Square writes into the logits it gets, which must not reach the model's own tensors.
        z = self.model(x).clone()
        decision.require_finite(z.detach(), where=f"on inputs of the robustness battery ({self.phase})")
        if grad:
            c["fwd_grad"] += n
            if not z.requires_grad:
                z = z + 0.0 * x.reshape(n, -1).sum(dim=1, keepdim=True)
            z.register_hook(lambda g, c=c, n=n, phase=self.phase: _count_backward(g, c, n, phase))
        return z

    def totals(self) -> dict[str, dict[str, int]]:
        return {k: dict(v) for k, v in sorted(self.counts.items())}


def _count_backward(g: torch.Tensor, c: dict[str, int], n: int, phase: str) -> None:
    c["bwd"] += n
    if not bool(torch.isfinite(g).all()):  # the attack's loss, not the model: our bug
        raise EvaluationBug(f"{phase}: the gradient of the attack's loss w.r.t. the logits is not finite")
