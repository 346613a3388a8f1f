"""`--executor ray`: the same shards as Ray tasks on a local 2-CPU cluster (one per module), the same files.

Every run here is the tiny timm model on the embedded subset with --limit, every battery, chunks of 2 images
(several shards per battery). The local runner's result is the reference: a Ray run (also one that loses a
worker mid-shard), a resumed run under either executor, and run-many must publish the same bytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch
from fxbench import run as run_module
from fxbench.definition import BenchmarkDefinition, load_definition
from fxbench.errors import FxbenchError, SubmissionError
from fxbench.executors.ray import RayExecutor
from test_run import make_submission
from test_run_faults import faulty_submission

LIMIT = 4
OPTS = dict(preset="quick", device="cpu", limit=LIMIT)
TASK_TITLE = b"ray::fxbench_shard"  # the process title of a Ray worker while it runs a shard


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster (2 CPUs, no dashboard) for the module; workers inherit this environment."""
    home = os.environ.get("FXBENCH_HOME")
    os.environ["FXBENCH_HOME"] = str(tmp_path_factory.mktemp("ray-home"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if home is None:
            os.environ.pop("FXBENCH_HOME", None)
        else:
            os.environ["FXBENCH_HOME"] = home


@pytest.fixture(scope="module", autouse=True)
def two_image_chunks():
    """Shards of 2 images: several shards per battery even with --limit 4 (sent to workers in the job)."""
    original = BenchmarkDefinition.battery_config

    def battery_config(self, battery, preset):
        cfg = original(self, battery, preset)
        return {**cfg, "chunk_size": 2} if "chunk_size" in cfg else cfg

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BenchmarkDefinition, "battery_config", battery_config)
        yield


@pytest.fixture(scope="module")
def submission(tmp_path_factory) -> Path:
    return make_submission(tmp_path_factory.mktemp("sub") / "sub")


@pytest.fixture(scope="module")
def reference(submission, tmp_path_factory):
    """The local runner's result: what every executor must reproduce."""
    return run_module.run_submission(submission, out=tmp_path_factory.mktemp("ref"), **OPTS)


def untimed(x):
    """A result block without wall-clock timings (``seconds_by``, ``timings_s``, the robustness ``time_floor``
    with its measured rates, ...): they differ run to run."""
    if isinstance(x, dict):
        return {k: untimed(v) for k, v in x.items() if not any(t in k for t in ("seconds", "timings", "time_floor"))}
    if isinstance(x, list):
        return [untimed(v) for v in x]
    return x


def assert_same_result(a: Path, b: Path) -> None:
    """Same samples.parquet bytes and the same result.json but for when and how long it ran."""
    assert (a / "samples.parquet").read_bytes() == (b / "samples.parquet").read_bytes()
    ra, rb = (json.loads((p / "result.json").read_text()) for p in (a, b))
    for key in ("benchmark", "submission", "metrics", "flags", "files"):
        assert ra[key] == rb[key], key
    assert untimed(ra["components"]) == untimed(rb["components"])
    assert sorted(p.relative_to(a) for p in a.rglob("*")) == sorted(p.relative_to(b) for p in b.rglob("*"))


def shard_workers() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(TASK_TITLE):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def no_shard_left_running(timeout: float = 20) -> bool:
    """True once no worker runs a shard (a cancelled task's worker is killed asynchronously)."""
    deadline = time.monotonic() + timeout
    while shard_workers():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_ray_is_imported_only_when_asked_for():
    code = "import sys, fxbench.cli, fxbench.run, fxbench.executors; print('ray' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_without_ray_installed_the_executor_says_how_to_get_it(monkeypatch):
    from fxbench.executors import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FxbenchError, match=r"pip install 'fxbench\[ray\]'"):
        make_executor("ray").run([], progress=run_module.Progress(), on_done=None)
    with pytest.raises(FxbenchError, match="--executor 'dask'"):
        make_executor("dask")


@pytest.mark.slow
def test_ray_run_gives_the_local_result_files(cluster, submission, reference, tmp_path):
    seen = []
    progress = run_module.Progress(start=seen.append, advance=lambda b, k, r: seen.append((b, k, r)))
    r = run_module.run_submission(submission, out=tmp_path, executor=RayExecutor(max_retries=1), progress=progress,
                                  **OPTS)
    assert_same_result(reference.out_dir, r.out_dir)
    assert r.shards_run == reference.shards_run >= 5 and r.shards_resumed == 0
    assert seen[0] == r.shards_run and len(seen[1:]) == r.shards_run  # one bar, advanced once per shard
    assert {b for b, _, _ in seen[1:]} == set(load_definition().raw["batteries"])  # every battery of the version


@pytest.mark.slow
def test_a_worker_killed_mid_shard_is_rerun_and_changes_nothing(cluster, submission, reference, tmp_path):
    killed: list[int] = []
    stop = threading.Event()

    def killer():  # SIGKILL the first worker process seen running a shard
        while not stop.is_set() and not killed:
            for pid in shard_workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.01)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        r = run_module.run_submission(submission, out=tmp_path, executor=RayExecutor(max_retries=2), **OPTS)
    finally:
        stop.set()
        t.join()
    assert killed, "no worker was seen running a shard"
    assert_same_result(reference.out_dir, r.out_dir)


@pytest.mark.slow
def test_a_shard_that_always_fails_stops_the_run_with_the_local_error(cluster, tmp_path, cli):
    yaml_path = faulty_submission(tmp_path / "sub", "raise")
    armed = tmp_path / "sub" / "ARMED"
    from fxbench.executors import ray as ray_executor

    original = ray_executor._Scheduler.run

    def armed_run(self):  # after the driver's checks, before the first shard: every worker fails
        armed.write_text("")
        return original(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray_executor._Scheduler, "run", armed_run)
        t0 = time.monotonic()
        r = cli("run", yaml_path, "--out", tmp_path / "out", "--trust-code", "--device", "cpu", "--preset", "quick",
                "--limit", "4", "--executor", "ray")
    assert r.exit_code == 2, r
    assert time.monotonic() - t0 < 60  # not retried as if a worker had died, no hang
    assert r.stderr.count("error: ") == 1 and "Traceback" not in r.stderr
    assert "model 'faulty-raise'" in r.stderr and "raised ValueError during the clean battery (shard" in r.stderr
    assert not (tmp_path / "out" / "faulty-raise" / "result.json").exists()
    assert no_shard_left_running()


@pytest.mark.slow
def test_resume_local_after_ray_and_ray_after_local(cluster, submission, reference, tmp_path, monkeypatch):
    # 1. a Ray run stopped (as by Ctrl-C) after its second shard arrived: its tasks are cancelled ...
    arrived = []

    def interrupt(battery, key, resumed):
        arrived.append(key)
        if len(arrived) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_module.run_submission(submission, out=tmp_path / "a", executor=RayExecutor(),
                                  progress=run_module.Progress(advance=interrupt), **OPTS)
    assert not (tmp_path / "a" / "tiny-test" / "result.json").exists()
    assert no_shard_left_running()  # cancelled, not left running
    # ... and the local runner resumes it
    local = run_module.run_submission(submission, out=tmp_path / "a", **OPTS)
    assert local.shards_resumed >= 2 and local.shards_run >= 1
    assert_same_result(reference.out_dir, local.out_dir)

    # 2. a local run stopped after its first robustness shard, resumed on Ray
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
        run_module.run_submission(submission, out=tmp_path / "b", **OPTS)
    monkeypatch.setattr(RobustnessBattery, "run_shard", original)
    on_ray = run_module.run_submission(submission, out=tmp_path / "b", executor=RayExecutor(), **OPTS)
    assert on_ray.shards_resumed >= 3 and on_ray.shards_run >= 1  # clean (2) and one robustness shard
    assert_same_result(reference.out_dir, on_ray.out_dir)


@pytest.mark.slow
def test_workers_hash_check_the_checkpoint_they_load(cluster, tmp_path):
    yaml_path = make_submission(tmp_path / "sub", sub_id="swapped")
    weights = tmp_path / "sub" / "weights.safetensors"

    def swap(total):  # after the driver checked it, before any worker loads it
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)

    with pytest.raises(SubmissionError, match="sha256"):
        run_module.run_submission(yaml_path, out=tmp_path / "out", executor=RayExecutor(),
                                  progress=run_module.Progress(start=swap), **OPTS)
    assert not (tmp_path / "out" / "swapped" / "result.json").exists()


def test_workers_refuse_an_entrypoint_without_trust_code(cluster, tmp_path):
    from conftest import make_evalset
    from fxbench.executors.ray import _task
    from fxbench.executors.worker import ShardJob

    yaml_path = faulty_submission(tmp_path / "sub", "raise")
    job = ShardJob(yaml_path=str(yaml_path), yaml_sha256="0" * 64, checkpoint_sha256="0" * 64, trust_code=False,
                   device="cpu", seed=0, preset="quick", work_dir=str(tmp_path), battery="clean", config={},
                   key="chunk-000")
    ref = _task(ray).remote(job, [ray.put(make_evalset(4))], [ray.put(({}, {}))])
    with pytest.raises(ray.exceptions.RayTaskError) as e:
        ray.get(ref)
    assert isinstance(e.value.cause, SubmissionError) and "--trust-code" in str(e.value.cause)


@pytest.mark.slow
def test_run_many_on_ray_one_queue_each_result_whole(cluster, submission, reference, tmp_path, cli):
    other = make_submission(tmp_path / "other", sub_id="tiny-other", seed=1)
    out = tmp_path / "out"
    r = cli("run-many", submission, other, tmp_path / "missing", "--executor", "ray", "--out", out,
            "--device", "cpu", "--preset", "quick", "--limit", str(LIMIT))
    assert r.exit_code == 2, r  # one of three could not be read: named, the others published
    assert r.stderr.count("error: ") == 1 and str(tmp_path / "missing") in r.stderr
    assert_same_result(reference.out_dir, out / "tiny-test")
    result = json.loads((out / "tiny-other" / "result.json").read_text())
    assert result["submission"]["id"] == "tiny-other" and result["benchmark"]["dataset"]["n"] == LIMIT
    assert not (out / ".fxbench-shards").exists()  # every submission's shards dropped once it was published
    assert r.stdout.split() == [str(out / "tiny-test" / "result.json"), str(out / "tiny-other" / "result.json")]


@pytest.mark.slow
def test_ctrl_c_cancels_the_tasks_and_says_how_to_resume(cluster, submission, tmp_path):
    """A real SIGINT to `fxbench run --executor ray` joined to this module's cluster."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fxbench", "run", str(submission), "--executor", "ray", "--ray-address", cluster,
           "--out", str(out), "--device", "cpu", "--preset", "quick", "--limit", "8", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not shard_workers() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "error: interrupted; rerun the same command to resume" in err and "Traceback" not in err
    assert no_shard_left_running()
    assert not (out / "tiny-test" / "result.json").exists()


@pytest.mark.slow
def test_a_shard_on_ray_computes_with_the_drivers_thread_count(cluster):
    """CPU numbers depend on torch's thread count in the last bits (resnet10t, 8 embedded images: one logit). A task runs
    with the driver's count, so a local run at 2 threads and its Ray run agree; at 1 thread they would not."""
    from conftest import REPO
    from fxbench.battery import RunContext, seed_everything
    from fxbench.clean import CleanBattery
    from fxbench.data import load_arrays
    from fxbench.definition import load_definition
    from fxbench.executors.ray import _task
    from fxbench.executors.worker import ShardJob
    from fxbench.models import load_submission, strict_fp32

    yaml_path = REPO / "submissions" / "fxb-resnet10t-erm" / "model.yaml"
    sub = load_submission(yaml_path, device="cpu")
    definition = load_definition(None)  # as `fxbench run`
    with pytest.warns(Warning):  # the embedded subset: not leaderboard data, fine here
        evalset = load_arrays(None, split=definition.raw["dataset"]["split"], limit=8)
    config = {**definition.battery_config("clean", "quick"), "chunk_size": 8}  # one batch of 8
    ctx = RunContext(device=torch.device("cpu"), seed=0, preset="quick", work_dir=Path("."))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seed_everything(ctx.shard_seed("clean", "chunk-000"))
        with strict_fp32():
            local = CleanBattery().run_shard("chunk-000", model=sub.model, evalset=evalset, config=config, ctx=ctx)
    finally:
        torch.set_num_threads(threads)
    data, prev = ray.put(evalset), ray.put(({}, {}))
    got = {}
    for n in (2, 1):
        job = ShardJob(yaml_path=str(yaml_path), yaml_sha256=sub.yaml_sha256, checkpoint_sha256=sub.checkpoint_sha256,
                       trust_code=False, device="cpu", seed=0, preset="quick", work_dir=".", battery="clean",
                       config=config, key="chunk-000", threads=n)
        got[n] = ray.get(_task(ray).remote(job, [data], [prev])).samples
    pd.testing.assert_frame_equal(got[2], local.samples, check_exact=True)
    assert not got[1]["clean/p_fracture"].equals(local.samples["clean/p_fracture"])  # the test can fail


def test_a_worker_loads_the_model_and_fetches_the_data_once_for_many_shards(cluster, submission, monkeypatch):
    """The task body (run in this process here, to count): two shards, one model load, one fetch of each box."""
    from conftest import make_evalset
    from fxbench.executors import worker
    from fxbench.models import load_submission

    loads, gets = [], []
    monkeypatch.setattr("fxbench.models.load_submission",
                        lambda *a, **k: loads.append(a) or load_submission(*a, **k))
    real_get = ray.get
    monkeypatch.setattr(ray, "get", lambda ref: gets.append(ref) or real_get(ref))
    monkeypatch.setattr(worker, "_MODELS", type(worker._MODELS)())
    sub = load_submission(submission)
    data, prev = ray.put(make_evalset(4)), ray.put(({}, {}))
    for key in ("chunk-000", "chunk-001"):
        job = worker.ShardJob(yaml_path=str(submission), yaml_sha256=sub.yaml_sha256,
                              checkpoint_sha256=sub.checkpoint_sha256, trust_code=False, device="cpu", seed=0,
                              preset="quick", work_dir=".", battery="clean", key=key,
                              config={"batch_size": 2, "chunk_size": 2, "threshold": 0.5}, threads=1)
        out = worker.run_boxed(job, [data], [prev])
        assert len(out.samples) == 2
    assert len(loads) == 1 and len(gets) == 2


def test_a_cluster_without_a_node_for_the_threads_is_refused(cluster, submission, tmp_path):
    ex = RayExecutor()
    ex.threads = 64  # as a driver on a 64-core machine against this 2-CPU cluster: tasks would wait forever
    with pytest.raises(FxbenchError, match="no Ray node has 64 CPUs .* OMP_NUM_THREADS=2"):
        run_module.run_submission(submission, out=tmp_path, executor=ex, **OPTS)
