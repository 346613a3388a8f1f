"""The result file: fxbench.result/1, validated against the published JSON Schema on write and on read."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from ..errors import ResultError
from ..io import atomic_write_json
from ..paths import SPECS_DIR

SCHEMA_ID = "fxbench.result/1"
SCHEMA_PATH = SPECS_DIR / "result.schema.json"
RESULT_NAME = "result.json"
SAMPLES_NAME = "samples.parquet"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate_result(obj: Any, *, source: str = "result") -> None:
    """Raise ResultError naming the first problem (field path and reason)."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        more = f" ({len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ResultError(f"{source}: does not match the {SCHEMA_ID} schema at {where}: {e.message}{more}")
    for mid, m in obj["metrics"].items():
        for k in ("value", "ci_low", "ci_high"):
            v = m[k]
            if isinstance(v, bool) or (v is not None and not math.isfinite(v)):
                raise ResultError(f"{source}: metric {mid}.{k} must be a finite number or null, got {v!r}")


def read_result(path: str | Path) -> dict[str, Any]:
    """Read a result.json (or the folder holding it) and validate it."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_NAME
    if not path.is_file():
        raise ResultError(f"{path}: no such result file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise ResultError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise ResultError(f"{path}: cannot be read ({e.strerror})") from None
    validate_result(obj, source=str(path))
    return obj


def write_result(path: str | Path, obj: dict[str, Any]) -> None:
    """Validate, then write atomically: readers never see a half-written or invalid result."""
    validate_result(obj, source=str(path))
    atomic_write_json(path, obj)
