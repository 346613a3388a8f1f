"""The contract every battery (clean, robustness, explanations) implements.

A battery splits its work into independent shards (component x chunk of samples). The runner persists each
shard's output atomically as it finishes, so a killed run resumes where it stopped and a distributed executor
can later run shards elsewhere. A shard must be a pure function of (model, samples, config, shard seed): then
a resumed run gives numbers identical to an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

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
        import hashlib

        h = hashlib.sha256(f"{self.seed}/{battery}/{shard}".encode()).digest()
        return int.from_bytes(h[:4], "little")


class Battery(Protocol):
    name: str  # "clean", "robustness", "explanations"

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
