"""Reference maps, scored exactly like the attribution methods, so every score can be read against them.

``ref_random`` is chance, ``ref_edge`` a model-independent image statistic (after Adebayo et al.'s sanity
checks: a method that scores like it may just be tracing edges), ``ref_centre`` a prior that knows nothing but
where anatomy tends to be, ``ref_anatomy`` (v2) a uniform map on the anatomy (foreground) that knows only
where the bone is, ``ref_mask`` the ceiling. v3 adds the stronger priors the review of v2 found: the centre
Gaussian times the anatomy (``ref_centre_anatomy``), and the position prior learnt from the training split's
masks alone (``ref_prior``) and times the anatomy (``ref_prior_anatomy``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from skimage.filters import sobel

from ..registry import Registry
from .prior import PriorParams, prior_of


class RefParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnatomyRefParams(RefParams):
    threshold: float  # anatomy = canonical pixels brighter than this (the square padding is exactly 0)


class CentreParams(RefParams):
    sigma: float  # standard deviation of the Gaussian, as a fraction of the image side


class CentreAnatomyParams(CentreParams):
    threshold: float  # the anatomy, as in AnatomyRefParams


class PriorRefParams(RefParams):
    prior: PriorParams  # the training split's fracture density (explanations/prior.py)


class PriorAnatomyParams(PriorRefParams):
    threshold: float


@dataclass(frozen=True)
class Reference:
    fn: Callable[..., torch.Tensor]  # (x, masks, params, generator) -> N x 1 x H x W, non-negative
    params: type[RefParams]


REFERENCES: Registry[Reference] = Registry("reference map")


def reference(name: str, params: type[RefParams] = RefParams):
    def add(fn):
        REFERENCES.register(name, Reference(fn, params))
        return fn

    return add


@reference("ref_random")
def _random(x, masks, p, generator):
    return torch.rand(x.shape, generator=generator, dtype=torch.float32)


@reference("ref_edge")
def _edge(x, masks, p, generator):
    maps = np.stack([sobel(img[0].astype(np.float64)) for img in x.cpu().numpy()])
    return torch.from_numpy(maps[:, None].astype(np.float32))


@reference("ref_centre", CentreParams)
def _centre(x, masks, p, generator):
    h, w = x.shape[-2:]
    r = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2) / (p.sigma * h)
    c = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2) / (p.sigma * w)
    g = torch.exp(-0.5 * (r[:, None] ** 2 + c[None, :] ** 2)).float()
    return g.expand(x.shape[0], 1, h, w).clone()


@reference("ref_anatomy", AnatomyRefParams)
def _anatomy(x, masks, p, generator):
    return (x.cpu() > p.threshold).float()


@reference("ref_centre_anatomy", CentreAnatomyParams)
def _centre_anatomy(x, masks, p, generator):
    """v3: the centre Gaussian on the anatomy only (0 on the padding and dark air)."""
    return _centre(x, masks, p, generator) * _anatomy(x, masks, p, generator)


def _prior_map(x, p) -> torch.Tensor:
    d = torch.from_numpy(np.array(prior_of(p.prior), dtype=np.float32))
    if tuple(d.shape) != tuple(x.shape[-2:]):
        raise ValueError(f"position prior of shape {tuple(d.shape)} for images of {tuple(x.shape[-2:])}")
    return (d / d.max()).expand(x.shape[0], 1, *d.shape).clone()


@reference("ref_prior", PriorRefParams)
def _prior(x, masks, p, generator):
    """v3: the training split's fracture density, the same map on every image: knows where fractures
    usually are and nothing about this image."""
    return _prior_map(x, p)


@reference("ref_prior_anatomy", PriorAnatomyParams)
def _prior_anatomy(x, masks, p, generator):
    """v3: the training prior on this image's anatomy: where fractures usually are, where there is bone."""
    return _prior_map(x, p) * _anatomy(x, masks, p, generator)


@reference("ref_mask")
def _mask(x, masks, p, generator):
    return masks.float().cpu()


def reference_maps(
    name: str, x: torch.Tensor, masks: torch.Tensor, *, params: RefParams, seed: int
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return REFERENCES.get(name).fn(x.cpu(), masks, params, generator)
