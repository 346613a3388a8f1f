"""`fxbench audit` and `fxbench audit-ci`: a maintainer's evidence that a stored result's run happened
(docs/leaderboard.md, "Evidence")."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
    app.command("audit-ci")(audit_ci)


def audit(
    result: Path = typer.Argument(..., help="A stored result: <results>/<version>/<id>.json."),
    nonce: str = typer.Option(None, "--nonce", help="A random value chosen now, at review time (e.g. `openssl "
                                                     "rand -hex 16`): it picks the images. Not with --check."),
    submission: Path = typer.Option(None, "--submission",
                                    help="The submission's model.yaml (default submissions/<id>/model.yaml)."),
    data: Path = typer.Option(None, "--data", help="The prepared dataset (default: FXBENCH_HOME's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Allow the submission's own Python code."),
    auditor: str = typer.Option(None, "--auditor", help="Who ran the audit (kept in the record)."),
    audits: Path = typer.Option(None, "--audits", help="Where records go (default: audits/ beside the store)."),
    check: bool = typer.Option(False, "--check", help="Re-run the entry's recorded audit with its nonce and "
                                                      "say whether it reproduces; writes nothing."),
) -> None:
    """Re-run a sample of a stored result's images, picked by a review-time nonce, with the submitted model;
    compare every outcome with the result and write the record (exit 0: passed, 1: failed, 2: cannot audit)."""
    from ..errors import FxbenchError
    from ..leaderboard.records import audit_entry, check_nonce, recheck_entry

    opts = {"submission": submission, "data": data, "device": device, "trust_code": trust_code, "audits_dir": audits}
    if check:
        if nonce is not None:
            raise FxbenchError("--check re-runs the recorded audit with its own nonce: give no --nonce")
        ok, message = recheck_entry(result, **opts)
        typer.echo(message, err=not ok)
        raise typer.Exit(code=0 if ok else 1)
    if nonce is None:
        raise FxbenchError("--nonce is required: a random value chosen now (e.g. `openssl rand -hex 16`)")
    check_nonce(nonce)
    written = audit_entry(result, nonce=nonce, auditor=auditor, **opts)
    rec = written.record
    typer.echo(f"audit of {rec['version']}/{rec['submission']}: {len(rec['images'])} images, verdict "
               f"{rec['verdict']}; record written to {written.path}")
    for p in rec["problems"]:
        typer.echo(f"  - {p}", err=True)
    if rec["verdict"] != "pass":
        raise typer.Exit(code=1)


def audit_ci(
    result: Path = typer.Argument(..., help="A stored result: <results>/<version>/<id>.json."),
    artifact: Path = typer.Argument(..., help="The downloaded artifact of the run its provenance.ci names."),
    repository: str = typer.Option(..., "--repository", help="This repository, owner/name."),
    attestation: str = typer.Option(..., "--attestation",
                                    help="How the artifact's attestation was verified (the command that passed)."),
    audits: Path = typer.Option(None, "--audits", help="Where records go (default: audits/ beside the store)."),
) -> None:
    """Record that a stored result is, byte for byte, the artifact of the CI run it names."""
    from ..leaderboard.records import ci_entry

    written = ci_entry(result, artifact, repository=repository, attestation=attestation, audits_dir=audits)
    rec = written.record
    typer.echo(f"{rec['version']}/{rec['submission']}: identical to the artifact of run {rec['run_id']} of "
               f"{rec['repository']}; record written to {written.path}")


__all__ = ["register"]
