"""`fxbench run`: one submission through every battery, sharded and resumable, into one result file.

Order of work: everything that can refuse the input (device, model.yaml, checkpoint, model outputs, data)
runs before anything is written. Then each battery's shards run (finished shards are read back, not rerun),
and the result folder is assembled in a temporary folder and swapped into place whole.
"""

from __future__ import annotations

import hashlib
import importlib
import platform
import random
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import __version__
from .battery import Battery, BatteryResult, EvalSet, Flag, RunContext, ShardOutput
from .definition import PRESETS, load_definition
from .errors import FxbenchError
from .io import atomic_write, atomic_write_bytes, replace_dir
from .registry import Registry
from .results.metrics import compute_metrics
from .results.resultfile import RESULT_NAME, SAMPLES_NAME, write_result
from .results.shards import ShardStore

BATTERIES: Registry[Callable[[], Battery]] = Registry("battery")


def _lazy(module: str, cls: str) -> Callable[[], Battery]:
    return lambda: getattr(importlib.import_module(f"fxbench.{module}"), cls)()


BATTERIES.register("clean", _lazy("clean", "CleanBattery"))
BATTERIES.register("robustness", _lazy("robustness", "RobustnessBattery"))
BATTERIES.register("explanations", _lazy("explanations", "ExplanationBattery"))

META_COLUMNS = ["image_id", "label", "split", "hardware", "hand", "leg", "hip", "shoulder", "mixed", "region", "view"]
SHARDS_DIR = ".fxbench-shards"


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    result: dict[str, Any]
    samples: pd.DataFrame
    shards_run: int
    shards_resumed: int


@dataclass(frozen=True)
class Progress:
    """Callbacks the CLI uses for progress bars; the library itself prints nothing."""

    start: Callable[[int], None] = lambda total: None
    advance: Callable[[str, str, bool], None] = lambda battery, key, resumed: None
    note: Callable[[str], None] = lambda message: None


def resolve_preset(preset: str, device: torch.device) -> str:
    if preset == "auto":
        return "full" if device.type == "cuda" else "quick"
    return preset


def run_submission(
    path: str | Path,
    *,
    data: str | Path | None = None,
    preset: str = "auto",
    device: str = "auto",
    out: str | Path = "runs",
    limit: int | None = None,
    seed: int | None = None,
    trust_code: bool = False,
    batteries: list[str] | None = None,
    version: str | None = None,
    progress: Progress | None = None,
) -> RunResult:
    from .data import EmbeddedDataWarning, load_arrays
    from .models import check_model_outputs, load_submission, resolve_device, strict_fp32

    progress = progress or Progress()
    started = time.time()
    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    if limit is not None and limit < 2:
        raise FxbenchError(f"--limit {limit}: need at least 2 images (one per class)")

    if preset not in ("auto", *PRESETS):
        raise FxbenchError(f"--preset {preset!r}: choose one of auto, {', '.join(PRESETS)}.")
    definition = load_definition(version)
    dev = resolve_device(device)
    preset = resolve_preset(preset, dev)
    names = list(batteries or definition.raw["batteries"])
    for name in names:
        BATTERIES.get(name)  # unknown names refused before any work
    seed = definition.seed if seed is None else int(seed)

    sub = load_submission(path, trust_code=trust_code, device=str(dev))
    model = sub.model
    check_model_outputs(model, device=dev)
    with warnings.catch_warnings():  # said once below through progress.note, not as a Python warning
        warnings.simplefilter("ignore", EmbeddedDataWarning)
        evalset = load_arrays(data, split=definition.raw["dataset"]["split"], limit=limit)
    if evalset.dataset.name.endswith("embedded"):
        progress.note(
            f"No prepared dataset found: using the embedded subset ({len(evalset)} images). "
            "Results are not leaderboard-eligible; run `fxbench data prepare` for the full benchmark."
        )

    resolved = definition.resolved(preset)
    config_hash = definition.config_hash(preset)
    run_key = hashlib.sha256(
        "|".join(
            map(str, [config_hash, evalset.dataset.fingerprint, limit, seed, sub.yaml_sha256,
                      sub.checkpoint_sha256, dev.type, ",".join(names)])
        ).encode()
    ).hexdigest()[:16]
    out = Path(out)
    work_dir = out / SHARDS_DIR / sub.spec.id / run_key
    store = ShardStore(work_dir)
    ctx = RunContext(device=dev, seed=seed, preset=preset, work_dir=work_dir, _tensor_loader=store.load_tensors)

    _deterministic_backends()
    plan = []
    for name in names:
        battery = BATTERIES.get(name)()
        config = definition.battery_config(name, preset)
        plan.append((name, battery, config, battery.shards(evalset, config)))
    progress.start(sum(len(keys) for *_, keys in plan))

    with strict_fp32():  # float32 evaluation: TF32 would make logits depend on batch composition
        results, n_run, n_resumed = _run_batteries(plan, model=model, evalset=evalset, store=store, ctx=ctx,
                                                   progress=progress)

    samples = _merge_samples(evalset, results)
    metric_defs = [m for r in results.values() for m in r.metrics]
    boot = definition.bootstrap
    metrics = compute_metrics(samples, metric_defs, n_resamples=boot["n_resamples"], seed=boot["seed"])

    flags = _run_flags(evalset, preset, limit)
    for r in results.values():
        flags.extend(f for f in r.flags if f not in flags)

    result = {
        "schema": "fxbench.result/1",
        "benchmark": {
            "version": definition.version,
            "preset": preset,
            "config_hash": config_hash,
            "config": resolved,
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
            "git_commit": _git_commit(),
            "versions": _versions(),
            "device": _device_name(dev),
            "seed": seed,
            "started_at": started_at,
            "duration_s": round(time.time() - started, 3),
        },
    }
    final = out / sub.spec.id
    _write_result_dir(final, result, samples, results)
    shutil.rmtree(work_dir, ignore_errors=True)
    for parent in (work_dir.parent, work_dir.parent.parent):  # leave no empty shard folders behind
        try:
            parent.rmdir()
        except OSError:
            break
    return RunResult(out_dir=final, result=result, samples=samples, shards_run=n_run, shards_resumed=n_resumed)


def _run_batteries(plan, *, model, evalset: EvalSet, store: ShardStore, ctx: RunContext, progress: Progress):
    results: dict[str, BatteryResult] = {}
    n_run = n_resumed = 0
    for name, battery, config, keys in plan:
        outputs: dict[str, ShardOutput] = {}
        for key in keys:
            if store.done(name, key):
                outputs[key] = store.load(name, key)
                n_resumed += 1
                progress.advance(name, key, True)
                continue
            _seed_everything(ctx.shard_seed(name, key))
            output = battery.run_shard(key, model=model, evalset=evalset, config=config, ctx=ctx)
            store.save(name, key, output)
            outputs[key] = store.load(name, key)  # use exactly what a resumed run would read
            n_run += 1
            progress.advance(name, key, False)
        _seed_everything(ctx.shard_seed(name, "finalize"))
        results[name] = battery.finalize(outputs, model=model, evalset=evalset, config=config, ctx=ctx)
        ctx.previous[name] = results[name]

    return results, n_run, n_resumed


def _merge_samples(evalset: EvalSet, results: dict[str, BatteryResult]) -> pd.DataFrame:
    meta = evalset.meta.copy()
    if "region" not in meta:
        regions = ["hand", "leg", "hip", "shoulder", "mixed"]
        meta["region"] = [
            "+".join(r for r in regions if row.get(r)) or "unknown" for row in meta.to_dict("records")
        ]
    df = meta[[c for c in META_COLUMNS if c in meta]].copy()
    df["label"] = df["label"].astype(int)
    for name, r in results.items():
        cols = [c for c in r.samples.columns if c != "image_id"]
        clash = set(cols) & set(df.columns)
        if clash:
            raise RuntimeError(f"battery {name} wrote columns that exist already: {sorted(clash)[:3]}")
        df = df.merge(r.samples, on="image_id", how="left", validate="one_to_one")
    return df


def _run_flags(evalset: EvalSet, preset: str, limit: int | None) -> list[Flag]:
    flags = []
    if evalset.dataset.name.endswith("embedded"):
        flags.append(Flag("embedded-subset", f"computed on the embedded subset ({len(evalset)} images), "
                                             "not the benchmark's evaluation split: not leaderboard-eligible"))
    if limit is not None:
        flags.append(Flag("limited", f"--limit {limit}: only part of the evaluation split was evaluated"))
    if preset != "full":
        flags.append(Flag("quick-preset", "reduced batteries (preset quick): not leaderboard-grade"))
    return flags


def _write_result_dir(final: Path, result: dict, samples: pd.DataFrame, results: dict[str, BatteryResult]) -> None:
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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _deterministic_backends() -> None:
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ["torch", "timm", "captum", "quantus", "pyautoattack", "datasets", "numpy"]:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
