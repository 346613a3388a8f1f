"""Evidence that a stored result's run happened, read from records beside the results store.

A result file says what a run found; nothing in it shows that the run happened (every number can be
recomputed from a forged per-sample file, and ``provenance.ci`` is a claim anyone can write). Two kinds of
record, each written by a maintainer's command and committed under ``leaderboard/audits/<version>/``:

- ``<id>.json``: an **audit** (``fxbench audit``, audit.py): a sample of the result's images that the submitter
  could not choose, re-run with the submitted model and compared image by image with the per-sample file;
- ``<id>.ci.json``: a **CI provenance check** (``fxbench audit-ci``): the committed files equal, byte for byte,
  the artifact of the workflow run that ``provenance.ci`` names (whose attestation CI verified).

Each record holds the sha256 of every file of the entry (``<id>.json``, ``<id>.parquet``, the gallery PNGs) and
a digest of its own content. The store recomputes them: an entry changed after its record was written (a flag
injected, a gallery image swapped, a row edited), or a record edited by hand, is refused with the file named.
A record whose audit failed gives no evidence and says why. Evidence levels: ``audited``, ``ci-provenance``;
an entry with neither has ``none``. A version ranks only entries with the levels its ``leaderboard:
require_evidence`` names (v3); what each level does not prove is listed in docs/security.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ResultError
from ..io import canonical_json
from ..results.resultfile import read_limited

AUDITED, CI_PROVENANCE = "audited", "ci-provenance"
LEVELS = (AUDITED, CI_PROVENANCE)
AUDIT_SCHEMA, CI_SCHEMA = "fxbench.audit/1", "fxbench.ci-provenance/1"
AUDITS = "audits"  # beside the results folder: leaderboard/audits/<version>/<id>.json
CI_SUFFIX = ".ci.json"
MAX_RECORD_BYTES = 4 * 1024 * 1024
LABELS = {(): "none", (AUDITED,): "audited", (CI_PROVENANCE,): "CI-verified",
          (AUDITED, CI_PROVENANCE): "audited, CI-verified"}


@dataclass(frozen=True)
class Evidence:
    """What a stored entry's records show. ``levels``: the kinds of evidence it carries (LEVELS order);
    ``audit``: a summary of its audit record (also when the audit failed); ``ci``: the run its verified CI
    record names; ``claimed_ci``: ``provenance.ci`` as the result states it (verified or not); ``notes``:
    why something does not count as evidence (a failed audit, a CI run named but not verified)."""

    levels: tuple[str, ...] = ()
    audit: dict[str, Any] | None = None
    ci: dict[str, Any] | None = None
    claimed_ci: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        return LABELS[self.levels]

    def missing(self, required: frozenset[str] | set[str]) -> str:
        """Why the entry lacks the evidence ``required`` asks for ("" when it has some)."""
        if not required or set(self.levels) & set(required):
            return ""
        need = " or ".join(sorted(required))
        why = f"no evidence that the run happened (needs: {need}; docs/leaderboard.md, Evidence)"
        return why + "".join(f"; {n}" for n in self.notes)

    def to_json(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "label": self.label, "audit": self.audit, "ci": self.ci,
                "claimed_ci": self.claimed_ci, "notes": list(self.notes)}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_files(json_path: Path) -> dict[str, str]:
    """sha256 of every file of a store entry, by its path relative to the version folder: ``<id>.json``,
    ``<id>.parquet`` and each ``<id>/gallery/...`` file (the names provenance.check_provenance uses)."""
    folder, sid = json_path.parent, json_path.stem
    out = {f"{sid}.json": json_path, f"{sid}.parquet": json_path.with_suffix(".parquet")}
    gallery = folder / sid / "gallery"
    if gallery.is_dir():
        out |= {p.relative_to(folder).as_posix(): p for p in sorted(gallery.rglob("*")) if p.is_file()}
    return {k: sha256_bytes(p.read_bytes()) for k, p in sorted(out.items()) if p.is_file()}


def record_digest(record: dict[str, Any]) -> str:
    """The digest a record carries of its own content (every field but ``digest``, canonical JSON)."""
    return sha256_bytes(canonical_json({k: v for k, v in record.items() if k != "digest"}).encode())


def sealed(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its content digest set (what audit.py and audit-ci write)."""
    return {**record, "digest": record_digest(record)}


def audits_root(results_dir: str | Path) -> Path:
    """Where the records of a results store live: ``audits/`` beside the results folder."""
    return Path(results_dir).parent / AUDITS


def record_paths(audits_dir: Path, version: str, sid: str) -> tuple[Path, Path]:
    folder = audits_dir / version
    return folder / f"{sid}.json", folder / f"{sid}{CI_SUFFIX}"


def read_record(path: Path, *, schema: str) -> dict[str, Any]:
    if path.is_symlink():
        raise ResultError(f"{path}: is a symbolic link; evidence records are regular files")
    data = read_limited(path, MAX_RECORD_BYTES, what="evidence record")
    try:
        record = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ResultError(f"{path}: not a usable JSON evidence record ({type(e).__name__})") from None
    if not isinstance(record, dict) or record.get("schema") != schema:
        raise ResultError(f"{path}: not a {schema} record")
    for key, kind in (("submission", str), ("version", str), ("files", dict), ("digest", str)):
        if not isinstance(record.get(key), kind):
            raise ResultError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
    if record["digest"] != record_digest(record):
        raise ResultError(f"{path}: its content does not match its digest: the record was edited by hand "
                          "(rerun the command that writes it)")
    return record


def _check_binding(path: Path, record: dict[str, Any], version: str, sid: str, files: dict[str, str]) -> None:
    if record["submission"] != sid or record["version"] != version:
        raise ResultError(f"{path}: is a record of {record['version']}/{record['submission']}, not of {version}/{sid}")
    told = record["files"]
    changed = sorted(k for k in set(told) | set(files) if told.get(k) != files.get(k))
    if changed:
        what = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ResultError(f"{path}: the entry's files differ from the ones this record was written for ({what}): "
                          "the result was changed after it was checked; restore it, or check it again and "
                          "replace the record")


def read_evidence(audits_dir: Path, version: str, json_path: Path, result: dict[str, Any]) -> Evidence:
    """The evidence of one store entry; ResultError when a record does not belong to its bytes."""
    sid = json_path.stem
    audit_path, ci_path = record_paths(audits_dir, version, sid)
    claimed = (result.get("provenance") or {}).get("ci") or None
    levels, notes, audit, ci = [], [], None, None
    files = entry_files(json_path) if audit_path.exists() or ci_path.exists() else {}
    if audit_path.exists() or audit_path.is_symlink():
        rec = read_record(audit_path, schema=AUDIT_SCHEMA)
        _check_binding(audit_path, rec, version, sid, files)
        audit = audit_summary(rec)
        if rec.get("verdict") == "pass":
            levels.append(AUDITED)
        else:
            problems = rec.get("problems") or ["no verdict"]
            notes.append(f"its audit failed ({problems[0]})")
    if ci_path.exists() or ci_path.is_symlink():
        rec = read_record(ci_path, schema=CI_SCHEMA)
        _check_binding(ci_path, rec, version, sid, files)
        named = {k: str(v) for k, v in (claimed or {}).items() if k in ("repository", "run_id")}
        if named != {"repository": str(rec.get("repository")), "run_id": str(rec.get("run_id"))}:
            raise ResultError(f"{ci_path}: verified run {rec.get('repository')}#{rec.get('run_id')}, but the result "
                              f"names {named or 'no run'} in provenance.ci")
        ci = {k: rec.get(k) for k in ("repository", "run_id", "checked_at", "attestation")}
        levels.append(CI_PROVENANCE)
    elif claimed:
        notes.append(f"provenance.ci names run {claimed.get('run_id')} of {claimed.get('repository')}, not "
                     "verified (no CI provenance record)")
    return Evidence(levels=tuple(lv for lv in LEVELS if lv in levels), audit=audit, ci=ci, claimed_ci=claimed,
                    notes=tuple(notes))


def audit_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the leaderboard shows of an audit record."""
    keys = ("verdict", "nonce", "seed", "audited_at", "auditor", "device", "fxbench_version", "git_commit")
    out = {k: record.get(k) for k in keys}
    out["images"] = len(record.get("images") or [])
    out["problems"] = list(record.get("problems") or [])[:5]
    return out


def orphan_records(audits_dir: Path, entries: dict[str, set[str]]) -> list[str]:
    """Records under ``audits_dir`` whose entry is not in the store (version -> ids present)."""
    out = []
    if not audits_dir.is_dir():
        return out
    for folder in sorted(p for p in audits_dir.iterdir() if p.is_dir()):
        for p in sorted(folder.glob("*.json")):
            sid = p.name[: -len(CI_SUFFIX)] if p.name.endswith(CI_SUFFIX) else p.stem
            if sid not in entries.get(folder.name, set()):
                out.append(f"{p}: an evidence record for {folder.name}/{sid}, which is not in the results store")
    return out


__all__ = [
    "AUDITED", "AUDITS", "AUDIT_SCHEMA", "CI_PROVENANCE", "CI_SCHEMA", "CI_SUFFIX", "LEVELS", "Evidence",
    "audit_summary", "audits_root", "entry_files", "orphan_records", "read_evidence", "read_record",
    "record_digest", "record_paths", "sealed", "sha256_bytes",
]
