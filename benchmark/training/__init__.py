"""Baseline training (`fxbench train`): a training config in, a complete submission folder out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .arrays import ExportedArrays, HoldoutSplit, TrainArrays, export_arrays, holdout_split, load_train_arrays
from .config import TrainConfig, TrainingConfigError, load_config
from .loop import EpochRecord, HoldoutScores, TrainOutcome, class_weights, train
from .submission import write_submission


@dataclass(frozen=True)
class TrainedSubmission:
    path: Path  # the submission folder, out/<id>
    outcome: TrainOutcome


def train_baseline(
    config: str | Path,
    *,
    data: str | Path | None = None,
    out: str | Path = "submissions",
    device: str = "auto",
    recipe: str = "auto",
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainedSubmission:
    """Train one baseline and write ``out/<id>/``. ``recipe="auto"``: the gpu recipe on CUDA, else cpu.
    ``seed`` replaces the config's seed (its id must then contain ``{seed}``)."""
    from ..models.device import resolve_device

    dev = resolve_device(device)
    if recipe == "auto":
        recipe = "gpu" if dev.type == "cuda" else "cpu"
    cfg = load_config(config, recipe=recipe, overrides=overrides, seed=seed)  # refuse before loading data
    if cfg.init.pretrained:
        from .pretrained import SOURCES, weights_path

        weights_path(SOURCES.get(cfg.init.pretrained))  # installed and the expected file, before loading data
    arrays = load_train_arrays(data)
    outcome = train(cfg, arrays, device=dev, on_epoch=on_epoch)
    return TrainedSubmission(path=write_submission(outcome, out=out), outcome=outcome)


__all__ = [
    "EpochRecord",
    "ExportedArrays",
    "HoldoutScores",
    "HoldoutSplit",
    "TrainArrays",
    "TrainConfig",
    "TrainOutcome",
    "TrainedSubmission",
    "TrainingConfigError",
    "class_weights",
    "export_arrays",
    "holdout_split",
    "load_config",
    "load_train_arrays",
    "train",
    "train_baseline",
    "write_submission",
]
