"""The attacked inputs of one explanation shard: the robustness battery's stored points, decoded and checked.

v1 (``clean_fallback``): an image without a stored point stands in with its clean image. v2: the robustness
battery stores the headline attack's final point for every fractured image classified correctly clean,
flipped or not; an image without one is never replaced by its clean image: its under-attack scores are NaN
with the reason (``AttackedInputs.missing``). The tensor key format belongs to ``fxbench.robustness.images``.
v3 (``under_attack.points: fixed_step``) reads nothing from the robustness battery: ``perturbed.py`` makes the
attacked point and the noise control from the model and returns the same typed object, with ``noise`` set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..battery import RunContext
from ..errors import EvaluationBug
from ..results.metric_ids import clean_id, robust_id
from ..robustness.images import adv_key, adv_prefix
from .config import XaiConfig


@dataclass(frozen=True)
class AttackedInputs:
    """The shard's images (in its order) under the headline attack."""

    attack: str  # the threat id, e.g. linf-4
    x: torch.Tensor  # N x 1 x H x W: the stored point, or the clean image as a placeholder where there is none
    attacked: list[bool]  # a point was stored for the image
    flipped: list[float]  # 1.0 the stored point flipped the label, 0.0 not, NaN unknown or none stored
    missing: list[str | None]  # why no point was stored (None where one was)
    noise: torch.Tensor | None = None  # v3: the random-noise control at the same eps (same rows as x), or None

    def scored(self, clean_fallback: bool) -> np.ndarray:
        """Which images get under-attack scores: v1 every image (clean ones standing in), v2 attacked ones."""
        attacked = np.asarray(self.attacked, dtype=bool)
        return np.ones(len(attacked), dtype=bool) if clean_fallback else attacked


def _column_by_id(ctx: RunContext, battery: str, col: str) -> dict[str, Any]:
    prev = ctx.previous.get(battery)
    if prev is None or col not in prev.samples:
        return {}
    return dict(zip(prev.samples["image_id"], prev.samples[col]))


def load_attacked(
    ctx: RunContext, ids: list[str], x: torch.Tensor, cfg: XaiConfig
) -> tuple[AttackedInputs | None, dict[str, Any]]:
    """The attacked inputs of the images ``ids`` (clean images ``x``), or None; and a status for info."""
    missing: list[str | None] = [None] * len(ids)
    if cfg.under_attack is None:
        return None, {"status": "not in spec"}
    tag = cfg.under_attack.attack
    prefix = adv_prefix(tag)
    tensors = ctx.load_tensors("robustness")
    if not any(k.startswith(prefix) for k in tensors) and "robustness" not in ctx.previous:
        return None, {
            "status": "skipped",
            "reason": f"the robustness battery stored no '{prefix}*' images",
        }
    broken = _column_by_id(ctx, "robustness", robust_id(tag, "broken"))
    correct = _column_by_id(ctx, "clean", clean_id("correct"))
    images, attacked, flipped = [], [], []
    for i, image_id in enumerate(ids):
        t = tensors.get(adv_key(tag, image_id))
        if t is None:
            images.append(x[i])  # a placeholder: v2 never scores it (v1 scored it as the clean image)
            attacked.append(False)
            flipped.append(np.nan)
            if correct.get(image_id) == 0:
                missing[i] = "misclassified clean: not attacked"
            else:
                missing[i] = f"no attacked point stored ({adv_key(tag, image_id)})"
            continue
        t = t.detach().to("cpu", torch.float32)
        if t.numel() != x[i].numel() or not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise EvaluationBug(
                f"robustness tensor {adv_key(tag, image_id)}: shape {tuple(t.shape)} or values "
                "outside [0, 1]; expected a canonical 1 x 224 x 224 image"
            )
        images.append(t.reshape(x[i].shape))
        attacked.append(True)
        b = broken.get(image_id)
        flipped.append(np.nan if b is None or b != b else float(bool(b)))
    status = {
        "status": "computed",
        "attack": tag,
        "adversarial": int(sum(attacked)),
        "clean_fallback": int(len(attacked) - sum(attacked)) if cfg.under_attack.clean_fallback else 0,
    }
    if not cfg.under_attack.clean_fallback:
        f = np.asarray(flipped)
        status.update(
            {
                "scored": int(sum(attacked)),
                "flipped": int((f == 1).sum()),
                "not_flipped": int((f == 0).sum()),
                "flip_unknown": int(sum(attacked) - (f == 1).sum() - (f == 0).sum()),
                "not_scored": int(len(attacked) - sum(attacked)),
            }
        )
    return AttackedInputs(tag, torch.stack(images), attacked, flipped, missing), status


def attacked_point(tensors: dict[str, torch.Tensor], attack: str, image_id: str) -> torch.Tensor | None:
    """The stored point of one image (the gallery's), or None."""
    return tensors.get(adv_key(attack, image_id))
