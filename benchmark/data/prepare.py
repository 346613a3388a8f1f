"""`fxbench data prepare`: FracAtlas release -> the canonical Hugging Face dataset, written atomically.

Defect policies (see docs/data.md): truncated or undecodable images are excluded with the reason recorded;
EXIF orientation is applied and flagged; the label comes from the class folder (the csv's ``fractured`` is
kept as a flag where it disagrees); hardware, region and view flags are kept as columns.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import DataError
from ..io import atomic_write_json, replace_dir
from ..paths import default_data_dir
from . import geometry, manifest, splits
from .decode import Decoded, DecodeTask, decode
from .fingerprint import RowDigest, fingerprint, ids_digest
from .info import (  # re-exported: embedded.py, data/__init__.py
    DATASET_NAME,
    INFO_FILE,
    INFO_SCHEMA,
    read_info,
)
from .source import COCO_JSON, VIEWS, Release, SourceRecord, read_release, region_of

LABEL_NAMES = ["no_fracture", "fracture"]
BOOL_COLUMNS = ("hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan")


def features():
    import datasets as hf

    return hf.Features(
        {
            "image_id": hf.Value("string"),
            "image": hf.Image(),
            "mask": hf.Image(),
            "label": hf.ClassLabel(names=LABEL_NAMES),
            "split": hf.Value("string"),
            **{c: hf.Value("bool") for c in BOOL_COLUMNS},
            "region": hf.Value("string"),
            "view": hf.Value("string"),
            "fracture_count": hf.Value("int32"),
            "source_width": hf.Value("int32"),
            "source_height": hf.Value("int32"),
            "source_sha256": hf.Value("string"),
            "exif_orientation": hf.Value("int32"),
            "flags": hf.Sequence(hf.Value("string")),
            "image_pixels_sha256": hf.Value("string"),
            "mask_pixels_sha256": hf.Value("string"),
        }
    )


@dataclass(frozen=True)
class Exclusion:
    image_id: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"image_id": self.image_id, "reason": self.reason}


@dataclass(frozen=True)
class PrepareReport:
    path: Path
    fingerprint: str
    counts: dict[str, dict[str, int]]
    excluded: list[Exclusion]
    manifest: manifest.ManifestCheck
    workers: int
    seconds: float
    timings: dict[str, float]  # seconds per phase: validate, decode, write


def view_of(flags: dict[str, int]) -> str:
    return "+".join(v for v in VIEWS if flags.get(v)) or "unknown"


def split_counts(rows: list[RowDigest]) -> dict[str, dict[str, int]]:
    out = {}
    for name in ("train", "valid", "test", "eval", "all"):
        sel = [r for r in rows if splits.in_split(r.split, name)]
        out[name] = {"n": len(sel), "n_fracture": sum(r.label for r in sel)}
    return out


def _row(rec: SourceRecord, d: Decoded, split: str) -> dict[str, Any]:
    flags = list(d.flags)
    if rec.fractured != bool(rec.csv["fractured"]):
        flags.append(f"csv-fractured-{rec.csv['fractured']}")
    if rec.fractured and rec.csv["fracture_count"] != len(rec.polygons):
        flags.append("csv-fracture-count-differs")
    return {
        "image_id": rec.image_id,
        "image": {"bytes": d.image_png, "path": None},
        "mask": {"bytes": d.mask_png, "path": None},
        "label": int(rec.fractured),
        "split": split,
        **{c: bool(rec.csv[c]) for c in BOOL_COLUMNS},
        "region": region_of(rec.csv),
        "view": view_of(rec.csv),
        "fracture_count": len(rec.polygons),
        "source_width": d.width,
        "source_height": d.height,
        "source_sha256": d.source_sha256,
        "exif_orientation": d.exif_orientation,
        "flags": flags,
        "image_pixels_sha256": d.image_sha256,
        "mask_pixels_sha256": d.mask_sha256,
    }


def decode_all(
    release: Release, *, workers: int, progress: Callable[[int, int], None] | None = None
) -> list[Decoded]:
    tasks = [
        DecodeTask(r.image_id, str(r.path), r.fractured, r.polygons, r.coco_size) for r in release.records
    ]
    out: list[Decoded] = []
    if workers <= 1:
        results = map(decode, tasks)
        pool = None
    else:
        # forkserver: workers start clean, whatever threads the parent (torch, arrow) has running.
        ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
        pool = ctx.Pool(workers)
        results = pool.imap(decode, tasks, chunksize=16)
    try:
        for i, d in enumerate(results, start=1):
            out.append(d)
            if progress:
                progress(i, len(tasks))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return out


def prepare(
    source: str | Path,
    *,
    out: str | Path | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareReport:
    """Validate the release at ``source``, decode it in parallel and write the dataset to ``out``."""
    t0 = time.perf_counter()
    out = Path(out) if out is not None else default_data_dir()
    check_out(out)  # before any work: never replace a folder that holds something else
    release = read_release(source)
    t_validate = time.perf_counter()
    workers = max(1, workers or os.cpu_count() or 1)
    decoded = decode_all(release, workers=workers, progress=progress)
    t_decode = time.perf_counter()

    for rec, d in zip(release.records, decoded, strict=True):
        if d.problem:
            raise DataError(f"{release.root / COCO_JSON}: {rec.file_name}: {d.problem}.")
    nf_split = splits.assign_non_fractured(
        [r.image_id for r in release.records if not r.fractured], release.official_counts
    )
    rows, digests, excluded = [], [], []
    for rec, d in zip(release.records, decoded, strict=True):
        if d.exclusion:
            excluded.append(Exclusion(rec.image_id, d.exclusion))
            continue
        split = rec.official_split if rec.fractured else nf_split[rec.image_id]
        rows.append(_row(rec, d, split))
        digests.append(RowDigest(rec.image_id, split, int(rec.fractured), d.image_sha256, d.mask_sha256))
    fp = fingerprint(digests)
    check = manifest.check(fp, digests)
    refuse_changed_eval_split(excluded, [r.image_id for r in release.records])
    info = {
        "schema": INFO_SCHEMA,
        "name": DATASET_NAME,
        "fingerprint": fp,
        "ids_digest": ids_digest(digests),
        "counts": split_counts(digests),
        "excluded": [e.to_json() for e in excluded],
        "flags": _flag_counts(rows),
        "source": {
            "path": str(Path(source).resolve()),
            "files": len(release.records),
            "official_fracture_split": release.official_counts,
        },
        "manifest": {"status": check.status, "variant": check.variant, "message": check.message},
        "geometry": {
            "size": geometry.SIZE,
            "image_filter": "LANCZOS",
            "mask_rule": "coverage >= 0.5",
            "supersample": geometry.SUPERSAMPLE,
        },
        "created_by": f"fxbench {__version__}",
        "libraries": _library_versions(),
    }
    write_dataset(rows, info, out)
    t_end = time.perf_counter()
    timings = {"validate": t_validate - t0, "decode": t_decode - t_validate, "write": t_end - t_decode}
    return PrepareReport(out, fp, info["counts"], excluded, check, workers, t_end - t0, timings)


def check_out(out: Path) -> None:
    """``--out`` is replaced whole: refuse anything but a missing or empty folder or an fxbench dataset, and
    check that a sibling can be written there before the long decode starts."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DataError(f"--out {out}: not a folder; give a new or empty folder, or an fxbench dataset to replace.")
    if out.is_dir() and any(out.iterdir()):
        try:
            read_info(out)
        except DataError:
            raise DataError(
                f"--out {out}: the folder holds files that are not an fxbench dataset ({INFO_FILE} missing or "
                "not one); fxbench replaces --out whole, so it refuses. Give a new or empty folder."
            ) from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.with_name(f".{out.name}.probe-{os.getpid()}")
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise DataError(f"--out {out}: cannot write there ({e.strerror}); nothing was changed.") from None


def refuse_changed_eval_split(excluded: list[Exclusion], release_ids: list[str]) -> None:
    """An image the manifest puts in the evaluation split that fails to decode in what is otherwise the
    benchmark's release would silently shrink the evaluation split: refuse, naming it and the reason."""
    m = manifest.load_manifest()
    if m is None or not excluded:
        return
    want = m.labels()
    if not set(want) <= set(release_ids):
        return  # another release (or a part of it): the manifest check reports the difference
    lost = [e for e in excluded if e.image_id in want and want[e.image_id][0] in splits.EVAL]
    if lost:
        e = lost[0]
        more = f" ({len(lost) - 1} more)" if len(lost) > 1 else ""
        raise DataError(
            f"{e.image_id} ({want[e.image_id][0]} split) cannot be decoded: {e.reason}{more}. Excluding it would "
            "change the benchmark's evaluation split; nothing was written. Restore the file from the release."
        )


def _library_versions() -> dict[str, str]:
    """The decoder and resampler decide the pixels: a fingerprint change after an upgrade points here."""
    from importlib.metadata import version

    return {name: version(name) for name in ("pillow", "numpy", "datasets")}


def _flag_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        for f in r["flags"]:
            counts[f] = counts.get(f, 0) + 1
    return dict(sorted(counts.items()))


def write_dataset(rows: list[dict[str, Any]], info: dict[str, Any], out: Path) -> None:
    """save_to_disk into a temporary sibling folder, add fxbench.json, then swap it into place."""
    import datasets as hf

    columns = {k: [r[k] for r in rows] for k in features()}
    ds = hf.Dataset.from_dict(columns, features=features())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with quiet_datasets():
            ds.save_to_disk(str(tmp))
        atomic_write_json(tmp / INFO_FILE, info)
        replace_dir(tmp, out)
    except OSError as e:  # a full disk, a read-only folder: the old dataset (if any) is untouched
        raise DataError(f"cannot write the dataset to {out} ({e.strerror or e}); nothing was changed.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def quiet_datasets():
    """No progress bars from datasets: fxbench prints its own one-line summaries."""
    import datasets as hf

    was_off = hf.is_progress_bar_enabled() is False
    hf.disable_progress_bars()
    try:
        yield
    finally:
        if not was_off:
            hf.enable_progress_bars()
