"""Build the v3 position prior from the TRAINING split's fracture masks (never from evaluation images).

    python scripts/position_prior.py [--data DIR] [--cell 4] [--out benchmark/specs/v3/position_prior.json]

Reads the prepared dataset (``fxbench data prepare``; the embedded subset holds evaluation images only and
is refused), averages every training image's mask divided by its size (each fractured image weighs the same),
sums the density into cells of ``--cell`` pixels and writes the JSON file the v3 explanation spec names.
Prints the file's sha256 (put it into ``specs/v3/explanations.yaml``) and where the prior's mass lies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
from fxbench.data import load_arrays, resolve_data
from fxbench.explanations.prior import mask_density, prior_document


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="prepared dataset folder (default: fxbench's)")
    ap.add_argument("--cell", type=int, default=4, help="cell size in canonical pixels (divides 224)")
    ap.add_argument("--out", type=Path, default=Path("benchmark/specs/v3/position_prior.json"))
    args = ap.parse_args()
    src = resolve_data(args.data)
    if src.embedded:
        raise SystemExit("error: the embedded subset holds evaluation images only; prepare the dataset first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = load_arrays(args.data, split="train")
    masks = train.masks[train.y == 1].numpy()[:, 0]
    masks = masks[masks.reshape(len(masks), -1).any(axis=1)]
    density = mask_density(masks)
    doc = prior_document(density, args.cell, {
        "what": "density of fracture pixels in the canonical frame, mean over the training split's fractured "
                "images of mask / mask size",
        "built_by": "scripts/position_prior.py",
        "dataset_fingerprint": train.dataset.fingerprint,
        "split": "train",
        "n_images": int(len(masks)),
    })
    blob = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
    args.out.write_bytes(blob)
    h, w = density.shape
    rows, cols = np.mgrid[0:h, 0:w]
    cy, cx = float((density * rows).sum()), float((density * cols).sum())
    r = np.hypot(rows - (h - 1) / 2, cols - (w - 1) / 2)
    print(f"{args.out}: {len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()}")
    print(f"{len(masks)} training masks; centre of mass (row, col) = ({cy:.1f}, {cx:.1f}) px; "
          f"mass within 31 px of the centre {density[r <= 31].sum():.3f}, within 56 px {density[r <= 56].sum():.3f}")


if __name__ == "__main__":
    main()
