"""Three of Pintor et al.'s indicators of attack failure ("Indicators of Attack Failure: Debugging and Improving
Optimization of Adversarial Examples", NeurIPS 2022), on a few points the cascade could not break.

The cascade's own APGD (the spec's `checks.indicators.attack`, with its cascade options) is run again on each
such point alone, through a model wrapper that records the attack's loss at every step (the correct margin of
the forward pass it takes its gradient from):

- silent success: the attack's own verdict (from its forward passes, with a graph to the input) disagrees with
  fxbench's verdict on the point it returned (a fresh forward pass without a graph, in another batch): the loss
  the attack optimises is not the decision that is scored, either way round;
- incomplete optimisation: over the last ``window`` of its steps the attack's best loss still fell by more than
  ``min_progress`` of its whole fall (min-max normalised, as in the paper): more steps would have helped;
- unstable predictions: at ``noise_samples`` uniform random points of the headline ball around the clean image
  the prediction flips (a random point beat the attacks), or the margin moves on average by more than
  ``max_relative_change`` of itself (a noisy landscape that misleads a gradient step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import decision
from .config import IndicatorChecks


class _Tracer(nn.Module):
    """Records the correct margin of every forward pass with a graph (one per attack step, for one image)."""

    def __init__(self, model: nn.Module, y: torch.Tensor) -> None:
        super().__init__()
        self.model, self.y = model, y
        self.trace: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if torch.is_grad_enabled() and x.requires_grad and len(x) == len(self.y):
            self.trace.append(float(decision.correct_margin(z.detach(), self.y)[0]))
        return z


@dataclass
class IndicatorReport:
    traced: int = 0
    silent: list[dict] = field(default_factory=list)
    incomplete: list[dict] = field(default_factory=list)
    unstable_flips: int = 0
    relative_change: float = 0.0

    def info(self) -> dict:
        return {"traced": self.traced, "silent_success": len(self.silent), "incomplete": len(self.incomplete),
                "unstable_flips": self.unstable_flips, "relative_change": round(self.relative_change, 4),
                "examples": (self.silent + self.incomplete)[:3]}


def incomplete(trace: list[float], window: float, min_progress: float) -> bool:
    """The attack minimises the correct margin: did its running best still fall, over the last ``window`` share
    of the steps, by more than ``min_progress`` of its range (max - min over the whole run)?"""
    t = torch.tensor(trace, dtype=torch.float64)
    if len(t) < 3:
        return False
    span = float(t.max() - t.min())
    if span <= 0:
        return False
    best = torch.cummin(t, dim=0).values
    k = max(1, math.ceil(window * (len(t) - 1)))
    return float(best[-k - 1] - best[-1]) > min_progress * span


def run_indicators(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: list[str], *, cfg: IndicatorChecks,
                   build, run_attack, eps: float, seed: int, scale: float, rtol: float) -> IndicatorReport:
    """``build(model, seed)``: the traced attack at the headline budget; ``run_attack``: cascade.run_attack.
    Costs, per point: the attack's steps (forward + backward, one image per call), then one forward pass for
    the fresh verdicts and ``noise_samples`` forward passes."""
    rep = IndicatorReport(traced=len(x))
    if len(x) == 0:
        return rep
    returned, verdicts = [], []
    for i in range(len(x)):
        tracer = _Tracer(model, y[i : i + 1])
        run = run_attack(build(tracer, seed + i), x[i : i + 1].clone(), y[i : i + 1].clone())
        says_broken = bool(run.broken[0]) if run.broken is not None else False
        returned.append((run.adv if says_broken else (run.best if run.best is not None else run.adv)).detach())
        verdicts.append(says_broken)
        if not says_broken and incomplete(tracer.trace, cfg.window, cfg.min_progress):
            rep.incomplete.append({"image": ids[i], "steps": len(tracer.trace),
                                   "loss_first_last_best": [round(tracer.trace[0], 6), round(tracer.trace[-1], 6),
                                                            round(min(tracer.trace), 6)]})
    with torch.no_grad():
        z = model(torch.cat(returned)).float()
    fresh = decision.predict(z) != y
    near = decision.margin(z.double()).abs() <= decision.margin_tolerance(z, rtol, scale)
    for i in range(len(x)):
        if bool(fresh[i]) != verdicts[i] and not bool(near[i]):
            rep.silent.append({"image": ids[i], "attack_says_broken": verdicts[i],
                               "fresh_margin": float(decision.margin(z[i : i + 1])[0])})
    _unstable(model, x, y, rep, eps=eps, samples=cfg.noise_samples, seed=seed, scale=scale)
    return rep


def _unstable(model, x, y, rep: IndicatorReport, *, eps: float, samples: int, seed: int, scale: float) -> None:
    if samples < 1:
        return
    g = torch.Generator().manual_seed(seed)
    noise = (torch.rand((samples, *x.shape), generator=g) * 2 - 1).to(x) * eps
    with torch.no_grad():
        z0 = model(x).double()
        m0 = decision.correct_margin(z0, y)
        changes = []
        for s in range(samples):
            z = model((x + noise[s]).clamp(0.0, 1.0)).double()
            rep.unstable_flips += int((decision.predict(z) != y).sum())
            changes.append((decision.correct_margin(z, y) - m0).abs() / torch.clamp(m0.abs(), min=max(scale, 1e-30)))
    rep.relative_change = float(torch.stack(changes).mean())
