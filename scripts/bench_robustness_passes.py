"""Passes done against passes required, per attack, and time, for the robustness battery on a CPU.

    python scripts/bench_robustness_passes.py                          # quick preset, 16 embedded images
    python scripts/bench_robustness_passes.py --preset full --limit 4  # the full preset on a few images
    python scripts/bench_robustness_passes.py --first-run              # the README's first run, timed per battery

Passes required: fxbench.robustness.floor (each point attacked until it breaks, nothing evaluated twice, the
checks as the spec sizes them). The first run is `fxbench run submissions/fxb-resnet10t-pgdat/model.yaml` on the
embedded subset with the quick preset (every battery); CPU seconds are counted per battery (process time).
Ratios are from one run; the machine is shared, so the wall times are indicative. Writes --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def passes_table(info: dict) -> list[dict]:
    from fxbench.robustness.floor import ratios

    r = ratios(info["passes"], info["passes_required"])
    secs = info.get("seconds_by_attack", {})
    return [{"phase": k, **v, "seconds": secs.get(k)} for k, v in r.items()]


def timed_batteries() -> dict[str, float]:
    """Wrap every battery's run_shard and finalize with a process-time counter (per battery name)."""
    from fxbench.battery import BATTERIES

    cpu: dict[str, float] = defaultdict(float)
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
    return cpu


def run(submission: Path, *, preset: str, limit: int | None, batteries: list[str]) -> dict:
    from fxbench.run import run_submission

    cpu = timed_batteries() if "explanations" in batteries else defaultdict(float)
    t0, w0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        r = run_submission(submission, preset=preset, device="cpu", limit=limit, out=tmp, batteries=batteries)
    info = r.result["components"]["robustness"]
    return {
        "submission": submission.parent.name, "preset": preset, "images": len(r.samples),
        "cpu_s_total": round(time.process_time() - t0, 1), "wall_s": round(time.perf_counter() - w0, 1),
        "cpu_s_by_battery": {k: round(v, 1) for k, v in cpu.items()},
        "robust_accuracy": {c["budget"]: c["robust_accuracy"] for c in info["curve"]},
        "passes": passes_table(info), "checks": info.get("checks"),
        "flags": [f["code"] for f in r.result.get("flags", [])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--submission", type=Path, default=REPO / "submissions/fxb-resnet10t-pgdat/model.yaml")
    ap.add_argument("--preset", default="quick", choices=["quick", "full"])
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--first-run", action="store_true", help="the README's first run: every battery, no limit")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.first_run:
        report = run(args.submission, preset="quick", limit=None, batteries=["clean", "robustness", "explanations"])
    else:
        report = run(args.submission, preset=args.preset, limit=args.limit, batteries=["clean", "robustness"])
    report["threads"] = args.threads
    report["torch"] = torch.__version__
    print(json.dumps(report, indent=1))
    print("\n| phase | passes done | passes required | done / required | seconds |\n|---|---|---|---|---|")
    for row in report["passes"]:
        print(f"| {row['phase']} | {row['done']} | {row['required']} | {row['ratio']} | {row['seconds'] or ''} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
