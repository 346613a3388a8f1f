"""The options `fxbench run` and `fxbench run-many` share, declared once (each an Annotated type)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Data = Annotated[Path | None, typer.Option(
    "--data", help="Prepared dataset folder (default: FXBENCH_HOME's, else the embedded subset).")]
Preset = Annotated[str, typer.Option("--preset", help="quick | full | auto (full on CUDA, quick on the CPU).")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
Out = Annotated[Path, typer.Option("--out", help="Output folder; each result goes to OUT/<id>/.")]
Limit = Annotated[int | None, typer.Option(
    "--limit", help="Evaluate only N images (class-balanced); not leaderboard-eligible.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed (default: the benchmark definition's).")]
TrustCode = Annotated[bool, typer.Option(
    "--trust-code", help="Allow model.yaml entrypoints (runs the submitter's Python code).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; errors and the result paths only.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace OUT/<id>/ even if it holds a run with other data, preset, --limit or seed.")]
Battery = Annotated[list[str] | None, typer.Option(
    "--battery", metavar="NAME",
    help="Run only this battery (repeatable): clean, robustness, explanations, corruptions (v3 on) "
         "[default: all the version's].")]
Executor = Annotated[str, typer.Option(
    "--executor", help="local (this process) | ray (shards as Ray tasks; extra fxbench[ray]).")]
RayAddress = Annotated[str | None, typer.Option(
    "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a new local one).")]
MaxRetries = Annotated[int | None, typer.Option(
    "--max-retries", help="Ray: reruns of a shard whose worker died (default 3).")]
GpusPerTask = Annotated[float | None, typer.Option(
    "--ray-gpus-per-task", help="Ray on CUDA: GPUs per shard (default 1; 0.25 runs 4 small-model shards per GPU).")]
