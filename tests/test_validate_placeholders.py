"""`fxbench validate` warns about template placeholders left in a submission; `--strict` refuses them
(issue 13: a reviewer would send these back)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import REPO, tiny_timm
from fxbench.models import placeholders as P
from fxbench.models.spec import ModelSpec
from submission_kit import save_weights, sha256, write_yaml

TEMPLATE = REPO / "submissions" / "_template"


def template_copy(root, folder: str = "fxb-my-model"):
    """The template copied as a newcomer would, with real (tiny) weights: valid, placeholders unchanged."""
    sub = root / folder
    shutil.copytree(TEMPLATE, sub)
    spec = yaml.safe_load((sub / "model.yaml").read_text())
    save_weights(tiny_timm(in_chans=3), sub / "weights.safetensors")
    spec["model"] = {"timm": "test_resnet", "kwargs": {"num_classes": 2, "in_chans": 3}}
    spec["checkpoint"]["sha256"] = sha256(sub / "weights.safetensors")
    write_yaml(sub, spec)
    return sub, spec


def test_the_checks_know_the_templates_values():
    spec = yaml.safe_load((TEMPLATE / "model.yaml").read_text())
    assert spec["id"] == P.TEMPLATE_ID and spec["name"] == P.TEMPLATE_NAME
    assert set(spec["authors"]) == P.TEMPLATE_AUTHORS and P.EXAMPLE_HOSTS.match(spec["url"])
    assert len(P.card_placeholders((TEMPLATE / "README.md").read_text())) >= 10
    parsed = ModelSpec.from_yaml(TEMPLATE / "model.yaml")  # issue 24: the leftovers the leaderboard shows
    assert parsed.description == P.TEMPLATE_DESCRIPTION and parsed.training.to_json() == P.TEMPLATE_TRAINING
    assert all(parsed.extra[k] == v for k, v in P.TEMPLATE_EXTRA.items())


def test_unchanged_template_warns_about_every_placeholder_and_strict_refuses(tmp_path, cli):
    sub, _ = template_copy(tmp_path)
    r = cli("validate", sub)
    assert r.exit_code == 0, r  # valid as a model: warnings, not an error
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
    text = "\n".join(warnings)
    assert "id is still the template's 'fxb-my-model'" in text
    assert "name is still the template's" in text
    assert "'First Author', 'Second Author'" in text
    assert "url https://example.org/my-paper is the template's example address" in text
    assert "README.md: 17 template placeholder(s) left, e.g. <model name>" in text
    assert "description is still the template's" in text and "training is still the template's example" in text
    assert "extra.hardware is still the template's '1x A100, 2 h'" in text
    assert "8 warning(s) to fix before submitting" in r.stdout
    strict = cli("validate", sub, "--strict")
    assert strict.exit_code == 2 and "8 template placeholder(s) left" in strict.stderr, strict
    assert "Traceback" not in strict.stderr


def test_id_must_match_its_folder(tmp_path, cli):
    sub, spec = template_copy(tmp_path, folder="my-folder")
    spec.update(id="fxb-tiny-test")
    write_yaml(sub, spec)
    r = cli("validate", sub)
    assert "id 'fxb-tiny-test' does not match its folder 'my-folder'" in r.stderr


def test_a_filled_in_submission_has_no_warning(tmp_path, cli):
    sub, spec = template_copy(tmp_path, folder="fxb-tiny-test")
    spec.update(id="fxb-tiny-test", name="Tiny test ResNet", authors=["A. Researcher"],
                url="https://github.com/someone/tiny", description="A tiny ResNet for the tests.",
                training={"adversarial": True, "method": "PGD-AT, 10 steps", "eps": "4/255", "norm": "linf"},
                extra={"seed": 0, "hardware": "a laptop"})
    write_yaml(sub, spec)
    (sub / "README.md").write_text("# Model card: Tiny test ResNet (`fxb-tiny-test`)\n\nTrained on "
                                   "`submissions/<id>/` data. Line<br>break, <https://example.net/x>, "
                                   'sha256("salt/<image_id>").\n\n```\n<not a placeholder in code>\n```\n')
    r = cli("validate", sub, "--strict")
    assert r.exit_code == 0, r
    assert "warning" not in r.stderr


@pytest.mark.parametrize("text, found", [
    ("Hardware: <GPU/CPU model and count>", ["<GPU/CPU model and count>"]),
    ("# Model card: <model name> (`<id>`)", ["<model name>"]),
    ("a <br> b <sub>x</sub> <img src=\"a.png\"> <https://x.org> <!-- c -->", []),
    ("Seed(s): <...>", ["<...>"]),
    ("path/<image_id> and `<in code>`", []),
])
def test_card_placeholders(text, found):
    assert P.card_placeholders(text) == found


def test_the_shipped_submissions_are_clean(cli):
    for sub in sorted(p for p in (REPO / "submissions").iterdir() if p.is_dir() and not p.name.startswith("_")):
        from fxbench.models.submission import read_spec

        spec_file = read_spec(sub)
        assert P.template_leftovers(spec_file.yaml_path, spec_file.spec) == [], sub.name


def test_large_weights_get_the_advice(tmp_path, monkeypatch):
    from fxbench.models.submission import read_spec

    sub, _ = template_copy(tmp_path)
    monkeypatch.setattr(P, "LARGE_WEIGHTS_MB", 0.1)
    spec_file = read_spec(sub)
    msgs = P.template_leftovers(spec_file.yaml_path, spec_file.spec)
    assert any("float16" in m and "checkpoint.url" in m for m in msgs)
