"""The attacks of fxbench-AA, by name: pyautoattack's APGD, FAB and Square, configured from the spec.

Each registry entry builds one attack object with ``perturb(x, y) -> x_adv`` for a given norm, eps and seed.
The only new code is the loss of ``apgd-margin``: AutoAttack's DLR loss divides by z_pi1 - z_pi3, which needs
a third logit, so for two classes we keep DLR's numerator, the logit margin (see docs/robustness.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyautoattack.autopgd_base import APGDAttack
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack

from .. import decision
from ..registry import Registry


@dataclass(frozen=True)
class AttackEntry:
    """``options``: the spec keys this attack needs, exactly (unknown or missing keys are refused)."""

    build: Callable[..., Any]  # build(model, *, norm, eps, seed, device, logger, **options)
    options: tuple[str, ...]
    white_box: bool = True


ATTACKS: Registry[AttackEntry] = Registry("attack")


class APGDMargin(APGDAttack):
    """APGD on the negative logit margin -(z_y - max_{k != y} z_k).

    Runs through APGD's 'dlr' code path (so AutoAttack's zero-gradient check still runs) with the DLR loss
    replaced: for two classes DLR's denominator z_pi1 - z_pi3 does not exist.
    """

    def __init__(self, predict, **kwargs):
        super().__init__(predict, loss="dlr", **kwargs)

    def dlr_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[0], device=x.device)
        z_y = x[rows, y]
        others = x.clone()
        others[rows, y] = -float("inf")
        return -(z_y - others.max(dim=1).values)


class FABBinary(FABAttack_PT):
    """FAB for two classes: the difference of logits and its gradient come from ONE backward pass of
    z_other - z_y, not a Jacobian of both logits (two backward passes, one of them through the constant
    logit of a single-logit model). Same quantities: grad(z_other) - grad(z_y) = grad(z_other - z_y)."""

    def get_diff_logits_grads_batch(self, imgs, la):
        im = imgs.clone().requires_grad_()
        rows = torch.arange(imgs.shape[0], device=imgs.device)
        with torch.enable_grad():
            z = self.predict(im)
            if z.shape[-1] != 2:
                return super().get_diff_logits_grads_batch(imgs, la)
            diff = z[rows, 1 - la] - z[rows, la]
            (g,) = torch.autograd.grad(diff.sum(), [im])
        z = z.detach()
        df = z - z[rows, la].unsqueeze(1)
        df[rows, la] = 1e10
        dg = torch.zeros((imgs.shape[0], 2, *imgs.shape[1:]), device=imgs.device, dtype=g.dtype)
        dg[rows, 1 - la] = g.detach()
        return df, dg


class SquareDecisionRule(SquareAttack):
    """Square with fxbench's decision rule (v3, `checks.tie_rule`). pyautoattack's Square counts a point as
    fooled once its margin z_y - z_other is <= 0 and stops attacking it; fxbench calls a fracture on a tie, so a
    fractured image whose two logits are equal is still classified correctly. The margin Square sees is moved
    off zero for those points only (to the smallest positive float32), so ties are attacked until broken;
    every other margin, and so every other step of the attack, is unchanged."""

    def margin_and_loss(self, x, y):
        margin, loss = super().margin_and_loss(x, y)
        if self.targeted:
            return margin, loss
        tie = (y == decision.FRACTURE) & (margin == 0)
        tiny = torch.finfo(margin.dtype).tiny
        margin = torch.where(tie, torch.full_like(margin, tiny), margin)
        if self.loss == "margin":
            loss = torch.where(tie, torch.full_like(loss, tiny), loss)
        return margin, loss


def follow_decision_rule(attack):
    """The attack object deciding success by fxbench.decision (Square: SquareDecisionRule, same state and seed);
    APGD (apgd.py) and FAB (the cascade's own forward pass) already do."""
    if type(attack) is SquareAttack:
        fixed = SquareDecisionRule.__new__(SquareDecisionRule)
        fixed.__dict__.update(attack.__dict__)
        return fixed
    return attack


def _apgd(cls, loss: str | None):
    def build(model, *, norm, eps, seed, device, logger, n_iter, n_restarts, rho, eot_iter):
        kwargs = dict(n_iter=int(n_iter), norm=norm, n_restarts=int(n_restarts), eps=float(eps),
                      seed=int(seed), eot_iter=int(eot_iter), rho=float(rho), verbose=False,
                      device=device, logger=logger)
        if loss is not None:
            kwargs["loss"] = loss
        return cls(model, **kwargs)

    return build


def _fab(model, *, norm, eps, seed, device, logger, n_iter, n_restarts, alpha_max, eta, beta,
         n_target_classes):
    del logger  # FAB has no checks that log
    return FABBinary(model, norm=norm, n_restarts=int(n_restarts), n_iter=int(n_iter), eps=float(eps),
                        alpha_max=float(alpha_max), eta=float(eta), beta=float(beta), verbose=False,
                        seed=int(seed), targeted=False, device=device,
                        n_target_classes=int(n_target_classes))


def _square(model, *, norm, eps, seed, device, logger, n_queries, n_restarts, p_init, loss,
            resc_schedule):
    del logger
    return SquareAttack(model, norm=norm, n_queries=int(n_queries), eps=float(eps), p_init=float(p_init),
                        n_restarts=int(n_restarts), seed=int(seed), verbose=False, targeted=False,
                        loss=str(loss), resc_schedule=bool(resc_schedule), device=device)


_APGD_OPTIONS = ("n_iter", "n_restarts", "rho", "eot_iter")
ATTACKS.register("apgd-ce", AttackEntry(_apgd(APGDAttack, "ce"), _APGD_OPTIONS))
ATTACKS.register("apgd-margin", AttackEntry(_apgd(APGDMargin, None), _APGD_OPTIONS))
ATTACKS.register("fab", AttackEntry(_fab, ("n_iter", "n_restarts", "alpha_max", "eta", "beta",
                                           "n_target_classes")))
ATTACKS.register("square", AttackEntry(_square, ("n_queries", "n_restarts", "p_init", "loss",
                                                 "resc_schedule"), white_box=False))
