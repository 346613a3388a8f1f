"""`fxbench train CONFIG`: train a baseline and write a complete submission folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    config: Path = typer.Argument(
        ...,
        help="A training config (benchmark/specs/training/*.yaml), or a shipped one's name (erm-v2, effl0-erm-pt, ...).",
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Prepared dataset folder, or a .npz/.safetensors of the train split (default: the prepared dataset).",
    ),
    out: Path = typer.Option(
        Path("submissions"), "--out", help="Submissions folder; the baseline goes to OUT/<id>/."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    recipe: str = typer.Option("auto", "--recipe", help="gpu | cpu | auto (gpu on CUDA, cpu otherwise)."),
    seed: int | None = typer.Option(
        None, "--seed", help="Replace the config's seed (its id must say where the seed goes, as effl0-erm-pt.yaml's does)."
    ),
    time_guard: float | None = typer.Option(
        None,
        "--time-guard",
        min=1,
        help="Stop at an epoch's end once this many seconds have passed (replaces the config's time_guard_s; "
        "the model card says when it bound).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the submission folder."),
) -> None:
    """Train a baseline on the training split (minus a holdout for epoch selection) and write a submission."""
    from ..training import EpochRecord, train_baseline

    console = Console(stderr=True, quiet=quiet)

    def on_epoch(r: EpochRecord) -> None:
        h = r.holdout
        pgd = "" if h.pgd_balanced_accuracy is None else f"  pgd BA {h.pgd_balanced_accuracy:.3f}"
        console.print(
            f"epoch {r.epoch:>3}/{r.planned_epochs}  loss {r.train_loss:.4f}  holdout BA {h.balanced_accuracy:.3f}"
            f"  AUROC {h.auroc:.3f}{pgd}  score {r.score:.3f}  {r.seconds:.1f} s"
        )

    overrides = {"time_guard_s": time_guard} if time_guard else None
    result = train_baseline(
        config, data=data, out=out, device=device, recipe=recipe, seed=seed, overrides=overrides, on_epoch=on_epoch
    )
    o = result.outcome
    f = o.final
    if not quiet:
        pgd = "" if f.pgd_balanced_accuracy is None else f", PGD BA {f.pgd_balanced_accuracy:.3f}"
        Console().print(
            f"{o.config.id}: recipe {o.config.recipe}, epoch {o.best_epoch} of {len(o.history)} selected "
            f"(holdout BA {f.balanced_accuracy:.3f}, AUROC {f.auroc:.3f}{pgd}); {o.wall_time_s:.0f} s on {o.device_name}"
        )
    typer.echo(str(result.path))
