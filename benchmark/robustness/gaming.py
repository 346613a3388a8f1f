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

v3 (each switched on by a key of the spec's `checks`; docs/robustness.md, "Gaming checks (v3)"):
- `checks.margin`: every tolerance on the decision margin (fxbench.decision), and logits whose common offset
  leaves float32 unable to resolve the margin are refused; `checks.consistency`: the clean pass against the same
  images alone and against the clean battery (probes.consistency): a batch-dependent model is refused.
- `vanishing-gradients`: a model that predicts both classes has an exactly zero margin gradient at correctly
  classified points (clean or attacked): gradient attacks cannot evaluate it.
- `bpda-attack-succeeded`: where a gradient vanished, the attack re-run through BPDA (bpda.py) broke points the
  cascade could not.
- `unbounded-attack-failed` also when a point survives the sweep of `checks.unbounded.sweep` (attacked from the
  clean image, not from eps = 1 noise, through BPDA where a gradient vanished).
- `silent-success`, `incomplete-optimization`, `unstable-predictions`: Pintor et al.'s indicators (indicators.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import decision
from ..battery import Flag
from ..errors import ModelMisbehaviour
from .bpda import BPDA
from .checks import FlagCollector
from .config import Budget, GamingChecks, MarginChecks
from .counting import CountingModel
from .indicators import run_indicators
from .probes import consistency, pgd_from_clean


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


def finite_differences(model: CountingModel, x: torch.Tensor, *, step: float, rtol: float, seed: int,
                       margin: MarginChecks | None = None, scale: float = 0.0,
                       y: torch.Tensor | None = None) -> tuple[int, list[dict], int]:
    """Compare the autograd directional derivative of the margin with the central difference
    (m(x + h v) - m(x - h v)) / 2h along v = sign(gradient), the direction an L-inf attack steps in (a random
    +-1 direction where the gradient is exactly zero). Along sign(g) the derivative is ||g||_1, large, so float32
    rounding and a ReLU net's kinks move the difference by a few per cent (measured on the baselines: <= 25% at
    h = 0.004, <= 13% at h = 0.001), while a reversed gradient gives the opposite sign. Points are moved inside
    [h, 1 - h] first so that both ends stay in the box. v3 (``margin``): the rounding allowance is measured on
    the margin, not on the largest logit. Returns (points checked, mismatches, points classified correctly (by
    ``y``) whose gradient is exactly zero)."""
    if len(x) == 0:
        return 0, [], 0
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
    if margin is None:
        big = torch.maximum(zp.abs().amax(dim=1), zm.abs().amax(dim=1)).clamp(min=1.0)
        atol = 1e-5 * big / step  # float32 rounding of the logits, magnified by 1/2h
    else:  # the margin's rounding at both ends, magnified by 1/2h (a common offset cannot widen it)
        atol = (decision.margin_tolerance(zp, margin.fd_rtol, scale)
                + decision.margin_tolerance(zm, margin.fd_rtol, scale)).to(fd) / (2 * step)
    bad = (auto - fd).abs() > rtol * torch.maximum(auto.abs(), fd.abs()) + atol
    vanished = 0
    if y is not None:
        ok = torch.where(y == decision.FRACTURE, m >= 0, m < 0)
        vanished = int((zero.flatten() & ok).sum())
    mism = [{"autograd": float(auto[j]), "finite_difference": float(fd[j])} for j in bad.nonzero().flatten()]
    return len(x), mism, vanished


def _require_deterministic(model: CountingModel, x: torch.Tensor, ids: list[str],
                           margin: MarginChecks | None = None, scale: float = 0.0) -> None:
    """Attacked points evaluated twice must give the same logits (a model random only on attacked inputs); v3:
    the same margin."""
    with torch.no_grad():
        a, b = model(x), model(x)
    if margin is None:
        tol = 1e-5 * torch.maximum(a.abs(), b.abs()).amax(dim=1).clamp(min=1.0)
        differs = (a - b).abs().amax(dim=1) > tol
    else:
        differs = decision.logits_differ(a, b, margin.repeat_rtol, scale)
    if bool(differs.any()):
        j = int(differs.nonzero()[0])
        raise ModelMisbehaviour(
            f"the model gave different logits for the same attacked input (image {ids[j]}): {a[j].tolist()} "
            f"then {b[j].tolist()}. Its output on attacked inputs is random; fxbench cannot give such a model a "
            "robustness number"
        )


def run_checks(model: CountingModel, x: torch.Tensor, y: torch.Tensor, outcome, *, checks: GamingChecks,
               registry, attack_options: dict[str, dict], largest_linf: Budget | None, headline: Budget,
               surrogate: torch.nn.Module | None, seed: int, device: torch.device,
               log, reference: dict[str, float] | None = None) -> GamingReport:
    """``reference``: the clean battery's p(fracture) by image id (v3's consistency check; None: not run)."""
    from .cascade import attack_seed, predict, run_attack

    rep = GamingReport()
    x, y = x.to(device), y.to(device)
    correct = outcome.clean_correct.nonzero().flatten().tolist()
    margin, scale = checks.margin, 0.0
    if margin is not None:  # v3: refuse logits float32 cannot resolve; the scale every margin tolerance uses
        scale = decision.require_resolvable(outcome.clean_logits, resolution=margin.resolution,
                                            where="on clean evaluation images")
        if checks.consistency_points:
            audited = model.batch_audit(rtol=margin.batch_rtol, scale=scale)  # every batch size seen so far
            model.phase = "check-consistency"
            rep.info["consistency"] = consistency(model, x, outcome.ids, outcome.clean_logits,
                                                  points=checks.consistency_points, margin=margin, scale=scale,
                                                  reference=reference)
            rep.info["consistency"]["batch_sizes_audited"] = audited

    # 1. autograd vs finite differences, on real images and on the attacked points of the headline budget.
    model.phase = "check-gradients"
    real = correct[: checks.fd_points]
    head = outcome.norms[headline.norm]
    attacked = {**outcome.final.get(headline.id, {}), **{i: a for i, a in head.adv.items()}}
    att_ids = sorted(attacked)[: checks.fd_points]
    pts = [x[real]] + ([torch.stack([attacked[i] for i in att_ids]).to(device)] if att_ids else [])
    labels = [y[real]] + ([y[att_ids]] if att_ids else [])
    if att_ids:
        _require_deterministic(model, pts[1], [outcome.ids[i] for i in att_ids], margin, scale)
    n_checked, mismatches, vanished = 0, [], 0
    for k, batch in enumerate(pts):
        n, bad, zero = finite_differences(model, batch, step=checks.fd_step, rtol=checks.fd_rtol,
                                          seed=attack_seed(seed, "fd", k), margin=margin, scale=scale,
                                          y=labels[k] if checks.vanishing_gradients or checks.bpda_points else None)
        n_checked += n
        mismatches += bad
        vanished += zero
    rep.info["finite_differences"] = {"checked": n_checked, "mismatched": len(mismatches),
                                      "examples": mismatches[:3]}
    if n_checked and len(mismatches) > checks.fd_max_share * n_checked:
        rep.flags.append(Flag("gradient-mismatch", (
            f"The autograd gradient of the margin disagrees with finite differences at {len(mismatches)} of "
            f"{n_checked} points (e.g. directional derivative {mismatches[0]['autograd']:.4g} by autograd, "
            f"{mismatches[0]['finite_difference']:.4g} measured): the backward pass does not describe the "
            "model, so gradient attacks are misled.")))
    preds = set(decision.predict(outcome.clean_logits).tolist())
    if checks.vanishing_gradients:
        rep.info["vanishing_gradients"] = {"checked": n_checked, "zero_where_correct": vanished,
                                           "predicts_both_classes": len(preds) == 2}
        if vanished and len(preds) == 2:
            rep.flags.append(Flag("vanishing-gradients", (
                f"The margin's input gradient is exactly zero at {vanished} of {n_checked} correctly classified "
                "points (clean images and the attacks' points) of a model that predicts both classes: gradient "
                "attacks cannot move there, so robust accuracy is not measured but assumed. An adaptive "
                "evaluation (e.g. BPDA, a decision-based attack) must clear it.")))

    ctx = _Ctx(model, x, y, registry, attack_options, seed, device, run_attack, predict, attack_seed)
    robust_head = _robust_at(outcome, headline, correct)
    if checks.bpda_points and vanished:  # 2. where the gradient vanished: the attack again, through BPDA
        _bpda(ctx, rep, checks, robust_head[: checks.bpda_points], headline)

    # 3. an unbounded attack: robust accuracy must go to ~0 when every image is reachable.
    if largest_linf is not None and checks.unbounded_points:
        out = outcome.norms["linf"]
        robust = [i for i in correct if out.first[i] < 0][: checks.unbounded_points]
        survived, swept = [], None
        if robust and checks.unbounded_sweep:  # v3: from the clean image, budget by budget
            robust, swept = _sweep(ctx, checks, robust, bpda=bool(vanished)), list(robust)
            swept_left = [i for i in robust if 1 - int(y[i]) in preds]
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
        if swept is not None:
            rep.info["unbounded"].update(attacked=len(swept), survived_sweep=len(swept_left))
            if swept_left:
                rep.flags.append(Flag("unbounded-attack-failed", (
                    f"Attacked from the clean image at L-inf {', '.join(f'{e * 255:g}' for e in checks.unbounded_sweep)}"
                    f"/255{' through BPDA' if vanished else ''}, {len(swept_left)} of {len(swept)} points survived "
                    f"{checks.unbounded_sweep[-1] * 255:g}/255 ({checks.unbounded_sweep[-1]:.0%} of the grey range) "
                    "although the model "
                    f"predicts the other class elsewhere ({len(survived)} of them even at eps = "
                    f"{checks.unbounded_eps:g}): robust accuracy must fall towards 0 as eps grows, so the gradients "
                    "are masked near real images.")))
        if survived and swept is None:
            rep.flags.append(Flag("unbounded-attack-failed", (
                f"With an unbounded budget (L-inf eps = {checks.unbounded_eps:g}, every image reachable) "
                f"{checks.unbounded_attack} could not break {len(survived)} of {len(robust)} points although "
                "the model predicts the other class elsewhere: robust accuracy must go to 0 as eps grows, so "
                "the gradients are masked.")))

    if checks.indicators is not None:  # 4. Pintor et al.'s indicators on traced re-runs of one attack
        _indicators(ctx, rep, checks, robust_head[: checks.indicators.points], headline, outcome, scale)

    # 5. transfer from a surrogate: points robust at the headline under the white-box cascade.
    if surrogate is not None and checks.transfer_points:
        robust = robust_head[: checks.transfer_points]
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
    if margin is not None and checks.consistency_points:  # the batch sizes the checks themselves used
        rep.info["consistency"]["batch_sizes_audited"] += model.batch_audit(rtol=margin.batch_rtol, scale=scale)
    return rep


def _robust_at(outcome, budget: Budget, correct: list[int]) -> list[int]:
    """Correctly classified points the cascade did not break at ``budget`` (nor below it)."""
    out = outcome.norms[budget.norm]
    k = out.budgets.index(budget)
    return [i for i in correct if not 0 <= out.first[i] <= k]


@dataclass
class _Ctx:
    model: CountingModel
    x: torch.Tensor
    y: torch.Tensor
    registry: object
    attack_options: dict
    seed: int
    device: torch.device
    run_attack: object
    predict: object
    attack_seed: object

    def build(self, name: str, model, *, norm: str, eps: float, seed_part: str, k: int = 0):
        return self.registry.get(name).build(model, norm=norm, eps=eps, device=self.device, logger=FlagCollector(),
                                             seed=self.attack_seed(self.seed, seed_part, k),
                                             **self.attack_options[name])


def _bpda(c: _Ctx, rep: GamingReport, checks: GamingChecks, robust: list[int], headline: Budget) -> None:
    """Costs the BPDA attack's passes on ``robust`` (<= bpda.points per chunk), only where a gradient vanished."""
    broke = 0
    if robust:
        c.model.phase = "check-bpda"
        bpda = BPDA(c.model)
        attack = c.build(checks.bpda_attack, bpda, norm=headline.aa_norm, eps=headline.eps, seed_part="bpda")
        adv = c.run_attack(attack, c.x[robust].clone(), c.y[robust].clone()).adv.detach()
        broke = int((c.predict(c.model, adv, len(robust)) != c.y[robust]).sum())
        rep.info["bpda"] = {"attacked": len(robust), "broken": broke, "replaced_ops": bpda.replaced}
    if broke:
        rep.flags.append(Flag("bpda-attack-succeeded", (
            f"The margin's gradient vanished at some points, and {checks.bpda_attack} run through BPDA (rounding, "
            f"sign, tanh, sigmoid and clamping differentiated as the identity) broke {broke} of {len(robust)} "
            f"points that the cascade could not break at {headline.id}: the robust accuracy is inflated by "
            "obfuscated gradients.")))


def _sweep(c: _Ctx, checks: GamingChecks, robust: list[int], *, bpda: bool) -> list[int]:
    """The points left after attacking ``robust`` at each budget of the sweep from the clean image (n_iter of
    the unbounded attack's options steps per budget, forward + backward and a verifying forward per step)."""
    c.model.phase = "check-sweep"
    net = BPDA(c.model) if bpda else c.model
    steps = int(c.attack_options[checks.unbounded_attack].get("n_iter", 100))
    left = list(robust)
    for eps in checks.unbounded_sweep:
        if not left:
            break
        broken = pgd_from_clean(net, c.x[left], c.y[left], eps=eps, n_iter=steps,
                                verify=lambda a: c.predict(c.model, a.detach(), len(a)))
        left = [i for i, b in zip(left, broken.tolist()) if not b]
    return left


def _indicators(c: _Ctx, rep: GamingReport, checks: GamingChecks, robust: list[int], headline: Budget, outcome,
                scale: float) -> None:
    ind = checks.indicators
    c.model.phase = "check-indicators"
    rtol = checks.margin.batch_rtol if checks.margin is not None else 1e-3
    r = run_indicators(
        c.model, c.x[robust], c.y[robust], [outcome.ids[i] for i in robust], cfg=ind,
        build=lambda m, k: c.build(ind.attack, m, norm=headline.aa_norm, eps=headline.eps, seed_part="trace", k=k),
        run_attack=c.run_attack, eps=headline.eps, seed=c.attack_seed(c.seed, "indicators"), scale=scale,
        rtol=rtol)
    rep.info["indicators"] = r.info()
    n = r.traced
    if r.silent:
        e = r.silent[0]
        rep.flags.append(Flag("silent-success", (
            f"At {len(r.silent)} of {n} re-attacked points the attack's own verdict (from the forward passes it "
            f"takes gradients from) disagrees with fxbench's fresh evaluation of the point it returned (image "
            f"{e['image']}: attack says {'broken' if e['attack_says_broken'] else 'not broken'}, fresh margin "
            f"{e['fresh_margin']:.4g}): the loss the attacks optimise is not the decision that is scored "
            "(Pintor et al.'s silent success).")))
    if n and len(r.incomplete) > ind.max_share * n:
        rep.flags.append(Flag("incomplete-optimization", (
            f"At {len(r.incomplete)} of {n} re-attacked points {ind.attack}'s best loss was still falling over "
            f"its last {ind.window:.0%} of steps (by more than {ind.min_progress:.0%} of its whole fall): the "
            "attack stopped before converging, so the robust accuracy may be inflated (Pintor et al.'s "
            "incomplete optimisation).")))
    if r.unstable_flips or r.relative_change > ind.max_relative_change:
        rep.flags.append(Flag("unstable-predictions", (
            f"Uniform random points inside the {headline.id} ball around {n} points the cascade could not break "
            f"flipped the prediction {r.unstable_flips} times in {n * ind.noise_samples} draws and moved the "
            f"margin by {r.relative_change:.2f} of itself on average (flag above {ind.max_relative_change:g}): a "
            "noisy loss landscape misleads gradient steps (Pintor et al.'s unstable predictions).")))


def clean_reference(previous: dict, checks: GamingChecks | None) -> dict[str, float] | None:
    """The clean battery's p(fracture) by image id, for v3's consistency check (None: not run, or not v3)."""
    from ..results.metric_ids import clean_id

    clean = previous.get("clean")
    if clean is None or checks is None or not checks.consistency_points:
        return None
    col = clean_id("p_fracture")
    if col not in clean.samples:
        return None
    return dict(zip(clean.samples["image_id"], clean.samples[col].astype(float)))


def weak_black_box(checks: GamingChecks | None, attacks: list[tuple[str, dict, bool]]) -> list[Flag]:
    """v3: a flag when the black-box attacks run fewer queries than `checks.black_box.min_queries` (the quick
    preset's 50 Square queries broke none of the red team's gaming submissions: there, only the gradient checks
    catch a model with honest outputs and fake gradients). ``attacks``: (name, options, white_box)."""
    if checks is None or not checks.black_box_min_queries:
        return []
    weak = [(n, o.get("n_queries")) for n, o, white in attacks
            if not white and isinstance(o.get("n_queries"), int) and o["n_queries"] < checks.black_box_min_queries]
    if not weak:
        return []
    names = ", ".join(f"{n} ({q} queries)" for n, q in weak)
    return [Flag("weak-black-box", (
        f"The black-box attack here, {names}, is a smoke test: fewer than {checks.black_box_min_queries} queries "
        "broke none of the red team's gaming submissions, so a model with honest outputs and fake gradients is "
        "caught here only by the gradient checks (finite differences, vanishing gradients, BPDA, the sweep). "
        "Only the full preset's black-box attack is a check of its own."))]
