"""`fxbench run`: one submission through every battery, sharded and resumable, into one result file.

Order of work: everything that can refuse the input (device, model.yaml, checkpoint, model outputs, data)
runs before anything is written. Then each battery's shards run (finished shards are read back, not rerun),
and the result folder is assembled in a temporary folder and swapped into place whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from . import __version__
from .battery import Battery, BatteryResult, EvalSet, Flag, RunContext, ShardOutput
from .definition import PRESETS, load_definition
from .errors import EvaluationBug, FxbenchError, ModelFailed
from .io import atomic_write, atomic_write_bytes, replace_dir
from .registry import Registry
from .results.metrics import compute_metrics
from .results.resultfile import RESULT_NAME, SAMPLES_NAME, write_result
from .results.shards import ShardCorrupt, ShardStore
from .run_identity import check_replaceable
from .run_identity import identity as run_identity

if TYPE_CHECKING:
    from .models import Submission

BATTERIES: Registry[Callable[[], Battery]] = Registry("battery")


def _lazy(module: str, cls: str) -> Callable[[], Battery]:
    return lambda: getattr(importlib.import_module(f"fxbench.{module}"), cls)()


BATTERIES.register("clean", _lazy("clean", "CleanBattery"))
BATTERIES.register("robustness", _lazy("robustness", "RobustnessBattery"))
BATTERIES.register("explanations", _lazy("explanations", "ExplanationBattery"))

META_COLUMNS = ["image_id", "label", "split", "hardware", "hand", "leg", "hip", "shoulder", "mixed", "region", "view"]
SHARDS_DIR = ".fxbench-shards"
LOCK_NAME = ".fxbench-run.lock"


@dataclass(frozen=True)
class RunResult:
    out_dir: Path | None  # None: fxbench.evaluate(out=None) kept nothing on disk
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
    path: str | Path | Submission,
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
    overwrite: bool = False,
    executor=None,
) -> RunResult:
    """``executor``: None runs the shards in this process; an object of ``fxbench.executors`` (e.g. Ray) runs
    them elsewhere, with the same shards, store and result."""

    progress = progress or Progress()
    started = time.time()
    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    definition, dev, preset, names, seed = _checked_options(limit=limit, preset=preset, version=version,
                                                            device=device, batteries=batteries, seed=seed)
    out = Path(out)
    created = not out.exists()
    check_writable(out)  # a read-only or full --out, or one naming a file, is found before any work
    try:
        with run_lock(out):
            return _run_locked(path, out=out, data=data, preset=preset, dev=dev, limit=limit, seed=seed,
                               trust_code=trust_code, names=names, definition=definition, progress=progress,
                               started=started, started_at=started_at, overwrite=overwrite, executor=executor)
    except BaseException:
        if created:  # refused before anything was computed: leave no empty --out behind
            with contextlib.suppress(OSError):
                (out / LOCK_NAME).unlink()
                out.rmdir()
        raise


@dataclass(frozen=True)
class ManyResult:
    """`run_many`: one entry per submission given, in order: its RunResult, or the error that stopped it."""

    paths: list[Path]
    outcomes: list[RunResult | FxbenchError]

    @property
    def failed(self) -> list[tuple[Path, FxbenchError]]:
        return [(p, o) for p, o in zip(self.paths, self.outcomes) if isinstance(o, FxbenchError)]


def run_many(
    paths: list[str | Path],
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
    executor=None,
) -> ManyResult:
    """Several submissions into one --out, their shards in one queue (``executor``; default: this process, one
    after another). Each finished result is published whole as soon as it is done; a submission that is
    refused or fails is reported in the outcome and does not stop the others."""
    from .executors import LocalExecutor

    progress = progress or Progress()
    if not paths:
        raise FxbenchError("run-many: give at least one submission (model.yaml or its folder).")
    definition, dev, preset, names, seed = _checked_options(limit=limit, preset=preset, version=version,
                                                            device=device, batteries=batteries, seed=seed)
    out = Path(out)
    check_writable(out)
    outcomes: list[RunResult | FxbenchError | None] = [None] * len(paths)
    with run_lock(out):
        preps, where, owners = [], [], {}
        for i, path in enumerate(paths):  # every refusal before any shard runs
            try:
                prep = prepare_run(path, out=out, data=data, preset=preset, dev=dev, limit=limit, seed=seed,
                                   trust_code=trust_code, names=names, definition=definition, progress=progress)
            except FxbenchError as e:
                outcomes[i] = e
                continue
            if prep.sub.spec.id in owners:  # both would publish OUT/<id>/
                outcomes[i] = FxbenchError(f"{path}: submission id {prep.sub.spec.id!r} is also the id of "
                                           f"{paths[owners[prep.sub.spec.id]]}; ids must be unique.")
                continue
            owners[prep.sub.spec.id] = i
            preps.append(prep)
            where.append(i)
        progress.start(sum(p.n_shards for p in preps))
        done = (executor or LocalExecutor()).run(preps, progress=progress, on_done=finish_run, keep_going=True)
        for i, outcome in zip(where, done):
            outcomes[i] = outcome
    return ManyResult(paths=[Path(p) for p in paths], outcomes=outcomes)


def _checked_options(*, limit, preset: str, version, device: str, batteries, seed):
    """The options `run` and `run-many` share, checked before any work: (definition, device, preset, battery
    names in the definition's order, seed)."""
    from .models import resolve_device

    if limit is not None and limit < 2:
        raise FxbenchError(f"--limit {limit}: need at least 2 images (one per class)")
    if preset not in ("auto", *PRESETS):
        raise FxbenchError(f"--preset {preset!r}: choose one of auto, {', '.join(PRESETS)}.")
    definition = load_definition(version)
    dev = resolve_device(device)
    names = list(dict.fromkeys(batteries or definition.raw["batteries"]))
    order = list(definition.raw["batteries"])  # later batteries read earlier ones: keep the definition's order
    names.sort(key=lambda n: order.index(n) if n in order else len(order))
    for name in names:
        BATTERIES.get(name)  # unknown names refused before any work
    seed = definition.seed if seed is None else int(seed)
    return definition, dev, resolve_preset(preset, dev), names, seed


def check_writable(out: Path) -> None:
    """Create ``out`` and write a probe file in it; one clear error if that fails."""
    if out.exists() and not out.is_dir():
        raise FxbenchError(f"--out {out}: is a file, not a folder; give a folder for the results.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".fxbench-probe-") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise FxbenchError(f"--out {out}: cannot write there ({e.strerror or e}); nothing was run.") from None


@contextlib.contextmanager
def run_lock(out: Path):
    """One run at a time per --out: a second one is refused (the lock goes with the process, even on kill -9)."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no lock, as before
        yield
        return
    path = out / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise FxbenchError(f"--out {out}: cannot create the run lock {path.name} ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise FxbenchError(
                f"--out {out}: another fxbench run (pid {holder}) is writing into this folder; wait for it to "
                "finish, or give another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with a waiting run)


@dataclass
class PreparedRun:
    """One submission checked and planned, nothing computed yet: what an executor needs to run its shards."""

    sub: Any
    evalset: EvalSet
    store: ShardStore
    ctx: RunContext
    plan: list  # (battery name, battery, config, shard keys), in the order the batteries run
    definition: Any
    out: Path
    preset: str
    limit: int | None
    seed: int
    dev: torch.device
    trust_code: bool
    config_hash: str
    started: float
    started_at: str
    git_commit: str | None = None  # taken when the run starts: the code that computes it, not that at its end

    @property
    def n_shards(self) -> int:
        return sum(len(keys) for *_, keys in self.plan)


def _run_locked(path, *, out: Path, data, preset: str, dev, limit, seed: int, trust_code: bool, names: list[str],
                definition, progress: Progress, started: float, started_at: str, overwrite: bool = False,
                executor=None) -> RunResult:
    prep = prepare_run(path, out=out, data=data, preset=preset, dev=dev, limit=limit, seed=seed,
                       trust_code=trust_code, names=names, definition=definition, progress=progress,
                       started=started, started_at=started_at, overwrite=overwrite)
    progress.start(prep.n_shards)
    from .executors import LocalExecutor

    (outcome,) = (executor or LocalExecutor()).run([prep], progress=progress, on_done=finish_run)
    return outcome


def prepare_run(path, *, out: Path, data, preset: str, dev, limit, seed: int, trust_code: bool, names: list[str],
                definition, progress: Progress, started: float | None = None,
                started_at: str | None = None, overwrite: bool = False) -> PreparedRun:
    """Everything that can refuse a submission (model.yaml, checkpoint hash, model outputs, data), then the
    shard plan. Writes nothing."""
    from .data import EmbeddedDataWarning, load_arrays
    from .models import Submission, check_model_outputs, load_submission

    started = time.time() if started is None else started
    started_at = started_at or datetime.now(UTC).replace(microsecond=0).isoformat()
    try:  # a Submission already loaded (fxbench.evaluate's in-memory model) is used as it is
        sub = path if isinstance(path, Submission) else load_submission(path, trust_code=trust_code, device=str(dev))
    except SystemExit as e:  # trusted code that exits while it is imported or built
        raise ModelFailed(f"{path}: the model code called sys.exit({e.code!r}) while loading") from None
    model = sub.model
    with _model_errors(sub, "the output check"):  # at the batch sizes this run's batteries will use
        check_model_outputs(model, device=dev, batch_sizes=model_check_batch_sizes(preset, definition.version, dev))
    with warnings.catch_warnings():  # said once below through progress.note, not as a Python warning
        warnings.simplefilter("ignore", EmbeddedDataWarning)
        evalset = load_arrays(data, split=definition.raw["dataset"]["split"], limit=limit)
    if evalset.dataset.name.endswith("embedded"):
        progress.note(
            f"No prepared dataset found: using the embedded subset ({len(evalset)} images). "
            "Results are not leaderboard-eligible; run `fxbench data prepare` for the full benchmark."
        )

    config_hash = definition.config_hash(preset)
    check_replaceable(out / sub.spec.id, run_identity(
        version=definition.version, fingerprint=evalset.dataset.fingerprint, n=len(evalset), limit=limit,
        preset=preset, config_hash=config_hash, seed=seed, batteries=names), overwrite=overwrite)
    run_key = hashlib.sha256(
        "|".join(
            map(str, [config_hash, evalset.dataset.fingerprint, limit, seed, sub.yaml_sha256,
                      sub.checkpoint_sha256, dev.type, ",".join(names)])
        ).encode()
    ).hexdigest()[:16]
    work_dir = out / SHARDS_DIR / sub.spec.id / run_key
    store = ShardStore(work_dir)
    ctx = RunContext(device=dev, seed=seed, preset=preset, work_dir=work_dir, _tensor_loader=store.load_tensors)

    _deterministic_backends()
    plan = []
    for name in names:
        battery = BATTERIES.get(name)()
        config = definition.battery_config(name, preset)
        plan.append((name, battery, config, battery.shards(evalset, config)))
    return PreparedRun(sub=sub, evalset=evalset, store=store, ctx=ctx, plan=plan, definition=definition, out=out,
                       preset=preset, limit=limit, seed=seed, dev=dev, trust_code=trust_code, config_hash=config_hash,
                       started=started, started_at=started_at, git_commit=_git_commit())


def finish_run(prep: PreparedRun, results: dict[str, BatteryResult], n_run: int, n_resumed: int) -> RunResult:
    """Merge the batteries' samples, compute the metrics, and publish OUT/<id>/ whole; then drop the shards."""
    definition, evalset, sub, preset, limit = prep.definition, prep.evalset, prep.sub, prep.preset, prep.limit
    work_dir = prep.store.root
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
            "versions": _versions(),
            "device": _device_name(prep.dev),
            "seed": prep.seed,
            "started_at": prep.started_at,
            "duration_s": round(time.time() - prep.started, 3),
            **({"ci": ci} if (ci := _ci_provenance()) else {}),
            **_xai_metric_paths(results),
        },
    }
    final = prep.out / sub.spec.id
    try:
        _write_result_dir(final, result, samples, results)
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


def _run_batteries(plan, *, model, evalset: EvalSet, store: ShardStore, ctx: RunContext, progress: Progress,
                   sub=None):
    results: dict[str, BatteryResult] = {}
    n_run = n_resumed = 0
    for name, battery, config, keys in plan:
        outputs: dict[str, ShardOutput] = {}
        for key in keys:
            if store.done(name, key):
                try:
                    outputs[key] = store.load(name, key)
                except ShardCorrupt as e:  # truncated or corrupt files of a finished shard: compute it again
                    progress.note(f"{e}; recomputing it")
                    store.discard(name, key)
                else:
                    n_resumed += 1
                    progress.advance(name, key, True)
                    continue
            _seed_everything(ctx.shard_seed(name, key))
            with _model_errors(sub, f"the {name} battery (shard {key})"):
                output = battery.run_shard(key, model=model, evalset=evalset, config=config, ctx=ctx)
            try:
                store.save(name, key, output)
            except OSError as e:
                raise FxbenchError(f"cannot write shard {name}/{key} under {store.root} ({e.strerror or e}); "
                                   "finished shards are kept: free space and rerun the same command.") from None
            outputs[key] = store.load(name, key)  # use exactly what a resumed run would read
            n_run += 1
            progress.advance(name, key, False)
        _seed_everything(ctx.shard_seed(name, "finalize"))
        with _model_errors(sub, f"the {name} battery (finalize)"):
            results[name] = battery.finalize(outputs, model=model, evalset=evalset, config=config, ctx=ctx)
        ctx.previous[name] = results[name]

    return results, n_run, n_resumed


@contextlib.contextmanager
def _model_errors(sub, where: str):
    """An exception raised in the submission's own code (its folder, or the module defining its network) is
    the model's problem: one `error:` naming the model. Anything else is fxbench's and propagates as is."""
    try:
        yield
    except (FxbenchError, EvaluationBug, KeyboardInterrupt):
        raise
    except SystemExit as e:
        raise ModelFailed(f"model {_model_name(sub)} called sys.exit({e.code!r}) during {where}") from None
    except (Exception, RecursionError) as e:  # noqa: BLE001 - classified below
        if sub is None or not _raised_by_model(e, sub):
            raise
        text = str(e)
        text = text if len(text) <= 300 else text[:300] + "..."
        raise ModelFailed(f"model {_model_name(sub)} raised {type(e).__name__} during {where}: {text}") from None


def _model_name(sub) -> str:
    return "?" if sub is None else f"{sub.spec.id!r} ({sub.yaml_path})"


def _raised_by_model(e: BaseException, sub) -> bool:
    import inspect
    import traceback

    files = {str(Path(sub.folder).resolve())}
    for m in sub.model.net.modules():
        mod = type(m).__module__
        if mod.startswith(("torch.", "fxbench.")):
            continue
        with contextlib.suppress(TypeError, OSError):
            files.add(str(Path(inspect.getfile(type(m))).resolve()))
    for frame in traceback.extract_tb(e.__traceback__):
        f = str(Path(frame.filename).resolve())
        if any(f == x or f.startswith(x + os.sep) for x in files):
            return True
    return isinstance(e, RecursionError)  # the traceback of a deep recursion is cut; batteries do not recurse


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


def model_check_batch_sizes(preset: str, version: str, dev) -> tuple[int, ...]:
    """The spec's batch sizes and the batched metric path's forward batch on this device: an image's logits
    must not depend on the batch it shares with its own perturbed copies either."""
    import torch

    from .explanations.fast import forward_batch_size
    from .models.validate import battery_batch_sizes

    return tuple(sorted({*battery_batch_sizes(preset, version=version), forward_batch_size(torch.device(dev))}))


def _xai_metric_paths(results) -> dict[str, list[str]]:
    """Which implementation scored the explanation battery's model metrics: ``fast`` (the batched path,
    explanations/fast.py) and/or ``quantus`` (the library itself); per column in components.explanations."""
    info = getattr(results.get("explanations"), "info", None) or {}
    used = {p for v in (info.get("metric_paths") or {}).values() for p in v.split("+")}
    return {"xai_metric_paths": sorted(used)} if used else {}


def _ci_provenance() -> dict[str, str] | None:
    """The GitHub Actions run computing this result (docs/leaderboard.md, "Provenance"). Environment values
    can be set by anyone, so this only names the run: the PR check downloads that run's artifact and
    compares bytes, which is what ties a committed result to it."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return None
    keys = {"repository": "GITHUB_REPOSITORY", "run_id": "GITHUB_RUN_ID", "run_attempt": "GITHUB_RUN_ATTEMPT",
            "workflow": "GITHUB_WORKFLOW", "sha": "GITHUB_SHA", "server_url": "GITHUB_SERVER_URL"}
    return {k: os.environ.get(v, "") for k, v in keys.items()}


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
