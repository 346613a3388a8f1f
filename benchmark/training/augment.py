"""Batch augmentations in canonical pixel space, on the device that holds the batch.

One affine warp per image (horizontal flip, rotation, zoom, shift) through affine_grid/grid_sample, so a
batch is augmented in a few kernels; areas moved in from outside are black, as the canonical padding is.
Then a small brightness/contrast change. The result stays in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import Augment


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def affine_matrices(
    n: int, cfg: Augment, *, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates (affine_grid's convention, [-1, 1] units)."""
    flip = torch.rand(n, generator=generator, device=device) < cfg.hflip
    sign = 1.0 - 2.0 * flip.float()
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, generator, device) * (math.pi / 180)
    scale = _uniform(n, cfg.scale[0], cfg.scale[1], generator, device)
    # A shift of a fraction f of the side is 2f in affine_grid's [-1, 1] coordinates.
    tx = _uniform(n, -cfg.translate, cfg.translate, generator, device) * 2
    ty = _uniform(n, -cfg.translate, cfg.translate, generator, device) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # input = R(angle) / scale @ (sign * u, v) + t: the flip acts on the output's x coordinate.
    row0 = torch.stack([cos * sign, -sin, tx], dim=1)
    row1 = torch.stack([sin * sign, cos, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def augment(x: torch.Tensor, cfg: Augment, *, generator: torch.Generator) -> torch.Tensor:
    """Randomly augmented copy of canonical images ``x`` (float, N x 1 x H x W, in [0, 1])."""
    n, device = x.shape[0], x.device
    theta = affine_matrices(n, cfg, generator=generator, device=device)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.contrast or cfg.brightness:
        c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, generator, device).view(-1, 1, 1, 1)
        b = _uniform(n, -cfg.brightness, cfg.brightness, generator, device).view(-1, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * c + mean + b
    return out.clamp(0, 1)
