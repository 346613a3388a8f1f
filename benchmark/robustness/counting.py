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
    per ``phase`` (set by the caller to the running attack's name).

    ``audit`` (v3): keep the first image and its logits of the first batch of every size (and gradient mode)
    the model is called with, so that ``batch_audit`` can evaluate it alone afterwards: the attacks call the
    model at whatever size the points still robust make, and a model may answer differently at exactly those."""

    def __init__(self, model: nn.Module, *, audit: bool = False) -> None:
        super().__init__()
        self.model = model
        self.phase = "other"
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: {"fwd": 0, "fwd_grad": 0, "bwd": 0})
        self.audit = audit
        self.seen_batches: dict[tuple[int, bool], tuple[str, torch.Tensor, torch.Tensor]] = {}
        self.calls: dict[str, int] = defaultdict(int)  # model calls (batches) per phase, whatever their size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        c = self.counts[self.phase]
        c["fwd"] += n
        self.calls[self.phase] += 1
        grad = torch.is_grad_enabled() and x.requires_grad
        first = x[:1].detach().clone() if self.audit and n > 1 and (n, grad) not in self.seen_batches else None
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
        if first is not None:
            self.seen_batches[(n, grad)] = (self.phase, first, z[:1].detach().clone())
        return z

    def batch_audit(self, *, rtol: float, scale: float) -> int:
        """Each kept image alone, in the gradient mode it was seen in, against its logits in its batch
        (decision.logits_differ: tolerances on the margin). Refuses a batch-dependent model; returns the
        number of batch sizes audited (one forward pass of one image each, phase "check-batch-audit")."""
        pending, self.seen_batches = self.seen_batches, {}
        audit, phase, self.audit, self.phase = self.audit, self.phase, False, "check-batch-audit"
        try:
            for (n, grad), (seen_in, x0, z0) in sorted(pending.items()):
                with torch.enable_grad() if grad else torch.no_grad():
                    z1 = self(x0.clone().requires_grad_(grad)).detach()
                if bool(decision.logits_differ(z1, z0, rtol, scale)[0]):
                    raise ModelMisbehaviour(
                        f"an image's logits depend on the rest of its batch: {z0[0].tolist()} in a batch of {n} "
                        f"(during {seen_in}), {z1[0].tolist()} alone. The attacks evaluate the model at whatever "
                        "batch size the points still robust make, so they would attack another function than the "
                        "one the clean battery scores"
                    )
        finally:
            self.audit, self.phase = audit, phase
        return len(pending)

    def totals(self) -> dict[str, dict[str, int]]:
        return {k: dict(v) for k, v in sorted(self.counts.items())}


def _count_backward(g: torch.Tensor, c: dict[str, int], n: int, phase: str) -> None:
    c["bwd"] += n
    if not bool(torch.isfinite(g).all()):  # the attack's loss, not the model: our bug
        raise EvaluationBug(f"{phase}: the gradient of the attack's loss w.r.t. the logits is not finite")
