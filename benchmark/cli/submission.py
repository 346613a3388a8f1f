"""`fxbench validate PATH`: check a submission without evaluating it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tabulate import tabulate

from ..errors import SubmissionError


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    path: Annotated[Path, typer.Argument(help="A submission's model.yaml, or the folder that holds it.")],
    trust_code: Annotated[
        bool, typer.Option("--trust-code", help="Allow model.entrypoint to run the submitter's Python code.")
    ] = False,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when available, as for run), cpu, cuda or cuda:N.")
    ] = "auto",
) -> None:
    """Check a submission: schema, checkpoint hash, safe loading, and a forward pass (shape, finiteness,
    determinism). Exit 0 when valid, 2 with the problem otherwise. Writes nothing."""
    from ..models import validate_submission

    report = validate_submission(path, trust_code=trust_code, device=device)
    rows = [("ok" if c.ok else "FAIL", c.name, c.detail) for c in report.checks]
    if not report.ok:
        # The passed steps go to stderr too, so stdout stays empty for scripts when invalid.
        if len(rows) > 1:
            typer.echo(tabulate(rows[:-1], tablefmt="plain"), err=True)
        raise SubmissionError(report.error)
    typer.echo(tabulate(rows, headers=["", "check", "detail"], tablefmt="simple"))
    typer.echo(f"valid: {report.submission_id} ({report.yaml_path})")
