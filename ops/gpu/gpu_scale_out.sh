#!/usr/bin/env bash
# Issue 14, GPU line: `fxbench run-many` over the committed submissions, local executor against Ray, same GPU.
# Prints both wall times, their ratio, and whether every samples.parquet is byte-identical (docs/scale-out.md).
#
# Usage (GPU machine, fxbench and ray importable, a prepared dataset):
#   bash ops/gpu/gpu_scale_out.sh --data DIR [--device cuda] [--preset quick] [--limit N] [--gpus-per-task F]
# CPU smoke test: bash ops/gpu/gpu_scale_out.sh --device cpu --limit 4
set -euo pipefail
cd "$(dirname "$0")/../.."
DEVICE=cuda PRESET=quick DATA=() LIMIT=() GPT=() OUT=${OUT:-/tmp/fxbench-scale-out}
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --preset) PRESET=$2; shift 2 ;;
    --data) DATA=(--data "$2"); shift 2 ;;
    --limit) LIMIT=(--limit "$2"); shift 2 ;;
    --gpus-per-task) GPT=(--ray-gpus-per-task "$2"); shift 2 ;;
    *) echo "gpu_scale_out.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
SUBS=(submissions/fxb-*/model.yaml)
mkdir -p "$OUT"
rm -rf "$OUT/local" "$OUT/ray"
common=(--device "$DEVICE" --preset "$PRESET" "${DATA[@]}" "${LIMIT[@]}" --quiet)
t0=$(date +%s.%N)
python3 -m fxbench run-many "${SUBS[@]}" --executor local --out "$OUT/local" "${common[@]}"
t1=$(date +%s.%N)
python3 -m fxbench run-many "${SUBS[@]}" --executor ray "${GPT[@]}" --out "$OUT/ray" "${common[@]}"
t2=$(date +%s.%N)
python3 - "$OUT" "$t0" "$t1" "$t2" "${#SUBS[@]}" "$DEVICE" "$PRESET" <<'PY'
import json, sys
from pathlib import Path
out, t0, t1, t2, n, device, preset = sys.argv[1:]
local, ray = float(t1) - float(t0), float(t2) - float(t1)
ids = sorted(p.parent.name for p in Path(out, "local").glob("*/samples.parquet"))
same = all((Path(out, "local", i, "samples.parquet").read_bytes() == Path(out, "ray", i, "samples.parquet").read_bytes())
           for i in ids) and len(ids) == int(n)
report = {"device": device, "preset": preset, "submissions": ids, "local_wall_s": round(local, 1),
          "ray_wall_s": round(ray, 1), "ray_vs_local": round(ray / local, 3), "identical_samples_bytes": same}
print(json.dumps(report, indent=2))
Path(out, "gpu_scale_out.json").write_text(json.dumps(report, indent=2) + "\n")
PY
