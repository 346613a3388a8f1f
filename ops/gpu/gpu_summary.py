"""Compact table of the GPU baseline run: timings, selected epoch, holdout and benchmark headline numbers.

Usage: python3 ops/gpu/gpu_summary.py OUT/timings.tsv --submissions submissions --results results
Reads only files (no fxbench import), so it also works where fxbench's dependencies are missing.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

HEADLINES = [
    ("clean/balanced_accuracy", "clean BA"),
    ("robust/linf-4/accuracy", "robust acc 4/255"),
    ("xai/saliency/relevance_mass_accuracy", "saliency RMA"),
]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _metric(result: dict, key: str) -> str:
    m = result.get("metrics", {}).get(key)
    return "-" if not m or m.get("value") is None else f"{m['value']:.3f}"


def rows(timings: Path, submissions: Path, results: Path) -> list[list[str]]:
    table: dict[str, dict[str, str]] = {}
    with open(timings, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            table.setdefault(r["id"], {})[r["phase"].split("-")[0]] = f"{r['seconds']} s {r['status']}"
    out = []
    for sid, phases in table.items():
        log = _read_json(submissions / sid / "training_log.json")
        final = log.get("final_holdout", {})
        epochs = f"{log.get('best_epoch', '-')}/{len(log.get('epochs', []))}" if log else "-"
        pgd = final.get("pgd_balanced_accuracy")
        result = _read_json(results / sid / "result.json")
        out.append(
            [
                sid,
                phases.get("train", "-"),
                epochs,
                f"{final['balanced_accuracy']:.3f}" if final else "-",
                "-" if pgd is None else f"{pgd:.3f}",
                phases.get("eval", "-"),
                *[_metric(result, k) for k, _ in HEADLINES],
            ]
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("timings", type=Path)
    ap.add_argument("--submissions", type=Path, default=Path("submissions"))
    ap.add_argument("--results", type=Path, default=Path("results"))
    args = ap.parse_args()
    header = [
        "id",
        "train",
        "best/epochs",
        "holdout BA",
        "holdout PGD BA",
        "eval",
        *[h for _, h in HEADLINES],
    ]
    body = rows(args.timings, args.submissions, args.results)
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *body]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
