"""`run_many` / `fxbench run-many` with the local executor, and Ctrl-C on `fxbench run` (no Ray needed)."""

from __future__ import annotations

import json

import pytest
from fxbench import run as run_module
from fxbench.clean import CleanBattery
from fxbench.errors import FxbenchError
from test_run import make_submission

OPTS = dict(preset="quick", device="cpu", limit=4, batteries=["clean"])


@pytest.mark.slow
def test_run_many_local_publishes_each_result_as_a_single_run_would(tmp_path):
    a = make_submission(tmp_path / "a", sub_id="sub-a", seed=0)
    b = make_submission(tmp_path / "b", sub_id="sub-b", seed=1)
    dup = make_submission(tmp_path / "dup", sub_id="sub-a", seed=2)
    seen = []
    progress = run_module.Progress(start=seen.append, advance=lambda bat, key, r: seen.append(bat))
    many = run_module.run_many([a, tmp_path / "nothere", b, dup], out=tmp_path / "out", progress=progress, **OPTS)
    assert [type(o).__name__ for o in many.outcomes] == ["RunResult", "SubmissionError", "RunResult", "FxbenchError"]
    assert "ids must be unique" in str(many.outcomes[3]) and [p for p, _ in many.failed][1] == dup
    assert seen[0] == len(seen) - 1 == 2 * many.outcomes[0].shards_run  # one bar over both submissions
    assert set(seen[1:]) == {"sub-a clean", "sub-b clean"}
    single = run_module.run_submission(b, out=tmp_path / "single", **OPTS)
    got = tmp_path / "out" / "sub-b"
    assert (got / "samples.parquet").read_bytes() == (single.out_dir / "samples.parquet").read_bytes()
    assert json.loads((got / "result.json").read_text())["metrics"] == single.result["metrics"]


def test_run_many_needs_a_submission_and_a_known_executor(tmp_path, cli):
    with pytest.raises(FxbenchError, match="at least one"):
        run_module.run_many([], out=tmp_path / "out")
    r = cli("run-many", tmp_path, "--executor", "dask", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "--executor 'dask'" in r.stderr and "Traceback" not in r.stderr
    r = cli("run", tmp_path, "--ray-address", "127.0.0.1:6379", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "--ray-address is for --executor ray" in r.stderr
    for bad in ("0", "-1", "1.5"):
        r = cli("run", tmp_path, "--executor", "ray", "--ray-gpus-per-task", bad, "--out", tmp_path / "out")
        assert r.exit_code == 2 and f"--ray-gpus-per-task {float(bad)}" in r.stderr, r
    assert not (tmp_path / "out").exists()


def test_ctrl_c_says_how_to_resume(tmp_path, cli, monkeypatch):
    yaml_path = make_submission(tmp_path / "sub")

    def interrupted(self, key, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(CleanBattery, "run_shard", interrupted)
    r = cli("run", yaml_path, "--out", tmp_path / "out", "--device", "cpu", "--preset", "quick", "--limit", "4")
    assert r.exit_code == 130
    assert "error: interrupted; rerun the same command to resume" in r.stderr and "Traceback" not in r.stderr


def test_run_many_takes_batteries_like_run_once_each_in_the_definitions_order(tmp_path):
    """`run` and `run-many` check their shared options in one place: repeated names run once, and a later
    battery (robustness reads the clean battery's decisions) runs after the one it reads."""
    a = make_submission(tmp_path / "a", sub_id="sub-a")
    opts = dict(OPTS, batteries=["robustness", "clean", "clean"])
    many = run_module.run_many([a], out=tmp_path / "out", **opts)
    (res,) = many.outcomes
    assert list(res.result["components"]) == ["clean", "robustness"]
    with pytest.raises(FxbenchError, match="--limit 1"):
        run_module.run_many([a], out=tmp_path / "out", **dict(OPTS, limit=1))
