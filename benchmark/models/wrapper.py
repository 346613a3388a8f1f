"""One wrapper for every submission: canonical pixels in, two logits out.

Attacks and attributions work in the benchmark's pixel space (N x 1 x 224 x 224, float in [0, 1]) for every
submission; the submission's own resize, channel replication and normalisation happen inside this
differentiable forward, so eps means the same for everyone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CANONICAL_SIZE = 224


class CanonicalModel(nn.Module):
    def __init__(
        self,
        net: nn.Module,
        *,
        input_size: int = CANONICAL_SIZE,
        channels: int = 1,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        num_classes: int = 2,
        fracture_index: int = 1,
        gradcam_layer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError("channels must be 1 or 3")
        if num_classes not in (1, 2):
            raise ValueError("num_classes must be 1 or 2")
        if len(mean) != channels or len(std) != channels:
            raise ValueError("mean and std need one value per input channel")
        self.net = net
        self.input_size = int(input_size)
        self.channels = int(channels)
        self.num_classes = int(num_classes)
        self.fracture_index = int(fracture_index)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        # Kept outside the module tree (a plain attribute) so it is not registered twice.
        self.__dict__["gradcam_layer"] = gradcam_layer
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected canonical images N x 1 x H x W, got {tuple(x.shape)}")
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(self.preprocess(x))
        if z.ndim != 2 or z.shape[1] != self.num_classes:
            raise ValueError(f"model returned shape {tuple(z.shape)}, expected (N, {self.num_classes})")
        if self.num_classes == 1:
            return torch.cat([torch.zeros_like(z), z], dim=1)
        if self.fracture_index == 1:
            return z
        return z[:, [1 - self.fracture_index, self.fracture_index]]

    def train(self, mode: bool = True) -> CanonicalModel:
        # Always evaluated in eval mode: batch-norm statistics and dropout must not move during attacks.
        return super().train(False)


def wrap(net: nn.Module, **kwargs) -> CanonicalModel:
    """Wrap a raw network (e.g. in tests) with the canonical interface; see CanonicalModel for arguments."""
    return CanonicalModel(net, **kwargs)
