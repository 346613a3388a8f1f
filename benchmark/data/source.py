"""Read and validate a FracAtlas release in its own layout, before any pixel is decoded.

Every problem found here is a DataError naming the file and the problem, raised before anything is written.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError

FRACTURED_DIR = Path("images/Fractured")
NON_FRACTURED_DIR = Path("images/Non_fractured")
DATASET_CSV = Path("dataset.csv")
COCO_JSON = Path("Annotations/COCO JSON/COCO_fracture_masks.json")
SPLIT_DIR = Path("Utilities/Fracture Split")
SPLITS = ("train", "valid", "test")
CSV_COLUMNS = (
    "image_id",
    "hand",
    "leg",
    "hip",
    "shoulder",
    "mixed",
    "hardware",
    "multiscan",
    "fractured",
    "fracture_count",
    "frontal",
    "lateral",
    "oblique",
)
REGIONS = ("hand", "leg", "hip", "shoulder")
VIEWS = ("frontal", "lateral", "oblique")


def region_of(flags: dict[str, Any]) -> str:
    """The image's body region from FracAtlas's 0/1 columns: the one region flagged, "mixed" when the release
    says mixed or several are flagged, "unknown" when none is (the one rule; prepare and run both use it)."""
    named = [r for r in REGIONS if flags.get(r)]
    if flags.get("mixed") or len(named) > 1:
        return "mixed"
    return named[0] if named else "unknown"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Annotation tools snap to the border and rescaled copies carry float noise: allow this much outside.
OUTSIDE_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class SourceRecord:
    image_id: str  # file name without the suffix, e.g. "IMG0000019"
    file_name: str  # e.g. "IMG0000019.jpg"
    path: Path
    fractured: bool  # from the folder the file is in
    csv: dict[str, int]  # the dataset.csv row (0/1 flags and fracture_count)
    polygons: list[list[float]] = field(default_factory=list)  # COCO polygons, annotators' frame
    coco_size: tuple[int, int] | None = None  # (width, height) from the COCO image entry
    official_split: str | None = None  # fractured images: from Utilities/Fracture Split


@dataclass(frozen=True)
class Release:
    root: Path
    records: list[SourceRecord]  # sorted by image_id
    official_counts: dict[str, int]  # fractured images per official split


def image_id_of(file_name: str) -> str:
    return Path(file_name).stem


def _require(path: Path, kind: str, root: Path) -> Path:
    if kind == "dir" and not path.is_dir():
        raise DataError(f"{path}: folder missing from the FracAtlas release at {root}" + _layout_hint(root))
    if kind == "file" and not path.is_file():
        raise DataError(f"{path}: file missing from the FracAtlas release at {root}" + _layout_hint(root))
    return path


def _layout_hint(root: Path) -> str:
    if not root.is_dir():
        return " (the source folder does not exist)."
    nested = sorted(p.parent for p in root.glob("*/dataset.csv"))
    if nested:
        return f" (a release layout was found one level down: pass --source {nested[0]})."
    return (
        " (expected the release layout: images/Fractured, images/Non_fractured, dataset.csv, "
        "Annotations/COCO JSON/COCO_fracture_masks.json, Utilities/Fracture Split/{train,valid,test}.csv)."
    )


def _list_images(folder: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out[p.name] = p
    return out


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)} (found: "
                    f"{', '.join(reader.fieldnames or []) or 'no header'})."
                )
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file ({e}).") from None


def _read_dataset_csv(path: Path) -> dict[str, dict[str, int]]:
    rows = {}
    for line, row in enumerate(_read_csv(path, CSV_COLUMNS), start=2):
        name = (row["image_id"] or "").strip()
        if name in rows:
            raise DataError(f"{path}: line {line}: image_id {name!r} appears twice.")
        try:
            rows[name] = {c: int(row[c]) for c in CSV_COLUMNS[1:]}
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {line}: expected integer flags for {name!r}.") from None
    return rows


def _read_coco(path: Path) -> dict[str, tuple[tuple[int, int], list[list[float]]]]:
    """file name -> ((width, height), polygons); validates every polygon."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: corrupt JSON at line {e.lineno}, column {e.colno}: {e.msg}.") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}).") from None
    except (RecursionError, ValueError) as e:  # nested too deeply, or an integer too long to convert
        raise DataError(f"{path}: not a usable JSON file ({type(e).__name__}).") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise DataError(f"{path}: not a COCO file (expected top-level 'images' and 'annotations' lists).")
    by_id: dict[Any, tuple[str, tuple[int, int]]] = {}
    out: dict[str, tuple[tuple[int, int], list[list[float]]]] = {}
    for i, im in enumerate(data["images"]):
        try:
            name, size = str(im["file_name"]), (int(im["width"]), int(im["height"]))
            key = im["id"]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: images[{i}] needs id, file_name, width and height.") from None
        if size[0] <= 0 or size[1] <= 0:
            raise DataError(f"{path}: images[{i}] ({name}) has a non-positive size {size}.")
        if name in out or key in by_id:
            raise DataError(f"{path}: images[{i}] ({name}) appears twice.")
        by_id[key] = (name, size)
        out[name] = (size, [])
    for i, ann in enumerate(data["annotations"]):
        key = ann.get("image_id") if isinstance(ann, dict) else None
        if key not in by_id:
            raise DataError(
                f"{path}: annotations[{i}] refers to image id {key!r}, which has no images entry."
            )
        name, (w, h) = by_id[key]
        seg = ann.get("segmentation")
        if not isinstance(seg, list) or not seg or not all(isinstance(s, list) for s in seg):
            raise DataError(f"{path}: annotations[{i}] ({name}): segmentation must be a list of polygons.")
        for poly in seg:
            _check_polygon(path, i, name, poly, w, h)
            out[name][1].append([float(v) for v in poly])
    return out


def _check_polygon(path: Path, i: int, name: str, poly: list, w: int, h: int) -> None:
    where = f"{path}: annotations[{i}] ({name})"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
        raise DataError(f"{where}: polygon has non-numeric coordinates.")
    if len(poly) % 2 or len(poly) < 6:
        raise DataError(f"{where}: polygon with fewer than 3 points ({len(poly)} coordinates).")
    xs, ys = poly[0::2], poly[1::2]
    t = OUTSIDE_TOLERANCE_PX
    if min(xs) < -t or min(ys) < -t or max(xs) > w + t or max(ys) > h + t:
        raise DataError(
            f"{where}: polygon outside the image: x in [{min(xs):.1f}, {max(xs):.1f}], y in "
            f"[{min(ys):.1f}, {max(ys):.1f}], image is {w} x {h}."
        )


def _read_splits(root: Path, fractured: dict[str, Path]) -> tuple[dict[str, str], dict[str, int]]:
    assigned: dict[str, str] = {}
    counts = {}
    for split in SPLITS:
        path = _require(root / SPLIT_DIR / f"{split}.csv", "file", root)
        rows = _read_csv(path, ("image_id",))
        counts[split] = len(rows)
        for line, row in enumerate(rows, start=2):
            name = (row["image_id"] or "").strip()
            if name not in fractured:
                raise DataError(f"{path}: line {line}: image id {name!r} has no image in {FRACTURED_DIR}.")
            if name in assigned:
                raise DataError(f"{path}: line {line}: {name} is already in the {assigned[name]} split.")
            assigned[name] = split
    missing = sorted(set(fractured) - set(assigned))
    if missing:
        raise DataError(
            f"{root / SPLIT_DIR}: {len(missing)} fractured image(s) in no split file, e.g. "
            f"{', '.join(missing[:3])}."
        )
    return assigned, counts


def read_release(root: str | Path) -> Release:
    """Check the layout and every metadata file; return one record per image (no pixels decoded)."""
    root = Path(root)
    _require(root, "dir", root)
    fr_dir = _require(root / FRACTURED_DIR, "dir", root)
    nf_dir = _require(root / NON_FRACTURED_DIR, "dir", root)
    csv_path = _require(root / DATASET_CSV, "file", root)
    coco_path = _require(root / COCO_JSON, "file", root)
    for split in SPLITS:
        _require(root / SPLIT_DIR / f"{split}.csv", "file", root)

    fractured, non_fractured = _list_images(fr_dir), _list_images(nf_dir)
    if not fractured or not non_fractured:
        empty = fr_dir if not fractured else nf_dir
        raise DataError(f"{empty}: no images found (expected .jpg files).")
    both = sorted(set(fractured) & set(non_fractured))
    if both:
        raise DataError(f"{root / 'images'}: {len(both)} image(s) in both class folders, e.g. {both[0]}.")
    rows = _read_dataset_csv(csv_path)
    files = {**fractured, **non_fractured}
    no_row = sorted(set(files) - set(rows))
    if no_row:
        raise DataError(f"{csv_path}: no row for {len(no_row)} image file(s), e.g. {no_row[0]}.")
    no_file = sorted(set(rows) - set(files))
    if no_file:
        raise DataError(f"{csv_path}: {len(no_file)} row(s) have no image file, e.g. {no_file[0]}.")
    ids = [image_id_of(n) for n in files]
    if len(set(ids)) != len(ids):
        raise DataError(f"{root / 'images'}: two files share an image id (same name, different suffix).")

    coco = _read_coco(coco_path)
    for name in coco:
        if name not in fractured:
            raise DataError(f"{coco_path}: annotated image {name!r} has no file in {FRACTURED_DIR}.")
    unannotated = sorted(set(fractured) - set(coco))
    if unannotated:
        raise DataError(
            f"{coco_path}: no images entry for {len(unannotated)} fractured image(s), e.g. {unannotated[0]}."
        )
    split_of, counts = _read_splits(root, fractured)

    records = []
    for name in sorted(files, key=image_id_of):
        is_fr = name in fractured
        size, polys = coco.get(name, (None, []))
        records.append(
            SourceRecord(
                image_id=image_id_of(name),
                file_name=name,
                path=files[name],
                fractured=is_fr,
                csv=rows[name],
                polygons=polys,
                coco_size=size,
                official_split=split_of.get(name),
            )
        )
    return Release(root=root, records=records, official_counts=counts)
