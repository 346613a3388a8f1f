"""Quantus itself on the model metrics: the reference path (``fast.py`` reproduces it batched).

Shared by ``metrics.py`` (which runs Quantus where ``fast.path_for`` says ``quantus``) and ``fast.py`` (which
falls back to Quantus's MPRT where its shortcut would change the random stream), so neither imports the other
for it.
"""

from __future__ import annotations

import numpy as np
import quantus
import torch

QUIET = {"disable_warnings": True}  # every Quantus metric is built with this: fxbench reports what matters


def call_once(inp, m, softmax, explain: bool, i: slice, seed: int) -> list:
    """One Quantus call on the images ``i`` of ``inp`` (a ``MetricInputs``), NumPy and torch seeded first."""
    np.random.seed(seed % (2**32))  # Quantus perturbs with NumPy's global generator
    torch.manual_seed(seed)  # SmoothGrad noise when re-explaining
    kwargs = {"explain_func": inp.explain, "explain_func_kwargs": {}} if explain else {}
    return list(
        m(
            model=inp.model,
            x_batch=inp.x[i],
            y_batch=np.ones(len(inp.x[i]), dtype=np.int64),
            a_batch=inp.maps[i],
            channel_first=True,
            softmax=softmax,
            device=inp.device,
            batch_size=inp.batch_size,
            **kwargs,
        )
    )


def call(m, inp, softmax: bool | None, explain: bool = False, random: bool = True) -> list:
    """``random``: the metric draws random numbers per image from a shared generator (FaithfulnessCorrelation's
    subsets, MaxSensitivity's noise), so v2 runs it image by image with the image's seed; deterministic
    metrics (PixelFlipping, MPRT with its fixed seed) run on the whole batch, normalisation off."""
    if inp.seeds is None or not random:  # v1, or a deterministic metric: one call on the whole batch
        return call_once(inp, m, softmax, explain, slice(None), inp.seed)
    out: list = []
    for j, seed in enumerate(inp.seeds):  # v2: image by image, each with its own seed
        out += call_once(inp, m, softmax, explain, slice(j, j + 1), int(seed))
    return out


def per_image(inp) -> dict:
    """v2: no normalisation across the batch (Quantus's default divides by the batch's maximum)."""
    return {"normalise": False, "abs": False} if inp.seeds is not None else {}


def quantus_mprt(inp, p) -> np.ndarray:
    """Quantus's MPRT (``p``: ``MPRTParams``) on the trained and the fully randomised model: 2 maps per image."""
    m = quantus.MPRT(
        layer_order=p.layer_order,
        seed=inp.seed % (2**31),
        skip_layers=True,  # explain only the trained and the fully randomised model: 2 maps per image
        return_last_correlation=True,
        abs=False,
        normalise=False,
        **QUIET,
    )
    return np.asarray(call(m, inp, False, explain=True, random=False), dtype=float)


def clipped_uniform_noise(arr, indices, **kwargs):
    """Quantus's batch uniform noise, then back into the canonical range [0, 1]: a radiograph has no pixel
    below black or above white."""
    return np.clip(quantus.functions.perturb_func.batch_uniform_noise(arr, indices, **kwargs), 0, 1)
