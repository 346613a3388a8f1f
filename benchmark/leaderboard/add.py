"""Put one `fxbench run` output folder into the results store, checked exactly as the leaderboard will."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ResultError
from ..io import atomic_write_bytes, replace_dir
from . import store


@dataclass(frozen=True)
class AddedResult:
    submission_id: str
    version: str
    json_path: Path
    replaced: bool


def add_result(run_dir: str | Path, *, results_dir: str | Path, replace: bool = False) -> AddedResult:
    """Copy RUN_DIR/result.json, samples.parquet and gallery/ to RESULTS/<version>/<id>.json, <id>.parquet and
    <id>/gallery/. Everything is checked before anything is written (schema, version, fingerprint, config
    hash, eligibility, per-sample file, metric values)."""
    run_dir = Path(run_dir)
    src = run_dir / "result.json" if run_dir.is_dir() and not run_dir.is_symlink() else run_dir
    result = store.read_json(src)
    version = result["benchmark"]["version"]
    spec = store.version_spec(version)
    store.check_belongs(result, spec, source=src)
    samples = store.samples_path(src, result)
    store.read_samples(samples, result, src, spec)
    store.check_gallery(result, src.parent, source=src)
    sid = result["submission"]["id"]
    folder = Path(results_dir) / version
    target = folder / f"{sid}.json"
    existed = target.exists()
    if existed and not replace:
        raise ResultError(f"{target}: a result for {sid!r} is already in the store; pass --replace to overwrite it")
    gallery = src.parent / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    if gallery.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{sid}.tmp-", dir=folder))
        shutil.copytree(gallery, tmp / "gallery")
        replace_dir(tmp, folder / sid)
    elif (folder / sid).exists():
        shutil.rmtree(folder / sid)
    atomic_write_bytes(folder / f"{sid}.parquet", samples.read_bytes())
    atomic_write_bytes(target, src.read_bytes())  # last: the result file is what marks the entry complete
    return AddedResult(submission_id=sid, version=version, json_path=target, replaced=existed)
