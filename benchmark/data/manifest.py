"""The committed split manifest (manifest/splits-v1.json): id lists per split and class, exclusions, and the
fingerprint of each known source variant.

The id lists are the benchmark; the pixels depend on the source variant. The shared copy (351 large images
downscaled to 512 px) and the original full-resolution release give the same ids but slightly different
canonical pixels, hence different fingerprints. The manifest records one fingerprint per known variant;
``fingerprint`` (the reference variant's) is the one the benchmark definition names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import DataError
from .fingerprint import RowDigest, ids_digest
from .info import DATASET_NAME, read_info

MANIFEST_PATH = Path(__file__).resolve().parent / "manifest" / "splits-v1.json"
SCHEMA = "fxbench.splits/1"


@dataclass(frozen=True)
class Manifest:
    raw: dict[str, Any]

    @property
    def fingerprint(self) -> str | None:
        return self.raw.get("fingerprint")

    @property
    def ids_digest(self) -> str:
        return self.raw["ids_digest"]

    @property
    def variants(self) -> dict[str, str | None]:
        """variant name -> fingerprint (None where not yet recorded)."""
        return {v["name"]: v.get("fingerprint") for v in self.raw.get("variants", [])}

    def variant_of(self, fingerprint: str) -> str | None:
        return next((name for name, fp in self.variants.items() if fp == fingerprint), None)

    def labels(self) -> dict[str, tuple[str, int]]:
        """image_id -> (split, label) for every kept image."""
        out = {}
        for split, classes in self.raw["images"].items():
            for cls, label in (("no_fracture", 0), ("fracture", 1)):
                for image_id in classes[cls]:
                    out[image_id] = (split, label)
        return out


@dataclass(frozen=True)
class ManifestCheck:
    status: str  # "match" | "pixels-differ" | "ids-differ" | "no-manifest"
    variant: str | None  # the known variant whose fingerprint matched
    message: str

    @property
    def ids_match(self) -> bool:
        return self.status in ("match", "pixels-differ")


@lru_cache(maxsize=4)
def _read(path: Path) -> Manifest | None:
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: corrupt JSON at line {e.lineno}: {e.msg}.") from None
    if raw.get("schema") != SCHEMA:
        raise DataError(f"{path}: expected schema {SCHEMA!r}, found {raw.get('schema')!r}.")
    return Manifest(raw)


def load_manifest(path: str | Path | None = None) -> Manifest | None:
    """The committed manifest, or None when it has not been generated yet."""
    return _read(Path(path) if path else MANIFEST_PATH)


def manifest_fingerprint() -> str | None:
    m = load_manifest()
    return m.fingerprint if m else None


def check(fingerprint: str, rows: list[RowDigest], manifest: Manifest | None = None) -> ManifestCheck:
    """Compare a prepared dataset with the manifest: same ids per split and class, and a known fingerprint."""
    m = manifest if manifest is not None else load_manifest()
    if m is None:
        return ManifestCheck("no-manifest", None, "no split manifest is committed; nothing to compare with.")
    variant = m.variant_of(fingerprint)
    if variant:
        return ManifestCheck("match", variant, f"matches the manifest (source variant {variant!r}).")
    if ids_digest(rows) == m.ids_digest:
        return ManifestCheck(
            "pixels-differ",
            None,
            "same images, splits and labels as the manifest, but the pixel fingerprint is not a known source "
            "variant (e.g. the original full-resolution release, whose fingerprint is not recorded yet); "
            "results are not leaderboard-eligible until this fingerprint is added to the manifest.",
        )
    want = m.labels()
    have = {r.image_id: (r.split, r.label) for r in rows}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    moved = sorted(i for i in set(want) & set(have) if want[i] != have[i])
    parts = [
        f"{len(missing)} manifest image(s) missing" + (f" (e.g. {missing[0]})" if missing else ""),
        f"{len(extra)} image(s) not in the manifest" + (f" (e.g. {extra[0]})" if extra else ""),
        f"{len(moved)} in another split or class" + (f" (e.g. {moved[0]})" if moved else ""),
    ]
    return ManifestCheck(
        "ids-differ",
        None,
        "DIFFERS from the benchmark's split manifest: "
        + "; ".join(parts)
        + ". Results on this data are not comparable with the leaderboard.",
    )


REFERENCE_VARIANT = "downscaled-512"
KNOWN_VARIANTS = {
    "downscaled-512": "the copy whose 351 images longer than 512 px were downscaled to 512 px (LANCZOS, JPEG "
    "95) with their polygons scaled; every other file byte-identical to the release",
    "figshare-original": "the original full-resolution release (figshare article 22363012); fingerprint to "
    "be recorded by running `fxbench data manifest --variant figshare-original`",
}


def update_manifest(data: str | Path, *, variant: str, path: str | Path | None = None) -> dict[str, Any]:
    """Record the prepared dataset at ``data`` in the manifest: the id lists (first time) and its fingerprint
    as ``variant``. A dataset whose ids differ from an existing manifest is refused: that is a new version."""
    import datasets as hf

    from ..io import atomic_write_json

    path = Path(path) if path else MANIFEST_PATH
    if variant not in KNOWN_VARIANTS:
        raise DataError(f"unknown source variant {variant!r}: choose one of {', '.join(KNOWN_VARIANTS)}.")
    info = read_info(data)
    meta = hf.load_from_disk(str(data)).select_columns(["image_id", "split", "label"]).to_list()
    current = load_manifest(path)
    if current is not None and current.ids_digest != info["ids_digest"]:
        raise DataError(
            f"{data}: its images, splits or labels differ from {path}; a different split is a new "
            "benchmark version, not a new source variant."
        )
    raw = (
        dict(current.raw)
        if current
        else {
            "schema": SCHEMA,
            "dataset": DATASET_NAME,
            "ids_digest": info["ids_digest"],
            "counts": info["counts"],
            "images": {s: {"no_fracture": [], "fracture": []} for s in ("train", "valid", "test")},
            "excluded": info["excluded"],
            "variants": [
                {"name": n, "description": d, "fingerprint": None} for n, d in KNOWN_VARIANTS.items()
            ],
            "rules": {
                "eval": "valid + test",
                "fractured": "the release's Utilities/Fracture Split",
                "non_fractured": "all non-fractured files ordered by sha256(image_id), cut train/valid/test "
                "in the "
                "official proportions (574/82/61), before exclusions",
                "fingerprint": "see fxbench.data.fingerprint",
            },
        }
    )
    if current is None:
        for r in sorted(meta, key=lambda r: r["image_id"]):
            raw["images"][r["split"]]["fracture" if r["label"] == 1 else "no_fracture"].append(r["image_id"])
    raw["variants"] = [
        {**v, "fingerprint": info["fingerprint"], "libraries": info.get("libraries", {})}
        if v["name"] == variant
        else v
        for v in raw["variants"]
    ]
    raw["fingerprint"] = next(v["fingerprint"] for v in raw["variants"] if v["name"] == REFERENCE_VARIANT)
    atomic_write_json(path, raw)
    _read.cache_clear()
    return raw
