"""Training-time attacks in canonical pixel space: the perturbation is added to [0, 1] pixels before the
model's normalisation, so eps = 4/255 here is the benchmark's 4/255.

Attacks take the gradient with respect to the input only (torch.autograd.grad), so they never leave
gradients on the parameters. The evaluation battery uses pyautoattack; these are the standard training
inner loops (Madry et al. PGD, Wong et al. FGSM with random start, Zhang et al. TRADES).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _project(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip delta to the eps ball, then so that x + delta stays a valid image in [0, 1]."""
    delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(0, 1) - x


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    loss: Loss | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """L-inf PGD maximising ``loss(model(x_adv), y)`` (default: summed cross-entropy); returns x_adv.

    steps=1, alpha=1.25 eps, random_start=True is FGSM with random start (Wong et al. 2020). ``start`` is an
    initial perturbation (overrides random_start)."""
    loss = loss or (lambda z, t: F.cross_entropy(z.float(), t, reduction="sum"))
    x = x.detach()
    if start is not None:
        delta = _project(x, start, eps)
    elif random_start:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = _project(x, (2 * u - 1) * eps, eps)
    else:
        delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(model(x + delta), y), delta)
        delta = _project(x, delta.detach() + alpha * grad.sign(), eps)
    return (x + delta).detach()


def trades_adversary(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """TRADES inner maximisation: the point in the eps ball whose prediction is furthest (KL) from x's."""
    with torch.no_grad():
        p_clean = F.softmax(model(x).float(), dim=1)

    def kl(z: torch.Tensor, _: torch.Tensor | None) -> torch.Tensor:
        return F.kl_div(F.log_softmax(z.float(), dim=1), p_clean, reduction="sum")

    # TRADES starts from a small Gaussian step: at x itself the KL gradient is exactly zero.
    noise = 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return pgd_linf(model, x, None, eps=eps, alpha=alpha, steps=steps, loss=kl, start=noise)
