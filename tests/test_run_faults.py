"""Every failure of `fxbench run` is one `error:` paragraph, exit 2, nothing half-written (issue 12).

The faulty models are trusted entrypoints whose forward misbehaves only once a file ARMED exists beside them,
so loading and the output check pass and the fault happens inside a battery, as it would in a real run.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from fxbench import run as run_module
from fxbench.clean import CleanBattery
from fxbench.errors import FxbenchError
from safetensors.torch import save_file
from test_run import make_submission

OPTS = dict(preset="quick", device="cpu", limit=4, batteries=["clean"])

MODEL_PY = '''
import sys
from pathlib import Path

import torch
from torch import nn

ARMED = Path(__file__).with_name("ARMED")


class Net(nn.Module):
    def __init__(self, fault):
        super().__init__()
        self.fault = fault
        self.head = nn.Linear(1, 2)

    def forward(self, x):
        if ARMED.exists():
            if self.fault == "raise":
                raise ValueError("the submitter's bug")
            if self.fault == "exit":
                sys.exit(0)
            if self.fault == "hang":
                while True:
                    pass
            if self.fault == "recurse":
                return self.forward(x)
        return self.head(x.mean(dim=(1, 2, 3)).unsqueeze(1))


def build(fault):
    return Net(fault)
'''


def faulty_submission(folder: Path, fault: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(MODEL_PY)
    torch.manual_seed(0)
    net = torch.nn.Linear(1, 2)
    save_file({f"head.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(folder / "w.safetensors"))
    sha = hashlib.sha256((folder / "w.safetensors").read_bytes()).hexdigest()
    (folder / "model.yaml").write_text(textwrap.dedent(f"""\
        id: faulty-{fault}
        name: Faulty model ({fault})
        authors: ["fxbench tests"]
        license: CC-BY-4.0
        model:
          entrypoint: model.py:build
          kwargs: {{fault: {fault}}}
        checkpoint:
          path: w.safetensors
          sha256: {sha}
        input: {{size: 224, channels: 1, mean: [0.5], std: [0.25]}}
        output: {{num_classes: 2, fracture_index: 1}}
        explain: {{gradcam_layer: head}}
        training: {{adversarial: false, method: ERM}}
        """))
    return folder / "model.yaml"


@pytest.fixture
def armed_in_battery(monkeypatch):
    """Arm the fault when the clean battery starts its first shard."""
    original = CleanBattery.run_shard

    def arm(self, key, *, model, **kw):
        ARMED_FILES[0].write_text("")
        return original(self, key, model=model, **kw)

    monkeypatch.setattr(CleanBattery, "run_shard", arm)


ARMED_FILES: list[Path] = []


@pytest.mark.parametrize("fault,message", [
    ("raise", r"model 'faulty-raise' .* raised ValueError during the clean battery \(shard .*\): the submitter's bug"),
    ("exit", r"called sys.exit\(0\)"),
    ("recurse", r"raised RecursionError during the clean battery"),
])
def test_a_model_that_fails_inside_a_battery_is_an_error_naming_it(tmp_path, cli, armed_in_battery, fault, message):
    yaml_path = faulty_submission(tmp_path / "sub", fault)
    ARMED_FILES[:] = [tmp_path / "sub" / "ARMED"]
    out = tmp_path / "out"
    r = cli("run", yaml_path, "--out", out, "--trust-code", "--device", "cpu", "--preset", "quick", "--limit", "4")
    assert r.exit_code == 2, r
    assert r.stderr.count("error: ") == 1 and "Traceback" not in r.stderr
    import re

    assert re.search(message, r.stderr), r.stderr
    assert not (out / f"faulty-{fault}" / "result.json").exists()


def test_a_model_that_never_returns_hits_the_call_time_limit(tmp_path, cli, armed_in_battery, monkeypatch):
    monkeypatch.setenv("FXBENCH_MODEL_CALL_TIMEOUT", "0.5")
    yaml_path = faulty_submission(tmp_path / "sub", "hang")
    ARMED_FILES[:] = [tmp_path / "sub" / "ARMED"]
    r = cli("run", yaml_path, "--out", tmp_path / "out", "--trust-code", "--device", "cpu", "--preset", "quick",
            "--limit", "4")
    assert r.exit_code == 2 and "did not return within 0.5 s" in r.stderr and "FXBENCH_MODEL_CALL_TIMEOUT" in r.stderr


def test_sys_exit_while_loading_trusted_code_is_an_error(tmp_path, cli):
    yaml_path = faulty_submission(tmp_path / "sub", "raise")
    (tmp_path / "sub" / "model.py").write_text("import sys\nsys.exit(0)\n")
    r = cli("validate", yaml_path, "--trust-code")
    assert r.exit_code == 2 and "sys.exit(0)" in r.stderr
    r = cli("run", yaml_path, "--out", tmp_path / "out", "--trust-code", "--device", "cpu")
    assert r.exit_code == 2 and "sys.exit(0)" in r.stderr
    assert not (tmp_path / "out").exists()


def test_out_naming_a_file_or_an_unwritable_place_is_refused_before_any_work(tmp_path, cli, monkeypatch):
    yaml_path = make_submission(tmp_path / "sub")
    monkeypatch.setattr("fxbench.models.load_submission", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "a-file").write_text("keep me")
    r = cli("run", yaml_path, "--out", tmp_path / "a-file", "--device", "cpu")
    assert r.exit_code == 2 and "is a file, not a folder" in r.stderr
    assert (tmp_path / "a-file").read_text() == "keep me"
    r = cli("run", yaml_path, "--out", tmp_path / "a-file" / "runs", "--device", "cpu")
    assert r.exit_code == 2 and "cannot write there" in r.stderr and "Traceback" not in r.stderr


def test_a_second_run_into_the_same_out_is_refused(tmp_path):
    yaml_path = make_submission(tmp_path / "sub")
    out = tmp_path / "out"
    out.mkdir()
    with run_module.run_lock(out):
        with pytest.raises(FxbenchError, match=r"another fxbench run \(pid \d+\) is writing into this folder"):
            run_module.run_submission(yaml_path, out=out, **OPTS)
    res = run_module.run_submission(yaml_path, out=out, **OPTS)  # the lock went with its holder
    assert (res.out_dir / "result.json").is_file()


@pytest.fixture
def small_clean_chunks(monkeypatch):
    from fxbench.definition import BenchmarkDefinition

    original = BenchmarkDefinition.battery_config
    monkeypatch.setattr(BenchmarkDefinition, "battery_config",
                        lambda self, b, p: {**original(self, b, p), "chunk_size": 2})


@pytest.mark.parametrize("damage", ["truncate-parquet", "garbage-json"])
def test_a_corrupt_shard_is_recomputed(tmp_path, small_clean_chunks, monkeypatch, damage):
    yaml_path = make_submission(tmp_path / "sub")
    reference = run_module.run_submission(yaml_path, out=tmp_path / "ref", **OPTS)
    original = CleanBattery.run_shard
    calls = {"n": 0}

    def dies_on_second(self, key, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, key, **kw)

    monkeypatch.setattr(CleanBattery, "run_shard", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_module.run_submission(yaml_path, out=tmp_path / "run", **OPTS)
    monkeypatch.setattr(CleanBattery, "run_shard", original)
    done = next((tmp_path / "run" / ".fxbench-shards").rglob("clean/*.json"))
    if damage == "truncate-parquet":
        p = done.with_suffix(".parquet")
        p.write_bytes(p.read_bytes()[:20])
    else:
        done.write_text("{not json")
    notes = []
    res = run_module.run_submission(yaml_path, out=tmp_path / "run", progress=run_module.Progress(note=notes.append),
                                    **OPTS)
    assert any("cannot be read back" in n and "recomputing" in n for n in notes)
    assert res.shards_resumed == 0 and res.result["metrics"] == reference.result["metrics"]
    pd.testing.assert_frame_equal(res.samples, reference.samples)


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    from fxbench import cli as cli_module

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "app", interrupted)
    with pytest.raises(SystemExit) as e:
        cli_module.main()
    assert e.value.code == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err


def test_errors_raised_by_fxbench_itself_are_not_blamed_on_the_model(tmp_path, monkeypatch):
    yaml_path = make_submission(tmp_path / "sub")

    def bug(self, key, **kw):
        raise IndexError("fxbench's own bug")

    monkeypatch.setattr(CleanBattery, "run_shard", bug)
    with pytest.raises(IndexError):  # a bug in fxbench stays a bug: not reported as the submission's fault
        run_module.run_submission(yaml_path, out=tmp_path / "out", **OPTS)


def test_the_call_guard_keeps_deep_copies_on_their_own_weights(tmp_path):
    import copy

    from fxbench.models.factory import guard_calls

    net = guard_calls(torch.nn.Linear(1, 2), "test", 5.0)
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin.weight.fill_(0.0)
        twin.bias.fill_(0.0)
    x = torch.ones(1, 1)
    assert torch.equal(twin(x), torch.zeros(1, 2)) and not torch.equal(net(x), torch.zeros(1, 2))
    assert isinstance(net, torch.nn.Linear) and list(net.state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize("fault,message", [("hang", "did not return within 0.5 s"), ("exit", r"called sys.exit\(0\)")])
def test_validate_does_not_hang_or_vanish_on_a_misbehaving_trusted_model(tmp_path, cli, monkeypatch, fault, message):
    import re

    monkeypatch.setenv("FXBENCH_MODEL_CALL_TIMEOUT", "0.5")
    yaml_path = faulty_submission(tmp_path / "sub", fault)
    (tmp_path / "sub" / "ARMED").write_text("")  # misbehaves from the first forward on
    r = cli("validate", yaml_path, "--trust-code")
    assert r.exit_code == 2 and re.search(message, r.stderr) and "Traceback" not in r.stderr, r


def test_a_full_disk_when_the_result_is_written_is_an_error_and_keeps_the_shards(tmp_path, monkeypatch):
    import fxbench.publish as publish

    yaml_path = make_submission(tmp_path / "sub")
    original = publish.write_result_dir

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publish, "write_result_dir", full)
    with pytest.raises(FxbenchError, match="No space left on device.*finished shards are kept"):
        run_module.run_submission(yaml_path, out=tmp_path / "out", **OPTS)
    assert list((tmp_path / "out" / ".fxbench-shards").rglob("*.json"))
    monkeypatch.setattr(publish, "write_result_dir", original)
    res = run_module.run_submission(yaml_path, out=tmp_path / "out", **OPTS)
    assert res.shards_resumed > 0 and res.shards_run == 0
