"""Cost before work, then progress lines that name the battery at work and an ETA (cli/progress.py, cli/run.py)."""

from __future__ import annotations

import threading

from fxbench.cli.progress import Eta, PlainProgress
from test_cli_progress import FakeClock
from test_run import make_submission

PLAN = [("clean", 1), ("robustness", 2), ("explanations", 2)]


def test_eta_prices_each_battery_by_its_own_shards_and_the_priced_bound_before_them():
    eta = Eta()
    eta.plan(PLAN, {"robustness": 60.0})
    assert eta.current() == "clean"
    eta.advanced("clean", False, 2.0)
    # robustness not started: its priced upper bound; explanations: nothing known yet
    assert eta.text() == "ETA 0:02:00 + explanations (not timed yet) (robustness at most 0:02:00)"
    eta.advanced("robustness", False, 30.0)  # its own shard now prices the rest, not the bound
    assert eta.current() == "robustness"
    assert eta.text() == "ETA 0:00:30 + explanations (not timed yet) (robustness 0:00:30)"
    eta.advanced("robustness", False, 40.0)
    eta.advanced("explanations", False, 10.0)
    assert eta.text() == "ETA 0:00:10" and eta.current() == "explanations"
    eta.advanced("explanations", False, 10.0)
    assert eta.text() == "ETA 0:00:00" and eta.current() is None


def test_resumed_shards_cost_nothing_and_run_many_labels_are_read_as_batteries():
    eta = Eta()
    eta.plan([("clean", 2)])
    eta.plan([("clean", 2)])  # a second submission of run-many
    eta.advanced("fxb-a clean", True, 0.0)
    eta.advanced("fxb-a clean", False, 4.0)
    assert eta.text() == "ETA 0:00:08"


def test_plain_lines_name_the_battery_and_the_eta_once_a_plan_is_known():
    lines, clock = [], FakeClock()
    p = PlainProgress(lines.append, clock=clock, every_shards=1)
    p.plan(PLAN, {"robustness": 60.0})
    p.start(5)
    clock.t = 3.0
    p.advance("clean", "chunk-000", False)
    assert lines[-1] == ("progress: 1/5 shards (20%), last clean chunk-000, 0:00:03 elapsed, ETA 0:02:00 + "
                         "explanations (not timed yet) (robustness at most 0:02:00)")


def test_heartbeat_names_the_battery_at_work():
    lines, clock = [], FakeClock()
    p = PlainProgress(lines.append, clock=clock, every_s=0.05, heartbeat=True)
    p.plan(PLAN, {"robustness": 60.0})
    p.start(5)
    p.advance("clean", "chunk-000", False)
    seen = threading.Event()

    def write(line):
        lines.append(line)
        seen.set()

    p.write = write
    clock.t = 100.0
    assert seen.wait(5), lines
    p.stop()
    assert lines[-1].startswith("progress: working on robustness shard 2/5, 0:01:40 elapsed, ETA ")


def test_fxbench_run_prints_its_cost_before_any_shard_and_an_eta_in_its_lines(tmp_path, cli):
    yaml_path = make_submission(tmp_path / "sub")
    r = cli("run", yaml_path, "--out", tmp_path / "out", "--limit", 4, "--device", "cpu", "--preset", "quick",
            "--battery", "clean", "--battery", "robustness")
    assert r.exit_code == 0, r
    err = r.stderr.splitlines()
    cost = [i for i, ln in enumerate(err) if ln.startswith("cost:")]
    progress = [i for i, ln in enumerate(err) if ln.startswith("progress: ")]
    assert cost and progress and cost[0] < progress[0], err
    assert "ms per image forward" in err[cost[0]] and "on cpu" in err[cost[0]]
    rob = err[cost[0] + 1]
    assert rob.startswith("  robustness (fxbench-AA v3, quick, 4 images, 1 shard(s))") and "at most" in rob, rob
    assert all("ETA" in err[i] for i in progress[1:]), err
