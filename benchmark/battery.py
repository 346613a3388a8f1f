"""The contract every battery (clean, robustness, explanations; corruptions from v3) implements.

A battery splits its work into independent shards (component x chunk of samples). The runner persists each
shard's output atomically as it finishes, so a killed run resumes where it stopped and a distributed executor
can later run shards elsewhere. A shard must be a pure function of (model, samples, config, shard seed): then
a resumed run gives numbers identical to an uninterrupted one.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from .registry import Registry
from .results.metrics import MetricDef


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # "fracatlas-v1" or "fracatlas-v1-embedded"
    fingerprint: str
    split: str  # "eval"
    n: int
    leaderboard_eligible: bool


@dataclass(frozen=True)
class EvalSet:
    """The evaluation images, already in the canonical geometry, on the CPU.

    x: float32 (N, 1, 224, 224) in [0, 1]; y: int64 (N,), 1 = fracture; masks: bool (N, 1, 224, 224), all
    False for non-fractured images; meta: one row per image with at least image_id, label, split, hardware,
    hand, leg, hip, shoulder, mixed, view, in the same order as x.
    """

    ids: list[str]
    x: torch.Tensor
    y: torch.Tensor
    masks: torch.Tensor
    meta: pd.DataFrame
    dataset: DatasetInfo

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, size: int) -> list[tuple[int, int]]:
        return [(i, min(i + size, len(self))) for i in range(0, len(self), size)]


@dataclass(frozen=True)
class Flag:
    """A warning that qualifies the numbers, e.g. Flag("gradient-masking", "Square broke 3 points ...")."""

    code: str  # kebab-case, stable: the leaderboard shows and filters on it
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class ShardOutput:
    """What one shard produced. ``samples`` has an ``image_id`` column plus this battery's per-sample columns
    (named like metric ids, e.g. ``robust/linf-4/broken``). ``tensors`` are saved as safetensors and can be
    read by later batteries (e.g. adversarial images for the explanation battery)."""

    samples: pd.DataFrame
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatteryResult:
    """A battery's final contribution to the result: per-sample columns, metric definitions, flags, and
    files (relative path -> bytes) written beside result.json, e.g. overlay PNGs."""

    samples: pd.DataFrame
    metrics: list[MetricDef]
    flags: list[Flag] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    device: torch.device
    seed: int
    preset: str
    work_dir: Path  # this run's shard folder; read other batteries' outputs through ``load_tensors``
    quiet: bool = False
    previous: dict[str, BatteryResult] = field(default_factory=dict)  # earlier batteries, by name
    _tensor_loader: Any = None

    def load_tensors(self, battery: str) -> dict[str, torch.Tensor]:
        """All tensors saved by ``battery``'s shards, merged (keys must be unique across shards); {} if none."""
        return self._tensor_loader(battery) if self._tensor_loader is not None else {}

    def shard_seed(self, battery: str, shard: str) -> int:
        return derive_seed(self.seed, battery, shard)


MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit seed; larger ones are refused up front


def derive_seed(*parts: object, bits: int = 32) -> int:
    """The one way fxbench derives a seed from others (run seed, battery, shard, image id, ...): the first
    four bytes of sha256 over the parts joined by "/", so numpy (< 2**32), torch and random all accept it;
    ``bits=31`` keeps the low 31 bits for seeds that must fit a signed 32-bit int (the attacks' seeds)."""
    import hashlib

    h = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:4], "little") & ((1 << bits) - 1)


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators from one derived seed (before every shard and finalize)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def chunk_keys(n_chunks: int) -> list[str]:
    """The shard keys of ``n_chunks`` chunks: chunk-000, chunk-001, ..."""
    return [f"chunk-{i:03d}" for i in range(n_chunks)]


def chunk_index(key: str, n_chunks: int, *, battery: str) -> int:
    """The chunk number of a key made by ``chunk_keys``. Any other key is refused the same way by every battery
    (a caller of ``run_shard`` asked for a shard this evaluation set does not have)."""
    from .errors import FxbenchError

    head, _, digits = key.partition("-")
    if head != "chunk" or not digits.isdigit() or int(digits) >= n_chunks:
        have = f"chunk-000..{chunk_keys(n_chunks)[-1]}" if n_chunks else "no shards"
        raise FxbenchError(f"{battery}: unknown shard {key!r}; this evaluation set has {have}.")
    return int(digits)


class Battery(Protocol):
    name: str  # "clean", "robustness", "explanations"

    def configure(self, config: dict[str, Any]) -> Any:
        """The spec's mapping for this battery and preset, parsed and checked once: what ``shards``,
        ``run_shard`` and ``finalize`` receive as ``config`` (a typed object or the checked mapping). It must
        accept its own output unchanged, and pickle (Ray ships it to workers)."""

    def shards(self, evalset: EvalSet, config: dict[str, Any]) -> list[str]:
        """Shard keys, e.g. ["chunk-000", "chunk-001"]; stable for a given evalset and config."""

    def run_shard(
        self, key: str, *, model: torch.nn.Module, evalset: EvalSet, config: dict[str, Any], ctx: RunContext
    ) -> ShardOutput: ...

    def finalize(
        self, outputs: dict[str, ShardOutput], *, model: torch.nn.Module, evalset: EvalSet,
        config: dict[str, Any], ctx: RunContext,
    ) -> BatteryResult: ...

    def expected_metrics(self, config: dict[str, Any]) -> list[MetricDef]:
        """Every metric this battery can report under ``config`` (a pure function of the spec): the
        leaderboard checks a result's metric definitions against these, never against the file itself."""


# Batteries by name, registered here where the contract lives and imported only when a run asks for them (so
# `fxbench --help` and the definition never import torch-heavy battery code, and nothing imports upwards).
BATTERIES: Registry[Callable[[], Battery]] = Registry("battery")


def _lazy(module: str, cls: str) -> Callable[[], Battery]:
    return lambda: getattr(importlib.import_module(f"fxbench.{module}"), cls)()


BATTERIES.register("clean", _lazy("clean", "CleanBattery"))
BATTERIES.register("robustness", _lazy("robustness", "RobustnessBattery"))
BATTERIES.register("explanations", _lazy("explanations", "ExplanationBattery"))
BATTERIES.register("corruptions", _lazy("corruptions", "CorruptionBattery"))
