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
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse template placeholders left in (as the submission workflow does).")
    ] = False,
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
    leftovers = _leftovers(report.yaml_path)
    for message in leftovers:
        typer.echo(f"warning: {message}", err=True)
    if leftovers and strict:
        raise SubmissionError(
            f"{report.yaml_path}: {len(leftovers)} template placeholder(s) left (warnings above); fill them in "
            "before opening the pull request"
        )
    suffix = f"; {len(leftovers)} warning(s) to fix before submitting" if leftovers else ""
    typer.echo(f"valid: {report.submission_id} ({report.yaml_path}){suffix}")


def _leftovers(yaml_path: Path) -> list[str]:
    from ..models.placeholders import template_leftovers
    from ..models.submission import read_spec

    return template_leftovers(yaml_path, read_spec(yaml_path).spec)
