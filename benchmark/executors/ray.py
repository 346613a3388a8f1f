"""Shards as Ray tasks: `fxbench run --executor ray` and `fxbench run-many --executor ray`.

The driver (this process) does what only it can do safely: check every submission before anything runs,
hold the run lock, save each shard's output through the run's ``ShardStore`` (the same files, in the same
place, as a local run, so either executor resumes the other's run), run each battery's finalize, and publish
results whole. Workers run shards: one task per shard, asking for one GPU when the run is on CUDA, one CPU
otherwise. The shards of every submission and battery that can run now share one queue.

What travels how (docs/scale-out.md): the evaluation data and the earlier batteries' results go through the
object store, put once by the driver and fetched once per worker process; the model goes as its model.yaml
path plus the hashes the driver checked, and each worker loads and hash-checks it itself (once per worker
process), so the untrusted-code rules hold where the code runs. Nothing of a shard needs a shared disk except
the submission files.

Faults: a worker that dies (killed, OOM) has its task rerun by Ray up to ``max_retries`` times; an exception in
a shard is not retried (it would fail again) and stops the run with the message a local run gives; Ctrl-C
cancels every task in flight. Finished shards are saved as they arrive, so any stop resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..errors import FxbenchError
from . import shard
from .worker import ShardJob

DEFAULT_MAX_RETRIES = 3  # a worker lost this many times on one shard means the shard kills it: stop
_TASK = None


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def import_ray():
    try:
        import ray
    except ImportError:
        raise FxbenchError("--executor ray needs Ray: pip install 'fxbench[ray]' (or pip install 'ray>=2.9').") from None
    return ray


def _task(ray):
    global _TASK
    if _TASK is None:

        @ray.remote(max_calls=0)  # keep worker processes (and what they loaded) for the next shards
        def fxbench_shard(job, data_box, previous_box):
            from fxbench.executors import worker

            return worker.run_boxed(job, data_box, previous_box)

        _TASK = fxbench_shard
    return _TASK


@dataclass
class _Sub:
    """One submission's way through its batteries."""

    prep: Any
    index: int
    label: str
    stage: int = 0
    outputs: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    pending: set = field(default_factory=set)
    previous_ref: Any = None
    n_run: int = 0
    n_resumed: int = 0
    outcome: Any = None


class RayExecutor:
    name = "ray"

    def __init__(self, *, address: str | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 num_gpus: float = 1) -> None:
        if max_retries < 0:
            raise FxbenchError(f"--max-retries {max_retries}: give 0 or more.")
        if num_gpus <= 0 or (num_gpus > 1 and num_gpus != int(num_gpus)):
            raise FxbenchError(f"--ray-gpus-per-task {num_gpus}: give a fraction in (0, 1] or a whole number.")
        self.address = address
        self.max_retries = max_retries
        self.num_gpus = num_gpus  # per GPU task (a fraction packs several small models on one GPU)
        self.threads = torch_threads()  # each task computes with the driver's torch threads, as a local run

    def run(self, runs: list, *, progress, on_done, keep_going: bool = False) -> list:
        ray = import_ray()
        started_here = _connect(ray, self.address)
        try:
            self._check_cluster(ray, runs)
            return _Scheduler(ray, self, runs, progress, on_done, keep_going).run()
        finally:
            if started_here:
                ray.shutdown()

    def resources(self, prep) -> dict:
        """One GPU (or --ray-gpus-per-task) on CUDA; on the CPU as many CPUs as the task's torch threads."""
        if prep.dev.type == "cuda":
            return {"num_gpus": self.num_gpus, "num_cpus": 1}
        return {"num_cpus": self.threads}

    def _check_cluster(self, ray, runs: list) -> None:
        """A task no node can hold would wait forever: say so instead."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(p.dev.type == "cuda" for p in runs) and not any(n.get("GPU", 0) >= min(self.num_gpus, 1) for n in nodes):
            raise FxbenchError("--device cuda with --executor ray: the Ray cluster has no GPU (start the nodes with "
                               "`ray start --num-gpus N`, or run with --device cpu).")
        if any(p.dev.type != "cuda" for p in runs) and not any(n.get("CPU", 0) >= self.threads for n in nodes):
            most = max((n.get("CPU", 0) for n in nodes), default=0)
            raise FxbenchError(
                f"each CPU shard computes with this process's {self.threads} torch threads (the local runner's, so "
                f"that the numbers are the same), but no Ray node has {self.threads} CPUs (most: {most:g}); run "
                f"with OMP_NUM_THREADS={int(most) or 1} (local and Ray runs then agree at that thread count)."
            )


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at ``address`` (or RAY_ADDRESS), else start a local one; True if we started it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"at {address}" if address else "(local)"
        raise FxbenchError(f"cannot start or reach the Ray cluster {where}: {e}") from None
    return True


class _Scheduler:
    def __init__(self, ray, executor: RayExecutor, runs: list, progress, on_done, keep_going: bool) -> None:
        self.ray, self.ex, self.progress, self.on_done, self.keep_going = ray, executor, progress, on_done, keep_going
        self.subs = [_Sub(prep=p, index=i, label=_label(p, runs)) for i, p in enumerate(runs)]
        self.owner: dict = {}  # object ref -> (sub, key)
        self.data_refs: dict = {}

    # -- the loop -----------------------------------------------------------------------------------------

    def run(self) -> list:
        try:
            for sub in self.subs:
                self._guard(sub, self._start_stage, sub)
            while self.owner:
                ready, _ = self.ray.wait(list(self.owner), num_returns=1, timeout=0.5)  # short: Ctrl-C lands
                for ref in ready:
                    sub, key = self.owner.pop(ref)
                    sub.pending.discard(ref)
                    if sub.outcome is None:
                        self._guard(sub, self._arrived, sub, key, ref)
        except BaseException:
            self._cancel(list(self.owner))
            raise
        return [s.outcome for s in self.subs]

    def _guard(self, sub: _Sub, fn, *args) -> None:
        try:
            fn(*args)
        except FxbenchError as e:
            self._cancel([r for r in sub.pending])
            sub.outcome = e
            if not self.keep_going:
                raise

    def _cancel(self, refs: list) -> None:
        for ref in refs:
            self.owner.pop(ref, None)
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or its worker gone: nothing to cancel
                pass

    # -- one submission -----------------------------------------------------------------------------------

    def _start_stage(self, sub: _Sub) -> None:
        """Submit the current battery's unfinished shards; finalize at once if every shard was resumed."""
        while sub.stage < len(sub.prep.plan):
            step = sub.prep.plan[sub.stage]
            sub.outputs = {}
            for key in step.keys:
                output = shard.resume(sub.prep.store, step.name, key, note=self.progress.note)
                if output is not None:
                    sub.outputs[key] = output
                    sub.n_resumed += 1
                    self.progress.advance(sub.label + step.name, key, True)
                    continue
                self._submit(sub, step.name, step.config, key)
            if sub.pending:
                return
            self._finalize(sub)

    def _submit(self, sub: _Sub, name: str, config: dict, key: str) -> None:
        prep = sub.prep
        if sub.previous_ref is None:
            sub.previous_ref = self.ray.put(_previous(prep, sub.stage))
        job = ShardJob(
            yaml_path=str(prep.sub.yaml_path.resolve()), yaml_sha256=prep.sub.yaml_sha256,
            checkpoint_sha256=prep.sub.checkpoint_sha256, trust_code=prep.trust_code, device=prep.dev.type,
            seed=prep.seed, preset=prep.preset, work_dir=str(prep.store.root), battery=name, config=config, key=key,
            threads=self.ex.threads,
        )
        ref = _task(self.ray).options(max_retries=self.ex.max_retries, retry_exceptions=False,
                                      **self.ex.resources(prep)).remote(job, [self._data_ref(prep)],
                                                                        [sub.previous_ref])
        self.owner[ref] = (sub, key)
        sub.pending.add(ref)

    def _data_ref(self, prep):
        """The evaluation data, put once for every submission evaluated on the same images."""
        ev = prep.evalset
        k = (ev.dataset.fingerprint, tuple(ev.ids))
        if k not in self.data_refs:
            self.data_refs[k] = self.ray.put(ev)
        return self.data_refs[k]

    def _arrived(self, sub: _Sub, key: str, ref) -> None:
        name = sub.prep.plan[sub.stage].name
        try:
            output = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, FxbenchError):  # the local run's own message (ModelFailed, SubmissionError, ...)
                raise type(cause)(*cause.args) from None
            raise  # an fxbench bug: fail loudly, with the worker's traceback
        except self.ray.exceptions.TaskCancelledError:
            raise FxbenchError(f"{sub.label}shard {name}/{key} was cancelled; rerun to resume.") from None
        except self.ray.exceptions.RayError as e:  # worker or node died more often than max_retries allows
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise FxbenchError(
                f"{sub.label}shard {name}/{key}: its Ray worker was lost {self.ex.max_retries + 1} times "
                f"({type(e).__name__}: {first[:200]}); finished shards are kept: rerun the same command to resume."
            ) from None
        sub.outputs[key] = shard.save(sub.prep.store, name, key, output)
        sub.n_run += 1
        self.progress.advance(sub.label + name, key, False)
        if not sub.pending:
            self._finalize(sub)
            self._start_stage(sub)

    def _finalize(self, sub: _Sub) -> None:
        prep = sub.prep
        step = prep.plan[sub.stage]
        outputs = {k: sub.outputs[k] for k in step.keys}  # the local runner's order
        sub.results[step.name] = shard.finalize(step.battery, outputs, model=prep.sub.model, evalset=prep.evalset,
                                                config=step.config, ctx=prep.ctx, sub=prep.sub)
        sub.stage += 1
        sub.previous_ref = None  # the next battery's shards see this one's result
        if sub.stage == len(prep.plan):
            sub.outcome = self.on_done(prep, sub.results, sub.n_run, sub.n_resumed)


def _previous(prep, stage: int) -> tuple[dict, dict]:
    """Earlier batteries' results and saved tensors, as a local run's shards would see them."""
    names = [step.name for step in prep.plan[:stage]]
    return dict(prep.ctx.previous), {name: prep.store.load_tensors(name) for name in names}


def _label(prep, runs: list) -> str:
    return f"{prep.sub.spec.id} " if len(runs) > 1 else ""
