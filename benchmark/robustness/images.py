"""Reading the kept adversarial images back (used by the explanation battery)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

HEADLINE = "linf-4"  # must match `headline` in specs/v1/robustness.yaml (a test checks it)


def adversarial_images(tensors: Mapping[str, torch.Tensor], image_ids: Sequence[str], clean_x: torch.Tensor,
                       *, budget: str = HEADLINE) -> torch.Tensor:
    """``clean_x`` (N x 1 x H x W, in the order of ``image_ids``) with each image replaced by its kept
    adversarial example ``adv/<budget>/<image_id>`` where there is one. Images without one (robust at the
    budget, or misclassified clean) stay clean: for them the clean image is the worst case the cascade found.
    """
    if clean_x.ndim != 4 or clean_x.shape[0] != len(image_ids):
        raise ValueError(f"clean_x must be N x 1 x H x W with N = {len(image_ids)}, got {tuple(clean_x.shape)}")
    out = clean_x.clone()
    for i, image_id in enumerate(image_ids):
        adv = tensors.get(f"adv/{budget}/{image_id}")
        if adv is not None:
            if tuple(adv.shape) != tuple(clean_x.shape[1:]):
                raise ValueError(f"adv/{budget}/{image_id} has shape {tuple(adv.shape)}, expected "
                                 f"{tuple(clean_x.shape[1:])}")
            out[i] = adv.to(device=out.device, dtype=out.dtype)
    return out


def has_adversarial(tensors: Mapping[str, torch.Tensor], image_ids: Sequence[str], *,
                    budget: str = HEADLINE) -> torch.Tensor:
    """Bool (N,): which images have a kept adversarial example at ``budget``."""
    return torch.tensor([f"adv/{budget}/{i}" in tensors for i in image_ids], dtype=torch.bool)
