"""Shards per second and Ray's scheduling overhead per shard, against the local runner, on the same work.

One invocation, every number from it (ratios, not absolute targets): the same submission, images, preset and
shards run (1) with the local runner in this process at one torch thread, (2) on a local Ray cluster with one
CPU (one worker: the same serial work, so the difference is what Ray adds per shard: worker start, model load
per worker, data and results through the object store, the driver saving each shard) and (3) with N CPUs
(shards in parallel). Each Ray cluster runs the work twice: cold (new worker processes) and warm (workers kept,
model and data already loaded: what a long leaderboard run sees after its first shards). Every run must give
the same samples.parquet bytes; the script says so.

    python scripts/bench_scale_out.py [--limit 16] [--chunk 2] [--cpus 2] [--submission model.yaml] [--json F]

Default work: timm's test_resnet (tiny) on the embedded subset, quick preset, every battery, chunks of 2
images (many short shards: the worst case for overhead). ``--submission`` measures a real model instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def tiny_submission(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_run import make_submission

    return make_submission(folder, sub_id="bench-tiny")


def timed_run(path: Path, out: Path, executor, opts: dict) -> dict:
    from fxbench.run import Progress, run_submission

    marks: dict = {}

    def start(total: int) -> None:
        marks["start"] = time.perf_counter()
        marks["total"] = total

    def advance(battery: str, key: str, resumed: bool) -> None:
        marks["last"] = time.perf_counter()

    t0 = time.perf_counter()
    r = run_submission(path, out=out, executor=executor, progress=Progress(start=start, advance=advance), **opts)
    wall = time.perf_counter() - t0
    shard_phase = marks["last"] - marks["start"]  # shards and the finalizes between batteries
    return {
        "wall_s": round(wall, 3),
        "shard_phase_s": round(shard_phase, 3),
        "shards": r.shards_run,
        "shards_per_s": round(r.shards_run / shard_phase, 3),
        "samples": (r.out_dir / "samples.parquet").read_bytes(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=2, help="images per shard (every battery)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the parallel Ray cluster")
    ap.add_argument("--submission", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import ray
    from fxbench.definition import BenchmarkDefinition
    from fxbench.executors.ray import RayExecutor

    torch.set_num_threads(1)  # the same per-shard compute as a 1-CPU Ray task (Ray sets OMP_NUM_THREADS=1)
    original = BenchmarkDefinition.battery_config

    def battery_config(self, battery, preset):  # the driver plans the shards; workers get the config in the job
        cfg = original(self, battery, preset)
        return {**cfg, "chunk_size": args.chunk} if "chunk_size" in cfg else cfg

    BenchmarkDefinition.battery_config = battery_config
    tmp = Path(tempfile.mkdtemp(prefix="fxbench-bench-scale-out-"))
    try:
        path = args.submission or tiny_submission(tmp / "sub")
        opts = dict(preset="quick", device="cpu", limit=args.limit)
        runs = {"local": timed_run(path, tmp / "local", None, opts)}
        inits = {}
        for cpus in (1, args.cpus):
            t0 = time.perf_counter()
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            inits[cpus] = round(time.perf_counter() - t0, 3)
            for state in ("cold", "warm"):
                runs[f"ray-{cpus}cpu-{state}"] = timed_run(path, tmp / f"ray{cpus}{state}", RayExecutor(), opts)
            ray.shutdown()
    finally:
        BenchmarkDefinition.battery_config = original
        shutil.rmtree(tmp, ignore_errors=True)

    local = runs["local"]
    n = local["shards"]
    report = {
        "machine": "2-core x86_64 CPU, shared with other jobs (no GPU)",
        "work": {"submission": str(args.submission or "tiny test_resnet"), "limit": args.limit, "chunk": args.chunk,
                 "preset": "quick", "shards": n},
        "ray_init_s": inits,
        "identical_samples_bytes": all(r["samples"] == local["samples"] for r in runs.values()),
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "samples"} for k, v in runs.items()},
        "local_s_per_shard": round(local["shard_phase_s"] / n, 3),
    }
    for state in ("cold", "warm"):
        serial = runs[f"ray-1cpu-{state}"]
        par = runs[f"ray-{args.cpus}cpu-{state}"]
        report[f"overhead_s_per_shard_{state}"] = round((serial["shard_phase_s"] - local["shard_phase_s"]) / n, 3)
        report[f"ratio_ray1_vs_local_{state}"] = round(serial["shard_phase_s"] / local["shard_phase_s"], 3)
        report[f"speedup_ray{args.cpus}_vs_local_{state}"] = round(local["shard_phase_s"] / par["shard_phase_s"], 3)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
