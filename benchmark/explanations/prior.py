"""The position prior (v3): where fractures lie in the canonical frame, learnt from the TRAINING split's masks.

Radiographs are framed around the injury, so fractures sit near the centre of the canonical image; a map that
knows nothing but that scores well on any localisation metric that compares a map with a mask (the review of
the v2 results: the centre prior beats most methods on AUC inside the anatomy). The prior is the density of
fracture pixels over the training split, every fractured image weighted equally:

    prior = mean over training images i of  mask_i / |mask_i|        (sums to 1)

It is committed as a small JSON file (``specs/v3/position_prior.json``, built by ``scripts/position_prior.py``
from the prepared dataset's training split, never from the evaluation images), summed into square cells of
``cell_px`` pixels; ``load_prior`` spreads each cell's mass evenly over its pixels. The spec names the file and
its sha256, so the config hash of a run covers the prior's content. Two users: ``endpoints.shuffled_auc``
(its negatives) and the reference maps ``ref_prior`` / ``ref_prior_anatomy``.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import FxbenchError
from ..paths import SPECS_DIR

FORMAT = "fxbench.position-prior/1"


class PriorParams(BaseModel):
    """Where the prior is: a path relative to fxbench's specs folder (``v3/position_prior.json``) or absolute,
    and the sha256 of the file's bytes (checked on load)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


def mask_density(masks: np.ndarray) -> np.ndarray:
    """N x H x W (or N x 1 x H x W) bool masks -> H x W float64 summing to 1: the mean over the images with a
    non-empty mask of mask / its size, so every fractured image weighs the same whatever its mask's size."""
    m = np.asarray(masks, dtype=bool)
    m = m.reshape(len(m), *m.shape[-2:])
    sizes = m.reshape(len(m), -1).sum(axis=1)
    keep = sizes > 0
    if not keep.any():
        raise ValueError("mask_density: no non-empty mask")
    per = m[keep].astype(np.float64) / sizes[keep][:, None, None]
    return per.mean(axis=0)


def to_cells(density: np.ndarray, cell: int) -> np.ndarray:
    """H x W -> (H / cell) x (W / cell): the mass of each cell."""
    h, w = density.shape
    if h % cell or w % cell:
        raise ValueError(f"cell {cell} does not divide the frame {h} x {w}")
    return density.reshape(h // cell, cell, w // cell, cell).sum(axis=(1, 3))


def from_cells(cells: np.ndarray, cell: int) -> np.ndarray:
    """The inverse of ``to_cells`` up to the cells' resolution: each cell's mass spread evenly over its pixels."""
    return np.kron(np.asarray(cells, dtype=np.float64), np.ones((cell, cell))) / (cell * cell)


def prior_document(density: np.ndarray, cell: int, meta: dict[str, Any]) -> dict[str, Any]:
    """The committed file's content: the cells' masses (6 significant digits) and where they came from."""
    cells = to_cells(density, cell)
    return {
        "format": FORMAT,
        **meta,
        "size": list(density.shape),
        "cell_px": cell,
        "cells": [[float(f"{v:.6g}") for v in row] for row in cells],
    }


def resolve(file: str) -> Path:
    p = Path(file)
    return p if p.is_absolute() else SPECS_DIR / p


@cache
def load_prior(file: str, sha256: str) -> np.ndarray:
    """The prior density (H x W float64, sums to 1, read-only) of the file named by the spec."""
    path = resolve(file)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise FxbenchError(f"position prior {file}: cannot read {path} ({e.strerror})") from None
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256:
        raise FxbenchError(f"position prior {file}: sha256 {got[:16]}... is not the spec's {sha256[:16]}...")
    doc = json.loads(blob)
    if doc.get("format") != FORMAT:
        raise FxbenchError(f"position prior {file}: format {doc.get('format')!r}, expected {FORMAT!r}")
    density = from_cells(np.asarray(doc["cells"], dtype=np.float64), int(doc["cell_px"]))
    if list(density.shape) != list(doc["size"]) or (density < 0).any() or density.sum() <= 0:
        raise FxbenchError(f"position prior {file}: cells do not make a {doc['size']} density")
    density = density / density.sum()
    density.flags.writeable = False
    return density


def prior_of(params: PriorParams) -> np.ndarray:
    return load_prior(params.file, params.sha256)
