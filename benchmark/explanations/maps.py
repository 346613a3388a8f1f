"""The maps a shard or the gallery scores (attribution methods and reference maps), and what metrics see.

``compute_maps`` gives the reduced map the localisation metrics score and the signed map faithfulness sees
(v2); ``explainer`` is Quantus's explain_func for the metrics that re-explain perturbed inputs;
``metric_inputs`` packs images, maps and masks for a metric.
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
