"""Explanation stability under corruption: an explanation endpoint, a function of (maps, masks, images) alone,
scored on clean and corrupted fractured images.

The interface is small on purpose: an endpoint takes non-negative maps (N x 1 x H x W), boolean masks and the
images, and returns one score per image (NaN where undefined). The explanation battery's v3 primary
localisation endpoint is being defined elsewhere; until it is registered here, the spec names
``relevance_mass_enrichment``. The mass share it divides is the explanation battery's own
``relevance_mass_accuracy`` (one rule: an all-zero map carries no mass, 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..registry import Registry

EndpointFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Endpoint:
    fn: EndpointFn  # (maps, masks, images) -> (N,) float64
    higher_is_better: bool


ENDPOINTS: Registry[Endpoint] = Registry("explanation endpoint")


def endpoint(name: str, *, higher_is_better: bool):
    def add(fn: EndpointFn) -> EndpointFn:
        ENDPOINTS.register(name, Endpoint(fn, higher_is_better))
        return fn

    return add


@endpoint("relevance_mass_enrichment", higher_is_better=True)
def relevance_mass_enrichment(maps: np.ndarray, masks: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(share of the map's mass inside the mask) / (share of the image inside the mask): 1 for a uniform map
    (chance), 1 / area share for the mask itself (the ceiling), 0 for a map without mass on the mask. NaN for an
    empty mask (the reason says so)."""
    from ..explanations.metrics import METRICS, MetricInputs, MetricParams

    m = METRICS.get("relevance_mass_accuracy")
    inputs = MetricInputs(np.asarray(images, dtype=np.float32), np.asarray(maps, dtype=np.float32),
                          np.asarray(masks, dtype=bool), ties="share", constant_maps="score")
    mass = m.score(inputs, MetricParams()).values
    area = np.asarray(masks, dtype=bool).reshape(len(masks), -1).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, mass / area, np.nan)


def attribution_maps(model: torch.nn.Module, x: torch.Tensor, *, method: str, params: dict, batch_size: int,
                     device: torch.device) -> torch.Tensor:
    """The explanation battery's reduced map of ``method`` (fracture logit), N x 1 x H x W on the CPU."""
    from ..explanations.maps import quiet
    from ..explanations.methods import METHODS, attribute

    p = METHODS.get(method).params.model_validate(params)
    with quiet():
        return attribute(model, x.to(device), name=method, params=p, batch_size=batch_size)


def score(name: str, maps: torch.Tensor, masks: torch.Tensor, images: torch.Tensor) -> np.ndarray:
    return np.asarray(ENDPOINTS.get(name).fn(maps.numpy(), masks.numpy(), images.numpy()), dtype=np.float64)
