"""The fxbench-AA cascade on one chunk of images, and the independent verification of its results.

Per norm, budgets run in ascending order; at each budget every attack (in spec order) starts from the clean
image and attacks only the points still robust. A point broken at a smaller budget keeps that adversarial
example (it is inside every larger ball) and is not attacked again.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch

from ..errors import EvaluationBug
from ..registry import Registry
from .checks import FlagCollector
from .config import Budget, RobustnessConfig
from .counting import CountingModel

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


@dataclass
class ChunkOutcome:
    ids: list[str]
    y: torch.Tensor  # CPU
    clean_correct: torch.Tensor  # CPU bool
    norms: dict[str, NormOutcome]
    entering: dict[str, int]  # budget id -> points still robust when the budget started
    breaks: dict[str, dict[str, int]]  # budget id -> attack -> points it broke at that budget
    seconds: dict[str, dict[str, float]]  # budget id -> attack -> wall seconds


def derive_seed(base: int, *parts: object) -> int:
    h = hashlib.sha256("/".join(map(str, (base, *parts))).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def distance(adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image perturbation size in float64 (the difference of two float32 values is exact there)."""
    d = (adv.double() - x.double()).reshape(x.shape[0], -1)
    return d.abs().amax(dim=1) if norm == "linf" else d.pow(2).sum(dim=1).sqrt()


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def attack_chunk(model: CountingModel, x: torch.Tensor, y: torch.Tensor, ids: list[str], *,
                 cfg: RobustnessConfig, registry: Registry, seed: int, device: torch.device,
                 log: FlagCollector) -> ChunkOutcome:
    x, y_dev = x.to(device), y.to(device)
    model.phase = CLEAN
    correct = (predict(model, x, cfg.batch_size) == y_dev).cpu()
    norms: dict[str, NormOutcome] = {}
    entering: dict[str, int] = {}
    breaks: dict[str, dict[str, int]] = {}
    seconds: dict[str, dict[str, float]] = {}
    for norm in ("linf", "l2"):
        budgets = cfg.by_norm(norm)
        out = NormOutcome(budgets=budgets, first=[-1] * len(ids))
        robust = correct.clone()
        for k, b in enumerate(budgets):
            entering[b.id] = int(robust.sum())
            breaks[b.id], seconds[b.id] = {}, {}
            for spec in cfg.attacks:
                entry = registry.get(spec.name)
                todo = robust.nonzero().flatten()
                breaks[b.id][spec.name], seconds[b.id][spec.name] = 0, 0.0
                for n_batch, start in enumerate(range(0, len(todo), cfg.batch_size)):
                    sel = todo[start : start + cfg.batch_size]
                    xb, yb = x[sel.to(device)], y_dev[sel.to(device)]
                    batch_ids = [ids[i] for i in sel.tolist()]
                    attack = entry.build(model, norm=b.aa_norm, eps=b.eps, device=device, logger=log,
                                         seed=derive_seed(seed, b.id, spec.name, n_batch), **spec.options)
                    model.phase = spec.name
                    _sync(device)
                    t0 = time.perf_counter()
                    adv = attack.perturb(xb.clone(), yb.clone()).detach()
                    _sync(device)
                    seconds[b.id][spec.name] += time.perf_counter() - t0
                    dist = check_feasible(adv, xb, batch_ids, budget=b, cfg=cfg, source=spec.name).cpu()
                    # Success is decided here, in a forward pass of our own, not by the attack's bookkeeping.
                    model.phase = "verify"
                    fooled = (predict(model, adv, cfg.batch_size) != yb).cpu()
                    hits = fooled.nonzero().flatten()
                    adv_hits = adv[hits.to(device)].float().cpu()  # one copy off the device per batch
                    for h, j in enumerate(hits.tolist()):
                        i = int(sel[j])
                        robust[i] = False
                        out.first[i] = k
                        out.attack[i] = spec.name
                        out.dist[i] = float(dist[j])
                        out.adv[i] = adv_hits[h].clone()
                    breaks[b.id][spec.name] += int(fooled.sum())
        norms[norm] = out
    outcome = ChunkOutcome(ids=list(ids), y=y.cpu(), clean_correct=correct, norms=norms, entering=entering,
                           breaks=breaks, seconds=seconds)
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
        yb = outcome.y[broken]
        margin = z.gather(1, yb[:, None]).squeeze(1) - z.gather(1, (1 - yb)[:, None]).squeeze(1)
        tol = cfg.logit_rtol * z.abs().amax(dim=1).clamp(min=1.0)
        still = margin > tol
        if still.any():
            j = int(still.nonzero()[0])
            raise EvaluationBug(
                f"{norm}: the adversarial example of image {ids[j]} (by {out.attack[broken[j]]}) is classified "
                f"correctly when re-evaluated (logits {z[j].tolist()})"
            )
