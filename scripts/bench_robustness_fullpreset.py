"""fxbench-AA v3 on a CPU, in one run: what the full preset issues and costs, the bfloat16 search against the
float32 one, and the README's first run.

    python scripts/bench_robustness_fullpreset.py --out /tmp/v3.json            # everything (~10 min idle)
    python scripts/bench_robustness_fullpreset.py --only calls --limit 4         # one part

Parts:
- calls: the v3 full preset (unchanged) on PGD-AT-v2 over the first --limit embedded images: model calls against
  the iterations one stream per attack and budget needs (floor.required_calls; target <= 1.1, every call of the
  run in the numerator), passes done against passes required (target <= 1.05), wall against the time floor;
- bf16: images broken per baseline and budget (float32 verdict) with the attacks' search in float32 and in
  bfloat16 autocast (the v3 cascade at 4/255 and L2 with fewer steps: --bf16-images, APGD --bf16-apgd steps,
  Square --bf16-queries), the condition for `search_dtype: bfloat16` (no fewer than float32, beyond one image);
- first-run: `fxbench run submissions/fxb-resnet10t-pgdat/model.yaml` exactly as the README gives it, in a child
  process under /usr/bin/time -v with a fresh FXBENCH_HOME (embedded subset, quick preset): CPU seconds (user +
  sys), peak memory, and the CPU seconds of each battery (process time inside its shards and finalize), and
  the first lines of the summary it prints (targets: <= 90 CPU-s, <= 3 GB).
CPU seconds depend on the machine's load (torch's threads contend with other processes): the script records the
load average before and after each part.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BASELINES = ["fxb-resnet10t-erm-v2", "fxb-resnet10t-pgdat-v2", "fxb-resnet10t-trades-v2", "fxb-effb0-erm-v2",
             "fxb-resnet10t-pgdat", "fxb-resnet10t-fgsmrs"]


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def part_calls(limit: int, submission: str) -> dict:
    from fxbench.robustness.floor import ratios
    from fxbench.run import run_submission

    t0, w0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        r = run_submission(REPO / "submissions" / submission / "model.yaml", preset="full", device="cpu",
                           limit=limit, out=tmp, batteries=["clean", "robustness"])
    info = r.result["components"]["robustness"]
    return {
        "submission": submission, "images": len(r.samples), "cpu_s": round(time.process_time() - t0, 1),
        "wall_s": round(time.perf_counter() - w0, 1),
        "calls": info["calls"], "passes": ratios(info["passes"], info["passes_required"]),
        "time_floor": info.get("time_floor", {}).get("total"),
        "robust_accuracy": {c["budget"]: c["robust_accuracy"] for c in info["curve"]},
        "strength": {c["budget"]: c.get("strength") for c in info["curve"]},
    }


def part_bf16(images: int, apgd: int, queries: int, baselines: list[str]) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from fxbench.data import load_arrays
    from fxbench.models import load_submission
    from test_v3_fullpreset_bf16 import adversarial_counts

    ev = load_arrays(None, split="eval", limit=images)
    x, y, ids = ev.x, ev.y, list(ev.ids)
    out = {}
    for sid in baselines:
        model = load_submission(REPO / "submissions" / sid / "model.yaml", device="cpu").model
        row = {}
        for dtype in ("float32", "bfloat16"):
            w0 = time.perf_counter()
            counts, passes = adversarial_counts(model, x, y, ids, dtype, apgd=apgd, queries=queries)
            row[dtype] = {"broken": counts, "wall_s": round(time.perf_counter() - w0, 1),
                          "verdict_passes": passes.get("verdict", {}).get("fwd", 0)}
        row["ok"] = all(row["bfloat16"]["broken"][b] >= row["float32"]["broken"][b] - 1 for b in counts)
        out[sid] = row
        print(f"bf16 {sid}: {row}", flush=True)
    return {"images": images, "apgd_steps": apgd, "square_queries": queries, "by_baseline": out,
            "all_ok": all(r["ok"] for r in out.values())}


CHILD = r"""
import sys, time, json
from collections import defaultdict
from fxbench.battery import BATTERIES
cpu = defaultdict(float)
for name in ("clean", "robustness", "explanations"):
    cls = type(BATTERIES.get(name)())
    for method in ("run_shard", "finalize"):
        orig = getattr(cls, method)
        def wrapped(self, *a, __orig=orig, __name=name, **k):
            t0 = time.process_time()
            try:
                return __orig(self, *a, **k)
            finally:
                cpu[__name] += time.process_time() - t0
        setattr(cls, method, wrapped)
from fxbench.cli import main
sys.argv = ["fxbench", "run", "submissions/fxb-resnet10t-pgdat/model.yaml", "--out", sys.argv[1]]
try:
    main()
finally:
    print("BATTERY_CPU_S " + json.dumps({k: round(v, 1) for k, v in cpu.items()}), file=sys.stderr, flush=True)
"""


def part_first_run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, FXBENCH_HOME=str(Path(tmp) / "home"), COLUMNS="120")
        env.pop("FXBENCH_FRACATLAS", None)
        w0 = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", CHILD, str(Path(tmp) / "runs")], cwd=REPO,
                           env=env, capture_output=True, text=True)
        wall = time.perf_counter() - w0
    err = r.stderr

    def field(name: str) -> float:
        m = re.search(rf"{re.escape(name)}: ([0-9.]+)", err)
        return float(m.group(1)) if m else float("nan")

    user, sys_s, rss_kb = field("User time (seconds)"), field("System time (seconds)"), field(
        "Maximum resident set size (kbytes)")
    battery = re.search(r"BATTERY_CPU_S (\{.*\})", err)
    lines = [ln for ln in err.splitlines() if ln.startswith(("cost:", "  robustness", "  clean"))]
    return {
        "returncode": r.returncode, "wall_s": round(wall, 1), "cpu_s": round(user + sys_s, 1),
        "user_s": user, "sys_s": sys_s, "peak_gb": round(rss_kb / 2**20, 2),
        "cpu_s_by_battery": json.loads(battery.group(1)) if battery else None,
        "cost_print": lines, "summary_head": r.stdout.splitlines()[:8],
        "targets_met": {"cpu_s<=90": user + sys_s <= 90, "peak<=3GB": rss_kb / 2**20 <= 3},
        "tail": "" if r.returncode == 0 else err[-2000:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["calls", "bf16", "first-run"], action="append")
    ap.add_argument("--limit", type=int, default=4, help="images for the full-preset call count")
    ap.add_argument("--submission", default="fxb-resnet10t-pgdat-v2")
    ap.add_argument("--bf16-images", type=int, default=16)
    ap.add_argument("--bf16-apgd", type=int, default=20)
    ap.add_argument("--bf16-queries", type=int, default=200)
    ap.add_argument("--baselines", default=",".join(BASELINES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    parts = a.only or ["first-run", "calls", "bf16"]
    report: dict = {"torch": torch.__version__, "threads": a.threads, "cpu": _cpu()}
    for part in parts:
        before, t0 = load(), time.perf_counter()
        if part == "calls":
            report[part] = part_calls(a.limit, a.submission)
        elif part == "bf16":
            report[part] = part_bf16(a.bf16_images, a.bf16_apgd, a.bf16_queries, a.baselines.split(","))
        else:
            report[part] = part_first_run()
        report[part]["load_before_after"] = [before, load()]
        report[part]["part_wall_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({part: report[part]}, indent=1), flush=True)
        if a.out:
            a.out.write_text(json.dumps(report, indent=1) + "\n")


def _cpu() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
