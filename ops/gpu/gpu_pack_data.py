"""A prepared fxbench dataset -> the same dataset with its images stored as lossless WebP (pixel-identical).

The prepared dataset stores PNG (zlib level 1, 61 MiB of images for FracAtlas); lossless WebP (method 5)
holds the same pixels in about 40 MiB (method 6 saves 1.6% more at 15 times the encoding time). Every image is decoded back
and its pixel sha256 compared with the dataset's own `image_pixels_sha256` column before anything is
written, so the copy keeps the original's fingerprint honestly (fxbench.json is copied unchanged).

Usage: python3 ops/gpu/gpu_pack_data.py PREPARED_DIR OUT_DIR [--workers N] [--limit-per-split N]
(--limit-per-split keeps the first N images of each split and label: a small dataset for CPU tests; its fxbench.json
then names a different fingerprint and it is never leaderboard-eligible).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def _webp(png: bytes) -> tuple[bytes, str]:
    with Image.open(io.BytesIO(png)) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="WEBP", lossless=True, quality=100, method=5)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        back = np.asarray(im.convert("L"), dtype=np.uint8)
    if back.shape != pixels.shape or not np.array_equal(back, pixels):
        raise SystemExit("lossless WebP did not round-trip: refusing to write a copy with other pixels")
    return data, hashlib.sha256(np.ascontiguousarray(back).tobytes()).hexdigest()


def convert(src: Path, out: Path, *, workers: int = 2, limit_per_split: int | None = None) -> dict:
    import datasets as hf

    ds = hf.load_from_disk(str(src))
    info = json.loads((src / "fxbench.json").read_text())
    if limit_per_split:
        keep, seen = [], {}
        for i, key in enumerate(zip(ds["split"], ds["label"])):
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= limit_per_split:
                keep.append(i)
        ds = ds.select(keep)
        ids = ",".join(sorted(ds["image_id"]))
        small = hashlib.sha256(f"cpu-test-subset/{info['fingerprint']}/{ids}".encode()).hexdigest()
        info = dict(info, fingerprint=small, note="CPU test subset (not the benchmark's dataset)")
    table = ds.to_pandas()
    pngs = [d["bytes"] for d in table["image"]]
    mask_pngs = [d["bytes"] for d in table["mask"]]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        converted = list(pool.map(_webp, pngs, chunksize=32))
        masks = list(pool.map(_webp, mask_pngs, chunksize=64))
    # Recompute the fingerprint from the copy's decoded pixels: it must equal the original's.
    from fxbench.data.fingerprint import RowDigest, fingerprint, pixel_sha256

    # _webp hashes the decoded WebP pixels exactly as fxbench.data.fingerprint.pixel_sha256 does for uint8
    # (masks are stored as 0/255, which is what pixel_sha256 hashes for a boolean mask).
    assert pixel_sha256(np.zeros((2, 2), np.uint8)) == hashlib.sha256(bytes(4)).hexdigest()
    rows = [
        RowDigest(str(i), str(s), int(lab), sha, msha)
        for i, s, lab, (_, sha), (_, msha) in zip(
            table["image_id"], table["split"], table["label"], converted, masks
        )
    ]
    if not limit_per_split and fingerprint(rows) != info["fingerprint"]:
        raise SystemExit("the WebP copy's fingerprint differs from the original's: refusing to write it")
    images = [{"bytes": data, "path": None} for data, _ in converted]
    mask_col = [{"bytes": data, "path": None} for data, _ in masks]
    new = ds.remove_columns(["image", "mask"])
    new = new.add_column("image", images, feature=ds.features["image"])
    new = new.add_column("mask", mask_col, feature=ds.features["mask"])
    new = new.select_columns(list(ds.column_names)).cast(ds.features)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    new.save_to_disk(str(tmp), num_shards=1)
    (tmp / "fxbench.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"rows": len(new), "bytes": size, "png_bytes": sum(map(len, pngs)) + sum(map(len, mask_pngs)), "fingerprint": info["fingerprint"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit-per-split", type=int, default=None)
    a = ap.parse_args()
    r = convert(a.src, a.out, workers=a.workers, limit_per_split=a.limit_per_split)
    print(
        f"wrote {a.out}: {r['rows']} images, {r['bytes'] / 2**20:.1f} MiB (PNG images were "
        f"{r['png_bytes'] / 2**20:.1f} MiB), pixels verified, fingerprint {r['fingerprint'][:12]}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
