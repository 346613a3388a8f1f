"""Where fxbench keeps data: FXBENCH_HOME (default: the user's cache folder)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    env = os.environ.get("FXBENCH_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("fxbench"))


def default_data_dir() -> Path:
    """Where `fxbench data prepare` writes and every command looks for the prepared dataset."""
    return home() / "data" / "fracatlas-v1"


FRACATLAS_ENV = "FXBENCH_FRACATLAS"


def fracatlas_release() -> Path | None:
    """The FracAtlas release (its own layout) named by FXBENCH_FRACATLAS, or None. The one documented way to
    say where the raw release is, besides `fxbench data prepare --source DIR`."""
    env = os.environ.get(FRACATLAS_ENV)
    return Path(env).expanduser() if env else None


def checkpoint_cache_dir() -> Path:
    return home() / "checkpoints"


SPECS_DIR = Path(__file__).resolve().parent / "specs"
