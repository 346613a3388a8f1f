"""submissions/_template: documented, and invalid only because its checkpoint is a placeholder."""

from __future__ import annotations

import shutil

import yaml
from conftest import REPO, tiny_timm
from fxbench.models import ModelSpec
from submission_kit import save_weights, sha256, write_yaml

TEMPLATE = REPO / "submissions" / "_template"


def test_template_parses():
    spec = ModelSpec.from_yaml(TEMPLATE / "model.yaml")
    assert spec.model.timm == "resnet18" and spec.training.eps.text == "4/255"


def test_template_fails_only_on_the_placeholder_checkpoint(tmp_path, cli):
    shutil.copytree(TEMPLATE, tmp_path / "sub")
    r = cli("validate", tmp_path / "sub")
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert "checkpoint.path: file not found" in r.stderr
    assert "ok  schema" in r.stderr and "ok  model" in r.stderr


def test_template_with_real_weights_is_valid(tmp_path, cli):
    # Same file, a tiny architecture and real weights: every other field of the template is accepted.
    shutil.copytree(TEMPLATE, tmp_path / "sub")
    spec = yaml.safe_load((tmp_path / "sub" / "model.yaml").read_text())
    save_weights(tiny_timm(in_chans=3), tmp_path / "sub" / "weights.safetensors")
    spec["model"] = {"timm": "test_resnet", "kwargs": {"num_classes": 2, "in_chans": 3}}
    spec["checkpoint"]["sha256"] = sha256(tmp_path / "sub" / "weights.safetensors")
    write_yaml(tmp_path / "sub", spec)
    r = cli("validate", tmp_path / "sub")
    assert r.exit_code == 0, r
