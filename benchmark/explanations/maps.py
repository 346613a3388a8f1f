"""The maps a shard or the gallery scores (attribution methods and reference maps), and what metrics see.

``compute_maps`` gives the reduced map the localisation metrics score and the signed map faithfulness sees
(v2); ``explainer`` is Quantus's explain_func for the metrics that re-explain perturbed inputs;
``metric_inputs`` packs images, maps and masks for a metric; ``for_localisation`` is the map the
localisation metrics score (v3: blurred to the spec's common scale, ``smoothing.sigma_px``).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import torch

from .config import XaiConfig
from .methods import attribute, one_channel
from .metrics import MetricInputs, Scores
from .references import reference_maps


@contextmanager
def quiet():
    """Captum announces every hook it sets; the battery reports what matters in info and flags."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def compute_maps(
    name: str,
    model,
    x: torch.Tensor,
    masks: torch.Tensor,
    cfg: XaiConfig,
    seed: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the reduced map the localisation metrics see, the signed map faithfulness sees in v2)."""
    if name in cfg.references:
        m = reference_maps(name, x, masks, params=cfg.references[name], seed=seed)
        return m, m
    p = cfg.methods[name]
    torch.manual_seed(seed)  # SmoothGrad's noise
    with quiet():
        signed = attribute(model, x.to(device), name=name, params=p, batch_size=cfg.batch_size, signed=True)
        if name == "smoothgrad":  # its rule sits inside the noise average: a separate call, same noise
            torch.manual_seed(seed)
            reduced = attribute(model, x.to(device), name=name, params=p, batch_size=cfg.batch_size)
        else:
            reduced = one_channel(signed, p.rule)
    return reduced, signed


def smooth(maps: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Each map (N x 1 x H x W) blurred with a Gaussian of std ``sigma_px`` pixels (scipy, reflecting at the
    border so the map's total mass stays in the frame; truncated at 4 std)."""
    from scipy.ndimage import gaussian_filter

    a = maps.detach().cpu().numpy().astype(np.float32)
    return torch.from_numpy(gaussian_filter(a, sigma=(0, 0, sigma_px, sigma_px), mode="reflect", truncate=4.0))


def for_localisation(name: str, maps: torch.Tensor, cfg: XaiConfig) -> torch.Tensor:
    """v3: the map at the spec's common scale (a Gaussian of ``smoothing.sigma_px``), so gradient maps and
    Grad-CAM are compared at one scale; maps in ``smoothing.skip`` (the mask ceiling) and every map of a spec
    without ``smoothing`` stay as they are."""
    sm = cfg.smoothing
    if sm is None or sm.sigma_px == 0 or name in sm.skip:
        return maps
    return smooth(maps, sm.sigma_px)


def explainer(name: str, cfg: XaiConfig, device: torch.device, signed: bool = False):
    """Quantus's explain_func for metrics that re-explain perturbed inputs (the map the metric saw)."""

    def explain(model, inputs, targets, **_):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
        with quiet():
            return attribute(
                model, x, name=name, params=cfg.methods[name], target=t, batch_size=cfg.batch_size, signed=signed
            ).numpy()

    return explain


def metric_inputs(x, maps, masks, model, device, cfg: XaiConfig, seed: int) -> MetricInputs:
    """What every metric scores: images, their maps and masks (numpy), the model, and a seed."""
    return MetricInputs(
        x.numpy(),
        maps.numpy(),
        masks.numpy(),
        model,
        None,
        str(device),
        cfg.batch_size,
        seed,
        ties=cfg.ties,
        constant_maps=cfg.constant_maps,
    )


def p_fracture(model, x: torch.Tensor, device) -> np.ndarray:
    with torch.no_grad():
        return model(x.to(device)).float().softmax(dim=1)[:, 1].cpu().numpy()


def completeness_error(model, x: torch.Tensor, signed: torch.Tensor, device) -> Scores:
    """|sum of the attributions - (f(x) - f(black))| / |f(x) - f(black)|, f the fracture logit: how far
    Integrated Gradients (baseline black) is from its completeness axiom at the spec's number of steps."""
    with torch.no_grad():
        fx = model(x.to(device))[:, 1].double().cpu()
        f0 = model(torch.zeros_like(x).to(device))[:, 1].double().cpu()
    delta = (fx - f0).numpy()
    total = signed.reshape(len(signed), -1).double().sum(dim=1).numpy()
    small = np.abs(delta) < 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(small, np.nan, np.abs(total - delta) / np.abs(delta))
    reasons = ["f(x) = f(black): the relative error is undefined" if b else None for b in small]
    return Scores(err, reasons)
