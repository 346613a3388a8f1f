"""Persisted shard outputs: one folder per run configuration, one set of files per (battery, shard).

A shard's JSON file is written last and marks it complete, so a shard killed half-way is simply run again.
The layout is plain files, so another process or machine can fill shards in for a distributed executor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..battery import Flag, ShardOutput
from ..io import atomic_write, atomic_write_json


class ShardCorrupt(Exception):
    """A finished shard's files cannot be read back (truncated, corrupt, edited): the runner recomputes it."""


class ShardStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _base(self, battery: str, key: str) -> Path:
        return self.root / battery / key

    def done(self, battery: str, key: str) -> bool:
        return self._base(battery, key).with_suffix(".json").is_file()

    def save(self, battery: str, key: str, out: ShardOutput) -> None:
        base = self._base(battery, key)
        atomic_write(base.with_suffix(".parquet"), lambda tmp: out.samples.to_parquet(tmp, index=False))
        if out.tensors:
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in out.tensors.items()}
            atomic_write(base.with_suffix(".safetensors"), lambda tmp: save_file(tensors, tmp))
        meta = {
            "flags": [f.to_json() for f in out.flags],
            "info": out.info,
            "tensors": bool(out.tensors),
        }
        atomic_write_json(base.with_suffix(".json"), meta)

    def load(self, battery: str, key: str) -> ShardOutput:
        base = self._base(battery, key)
        try:
            meta = json.loads(base.with_suffix(".json").read_text())
            tensors = load_file(str(base.with_suffix(".safetensors"))) if meta["tensors"] else {}
            return ShardOutput(
                samples=pd.read_parquet(base.with_suffix(".parquet")),
                tensors=tensors,
                flags=[Flag(**f) for f in meta["flags"]],
                info=meta["info"],
            )
        except Exception as e:  # noqa: BLE001 - json, arrow and safetensors each raise their own types
            raise ShardCorrupt(f"shard {battery}/{key} cannot be read back ({type(e).__name__}: {e})") from None

    def discard(self, battery: str, key: str) -> None:
        """Remove a shard's files, the JSON marker first (so a crash half-way leaves it 'not done')."""
        base = self._base(battery, key)
        for suffix in (".json", ".parquet", ".safetensors"):
            base.with_suffix(suffix).unlink(missing_ok=True)

    def load_tensors(self, battery: str) -> dict[str, torch.Tensor]:
        merged: dict[str, torch.Tensor] = {}
        folder = self.root / battery
        if not folder.is_dir():
            return merged
        for path in sorted(folder.glob("*.safetensors")):
            if not path.with_suffix(".json").is_file():
                continue
            try:
                part = load_file(str(path))
            except Exception as e:  # noqa: BLE001 - read back when the battery ran; changed since
                raise ShardCorrupt(f"{path} cannot be read back ({type(e).__name__}: {e})") from None
            clash = merged.keys() & part.keys()
            if clash:
                raise RuntimeError(f"tensor keys saved by two shards of {battery}: {sorted(clash)[:3]}")
            merged.update(part)
        return merged
