"""Time `fxbench data prepare` over the whole shared FracAtlas copy (target: at most 60 s on 2 cores).

    python scripts/bench_prepare.py [--source DIR] [--workers 2] [--repeat 1]
    (--source default: $FXBENCH_FRACATLAS, else this repository's CI copy at ../shared/data/fracatlas)

Runs the real command path (validation, parallel decoding, save_to_disk, atomic rename) into a temporary
folder and prints the wall time of each run, the load average (other work on the machine slows it down) and
whether the fingerprint matches the committed manifest.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from fxbench.data.prepare import prepare

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path,
                    default=os.environ.get("FXBENCH_FRACATLAS") or REPO.parent / "shared" / "data" / "fracatlas")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    print(f"source {args.source}, {args.workers} worker(s), {os.cpu_count()} CPU(s)")
    for i in range(args.repeat):
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            r = prepare(args.source, out=Path(tmp) / "fracatlas-v1", workers=args.workers)
            wall = time.perf_counter() - t0
        print(
            f"run {i + 1}: {wall:.1f} s wall, {r.counts['all']['n']} images, {len(r.excluded)} excluded, "
            f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; "
            f"manifest: {r.manifest.status}"
        )
        print("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()))


if __name__ == "__main__":
    main()
