"""Mask-size tercile cut points of the eval split's fractured images, in canonical pixels (224 x 224).

The explanation battery (v2) reports localisation by mask-size tercile with cut points fixed in the spec
(`subgroups.mask_terciles_px`), so a subset run (quick, embedded) uses the same bins as a full run. This
script recomputes them from the release and the split manifest:

    python scripts/mask_terciles.py $FXBENCH_FRACATLAS
"""

from __future__ import annotations

import json
import sys

import numpy as np
from fxbench.data.decode import DecodeTask, decode
from fxbench.data.geometry import decode_png
from fxbench.data.source import read_release
from fxbench.paths import SPECS_DIR


def main(root: str) -> None:
    manifest = json.loads((SPECS_DIR.parent / "data" / "manifest" / "splits-v1.json").read_text())
    ids = {i for s in ("valid", "test") for i in manifest["images"][s]["fracture"]}
    release = read_release(root)
    px = []
    for r in release.records:
        if r.image_id in ids:
            d = decode(DecodeTask(r.image_id, str(r.path), r.fractured, r.polygons, r.coco_size))
            px.append(int((decode_png(d.mask_png) > 0).sum()))
    px = np.array(px)
    cuts = np.percentile(px, [100 / 3, 200 / 3], method="lower")
    print(
        json.dumps(
            {
                "n": len(px),
                "min": int(px.min()),
                "median": float(np.median(px)),
                "max": int(px.max()),
                "mask_terciles_px": [int(c) for c in cuts],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
