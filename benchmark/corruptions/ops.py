"""The corruption operations: MedMNIST-C's image operations (Di Salvo et al., 2024; PyPI ``medmnistc`` 0.1.0),
re-implemented with the libraries MedMNIST-C itself calls (Pillow, torchvision, numpy), on canonical images.

Why not the package: ``medmnistc`` cannot be imported without the ImageMagick system library (its blur
module imports Wand at import time, for a motion blur the X-ray set does not use), and it pins
``scikit-image==0.23.2`` (fxbench's Quantus runs on 0.26) and ``medmnist==3.0.1``. docs/corruptions.md has the
details; ``scripts/medmnistc_reference.py`` records the package's own outputs, which
tests/test_v3_corruptions_reference.py compares with these pixel for pixel.

The pipeline is MedMNIST-C's for a grayscale dataset: the 8-bit grayscale image is made RGB (three equal
channels), the operation runs on the RGB image, and the result is converted back to grayscale with Pillow
(ITU-R 601 luma). Noise is therefore drawn per channel, as in MedMNIST-C's X-ray sets. What differs: every
image draws its noise from its own seed (``derive_seed(run seed, "corruptions", corruption, severity,
image id)``), where MedMNIST-C draws from one stream over a whole test set in its order; severity 0 is the
image unchanged. Each operation takes the RGB image, its parameter at the chosen severity and the image's
seed, and returns H x W x 3 uint8.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

from ..registry import Registry

OpFn = Callable[[Image.Image, float, int], np.ndarray]


@dataclass(frozen=True)
class Op:
    fn: OpFn
    random: bool  # draws random numbers (from the image's seed)
    parameter: str  # what the severity parameter means (docs/corruptions.md, spec comments)


OPS: Registry[Op] = Registry("corruption operation")


def op(name: str, *, parameter: str, random: bool = False):
    def add(fn: OpFn) -> OpFn:
        OPS.register(name, Op(fn, random, parameter))
        return fn

    return add


def _unit(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64) / 255.0


def _to_u8(unit: np.ndarray) -> np.ndarray:
    """MedMNIST-C's conversion back to 8 bits: clip to [0, 1], scale, truncate (not round)."""
    return (np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)


@op("pixelate", parameter="resize factor: box-filtered down to factor x side, then back up")
def pixelate(img: Image.Image, factor: float, seed: int) -> np.ndarray:
    w, h = img.size
    small = img.resize((int(w * factor), int(h * factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


@op("jpeg", parameter="JPEG quality (Pillow's encoder, RGB)")
def jpeg(img: Image.Image, quality: float, seed: int) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


@op("gaussian_noise", parameter="standard deviation of additive noise on [0, 1] intensities", random=True)
def gaussian_noise(img: Image.Image, std: float, seed: int) -> np.ndarray:
    x = _unit(img)
    return _to_u8(x + np.random.RandomState(seed).normal(size=x.shape, scale=std))


@op("speckle_noise", parameter="standard deviation of multiplicative noise: x + x * n", random=True)
def speckle_noise(img: Image.Image, std: float, seed: int) -> np.ndarray:
    x = _unit(img)
    return _to_u8(x + x * np.random.RandomState(seed).normal(size=x.shape, scale=std))


@op("impulse_noise", parameter="share of pixels (per channel) set to 0 or 1, half each on average", random=True)
def impulse_noise(img: Image.Image, amount: float, seed: int) -> np.ndarray:
    # scikit-image's random_noise(mode="s&p") on a non-negative image, as MedMNIST-C calls it: a pixel is hit
    # when a uniform draw is <= amount, and a second draw <= 0.5 makes it salt (1), else pepper (0)
    x = _unit(img)
    rng = np.random.default_rng(seed)
    hit = rng.random(x.shape) <= amount
    salt = rng.random(x.shape) <= 0.5
    out = x.copy()
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return _to_u8(out)


@op("shot_noise", parameter="photons per unit intensity: Poisson(x * rate) / rate (smaller is noisier)", random=True)
def shot_noise(img: Image.Image, rate: float, seed: int) -> np.ndarray:
    x = _unit(img)
    return _to_u8(np.random.RandomState(seed).poisson(x * rate) / rate)


@contextmanager
def _one_thread():
    """One small convolution per image: torch's thread pool costs more than it saves (measured on 2 busy cores:
    64 CPU-ms an image with 2 threads, 6 with 1); the blur's numbers do not depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@op("gaussian_blur", parameter="kernel size in pixels (torchvision's sigma = 0.3 ((k - 1) / 2 - 1) + 0.8)")
def gaussian_blur(img: Image.Image, kernel: float, seed: int) -> np.ndarray:
    from torchvision.transforms import functional as tvf

    # torchvision's tensor path, which its PIL path converts to (same float convolution and rounding)
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    with _one_thread():
        return tvf.gaussian_blur(t, kernel_size=int(kernel)).permute(1, 2, 0).numpy()


@op("brightness", parameter="Pillow ImageEnhance.Brightness factor (blend with black)")
def brightness(img: Image.Image, factor: float, seed: int) -> np.ndarray:
    return np.asarray(ImageEnhance.Brightness(img).enhance(factor))


@op("contrast", parameter="Pillow ImageEnhance.Contrast factor (blend with the image's mean grey)")
def contrast(img: Image.Image, factor: float, seed: int) -> np.ndarray:
    return np.asarray(ImageEnhance.Contrast(img).enhance(factor))


@op("gamma", parameter="gamma of torchvision's adjust_gamma (gain 1): 255 x (v / 255) ** gamma")
def gamma(img: Image.Image, g: float, seed: int) -> np.ndarray:
    from torchvision.transforms import functional as tvf

    return np.asarray(tvf.adjust_gamma(img, g, gain=1))


def to_u8(x: torch.Tensor) -> np.ndarray:
    """Canonical images (N x 1 x H x W in [0, 1]) -> N x H x W uint8 (canonical images are 8-bit: exact)."""
    return np.rint(x[:, 0].detach().cpu().double().clamp(0, 1).numpy() * 255).astype(np.uint8)


def from_u8(u8: np.ndarray) -> torch.Tensor:
    """N x H x W uint8 -> canonical float32 N x 1 x H x W, the way the dataset makes them (uint8 / 255)."""
    return torch.from_numpy(u8.astype(np.float32) / 255.0).unsqueeze(1)


def corrupt_u8(gray: np.ndarray, op_name: str, param: float, seed: int) -> np.ndarray:
    """One H x W uint8 grayscale image through MedMNIST-C's grayscale pipeline (gray -> RGB -> op -> gray)."""
    rgb = Image.fromarray(gray).convert("RGB")
    out = OPS.get(op_name).fn(rgb, param, seed)
    return np.asarray(Image.fromarray(np.ascontiguousarray(out, dtype=np.uint8)).convert("L"))


def corrupt(x: torch.Tensor, op_name: str, param: float | None, seeds: Sequence[int]) -> torch.Tensor:
    """Canonical images corrupted by ``op_name`` at ``param`` (None: severity 0, the images unchanged), image i
    with ``seeds[i]``. Returns a new float32 tensor on the CPU."""
    if len(seeds) != len(x):
        raise ValueError(f"corrupt: {len(seeds)} seeds for {len(x)} images")
    if param is None:
        return x.detach().cpu().float().clone()
    u8 = to_u8(x)
    return from_u8(np.stack([corrupt_u8(g, op_name, param, int(s)) for g, s in zip(u8, seeds)]))
