#!/usr/bin/env bash
# fxbench v3 GPU window: `fxbench run --preset full` of every v3 baseline, in order of value (ops/gpu/gpu_v3.py
# says which and why), resumable, under one deadline. Finished results are never redone; finished shards of a
# run stopped at the deadline are packed into $OUT as they finish and continued by the next window.
# $OUT gets at most 7 self-contained tars state-N.tar (<= 15 MiB each, <= 60 MiB in all, most valuable first)
# + gpu_v3.log: 8 files.
#
# Data and wheels travel as the payload of ops/gpu/gpu_pack.sh (split over calls .gpu/call-1, ...: carry one per
# call; the work starts in the call that brings the last part). To continue an earlier window, fetch its
# state-*.tar into .gpu/prev/ and rebuild the payload (gpu_pack.sh --prev .gpu/prev): it carries their shards
# and finished-result markers (resume/), which this script restores once per machine.
#
# Usage (device machine): timeout 575 bash ops/gpu/gpu_v3.sh            (the command the lead runs)
#        (CPU test)       bash ops/gpu/gpu_v3.sh --device cpu --preset quick --limit 4 --data DIR --stash DIR
# Options: --device cuda|cpu  --preset full|quick (default full)  --limit N (images; CPU tests)  --data DIR
# (prepared dataset; default: the payload's)  --stash DIR  --deadline S (default 540: the whole script)
# --jobs K (default 2)  --only NAMES  --resume DIR (state-*.tar of earlier windows; default: the payload's resume/)
# --pack-only  --stop-after-shards N (tests: stop each run after N shards, as the deadline would)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
DEVICE=cuda PRESET=full LIMIT=() DATA="" STASH=${FXB_STASH:-/var/tmp/fxbench-gpu} DEADLINE=${FXB_DEADLINE_S:-540}
JOBS=${FXB_JOBS:-2} ONLY=() PACK_ONLY=0 RESUME_DIR="" STOP=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --preset) PRESET=$2; shift 2 ;;
    --limit) LIMIT=(--limit "$2"); shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --stash) STASH=$2; shift 2 ;;
    --deadline) DEADLINE=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --only) ONLY=(--only "$2"); shift 2 ;;
    --pack-only) PACK_ONLY=1; shift ;;
    --resume) RESUME_DIR=$2; shift 2 ;;
    --stop-after-shards) STOP=(--stop-after-shards "$2"); shift 2 ;;
    *) echo "gpu_v3.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT" "$STASH"
exec > >(tee -a "$OUT/gpu_v3.log") 2>&1
export PYTHONUNBUFFERED=1
WORK=$STASH/work-v3
mkdir -p "$WORK"
echo "=== gpu_v3.sh $(date -u +%FT%TZ) device=$DEVICE preset=$PRESET stash=$STASH deadline=${DEADLINE}s jobs=$JOBS"
git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/tree commit: /'
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

source ops/gpu/window_setup.sh  # 1. payload, 2. environment, 3. shipped / pack-only / resume

# 4. The plan, under the deadline (seconds left for the whole script, minus what setup took).
LEFT=$(( DEADLINE - ($(date +%s) - START) ))
python3 ops/gpu/gpu_v3.py run --data "$DATA" --work "$WORK" --out "$OUT" --device "$DEVICE" --deadline "$LEFT" \
  --jobs "$JOBS" --preset "$PRESET" "${LIMIT[@]}" "${ONLY[@]}" "${RESUME[@]}" "${STOP[@]}"
echo "=== done in $(( $(date +%s) - START )) s"
ls -la "$OUT"
