"""v3's probes of a submission's consistency and of its gradients, used by gaming.py.

- `consistency`: the chunk's clean pass (the batch the attacks start from) against the same images evaluated
  alone, and against the clean battery's probabilities of the same images (another batch size): a model whose
  answer depends on its batch is refused (ModelMisbehaviour), as `validate` refuses one on its own batches.
- `pgd_from_clean`: projected signed-gradient descent on the margin that starts at the clean image (no random
  start), used for the budget sweep: a start inside a large ball is noise, and a model may answer honestly on
  noise and mask its gradient on radiograph-like inputs only.
- `zero_gradient`: points whose margin has an exactly zero input gradient.
"""

from __future__ import annotations

import torch

from .. import decision
from ..errors import ModelMisbehaviour
from .config import MarginChecks

SOFTMAX_ROUNDING = 4 * 2.0**-24  # a float32 softmax probability is within a few half-spacings of the exact one


def zero_gradient(grad: torch.Tensor) -> torch.Tensor:
    """Per image: is the gradient exactly zero at every pixel?"""
    return (grad.flatten(1) == 0).all(dim=1)


def consistency(model, x: torch.Tensor, ids: list[str], clean_logits: torch.Tensor, *, points: int,
                margin: MarginChecks, scale: float, reference: dict[str, float] | None) -> dict:
    """Refuse a model whose clean logits depend on the batch: ``points`` images alone against the chunk's pass,
    and every image against the clean battery's p(fracture) (``reference``, by image id, when it ran). Costs
    ``points`` forward passes of one image."""
    z = clean_logits.double()
    alone = []
    with torch.no_grad():
        for i in range(min(points, len(x))):
            alone.append(model(x[i : i + 1]).double().cpu())
    if alone:
        single = torch.cat(alone)
        bad = decision.logits_differ(single, z[: len(single)], margin.batch_rtol, scale)
        if bool(bad.any()):
            j = int(bad.nonzero()[0])
            raise ModelMisbehaviour(
                f"image {ids[j]} gets logits {single[j].tolist()} alone but {z[j].tolist()} in the robustness "
                f"battery's batch of {len(x)}: its answer depends on the rest of its batch (margins "
                f"{float(decision.margin(single[j:j + 1])[0]):.6g} vs {float(decision.margin(z[j:j + 1])[0]):.6g}); "
                "the attacks would evaluate another function than the one the clean battery scores"
            )
    compared = 0
    if reference is not None:
        p_rob = torch.softmax(clean_logits.float(), dim=1)[:, decision.FRACTURE].double()
        tol_m = decision.margin_tolerance(z, margin.batch_rtol, scale)
        slope = p_rob * (1 - p_rob)  # dp / dmargin
        pred = decision.predict(clean_logits)
        for j, image_id in enumerate(ids):
            if image_id not in reference:
                continue
            compared += 1
            p_c = reference[image_id]
            near_tie = float(decision.margin(z[j : j + 1]).abs()[0]) <= float(tol_m[j])
            flipped = (p_c >= decision.THRESHOLD) != bool(pred[j]) and not near_tie
            if flipped or abs(p_c - float(p_rob[j])) > float(slope[j] * tol_m[j]) + SOFTMAX_ROUNDING:
                raise ModelMisbehaviour(
                    f"image {image_id}: p(fracture) {p_c:.6g} in the clean battery but {float(p_rob[j]):.6g} in the "
                    "robustness battery's clean pass (another batch size): the model's answer depends on the rest "
                    "of its batch, so the attacks would evaluate another function than the one the clean battery "
                    "scores"
                )
    return {"alone": len(alone), "compared_with_clean": compared}


def correct_margin_and_grad(model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The margin on the correct side (> 0 or a fracture's tie: correct) and its input gradient."""
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        m = decision.correct_margin(model(xg), y)
        (g,) = torch.autograd.grad(m.sum(), [xg])
    return m.detach(), g.detach()


def pgd_from_clean(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, n_iter: int,
                   verify) -> torch.Tensor:
    """Signed-gradient descent on the correct margin inside the L-inf ball, starting at the clean image: step
    eps/2 (the ball's corner in 2 steps) for the first half of the steps, eps/8 for the second. A point whose
    margin (on the attack's own forward pass) says broken is confirmed by ``verify(adv)`` (fxbench's forward
    pass and rule) before it counts. Costs per point and step one forward + backward pass, plus one forward
    pass per candidate and for the points left after the last step. Returns the broken mask (CPU)."""
    adv = x.clone()
    broken = torch.zeros(len(x), dtype=torch.bool)
    todo = torch.arange(len(x), device=x.device)

    def confirm(candidates: torch.Tensor) -> torch.Tensor:
        """Drop the candidates fxbench confirms broken; returns which rows of the old ``todo`` are kept."""
        nonlocal todo
        keep = torch.ones(len(todo), dtype=torch.bool, device=todo.device)
        if len(candidates):
            idx = todo[candidates]
            hit = (verify(adv[idx]) != y[idx]).to(todo.device)
            broken[idx[hit].cpu()] = True
            keep[candidates[hit]] = False
            todo = todo[keep]
        return keep

    for t in range(n_iter):
        if len(todo) == 0:
            break
        m, g = correct_margin_and_grad(model, adv[todo], y[todo])
        lost = torch.where(y[todo] == decision.FRACTURE, m < 0, m <= 0)  # by the rule: a tie is a fracture
        g = g[confirm(lost.nonzero().flatten())]
        if len(todo) == 0:
            break
        step = eps / 2 if t < (n_iter + 1) // 2 else eps / 8
        with torch.no_grad():
            moved = adv[todo] - step * torch.sign(g)
            adv[todo] = torch.clamp(torch.min(torch.max(moved, x[todo] - eps), x[todo] + eps), 0.0, 1.0)
    confirm(torch.arange(len(todo), device=todo.device))
    return broken
