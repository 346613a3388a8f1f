"""A checkpoint is read as large as it is, not into a buffer the size of the limit: `fxbench validate` of a
200 kB submission used to die with MemoryError under `ulimit -v 6000000` (f.read(4 GiB + 1))."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from fxbench.errors import SubmissionError
from fxbench.models.checkpoint import MAX_CHECKPOINT_BYTES_ENV, read_checkpoint
from fxbench.models.spec import Checkpoint

REPO = Path(__file__).resolve().parents[1]
SUBMISSION = REPO / "submissions" / "fxb-reference-no-fracture"
VMEM_LIMIT = 6_000_000 * 1024  # bytes, as `ulimit -v 6000000`


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (VMEM_LIMIT, VMEM_LIMIT))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced as an address-space cap on Linux")
def test_validate_runs_under_a_6_gb_address_space_limit():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop(MAX_CHECKPOINT_BYTES_ENV, None)  # the default 4 GiB limit is what used to be allocated
    p = subprocess.run(
        [sys.executable, "-m", "fxbench", "validate", str(SUBMISSION)],
        capture_output=True, text=True, timeout=600, preexec_fn=_limit_address_space, env=env, cwd=REPO,
    )
    assert "MemoryError" not in p.stderr, p.stderr[-2000:]
    assert p.returncode == 0, p.stderr[-2000:]
    assert "valid: fxb-reference-no-fracture" in p.stdout


def _checkpoint(data: bytes) -> Checkpoint:
    return Checkpoint(path="w.bin", sha256=hashlib.sha256(data).hexdigest())


def test_reads_exactly_the_file(tmp_path):
    data = b"\x01\x02" * 1000
    (tmp_path / "w.bin").write_bytes(data)
    assert read_checkpoint(_checkpoint(data), folder=tmp_path).data == data


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_CHECKPOINT_BYTES_ENV, "1000")
    with open(tmp_path / "w.bin", "wb") as f:
        f.truncate(1024**3)  # sparse: 1 GiB declared, no disk used
    with pytest.raises(SubmissionError, match=f"over the 1000 byte limit.*{MAX_CHECKPOINT_BYTES_ENV}"):
        read_checkpoint(Checkpoint(path="w.bin", sha256="0" * 64), folder=tmp_path)
