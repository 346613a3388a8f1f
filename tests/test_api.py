"""The Python API (issue 13): lazy `fxbench.data`, `fxbench.load_submission(path_or_id)`, and
`fxbench.evaluate(model, ...)` giving the same numbers as `fxbench run` of the same model saved as a submission."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO, tiny_timm
from test_run import make_submission

INPUT = {"size": 224, "channels": 1, "mean": [0.5], "std": [0.25]}  # test_run.make_submission's blocks
OUTPUT = {"num_classes": 2, "fracture_index": 1}


def test_import_fxbench_is_light_and_submodules_load_on_use():
    code = ("import sys, fxbench; light = 'torch' not in sys.modules; ds = fxbench.data.load(split='eval'); "
            "print(light, len(ds), callable(fxbench.evaluate), callable(fxbench.load_submission))")
    p = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["True", "96", "True", "True"]  # the embedded subset's 96 evaluation images


def test_entry_points_are_keyword_only_and_typed():
    import fxbench

    for fn in (fxbench.evaluate, fxbench.load_submission, fxbench.data.load):
        params = list(inspect.signature(fn).parameters.values())
        assert all(p.kind == p.KEYWORD_ONLY for p in params[1:]), fn
        assert inspect.signature(fn).return_annotation not in (inspect.Signature.empty, None), fn
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fxbench.nope  # noqa: B018


def test_load_submission_by_path_or_id(tmp_path, monkeypatch):
    import fxbench

    sub = fxbench.load_submission(REPO / "submissions" / "fxb-resnet10t-pgdat")
    by_id = fxbench.load_submission("fxb-resnet10t-pgdat")
    assert by_id.spec.id == sub.spec.id and by_id.checkpoint_sha256 == sub.checkpoint_sha256
    make_submission(tmp_path / "submissions" / "tiny-test")
    monkeypatch.chdir(tmp_path)
    assert fxbench.load_submission("tiny-test").folder == (tmp_path / "submissions" / "tiny-test").resolve()
    from fxbench.errors import SubmissionError

    with pytest.raises(SubmissionError, match="no submission with this id"):
        fxbench.load_submission("no-such-model")


def _same_numbers(a, b):
    assert a.result["metrics"] == b.result["metrics"]
    assert a.result["benchmark"] == b.result["benchmark"]
    assert [f["code"] for f in a.result["flags"]] == [f["code"] for f in b.result["flags"]]
    pd.testing.assert_frame_equal(a.samples, b.samples)


def test_evaluate_in_memory_equals_fxbench_run_of_the_saved_submission(tmp_path, cli):
    import fxbench
    from fxbench.run import RunResult

    net = tiny_timm(num_classes=2, in_chans=1, seed=0)  # make_submission saves exactly this network
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = fxbench.evaluate(net, input=INPUT, output=OUTPUT, preset="quick", batteries=["clean"], device="cpu",
                           limit=6)
    r = cli("run", make_submission(tmp_path / "sub"), "--out", tmp_path / "runs", "--preset", "quick",
            "--battery", "clean", "--device", "cpu", "--limit", 6, "-q")
    assert r.exit_code == 0, r
    ran = json.loads((tmp_path / "runs" / "tiny-test" / "result.json").read_text())
    assert isinstance(got, RunResult) and got.out_dir is None
    assert got.result["metrics"] == ran["metrics"] and got.result["benchmark"] == ran["benchmark"]
    pd.testing.assert_frame_equal(got.samples, pd.read_parquet(tmp_path / "runs" / "tiny-test" / "samples.parquet"))
    assert got.result["submission"]["architecture"] == "entrypoint:in-memory.py:ResNet"
    # the caller's module is untouched: still trainable, same weights
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.slow
def test_evaluate_in_memory_equals_run_of_the_saved_submission_all_batteries(tmp_path):
    import fxbench
    from fxbench.run import run_submission

    net = tiny_timm(num_classes=2, in_chans=1, seed=0)
    got = fxbench.evaluate(net, input=INPUT, output=OUTPUT, preset="quick", device="cpu", limit=4,
                           out=tmp_path / "api")
    ref = run_submission(make_submission(tmp_path / "sub"), out=tmp_path / "runs", preset="quick", device="cpu",
                         limit=4)
    _same_numbers(got, ref)
    assert json.loads((got.out_dir / "result.json").read_text())["metrics"] == ref.result["metrics"]


def test_evaluate_refuses_a_bad_input_block_with_a_message():
    import fxbench
    from fxbench.errors import SubmissionError

    with pytest.raises(SubmissionError, match="fxbench.evaluate: .*channels"):
        fxbench.evaluate(torch.nn.Linear(3, 2), input={"size": 224, "channels": 2, "mean": [0.5], "std": [0.2]},
                         batteries=["clean"], device="cpu", limit=2)


def test_run_battery_option_runs_only_those(tmp_path, cli):
    r = cli("run", make_submission(tmp_path / "sub"), "--out", tmp_path / "o", "--limit", 4, "--device", "cpu",
            "--preset", "quick", "--battery", "clean", "-q")
    assert r.exit_code == 0, r
    result = json.loads((tmp_path / "o" / "tiny-test" / "result.json").read_text())
    assert list(result["components"]) == ["clean"] and not any(k.startswith("robust/") for k in result["metrics"])
    r = cli("run", make_submission(tmp_path / "sub"), "--out", tmp_path / "o2", "--battery", "nope", "--device", "cpu")
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r


def test_batteries_run_in_the_definitions_order_whatever_the_option_order(tmp_path):
    from fxbench.run import run_submission

    r = run_submission(make_submission(tmp_path / "sub"), out=tmp_path / "o", preset="quick", device="cpu",
                       limit=2, batteries=["robustness", "clean", "clean"])
    assert list(r.result["components"]) == ["clean", "robustness"]
