"""Deterministic safetensors bytes: the library keeps metadata in a hash map whose order changes from process
to process, so a file written twice from the same tensors had two sha256s (the committed reference row's
hash check failed on CI for that reason)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from fxbench.io import safetensors_bytes, save_safetensors
from safetensors import safe_open

META = {"format": "pt", "fxbench_id": "x", "split": "train", "image_id": '["a", "b"]', "dataset": "d"}

_CHILD = """
import hashlib, torch
from fxbench.io import safetensors_bytes
t = {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3), "b": torch.ones(2)}
m = {"format": "pt", "fxbench_id": "x", "split": "train", "image_id": '["a", "b"]', "dataset": "d"}
print(hashlib.sha256(safetensors_bytes(t, metadata=m)).hexdigest())
"""


def test_same_bytes_in_every_process():
    # Five metadata keys: the library's own order differs between two processes with probability 119/120.
    digests = {subprocess.run([sys.executable, "-c", _CHILD], check=True, capture_output=True, text=True).stdout
               for _ in range(3)}
    assert len(digests) == 1, digests


def test_round_trip_torch_and_numpy(tmp_path):
    t = {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3), "b": torch.ones(2)}
    save_safetensors(t, tmp_path / "t.safetensors", metadata=META)
    with safe_open(str(tmp_path / "t.safetensors"), framework="pt") as f:
        assert f.metadata() == META
        assert torch.equal(f.get_tensor("w"), t["w"]) and torch.equal(f.get_tensor("b"), t["b"])
    a = {"x": np.arange(12, dtype=np.uint8).reshape(3, 4), "y": np.array([0, 1, 1])}
    (tmp_path / "a.safetensors").write_bytes(safetensors_bytes(a, metadata=META))
    with safe_open(str(tmp_path / "a.safetensors"), framework="np") as f:
        assert f.metadata() == META
        assert (f.get_tensor("x") == a["x"]).all()
