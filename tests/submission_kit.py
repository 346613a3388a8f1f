"""Builds submission folders in tmp_path for the model-loading and validate tests."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import torch
import yaml
from conftest import tiny_timm
from safetensors.torch import save_file


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def base_spec(*, channels: int = 1, num_classes: int = 2) -> dict[str, Any]:
    return {
        "id": "fxb-tiny",
        "name": "Tiny test ResNet",
        "authors": ["Test Author"],
        "license": "MIT",
        "model": {"timm": "test_resnet", "kwargs": {"num_classes": num_classes, "in_chans": channels}},
        "checkpoint": {"path": "weights.safetensors", "sha256": "0" * 64},
        "input": {"size": 64, "channels": channels, "mean": [0.5] * channels, "std": [0.25] * channels},
        "output": {"num_classes": num_classes},
        "training": {"adversarial": True, "method": "PGD-AT", "eps": "4/255", "norm": "linf"},
    }


def save_weights(net: torch.nn.Module, path: Path, *, dtype: torch.dtype | None = None) -> None:
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


def make_submission(
    folder: Path,
    *,
    channels: int = 1,
    num_classes: int = 2,
    weights: str = "weights.safetensors",
    dtype: torch.dtype | None = None,
    net: torch.nn.Module | None = None,
    edit=None,
) -> Path:
    """A valid submission of timm's test_resnet; ``edit(spec_dict)`` may change the spec before writing.
    Returns the model.yaml path. The checkpoint hash is filled in from the written weights."""
    folder.mkdir(parents=True, exist_ok=True)
    net = net if net is not None else tiny_timm(num_classes=num_classes, in_chans=channels)
    save_weights(net, folder / weights, dtype=dtype)
    spec = base_spec(channels=channels, num_classes=num_classes)
    spec["checkpoint"] = {"path": weights, "sha256": sha256(folder / weights)}
    if edit is not None:
        spec = copy.deepcopy(spec)
        edit(spec)
    return write_yaml(folder, spec)


def write_yaml(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / "model.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def set_checkpoint(folder: Path, filename: str) -> Path:
    """Point model.yaml at ``filename`` with its correct hash."""
    spec = yaml.safe_load((folder / "model.yaml").read_text())
    spec["checkpoint"] = {"path": filename, "sha256": sha256(folder / filename)}
    return write_yaml(folder, spec)
