"""`fxbench run` end to end on the embedded subset with a tiny timm model: result file, resume, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import tiny_timm
from fxbench.definition import BenchmarkDefinition
from fxbench.results.resultfile import read_result
from safetensors.torch import save_file

LIMIT = 8


def make_submission(folder: Path, *, sub_id: str = "tiny-test", seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    net = tiny_timm(num_classes=2, in_chans=1, seed=seed)
    weights = folder / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "model.yaml").write_text(
        f"""id: {sub_id}
name: Tiny test ResNet
authors: ["fxbench tests"]
license: CC-BY-4.0
model:
  timm: test_resnet
  kwargs: {{num_classes: 2, in_chans: 1}}
checkpoint:
  path: weights.safetensors
  sha256: {sha}
input:
  size: 224
  channels: 1
  mean: [0.5]
  std: [0.25]
output:
  num_classes: 2
  fracture_index: 1
training:
  adversarial: false
  method: ERM
"""
    )
    return folder / "model.yaml"


@pytest.fixture
def small_chunks(monkeypatch):
    """Shards of 4 images, so that a limited run still has several shards per battery."""
    original = BenchmarkDefinition.battery_config

    def battery_config(self, battery, preset):
        cfg = original(self, battery, preset)
        return {**cfg, "chunk_size": 4} if "chunk_size" in cfg else cfg

    monkeypatch.setattr(BenchmarkDefinition, "battery_config", battery_config)


@pytest.mark.slow
def test_run_quick_writes_a_valid_result(tmp_path, cli):
    yaml_path = make_submission(tmp_path / "sub")
    out = tmp_path / "out"
    r = cli("run", yaml_path, "--out", out, "--limit", LIMIT, "--device", "cpu", "--preset", "quick")
    assert r.exit_code == 0, r
    result = read_result(out / "tiny-test")
    samples = pd.read_parquet(out / "tiny-test" / "samples.parquet")
    assert len(samples) == LIMIT and samples["label"].nunique() == 2
    ds = result["benchmark"]["dataset"]
    assert ds["name"].endswith("embedded") and ds["leaderboard_eligible"] is False
    codes = {f["code"] for f in result["flags"]}
    assert {"embedded-subset", "limited", "quick-preset"} <= codes
    acc = result["metrics"]["clean/accuracy"]
    assert acc["value"] == pytest.approx(samples["clean/correct"].mean())
    assert isinstance(acc["value"], float) and acc["n"] == LIMIT
    assert any(k.startswith("robust/") for k in result["metrics"])
    assert any(k.startswith("xai/") for k in result["metrics"])
    assert "embedded subset" in r.stderr
    assert not (out / ".fxbench-shards").exists()  # shards are removed once the result is published


@pytest.mark.slow
def test_killed_run_resumes_to_identical_numbers(tmp_path, small_chunks, monkeypatch):
    from fxbench import run as run_module

    yaml_path = make_submission(tmp_path / "sub")
    opts = dict(preset="quick", device="cpu", limit=LIMIT, batteries=["clean", "robustness"])
    reference = run_module.run_submission(yaml_path, out=tmp_path / "ref", **opts)

    from fxbench.robustness import RobustnessBattery

    calls = {"n": 0}
    original = RobustnessBattery.run_shard

    def dies_on_second_shard(self, key, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return original(self, key, **kw)

    monkeypatch.setattr(RobustnessBattery, "run_shard", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        run_module.run_submission(yaml_path, out=tmp_path / "run", **opts)
    assert not (tmp_path / "run" / "tiny-test" / "result.json").exists()  # nothing half-published

    monkeypatch.setattr(RobustnessBattery, "run_shard", original)
    resumed = run_module.run_submission(yaml_path, out=tmp_path / "run", **opts)
    assert resumed.shards_resumed >= 2 and resumed.shards_run >= 1
    assert resumed.result["metrics"] == reference.result["metrics"]
    pd.testing.assert_frame_equal(resumed.samples, reference.samples)


def test_bad_model_yaml_writes_nothing(tmp_path, cli):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "model.yaml").write_text("id: [unclosed\n")
    out = tmp_path / "out"
    r = cli("run", sub / "model.yaml", "--out", out, "--device", "cpu")
    assert r.exit_code == 2, r
    assert "model.yaml" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_unknown_device_and_preset_refused(tmp_path, cli):
    yaml_path = make_submission(tmp_path / "sub")
    out = tmp_path / "out"
    r = cli("run", yaml_path, "--out", out, "--device", "tpu")
    assert r.exit_code == 2 and "tpu" in r.stderr and "Traceback" not in r.stderr
    r = cli("run", yaml_path, "--out", out, "--device", "cpu", "--preset", "medium")
    assert r.exit_code == 2 and "medium" in r.stderr
    if not torch.cuda.is_available():
        r = cli("run", yaml_path, "--out", out, "--device", "cuda")
        assert r.exit_code == 2 and "cuda" in r.stderr.lower()
    assert not out.exists()


def test_new_result_replaces_old_folder_whole(tmp_path):
    from fxbench.run import run_submission

    yaml_path = make_submission(tmp_path / "sub")
    stale = tmp_path / "out" / "tiny-test" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an older run")
    res = run_submission(yaml_path, out=tmp_path / "out", preset="quick", device="cpu", limit=4, batteries=["clean"])
    assert not stale.exists()
    assert json.loads((res.out_dir / "result.json").read_text())["submission"]["id"] == "tiny-test"


def test_result_names_the_commit_the_run_started_from(tmp_path, monkeypatch):
    """A long run can outlive a checkout of other code; provenance names the code it started with (its modules
    are already imported), as read when the run starts."""
    import fxbench.plan
    import fxbench.run as run_mod

    commits = iter(["commit-at-start", "commit-at-end", "commit-later"])
    monkeypatch.setattr(fxbench.plan, "git_commit", lambda: next(commits))
    yaml_path = make_submission(tmp_path / "sub")
    res = run_mod.run_submission(yaml_path, out=tmp_path / "out", preset="quick", device="cpu", limit=4,
                                 batteries=["clean"])
    assert res.result["provenance"]["git_commit"] == "commit-at-start"
