"""Assembling a finished run: merge the batteries' per-sample columns, compute every metric with its CI, record
what computed it (provenance), and publish OUT/<id>/ whole; then drop the run's shards."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from .battery import BatteryResult, EvalSet, Flag
from .data import META_COLUMNS, region_of
from .errors import EvaluationBug, FxbenchError
from .io import atomic_write, atomic_write_bytes, replace_dir
from .results.metrics import compute_metrics
from .results.resultfile import RESULT_NAME, SAMPLES_NAME, write_result


@dataclass(frozen=True)
class RunResult:
    out_dir: Path | None  # None: fxbench.evaluate(out=None) kept nothing on disk
    result: dict[str, Any]
    samples: pd.DataFrame
    shards_run: int
    shards_resumed: int


def finish_run(prep, results: dict[str, BatteryResult], n_run: int, n_resumed: int) -> RunResult:
    """Merge the batteries' samples, compute the metrics, and publish OUT/<id>/ whole; then drop the shards."""
    definition, evalset, sub, preset, limit = prep.definition, prep.evalset, prep.sub, prep.preset, prep.limit
    work_dir = prep.store.root
    samples = merge_samples(evalset, results)
    metric_defs = [m for r in results.values() for m in r.metrics]
    boot = definition.bootstrap
    metrics = compute_metrics(samples, metric_defs, n_resamples=boot["n_resamples"], seed=boot["seed"])

    flags = run_flags(evalset, preset, limit)
    for r in results.values():
        flags.extend(f for f in r.flags if f not in flags)

    result = {
        "schema": "fxbench.result/1",
        "benchmark": {
            "version": definition.version,
            "preset": preset,
            "config_hash": prep.config_hash,
            "config": definition.resolved(preset),
            "limit": limit,
            "dataset": {
                "name": evalset.dataset.name,
                "fingerprint": evalset.dataset.fingerprint,
                "split": evalset.dataset.split,
                "n": len(evalset),
                "n_fracture": int(evalset.y.sum()),
                "leaderboard_eligible": bool(evalset.dataset.leaderboard_eligible and limit is None),
            },
        },
        "submission": sub.to_json(),
        "metrics": {k: v.to_json() for k, v in sorted(metrics.items())},
        "flags": [f.to_json() for f in flags],
        "components": {name: r.info for name, r in results.items()},
        "files": {
            "samples": SAMPLES_NAME,
            "gallery": sorted(p for r in results.values() for p in r.files if p.startswith("gallery/")),
            "other": sorted(p for r in results.values() for p in r.files if not p.startswith("gallery/")),
        },
        "provenance": {
            "fxbench_version": __version__,
            "git_commit": prep.git_commit,
            "versions": versions(),
            "device": device_name(prep.dev),
            "seed": prep.seed,
            "started_at": prep.started_at,
            "duration_s": round(time.time() - prep.started, 3),
            **({"ci": ci} if (ci := ci_provenance()) else {}),
            **xai_metric_paths(results),
        },
    }
    final = prep.out / sub.spec.id
    try:
        write_result_dir(final, result, samples, results)
    except OSError as e:  # a full disk at the very end: the previous result and every shard are kept
        raise FxbenchError(f"cannot write the result to {final} ({e.strerror or e}); finished shards are kept: "
                           "free space and rerun the same command.") from None
    shutil.rmtree(work_dir, ignore_errors=True)
    for parent in (work_dir.parent, work_dir.parent.parent):  # leave no empty shard folders behind
        try:
            parent.rmdir()
        except OSError:
            break
    return RunResult(out_dir=final, result=result, samples=samples, shards_run=n_run, shards_resumed=n_resumed)


def merge_samples(evalset: EvalSet, results: dict[str, BatteryResult]) -> pd.DataFrame:
    """One row per evaluated image: the dataset's columns (data.META_COLUMNS) then each battery's."""
    meta = evalset.meta.copy()
    if "region" not in meta:  # an evaluation set built in memory: the region by the dataset's own rule
        meta["region"] = [region_of(row) for row in meta.to_dict("records")]
    df = meta[[c for c in META_COLUMNS if c in meta]].copy()
    df["label"] = df["label"].astype(int)
    for name, r in results.items():
        cols = [c for c in r.samples.columns if c != "image_id"]
        clash = set(cols) & set(df.columns)
        if clash:
            raise EvaluationBug(f"battery {name} wrote columns that exist already: {sorted(clash)[:3]}")
        df = df.merge(r.samples, on="image_id", how="left", validate="one_to_one")
    return df


def run_flags(evalset: EvalSet, preset: str, limit: int | None) -> list[Flag]:
    flags = []
    if evalset.dataset.name.endswith("embedded"):
        flags.append(Flag("embedded-subset", f"computed on the embedded subset ({len(evalset)} images), "
                                             "not the benchmark's evaluation split: not leaderboard-eligible"))
    if limit is not None:
        flags.append(Flag("limited", f"--limit {limit}: only part of the evaluation split was evaluated"))
    if preset != "full":
        flags.append(Flag("quick-preset", "reduced batteries (preset quick): not leaderboard-grade"))
    return flags


def write_result_dir(final: Path, result: dict, samples: pd.DataFrame, results: dict[str, BatteryResult]) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        for r in results.values():
            for rel, blob in r.files.items():
                atomic_write_bytes(tmp / rel, blob)
        atomic_write(tmp / SAMPLES_NAME, lambda p: samples.to_parquet(p, index=False))
        write_result(tmp / RESULT_NAME, result)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ["torch", "timm", "captum", "quantus", "pyautoattack", "datasets", "numpy"]:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def xai_metric_paths(results) -> dict[str, list[str]]:
    """Which implementation scored the explanation battery's model metrics: ``fast`` (the batched path,
    explanations/fast.py) and/or ``quantus`` (the library itself); per column in components.explanations."""
    info = getattr(results.get("explanations"), "info", None) or {}
    used = {p for v in (info.get("metric_paths") or {}).values() for p in v.split("+")}
    return {"xai_metric_paths": sorted(used)} if used else {}


def ci_provenance() -> dict[str, str] | None:
    """The GitHub Actions run computing this result (docs/leaderboard.md, "Provenance"). Environment values
    can be set by anyone, so this only names the run: the PR check downloads that run's artifact and
    compares bytes, which is what ties a committed result to it."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return None
    keys = {"repository": "GITHUB_REPOSITORY", "run_id": "GITHUB_RUN_ID", "run_attempt": "GITHUB_RUN_ATTEMPT",
            "workflow": "GITHUB_WORKFLOW", "sha": "GITHUB_SHA", "server_url": "GITHUB_SERVER_URL"}
    return {k: os.environ.get(v, "") for k, v in keys.items()}


def device_name(dev) -> str:
    import torch

    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
