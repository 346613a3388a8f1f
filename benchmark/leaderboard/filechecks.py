"""The bytes of the files beside a stored result, checked before anything trusts them: the per-sample parquet
file (its footer's sizes, before it is decompressed) and the gallery overlays (real PNG images, regular files,
exactly the ones the result lists). Every limit bounds what an untrusted store can make fxbench read."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..errors import ResultError
from ..results.resultfile import read_limited

MAX_SAMPLES_BYTES = 64 * 1024 * 1024  # a full-preset per-sample file is ~1 MB
MAX_SAMPLES_INFLATED = 512 * 1024 * 1024
MAX_SAMPLE_ROWS = 100_000  # the evaluation split has 801 images
MAX_SAMPLE_COLUMNS = 10_000  # a full-preset result has ~800 metric columns
MAX_PNG_BYTES = 4 * 1024 * 1024
MAX_PNG_PIXELS = 16_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_parquet_size(data: bytes, path: Path) -> None:
    """Read only the parquet footer first: a small file can declare columns that decompress to gigabytes."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
    except Exception as e:  # noqa: BLE001 - any footer problem means "not a readable parquet file"
        raise ResultError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    inflated = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if meta.num_rows > MAX_SAMPLE_ROWS or inflated > MAX_SAMPLES_INFLATED or meta.num_columns > MAX_SAMPLE_COLUMNS:
        raise ResultError(f"{path}: {meta.num_rows} rows x {meta.num_columns} columns, {inflated} bytes "
                          f"uncompressed: over the limits for a per-sample file ({MAX_SAMPLE_ROWS} rows, "
                          f"{MAX_SAMPLE_COLUMNS} columns, {MAX_SAMPLES_INFLATED} bytes)")


def check_gallery(result: dict[str, Any], gallery_parent: Path, *, source: Path) -> dict[str, Path]:
    """``gallery/`` under ``gallery_parent`` holds exactly the PNG files ``files.gallery`` lists: regular files
    (no symlinks anywhere), real PNG bytes, each under the size limit."""
    listed = list(result.get("files", {}).get("gallery", []))
    root = gallery_parent / "gallery"
    found: dict[str, Path] = {}
    for top in (gallery_parent, root):
        if top.is_symlink():
            raise ResultError(f"{top}: is a symbolic link; the store holds regular files and folders only")
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_symlink():
                raise ResultError(f"{p}: is a symbolic link; the store holds regular files and folders only")
            if p.is_dir():
                continue
            rel = p.relative_to(gallery_parent).as_posix()
            if rel not in listed:
                raise ResultError(f"{p}: not listed in {source.name}'s files.gallery")
            data = read_limited(p, MAX_PNG_BYTES, what="gallery image")
            if not _is_png(data):
                raise ResultError(f"{p}: not a PNG image (gallery files must be real PNG bytes)")
            found[rel] = p
    elif root.exists():
        raise ResultError(f"{root}: not a folder")
    absent = [g for g in listed if g not in found]
    if absent:
        raise ResultError(f"{source}: files.gallery lists {absent[0]}, which is not in {root}"
                          + (f" ({len(absent) - 1} more)" if len(absent) > 1 else ""))
    return found


def _is_png(data: bytes) -> bool:
    if not data.startswith(PNG_MAGIC):
        return False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            if im.width * im.height > MAX_PNG_PIXELS:
                return False
            im.verify()
    except Exception:  # noqa: BLE001 - any decoder complaint means "not a usable PNG"
        return False
    return True


__all__ = [
    "MAX_PNG_BYTES", "MAX_PNG_PIXELS", "MAX_SAMPLES_BYTES", "MAX_SAMPLES_INFLATED", "MAX_SAMPLE_COLUMNS",
    "MAX_SAMPLE_ROWS", "PNG_MAGIC", "check_gallery", "check_parquet_size",
]
