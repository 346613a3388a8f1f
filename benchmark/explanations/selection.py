"""Which images the explanation battery scores, how they fall into shards, and the seeds they get.

The battery scores the fractured images only, chunked in evalset order; the model-metric subset and the v1
gallery take the first fractured images by id. Seeds come from the shard's seed (v1) or from the run seed
and the image id (v2, ``RunSeeds``): never from which images share a shard.
"""

from __future__ import annotations

import numpy as np

from ..battery import EvalSet, chunk_index, chunk_keys, derive_seed

BATTERY = "explanations"


def fractured_rows(evalset: EvalSet) -> list[int]:
    return [i for i in range(len(evalset)) if int(evalset.y[i]) == 1]


def first_fractured_ids(evalset: EvalSet, n: int | None) -> list[str]:
    """The fixed image choice for the model-metric subset: by image id, not by order (None: all)."""
    return sorted(evalset.ids[i] for i in fractured_rows(evalset))[:n]


def n_chunks(evalset: EvalSet, chunk_size: int) -> int:
    return (len(fractured_rows(evalset)) + chunk_size - 1) // chunk_size


def shard_keys(evalset: EvalSet, chunk_size: int) -> list[str]:
    return chunk_keys(n_chunks(evalset, chunk_size))


def shard_rows(key: str, evalset: EvalSet, chunk_size: int) -> list[int]:
    """The evalset rows of the fractured images of shard ``key`` (EvaluationBug for a key it never made)."""
    i = chunk_index(key, n_chunks(evalset, chunk_size), battery=BATTERY)
    return fractured_rows(evalset)[i * chunk_size : (i + 1) * chunk_size]


def sub_seed(seed: int, *parts: str) -> int:
    """A seed for one map / metric from the shard's (or run's) seed: ``fxbench.battery.derive_seed``."""
    return derive_seed(seed, *parts)


class RunSeeds:
    """v2: per metric, the run seed's; per image, the run seed's and the image id's."""

    def __init__(self, run_seed: int, ids: list[str]):
        self.run_seed, self.ids = run_seed, ids

    def metric(self, name: str, metric: str) -> int:
        return sub_seed(self.run_seed, "xai", name, metric)

    def __call__(self, name: str, metric: str, keep: np.ndarray) -> np.ndarray:
        return np.array(
            [sub_seed(self.run_seed, "xai", name, metric, i) for i, k in zip(self.ids, keep) if k], dtype=np.int64
        )
