"""Issue 19 (house): bad input around `fxbench run` that used to end in a traceback or lose something, the one
shard recipe both executors call, and a check that did not run saying so."""

from __future__ import annotations

import pytest
from fxbench import run as run_module
from fxbench.errors import FxbenchError
from fxbench.outdir import LOCK_NAME
from test_run import make_submission

OPTS = dict(preset="quick", device="cpu", limit=4, batteries=["clean"])


def test_a_finished_run_leaves_no_lock_file(tmp_path):
    yaml_path = make_submission(tmp_path / "sub")
    out = tmp_path / "out"
    res = run_module.run_submission(yaml_path, out=out, **OPTS)
    assert (res.out_dir / "result.json").is_file()
    assert not (out / LOCK_NAME).exists()
    run_module.run_submission(yaml_path, out=out, **OPTS)  # and the next run takes it again
    assert not (out / LOCK_NAME).exists()


def test_the_lock_still_refuses_a_second_run_while_held(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with run_module.run_lock(out):
        assert (out / LOCK_NAME).exists()
        with pytest.raises(FxbenchError, match="another fxbench run"), run_module.run_lock(out):
            pass
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("seed", [2**70, -1])
def test_a_seed_out_of_range_is_refused_before_any_work(tmp_path, cli, seed):
    yaml_path = make_submission(tmp_path / "sub")
    r = cli("run", yaml_path, "--out", tmp_path / "out", "--device", "cpu", "--seed", str(seed))
    assert r.exit_code == 2 and r.stderr.startswith("error:") and "--seed" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_a_file_where_the_result_folder_goes_is_refused_and_kept(tmp_path, cli):
    yaml_path = make_submission(tmp_path / "sub")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tiny-test").write_text("my notes")  # the submission's id: OUT/<id> would be its result folder
    r = cli("run", yaml_path, "--out", out, "--device", "cpu", "--limit", "4", "--battery", "clean")
    assert r.exit_code == 2 and r.stderr.startswith("error:") and "a file is where" in r.stderr
    assert "Traceback" not in r.stderr
    assert (out / "tiny-test").read_text() == "my notes"
    assert sorted(p.name for p in out.iterdir()) == ["tiny-test"]  # nothing renamed, nothing left behind


def test_run_many_takes_battery_and_overwrite(tmp_path, cli):
    yaml_path = make_submission(tmp_path / "sub")
    out = tmp_path / "out"
    r = cli("run-many", yaml_path, "--out", out, "--device", "cpu", "--limit", "4", "--battery", "clean", "-q")
    assert r.exit_code == 0, r.stderr
    import json

    result = json.loads((out / "tiny-test" / "result.json").read_text())
    assert sorted(result["components"]) == ["clean"]
    r = cli("run-many", yaml_path, "--out", out, "--device", "cpu", "--limit", "6", "--battery", "clean", "-q")
    assert r.exit_code == 2 and "limit: 4 there, 6 now" in r.stderr
    r = cli("run-many", yaml_path, "--out", out, "--device", "cpu", "--limit", "6", "--battery", "clean", "-q",
            "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "tiny-test" / "result.json").read_text())["benchmark"]["limit"] == 6


def test_local_and_ray_executors_share_one_shard_recipe():
    """Neither executor carries its own copy of the recipe: both reach the functions of executors/shard.py."""
    import inspect

    from fxbench.executors import local, ray, shard, worker

    assert "shard.run_in_process" in inspect.getsource(local)
    ray_src, worker_src = inspect.getsource(ray), inspect.getsource(worker)
    for step in ("shard.resume", "shard.save", "shard.finalize"):
        assert step in ray_src
    assert "compute(" in worker_src and "from .shard import compute" in worker_src
    for src in (ray_src, worker_src, inspect.getsource(local)):
        assert "seed_everything" not in src and "strict_fp32" not in src and ".run_shard(" not in src
    assert shard.compute and shard.finalize


def test_the_transfer_check_not_running_is_a_flag(tmp_path, monkeypatch):
    """Installed from a wheel there is no repository holding the surrogate: the check is skipped, and the
    result says so in a flag (v2 recorded it only in components.robustness.checks)."""
    import fxbench.robustness.battery as rb

    monkeypatch.setattr(rb, "REPO", tmp_path / "no-repository")
    yaml_path = make_submission(tmp_path / "sub")
    res = run_module.run_submission(yaml_path, out=tmp_path / "out", preset="quick", device="cpu", limit=4,
                                    batteries=["clean", "robustness"])
    codes = [f["code"] for f in res.result["flags"]]
    assert "check-not-run" in codes
    assert "not found" in res.result["components"]["robustness"]["checks"]["transfer"]["skipped"]
