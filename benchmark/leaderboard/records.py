"""Writing evidence records (evidence.py reads them): an audit of a store entry (``fxbench audit``) and a CI
provenance check (``fxbench audit-ci``). Both read the entry exactly as the store does, write nothing before
their work is done, and write the record atomically to ``audits/<version>/<id>[.ci].json`` beside the store."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import FxbenchError
from ..io import atomic_write_json
from .audit import PASS, audit_result, audit_settings
from .evidence import (
    AUDIT_SCHEMA,
    CI_SCHEMA,
    audits_root,
    entry_files,
    read_record,
    record_paths,
    sealed,
    sha256_bytes,
)
from .store import VERSION_RE, StoredResult, read_stored_result, version_spec

MIN_NONCE = 16  # characters: a guessable nonce would let a submitter prepare the images it picks
NONCE = re.compile(r"[\x21-\x7e]{" + str(MIN_NONCE) + ",200}")


@dataclass(frozen=True)
class Written:
    record: dict[str, Any]
    path: Path | None  # None: checked only, nothing written


def _entry(json_path: str | Path) -> tuple[Path, StoredResult]:
    """A store entry ``<results>/<version>/<id>.json``, read and checked as the store reads it."""
    path = Path(json_path)
    if path.is_dir():
        raise FxbenchError(f"{path}: give a stored result, <results>/<version>/<id>.json (put a run into the "
                           "store with `fxbench add` first)")
    if not VERSION_RE.fullmatch(path.parent.name):
        raise FxbenchError(f"{path}: not in a version folder of a results store (<results>/<version>/<id>.json)")
    return path, read_stored_result(path, version_spec(path.parent.name))


def check_nonce(nonce: str) -> str:
    if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
        raise FxbenchError(f"--nonce: give a random value of {MIN_NONCE} to 200 printable characters without "
                           "spaces, chosen now (e.g. `openssl rand -hex 16`): the images it picks must not be "
                           "predictable by the submitter")
    return nonce


def audit_entry(json_path: str | Path, *, nonce: str, submission: str | Path | None = None,
                data: str | Path | None = None, device: str = "auto", trust_code: bool = False,
                auditor: str | None = None, audits_dir: str | Path | None = None, write: bool = True) -> Written:
    """Audit a stored result (audit.py) and write its record; ``write=False`` only computes it."""
    from ..data import load_arrays
    from ..definition import load_definition
    from ..models import load_submission
    from ..plan import git_commit
    from ..publish import device_name

    check_nonce(nonce)
    audit_settings(Path(json_path).parent.name)  # a version without an audit is refused before any work
    path, stored = _entry(json_path)
    version, sid = stored.version, stored.id
    sub_path = Path(submission) if submission is not None else Path("submissions") / sid / "model.yaml"
    if not sub_path.exists():
        raise FxbenchError(f"{sub_path}: no submission to audit {sid} with (give --submission PATH)")
    sub = load_submission(sub_path, trust_code=trust_code, device=device)
    evalset = load_arrays(data, split=load_definition(version).raw["dataset"]["split"])
    findings = audit_result(stored.result, stored.samples, model=sub.model, submission=sub.to_json(),
                            evalset=evalset, nonce=nonce, result_sha256=sha256_bytes(path.read_bytes()),
                            device=sub.device)
    record = sealed({
        "schema": AUDIT_SCHEMA, **findings, "files": entry_files(path),
        "audited_at": datetime.now(UTC).replace(microsecond=0).isoformat(), "auditor": auditor,
        "device": device_name(sub.device), "fxbench_version": __version__, "git_commit": git_commit(),
    })
    target = record_paths(Path(audits_dir) if audits_dir else audits_root(path.parent.parent), version, sid)[0]
    if write:
        atomic_write_json(target, record)
    return Written(record, target if write else None)


def recheck_entry(json_path: str | Path, **options: Any) -> tuple[bool, str]:
    """Re-run the audit of an entry with its record's nonce, writing nothing: (reproduced, what differs)."""
    path, stored = _entry(json_path)
    audits = Path(options.pop("audits_dir", None) or audits_root(path.parent.parent))
    target = record_paths(audits, stored.version, stored.id)[0]
    if not target.is_file():
        raise FxbenchError(f"{target}: no audit record of {stored.version}/{stored.id} to check")
    old = read_record(target, schema=AUDIT_SCHEMA)
    new = audit_entry(path, nonce=str(old.get("nonce")), audits_dir=audits, write=False, **options).record
    diffs = [k for k in ("images", "verdict", "files", "submission_files") if old.get(k) != new.get(k)]
    if diffs:
        return False, f"the re-run differs from {target} in {', '.join(diffs)} (re-run verdict: {new['verdict']})"
    return True, f"{target}: reproduced ({len(new['images'])} images, verdict {new['verdict']})"


def ci_entry(json_path: str | Path, artifact_dir: str | Path, *, repository: str, attestation: str,
             audits_dir: str | Path | None = None) -> Written:
    """Record that the entry's files equal the artifact of the workflow run its ``provenance.ci`` names
    (provenance.check_provenance); ``attestation``: how the artifact's attestation was verified (e.g. the
    `gh attestation verify` command CI ran), kept in the record for readers."""
    from .provenance import check_provenance

    if not attestation.strip():
        raise FxbenchError("--attestation: say how the artifact's attestation was verified (e.g. the `gh "
                           "attestation verify ... --signer-workflow ...` command that passed)")
    p = check_provenance(json_path, artifact_dir, repository=repository)  # bytes first: cheap, and decisive
    path, stored = _entry(json_path)
    record = sealed({
        "schema": CI_SCHEMA, "submission": stored.id, "version": stored.version, "files": entry_files(path),
        "repository": p.repository, "run_id": p.run_id, "attestation": attestation.strip(),
        "checked_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
    })
    target = record_paths(Path(audits_dir) if audits_dir else audits_root(path.parent.parent), stored.version,
                          stored.id)[1]
    atomic_write_json(target, record)
    return Written(record, target)


__all__ = ["MIN_NONCE", "PASS", "Written", "audit_entry", "check_nonce", "ci_entry", "recheck_entry"]
