"""How the robustness battery's work is cut into shards (the units of persistence and resume).

v1/v2 (``shard_by: chunk``): one shard per chunk of images, every budget inside. v3 (``shard_by: norm``): one
shard per (chunk, norm), the cascade over that norm's budgets inside, the two norms independent (as in v2: each
norm's cascade starts from the clean points). With the v3 full preset's chunk covering the whole evaluation
split, each attack at each budget runs as one stream of all still-robust points of the split: one model call
per step or query, not one per chunk (on an accelerator a call costs launch latency, not arithmetic), while a
killed run still keeps each finished norm. Shards are independent of each other, so any executor may run them
in any order or at once.
"""

from __future__ import annotations

import pandas as pd

from ..battery import chunk_index, chunk_keys
from ..errors import FxbenchError
from .config import Budget, RobustnessConfig

NORM_ORDER = ("linf", "l2")


def norms(cfg: RobustnessConfig) -> list[str]:
    """The norms with at least one budget, in cascade order."""
    return [n for n in NORM_ORDER if cfg.by_norm(n)]


def shard_keys(cfg: RobustnessConfig, n_chunks: int) -> list[str]:
    chunks = chunk_keys(n_chunks)
    if cfg.shard_by == "chunk":
        return chunks
    return [f"{c}-{n}" for c in chunks for n in norms(cfg)]


def parse_key(key: str, cfg: RobustnessConfig, n_chunks: int, *, battery: str) -> tuple[int, list[Budget] | None]:
    """(chunk index, the budgets this shard runs: None = all) of a key made by ``shard_keys``; any other key is
    refused as ``battery.chunk_index`` refuses it."""
    if cfg.shard_by == "chunk":
        return chunk_index(key, n_chunks, battery=battery), None
    chunk, _, norm = key.rpartition("-")
    if norm not in norms(cfg):
        raise FxbenchError(f"{battery}: unknown shard {key!r}; this evaluation set has "
                           f"{', '.join(shard_keys(cfg, n_chunks)[:4])}{' ...' if n_chunks > 1 else ''}.")
    return chunk_index(chunk, n_chunks, battery=battery), cfg.by_norm(norm)


def chunk_of(key: str, cfg: RobustnessConfig) -> str:
    return key if cfg.shard_by == "chunk" else key.rpartition("-")[0]


def merge_samples(frames: dict[str, pd.DataFrame], cfg: RobustnessConfig) -> pd.DataFrame:
    """The per-image rows of every shard, in shard-key order: one row per image. Shards of one chunk (one per
    norm) hold the same images and disjoint columns; they are joined on image_id."""
    by_chunk: dict[str, list[pd.DataFrame]] = {}
    for key in sorted(frames):
        by_chunk.setdefault(chunk_of(key, cfg), []).append(frames[key])
    rows = []
    for parts in by_chunk.values():
        merged = parts[0]
        for other in parts[1:]:
            if list(other["image_id"]) != list(merged["image_id"]):
                raise FxbenchError("robustness: shards of one chunk hold different images; delete the run's "
                                   "shards (OUT/.fxbench-shards) and run again.")
            merged = merged.merge(other, on="image_id", how="left", validate="one_to_one")
        rows.append(merged)
    return pd.concat(rows, ignore_index=True)
