"""The results store: ``<results>/<version>/<submission-id>.json`` with ``<submission-id>.parquet`` (the
per-sample table) beside it and optional overlay images under ``<submission-id>/gallery/``.

Every file is checked on the way in; a file that does not belong is refused with the reason, so a table
never mixes versions, datasets or battery configurations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import FxbenchError, ResultError
from ..results.metrics import LABEL, REDUCERS, MetricDef
from ..results.resultfile import read_result

VERSION_RE = re.compile(r"^v[0-9]+$")
PRESETS = ("full", "quick")


@dataclass(frozen=True)
class VersionSpec:
    """What a result in a version folder must match: taken from the versioned benchmark definition."""

    version: str
    fingerprint: str
    config_hashes: dict[str, str]  # preset -> config hash
    bootstrap: dict[str, Any]  # n_resamples, seed, alpha


def version_spec(version: str) -> VersionSpec:
    from ..definition import load_definition

    try:
        d = load_definition(version)
    except FxbenchError as e:
        raise ResultError(f"results folder {version!r}: {e}") from None
    return VersionSpec(
        version=version,
        fingerprint=d.dataset_fingerprint,
        config_hashes={p: d.config_hash(p) for p in PRESETS},
        bootstrap=d.bootstrap,
    )


@dataclass
class StoredResult:
    version: str
    path: Path  # the <id>.json file
    result: dict[str, Any]
    samples: pd.DataFrame
    gallery: dict[str, Path] = field(default_factory=dict)  # "gallery/<...>.png" -> file

    @property
    def id(self) -> str:
        return self.result["submission"]["id"]

    @property
    def name(self) -> str:
        return self.result["submission"]["name"]

    @property
    def preset(self) -> str:
        return self.result["benchmark"]["preset"]

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.result["metrics"]

    @property
    def flags(self) -> list[dict[str, str]]:
        return self.result["flags"]

    def metric_def(self, metric_id: str) -> MetricDef:
        m = self.metrics[metric_id]
        return MetricDef.from_json(metric_id, m["definition"], m["higher_is_better"])


@dataclass
class Store:
    root: Path
    versions: dict[str, list[StoredResult]]  # version -> results sorted by id
    specs: dict[str, VersionSpec]


def read_json(path: Path) -> dict[str, Any]:
    """A result file, read and checked against the schema (the one reader: fxbench.results.resultfile)."""
    return read_result(path)


def samples_path(json_path: Path, result: dict[str, Any]) -> Path:
    """A run folder's ``files.samples`` beside its result.json; ``<id>.parquet`` beside ``<id>.json`` in the store."""
    if json_path.name == "result.json":
        return json_path.parent / result.get("files", {}).get("samples", "samples.parquet")
    return json_path.with_suffix(".parquet")


def read_samples(path: Path, result: dict[str, Any], source: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ResultError(f"{source}: its per-sample file {path.name} is missing (expected at {path})")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise ResultError(f"{path}: not a readable parquet file ({e})") from None
    for col in ("image_id", LABEL):
        if col not in df.columns:
            raise ResultError(f"{path}: column {col!r} is missing")
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].iloc[0]
        raise ResultError(f"{path}: image_id {dup!r} appears more than once")
    n = result["benchmark"]["dataset"]["n"]
    if len(df) != n:
        raise ResultError(f"{path}: {len(df)} rows, but the result says the dataset has n={n} images")
    check_metric_values(result, df, source=f"{source} (per-sample file {path.name})")
    return df


def check_metric_values(result: dict[str, Any], df: pd.DataFrame, *, source: str) -> None:
    """Every stored value must be what its definition gives on the per-sample table."""
    wrong = []
    for mid, m in sorted(result["metrics"].items()):
        d = MetricDef.from_json(mid, m["definition"], m["higher_is_better"])
        needed = [d.column, *d.where] + ([LABEL] if d.reduce != "mean" else [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise ResultError(f"{source}: metric {mid} needs column {missing[0]!r}, which is not in the file")
        if d.reduce not in REDUCERS:
            raise ResultError(f"{source}: metric {mid} uses unknown reducer {d.reduce!r}")
        rows = d.rows(df)
        got = REDUCERS.get(d.reduce)(rows, d) if len(rows) else float("nan")
        stored = m["value"]
        if stored is None:
            ok = not np.isfinite(got)
        else:
            ok = np.isfinite(got) and math.isclose(got, stored, rel_tol=1e-6, abs_tol=1e-9)
        if not ok:
            wrong.append(f"{mid} (stored {stored}, recomputed {got:.6g})")
    if wrong:
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        raise ResultError(
            f"{source}: metric values do not match the per-sample table: {', '.join(wrong[:3])}{more}"
        )


def check_belongs(result: dict[str, Any], spec: VersionSpec, *, source: Path) -> None:
    """Refuse a result that was not computed by this folder's benchmark version, data and battery config."""
    b = result["benchmark"]
    ds = b["dataset"]
    if b["version"] != spec.version:
        raise ResultError(f"{source}: benchmark version {b['version']!r} does not match its folder {spec.version!r}")
    if not ds["leaderboard_eligible"]:
        raise ResultError(
            f"{source}: computed on {ds['name']!r}, which is not leaderboard-eligible (the embedded subset or "
            "a --limit run); run on the prepared FracAtlas evaluation split"
        )
    if b.get("limit") is not None:
        raise ResultError(f"{source}: a --limit {b['limit']} run evaluates part of the split only")
    if ds["fingerprint"] != spec.fingerprint:
        raise ResultError(
            f"{source}: dataset fingerprint {ds['fingerprint'][:12]}... does not match {spec.version}'s "
            f"{spec.fingerprint[:12]}..."
        )
    want = spec.config_hashes.get(b["preset"])
    if b["config_hash"] != want:
        raise ResultError(
            f"{source}: config hash {b['config_hash']} does not match {spec.version}'s {b['preset']!r} preset "
            f"({want}): the battery specs differ from the ones this version names"
        )


def read_stored_result(json_path: Path, spec: VersionSpec) -> StoredResult:
    result = read_json(json_path)
    check_belongs(result, spec, source=json_path)
    sid = result["submission"]["id"]
    samples = read_samples(samples_path(json_path, result), result, json_path)
    gallery_dir = json_path.parent / sid / "gallery"
    gallery = {}
    if gallery_dir.is_dir():
        for p in sorted(gallery_dir.rglob("*.png")):
            gallery[p.relative_to(gallery_dir.parent).as_posix()] = p
    return StoredResult(version=spec.version, path=json_path, result=result, samples=samples, gallery=gallery)


def load_store(results_dir: str | Path, *, spec_for: Callable[[str], VersionSpec] | None = None) -> Store:
    """Read and check every result; raise one ResultError listing every refused file."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ResultError(f"{root}: no results folder (expected {root}/<version>/<submission-id>.json)")
    spec_for = spec_for or version_spec
    problems: list[str] = []
    found: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and VERSION_RE.match(entry.name):
            found[entry.name] = sorted(p for p in entry.glob("*.json") if not p.name.startswith("."))
        elif entry.suffix == ".json":
            problems.append(f"{entry}: result files go in a version folder, e.g. {root}/v1/{entry.name}")
    if not problems and not any(found.values()):
        raise ResultError(f"{root}: no result files (expected {root}/<version>/<submission-id>.json)")
    versions: dict[str, list[StoredResult]] = {}
    specs: dict[str, VersionSpec] = {}
    for version, paths in found.items():
        if not paths:
            continue
        try:
            specs[version] = spec_for(version)
        except ResultError as e:
            problems.append(str(e))
            continue
        by_id: dict[str, list[StoredResult]] = {}
        for path in paths:
            try:
                r = read_stored_result(path, specs[version])
            except ResultError as e:
                problems.append(str(e))
                continue
            by_id.setdefault(r.id, []).append(r)
        for sid, rs in sorted(by_id.items()):
            if len(rs) > 1:
                names = ", ".join(str(r.path) for r in rs)
                problems.append(f"duplicate submission id {sid!r} in {version}: {names}")
            elif rs[0].path.stem != sid:
                problems.append(f"{rs[0].path}: holds submission {sid!r}; name the file {sid}.json")
            else:
                versions.setdefault(version, []).append(rs[0])
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ResultError(f"refused {len(problems)} result file(s); nothing was generated:\n{lines}")
    return Store(root=root, versions={v: sorted(rs, key=lambda r: r.id) for v, rs in versions.items()}, specs=specs)
