"""The result file: fxbench.result/1, validated against the published JSON Schema on write and on read."""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from ..errors import ResultError
from ..io import ReadRefused, atomic_write_json, read_bounded
from ..paths import SPECS_DIR

SCHEMA_ID = "fxbench.result/1"
SCHEMA_PATH = SPECS_DIR / "result.schema.json"
RESULT_NAME = "result.json"
SAMPLES_NAME = "samples.parquet"
# A full-preset result is ~0.3 MB; anything far larger is not a result file and is not parsed.
MAX_RESULT_BYTES = 8 * 1024 * 1024


def _full_match_pattern(validator, pattern, instance, schema):
    """JSON Schema's ``pattern`` with ``$`` meaning end of string: Python's ``$`` also matches before a final
    newline, so ``"my-model\n"`` would pass ``^[a-z0-9-]+$``; ids must be exact slugs."""
    if not validator.is_type(instance, "string"):
        return
    anchored = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    if not re.search(anchored, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _full_match_pattern})


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate_result(obj: Any, *, source: str = "result") -> None:
    """Raise ResultError naming the first problem (field path and reason)."""
    validator = _Validator(schema())
    try:
        errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        raise ResultError(f"{source}: nested too deeply to be a result file") from None
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
    data = read_limited(path, MAX_RESULT_BYTES, what="result file")
    try:
        obj = json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise ResultError(f"{path}: not UTF-8 text ({e.reason})") from None
    except RecursionError:
        raise ResultError(f"{path}: JSON nested too deeply to be a result file") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise ResultError(f"{path}: not a usable JSON file ({e})") from None
    validate_result(obj, source=str(path))
    return obj


def read_limited(path: str | Path, max_bytes: int, *, what: str) -> bytes:
    """The bytes of a regular file that is not a symlink and holds at most ``max_bytes``; anything else (a
    FIFO, a device, a link pointing elsewhere, a huge file) is refused before it is read."""
    try:
        return read_bounded(path, max_bytes, what=what)
    except ReadRefused as e:
        raise ResultError(str(e)) from None


def write_result(path: str | Path, obj: dict[str, Any]) -> None:
    """Validate, then write atomically: readers never see a half-written or invalid result."""
    validate_result(obj, source=str(path))
    atomic_write_json(path, obj)
