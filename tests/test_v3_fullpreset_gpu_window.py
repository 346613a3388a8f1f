"""ops/gpu/gpu_v3.sh: the v3 window's plan (full preset of every v3 baseline, in order of value), and (slow) the
whole script on the CPU in a small setting: a run stopped part-way ships its finished shards in $OUT, and the
next window continues from them instead of starting again."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "ops" / "gpu" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


gpu_v3 = _load("gpu_v3")


def _members(out: Path) -> set[str]:
    names: set[str] = set()
    for t in sorted(out.glob("state-*.tar")):
        with tarfile.open(t) as tar:
            names |= set(tar.getnames())
    return names


def test_the_plan_runs_the_full_preset_of_every_committed_baseline_robust_ones_first():
    jobs = gpu_v3.plan(REPO)
    names = [j.name for j in jobs]
    assert names[:2] == ["full:fxb-resnet10t-pgdat-v2", "full:fxb-resnet10t-trades-v2"]
    assert {j.kind for j in jobs} == {"full"} and len(set(names)) == len(names)
    committed = {p.parent.name for p in (REPO / "submissions").glob("fxb-*/model.yaml")}
    assert {j.sid for j in jobs} == committed  # every v3 baseline, the constant reference included
    assert all(Path(j.source).is_file() for j in jobs)


def test_a_stopped_runs_finished_shards_are_packed_whatever_its_preset(tmp_path):
    v2 = gpu_v3.v2
    work = tmp_path / "work"
    shard = work / "results" / "quick" / "x" / ".fxbench-shards" / "x" / "k" / "robustness" / "chunk-000-linf"
    shard.parent.mkdir(parents=True)
    for suffix in (".parquet", ".safetensors", ".json"):
        shard.with_suffix(suffix).write_bytes(b"1" * 100)
    (shard.parent / "chunk-001-linf.parquet").write_bytes(b"unfinished: no .json")
    v2.pack(work, tmp_path / "out")
    got = _members(tmp_path / "out")
    rel = str(shard.relative_to(work))
    assert {rel + s for s in (".parquet", ".safetensors", ".json")} <= got
    assert not any("chunk-001" in n for n in got)


@pytest.mark.slow
def test_small_window_end_to_end_then_the_next_window_continues_from_its_shards(tmp_path):
    """The real script on the CPU (quick preset, 4 images of a synthetic release): window 1 is stopped after
    two finished shards (as the deadline would stop it), window 2 restores $OUT of window 1 and finishes the
    run, resuming those two shards. Measured: about 2-4 minutes on 2 shared cores."""
    sys.path.insert(0, str(REPO / "tests"))
    from data_fixtures.synthetic import make_release
    from fxbench.data.prepare import prepare

    prepared = tmp_path / "prepared"
    prepare(make_release(tmp_path / "release" / "FracAtlas"), out=prepared, workers=1)
    sid = "fxb-resnet10t-erm-v2"

    def window(k: int, *extra: str) -> str:
        r = subprocess.run(
            ["bash", str(REPO / "ops" / "gpu" / "gpu_v3.sh"), "--device", "cpu", "--preset", "quick", "--limit", "4",
             "--data", str(prepared), "--stash", str(tmp_path / f"stash{k}"), "--deadline", "500",
             "--only", sid, *extra],
            env=dict(os.environ, OUT=str(tmp_path / f"out{k}"), PYTHONUNBUFFERED="1"), capture_output=True,
            text=True, timeout=600,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    log1 = window(1, "--stop-after-shards", "2")
    assert f"timeout  quick:{sid}" in log1, log1[-3000:]  # stopped as the deadline stops a run
    shipped = _members(tmp_path / "out1")
    shards = [n for n in shipped if ".fxbench-shards" in n and n.endswith(".json")]
    assert len(shards) >= 2, sorted(shipped)
    assert not any(n.endswith("result.json") and f"/{sid}/{sid}/" in n for n in shipped)  # not finished
    out1 = tmp_path / "out1"
    assert (out1 / "gpu_v3.log").is_file() and len(list(out1.iterdir())) <= 8

    log2 = window(2, "--resume", str(out1))
    assert f"ok  quick:{sid}" in log2, log2[-3000:]
    got = _members(tmp_path / "out2")
    assert f"results/quick/{sid}/{sid}/result.json" in got
    first = (tmp_path / "stash1" / "work-v3" / "logs" / f"quick_{sid}.log").read_text()
    assert "cost:" in first and "robustness (fxbench-AA v3, quick" in first, first[-2000:]  # priced before work
    job_log = (tmp_path / "stash2" / "work-v3" / "logs" / f"quick_{sid}.log").read_text()
    assert "every robustness shard is resumed" in job_log, job_log[-2000:]
    assert "resumed 2" in " ".join(job_log.split()), job_log[-2000:]  # the summary: shards run 1, resumed 2
