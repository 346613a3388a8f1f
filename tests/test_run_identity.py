"""A second run into runs/<id>/ with other settings is refused with the reason; the same run still replaces
and resumes (issue 13). `fxbench add` names the actual reason a result is not leaderboard-eligible."""

from __future__ import annotations

import json

import pytest
from fxbench.run import run_submission
from test_leaderboard_add import run_dir  # noqa: F401 - fixture
from test_run import make_submission

FAST = dict(preset="quick", device="cpu", batteries=["clean"])


def test_other_limit_is_refused_and_the_first_result_kept(tmp_path, cli):
    yaml_path = make_submission(tmp_path / "sub")
    out = tmp_path / "runs"
    first = run_submission(yaml_path, out=out, limit=4, **FAST)
    before = (first.out_dir / "result.json").read_bytes()
    r = cli("run", yaml_path, "--out", out, "--limit", 6, "--device", "cpu", "--preset", "quick", "--battery", "clean")
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r
    assert "holds the result of a different run (limit: 4 there, 6 now; n: 4 there, 6 now)" in r.stderr
    assert "--overwrite" in r.stderr and "another --out" in r.stderr
    assert (first.out_dir / "result.json").read_bytes() == before


@pytest.mark.parametrize("change, field", [
    (dict(limit=None), "limit: 4 there, none now"),
    (dict(seed=7), "seed: 0 there, 7 now"),
    (dict(batteries=["clean", "robustness"]), "batteries: clean there, clean,robustness now"),
])
def test_each_differing_setting_is_named(tmp_path, change, field):
    from fxbench.errors import FxbenchError
    from fxbench.run_identity import check_replaceable, identity

    base = dict(version="v2", fingerprint="a" * 64, n=4, limit=4, preset="quick", config_hash="c" * 16, seed=0,
                batteries=["clean"])
    final = tmp_path / "runs" / "x"
    final.mkdir(parents=True)
    old = identity(**base)
    (final / "result.json").write_text(json.dumps({
        "benchmark": {"version": "v2", "preset": "quick", "config_hash": "c" * 16, "limit": 4,
                      "dataset": {"fingerprint": "a" * 64, "n": 4}},
        "provenance": {"seed": 0}, "components": {"clean": {}}}))
    check_replaceable(final, old)  # the same run: replaced as before
    new = {**base, **change}
    if new["limit"] is None:
        new["n"] = 96
    with pytest.raises(FxbenchError, match="different run") as e:
        check_replaceable(final, identity(**new))
    assert field in str(e.value)
    check_replaceable(final, identity(**new), overwrite=True)


def test_same_run_again_replaces_and_overwrite_replaces_a_different_one(tmp_path):
    yaml_path = make_submission(tmp_path / "sub")
    out = tmp_path / "runs"
    a = run_submission(yaml_path, out=out, limit=4, **FAST)
    again = run_submission(yaml_path, out=out, limit=4, **FAST)
    assert again.result["metrics"] == a.result["metrics"]
    other = run_submission(yaml_path, out=out, limit=6, overwrite=True, **FAST)
    assert json.loads((other.out_dir / "result.json").read_text())["benchmark"]["limit"] == 6


def test_add_names_the_limit_as_the_reason(cli, run_dir, tmp_path):  # noqa: F811
    obj = json.loads((run_dir / "result.json").read_text())
    obj["benchmark"]["limit"] = 10
    obj["benchmark"]["dataset"]["leaderboard_eligible"] = False
    (run_dir / "result.json").write_text(json.dumps(obj))
    r = cli("add", run_dir, "--results", tmp_path / "store")
    assert r.exit_code == 2 and "it is a --limit 10 run" in r.stderr, r
    assert "embedded" not in r.stderr.split("not leaderboard-eligible")[1]


def test_add_names_the_embedded_subset_as_the_reason(cli, run_dir, tmp_path):  # noqa: F811
    obj = json.loads((run_dir / "result.json").read_text())
    obj["benchmark"]["dataset"]["name"] = "fracatlas-v1-embedded"
    obj["benchmark"]["dataset"]["leaderboard_eligible"] = False
    (run_dir / "result.json").write_text(json.dumps(obj))
    r = cli("add", run_dir, "--results", tmp_path / "store")
    assert r.exit_code == 2 and "embedded subset" in r.stderr and "--limit" not in r.stderr, r
