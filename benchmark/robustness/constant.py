"""A constant model's robustness rows, computed analytically (fxbench-AA v3, spec key ``constant_model``).

No perturbation changes the answer of a model whose output does not depend on its input, so its robust
accuracy at every budget equals its clean accuracy, per image: attacking it only burns device time (the v2
constant reference ran ~470 s on an H200 without finishing: Square's 25,000 queries per point that can never
break). The battery calls a model constant only on evidence it measures on the shard's own images:

1. every clean image gives bit-identical logits (free: the clean pass is done anyway; a real classifier
   fails here at once, so nothing below runs for it);
2. the input gradient of the margin is exactly zero at every clean image;
3. the logits stay bit-identical at a random-sign perturbation of every image by the largest L-inf budget,
   and at uniform-noise images (eps = 1: anywhere in the box).

What claiming constancy can buy a submitter who games it: a model that is constant on these probes but not
elsewhere gets the same answer on every evaluation image, so its clean and robust balanced accuracy are
exactly 0.5, the chance level, and its robust rows could at most be overstated up to chance (never above the
constant reference, never into a ranking above any real model). The evaluator's checks (unbounded attack,
transfer) still run on it.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import decision
from .cascade import ChunkOutcome, NormOutcome
from .config import Budget, RobustnessConfig
from .counting import CountingModel

PHASE = "check-constant"


def _same(z: torch.Tensor, ref: torch.Tensor) -> bool:
    return bool((z == ref).all())


def probe(model: CountingModel, x: torch.Tensor, y: torch.Tensor, z_clean: torch.Tensor, *,
          cfg: RobustnessConfig, seed: int) -> dict[str, Any] | None:
    """The evidence above as a dict for the result's info, or None when the model is not constant (at once for
    any model whose clean logits differ between two images)."""
    ref = z_clean[:1]
    if len(z_clean) == 0 or not _same(z_clean, ref):
        return None
    phase, model.phase = model.phase, PHASE
    try:
        g = torch.Generator().manual_seed(seed)
        linf = cfg.by_norm("linf")
        eps = linf[-1].eps if linf else 8 / 255
        for start in range(0, len(x), cfg.batch_size):
            xb = x[start : start + cfg.batch_size]
            xg = xb.clone().requires_grad_(True)
            with torch.enable_grad():
                z = model(xg)
                (grad,) = torch.autograd.grad(decision.margin(z).sum(), [xg])
            if not _same(z.detach(), ref) or bool(grad.ne(0).any()):
                return None
            sign = (torch.randint(0, 2, xb.shape, generator=g) * 2 - 1).to(xb)
            noise = torch.rand(xb.shape, generator=g).to(xb)
            with torch.no_grad():
                moved = model((xb + eps * sign).clamp(0.0, 1.0))
                anywhere = model(noise)
            if not (_same(moved, ref) and _same(anywhere, ref)):
                return None
    finally:
        model.phase = phase
    return {"logits": [float(v) for v in ref[0].tolist()], "images": len(x), "probe_eps": eps,
            "evidence": "identical logits on every clean image, at a random-sign perturbation of each by the "
                        "largest L-inf budget and at uniform-noise images; input gradient exactly zero"}


def analytic_outcome(ids: list[str], y: torch.Tensor, correct: torch.Tensor, z_clean: torch.Tensor, *,
                     cfg: RobustnessConfig, budgets: list[Budget] | None) -> ChunkOutcome:
    """The cascade's outcome for a constant model without running it: nothing broken, no step spent."""
    norms, entering, breaks, seconds, steps = {}, {}, {}, {}, {}
    for norm in ("linf", "l2"):
        these = [b for b in cfg.by_norm(norm) if budgets is None or b in budgets]
        norms[norm] = NormOutcome(budgets=these, first=[-1] * len(ids))
        for b in these:
            entering[b.id] = int(correct.sum())
            names = [a.name for a in cfg.attacks_for(b)]
            breaks[b.id] = dict.fromkeys(names, 0)
            seconds[b.id] = dict.fromkeys(names, 0.0)
            steps[b.id] = {n: [] for n in names}
    return ChunkOutcome(ids=list(ids), y=y.cpu(), clean_correct=correct, norms=norms, entering=entering,
                        breaks=breaks, seconds=seconds, clean_logits=z_clean.cpu(), final={}, steps=steps)
