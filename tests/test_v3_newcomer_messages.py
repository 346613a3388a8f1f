"""Messages a newcomer meets in the first hour (issue 24): YAML errors at the line that is wrong, a mistyped
model argument with a suggestion, a 3-channel network declared as 1 channel said in words (model.yaml and the
Python API), `run` naming the model.yaml as `validate` does, and `data prepare` saying which exclusions are
expected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_timm
from fxbench.errors import SubmissionError
from fxbench.models import placeholders as P
from fxbench.models.factory import create_model, input_channels, unexpected_kwarg_hint
from fxbench.models.spec import ModelSpec
from submission_kit import make_submission

BASELINE = (REPO / "submissions" / "fxb-resnet10t-erm" / "model.yaml").read_text().splitlines()
# lines 10-14 of that file:  model: / timm: resnet10t / kwargs: / num_classes: 2 / in_chans: 1


def yaml_error(line: int, text: str) -> str:
    lines = list(BASELINE)
    assert lines[12].strip() == "num_classes: 2" and lines[19].strip() == "channels: 1"
    lines[line - 1] = text
    with pytest.raises(SubmissionError) as e:
        ModelSpec.from_text("\n".join(lines) + "\n")
    return str(e.value)


@pytest.mark.parametrize("line, text", [
    (13, "    num_classes 2"),     # a missing ':' on line 13: PyYAML stops at line 14
    (13, "      num_classes: 2"),  # line 13 indented too far: PyYAML stops at line 14
    (13, "    num_classes: [2"),   # an unclosed '[' on line 13
    (20, "channels: 1"),           # line 20 not indented: PyYAML stops at line 21
])
def test_a_yaml_error_names_the_line_that_was_edited(line, text):
    msg = yaml_error(line, text)
    head = msg.split("(PyYAML")[0]
    assert re.search(rf"\blines? {line}\b", head), msg  # the line a person edited comes first
    assert repr(text) in msg  # and is quoted, so it can be found without counting lines


def test_a_colon_inside_a_value_is_named_on_its_own_line():
    msg = yaml_error(3, "name: ResNet: the best")
    assert msg.startswith("model.yaml: not valid YAML: line 3, column 13") and "must be quoted" in msg


def spec_with(**model) -> ModelSpec:
    text = "\n".join(BASELINE) + "\n"
    spec = ModelSpec.from_text(text)
    return spec.model_copy(update={"model": spec.model.model_copy(update=model)})


def test_a_mistyped_timm_argument_gets_a_suggestion():
    with pytest.raises(SubmissionError) as e:
        create_model(spec_with(kwargs={"num_clases": 2, "in_chans": 1}), folder=REPO)
    assert "unexpected keyword argument 'num_clases'; did you mean 'num_classes'?" in str(e.value)
    assert str(e.value).startswith("model.kwargs: ")


def test_the_hint_reads_the_signature_and_stays_quiet_otherwise():
    def build(num_classes=2, in_chans=1, width=16):
        return None

    try:
        build(widht=8)
    except TypeError as e:
        assert unexpected_kwarg_hint(e, ["num_classes", "in_chans", "width"]) == "; did you mean 'width'?"
        assert unexpected_kwarg_hint(e, ["alpha"]).startswith(" (it accepts: alpha")
    assert unexpected_kwarg_hint(ValueError("bad"), ["x"]) == ""


def test_an_entrypoint_argument_typo_gets_a_suggestion(tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "model.py").write_text("import torch\n\ndef build(num_classes=2, width=8):\n"
                                     "    return torch.nn.Linear(4, num_classes)\n")
    spec = spec_with(timm=None, entrypoint="model.py:build", kwargs={"num_clases": 2})
    with pytest.raises(SubmissionError, match="did you mean 'num_classes'"):
        create_model(spec, folder=folder, trust_code=True)


class OneToThree(torch.nn.Module):
    """A 1-channel model whose first convolution takes 3 channels: it repeats the image first."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.conv(x.repeat(1, 3, 1, 1)).mean((2, 3)))


def test_channels_come_from_what_the_first_convolution_receives():
    assert input_channels(tiny_timm(in_chans=3), size=64) == 3
    assert input_channels(tiny_timm(in_chans=1), size=64) == 1
    assert input_channels(OneToThree(), size=32) == 1  # what it receives, not its in_channels
    assert input_channels(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2)), size=8) is None


def test_a_three_channel_network_declared_as_one_channel_is_refused_in_words(tmp_path, cli):
    def one_channel(spec):
        spec["input"] = {"size": 64, "channels": 1, "mean": [0.5], "std": [0.25]}

    path = make_submission(tmp_path / "sub", channels=3, edit=one_channel)
    expected = ("input.channels is 1, but the network's first convolution 'conv1.0' takes 3 channels: declare "
                "channels: 3 with 3 mean and std value(s)")
    r = cli("validate", path)
    assert r.exit_code == 2 and f"error: {path}: {expected}" in r.stderr and "RuntimeError" not in r.stderr, r
    r = cli("run", path, "--out", tmp_path / "runs", "--limit", "4", "--battery", "clean", "--device", "cpu")
    assert r.exit_code == 2 and f"error: {path}: {expected}" in r.stderr, r
    assert not (tmp_path / "runs" / "fxb-tiny").exists()


def test_the_python_api_says_how_to_declare_channels_or_infers_them():
    import fxbench

    net = tiny_timm(in_chans=3)
    with pytest.raises(SubmissionError) as e:
        fxbench.evaluate(net, input={"size": 64, "channels": 1, "mean": [0.5], "std": [0.25]}, device="cpu",
                         batteries=["clean"], limit=4)
    msg = str(e.value)
    assert msg.startswith("fxbench.evaluate: input.channels is 1") and "channels: 3" in msg
    assert "\n" not in msg and "Given groups" not in msg  # one paragraph, not PyTorch's shape error
    # left out, the channel count is taken from the network; mean/std must then have as many values
    res = fxbench.evaluate(net, input={"size": 64, "mean": [0.5] * 3, "std": [0.25] * 3}, device="cpu",
                           batteries=["clean"], limit=4)
    assert res.result["metrics"]["clean/accuracy"]["n"] == 4


def test_run_names_the_model_yaml_when_the_model_check_fails(tmp_path, cli):
    def three_logits(spec):
        spec["model"]["kwargs"]["num_classes"] = 3

    path = make_submission(tmp_path / "sub", net=tiny_timm(num_classes=3, in_chans=1), edit=three_logits)
    v = cli("validate", path)
    r = cli("run", path, "--out", tmp_path / "runs", "--limit", "4", "--battery", "clean", "--device", "cpu")
    prefix = f"error: {path}: model check 'forward' failed: "
    assert v.exit_code == r.exit_code == 2 and prefix in v.stderr and prefix in r.stderr, (v, r)


def test_data_prepare_says_which_exclusions_are_expected(tmp_path):
    from fxbench.cli.data import exclusion_lines
    from fxbench.data.manifest import load_manifest
    from fxbench.data.prepare import Exclusion

    known = [Exclusion(e["image_id"], e["reason"]) for e in load_manifest().raw["excluded"]]
    assert len(known) == 59
    lines = exclusion_lines(known, tmp_path)
    assert lines == [lines[0]] and lines[0].startswith("excluded 59 image(s) as expected (truncated JPEG)")
    odd = Exclusion("IMG0000001", "undecodable: not a JPEG")
    lines = exclusion_lines([*known[:20], odd], tmp_path)
    assert lines[0].startswith("excluded 20 image(s) as expected")
    assert lines[1] == ("excluded IMG0000001: undecodable: not a JPEG (not a known defect of the release: check "
                        "this copy)")


def test_committed_submissions_carry_no_template_leftover():
    for yaml_path in sorted((REPO / "submissions").glob("fxb-*/model.yaml")):
        spec = ModelSpec.from_yaml(yaml_path)
        found = [w for w in P.template_leftovers(yaml_path, spec) if "template" in w]
        assert found == [], (yaml_path, found)
    claim = ModelSpec.from_yaml(REPO / "submissions" / "_template" / "model.yaml")
    assert any(w.startswith("training is still the template's example")
               for w in P.template_leftovers(Path("fxb-x/model.yaml"), claim))
