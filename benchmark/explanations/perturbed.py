"""v3 under attack, like for like: the explanation battery makes its own attacked point and noise control.

v2 scored the robustness cascade's stored points: for a model that breaks easily the first iterate that flipped
the label (about 2 APGD steps), for a robust one the 10- or 100-step highest-loss point, and in the full preset
an image broken at 1/255 kept that point under the 4/255 heading. The maps of the two kinds of model were
therefore taken at different perturbations. v3 (``under_attack.points: fixed_step``) attacks every correctly
classified fractured image itself, the same way for every model:

- **attacked point**: pyautoattack's APGD-CE at exactly the spec's eps, ``steps`` iterations, no early
  stopping, the highest-loss iterate (the library's ``x_best``), from a random start drawn per image from the
  run seed and the image id (the library's own L-inf start, handed in as ``x_init`` so the start does not
  depend on the batch). The cross-entropy of the fracture label is monotone in the margin, so the point does
  not depend on whether, or when, the label flips (tests/test_v3_xai_attack.py).
- **noise control** (``noise_control: sign``): the image plus eps times a random sign per pixel, clipped to
  [0, 1], seeded per image. Plain gradients of a standard model are fragile to *any* perturbation of this
  size; attacked - noise is the part of the change the attack's direction adds, noise - clean the part that
  mere noise causes.

Images the model misclassifies clean are not attacked (NaN with the reason), as in v2. The points are made
inside the battery from the model; the robustness battery's stored points stay what they are for (robust
accuracy). Seeds come from the run seed and the image id only: a point never depends on its shard.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pyautoattack.autopgd_base import APGDAttack

from .. import decision
from ..battery import derive_seed
from ..results.metric_ids import threat_parts
from .attacked import AttackedInputs
from .config import XaiConfig
from .methods import CPU_MICROBATCH

NOT_ATTACKED = "misclassified clean: not attacked"


def eps_of(threat: str) -> float:
    """The L-inf budget of a threat id in pixel units (linf-4 -> 4/255)."""
    norm, eps = threat_parts(threat)
    if norm != "linf":
        raise ValueError(f"{threat}: fixed-step points and sign noise are L-inf only")
    return eps / 255.0


def image_seed(run_seed: int, what: str, image_id: str) -> int:
    return derive_seed(run_seed, "xai", what, image_id)


def sign_noise(x: torch.Tensor, eps: float, seeds: list[int]) -> torch.Tensor:
    """x (N x 1 x H x W, CPU) plus eps x a random sign per pixel (image i from seeds[i]), clipped to [0, 1]."""
    out = []
    for xi, s in zip(x, seeds):
        g = torch.Generator().manual_seed(int(s))
        sign = torch.randint(0, 2, xi.shape, generator=g, dtype=torch.int64).to(xi.dtype) * 2 - 1
        out.append((xi + eps * sign).clamp(0.0, 1.0))
    return torch.stack(out) if out else x.clone()


def random_start(x: torch.Tensor, eps: float, seeds: list[int]) -> torch.Tensor:
    """APGD's L-inf random start (x + eps t / max|t|, t uniform in [-1, 1]), drawn per image."""
    out = []
    for xi, s in zip(x, seeds):
        g = torch.Generator().manual_seed(int(s))
        t = 2 * torch.rand(xi.shape, generator=g, dtype=torch.float32) - 1
        out.append((xi + eps * t / (t.abs().max() + 1e-12)).clamp(0.0, 1.0))
    return torch.stack(out) if out else x.clone()


def fixed_step_points(model, x: torch.Tensor, *, eps: float, steps: int, seeds: list[int], device: torch.device,
                      batch: int) -> torch.Tensor:
    """The highest-loss point of ``steps`` APGD-CE iterations against the fracture label (index 1), per
    image, no early stopping. x on the CPU; returns CPU float32."""
    start = random_start(x, eps, seeds)
    out = []
    for i in range(0, len(x), batch):
        xb, sb = x[i : i + batch].to(device), start[i : i + batch].to(device)
        y = torch.ones(len(xb), dtype=torch.long, device=device)
        apgd = APGDAttack(model, n_iter=int(steps), norm="Linf", eps=float(eps), loss="ce", n_restarts=1, seed=0,
                          rho=0.75, verbose=False, device=device)
        apgd.init_hyperparam(xb)
        with torch.random.fork_rng(devices=[]):  # the library draws a start it then discards (x_init wins)
            best = apgd.attack_single_run(xb, y, x_init=sb)[0]
        out.append(best.detach().to("cpu", torch.float32))
    return torch.cat(out) if out else x.clone()


def _predict(model, x: torch.Tensor, device: torch.device, batch: int) -> np.ndarray:
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            preds.append(decision.predict(model(x[i : i + batch].to(device))).cpu().numpy())
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def batch_for(device: torch.device, cfg: XaiConfig) -> int:
    """Images per attack pass: the attribution micro-batch on the CPU (memory), the spec's batch elsewhere. An
    image's point does not depend on it (per-image start, per-point APGD state)."""
    return CPU_MICROBATCH if device.type == "cpu" else cfg.batch_size


def perturbed_inputs(model, run_seed: int, ids: list[str], x: torch.Tensor, cfg: XaiConfig,
                     device: torch.device) -> tuple[AttackedInputs, dict[str, Any]]:
    """The attacked points and noise controls of the images ``ids`` (clean images ``x``, CPU)."""
    ua = cfg.under_attack
    eps, batch = eps_of(ua.attack), batch_for(device, cfg)
    correct = _predict(model, x, device, batch) == 1  # fractured images: correct = says fracture
    rows = np.flatnonzero(correct)
    sub = x[rows]
    points = fixed_step_points(model, sub, eps=eps, steps=int(ua.steps), device=device, batch=batch,
                               seeds=[image_seed(run_seed, "attack-start", ids[i]) for i in rows])
    noise = None
    if ua.noise_control == "sign":
        noise = x.clone()
        noise[rows] = sign_noise(sub, eps, [image_seed(run_seed, "noise", ids[i]) for i in rows])
    adv = x.clone()
    adv[rows] = points
    flipped = np.full(len(ids), np.nan)
    flipped[rows] = (_predict(model, points, device, batch) != 1).astype(float) if len(rows) else []
    # integer fields are summed over shards (summaries.summarise): counts only
    status = {"status": "computed", "attack": ua.attack, "points": f"fixed_step ({int(ua.steps)} APGD-CE steps)",
              "noise_control": ua.noise_control, "scored": int(len(rows)), "flipped": int(np.nansum(flipped)),
              "not_flipped": int(len(rows) - np.nansum(flipped)), "not_scored": int(len(ids) - len(rows))}
    return AttackedInputs(
        attack=ua.attack, x=adv, attacked=[bool(c) for c in correct], flipped=list(flipped),
        missing=[None if c else NOT_ATTACKED for c in correct], noise=noise,
    ), status
