#!/usr/bin/env bash
# fxbench v2 GPU window: one resumable run, in order of value, under one deadline (docs/baselines.md, "v2").
#   (a) `fxbench run --preset quick` of the committed baselines and the reference row (whole eval split)
#   (b) training of the v2 baselines (benchmark/specs/training/*-v2.yaml), concurrently with (a)
#   (c) `--preset quick` of each new baseline as soon as it is trained, then (d) `--preset full` of as many
#       as fit. Finished results are never redone; finished shards of an interrupted full run are reused.
# Up to FXB_JOBS (default 6) jobs share the GPU; every finished job is packed at once into $OUT as at most 7
# self-contained tars state-N.tar (<= 15 MiB each, <= 60 MiB in all, most valuable first) + gpu_v2.log.
#
# Data and wheels travel as a payload built by ops/gpu/gpu_pack.sh, split over one or more calls
# (.gpu/call-1, .gpu/call-2, ...: carry one per call). Each call stashes its part on the machine (FXB_STASH,
# default /var/tmp/fxbench-gpu, kept while the machine stays warm); the work starts in the call that brings
# the last part. What did not fit in $OUT is shipped by the next call on the same warm machine.
#
# Usage (device machine): timeout 575 bash ops/gpu/gpu_v2.sh            (the command the lead runs)
#        (CPU test)       bash ops/gpu/gpu_v2.sh --device cpu --small --data DIR --stash DIR
# Options: --device cuda|cpu  --small (tiny models, 4 images: CPU tests)  --data DIR (prepared dataset; default:
# the payload's)  --stash DIR  --deadline S (default 540: seconds for the whole script)  --jobs K
# --only NAMES (comma-separated job names or ids)  --pack-only (ship what the last call could not)
# --resume DIR (state-*.tar of earlier windows; default: the payload's resume/, made by gpu_pack.sh --prev)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
DEVICE=cuda SMALL=() DATA="" STASH=${FXB_STASH:-/var/tmp/fxbench-gpu} DEADLINE=${FXB_DEADLINE_S:-540}
JOBS=${FXB_JOBS:-6} ONLY=() PACK_ONLY=0 RESUME_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --small) SMALL=(--small); shift ;;
    --data) DATA=$2; shift 2 ;;
    --stash) STASH=$2; shift 2 ;;
    --deadline) DEADLINE=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --only) ONLY=(--only "$2"); shift 2 ;;
    --pack-only) PACK_ONLY=1; shift ;;
    --resume) RESUME_DIR=$2; shift 2 ;;
    *) echo "gpu_v2.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT" "$STASH"
exec > >(tee -a "$OUT/gpu_v2.log") 2>&1
export PYTHONUNBUFFERED=1
WORK=$STASH/work
mkdir -p "$WORK"
echo "=== gpu_v2.sh $(date -u +%FT%TZ) device=$DEVICE stash=$STASH deadline=${DEADLINE}s jobs=$JOBS"
git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/tree commit: /'
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

source ops/gpu/window_setup.sh  # 1. payload, 2. environment, 3. shipped / pack-only / resume

# 4. The plan, under the deadline (seconds left for the whole script, minus what setup took).
LEFT=$(( DEADLINE - ($(date +%s) - START) ))
python3 ops/gpu/gpu_v2.py run --data "$DATA" --work "$WORK" --out "$OUT" --device "$DEVICE" --deadline "$LEFT" \
  --jobs "$JOBS" "${SMALL[@]}" "${ONLY[@]}" "${RESUME[@]}"
echo "=== done in $(( $(date +%s) - START )) s"
ls -la "$OUT"
