"""Fingerprints over canonical content, never over encoder bytes, so they survive library upgrades.

fingerprint = sha256 of the lines "image_id TAB split TAB label TAB sha256(image pixels) TAB sha256(mask
pixels) LF" in image_id order, where image pixels are the 224 x 224 uint8 values row by row and mask pixels
the same with 0/255. ids_digest is the same without the pixel columns: equal for every source variant
(original release or the downscaled copy) that yields the same split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RowDigest:
    image_id: str
    split: str
    label: int
    image_sha256: str
    mask_sha256: str


def pixel_sha256(pixels: np.ndarray) -> str:
    arr = pixels.astype(np.uint8) * 255 if pixels.dtype == bool else pixels.astype(np.uint8, copy=False)
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def fingerprint(rows: Iterable[RowDigest]) -> str:
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r.image_id):
        h.update(f"{r.image_id}\t{r.split}\t{int(r.label)}\t{r.image_sha256}\t{r.mask_sha256}\n".encode())
    return h.hexdigest()


def ids_digest(rows: Iterable[RowDigest]) -> str:
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r.image_id):
        h.update(f"{r.image_id}\t{r.split}\t{int(r.label)}\n".encode())
    return h.hexdigest()
