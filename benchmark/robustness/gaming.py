"""Checks an evaluator runs against an inflated robustness number (Carlini et al., "On Evaluating Adversarial
Robustness"): each finding is a Flag, and the flags listed in the version's `leaderboard.unranked_flags` keep
the result out of the ranking until an adaptive evaluation clears it.

- `gradient-mismatch`: the autograd gradient of the decision margin disagrees with central finite differences
  of the same margin along sign(gradient), on real images and on attacked points (a custom backward, a
  reversed gradient, a zero gradient where the function moves).
- `unbounded-attack-failed`: at an unbounded budget (eps = the whole box) the white-box attack could not break
  a point although an image of the other predicted class exists (so the point is breakable): the gradients do
  not lead anywhere.
- `transfer-attack-succeeded`: adversarial examples made on a surrogate model (a committed baseline, named in
  the spec) break points the white-box cascade could not.
Non-finite logits or gradients and outputs that change between identical evaluations are not flags but a
ModelMisbehaviour (counting.py, cascade.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import decision
from ..battery import Flag
from ..errors import ModelMisbehaviour
from .config import Budget, GamingChecks
from .counting import CountingModel


@dataclass
class GamingReport:
    flags: list[Flag] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _margin_and_grad(model: CountingModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        m = decision.margin(model(xg))
        (g,) = torch.autograd.grad(m.sum(), [xg])
    return m.detach(), g.detach()


def finite_differences(model: CountingModel, x: torch.Tensor, *, step: float, rtol: float,
                       seed: int) -> tuple[int, list[dict]]:
    """Compare the autograd directional derivative of the margin with the central difference
    (m(x + h v) - m(x - h v)) / 2h along v = sign(gradient), the direction an L-inf attack steps in (a random
    +-1 direction where the gradient is exactly zero). Along sign(g) the derivative is ||g||_1, large, so float32
    rounding and a ReLU net's kinks move the difference by a few per cent (measured on the baselines: <= 25% at
    h = 0.004, <= 13% at h = 0.001), while a reversed gradient gives the opposite sign. Points are moved inside
    [h, 1 - h] first so that both ends stay in the box. Returns (points checked, mismatches)."""
    if len(x) == 0:
        return 0, []
    x = x.clamp(step, 1 - step)
    m, grad = _margin_and_grad(model, x)
    g = torch.Generator().manual_seed(seed)
    rand = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).to(x)
    zero = (grad.flatten(1) == 0).all(dim=1).view(-1, *([1] * (x.ndim - 1)))
    v = torch.where(zero, rand, torch.sign(grad))
    auto = (grad * v).flatten(1).sum(dim=1)
    with torch.no_grad():
        zp, zm = model(x + step * v), model(x - step * v)
    fd = (decision.margin(zp) - decision.margin(zm)) / (2 * step)
    scale = torch.maximum(zp.abs().amax(dim=1), zm.abs().amax(dim=1)).clamp(min=1.0)
    atol = 1e-5 * scale / step  # float32 rounding of the logits, magnified by 1/2h
    bad = (auto - fd).abs() > rtol * torch.maximum(auto.abs(), fd.abs()) + atol
    return len(x), [{"autograd": float(auto[j]), "finite_difference": float(fd[j])} for j in bad.nonzero().flatten()]


def _require_deterministic(model: CountingModel, x: torch.Tensor, ids: list[str]) -> None:
    """Attacked points evaluated twice must give the same logits (a model random only on attacked inputs)."""
    with torch.no_grad():
        a, b = model(x), model(x)
    tol = 1e-5 * torch.maximum(a.abs(), b.abs()).amax(dim=1).clamp(min=1.0)
    diff = (a - b).abs().amax(dim=1)
    if bool((diff > tol).any()):
        j = int((diff > tol).nonzero()[0])
        raise ModelMisbehaviour(
            f"the model gave different logits for the same attacked input (image {ids[j]}): {a[j].tolist()} "
            f"then {b[j].tolist()}. Its output on attacked inputs is random; fxbench cannot give such a model a "
            "robustness number"
        )


def run_checks(model: CountingModel, x: torch.Tensor, y: torch.Tensor, outcome, *, checks: GamingChecks,
               registry, attack_options: dict[str, dict], largest_linf: Budget | None, headline: Budget,
               surrogate: torch.nn.Module | None, seed: int, device: torch.device,
               log) -> GamingReport:
    from .cascade import attack_seed, predict, run_attack

    rep = GamingReport()
    x, y = x.to(device), y.to(device)
    correct = outcome.clean_correct.nonzero().flatten().tolist()

    # 1. autograd vs finite differences, on real images and on the attacked points of the headline budget.
    model.phase = "check-gradients"
    real = correct[: checks.fd_points]
    head = outcome.norms[headline.norm]
    attacked = {**outcome.final.get(headline.id, {}), **{i: a for i, a in head.adv.items()}}
    att_ids = sorted(attacked)[: checks.fd_points]
    pts = [x[real]] + ([torch.stack([attacked[i] for i in att_ids]).to(device)] if att_ids else [])
    if att_ids:
        _require_deterministic(model, pts[1], [outcome.ids[i] for i in att_ids])
    n_checked, mismatches = 0, []
    for k, batch in enumerate(pts):
        n, bad = finite_differences(model, batch, step=checks.fd_step, rtol=checks.fd_rtol,
                                    seed=attack_seed(seed, "fd", k))
        n_checked += n
        mismatches += bad
    rep.info["finite_differences"] = {"checked": n_checked, "mismatched": len(mismatches),
                                      "examples": mismatches[:3]}
    if n_checked and len(mismatches) > checks.fd_max_share * n_checked:
        rep.flags.append(Flag("gradient-mismatch", (
            f"The autograd gradient of the margin disagrees with finite differences at {len(mismatches)} of "
            f"{n_checked} points (e.g. directional derivative {mismatches[0]['autograd']:.4g} by autograd, "
            f"{mismatches[0]['finite_difference']:.4g} measured): the backward pass does not describe the "
            "model, so gradient attacks are misled.")))

    # 2. an unbounded attack: robust accuracy must go to ~0 when every image is reachable.
    if largest_linf is not None and checks.unbounded_points:
        out = outcome.norms["linf"]
        robust = [i for i in correct if out.first[i] < 0][: checks.unbounded_points]
        preds = set(decision.predict(outcome.clean_logits).tolist())
        survived = []
        if robust:
            model.phase = "check-unbounded"
            entry = registry.get(checks.unbounded_attack)
            attack = entry.build(model, norm="Linf", eps=checks.unbounded_eps, device=device, logger=log,
                                 seed=attack_seed(seed, "unbounded"), **attack_options[checks.unbounded_attack])
            adv = run_attack(attack, x[robust].clone(), y[robust].clone()).adv
            still = (predict(model, adv.detach(), len(robust)) == y[robust]).cpu()
            # Breakable for sure: some image in [0, 1] is predicted as the other class (eps = 1 reaches it).
            survived = [robust[j] for j in still.nonzero().flatten().tolist() if 1 - int(y[robust[j]]) in preds]
        rep.info["unbounded"] = {"eps": checks.unbounded_eps, "attacked": len(robust), "survived": len(survived)}
        if survived:
            rep.flags.append(Flag("unbounded-attack-failed", (
                f"With an unbounded budget (L-inf eps = {checks.unbounded_eps:g}, every image reachable) "
                f"{checks.unbounded_attack} could not break {len(survived)} of {len(robust)} points although "
                "the model predicts the other class elsewhere: robust accuracy must go to 0 as eps grows, so "
                "the gradients are masked.")))

    # 3. transfer from a surrogate: points robust at the headline under the white-box cascade.
    if surrogate is not None and checks.transfer_points:
        out = outcome.norms[headline.norm]
        k = out.budgets.index(headline)
        robust = [i for i in correct if not 0 <= out.first[i] <= k][: checks.transfer_points]
        broke = 0
        if robust:
            sur = CountingModel(surrogate)
            sur.phase = "check-transfer-surrogate"
            entry = registry.get(checks.transfer_attack)
            attack = entry.build(sur, norm=headline.aa_norm, eps=headline.eps, device=device, logger=log,
                                 seed=attack_seed(seed, "transfer"), **attack_options[checks.transfer_attack])
            adv = run_attack(attack, x[robust].clone(), y[robust].clone()).adv
            model.phase = "check-transfer"
            broke = int((predict(model, adv.detach(), len(robust)) != y[robust]).sum())
            for phase, c in sur.totals().items():
                rep.info.setdefault("surrogate_passes", {})[phase] = c
        rep.info["transfer"] = {"attacked": len(robust), "broken": broke}
        if broke:
            rep.flags.append(Flag("transfer-attack-succeeded", (
                f"Adversarial examples made on the surrogate model broke {broke} of {len(robust)} points that the "
                f"white-box cascade could not break at {headline.id}: white-box gradients are weaker than a "
                "different model's, a sign of gradient masking.")))
    return rep
