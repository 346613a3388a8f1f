"""APGD that stops attacking a point as soon as it is broken.

pyautoattack's ``APGDAttack.attack_single_run`` runs all ``n_iter`` steps on every point of the batch, so a
point broken at step 1 still costs n_iter forward and backward passes (98% of the passes on a normally trained
model). Every quantity APGD keeps is per point (iterate, momentum, step size, best loss, the oscillation
test's loss history), and after the random start it draws no random numbers; only the step-size schedule
(the checkpoints k) is shared and depends on the step count alone. So dropping a broken point from the batch
leaves the trajectory of every other point unchanged: a point that stays robust gets exactly the iterates,
highest-loss point and loss of the library's run when the model's output for an image does not depend on the
batch's size (the test runs both one image per call and compares bit for bit). With kernels that do, late
steps gain ~1 ulp of loss, `loss > best` becomes a float tie, and the kept best point can differ by a whole
step between the two runs; the robust set and the loss then agree within float32 rounding (also tested). A broken point returns its first adversarial iterate (the library keeps
overwriting it with later ones), decided by fxbench's rule (fxbench.decision) instead of argmax; in a
reduced-precision search (v3, precision.py) by a margin beyond the rounding, the verdict then taken in float32.

Only the settings the specs use are supported (L-inf and L2, CE and the margin loss, any eot_iter); others go
to the library (``supports``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyautoattack.autopgd_base import APGDAttack
from pyautoattack.checks import check_zero_gradients

from .precision import search_broken


def supports(attack) -> bool:
    return (isinstance(attack, APGDAttack) and attack.norm in ("Linf", "L2") and attack.loss in ("ce", "dlr")
            and not attack.use_largereps and not getattr(attack, "is_tf_model", False))


def _loss(attack, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(z, y, reduction="none") if attack.loss == "ce" else attack.dlr_loss(z, y)


def _project(attack, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The box and the eps-ball around x (the library's projection, per norm)."""
    if attack.norm == "Linf":
        return torch.clamp(torch.min(torch.max(p, x - attack.eps), x + attack.eps), 0.0, 1.0)
    d = p - x
    n = (d**2).reshape(d.shape[0], -1).sum(-1).sqrt().reshape(-1, *([1] * (d.ndim - 1)))
    return torch.clamp(x + attack.normalize(d) * torch.min(attack.eps * torch.ones_like(x), n), 0.0, 1.0)


def _grad(attack, x_adv: torch.Tensor, y: torch.Tensor):
    grad = torch.zeros_like(x_adv)
    for _ in range(attack.eot_iter):
        xg = x_adv.clone().requires_grad_()
        with torch.enable_grad():
            z = attack.model(xg)
            loss = _loss(attack, z, y)
            grad += torch.autograd.grad(loss.sum(), [xg])[0].detach()
    return z.detach(), loss.detach(), grad / float(attack.eot_iter)


def attack_single_run(attack, x: torch.Tensor, y: torch.Tensor):
    """The library's (x_best, acc, loss_best, x_best_adv) for a batch, plus the step at which each point broke
    (0 = the random start, -1 = never); points leave the batch once broken."""
    n, dev = x.shape[0], x.device
    shape1 = [1] * (x.ndim - 1)
    if attack.norm == "Linf":
        t = 2 * torch.rand(x.shape).to(dev).detach() - 1
    else:
        t = torch.randn(x.shape).to(dev).detach()
    x_adv = (x + attack.eps * torch.ones_like(x).detach() * attack.normalize(t)).clamp(0.0, 1.0)
    x_best, x_best_adv = x_adv.clone(), x_adv.clone()
    z, loss, grad = _grad(attack, x_adv, y)
    if attack.loss == "dlr":
        check_zero_gradients(grad, logger=attack.logger)
    out_best, out_loss = x_best.clone(), loss.clone()
    acc = torch.ones(n, dtype=torch.bool, device=dev)
    broke_at = torch.full((n,), -1, dtype=torch.long)

    # Per-point state of the points still being attacked (rows follow `idx`).
    idx = torch.arange(n, device=dev)
    loss_best, grad_best = loss.clone(), grad.clone()
    step = 2.0 * attack.eps * torch.ones([n, *shape1], device=dev)
    x_old = x_adv.clone()
    loss_steps = torch.zeros([attack.n_iter, n], device=dev)
    last_best, reduced = loss_best.clone(), torch.ones_like(loss_best)
    k, counter3 = attack.n_iter_2, 0

    def drop(broken: torch.Tensor, it: int) -> torch.Tensor:
        nonlocal idx, x, y, x_adv, x_old, grad, grad_best, loss_best, x_best, step, loss_steps, last_best, reduced
        gone = idx[broken]
        acc[gone] = False
        broke_at[gone.cpu()] = it
        x_best_adv[gone] = x_adv[broken]
        out_best[gone], out_loss[gone] = x_best[broken], loss_best[broken]
        keep = ~broken
        idx, x, y, x_adv, x_old = idx[keep], x[keep], y[keep], x_adv[keep], x_old[keep]
        grad, grad_best, loss_best, x_best = grad[keep], grad_best[keep], loss_best[keep], x_best[keep]
        step, loss_steps, last_best, reduced = step[keep], loss_steps[:, keep], last_best[keep], reduced[keep]
        return keep

    rtol = float(getattr(attack, "fxb_search_rtol", 0.0))  # > 0 only in a reduced-precision search (precision.py)
    drop(search_broken(z, y, rtol), 0)
    for i in range(attack.n_iter):
        if len(idx) == 0:
            break
        with torch.no_grad():
            momentum = x_adv - x_old
            x_old = x_adv.clone()
            a = 0.75 if i > 0 else 1.0
            if attack.norm == "Linf":
                x1 = _project(attack, x, x_adv + step * torch.sign(grad))
                x1 = _project(attack, x, x_adv + (x1 - x_adv) * a + momentum * (1 - a))
            else:
                x1 = _project(attack, x, x_adv + step * attack.normalize(grad))
                x1 = _project(attack, x, x_adv + (x1 - x_adv) * a + momentum * (1 - a))
            x_adv = x1 + 0.0
        z, loss, grad = _grad(attack, x_adv, y)
        keep = drop(search_broken(z, y, rtol), i + 1)  # before the step-size update moves x_adv
        if len(idx) == 0:
            break
        loss = loss[keep]  # (drop has already cut grad, the state and the iterate)
        loss_steps[i] = loss
        better = loss > loss_best
        x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], loss[better]
        counter3 += 1
        if counter3 == k:
            osc = attack.check_oscillation(loss_steps, i, k, loss_best, k3=attack.thr_decr)
            osc = torch.max(osc, (1.0 - reduced) * (last_best >= loss_best).float())
            reduced, last_best = osc.clone(), loss_best.clone()
            hit = osc > 0
            step[hit] /= 2.0
            x_adv[hit], grad[hit] = x_best[hit].clone(), grad_best[hit].clone()
            k, counter3 = max(k - attack.size_decr, attack.n_iter_min), 0
    out_best[idx], out_loss[idx] = x_best, loss_best
    return out_best, acc, out_loss, x_best_adv, broke_at
