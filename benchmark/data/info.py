"""The dataset info file (``fxbench.json``) of a prepared dataset folder: its name, schema and reader.

Written by ``prepare`` (and ``embedded``), read by everything that opens a prepared folder, including the
manifest's ``update_manifest``; its own module so that ``manifest`` and ``prepare`` need not import each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DataError

DATASET_NAME = "fracatlas-v1"
INFO_FILE = "fxbench.json"
INFO_SCHEMA = "fxbench.dataset/1"


def read_info(folder: str | Path) -> dict[str, Any]:
    """The fxbench.json of a prepared dataset folder; DataError when it is not one."""
    folder = Path(folder)
    path = folder / INFO_FILE
    if not path.is_file():
        what = (
            "does not exist"
            if not folder.exists()
            else f"is not a prepared fxbench dataset ({INFO_FILE} missing)"
        )
        raise DataError(f"{folder}: {what}; run `fxbench data prepare --source DIR [--out DIR]` first.")
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 * 1024 * 1024:
        raise DataError(f"{path}: not a regular file of a plausible size; prepare the dataset again.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: corrupt JSON at line {e.lineno}: {e.msg}.") from None
    except (RecursionError, ValueError) as e:  # nested too deeply, not UTF-8, an integer too long
        raise DataError(f"{path}: not a usable JSON file ({type(e).__name__}); prepare the dataset again.") from None
    if not isinstance(info, dict) or info.get("schema") != INFO_SCHEMA:
        raise DataError(f"{path}: expected schema {INFO_SCHEMA!r}; prepare the dataset again.")
    return info
