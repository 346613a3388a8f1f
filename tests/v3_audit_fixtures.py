"""A genuine v3 run of a linear model (known answers, tests/test_v3_audit.py) shared by the audit tests: computed
once per test process (the quick preset on the embedded subset takes about a minute on an idle 2-core CPU)."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import torch
from conftest import LinearPixels

N_PIX = 224 * 224
A = 1e-3  # z = A * (sum of the pixels - N_PIX * threshold): "mean brightness >= threshold"
SUBMISSION = "fxb-linear-audit"
INPUT = {"size": 224, "channels": 1, "mean": [0.0], "std": [1.0]}


@functools.cache
def embedded():
    from fxbench.data import load_arrays

    ev = load_arrays(None, split="eval")
    return ev, float(ev.x.reshape(len(ev), -1).double().mean(dim=1).median())


def linear(threshold: float) -> LinearPixels:
    return LinearPixels(torch.full((N_PIX,), A), b=-A * N_PIX * threshold)


def canonical(threshold: float):
    from fxbench.models import wrap

    return wrap(linear(threshold), channels=1, mean=(0.0,), std=(1.0,))


@functools.cache
def genuine_run() -> Path:
    """OUT/<id>/ of `fxbench.evaluate` (result.json, samples.parquet, gallery/), in a folder kept for the session."""
    import fxbench

    _, t = embedded()
    out = Path(tempfile.mkdtemp(prefix="fxbench-v3-audit-"))
    fxbench.evaluate(linear(t), input=INPUT, preset="quick", device="cpu", id=SUBMISSION,
                     name="Linear brightness model", training={"adversarial": False}, out=out)
    return out / SUBMISSION


def copy_run(dst: Path) -> Path:
    shutil.copytree(genuine_run(), dst)
    return dst
