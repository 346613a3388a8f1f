"""load_submission, the Submission record, check_model_outputs and resolve_device."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from fxbench.errors import DeviceError, SubmissionError
from fxbench.models import (
    CanonicalModel,
    check_model_outputs,
    load_submission,
    resolve_device,
    strict_fp32,
    wrap,
)
from fxbench.models.validate import canonical_batch
from fxbench.paths import SPECS_DIR
from submission_kit import make_submission, sha256
from torch import nn


def test_load_submission_from_folder_or_yaml(tmp_path):
    yaml_path = make_submission(tmp_path / "sub", channels=3)
    a = load_submission(tmp_path / "sub")
    b = load_submission(yaml_path)
    assert a.yaml_path == b.yaml_path == yaml_path and a.folder == tmp_path / "sub"
    assert isinstance(a.model, CanonicalModel) and a.model.channels == 3 and a.model.input_size == 64
    assert a.model.gradcam_layer is a.model.net.layer4
    assert a.n_parameters == sum(p.numel() for p in a.model.net.parameters()) > 300_000
    assert a.device == torch.device("cpu")
    assert not any(p.requires_grad for p in a.model.parameters()) and not a.model.training
    assert a.yaml_sha256 == sha256(yaml_path)


def test_submission_json_fits_the_result_schema(tmp_path):
    sub = load_submission(make_submission(tmp_path / "sub"))
    schema = json.loads((SPECS_DIR / "result.schema.json").read_text())["properties"]["submission"]
    block = sub.to_json()
    jsonschema.validate(block, schema)
    assert block["training"] == {
        "adversarial": True,
        "method": "PGD-AT",
        "eps": "4/255",
        "eps_value": pytest.approx(4 / 255),
        "norm": "linf",
    }
    assert block["architecture"] == "test_resnet"


def test_load_errors_name_the_yaml(tmp_path):
    yaml_path = make_submission(tmp_path / "sub")
    (tmp_path / "sub" / "weights.safetensors").write_bytes(b"changed")
    with pytest.raises(SubmissionError, match=f"^{yaml_path}: checkpoint.sha256: "):
        load_submission(yaml_path)


def test_missing_model_yaml(tmp_path):
    with pytest.raises(SubmissionError, match="no model.yaml in this folder"):
        load_submission(tmp_path)
    with pytest.raises(SubmissionError, match="no such file or folder"):
        load_submission(tmp_path / "nope.yaml")


def test_single_logit_submission(tmp_path):
    sub = load_submission(make_submission(tmp_path / "sub", num_classes=1))
    out = sub.model(torch.rand(2, 1, 224, 224))
    assert out.shape == (2, 2) and torch.equal(out[:, 0], torch.zeros(2))


class Noisy(nn.Module):
    def forward(self, x):
        z = x.mean(dim=(1, 2, 3))
        return torch.stack([z, z + torch.rand_like(z)], dim=1)


class BatchStats(nn.Module):
    def forward(self, x):
        z = x.mean(dim=(1, 2, 3))
        z = (z - z.mean()) / (z.std(correction=0) + 1e-6)  # depends on the other images of the batch
        return torch.stack([-z, z], dim=1)


def test_check_model_outputs_accepts_good_models(tiny_model):
    check_model_outputs(tiny_model, device="cpu")
    check_model_outputs(wrap(nn.Sequential(nn.Flatten(), nn.Linear(224 * 224, 2))), device="cpu")


@pytest.mark.parametrize(
    "net, message",
    [
        (Noisy(), "model check 'deterministic' failed: not deterministic in eval mode: two passes"),
        (BatchStats(), "model check 'batch independent' failed: .*depend on the rest of its batch"),
    ],
)
def test_check_model_outputs_refuses(net, message):
    with pytest.raises(SubmissionError, match=message):
        check_model_outputs(wrap(net), device="cpu")


def test_check_model_outputs_nan():
    net = nn.Sequential(nn.Flatten(), nn.Linear(224 * 224, 2))
    with torch.no_grad():
        net[1].bias[1] = float("nan")
    with pytest.raises(SubmissionError, match="'finite' failed: 4 of 8 output logits are NaN or infinite"):
        check_model_outputs(wrap(net), device="cpu")


# --- devices ------------------------------------------------------------------------------------------------


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", "cuda:-1", ""])
def test_unknown_device(name):
    with pytest.raises(DeviceError, match="unknown device; use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        DeviceError, match=r"--device cuda: no CUDA device is available here.*use --device cpu or auto"
    ):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"only 2 CUDA device\(s\) here"):
        resolve_device("cuda:2")


def test_strict_fp32_turns_tf32_off_and_restores():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with strict_fp32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_canonical_batch_first_image_is_darker_than_the_rest():
    x = canonical_batch()
    assert x.shape == (4, 1, 224, 224) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, canonical_batch())
    assert x[0].max() <= 0.25 + 1e-6 and x[0].mean() < x[1:].mean() - 0.2
