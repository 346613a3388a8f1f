"""BPDA (Athalye, Carlini and Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018): the
model's forward pass unchanged, with the operations whose gradient is zero or useless almost everywhere
(rounding, sign, a saturating tanh or sigmoid, clamping) replaced by the identity on the backward pass.

fxbench cannot rewrite a submission's code, so the replacement is made where the operations are called: a
torch function mode (`torch.overrides.TorchFunctionMode`) sees every torch call inside the model's forward and
wraps the results of the calls in `STRAIGHT_THROUGH` in a straight-through function (forward: the exact value;
backward: the gradient passed on unchanged). A model that detaches its output, answers with a constant, or masks
through operations not listed here keeps its zero gradient: the `vanishing-gradients` flag covers those.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

# Elementwise operations whose derivative is 0 (or nearly 0 on most inputs): replaced by the identity backward.
STRAIGHT_THROUGH = frozenset({
    torch.round, torch.Tensor.round, torch.floor, torch.Tensor.floor, torch.ceil, torch.Tensor.ceil,
    torch.trunc, torch.Tensor.trunc, torch.fix, torch.Tensor.fix, torch.frac, torch.Tensor.frac,
    torch.sign, torch.Tensor.sign, torch.sgn, torch.Tensor.sgn, torch.signbit,
    torch.tanh, torch.Tensor.tanh, F.tanh, torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid,
    F.hardtanh, F.hardsigmoid, torch.clamp, torch.Tensor.clamp, torch.clip, torch.Tensor.clip,
    torch.Tensor.clamp_min, torch.Tensor.clamp_max, torch.clamp_min, torch.clamp_max,
})


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, value):  # noqa: ARG004
        return value.clone()

    @staticmethod
    def backward(ctx, g):
        return g, None


class _Mode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.replaced = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in STRAIGHT_THROUGH and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            x = args[0]
            if (isinstance(out, torch.Tensor) and out.shape == x.shape and out.is_floating_point()
                    and x.is_floating_point()):
                self.replaced += 1
                return _StraightThrough.apply(x, out.detach())
        return out


class BPDA(nn.Module):
    """``model`` with the straight-through backward; ``replaced`` counts the operations replaced so far."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.replaced = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.model(x)
        mode = _Mode()
        with mode:
            z = self.model(x)
        self.replaced += mode.replaced
        return z
