"""Preparing a run: the options `run` and `run-many` share, then everything that can refuse a submission
(model.yaml, checkpoint, model outputs, data, the result already in OUT/<id>), then the shard plan. Nothing
here writes a file or computes a shard."""

from __future__ import annotations

import hashlib
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .battery import BATTERIES, MAX_SEED, Battery, EvalSet, RunContext
from .definition import BenchmarkDefinition, load_definition, resolve_preset
from .errors import FxbenchError, ModelFailed, SubmissionError
from .executors.blame import model_errors
from .outdir import SHARDS_DIR, check_result_dir
from .results.shards import ShardStore
from .run_identity import check_replaceable
from .run_identity import identity as run_identity


@dataclass(frozen=True)
class Progress:
    """Callbacks the CLI uses for progress bars; the library itself prints nothing."""

    start: Callable[[int], None] = lambda total: None
    advance: Callable[[str, str, bool], None] = lambda battery, key, resumed: None
    note: Callable[[str], None] = lambda message: None
    planned: Callable[[Any], None] = lambda prep: None  # each PreparedRun, checked and planned, before any shard


@dataclass(frozen=True)
class RunOptions:
    """The options `run` and `run-many` share, checked before any work."""

    definition: BenchmarkDefinition
    device: Any  # torch.device
    preset: str  # "quick" or "full" (auto resolved for the device)
    batteries: tuple[str, ...]  # in the definition's order: later batteries read earlier ones
    seed: int
    limit: int | None


def checked_options(*, limit: int | None, preset: str, version: str | None, device: str,
                    batteries: list[str] | None, seed: int | None) -> RunOptions:
    from .models import resolve_device

    if limit is not None and limit < 2:
        raise FxbenchError(f"--limit {limit}: need at least 2 images (one per class)")
    if seed is not None and not 0 <= int(seed) <= MAX_SEED:
        raise FxbenchError(f"--seed {seed}: give a whole number from 0 to 2**63 - 1.")
    resolve_preset(preset, "cpu")  # an unknown preset is refused before the device is looked at
    definition = load_definition(version)
    dev = resolve_device(device)
    order = list(definition.raw["batteries"])
    names = list(dict.fromkeys(batteries or order))
    for name in names:
        BATTERIES.get(name)  # unknown names refused before any work
    names.sort(key=lambda n: order.index(n) if n in order else len(order))
    return RunOptions(definition=definition, device=dev, preset=resolve_preset(preset, dev), batteries=tuple(names),
                      seed=definition.seed if seed is None else int(seed), limit=limit)


@dataclass(frozen=True)
class PlannedBattery:
    """One battery of a run: its name, the battery object, its parsed config and its shard keys."""

    name: str
    battery: Battery
    config: Any  # what battery.configure returned: parsed once, passed to every shard and finalize
    keys: tuple[str, ...]


@dataclass
class PreparedRun:
    """One submission checked and planned, nothing computed yet: what an executor needs to run its shards."""

    sub: Any
    evalset: EvalSet
    store: ShardStore
    ctx: RunContext
    plan: list[PlannedBattery]  # in the order the batteries run
    options: RunOptions
    out: Path
    trust_code: bool
    config_hash: str
    started: float
    started_at: str
    git_commit: str | None = None  # taken when the run starts: the code that computes it, not that at its end

    @property
    def n_shards(self) -> int:
        return sum(len(step.keys) for step in self.plan)

    # the options, by the names the executors and the result use
    @property
    def definition(self) -> BenchmarkDefinition:
        return self.options.definition

    @property
    def preset(self) -> str:
        return self.options.preset

    @property
    def limit(self) -> int | None:
        return self.options.limit

    @property
    def seed(self) -> int:
        return self.options.seed

    @property
    def dev(self):
        return self.options.device


def prepare_run(path, *, options: RunOptions, out: Path, data, trust_code: bool, progress: Progress,
                started: float | None = None, started_at: str | None = None,
                overwrite: bool = False) -> PreparedRun:
    """Everything that can refuse a submission, then the shard plan. Writes nothing."""
    from .data import EmbeddedDataWarning, load_arrays
    from .models import Submission, check_model_outputs, load_submission
    from .models.validate import check_batch_sizes

    started = time.time() if started is None else started
    started_at = started_at or datetime.now(UTC).replace(microsecond=0).isoformat()
    definition, dev, preset = options.definition, options.device, options.preset
    try:  # a Submission already loaded (fxbench.evaluate's in-memory model) is used as it is
        sub = path if isinstance(path, Submission) else load_submission(path, trust_code=trust_code, device=str(dev))
    except SystemExit as e:  # trusted code that exits while it is imported or built
        raise ModelFailed(f"{path}: the model code called sys.exit({e.code!r}) while loading") from None
    check_result_dir(out / sub.spec.id)
    with model_errors(sub, "the output check"):  # at the batch sizes `validate` checks too (one rule)
        sizes = check_batch_sizes(preset, device=dev, version=definition.version)
        try:
            check_model_outputs(sub.model, device=dev, batch_sizes=sizes, preset=preset,
                                version=definition.version)
        except SubmissionError as e:  # named as `validate` names it: the model.yaml first
            raise type(e)(f"{sub.yaml_path}: {e}") from None
    with warnings.catch_warnings():  # said once below through progress.note, not as a Python warning
        warnings.simplefilter("ignore", EmbeddedDataWarning)
        evalset = load_arrays(data, split=definition.raw["dataset"]["split"], limit=options.limit)
    if evalset.dataset.name.endswith("embedded"):
        progress.note(
            f"No prepared dataset found: using the embedded subset ({len(evalset)} images). "
            "Results are not leaderboard-eligible; run `fxbench data prepare` for the full benchmark."
        )

    config_hash = definition.config_hash(preset)
    names = list(options.batteries)
    check_replaceable(out / sub.spec.id, run_identity(
        version=definition.version, fingerprint=evalset.dataset.fingerprint, n=len(evalset), limit=options.limit,
        preset=preset, config_hash=config_hash, seed=options.seed, batteries=names), overwrite=overwrite)
    run_key = hashlib.sha256(
        "|".join(
            map(str, [config_hash, evalset.dataset.fingerprint, options.limit, options.seed, sub.yaml_sha256,
                      sub.checkpoint_sha256, dev.type, ",".join(names)])
        ).encode()
    ).hexdigest()[:16]
    work_dir = out / SHARDS_DIR / sub.spec.id / run_key
    store = ShardStore(work_dir)
    ctx = RunContext(device=dev, seed=options.seed, preset=preset, work_dir=work_dir,
                     _tensor_loader=store.load_tensors)
    plan = []
    for name in names:
        battery = BATTERIES.get(name)()
        config = battery.configure(definition.battery_config(name, preset))
        plan.append(PlannedBattery(name=name, battery=battery, config=config,
                                   keys=tuple(battery.shards(evalset, config))))
    return PreparedRun(sub=sub, evalset=evalset, store=store, ctx=ctx, plan=plan, options=options, out=out,
                       trust_code=trust_code, config_hash=config_hash, started=started, started_at=started_at,
                       git_commit=git_commit())


def git_commit() -> str | None:
    """The commit of the fxbench checkout this process runs (None when installed from a wheel)."""
    try:
        root = Path(__file__).resolve().parent.parent
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False, capture_output=True,
                           text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
