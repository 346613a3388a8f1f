"""model.yaml v1 parsing: typed, frozen, and every problem named by file and field."""

from __future__ import annotations

import pydantic
import pytest
import yaml
from fxbench.errors import SubmissionError
from fxbench.models import ModelSpec
from fxbench.models.spec import Norm, parse_eps
from submission_kit import base_spec

GOOD_SHA = "ab" * 32


def parse(spec: dict) -> ModelSpec:
    return ModelSpec.from_text(yaml.safe_dump(spec), source="sub/model.yaml")


def good() -> dict:
    spec = base_spec(channels=3)
    spec["checkpoint"]["sha256"] = GOOD_SHA
    return spec


def refused(spec_or_text) -> str:
    with pytest.raises(SubmissionError) as e:
        if isinstance(spec_or_text, str):
            ModelSpec.from_text(spec_or_text, source="sub/model.yaml")
        else:
            parse(spec_or_text)
    assert str(e.value).startswith("sub/model.yaml: ")
    return str(e.value)


def test_valid_spec_is_typed_and_frozen():
    spec = parse(good())
    assert spec.id == "fxb-tiny"
    assert spec.authors == ("Test Author",)
    assert spec.input.mean == (0.5, 0.5, 0.5) and spec.input.channels == 3
    assert spec.output.fracture_index == 1  # default for two logits
    assert spec.training.eps.text == "4/255" and spec.training.eps.value == pytest.approx(4 / 255)
    assert spec.training.norm is Norm.linf
    assert spec.model.architecture == "test_resnet"
    with pytest.raises(pydantic.ValidationError):
        spec.id = "other"


def test_sha256_is_normalised_to_lower_case():
    spec = good()
    spec["checkpoint"]["sha256"] = GOOD_SHA.upper()
    assert parse(spec).checkpoint.sha256 == GOOD_SHA


@pytest.mark.parametrize(
    "raw, value",
    [("4/255", 4 / 255), ("8 / 255", 8 / 255), (0.5, 0.5), (1, 1.0), ("0.25", 0.25)],
)
def test_eps_forms(raw, value):
    eps = parse_eps(raw)
    assert eps.value == pytest.approx(value)


def test_single_logit_defaults_fracture_index_to_zero():
    spec = good()
    spec["output"] = {"num_classes": 1}
    assert parse(spec).output.fracture_index == 0
    spec["output"] = {"num_classes": 1, "fracture_index": 1}
    assert "fracture_index must be 0" in refused(spec)


def test_unknown_top_level_key_suggests_the_close_one():
    spec = good()
    spec["chekpoint"] = spec.pop("checkpoint")
    msg = refused(spec)
    assert "chekpoint: unknown key; did you mean 'checkpoint'?" in msg
    assert "checkpoint: required field is missing" in msg


def test_unknown_nested_key_suggests_the_close_one():
    spec = good()
    spec["input"]["sise"] = 3
    assert "input.sise: unknown key; did you mean 'size'?" in refused(spec)


def test_extra_mapping_and_optional_fields_are_accepted():
    spec = good()
    spec.update(
        description="d",
        url="https://example.org/paper",
        extra={"anything": [1, 2]},
        explain={"gradcam_layer": "layer4"},
    )
    parsed = parse(spec)
    assert parsed.extra == {"anything": [1, 2]} and parsed.explain.gradcam_layer == "layer4"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s["checkpoint"].update(sha256="abc"), "checkpoint.sha256: must be 64 hex digits"),
        (lambda s: s.update(id="Bad_Id"), "id: must be a slug of lowercase letters"),
        (lambda s: s.update(authors=[]), "authors: list at least one author"),
        (lambda s: s.update(authors=[" "]), "authors: author names must not be empty"),
        (lambda s: s.update(authors="A. Person"), "authors: "),
        (lambda s: s.pop("license"), "license: required field is missing"),
        (lambda s: s["input"].update(size="224"), "input.size: Input should be a valid integer (got '224')"),
        (lambda s: s["input"].update(channels=2), "input.channels: "),
        (lambda s: s["input"].update(mean=[0.5]), "input: mean needs one value per channel (3), got 1"),
        (lambda s: s["input"].update(std=[0.2, 0.0, 0.2]), "input: std values must be > 0"),
        (lambda s: s["output"].update(num_classes=3), "output.num_classes: "),
        (lambda s: s["model"].update(entrypoint="model.py:build"), "model: give exactly one of 'timm'"),
        (lambda s: s["model"].update(timm=None, entrypoint="model.py"), "model.entrypoint: must look like"),
        (lambda s: s["checkpoint"].update(url="https://x/w.safetensors"), "checkpoint: give exactly one of"),
        (lambda s: s["checkpoint"].update(path="/etc/passwd"), "checkpoint.path: must be a path relative"),
        (lambda s: s["checkpoint"].update(path=None, url="ftp://x/w"), "checkpoint.url: must be an http"),
        (lambda s: s["training"].update(eps="four"), "training.eps: must be a number or a fraction"),
        (lambda s: s["training"].update(norm="l3"), "training.norm: must be one of linf, l2"),
        (
            lambda s: s["training"].update(adversarial=False),
            "training: eps/norm describe adversarial training",
        ),
        (lambda s: s["training"].update(adversarial="maybe"), "training.adversarial: "),
    ],
)
def test_bad_fields_are_named(edit, expected):
    spec = good()
    edit(spec)
    assert expected in refused(spec)


def test_malformed_yaml_gives_the_line():
    msg = refused("id: fxb-x\nname: [unclosed\nlicense: MIT\n")
    assert "not valid YAML: line" in msg


def test_duplicate_keys_are_refused():
    assert "duplicate key 'id'" in refused("id: a\nid: b\n")


def test_non_mapping_is_refused():
    assert "must be a YAML mapping" in refused("- just\n- a list\n")


def test_from_yaml_names_the_file(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("id: [\n")
    with pytest.raises(SubmissionError, match=f"^{path}: not valid YAML: line 2"):
        ModelSpec.from_yaml(path)
    with pytest.raises(SubmissionError, match="file not found"):
        ModelSpec.from_yaml(tmp_path / "missing.yaml")
