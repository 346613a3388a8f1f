"""The v3 GPU window's plan (ops/gpu/gpu_v3.sh): the full preset of every v3 baseline, in order of value, each
resumable from the shards an earlier window brought back.

    python3 ops/gpu/gpu_v3.py plan                     # the jobs, in order
    python3 ops/gpu/gpu_v3.py run --work W --out OUT [--preset full] [--limit N] [--resume DIR] ...

Everything but the plan is gpu_v2.py's (imported from beside this file): the deadline, K jobs at a time on one
device, a finished result never redone, the finished shards of a stopped run packed into $OUT as they finish
(at most 7 tars of <= 15 MiB, <= 60 MiB in all, plus the log: 8 files) and restored by the next window from
`--resume` (or the payload's resume/, made by gpu_pack.sh --prev from the tars fetched back). A v3 full run
has few, large shards (robustness: one per norm over the whole split; ~30 MB with the attacked images), so a
run stopped at the deadline keeps every norm it finished.

Order of value: the two robust v2 baselines first (the ranked table's reason to exist; the most expensive, so
they start while the window is young), then the ERM target and the constant reference (cheap: ERM breaks at
once, the reference is analytic), then the larger architecture, then the v1 baselines.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _v2():
    if "gpu_v2" in sys.modules:
        return sys.modules["gpu_v2"]
    spec = importlib.util.spec_from_file_location("gpu_v2", HERE / "gpu_v2.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_v2"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


v2 = _v2()

ORDER = [
    "fxb-resnet10t-pgdat-v2",
    "fxb-resnet10t-trades-v2",
    "fxb-resnet10t-erm-v2",
    "fxb-reference-no-fracture",
    "fxb-effb0-erm-v2",
    "fxb-resnet10t-pgdat",
    "fxb-resnet10t-fgsmrs",
    "fxb-resnet10t-erm",
]


def plan(repo: Path, preset: str = "full", order: list[str] | None = None) -> list:
    """One evaluation job per committed v3 baseline, in ``ORDER``; the job's kind is its preset."""
    return [v2.Job(f"{preset}:{sid}", preset, sid, str(repo / "submissions" / sid / "model.yaml"))
            for sid in (order or ORDER) if (repo / "submissions" / sid / "model.yaml").is_file()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data")
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--repo", default=str(REPO))
    r.add_argument("--device", default="cuda")
    r.add_argument("--preset", default="full", choices=["full", "quick"])
    r.add_argument("--limit", type=int, help="images per evaluation (CPU tests)")
    r.add_argument("--deadline", type=float, default=520, help="seconds from now")
    r.add_argument("--reserve", type=float, default=15, help="seconds kept for the final pack")
    r.add_argument("--jobs", type=int, default=2, help="evaluations at a time on the device (each attacks the "
                   "whole split in one batch: two ResNet-10t runs need ~30 GB)")
    r.add_argument("--budget-mib", type=float, default=60)
    r.add_argument("--pack-every", type=float, default=60)
    r.add_argument("--poll", type=float, default=1.0)
    r.add_argument("--resume", help="folder of state-*.tar from earlier windows")
    r.add_argument("--only", help="comma-separated job names or ids")
    r.add_argument("--stop-after-shards", type=int, help="tests: stop each evaluation after this many shards")
    sub.add_parser("plan").add_argument("--preset", default="full")
    a = ap.parse_args()
    if a.cmd == "plan":
        for j in plan(REPO, a.preset):
            print(j.name)
        return 0
    a.small, a.verbose = a.limit is not None, True
    if a.small:
        v2.SMALL_LIMIT = a.limit
    return v2.cmd_run(a, plan_for=lambda repo, work: plan(repo, a.preset))


if __name__ == "__main__":
    sys.exit(main())
