"""Provenance: a committed result must be, byte for byte, what a workflow run of this repository produced.

`fxbench run` records the GitHub Actions run it ran in (``provenance.ci``); the submission workflow uploads
the run folder as the artifact ``result-<id>`` and attests it. On a pull request that adds or changes a
stored result, CI downloads that run's artifact and calls ``check_provenance``: any byte that differs (a
hand edit, a locally computed file, another run's file) is refused. See docs/leaderboard.md, "Provenance".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ResultError
from ..results.resultfile import read_result


@dataclass(frozen=True)
class Provenance:
    submission_id: str
    repository: str
    run_id: str
    sha256: dict[str, str]  # committed file (relative to the version folder) -> sha256


def recorded_run(json_path: str | Path) -> tuple[str, str]:
    """(repository, run id) that a stored result says computed it; ResultError when it names none."""
    result = read_result(json_path)
    ci = result["provenance"].get("ci")
    if not ci:
        raise ResultError(
            f"{json_path}: names no workflow run (provenance.ci is missing): it was not computed by the "
            "submission workflow; only a maintainer can add such a result (docs/leaderboard.md, Provenance)"
        )
    return ci["repository"], ci["run_id"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_provenance(json_path: str | Path, artifact_dir: str | Path, *, repository: str) -> Provenance:
    """The stored ``<id>.json``, ``<id>.parquet`` and ``<id>/gallery/`` must equal the artifact's
    ``result.json``, ``samples.parquet`` and ``gallery/`` byte for byte, and name a run of ``repository``."""
    json_path, artifact = Path(json_path), Path(artifact_dir)
    repo, run_id = recorded_run(json_path)
    if repo != repository:
        raise ResultError(f"{json_path}: computed by a run of {repo!r}, not of this repository {repository!r}")
    sid = json_path.stem
    pairs = {json_path: artifact / "result.json", json_path.with_suffix(".parquet"): artifact / "samples.parquet"}
    stored_gallery = json_path.parent / sid / "gallery"
    art_gallery = artifact / "gallery"
    names = sorted({p.relative_to(g).as_posix() for g in (stored_gallery, art_gallery) if g.is_dir()
                    for p in g.rglob("*") if p.is_file()})
    pairs.update({stored_gallery / n: art_gallery / n for n in names})
    digests = {}
    for stored, produced in pairs.items():
        if not produced.is_file():
            raise ResultError(f"{stored}: the artifact of run {run_id} has no {produced.relative_to(artifact)}")
        if not stored.is_file():
            raise ResultError(f"{stored}: missing, but run {run_id} produced {produced.relative_to(artifact)}")
        if _digest(stored) != _digest(produced):
            raise ResultError(
                f"{stored}: differs from what workflow run {run_id} produced ({produced.relative_to(artifact)}): "
                "the committed file was edited or comes from elsewhere"
            )
        digests[stored.relative_to(json_path.parent).as_posix()] = _digest(stored)
    return Provenance(submission_id=sid, repository=repo, run_id=run_id, sha256=digests)
