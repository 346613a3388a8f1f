"""`fxbench run-many SUBMISSIONS...`: several submissions, their shards in one queue (Ray) or one after another."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import FxbenchError
from .run import _progress, interrupted


def register(app: typer.Typer) -> None:
    app.command("run-many")(run_many_command)


def run_many_command(
    paths: list[Path] = typer.Argument(..., help="model.yaml files or the folders holding them."),
    executor: str = typer.Option("local", "--executor", help="local | ray (one queue for every submission's shards)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a new local one)."),
    max_retries: int | None = typer.Option(None, "--max-retries", help="Ray: reruns of a shard whose worker died (default 3)."),
    gpus_per_task: float | None = typer.Option(None, "--ray-gpus-per-task", help="Ray on CUDA: GPUs per shard (default 1; 0.25 runs 4 small-model shards per GPU)."),
    data: Path | None = typer.Option(None, "--data", help="Prepared dataset folder (default: FXBENCH_HOME's, else the embedded subset)."),
    preset: str = typer.Option("auto", "--preset", help="quick | full | auto (full on CUDA, quick on the CPU)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    out: Path = typer.Option(Path("runs"), "--out", help="Output folder; each result goes to OUT/<id>/."),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate only N images (class-balanced); not leaderboard-eligible."),
    seed: int | None = typer.Option(None, "--seed", help="Seed (default: the benchmark definition's)."),
    trust_code: bool = typer.Option(False, "--trust-code", help="Allow model.yaml entrypoints (runs the submitters' Python code)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; errors and the result paths only."),
) -> None:
    """Evaluate several submissions into one --out (each result published whole as soon as it is done).

    A submission that is refused or fails is named on stderr and does not stop the others; the exit code is
    then 2. With --executor ray the shards of all submissions share one queue on the cluster."""
    from rich.console import Console

    from ..executors import make_executor
    from ..run import run_many  # imports torch: only once a run starts, so --help stays fast

    chosen = make_executor(executor, address=ray_address, max_retries=max_retries, gpus_per_task=gpus_per_task)
    console = Console(stderr=True, quiet=quiet)
    progress, stop = _progress(console, quiet=quiet)  # a bar on a terminal, plain lines in a log

    try:
        many = run_many(paths, data=data, preset=preset, device=device, out=out, limit=limit, seed=seed,
                        trust_code=trust_code, executor=None if chosen.name == "local" else chosen,
                        progress=progress)
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
