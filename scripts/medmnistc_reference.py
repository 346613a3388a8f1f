"""Record what MedMNIST-C itself (PyPI ``medmnistc`` 0.1.0) makes of a few canonical images, for the
corruption battery's reference test (tests/test_v3_corruptions_reference.py).

fxbench does not depend on ``medmnistc`` (docs/corruptions.md says why), so run this in a separate
environment that has it, for example, without touching fxbench's own packages::

    pip install --target /tmp/mmc --no-deps medmnistc==0.1.0 scikit-image==0.23.2 wand medmnist==3.0.1
    PYTHONPATH=/tmp/mmc python scripts/medmnistc_reference.py            # writes the fixture
    PYTHONPATH=/tmp/mmc python scripts/medmnistc_reference.py --check    # compares fxbench's ops with it

``medmnistc.corruptions`` imports Wand (ImageMagick) at import time for its motion blur, which the X-ray set
(``chestmnist``) never calls: where ImageMagick is not installed, ``--stub-wand`` puts empty Wand modules in
its place (any call into them would fail loudly, none happens). For every image, corruption and severity
the script seeds the generators MedMNIST-C draws from (numpy's global one; the ``rng`` its impulse noise reads)
with the seed the battery gives that image, calls the package's own ``apply`` on the RGB image and converts
the result to grayscale as its dataset builder does for grayscale sets; it records the sha256 of the
grayscale bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data_fixtures" / "medmnistc_xray_reference.json"
DATASET = "chestmnist"
IMAGES = ("IMG0003301", "IMG0000086")  # from the embedded subset: a fractured and a non-fractured image
SEED = 0


def stub_wand() -> None:
    image, api = types.ModuleType("wand.image"), types.ModuleType("wand.api")
    image.Image = object
    api.library = None
    sys.modules.update({"wand": types.ModuleType("wand"), "wand.image": image, "wand.api": api})


def ramp() -> np.ndarray:
    """Every grey level (0..255) many times over, in stripes: exercises every lookup-table entry."""
    i, j = np.mgrid[0:224, 0:224]
    return ((i + 2 * j) % 256).astype(np.uint8)


def images() -> dict[str, np.ndarray]:
    from fxbench.data import load_arrays
    from fxbench.data.embedded import EMBEDDED_DIR

    ev = load_arrays(EMBEDDED_DIR, split="eval")
    out = {"ramp": ramp()}
    for image_id in IMAGES:
        x = ev.x[ev.ids.index(image_id), 0].numpy()
        out[image_id] = np.rint(x * 255).astype(np.uint8)
    return out


def reference(gray: np.ndarray, corruptor, severity: int, seed: int) -> np.ndarray:
    from PIL import Image

    np.random.seed(seed)
    corruptor.rng = np.random.default_rng(seed)
    out = corruptor.apply(Image.fromarray(gray).convert("RGB"), severity - 1)
    return np.asarray(Image.fromarray(out).convert("L"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stub-wand", action="store_true", help="empty Wand modules where ImageMagick is missing")
    ap.add_argument("--check", action="store_true", help="compare fxbench's ops with the package, write nothing")
    args = ap.parse_args()
    if args.stub_wand:
        stub_wand()
    import medmnistc
    from fxbench.battery import derive_seed
    from fxbench.corruptions.config import parse_config
    from fxbench.corruptions.ops import corrupt_u8
    from fxbench.definition import load_definition
    from medmnistc.corruptions.registry import CORRUPTIONS_DS

    spec = parse_config(load_definition("v3").battery_config("corruptions", "full"))
    records, bad = [], 0
    for name, gray in images().items():
        for corruption, corruptor in CORRUPTIONS_DS[DATASET].items():
            c = spec.corruptions[corruption]
            for severity in (1, 2, 3, 4, 5):
                # the battery's seed rule; the ramp stands for an image id of its own
                seed = derive_seed(SEED, "corruptions", corruption, severity, name)
                ref = reference(gray, corruptor, severity, seed)
                mine = corrupt_u8(gray, c.op, c.params[severity - 1], seed)
                same = np.array_equal(ref, mine)
                bad += not same
                if not same:
                    diff = np.abs(ref.astype(int) - mine.astype(int))
                    print(f"{name} {corruption}-{severity}: {int((diff > 0).sum())} pixels differ (max {diff.max()})")
                records.append({"image": name, "corruption": corruption, "severity": severity, "seed": seed,
                                "sha256": hashlib.sha256(ref.tobytes()).hexdigest(),
                                "mean": round(float(ref.mean()), 6)})
    print(f"{len(records)} reference images, {bad} differ from fxbench's")
    if not args.check:
        head = json.dumps({
            "source": f"medmnistc {getattr(medmnistc, '__version__', '0.1.0')}, CORRUPTIONS_DS[{DATASET!r}]",
            "pipeline": "gray -> RGB -> corruptor.apply(img, severity - 1) -> Pillow convert('L'); "
                        "np.random.seed(seed) and corruptor.rng = default_rng(seed) before each call",
            "seed_rule": "derive_seed(0, 'corruptions', corruption, severity, image)",
            "images": {"ramp": "(i + 2 j) mod 256, 224 x 224", **{i: "embedded subset, canonical" for i in IMAGES}},
        }, indent=1)
        rows = ",\n".join("  " + json.dumps(r) for r in records)  # one record a line
        FIXTURE.write_text(head[:-2] + ',\n "records": [\n' + rows + "\n ]\n}\n")
        print(f"wrote {FIXTURE}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
