"""`fxbench run` and `fxbench run-many` as library calls: one submission (or several) through every battery,
sharded and resumable, into one result file each.

Order of work: every option is checked (plan.checked_options), then everything that can refuse a submission
(plan.prepare_run: device, model.yaml, checkpoint, model outputs, data) runs before anything is written.
An executor then runs each battery's shards by the one shard recipe (executors/shard.py), and the result
folder is assembled and swapped into place whole (publish.finish_run).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import FxbenchError
from .outdir import LOCK_NAME, check_writable, run_lock
from .plan import Progress, checked_options, prepare_run
from .publish import RunResult, finish_run

if TYPE_CHECKING:
    from .models import Submission

__all__ = ["ManyResult", "Progress", "RunResult", "run_many", "run_submission"]


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
    from .executors import LocalExecutor

    progress = progress or Progress()
    started = time.time()
    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    options = checked_options(limit=limit, preset=preset, version=version, device=device, batteries=batteries,
                              seed=seed)
    out = Path(out)
    created = not out.exists()
    check_writable(out)  # a read-only or full --out, or one naming a file, is found before any work
    try:
        with run_lock(out):
            prep = prepare_run(path, options=options, out=out, data=data, trust_code=trust_code, progress=progress,
                               started=started, started_at=started_at, overwrite=overwrite)
            progress.planned(prep)  # e.g. the CLI's cost print, before any work
            progress.start(prep.n_shards)
            (outcome,) = (executor or LocalExecutor()).run([prep], progress=progress, on_done=finish_run)
            return outcome
    except BaseException:
        if created:  # refused before anything was computed: leave no empty --out behind
            with contextlib.suppress(OSError):
                (out / LOCK_NAME).unlink(missing_ok=True)
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
    overwrite: bool = False,
    executor=None,
) -> ManyResult:
    """Several submissions into one --out, their shards in one queue (``executor``; default: this process, one
    after another). Each finished result is published whole as soon as it is done; a submission that is
    refused or fails is reported in the outcome and does not stop the others."""
    from .executors import LocalExecutor

    progress = progress or Progress()
    if not paths:
        raise FxbenchError("run-many: give at least one submission (model.yaml or its folder).")
    options = checked_options(limit=limit, preset=preset, version=version, device=device, batteries=batteries,
                              seed=seed)
    out = Path(out)
    check_writable(out)
    outcomes: list[RunResult | FxbenchError | None] = [None] * len(paths)
    with run_lock(out):
        preps, where, owners = [], [], {}
        for i, path in enumerate(paths):  # every refusal before any shard runs
            try:
                prep = prepare_run(path, options=options, out=out, data=data, trust_code=trust_code,
                                   progress=progress, overwrite=overwrite)
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
        for prep in preps:
            progress.planned(prep)
        progress.start(sum(p.n_shards for p in preps))
        done = (executor or LocalExecutor()).run(preps, progress=progress, on_done=finish_run, keep_going=True)
        for i, outcome in zip(where, done):
            outcomes[i] = outcome
    return ManyResult(paths=[Path(p) for p in paths], outcomes=outcomes)
