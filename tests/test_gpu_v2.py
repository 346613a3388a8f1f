"""ops/gpu/gpu_v2.py and gpu_v2.sh: the GPU window's packing into $OUT, the payload split over calls, resume
from an earlier window's output, and (slow) the whole script end to end on the CPU in its small mode."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


def _load():
    spec = importlib.util.spec_from_file_location("gpu_v2", REPO / "ops" / "gpu" / "gpu_v2.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_v2"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


gpu_v2 = _load()


def _file(path: Path, size: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"x" * (size % 32))


def _work(tmp_path: Path) -> Path:
    """A work folder as a window leaves it: quick and full results, trained submissions, full-run shards."""
    w = tmp_path / "work"
    _file(w / "timings.tsv", 100)
    _file(w / "logs" / "quick_a.log", 100)
    for i, sid in enumerate(["ref", "erm", "pgd"]):
        _file(w / "results" / "quick" / sid / sid / "result.json", 1000, i)
        _file(w / "results" / "quick" / sid / sid / "samples.parquet", MIB, i)
    for i, sid in enumerate(["erm-v2", "pgd-v2"]):
        _file(w / "submissions" / sid / "model.yaml", 500, i)
        _file(w / "submissions" / sid / "weights.safetensors", 9 * MIB, 10 + i)
    _file(w / "results" / "full" / "ref" / "ref" / "result.json", 1000, 20)
    shard = w / "results" / "full" / "erm-v2" / ".fxbench-shards" / "erm-v2" / "k" / "robustness" / "chunk-000"
    _file(shard.with_suffix(".parquet"), 3 * MIB, 30)
    _file(shard.with_suffix(".json"), 100, 31)
    _file(shard.parent / "chunk-001.parquet", 100, 32)  # no .json: an unfinished shard, never shipped
    return w


def _members(out: Path) -> dict[str, int]:
    names: dict[str, int] = {}
    for t in sorted(out.glob("state-*.tar")):
        with tarfile.open(t) as tar:
            for m in tar.getmembers():
                assert m.name not in names, f"{m.name} twice"
                names[m.name] = m.size
    return names


def test_pack_keeps_to_the_limits_most_valuable_first_and_ships_the_rest_next_call(tmp_path):
    w, out = _work(tmp_path), tmp_path / "out"
    # Budget 14 MiB in tars of at most 10 MiB: meta, the three quick results (3 MiB), one submission (9 MiB)
    # and the small full result fit; the second submission and the 3 MiB shard wait.
    gpu_v2.pack(w, out, budget_mib=14, part_mib=10, max_tars=7)
    tars = sorted(out.glob("state-*.tar"))
    assert all(t.stat().st_size <= 10 * MIB for t in tars)
    first = _members(out)
    assert {"timings.tsv", "logs/quick_a.log", "results/quick/ref/ref/samples.parquet"} <= set(first)
    assert "submissions/erm-v2/weights.safetensors" in first  # submissions before full results and shards
    assert "submissions/pgd-v2/weights.safetensors" not in first
    assert not any("chunk-001" in n for n in first)
    assert "results/full/ref/ref/result.json" in first  # a small item still fills the budget left

    # Next call on the same machine: what came back is not shipped again; the rest is.
    gpu_v2.mark_shipped(w)
    out2 = tmp_path / "out2"
    gpu_v2.pack(w, out2, budget_mib=14, part_mib=10, max_tars=7)
    second = _members(out2)
    assert "submissions/pgd-v2/weights.safetensors" in second and "results/full/ref/ref/result.json" not in second
    assert "results/quick/ref/ref/samples.parquet" not in second and "timings.tsv" in second  # meta always
    shard = "results/full/erm-v2/.fxbench-shards/erm-v2/k/robustness/chunk-000"
    assert {f"{shard}.parquet", f"{shard}.json"} <= set(second)  # a finished shard travels whole
    assert not any("chunk-001" in n for n in second)


def test_pack_never_exceeds_the_number_of_files_and_removes_stale_tars(tmp_path):
    w, out = _work(tmp_path), tmp_path / "out"
    gpu_v2.pack(w, out, budget_mib=60, part_mib=10, max_tars=2)
    assert len(list(out.glob("state-*.tar"))) <= 2 and not list(out.glob(".state-*"))
    _file(out / "state-5.tar", 10)  # a stale tar of an earlier, bigger pack
    gpu_v2.pack(w, out, budget_mib=60, part_mib=10, max_tars=2)
    assert not (out / "state-5.tar").exists()


def test_restore_unpacks_earlier_windows_and_does_not_ship_them_again(tmp_path):
    w, out = _work(tmp_path), tmp_path / "out"
    gpu_v2.pack(w, out, budget_mib=60, part_mib=15, max_tars=7)
    fresh = tmp_path / "fresh"
    n = gpu_v2.restore(out, fresh)
    assert n == len(_members(out))
    assert (fresh / "submissions" / "erm-v2" / "weights.safetensors").read_bytes() == (
        w / "submissions" / "erm-v2" / "weights.safetensors"
    ).read_bytes()
    jobs = gpu_v2.plan(REPO, fresh)
    done = {j.name for j in jobs if gpu_v2.finished(j, fresh, REPO)}
    assert "quick:ref" not in done  # "ref" is not an id of the plan; the plan's ids are checked below
    assert all(
        j.name in done for j in jobs if j.kind == "train" and (fresh / "submissions" / j.sid).is_dir()
    )
    out2 = tmp_path / "out2"
    gpu_v2.pack(fresh, out2, budget_mib=60)
    assert set(_members(out2)) <= {"timings.tsv", "logs/quick_a.log"}  # only the meta item again


def test_restore_refuses_paths_outside_the_work_folder(tmp_path):
    evil = tmp_path / "prev"
    evil.mkdir()
    with tarfile.open(evil / "state-0.tar", "w") as tar:
        for name in ("../escaped.txt", "/abs.txt", "ok.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    gpu_v2.restore(evil, tmp_path / "work")
    assert (tmp_path / "work" / "ok.txt").is_file() and not (tmp_path / "escaped.txt").exists()


def _payload_calls(tmp_path: Path, repo: Path, n_parts: int = 2) -> bytes:
    """A payload (one file) as gpu_pack.sh writes it: an xz tar split into parts, one per call folder."""
    src = tmp_path / "payload-src"
    _file(src / "data" / "fxbench.json", 300, 1)
    _file(src / "whl" / "x.whl", 5000, 2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        tar.add(src, arcname=".")
    blob = buf.getvalue()
    size = -(-len(blob) // n_parts)
    parts = [blob[i : i + size] for i in range(0, len(blob), size)]
    entries = [
        {"name": f"payload.tar.xz.part-{i:02d}", "bytes": len(p), "sha256": hashlib.sha256(p).hexdigest()}
        for i, p in enumerate(parts)
    ]
    man = {"id": "abc123", "parts": entries}
    for i, (p, e) in enumerate(zip(parts, entries), 1):
        call = repo / ".gpu" / f"call-{i}"
        call.mkdir(parents=True)
        (call / e["name"]).write_bytes(p)
        (call / "manifest-abc123.json").write_text(json.dumps(man))
    return (src / "whl" / "x.whl").read_bytes()


def _assemble(stash: Path, repo: Path) -> int:
    import argparse

    return gpu_v2.cmd_assemble(argparse.Namespace(stash=str(stash), repo=str(repo)))


def test_assemble_waits_for_every_part_then_unpacks_once(tmp_path, capsys):
    repo, stash = tmp_path / "repo", tmp_path / "stash"
    wheel = _payload_calls(tmp_path, repo)
    call2 = repo / ".gpu" / "call-2"
    hidden = tmp_path / "later"
    call2.rename(hidden)  # first call: only part 1 travels
    assert _assemble(stash, repo) == 3
    assert "still to carry: payload.tar.xz.part-01" in capsys.readouterr().out
    (repo / ".gpu" / "call-1").rename(tmp_path / "gone")  # second call: only part 2; part 1 is in the stash
    hidden.rename(call2)
    assert _assemble(stash, repo) == 0
    assert (stash / "payload" / "whl" / "x.whl").read_bytes() == wheel
    assert _assemble(stash, repo) == 0 and "already unpacked" in capsys.readouterr().out


def test_assemble_refuses_a_corrupt_part(tmp_path, capsys):
    repo, stash = tmp_path / "repo", tmp_path / "stash"
    _payload_calls(tmp_path, repo)
    part = next((repo / ".gpu" / "call-2").glob("payload.*"))
    part.write_bytes(b"\0" + part.read_bytes()[1:])
    assert _assemble(stash, repo) == 3
    assert "corrupt" in capsys.readouterr().out and not (stash / "payload" / "whl").exists()


def test_plan_is_in_order_of_value_and_every_v2_config_exists():
    from fxbench.training import load_config

    jobs = gpu_v2.plan(REPO, Path("/nowhere"))
    names = [j.name for j in jobs]
    committed = [f"quick:{s}" for s in gpu_v2.COMMITTED] + [f"quick:{gpu_v2.REFERENCE}"]
    assert names[:4] == committed
    assert names.index("train:fxb-resnet10t-erm-v2") < names.index("quick:fxb-resnet10t-erm-v2") < names.index(
        "full:fxb-resnet10t-erm-v2"
    )
    assert all(n.startswith("full:") for n in names[names.index(f"full:{gpu_v2.REFERENCE}") :])
    for config, sid in gpu_v2.TRAINED:
        assert load_config(config).id == sid
    for sid in [*gpu_v2.COMMITTED, gpu_v2.REFERENCE]:
        assert (REPO / "submissions" / sid / "model.yaml").is_file()


@pytest.mark.slow
def test_small_mode_end_to_end_then_resume_from_its_own_output(tmp_path):
    """The real script on the CPU: train a tiny v2 baseline, evaluate it (quick preset, 4 images), pack; then a
    fresh machine resumes from that output and redoes nothing. Measured: about 2-4 minutes on 2 shared cores."""
    sys.path.insert(0, str(REPO / "tests"))
    from data_fixtures.synthetic import make_release
    from fxbench.data.prepare import prepare

    prepared = tmp_path / "prepared"
    prepare(make_release(tmp_path / "release" / "FracAtlas"), out=prepared, workers=1)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # A v2 baseline not committed yet (a committed one counts as trained: the window would not train it).
    left = [sid for _, sid in gpu_v2.TRAINED if not (REPO / "submissions" / sid).exists()]
    assert left, "every v2 baseline is committed: give this test a config of its own to train"
    sid = left[-1]
    # Two evaluations at once (jobs 2): in the first window they shared one --out and the second was refused.
    only = f"train:{sid},quick:{gpu_v2.REFERENCE},quick:{sid}"

    def window(k: int, *extra: str) -> str:
        r = subprocess.run(
            ["bash", str(REPO / "ops" / "gpu" / "gpu_v2.sh"), "--device", "cpu", "--small", "--data", str(prepared),
             "--stash", str(tmp_path / f"stash{k}"), "--deadline", "400", "--jobs", "2", "--only", only, *extra],
            env=dict(env, OUT=str(tmp_path / f"out{k}")), capture_output=True, text=True, timeout=600,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    log1 = window(1)
    assert f"ok  train:{sid}" in log1 and f"ok  quick:{sid}" in log1, log1[-3000:]
    got = _members(tmp_path / "out1")
    assert f"submissions/{sid}/learning_curves.png" in got
    assert f"results/quick/{sid}/{sid}/result.json" in got
    assert f"results/quick/{gpu_v2.REFERENCE}/{gpu_v2.REFERENCE}/result.json" in got  # ran beside the other
    assert (tmp_path / "out1" / "gpu_v2.log").is_file() and len(list((tmp_path / "out1").iterdir())) <= 8

    log2 = window(2, "--resume", str(tmp_path / "out1"))
    redone = ", ".join(sorted([f"quick:{gpu_v2.REFERENCE}", f"quick:{sid}", f"train:{sid}"]))
    assert f"already finished (not redone): {redone}" in log2, log2[-3000:]
    assert "start " not in log2
    assert set(_members(tmp_path / "out2")) <= {"timings.tsv", "summary.txt"} | {
        n for n in got if n.startswith("logs/")
    }


def test_slim_resume_carries_markers_shards_and_untracked_baselines_only(tmp_path):
    w, out = _work(tmp_path), tmp_path / "out"
    gpu_v2.pack(w, out, budget_mib=60, part_mib=15, max_tars=7)
    repo = tmp_path / "repo"
    (repo / "submissions" / "pgd-v2").mkdir(parents=True)  # committed meanwhile: travels with the tree
    resume = tmp_path / "payload" / "resume" / "resume.tar"
    gpu_v2.slim_resume(out, resume, repo)
    with tarfile.open(resume) as tar:
        names = set(tar.getnames())
    shard = "results/full/erm-v2/.fxbench-shards/erm-v2/k/robustness/chunk-000"
    assert names == {
        "results/quick/ref/ref/result.json",
        "results/quick/erm/erm/result.json",
        "results/quick/pgd/pgd/result.json",
        "results/full/ref/ref/result.json",
        "submissions/erm-v2/model.yaml",
        "submissions/erm-v2/weights.safetensors",
        f"{shard}.parquet",
        f"{shard}.json",
    }
    assert resume.stat().st_size < 15 * MIB  # no samples.parquet, no committed weights
    # A fresh machine restores it: finished results count as done and are not shipped back.
    fresh = tmp_path / "fresh"
    gpu_v2.restore(resume.parent, fresh)
    assert (fresh / "results" / "quick" / "erm" / "erm" / "result.json").is_file()
    gpu_v2.pack(fresh, tmp_path / "out2", budget_mib=60)
    assert not list((tmp_path / "out2").glob("state-*.tar"))


def test_each_evaluation_has_its_own_out_folder(tmp_path):
    """`fxbench run` allows one run per --out at a time: evaluations running side by side need their own."""
    import argparse

    a = argparse.Namespace(device="cpu", small=False, data=None, reserve=10)
    jobs = [j for j in gpu_v2.plan(REPO, tmp_path) if j.kind != "train"]
    outs = {(j.kind, j.sid): gpu_v2._command(j, a, 500, tmp_path, REPO) for j in jobs}
    got = {c[c.index("--out") + 1] for c in outs.values()}
    assert len(got) == len(jobs)


def test_restore_moves_the_first_windows_shared_layout_into_per_job_folders(tmp_path):
    old = tmp_path / "old"
    _file(old / "results" / "quick" / "erm" / "result.json", 100, 1)
    _file(old / "results" / "quick" / "erm" / "gallery" / "a.png", 100, 2)
    shard = old / "results" / "full" / ".fxbench-shards" / "ref" / "k" / "clean" / "chunk-000.json"
    _file(shard, 100, 3)
    tars = tmp_path / "tars"
    tars.mkdir()
    with tarfile.open(tars / "state-0.tar", "w") as tar:
        for p in sorted(q for q in old.rglob("*") if q.is_file()):
            tar.add(p, arcname=str(p.relative_to(old)))
    fresh = tmp_path / "fresh"
    gpu_v2.restore(tars, fresh)
    assert (fresh / "results" / "quick" / "erm" / "erm" / "result.json").is_file()
    assert (fresh / "results" / "quick" / "erm" / "erm" / "gallery" / "a.png").is_file()
    assert (fresh / "results" / "full" / "ref" / ".fxbench-shards" / "ref" / "k" / "clean" / "chunk-000.json").is_file()
    assert not (fresh / "results" / "full" / ".fxbench-shards").exists()
    job = next(j for j in gpu_v2.plan(REPO, fresh) if j.name == f"quick:{gpu_v2.COMMITTED[0]}")
    assert not gpu_v2.finished(job, fresh, REPO)  # "erm" is not a plan id; the layout is what is checked
    assert (gpu_v2.result_dir(fresh, "quick", "erm") / "result.json").is_file()
