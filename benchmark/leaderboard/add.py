"""Put one `fxbench run` output folder into the results store, checked exactly as the leaderboard will."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ResultError
from ..io import atomic_write_bytes, replace_dir
from ..results.resultfile import MAX_RESULT_BYTES, RESULT_NAME, read_limited
from . import store
from .consistency import copied_rows
from .evidence import audits_root, record_paths
from .filechecks import MAX_SAMPLES_BYTES, check_gallery


@dataclass(frozen=True)
class AddedResult:
    submission_id: str
    version: str
    json_path: Path
    replaced: bool


def add_result(run_dir: str | Path, *, results_dir: str | Path, replace: bool = False) -> AddedResult:
    """Copy RUN_DIR/result.json, samples.parquet and gallery/ to RESULTS/<version>/<id>.json, <id>.parquet and
    <id>/gallery/. Everything is checked before anything is written (schema, version, fingerprint, config
    hash, eligibility, catalogue, evaluation split, per-sample file, metric values, CIs, gallery); the files
    are then copied to a staging folder beside the store, checked again there (what is stored is exactly
    what was checked), and moved into place, the result file last."""
    run_dir = Path(run_dir)
    src = run_dir / "result.json" if run_dir.is_dir() and not run_dir.is_symlink() else run_dir
    result = _check(src)
    sid, version = result["submission"]["id"], result["benchmark"]["version"]
    folder = Path(results_dir) / version
    target = folder / f"{sid}.json"
    _check_layout(folder, sid, version=version)
    existed = target.exists()
    if existed and not replace:
        raise ResultError(f"{target}: a result for {sid!r} is already in the store; pass --replace to overwrite it")
    records = [p for p in record_paths(audits_root(results_dir), version, sid) if p.exists()]
    if records:
        raise ResultError(f"{records[0]}: the stored result of {sid!r} has an evidence record, which would no "
                          "longer match; remove the record (the new result must be checked again) and add it again")
    _check_not_copied(store.samples_path(src, result), folder, sid)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{sid}.add-", dir=folder))
    except OSError as e:
        raise ResultError(f"{folder}: cannot write to the results store ({e.strerror or e}); nothing was stored") from None
    try:
        atomic_write_bytes(stage / RESULT_NAME, read_limited(src, MAX_RESULT_BYTES, what="result file"))
        samples = store.samples_path(src, result)
        atomic_write_bytes(stage / samples.name, read_limited(samples, MAX_SAMPLES_BYTES, what="per-sample file"))
        if (src.parent / "gallery").is_dir():
            shutil.copytree(src.parent / "gallery", stage / "entry" / "gallery", symlinks=True)
        staged = _check(stage / RESULT_NAME, gallery_parent=stage / "entry")
        if staged != result:
            raise ResultError(f"{src}: changed while it was being added; nothing was stored")
        if (stage / "entry").is_dir():
            replace_dir(stage / "entry", folder / sid)
        elif (folder / sid).exists():
            shutil.rmtree(folder / sid)
        os.replace(stage / samples.name, folder / f"{sid}.parquet")
        os.replace(stage / RESULT_NAME, target)  # last: the result file is what marks the entry complete
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return AddedResult(submission_id=sid, version=version, json_path=target, replaced=existed)


def _check_not_copied(samples: Path, folder: Path, sid: str) -> None:
    """Refused at once rather than when the leaderboard is generated: rows shared with a stored result of the
    same version (consistency.copied_rows)."""
    import pandas as pd

    if not folder.is_dir():
        return
    mine = pd.read_parquet(samples)
    for other in sorted(folder.glob("*.parquet")):
        if other.stem == sid or other.is_symlink():
            continue
        try:
            theirs = pd.read_parquet(other)
        except Exception:  # noqa: BLE001 - a broken stored file is the store's problem, reported there
            continue
        if "image_id" in theirs and (hit := copied_rows(mine, theirs)) is not None:
            raise ResultError(f"{samples}: {hit[1]} images share the same {hit[0]} to the last bit with the stored "
                              f"{other.stem}, which two different runs never do; nothing was stored")


def _check_layout(folder: Path, sid: str, *, version: str) -> None:
    """The store's places for this entry are free for what goes there: the version folder is a folder (or can be
    made one), <id>.json and <id>.parquet are not folders, <id>/ is not a file or link. Checked before anything
    is written: a refusal leaves the store as it was."""
    store.require_folder(folder, what=f"results store's {version} entry")
    for name in (f"{sid}.json", f"{sid}.parquet"):
        p = folder / name
        if p.is_dir() and not p.is_symlink():
            raise ResultError(f"{p}: is a folder where the store keeps a file; move it away, nothing was stored")
    entry = folder / sid
    if entry.is_symlink() or (entry.exists() and not entry.is_dir()):
        raise ResultError(f"{entry}: is a file or link where the store keeps {sid}'s gallery folder; move it away, "
                          "nothing was stored")


def _check(json_path: Path, *, gallery_parent: Path | None = None) -> dict:
    result = store.read_json(json_path)
    spec = store.version_spec(result["benchmark"]["version"])
    store.check_belongs(result, spec, source=json_path)
    store.read_samples(store.samples_path(json_path, result), result, json_path, spec)
    check_gallery(result, gallery_parent or json_path.parent, source=json_path)
    return result
