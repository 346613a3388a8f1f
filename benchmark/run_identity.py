"""What makes two runs "the same run", and the refusal to overwrite a different one (issue 13).

`fxbench run` publishes to OUT/<id>/. Rerunning the same evaluation there (same data, preset, limit, seed,
batteries, benchmark version) replaces it as before, and an interrupted one resumes from its shards (kept
apart by run key under OUT/.fxbench-shards/). A run with different settings is refused before any work
instead of silently replacing a result computed on other images: OUT/<id>/ stays the one predictable place
`fxbench add`, the docs and CI read, and the message names each difference and both ways out (another
--out, or --overwrite). A new checkpoint of the same submission is the same evaluation of a newer model:
it replaces the old result, as a submitter iterating on a model expects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import FxbenchError

FIELDS = ("version", "dataset", "limit", "n", "preset", "config_hash", "seed", "batteries")


def identity(*, version: str, fingerprint: str, n: int, limit: int | None, preset: str, config_hash: str,
             seed: int, batteries: list[str]) -> dict[str, Any]:
    return {"version": version, "dataset": fingerprint, "n": int(n), "limit": limit, "preset": preset,
            "config_hash": config_hash, "seed": int(seed), "batteries": sorted(batteries)}


def identity_of_result(result: dict[str, Any]) -> dict[str, Any]:
    b = result["benchmark"]
    return identity(version=b["version"], fingerprint=b["dataset"]["fingerprint"], n=b["dataset"]["n"],
                    limit=b.get("limit"), preset=b["preset"], config_hash=b["config_hash"],
                    seed=result["provenance"]["seed"], batteries=list(result.get("components", {})))


def _show(field: str, value: Any) -> str:
    if value is None:
        return "none"
    if field in ("dataset", "config_hash"):
        return f"{str(value)[:12]}..."
    if field == "batteries":
        return ",".join(value)
    return str(value)


def check_replaceable(final: Path, wanted: dict[str, Any], *, overwrite: bool = False) -> None:
    """Refuse (FxbenchError, exit 2) when `final` holds the result of a run with other settings."""
    path = final / "result.json"
    if overwrite or not path.exists():
        return
    try:
        old = identity_of_result(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        raise FxbenchError(
            f"{final}: holds a result.json that cannot be read as a run's result; give another --out, or "
            "--overwrite to replace it."
        ) from None
    diff = [f"{f}: {_show(f, old[f])} there, {_show(f, wanted[f])} now" for f in FIELDS if old[f] != wanted[f]]
    if diff:
        raise FxbenchError(
            f"{final}: holds the result of a different run ({'; '.join(diff)}); nothing was run. Give another "
            "--out to keep both, or --overwrite to replace it."
        )
