"""The canonical geometry: one transform from a source radiograph (and its polygons) to 224 x 224 pixels.

Image: EXIF orientation applied (the frame the annotators drew on), 8-bit grayscale, padded with black to a
square with the image centred (an odd padding pixel goes to the bottom/right), resized to 224 x 224 with
Pillow's LANCZOS filter (antialiased when shrinking).

Mask: every polygon of the image, in the annotators' frame (COCO width/height = the EXIF-applied size), is
moved by the same padding and scaling, sampled at 8 x 8 sub-pixel centres per canonical pixel, and a canonical
pixel is in the mask when at least half of its area (32 of 64 sub-pixels) is covered by the union of the
polygons. If a non-empty polygon set covers no pixel that much, its best-covered pixel is kept so that no
fractured image ends with an empty mask.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

SIZE = 224
SUPERSAMPLE = 8
IMAGE_FILTER = Image.Resampling.LANCZOS
EXIF_ORIENTATION_TAG = 0x0112

# Modes Pillow converts to 8-bit luminance without losing meaning (16-bit and float modes would clip).
_CONVERTIBLE = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}


@dataclass(frozen=True)
class Placement:
    """Where an image of ``width`` x ``height`` (annotators' frame) lands in the canonical square."""

    width: int
    height: int
    side: int  # padded square side, in source pixels
    left: int  # black columns added on the left
    top: int  # black rows added on the top

    @property
    def scale(self) -> float:
        return SIZE / self.side

    def to_canonical(self, x: float, y: float) -> Point:
        """A point in continuous source coordinates (pixel (i, j) covers [i, i+1) x [j, j+1)) -> canonical."""
        return Point((x + self.left) * self.scale, (y + self.top) * self.scale)


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class OrientedImage:
    image: Image.Image  # the EXIF-applied image, as displayed (the annotators' frame)
    exif_orientation: int  # 1 when the file has no tag
    stored_size: tuple[int, int]  # (width, height) of the pixels in the file

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def placement(width: int, height: int) -> Placement:
    side = max(width, height)
    return Placement(
        width=width, height=height, side=side, left=(side - width) // 2, top=(side - height) // 2
    )


def open_oriented(source: str | bytes | Image.Image) -> OrientedImage:
    """Decode fully (a truncated file raises OSError) and apply the EXIF orientation."""
    if isinstance(source, Image.Image):
        im = source
    else:
        im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    im.load()
    orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    stored = im.size
    shown = ImageOps.exif_transpose(im)
    return OrientedImage(image=shown, exif_orientation=orientation, stored_size=stored)


def to_gray(im: Image.Image) -> Image.Image:
    if im.mode == "L":
        return im
    if im.mode not in _CONVERTIBLE:
        raise ValueError(f"unsupported image mode {im.mode!r} (expected 8-bit grayscale or colour)")
    return im.convert("L")


def canonical_image(im: Image.Image) -> np.ndarray:
    """An image already in the annotators' frame -> uint8 (224, 224)."""
    gray = to_gray(im)
    p = placement(*gray.size)
    square = Image.new("L", (p.side, p.side), 0)
    square.paste(gray, (p.left, p.top))
    return np.asarray(square.resize((SIZE, SIZE), IMAGE_FILTER), dtype=np.uint8)


def mask_coverage(polygons: Sequence[Sequence[float]], *, width: int, height: int) -> np.ndarray:
    """Fraction (0..1, float32, 224 x 224) of each canonical pixel covered by the union of the polygons.

    Each polygon is a flat COCO list [x0, y0, x1, y1, ...] in the annotators' frame of width x height. A
    sub-pixel counts when its centre is inside a polygon (even-odd rule), computed exactly in float64 rather
    than with a drawing library, whose rounding at ties moves edges by a sub-pixel depending on the offset.
    """
    p = placement(width, height)
    cov = np.zeros((SIZE, SIZE), dtype=np.float32)
    canon = [
        np.array(
            [
                [c.x, c.y]
                for c in (
                    p.to_canonical(float(x), float(y)) for x, y in zip(poly[0::2], poly[1::2], strict=True)
                )
            ]
        )
        for poly in polygons
    ]
    if not canon:
        return cov
    # Only the polygons' bounding box: fracture outlines cover a small part of the image.
    allpts = np.concatenate(canon)
    x0, y0 = (max(0, math.floor(v)) for v in allpts.min(axis=0))
    x1, y1 = (min(SIZE, math.ceil(v)) for v in allpts.max(axis=0))
    if x1 <= x0 or y1 <= y0:
        return cov
    px = x0 + (np.arange((x1 - x0) * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # sub-pixel centres
    py = y0 + (np.arange((y1 - y0) * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    inside = np.zeros((py.size, px.size), dtype=bool)
    for poly in canon:
        inside |= _inside(poly, px, py)
    counts = inside.reshape(y1 - y0, SUPERSAMPLE, x1 - x0, SUPERSAMPLE).sum(axis=(1, 3))
    cov[y0:y1, x0:x1] = counts / np.float32(SUPERSAMPLE * SUPERSAMPLE)
    return cov


def _inside(poly: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd test of every (px, py) grid point against one polygon (crossings of a ray towards +x)."""
    a, b = poly, np.roll(poly, -1, axis=0)
    ya, yb = a[:, 1:2], b[:, 1:2]  # (edges, 1)
    crosses = (ya > py) != (yb > py)  # (edges, rows): the edge spans this row's height
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = a[:, 0:1] + (py - ya) * (b[:, 0:1] - a[:, 0:1]) / (yb - ya)
    hits = crosses[:, :, None] & (px[None, None, :] < x_at[:, :, None])  # (edges, rows, cols)
    return np.logical_xor.reduce(hits, axis=0)


def canonical_mask(polygons: Sequence[Sequence[float]], *, width: int, height: int) -> np.ndarray:
    """Binary mask (bool, 224 x 224): pixels at least half covered by the union of the polygons."""
    return binarise(mask_coverage(polygons, width=width, height=height))


def binarise(coverage: np.ndarray) -> np.ndarray:
    """Coverage -> bool mask: at least half covered; if nothing is, the best-covered pixel(s) when any."""
    mask = coverage >= 0.5
    if not mask.any() and coverage.max() > 0:
        mask = coverage == coverage.max()
    return mask


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 or bool (224, 224) -> PNG bytes in mode L (bool becomes 0/255). Fast zlib level 1: encoding
    dominates prepare time, and fingerprints are over pixels, so the bytes may differ between versions."""
    arr = pixels.astype(np.uint8) * 255 if pixels.dtype == bool else pixels
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)
