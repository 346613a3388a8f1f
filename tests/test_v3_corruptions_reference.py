"""The corruption operations against their reference: MedMNIST-C (medmnistc 0.1.0) itself, pixel for pixel.

fxbench cannot depend on the package (docs/corruptions.md), so scripts/medmnistc_reference.py recorded what the
package's own ``apply`` makes of three canonical images at every corruption and severity of the chest X-ray
set, with the battery's per-image seeds; these tests recompute each image with fxbench's operations and compare
digests. Where medmnistc is importable, the last test compares with it directly.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from fxbench.corruptions.battery import image_seeds
from fxbench.corruptions.config import parse_config
from fxbench.corruptions.ops import OPS, corrupt, corrupt_u8, from_u8, to_u8
from fxbench.definition import load_definition

FIXTURE = Path(__file__).parent / "data_fixtures" / "medmnistc_xray_reference.json"
REF = json.loads(FIXTURE.read_text())

# MedMNIST-C's chest X-ray set as published (medmnistc/corruptions/registry.py, 'chestmnist'): name -> params at
# severities 1..5. Typed here from the package so that a change to the spec cannot pass unnoticed.
CHESTMNIST = {
    "pixelate": [0.30, 0.25, 0.20, 0.15, 0.10], "jpeg_compression": [50, 30, 15, 10, 7],
    "gaussian_noise": [0.04, 0.08, 0.12, 0.18, 0.26], "speckle_noise": [0.05, 0.15, 0.2, 0.35, 0.45],
    "impulse_noise": [0.01, 0.03, 0.06, 0.09, 0.17], "shot_noise": [60, 25, 18, 10, 5],
    "gaussian_blur": [3, 5, 7, 9, 11], "brightness_up": [1.1, 1.2, 1.3, 1.4, 1.5],
    "brightness_down": [0.9, 0.8, 0.7, 0.6, 0.5], "contrast_up": [1.1, 1.2, 1.3, 1.4, 1.6],
    "contrast_down": [0.9, 0.8, 0.7, 0.6, 0.4], "gamma_corr_up": [1.1, 1.2, 1.3, 1.4, 1.6],
    "gamma_corr_down": [0.9, 0.8, 0.7, 0.6, 0.4],
}


def spec(preset: str = "full"):
    return parse_config(load_definition("v3").battery_config("corruptions", preset))


def ramp() -> np.ndarray:
    i, j = np.mgrid[0:224, 0:224]
    return ((i + 2 * j) % 256).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    from fxbench.data import load_arrays
    from fxbench.data.embedded import EMBEDDED_DIR

    with pytest.warns(Warning):  # the embedded-subset warning
        ev = load_arrays(EMBEDDED_DIR, split="eval")
    out = {"ramp": ramp()}
    for image_id in REF["images"]:
        if image_id != "ramp":
            out[image_id] = to_u8(ev.x[[ev.ids.index(image_id)]])[0]
    return out


def test_the_spec_is_medmnist_c_chest_xray_set_in_both_presets():
    for preset in ("full", "quick"):
        cfg = spec(preset)
        assert {n: list(c.params) for n, c in cfg.corruptions.items()} == CHESTMNIST
    assert spec("full").conditions == [(c, s) for c in CHESTMNIST for s in (1, 2, 3, 4, 5)]
    assert set(spec("quick").run) < set(CHESTMNIST)


def test_every_corrupted_image_equals_medmnistc_output(images):
    cfg = spec()
    assert len(REF["records"]) == 3 * 13 * 5
    wrong = []
    for rec in REF["records"]:
        c = cfg.corruptions[rec["corruption"]]
        out = corrupt_u8(images[rec["image"]], c.op, c.param(rec["severity"]), rec["seed"])
        if hashlib.sha256(out.tobytes()).hexdigest() != rec["sha256"]:
            wrong.append(f"{rec['image']} {rec['corruption']}-{rec['severity']} (mean {out.mean():.3f}, "
                         f"reference {rec['mean']})")
    assert not wrong, wrong[:5]


def test_the_reference_used_the_battery_seed_rule():
    for rec in REF["records"]:
        assert image_seeds(0, rec["corruption"], rec["severity"], [rec["image"]]) == [rec["seed"]]


def test_a_wrong_parameter_or_seed_would_be_caught(images):
    """The digests discriminate: one severity off, or another image's seed, gives another image."""
    rec = next(r for r in REF["records"] if r["corruption"] == "gaussian_noise" and r["severity"] == 3
               and r["image"] != "ramp")
    c = spec().corruptions["gaussian_noise"]
    for param, seed in ((c.param(2), rec["seed"]), (c.param(3), rec["seed"] + 1)):
        out = corrupt_u8(images[rec["image"]], c.op, param, seed)
        assert hashlib.sha256(out.tobytes()).hexdigest() != rec["sha256"]


def test_published_formulas_on_every_grey_level():
    """Independent of the fixture: gamma is torchvision's table int(255.999 (v / 255) ** g), brightness below
    white a truncated product, pixelate at factor 1 and blur at kernel 1 the identity."""
    g = ramp()
    for gamma in (0.4, 1.6):
        want = np.array([int((256 - 1e-3) * (v / 255.0) ** gamma) for v in range(256)], dtype=np.uint8)
        assert np.array_equal(corrupt_u8(g, "gamma", gamma, 0), want[g])
    out = corrupt_u8(g, "brightness", 0.5, 0).astype(int)
    assert np.all(np.abs(out - np.floor(g * 0.5)) <= 1) and np.all(out <= g)
    assert np.array_equal(corrupt_u8(g, "pixelate", 1.0, 0), g)
    assert np.array_equal(corrupt_u8(g, "gaussian_blur", 1, 0), g)


def test_noise_statistics_match_the_definition():
    """Gaussian noise of std s on each RGB channel, then ITU-R 601 luma: the grey noise has std
    s * sqrt(0.299^2 + 0.587^2 + 0.114^2) = 0.668 s (MedMNIST-C's pipeline for grayscale sets)."""
    flat = np.full((224, 224), 128, dtype=np.uint8)
    out = corrupt_u8(flat, "gaussian_noise", 0.12, 7).astype(float) / 255
    want = 0.12 * np.sqrt(0.299**2 + 0.587**2 + 0.114**2)
    assert abs(out.std() - want) < 0.03 * want
    hit = corrupt_u8(flat, "impulse_noise", 0.17, 7)
    touched = (hit != 128).mean()  # a grey pixel changes unless all channels escape (or cancel in the luma)
    assert 0.17 < touched < 1 - (1 - 0.17) ** 3 + 0.01


def test_severity_zero_is_the_image_itself_bit_for_bit():
    x = from_u8(ramp()[None])
    for name in OPS._items:  # every operation
        assert torch.equal(corrupt(x, name, None, [3]), x)


def test_canonical_images_survive_the_8_bit_round_trip():
    x = from_u8(np.stack([ramp(), ramp()[::-1].copy()]))
    assert torch.equal(from_u8(to_u8(x)), x)


def test_each_image_draws_from_its_own_seed_whatever_its_batch(images):
    """Deterministic per image and seed: the same image corrupted alone or beside others is the same."""
    x = from_u8(np.stack([images[k] for k in sorted(images)]))
    seeds = image_seeds(0, "shot_noise", 4, sorted(images))
    together = corrupt(x, "shot_noise", 10, seeds)
    for i in range(len(x)):
        assert torch.equal(corrupt(x[i : i + 1], "shot_noise", 10, seeds[i : i + 1]), together[i : i + 1])
    assert not torch.equal(corrupt(x[:1], "shot_noise", 10, [seeds[0] + 1]), together[:1])
    assert image_seeds(1, "shot_noise", 4, ["a"]) != image_seeds(0, "shot_noise", 4, ["a"])
    with pytest.raises(ValueError):
        corrupt(x, "shot_noise", 10, seeds[:1])


def _medmnistc():
    try:
        import medmnistc.corruptions.registry as reg  # noqa: F401
    except ImportError as e:
        if "MagickWand" not in str(e):
            return None
        image, api = types.ModuleType("wand.image"), types.ModuleType("wand.api")
        image.Image, api.library = object, None  # the X-ray set never calls ImageMagick
        sys.modules.update({"wand": types.ModuleType("wand"), "wand.image": image, "wand.api": api})
        try:
            import medmnistc.corruptions.registry as reg
        except ImportError:
            return None
    return reg.CORRUPTIONS_DS["chestmnist"]


def test_against_medmnistc_itself_where_it_is_installed(images):
    registry = _medmnistc()
    if registry is None:
        pytest.skip("medmnistc is not installed here (fxbench does not depend on it): the fixture stands in")
    from PIL import Image

    cfg = spec()
    for name, corruptor in registry.items():
        assert list(corruptor.severity_params[:5]) == pytest.approx(CHESTMNIST[name])
        for severity in (1, 5):
            np.random.seed(11)
            corruptor.rng = np.random.default_rng(11)
            ref = np.asarray(Image.fromarray(corruptor.apply(Image.fromarray(images["ramp"]).convert("RGB"),
                                                             severity - 1)).convert("L"))
            c = cfg.corruptions[name]
            assert np.array_equal(corrupt_u8(images["ramp"], c.op, c.param(severity), 11), ref), name
