"""The `fxbench` command line. Each command group lives in its own module with a ``register(app)``."""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import FxbenchError
from .helptext import PlainTyper

app = PlainTyper(
    name="fxbench",
    help="Robustness and explanation benchmark for fracture classifiers on radiographs (FracAtlas).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: see helptext.py
)

def _print_version(value: bool) -> None:
    if value:
        from .. import BENCHMARK_VERSION, __version__

        typer.echo(f"fxbench {__version__} (benchmark {BENCHMARK_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the fxbench and benchmark versions and exit."),
) -> None:
    """Robustness and explanation benchmark for fracture classifiers on radiographs (FracAtlas)."""


# Command modules, in the order of the pipeline. Each defines register(app).
COMMAND_MODULES = ["data", "submission", "run", "runmany", "leaderboard", "train", "audit"]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue
            raise
        module.register(app)


_register_all()


def fail(message: str) -> typer.Exit:
    """Print a user-facing problem as one paragraph and return the exit for code 2."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def main() -> None:
    try:
        app()
    except FxbenchError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("error: interrupted; rerun the same command to resume (finished shards are kept).", err=True)
        sys.exit(130)
