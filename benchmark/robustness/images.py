"""The kept adversarial images: the tensor key format (``adv/<budget>/<image_id>``) and reading them back.

The robustness battery stores them (``ShardOutput.tensors``); later batteries read them through
``ctx.load_tensors("robustness")`` (the explanation battery: ``fxbench.explanations.attacked``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

HEADLINE = "linf-4"  # must match `headline` in specs/v1 and v2 robustness.yaml (a test checks it)


def adv_prefix(budget: str = HEADLINE) -> str:
    """The key prefix of every kept point at ``budget``."""
    return f"adv/{budget}/"


def adv_key(budget: str, image_id: str) -> str:
    """The tensor key of the kept attacked point of ``image_id`` at ``budget``: ``adv/<budget>/<image_id>``."""
    return adv_prefix(budget) + image_id


def adversarial_images(tensors: Mapping[str, torch.Tensor], image_ids: Sequence[str], clean_x: torch.Tensor,
                       *, budget: str = HEADLINE) -> torch.Tensor:
    """``clean_x`` (N x 1 x H x W, in the order of ``image_ids``) with each image replaced by its kept
    attacked point ``adv/<budget>/<image_id>`` where there is one. v2 keeps one for every image of the kept
    label that is classified correctly clean: the adversarial example where the cascade broke it
    (``robust/<budget>/broken``), otherwise APGD-CE's highest-loss point at the budget. v1 kept broken images
    only. Images without one (misclassified clean, or the other label) stay clean.
    """
    if clean_x.ndim != 4 or clean_x.shape[0] != len(image_ids):
        raise ValueError(f"clean_x must be N x 1 x H x W with N = {len(image_ids)}, got {tuple(clean_x.shape)}")
    out = clean_x.clone()
    for i, image_id in enumerate(image_ids):
        key = adv_key(budget, image_id)
        adv = tensors.get(key)
        if adv is not None:
            if tuple(adv.shape) != tuple(clean_x.shape[1:]):
                raise ValueError(f"{key} has shape {tuple(adv.shape)}, expected {tuple(clean_x.shape[1:])}")
            out[i] = adv.to(device=out.device, dtype=out.dtype)
    return out


def has_adversarial(tensors: Mapping[str, torch.Tensor], image_ids: Sequence[str], *,
                    budget: str = HEADLINE) -> torch.Tensor:
    """Bool (N,): which images have a kept attacked point at ``budget`` (broken or not: see
    ``robust/<budget>/broken`` for which of them changed the prediction)."""
    return torch.tensor([adv_key(budget, i) in tensors for i in image_ids], dtype=torch.bool)
