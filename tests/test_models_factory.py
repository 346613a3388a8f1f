"""create_model (timm / trusted entrypoint, never pretrained downloads) and the Grad-CAM layer choice."""

from __future__ import annotations

import textwrap

import pytest
import timm
import torch
import yaml
from fxbench.errors import SubmissionError
from fxbench.models import ModelSpec, create_model, find_gradcam_layer
from submission_kit import base_spec
from torch import nn


def spec_of(edit=None, *, channels: int = 1) -> ModelSpec:
    raw = base_spec(channels=channels)
    raw["checkpoint"]["sha256"] = "ab" * 32
    if edit:
        edit(raw)
    return ModelSpec.from_text(yaml.safe_dump(raw))


def entrypoint_spec(entry: str, kwargs: dict | None = None) -> ModelSpec:
    return spec_of(lambda s: s.update(model={"entrypoint": entry, "kwargs": kwargs or {}}))


def test_timm_model_is_built_without_pretrained_weights(tmp_path, monkeypatch):
    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    net = create_model(spec_of(), folder=tmp_path)
    assert calls == [{"pretrained": False, "num_classes": 2, "in_chans": 1}]
    assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 2)


def test_unknown_timm_name_suggests_close_matches(tmp_path):
    with pytest.raises(
        SubmissionError,
        match=r"model.timm: unknown timm architecture 'test_resnat'; did you mean 'test_resnet'",
    ):
        create_model(spec_of(lambda s: s["model"].update(timm="test_resnat")), folder=tmp_path)


@pytest.mark.parametrize("key", ["pretrained", "checkpoint_path", "pretrained_cfg_overlay"])
def test_kwargs_that_fetch_weights_are_refused(tmp_path, key):
    with pytest.raises(SubmissionError, match=f"model.kwargs: {key} not allowed"):
        create_model(spec_of(lambda s: s["model"]["kwargs"].update({key: True})), folder=tmp_path)


def test_bad_timm_kwargs_are_a_submission_error(tmp_path):
    with pytest.raises(SubmissionError, match="model.kwargs: timm.create_model"):
        create_model(spec_of(lambda s: s["model"]["kwargs"].update(no_such_argument=3)), folder=tmp_path)


ENTRY = """
import pathlib
pathlib.Path(__file__).with_name("imported.txt").write_text("ran")
from helper import width

import torch.nn as nn

def build(num_classes=2, half=False):
    net = nn.Sequential(nn.Conv2d(1, width(), 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(width(), num_classes))
    return net.half() if half else net

def broken():
    raise RuntimeError("no GPU, sorry")

def not_a_module():
    return 42
"""


@pytest.fixture
def entry_folder(tmp_path):
    (tmp_path / "model.py").write_text(textwrap.dedent(ENTRY))
    (tmp_path / "helper.py").write_text("def width():\n    return 4\n")
    return tmp_path


def test_entrypoint_needs_trust_code_and_does_not_run_without(entry_folder):
    with pytest.raises(SubmissionError, match="runs Python code from the submitter.*--trust-code"):
        create_model(entrypoint_spec("model.py:build"), folder=entry_folder)
    assert not (entry_folder / "imported.txt").exists()


def test_entrypoint_with_trust_code(entry_folder):
    net = create_model(
        entrypoint_spec("model.py:build", {"num_classes": 1, "half": True}),
        folder=entry_folder,
        trust_code=True,
    )
    assert (entry_folder / "imported.txt").read_text() == "ran"
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 1)
    assert all(p.dtype == torch.float32 for p in net.parameters())  # evaluation runs in fp32


@pytest.mark.parametrize(
    "entry, message",
    [
        ("model.py:broken", r"model.entrypoint: model.py:broken failed: RuntimeError: no GPU, sorry"),
        ("model.py:missing", r"model.py has no function 'missing'"),
        ("model.py:not_a_module", r"returned a int, not a torch.nn.Module"),
        ("../model.py:build", r"leads outside the submission folder"),
        ("nothere.py:build", r"model.entrypoint: file not found"),
    ],
)
def test_entrypoint_failures(entry_folder, entry, message):
    folder = entry_folder / "sub" if entry.startswith("..") else entry_folder
    folder.mkdir(exist_ok=True)
    with pytest.raises(SubmissionError, match=message):
        create_model(entrypoint_spec(entry), folder=folder, trust_code=True)


# --- Grad-CAM layer -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_resnet", "resnet10t"])
def test_gradcam_layer_for_timm_resnets_is_the_last_stage(name):
    net = timm.create_model(name, pretrained=False, num_classes=2, in_chans=1)
    assert find_gradcam_layer(net, spec_of()) is net.layer4


def test_gradcam_layer_declared_in_the_spec():
    net = timm.create_model("test_resnet", pretrained=False, num_classes=2, in_chans=1)
    spec = spec_of(lambda s: s.update(explain={"gradcam_layer": "layer3.0.conv2"}))
    assert find_gradcam_layer(net, spec) is net.layer3[0].conv2


def test_gradcam_layer_unknown_path_suggests():
    net = timm.create_model("test_resnet", pretrained=False, num_classes=2, in_chans=1)
    spec = spec_of(lambda s: s.update(explain={"gradcam_layer": "layer44"}))
    with pytest.raises(
        SubmissionError,
        match=r"explain.gradcam_layer: the model has no module 'layer44'; did you mean 'layer4'",
    ):
        find_gradcam_layer(net, spec)


def test_gradcam_layer_without_feature_info_is_the_last_spatial_module():
    features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    net = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    # The pooled 1x1 map is not spatial; `features` finishes after its last ReLU, so it is chosen.
    assert find_gradcam_layer(net, spec_of()) is features


def test_gradcam_layer_is_none_for_token_models():
    net = timm.create_model("test_vit", pretrained=False, num_classes=2, in_chans=1, img_size=64)
    assert find_gradcam_layer(net, spec_of()) is None


def test_entrypoint_sibling_modules_do_not_leak_between_submissions(tmp_path):
    for width in (3, 5):
        folder = tmp_path / f"w{width}"
        folder.mkdir()
        (folder / "model.py").write_text(textwrap.dedent(ENTRY))
        (folder / "helper.py").write_text(f"def width():\n    return {width}\n")
        net = create_model(entrypoint_spec("model.py:build"), folder=folder, trust_code=True)
        assert net[0].out_channels == width
