"""The fxbench-AA cascade on one chunk of images, and the independent verification of its results.

Per norm, budgets run in ascending order; at each budget every attack (in spec order) starts from the clean
image and attacks only the points still robust. A point broken at a smaller budget keeps that adversarial
example (it is inside every larger ball) and is not attacked again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from pyautoattack.square import SquareAttack

from .. import decision
from ..battery import derive_seed
from ..errors import EvaluationBug, ModelMisbehaviour
from ..registry import Registry
from . import apgd
from .attacks import FABBinary
from .checks import FlagCollector
from .config import Budget, RobustnessConfig
from .counting import CountingModel
from .precision import SearchModel, cautious_square

CLEAN = "clean"  # the 'attack' of a point the model already misclassifies


@dataclass
class NormOutcome:
    """Results for the budgets of one norm. ``first[i]``: index (in ``budgets``) of the first budget at which
    image i broke, -1 if never; ``adv``/``attack``/``dist`` are set for broken images only."""

    budgets: list[Budget]
    first: list[int]
    attack: dict[int, str] = field(default_factory=dict)
    dist: dict[int, float] = field(default_factory=dict)
    adv: dict[int, torch.Tensor] = field(default_factory=dict)  # on the CPU, 1 x H x W
    logits: dict[int, torch.Tensor] = field(default_factory=dict)  # the logits that decided each break


@dataclass
class ChunkOutcome:
    ids: list[str]
    y: torch.Tensor  # CPU
    clean_correct: torch.Tensor  # CPU bool
    norms: dict[str, NormOutcome]
    entering: dict[str, int]  # budget id -> points still robust when the budget started
    breaks: dict[str, dict[str, int]]  # budget id -> attack -> points it broke at that budget
    seconds: dict[str, dict[str, float]]  # budget id -> attack -> wall seconds
    clean_logits: torch.Tensor | None = None  # CPU, N x 2
    # Points still robust at a budget: the first APGD attack's highest-loss point there (budget id -> i -> x).
    final: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    # budget id -> attack -> per attacked point, the steps (APGD, FAB) or queries (Square) it was given
    steps: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def attack_seed(base: int, *parts: object) -> int:
    """A seed for one attack call (pyautoattack wants a signed 32-bit int): ``battery.derive_seed``'s low 31 bits."""
    return derive_seed(base, *parts, bits=31)


def distance(adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image perturbation size in float64 (the difference of two float32 values is exact there)."""
    d = (adv.double() - x.double()).reshape(x.shape[0], -1)
    return d.abs().amax(dim=1) if norm == "linf" else d.pow(2).sum(dim=1).sqrt()


def logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).float()


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The one decision rule (fxbench.decision: a tie is a fracture)."""
    return decision.predict(logits(model, x, batch_size))


@dataclass
class AttackRun:
    adv: torch.Tensor  # the attack's output (the clean point where it found nothing)
    best: torch.Tensor | None = None  # APGD: the highest-loss point of every point
    broken: torch.Tensor | None = None  # decided by fxbench's rule on fxbench's forward pass inside the attack
    steps: torch.Tensor | None = None  # per point: the steps (APGD) or queries (Square) it needed


def run_attack(attack, x: torch.Tensor, y: torch.Tensor, verdict=None) -> AttackRun:
    """Run an attack on points that are all classified correctly (the cascade attacks only those), without the
    attack's own clean forward pass. APGD stops each point once it is broken (apgd.py); Square already does.
    ``verdict(points, y) -> broken``: where the attack searched in reduced precision, the float32 decision on
    its points (precision.py); None: the attack's own forward pass decided, by fxbench's rule."""
    if apgd.supports(attack):
        attack.init_hyperparam(x)
        x, y = x.detach().clone().float(), y.detach().clone().long()
        _seed(attack.seed, x)
        adv, best, best_loss = x.clone(), x.clone(), torch.full((len(x),), -float("inf"), device=x.device)
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
        steps = torch.zeros(len(x), dtype=torch.long)
        for _ in range(attack.n_restarts):
            idx = todo.nonzero().flatten()
            if idx.numel() == 0:
                break
            x_best, acc, loss_best, x_best_adv, broke_at = apgd.attack_single_run(attack, x[idx].clone(),
                                                                                  y[idx].clone())
            hit = acc == 0
            if verdict is not None:  # a reduced-precision search: the float32 verdict decides, at every point
                x_best_adv = torch.where(hit.view(-1, *([1] * (x.ndim - 1))), x_best_adv, x_best)
                hit = verdict(x_best_adv, y[idx]).to(hit.device)
            adv[idx[hit]] = x_best_adv[hit].clone()
            todo[idx[hit]] = False
            steps[idx.cpu()] += torch.where(broke_at >= 0, broke_at + 1, attack.n_iter + 1) * attack.eot_iter
            better = loss_best > best_loss[idx]
            best[idx[better]] = x_best[better].clone()
            best_loss[idx[better]] = loss_best[better]
        return AttackRun(adv, best, ~todo.cpu(), steps)
    if isinstance(attack, SquareAttack) and not attack.targeted:
        attack.init_hyperparam(x)
        x, y = x.detach().clone().float(), y.detach().clone().long()
        _seed(attack.seed, x)
        adv = x.clone()
        steps = torch.zeros(len(x), dtype=torch.long)
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(attack.n_restarts):
            idx = todo.nonzero().flatten()
            if idx.numel() == 0:
                break
            n_q, adv_curr = attack.attack_single_run(x[idx].clone(), y[idx].clone())
            steps[idx.cpu()] += n_q.long().cpu()
            if verdict is not None:  # every point's best, in float32 (the search may stop short of the boundary)
                hit = verdict(adv_curr, y[idx]).to(todo.device)
            else:
                with torch.no_grad():
                    hit = decision.predict(attack.predict(adv_curr)) != y[idx]
            adv[idx[hit]] = adv_curr[hit].clone()
            todo[idx[hit]] = False
        return AttackRun(adv, None, ~todo.cpu(), steps)
    return AttackRun(attack.perturb(x, y))


def _seed(seed: int, x: torch.Tensor) -> None:
    torch.random.manual_seed(seed)
    if x.is_cuda:
        torch.cuda.random.manual_seed(seed)


def fab_points(attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FAB's minimal-norm points without a random start: they do not depend on eps, so the cascade runs FAB
    once per norm and reuses its points at every budget (perturb() keeps those within eps)."""
    torch.random.manual_seed(attack.seed)
    if x.is_cuda:
        torch.cuda.random.manual_seed(attack.seed)
    with torch.no_grad():
        return attack.attack_single_run(x.clone(), y.clone(), use_rand_start=False, is_targeted=False)


def within(adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """FAB perturb()'s own test (float32), so reused points are kept exactly where a run at eps kept them."""
    d = (x - adv).reshape(x.shape[0], -1)
    res = d.abs().max(1)[0] if norm == "linf" else (d**2).sum(dim=-1).sqrt()
    return res <= eps


def _bound(b: Budget, cfg: RobustnessConfig) -> float:
    return b.eps + cfg.linf_atol if b.norm == "linf" else b.eps * (1.0 + cfg.l2_rtol)


def check_feasible(adv: torch.Tensor, x: torch.Tensor, ids: list[str], *, budget: Budget,
                   cfg: RobustnessConfig, source: str) -> torch.Tensor:
    """Every returned point must be finite, inside [0, 1] and inside the budget; returns the distances."""
    if adv.shape != x.shape:
        raise EvaluationBug(f"{source} at {budget.id} returned shape {tuple(adv.shape)}, expected {tuple(x.shape)}")
    flat = adv.reshape(adv.shape[0], -1)
    bad_value = ~torch.isfinite(flat).all(dim=1) | (flat.amin(dim=1) < 0) | (flat.amax(dim=1) > 1)
    dist = distance(adv, x, budget.norm)
    bad = bad_value | ~(dist <= _bound(budget, cfg))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise EvaluationBug(
            f"{source} at {budget.id}: image {ids[i]} is not a valid perturbation (finite in [0, 1]: "
            f"{not bool(bad_value[i])}; {budget.norm} distance {float(dist[i]):.8g} > bound "
            f"{_bound(budget, cfg):.8g})"
        )
    return dist


def build(entry, model: CountingModel, search: SearchModel | None, *, options: dict, rtol: float, **kwargs):
    """An attack of the cascade, searching through ``search`` (reduced precision) where there is one, except
    FAB (precision.py says why); the search's stopping rule gets the spec's margin tolerance.
    Returns (attack, whether it searches in reduced precision)."""
    attack = entry.build(search if search is not None else model, **kwargs, **options)
    if search is None:
        return attack, False
    if isinstance(attack, FABBinary) or not (apgd.supports(attack) or isinstance(attack, SquareAttack)):
        return entry.build(model, **kwargs, **options), False
    if isinstance(attack, SquareAttack):
        cautious_square(attack, rtol)
    else:
        attack.fxb_search_rtol = rtol
    return attack, True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _verdict(model: CountingModel, batch_size: int):
    """The float32 decision on an attack's points (phase ``verdict``), for attacks that searched reduced."""
    def verdict(points: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        phase, model.phase = model.phase, "verdict"
        try:
            return decision.predict(logits(model, points.detach(), batch_size)) != y
        finally:
            model.phase = phase

    return verdict


def clean_logits(model: CountingModel, x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """(clean logits, correct): the one clean forward pass of a shard."""
    model.phase = CLEAN
    z = logits(model, x, batch_size)
    return z, (decision.predict(z, where="on clean evaluation images") == y).cpu()


def attack_chunk(model: CountingModel, x: torch.Tensor, y: torch.Tensor, ids: list[str], *,
                 cfg: RobustnessConfig, registry: Registry, seed: int, device: torch.device,
                 log: FlagCollector, budgets: list[Budget] | None = None, clean=None) -> ChunkOutcome:
    """``budgets``: the budgets this shard runs (None: every budget of the spec, as v1/v2 shards do);
    ``clean``: (logits, correct) of the clean pass when the caller made it already."""
    x, y_dev = x.to(device), y.to(device)
    z_clean, correct = clean if clean is not None else clean_logits(model, x, y_dev, cfg.batch_size)
    dtype = cfg.search_dtype_for(device.type)
    search = SearchModel(model, dtype) if dtype != "float32" else None
    verdict = _verdict(model, cfg.batch_size) if search is not None else None
    norms: dict[str, NormOutcome] = {}
    entering: dict[str, int] = {}
    breaks: dict[str, dict[str, int]] = {}
    seconds: dict[str, dict[str, float]] = {}
    final: dict[str, dict[int, torch.Tensor]] = {}
    steps: dict[str, dict[str, list[int]]] = {}
    final_by: dict[str, str] = {}  # budget id -> the attack whose final points are kept (the first APGD)
    for norm in ("linf", "l2"):
        norm_budgets = [b for b in cfg.by_norm(norm) if budgets is None or b in budgets]
        out = NormOutcome(budgets=norm_budgets, first=[-1] * len(ids))
        robust = correct.clone()
        fab_cache: dict[str, dict[int, torch.Tensor]] = {}  # attack -> image -> FAB's point (once per norm)
        for k, b in enumerate(norm_budgets):
            entering[b.id] = int(robust.sum())
            breaks[b.id], seconds[b.id], final[b.id] = {}, {}, {}
            steps[b.id] = {a.name: [] for a in cfg.attacks_for(b)}
            for spec in cfg.attacks_for(b):
                entry = registry.get(spec.name)
                todo = robust.nonzero().flatten()
                breaks[b.id][spec.name], seconds[b.id][spec.name] = 0, 0.0
                for n_batch, start in enumerate(range(0, len(todo), cfg.batch_size)):
                    sel = todo[start : start + cfg.batch_size]
                    xb, yb = x[sel.to(device)], y_dev[sel.to(device)]
                    batch_ids = [ids[i] for i in sel.tolist()]
                    attack, searched = build(entry, model, search, norm=b.aa_norm, eps=b.eps, device=device,
                                             logger=log, seed=attack_seed(seed, b.id, spec.name, n_batch),
                                             options=spec.options, rtol=cfg.search_margin_rtol)
                    model.phase = spec.name
                    _sync(device)
                    t0 = time.perf_counter()
                    run = None
                    if isinstance(attack, FABBinary) and attack.n_restarts == 1:
                        cache = fab_cache.setdefault(spec.name, {})
                        new = [j for j, i in enumerate(sel.tolist()) if i not in cache]
                        if new:  # in practice only at the norm's first budget: the robust set only shrinks
                            pts = fab_points(attack, xb[new], yb[new]).detach()
                            for j, p in zip(new, pts):
                                cache[int(sel[j])] = p
                        pts = torch.stack([cache[i] for i in sel.tolist()])
                        adv = torch.where(within(pts, xb, norm, b.eps).view(-1, 1, 1, 1), pts, xb)
                        steps[b.id][spec.name] += [attack.n_iter if j in new else 0 for j in range(len(sel))]
                    else:
                        run = run_attack(attack, xb.clone(), yb.clone(),
                                         verdict if searched else None)
                        adv = run.adv.detach()
                        if run.steps is not None:
                            steps[b.id][spec.name] += run.steps.tolist()
                    _sync(device)
                    seconds[b.id][spec.name] += time.perf_counter() - t0
                    dist = check_feasible(adv, xb, batch_ids, budget=b, cfg=cfg, source=spec.name).cpu()
                    if run is not None and run.best is not None and final_by.setdefault(b.id, spec.name) == spec.name:
                        # the first APGD attack's highest-loss points: the headline's attacked point of a robust image
                        check_feasible(run.best, xb, batch_ids, budget=b, cfg=cfg, source=f"{spec.name} (final point)")
                        final[b.id].update({int(i): run.best[j].detach().float().cpu() for j, i in enumerate(sel)})
                    z_moved, pos = None, {}
                    if run is not None and run.broken is not None:
                        # Decided inside the attack by fxbench's rule on a forward pass through `model` (ours);
                        # verify_outcome re-checks every break from scratch.
                        fooled = run.broken.clone()
                    else:
                        # Success is decided here, in a forward pass of our own, not by the attack's bookkeeping.
                        # Points the attack left unchanged are the clean points, known to be classified correctly.
                        moved = (adv != xb).reshape(len(xb), -1).any(dim=1).nonzero().flatten()
                        fooled = torch.zeros(len(xb), dtype=torch.bool)
                        if len(moved):
                            model.phase = "verify"
                            z_moved = logits(model, adv[moved], cfg.batch_size)
                            fooled[moved.cpu()] = (decision.predict(z_moved) != yb[moved]).cpu()
                            pos = {int(j): r for r, j in enumerate(moved.tolist())}
                    hits = fooled.nonzero().flatten()
                    adv_hits = adv[hits.to(device)].float().cpu()  # one copy off the device per batch
                    for h, j in enumerate(hits.tolist()):
                        i = int(sel[j])
                        robust[i] = False
                        out.first[i] = k
                        out.attack[i] = spec.name
                        out.dist[i] = float(dist[j])
                        out.adv[i] = adv_hits[h].clone()
                        if z_moved is not None:
                            out.logits[i] = z_moved[pos[j]].cpu().clone()
                    breaks[b.id][spec.name] += int(fooled.sum())
        norms[norm] = out
    outcome = ChunkOutcome(ids=list(ids), y=y.cpu(), clean_correct=correct, norms=norms, entering=entering,
                           breaks=breaks, seconds=seconds, clean_logits=z_clean.cpu(), final=final, steps=steps)
    model.phase = "verify"
    verify_outcome(model, x.cpu(), outcome, cfg=cfg, device=device)
    return outcome


def verify_outcome(model: torch.nn.Module, x: torch.Tensor, outcome: ChunkOutcome, *, cfg: RobustnessConfig,
                   device: torch.device) -> None:
    """Re-check every recorded adversarial example from scratch: budget, box and a fresh forward pass."""
    for norm, out in outcome.norms.items():
        broken = sorted(out.adv)
        if not broken:
            continue
        for i in broken:
            if not outcome.clean_correct[i] or out.first[i] < 0:
                raise EvaluationBug(f"{norm}: image {outcome.ids[i]} has an adversarial example but was "
                                    "misclassified clean or never marked broken")
        adv = torch.stack([out.adv[i] for i in broken])
        x_b = x[broken]
        ids = [outcome.ids[i] for i in broken]
        for i, a, xi, ident in zip(broken, adv, x_b, ids):
            b = out.budgets[out.first[i]]
            d = check_feasible(a[None], xi[None], [ident], budget=b, cfg=cfg, source=f"{out.attack[i]} (verify)")
            if abs(float(d[0]) - out.dist[i]) > 1e-9 * max(1.0, out.dist[i]):  # summation order may differ
                raise EvaluationBug(f"{b.id}: image {ident}: recorded distance {out.dist[i]} != {float(d[0])}")
        with torch.no_grad():
            z = torch.cat([model(a.to(device)) for a in adv.split(cfg.batch_size)]).float().cpu()
        # A re-evaluation in another batch composition may differ by float rounding (different kernels), so
        # only a point classified correctly by more than that rounding is a violation.
        decision.require_finite(z, where="when its adversarial examples were re-evaluated")
        yb = outcome.y[broken]
        margin = decision.correct_margin(z, yb)
        tol = cfg.logit_rtol * z.abs().amax(dim=1).clamp(min=1.0)
        still = margin > tol
        if still.any():
            j = int(still.nonzero()[0])
            before = out.logits.get(broken[j])
            with torch.no_grad():  # the same input, twice more: a deterministic model gives the same logits
                again = [model(adv[j : j + 1].to(device)).float().cpu()[0] for _ in range(2)]
            seen = [z[j], *again]
            if any(not bool(((a - seen[0]).abs() <= tol[j]).all()) for a in seen[1:]):
                raise ModelMisbehaviour(
                    f"the model gave different logits for the same input ({norm} adversarial example of image "
                    f"{ids[j]}, by {out.attack[broken[j]]}): "
                    f"{[[round(v, 6) for v in a.tolist()] for a in ([before] if before is not None else []) + seen]}. "
                    "Its output on attacked inputs is random or depends on the rest of the batch; fxbench cannot "
                    "give such a model a robustness number"
                )
            raise EvaluationBug(
                f"{norm}: the adversarial example of image {ids[j]} (by {out.attack[broken[j]]}) is classified "
                f"correctly when re-evaluated (logits {z[j].tolist()})"
            )
