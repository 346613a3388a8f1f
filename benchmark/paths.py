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


def checkpoint_cache_dir() -> Path:
    return home() / "checkpoints"


SPECS_DIR = Path(__file__).resolve().parent / "specs"
