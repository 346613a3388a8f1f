"""Plain progress lines when output is not a terminal (issue 13): a CI log shows a long run moving."""

from __future__ import annotations

from fxbench.cli.progress import PlainProgress
from test_run import make_submission


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_line_every_tenth_of_the_shards_plus_first_and_last():
    lines, clock = [], FakeClock()
    p = PlainProgress(lines.append, clock=clock, every_s=1e9)
    p.start(100)
    for i in range(100):
        clock.t += 1.0
        p.advance("robustness", f"chunk-{i:03d}", False)
    assert lines[0] == "progress: 0/100 shards"
    shown = [int(ln.split()[1].split("/")[0]) for ln in lines[1:]]
    assert shown == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert lines[-1].startswith("progress: 100/100 shards (100%), last robustness chunk-099, 0:01:40 elapsed")
    assert all("left" not in ln for ln in lines)  # no estimate: shard costs differ across batteries


def test_a_line_every_interval_when_shards_are_slow():
    lines, clock = [], FakeClock()
    p = PlainProgress(lines.append, clock=clock, every_shards=1000, every_s=30)
    p.start(2000)
    for _ in range(200):
        clock.t += 10.0
        p.advance("explanations", "chunk", False)
    # first shard, then one line per 30 s of 2000 s
    assert 60 <= len(lines) - 1 <= 70


def test_resumed_shards_are_counted():
    lines, clock = [], FakeClock()
    p = PlainProgress(lines.append, clock=clock, every_shards=1)
    p.start(4)
    p.advance("clean", "chunk-000", True)
    p.advance("clean", "chunk-001", True)
    assert lines[-1] == "progress: 2/4 shards (50%) (2 resumed), last clean chunk-001, 0:00:00 elapsed"


def test_heartbeat_while_one_long_shard_runs():
    import threading

    lines, clock = [], FakeClock()
    p = PlainProgress(lines.append, clock=clock, every_s=0.05, heartbeat=True)
    p.start(3)
    p.advance("clean", "chunk-000", False)
    seen = threading.Event()

    def write(line):
        lines.append(line)
        seen.set()

    p.write = write
    clock.t = 100.0  # a long shard: no advance for "100 s"
    assert seen.wait(5), lines
    p.stop()
    assert lines[-1] == "progress: working on shard 2/3, 0:01:40 elapsed"
    n = len(lines)
    p.advance("clean", "chunk-001", False)  # after stop: lines from advance only, the timer is gone
    assert len(lines) == n + 1


def test_run_into_a_log_prints_plain_progress_lines(tmp_path, cli):
    # The cli fixture captures output: neither stream is a terminal, as in CI.
    yaml_path = make_submission(tmp_path / "sub")
    r = cli("run", yaml_path, "--out", tmp_path / "out", "--limit", 4, "--device", "cpu", "--preset", "quick",
            "--battery", "clean")
    assert r.exit_code == 0, r
    progress = [ln for ln in r.stderr.splitlines() if ln.startswith("progress: ")]
    assert progress[0] == "progress: 0/1 shards" and progress[-1].startswith("progress: 1/1 shards (100%)")
    assert "note: No prepared dataset found" in r.stderr
    assert "\x1b[" not in r.stderr  # no terminal control codes in a log
