"""The embedded default: a fixed subset of the evaluation split shipped inside the package (a few MB).

Selection, from the eval split of a prepared full dataset, each list in sha256("embedded:" + image id) order:
fractured: up to 8 with orthopaedic hardware, IMG0002628 when it is in eval, then the others up to 48;
non-fractured: up to 6 with an EXIF orientation, up to 4 with hardware, then the others up to 48.
Rebuild with `fxbench data embed --data DIR` after `fxbench data prepare`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import DataError
from ..io import atomic_write_json, replace_dir
from .fingerprint import RowDigest, fingerprint, ids_digest
from .prepare import INFO_FILE, INFO_SCHEMA, features, quiet_datasets, read_info, split_counts
from .splits import id_key, in_split

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
EMBEDDED_NAME = "fracatlas-v1-embedded"
PARQUET = "fracatlas-v1-embedded.parquet"
PER_CLASS = 48
ALWAYS = ("IMG0002628",)  # the EXIF orientation-8 case the alignment tests are built on


def select(meta: list[dict[str, Any]], per_class: int = PER_CLASS) -> list[str]:
    """image ids of the subset (rule in the module docstring); ``meta`` rows need the dataset columns."""
    # A key of its own: the split rule's order would put only the first-cut split (valid) in the subset.
    rows = sorted(
        (r for r in meta if in_split(r["split"], "eval")), key=lambda r: id_key("embedded:" + r["image_id"])
    )
    chosen: list[str] = []

    def take(cands, n):
        for r in cands:
            if n <= 0:
                break
            if r["image_id"] not in chosen:
                chosen.append(r["image_id"])
                n -= 1

    fr = [r for r in rows if r["label"] == 1]
    nf = [r for r in rows if r["label"] == 0]
    take([r for r in fr if r["hardware"]], 8)
    take([r for r in fr if r["image_id"] in ALWAYS], len(ALWAYS))
    take(fr, per_class - sum(1 for r in fr if r["image_id"] in chosen))
    n_fr = len(chosen)
    take([r for r in nf if r["exif_orientation"] != 1], 6)
    take([r for r in nf if r["hardware"]], 4)
    take(nf, per_class - (len(chosen) - n_fr))
    return sorted(chosen)


def build_embedded(data: str | Path, *, out: str | Path = EMBEDDED_DIR, per_class: int = PER_CLASS) -> dict:
    """Write the subset of the prepared dataset at ``data`` to ``out`` (parquet + fxbench.json)."""
    import datasets as hf

    data, out = Path(data), Path(out)
    parent = read_info(data)
    ds = hf.load_from_disk(str(data))
    meta = ds.remove_columns(["image", "mask"]).to_list()
    keep = set(select(meta, per_class))
    idx = [i for i, r in enumerate(meta) if r["image_id"] in keep]
    sub = ds.select(idx, keep_in_memory=True)
    digests = [
        RowDigest(r["image_id"], r["split"], r["label"], r["image_pixels_sha256"], r["mask_pixels_sha256"])
        for r in sub.remove_columns(["image", "mask"]).to_list()
    ]
    info = {
        "schema": INFO_SCHEMA,
        "name": EMBEDDED_NAME,
        "fingerprint": fingerprint(digests),
        "ids_digest": ids_digest(digests),
        "counts": split_counts(digests),
        "excluded": [],
        "subset_of": {"name": parent["name"], "fingerprint": parent["fingerprint"]},
        "selection": "see fxbench.data.embedded.select",
        "created_by": f"fxbench {__version__}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with quiet_datasets():
            sub.to_parquet(str(tmp / PARQUET))
        atomic_write_json(tmp / INFO_FILE, info)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def load_embedded(folder: Path = EMBEDDED_DIR):
    """The subset as an in-memory datasets.Dataset (nothing written to any cache)."""
    import datasets as hf
    import pyarrow.parquet as pq

    path = folder / PARQUET
    if not path.is_file():
        raise DataError(
            f"{path}: the embedded subset is missing from this installation; run "
            "`fxbench data prepare --source DIR` to prepare the full dataset instead."
        )
    ds = hf.Dataset(pq.read_table(path))  # the parquet schema carries the features
    if ds.features != features():
        raise DataError(
            f"{path}: unexpected columns; reinstall fxbench or rebuild with `fxbench data embed`."
        )
    return ds
