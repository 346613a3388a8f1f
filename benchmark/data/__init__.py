"""fxbench.data: FracAtlas in the canonical geometry.

``load()`` gives the Hugging Face dataset, ``load_arrays()`` the decoded tensors the batteries use, and
``resolve_data()`` names which data that is. With no path, the prepared dataset at
``paths.default_data_dir()`` is used when present, else the embedded subset (with an EmbeddedDataWarning).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..paths import default_data_dir
from .source import region_of

if TYPE_CHECKING:
    import datasets

    from ..battery import EvalSet

META_COLUMNS = (
    "image_id",
    "label",
    "split",
    "hardware",
    "hand",
    "leg",
    "hip",
    "shoulder",
    "mixed",
    "view",
    "multiscan",
    "region",
    "fracture_count",
    "exif_orientation",
)


class EmbeddedDataWarning(UserWarning):
    """No prepared dataset was found: the small embedded subset is used (not leaderboard-eligible)."""


@dataclass(frozen=True)
class DataSource:
    path: Path
    embedded: bool
    fingerprint: str
    name: str  # "fracatlas-v1" or "fracatlas-v1-embedded"
    manifest_status: str  # "match" | "pixels-differ" | "ids-differ" | "no-manifest" | "embedded"
    info: dict[str, Any]  # the folder's fxbench.json

    @property
    def leaderboard_eligible(self) -> bool:
        """The full dataset with a fingerprint the split manifest knows."""
        return not self.embedded and self.manifest_status == "match"

    def describe(self) -> str:
        if self.embedded:
            return (
                f"the embedded subset {self.name} ({self.info['counts']['all']['n']} images, not "
                f"leaderboard-eligible): no prepared dataset at {default_data_dir()}; run "
                "`fxbench data prepare --source DIR` for the full benchmark"
            )
        return f"{self.name} at {self.path} (fingerprint {self.fingerprint[:12]})"


def resolve_data(path: str | Path | None = None) -> DataSource:
    """Which data a command uses: ``path``, else the default prepared dataset, else the embedded subset."""
    from .embedded import EMBEDDED_DIR
    from .prepare import read_info

    if path is None:
        folder = default_data_dir()
        path = folder if folder.exists() else EMBEDDED_DIR
    folder = Path(path).expanduser()
    info = read_info(folder)
    embedded = info.get("name", "").endswith("-embedded")
    status = "embedded" if embedded else _recheck(info)
    return DataSource(folder, embedded, info["fingerprint"], info["name"], status, info)


def _recheck(info: dict[str, Any]) -> str:
    """The manifest may have gained a variant since the dataset was prepared: compare again."""
    from .manifest import load_manifest

    m = load_manifest()
    if m is None:
        return "no-manifest"
    if m.variant_of(info["fingerprint"]):
        return "match"
    return "pixels-differ" if info.get("ids_digest") == m.ids_digest else "ids-differ"


def _open(src: DataSource) -> datasets.Dataset:
    import datasets as hf

    from .embedded import load_embedded

    if src.embedded:
        warnings.warn(f"fxbench is using {src.describe()}.", EmbeddedDataWarning, stacklevel=3)
        return load_embedded(src.path)
    try:
        return hf.load_from_disk(str(src.path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"{src.path}: cannot read the prepared dataset ({e}); prepare it again.") from None


def _rows_of(ds: datasets.Dataset, src: DataSource, split: str) -> list[int]:
    from .splits import SPLIT_NAMES, in_split

    if split not in SPLIT_NAMES:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_NAMES)}.")
    idx = [i for i, s in enumerate(ds["split"]) if in_split(s, split)]
    if not idx:
        raise DataError(
            f"{src.path}: no images in split {split!r}"
            + (" (the embedded subset holds eval images only)." if src.embedded else ".")
        )
    return idx


def load(path: str | Path | None = None, *, split: str = "eval") -> datasets.Dataset:
    """The dataset (columns in docs/data.md) restricted to ``split``: "eval" (= valid + test), "train",
    "valid", "test" or "all". Images and masks decode to PIL images (mode L, 224 x 224)."""
    src = resolve_data(path)
    ds = _open(src)
    idx = _rows_of(ds, src, split)
    return ds if len(idx) == len(ds) else ds.select(idx, keep_in_memory=True)


def balanced_subset(labels: list[int], limit: int) -> list[int]:
    """Positions of ``limit`` rows alternating fractured / non-fractured in dataset order (one class
    continues alone when the other runs out), returned in dataset order."""
    fr = [i for i, y in enumerate(labels) if y == 1]
    nf = [i for i, y in enumerate(labels) if y != 1]
    picked: list[int] = []
    for k in range(max(len(fr), len(nf))):
        picked += ([fr[k]] if k < len(fr) else []) + ([nf[k]] if k < len(nf) else [])
    return sorted(picked[:limit])


def load_arrays(path: str | Path | None = None, *, split: str = "eval", limit: int | None = None) -> EvalSet:
    """Decoded canonical tensors (see fxbench.battery.EvalSet). ``limit`` keeps a class-balanced subset
    (balanced_subset) and makes the set not leaderboard-eligible."""
    import numpy as np
    import pandas as pd
    import torch

    from ..battery import DatasetInfo, EvalSet
    from .geometry import SIZE, decode_png

    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of images, got {limit}.")
    src = resolve_data(path)
    ds = _open(src)
    idx = _rows_of(ds, src, split)
    table = ds.select(idx, keep_in_memory=True).to_pandas()
    if limit is not None:
        table = table.iloc[balanced_subset(table["label"].tolist(), limit)].reset_index(drop=True)
    images = (
        np.stack([decode_png(d["bytes"]) for d in table["image"]])
        if len(table)
        else np.zeros((0, SIZE, SIZE))
    )
    masks = (
        np.stack([decode_png(d["bytes"]) for d in table["mask"]]) if len(table) else np.zeros((0, SIZE, SIZE))
    )
    if images.shape[1:] != (SIZE, SIZE) or masks.shape[1:] != (SIZE, SIZE):
        raise DataError(f"{src.path}: images are not {SIZE} x {SIZE}; prepare the dataset again.")
    verify_rows(table, images, masks, src)
    verify_fingerprint(ds, src)
    meta = pd.DataFrame({c: table[c].to_numpy() for c in META_COLUMNS if c in table})
    ids = [str(i) for i in table["image_id"]]
    info = DatasetInfo(
        name=src.name,
        fingerprint=src.fingerprint,
        split=split,
        n=len(ids),
        leaderboard_eligible=src.leaderboard_eligible and limit is None and split == "eval",
    )
    return EvalSet(
        ids=ids,
        x=torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1),
        y=torch.tensor(table["label"].to_numpy(), dtype=torch.int64),
        masks=torch.from_numpy(masks > 127).unsqueeze(1),
        meta=meta,
        dataset=info,
    )


def verify_rows(table, images, masks, src: DataSource) -> None:
    """Each decoded image and mask must hash to the digest recorded for its row: the pixels a run reads are
    the ones the fingerprint covers (one sha256 of 50 kB per image: small next to PNG decoding)."""
    from .fingerprint import pixel_sha256

    for i, image_id in enumerate(table["image_id"]):
        for kind, arr, col in (("image", images, "image_pixels_sha256"), ("mask", masks, "mask_pixels_sha256")):
            if pixel_sha256(arr[i]) != table[col].iloc[i]:
                raise DataError(
                    f"{src.path}: the {kind} pixels of {image_id} do not match the digest recorded when the "
                    "dataset was prepared: the dataset was modified afterwards. Prepare it again with "
                    "`fxbench data prepare`."
                )


def verify_fingerprint(ds, src: DataSource) -> None:
    """The fingerprint a run reports is recomputed from every row's recorded digests (cheap: no decoding),
    never taken from fxbench.json alone; with ``verify_rows`` it covers what was read."""
    from .fingerprint import RowDigest, fingerprint

    cols = ds.select_columns(["image_id", "split", "label", "image_pixels_sha256", "mask_pixels_sha256"]).to_dict()
    rows = [RowDigest(*r) for r in zip(cols["image_id"], cols["split"], cols["label"], cols["image_pixels_sha256"],
                                       cols["mask_pixels_sha256"], strict=True)]
    got = fingerprint(rows)
    if got != src.fingerprint:
        raise DataError(
            f"{src.path}: its rows hash to fingerprint {got[:12]}..., but its {src.info.get('schema', 'info')} "
            f"file says {src.fingerprint[:12]}...: the dataset was modified after it was prepared. Prepare it "
            "again with `fxbench data prepare`."
        )


def verify_dataset(path: str | Path | None = None, *, batch: int = 256) -> int:
    """Decode every row of a prepared dataset and check its pixels against its digests, then the fingerprint
    against the rows (what ``fxbench data info`` reports); memory bounded by ``batch``. Returns the rows."""
    import numpy as np

    from .geometry import decode_png

    src = resolve_data(path)
    with warnings.catch_warnings():  # the caller says which data it is
        warnings.simplefilter("ignore", EmbeddedDataWarning)
        ds = _open(src)
    for start in range(0, len(ds), batch):
        table = ds.select(range(start, min(start + batch, len(ds)))).to_pandas()
        images = np.stack([decode_png(d["bytes"]) for d in table["image"]])
        masks = np.stack([decode_png(d["bytes"]) for d in table["mask"]])
        verify_rows(table, images, masks, src)
    verify_fingerprint(ds, src)
    return len(ds)


__all__ = ["META_COLUMNS", "DataSource", "EmbeddedDataWarning", "balanced_subset", "load", "load_arrays", "region_of",
           "resolve_data"]
