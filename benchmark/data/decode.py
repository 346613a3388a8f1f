"""Decode one source image into canonical image + mask; runs in worker processes, so it imports little."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from . import geometry
from .fingerprint import pixel_sha256


@dataclass(frozen=True)
class DecodeTask:
    image_id: str
    path: str
    fractured: bool
    polygons: list[list[float]]
    coco_size: tuple[int, int] | None


@dataclass
class Decoded:
    image_id: str
    source_sha256: str
    exclusion: str | None = None  # reason when the image cannot be used
    problem: str | None = None  # a source inconsistency that must stop prepare (DataError in the parent)
    image_png: bytes = b""
    mask_png: bytes = b""
    image_sha256: str = ""
    mask_sha256: str = ""
    exif_orientation: int = 1
    width: int = 0  # as displayed, after EXIF
    height: int = 0
    flags: list[str] = field(default_factory=list)


def decode(task: DecodeTask) -> Decoded:
    with open(task.path, "rb") as f:
        data = f.read()
    out = Decoded(image_id=task.image_id, source_sha256=hashlib.sha256(data).hexdigest())
    try:
        oriented = geometry.open_oriented(data)
    except OSError as e:
        msg = str(e)
        kind = "truncated JPEG" if "truncated" in msg.lower() else "unreadable image"
        out.exclusion = f"{kind}: Pillow cannot decode the whole file ({msg})"
        return out
    out.exif_orientation = oriented.exif_orientation
    out.width, out.height = oriented.size
    if oriented.exif_orientation != 1:
        out.flags.append(f"exif-orientation-{oriented.exif_orientation}")
    if task.coco_size is not None and tuple(task.coco_size) != oriented.size:
        out.problem = (
            f"annotation size {task.coco_size[0]} x {task.coco_size[1]} differs from the image as "
            f"displayed ({out.width} x {out.height}, EXIF orientation {oriented.exif_orientation})"
        )
        return out
    try:
        pixels = geometry.canonical_image(oriented.image)
    except ValueError as e:
        out.exclusion = f"unusable image: {e}"
        return out
    if task.polygons:
        w, h = oriented.size
        coverage = geometry.mask_coverage(task.polygons, width=w, height=h)
        mask = geometry.binarise(coverage)
        if not (coverage >= 0.5).any():
            out.flags.append("mask-below-half-pixel")
    else:
        mask = np.zeros((geometry.SIZE, geometry.SIZE), dtype=bool)
        if task.fractured:
            out.flags.append("no-polygon")
    out.image_png, out.mask_png = geometry.encode_png(pixels), geometry.encode_png(mask)
    out.image_sha256, out.mask_sha256 = pixel_sha256(pixels), pixel_sha256(mask)
    return out
