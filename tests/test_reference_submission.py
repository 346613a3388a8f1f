"""The reference row `fxb-reference-no-fracture`: a plain timm submission that answers "no fracture" with
the same logits for every input, written deterministically by ops/gpu/gpu_reference.py."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "submissions" / "fxb-reference-no-fracture"


def _builder():
    spec = importlib.util.spec_from_file_location("gpu_reference", REPO / "ops" / "gpu" / "gpu_reference.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_reference"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_committed_reference_is_what_the_script_writes(tmp_path):
    folder = _builder().build(tmp_path)
    for name in ("model.yaml", "weights.safetensors", "README.md"):
        assert (folder / name).read_bytes() == (FOLDER / name).read_bytes(), name


def test_validates_without_trust_code_and_answers_no_fracture_for_any_input():
    from fxbench.models import load_submission, validate_submission

    report = validate_submission(FOLDER)
    assert report.ok, report.error
    model = load_submission(FOLDER / "model.yaml").model  # a timm model: no --trust-code
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(6, 1, 224, 224, generator=g), torch.zeros(1, 1, 224, 224), torch.ones(1, 1, 224, 224)])
    x.requires_grad_(True)
    logits = model(x)
    assert torch.equal(logits.detach(), torch.tensor([[5.0, -5.0]]).expand(8, 2))  # exactly constant
    (grad,) = torch.autograd.grad(logits[:, 1].sum(), x)
    assert torch.count_nonzero(grad) == 0  # no perturbation can change its answer
    p = torch.softmax(logits.detach(), dim=1)[:, 1]
    assert bool((p < 0.5).all())  # "no fracture" at the clean battery's threshold


def test_model_yaml_hash_names_the_weights():
    import yaml

    spec = yaml.safe_load((FOLDER / "model.yaml").read_text())
    assert spec["model"] == {"timm": "lcnet_035", "kwargs": {"num_classes": 2, "in_chans": 1}}
    sha = hashlib.sha256((FOLDER / "weights.safetensors").read_bytes()).hexdigest()
    assert spec["checkpoint"]["sha256"] == sha
    assert (FOLDER / "weights.safetensors").stat().st_size < 1_000_000
