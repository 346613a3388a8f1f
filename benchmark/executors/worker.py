"""What runs inside a Ray worker process, without Ray itself: load a submission (hash-checked, here), keep it
and the evaluation data for the next shards of this process, run one shard exactly as the local runner does.

Per worker process, the last few submissions and data sets are kept (``KEEP``): a worker running shard after
shard of one submission loads its model and receives its data once, not once per shard.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import FxbenchError, ModelFailed, SubmissionError

KEEP = 2  # per worker: submissions, data sets, earlier-battery results kept (run-many interleaves a few)

_MODELS: OrderedDict[tuple, Any] = OrderedDict()
_DATA: OrderedDict[str, Any] = OrderedDict()
_PREVIOUS: OrderedDict[str, Any] = OrderedDict()


@dataclass(frozen=True)
class ShardJob:
    """One shard, as the driver planned it. The model travels as its model.yaml path and the hashes the driver
    checked; the worker loads it itself and must find the same hashes."""

    yaml_path: str
    yaml_sha256: str
    checkpoint_sha256: str
    trust_code: bool
    device: str  # "cpu" or "cuda" (the GPU Ray gave the task)
    seed: int
    preset: str
    work_dir: str
    battery: str
    config: Any  # the battery's parsed config (Battery.configure), as planned by the driver
    key: str
    threads: int = 1  # the driver's torch threads: CPU results depend on them in the last bits
    fxbench_version: str = __version__


def _keep(cache: OrderedDict, key, make):
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = make()
    cache[key] = value
    while len(cache) > KEEP:
        cache.popitem(last=False)
    return value


def load_model(job: ShardJob):
    """The submission, loaded in this process by the same code as a local run: the checkpoint is hash-checked
    against model.yaml here, an entrypoint is refused without trust_code, and model.yaml and the checkpoint
    must still be the files the driver checked."""
    from ..models import load_submission

    def make():
        try:
            sub = load_submission(job.yaml_path, trust_code=job.trust_code, device=job.device)
        except SystemExit as e:
            raise ModelFailed(f"{job.yaml_path}: the model code called sys.exit({e.code!r}) while loading") from None
        if (sub.yaml_sha256, sub.checkpoint_sha256) != (job.yaml_sha256, job.checkpoint_sha256):
            raise SubmissionError(
                f"{job.yaml_path}: model.yaml or its checkpoint on worker {socket.gethostname()} is not the one the "
                f"run checked (sha256 {sub.yaml_sha256[:12]}/{sub.checkpoint_sha256[:12]}, expected "
                f"{job.yaml_sha256[:12]}/{job.checkpoint_sha256[:12]}); every node must see the same files."
            )
        return sub

    key = (job.yaml_path, job.yaml_sha256, job.checkpoint_sha256, job.trust_code, job.device)
    return _keep(_MODELS, key, make)


def run_shard(job: ShardJob, evalset, previous: dict, tensors: dict[str, dict[str, torch.Tensor]]):
    """One shard by the shard recipe every executor uses (executors/shard.py)."""
    from ..battery import BATTERIES, RunContext
    from .shard import compute

    if job.fxbench_version != __version__:
        raise FxbenchError(f"worker {socket.gethostname()} runs fxbench {__version__}, the driver "
                           f"{job.fxbench_version}: install the same fxbench on every node.")
    if torch.get_num_threads() != job.threads:
        torch.set_num_threads(job.threads)
    sub = load_model(job)
    ctx = RunContext(device=torch.device(job.device), seed=job.seed, preset=job.preset, work_dir=Path(job.work_dir),
                     previous=dict(previous), _tensor_loader=lambda battery: dict(tensors.get(battery, {})))
    return compute(BATTERIES.get(job.battery)(), job.key, model=sub.model, evalset=evalset, config=job.config,
                   ctx=ctx, sub=sub)


def run_boxed(job: ShardJob, data_box: list, previous_box: list):
    """The Ray task body. The boxes hold object refs (a list, so Ray does not fetch them for every task): each
    is fetched once per worker process and kept."""
    import ray

    evalset = _keep(_DATA, data_box[0].hex(), lambda: ray.get(data_box[0]))
    previous, tensors = _keep(_PREVIOUS, previous_box[0].hex(), lambda: ray.get(previous_box[0]))
    return run_shard(job, evalset, previous, tensors)
