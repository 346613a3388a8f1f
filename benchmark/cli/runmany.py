"""`fxbench run-many SUBMISSIONS...`: several submissions, their shards in one queue (Ray) or one after another."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import FxbenchError
from . import options as o
from .run import interrupted, progress_for


def register(app: typer.Typer) -> None:
    app.command("run-many")(run_many_command)


def run_many_command(
    paths: list[Path] = typer.Argument(..., help="model.yaml files or the folders holding them."),
    executor: o.Executor = "local",
    ray_address: o.RayAddress = None,
    max_retries: o.MaxRetries = None,
    gpus_per_task: o.GpusPerTask = None,
    data: o.Data = None,
    preset: o.Preset = "auto",
    device: o.Device = "auto",
    out: o.Out = Path("runs"),
    limit: o.Limit = None,
    seed: o.Seed = None,
    trust_code: o.TrustCode = False,
    quiet: o.Quiet = False,
    overwrite: o.Overwrite = False,
    battery: o.Battery = None,
) -> None:
    """Evaluate several submissions into one --out (each result published whole as soon as it is done).

    A submission that is refused or fails is named on stderr and does not stop the others; the exit code is
    then 2. With --executor ray the shards of all submissions share one queue on the cluster."""
    from rich.console import Console

    from ..executors import make_executor
    from ..run import run_many  # imports torch: only once a run starts, so --help stays fast

    chosen = make_executor(executor, address=ray_address, max_retries=max_retries, gpus_per_task=gpus_per_task)
    console = Console(stderr=True, quiet=quiet)
    progress, stop = progress_for(console, quiet=quiet)  # a bar on a terminal, plain lines in a log

    try:
        many = run_many(paths, data=data, preset=preset, device=device, out=out, limit=limit, seed=seed,
                        trust_code=trust_code, executor=None if chosen.name == "local" else chosen,
                        progress=progress, batteries=battery or None, overwrite=overwrite)
    except KeyboardInterrupt:
        raise interrupted() from None
    finally:
        stop()
    for outcome in many.outcomes:
        if not isinstance(outcome, FxbenchError):
            typer.echo(str(outcome.out_dir / "result.json"))
    failed = many.failed
    for path, err in failed:
        typer.echo(f"error: {path}: {err}", err=True)
    if failed:
        raise typer.Exit(code=2)
