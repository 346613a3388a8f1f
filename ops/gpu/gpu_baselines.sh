#!/usr/bin/env bash
# Train the fxbench baselines on one GPU, then evaluate each with `fxbench run`, all in one run of < 10 min.
# Run from anywhere: bash ops/gpu/gpu_baselines.sh. Everything that must come back is packed under $OUT:
# one tar per baseline (submissions/<id>/ + results/<id>/; split into 15 MiB parts if larger than 16 MB),
# timings.tsv and this script's log.
#
# Environment:
#   FXB_TRAIN_DATA  the training split: a .npz/.safetensors written by fxbench.training.export_arrays("train", ...)
#                   or a prepared dataset folder (default: fxbench's default prepared dataset)
#   FXB_EVAL_DATA   prepared dataset folder for `fxbench run --data` (default: fxbench's default)
#   FXB_PRESET      evaluation preset (default: full)
#   FXB_BASELINES   training configs to run, in order (default: "erm pgd-at fgsm-rs")
#   FXB_DEADLINE_S  wall-clock budget of the whole script in seconds (default: 570); each evaluation gets
#                   what is left, so the script ends (and packs) before the budget even if one overruns
#   FXB_SKIP_EVAL   set to 1 to train only
#   FXB_DEVICE, FXB_RECIPE, FXB_CONFIG_DIR, FXB_EVAL_EXTRA  for a smoke test elsewhere (defaults: cuda, gpu,
#                   benchmark/specs/training, nothing; e.g. FXB_EVAL_EXTRA="--limit 8")
#   FXB_WORK        where submissions/ and results/ are written (default: the repository root)
#   OUT             output folder (default: ./out)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_baselines.log") 2>&1
START=$(date +%s)
DEADLINE=${FXB_DEADLINE_S:-570}
PRESET=${FXB_PRESET:-full}
BASELINES=${FXB_BASELINES:-"erm pgd-at fgsm-rs"}
DEVICE=${FXB_DEVICE:-cuda}
RECIPE=${FXB_RECIPE:-gpu}
CONFIGS=${FXB_CONFIG_DIR:-benchmark/specs/training}
WORK=${FXB_WORK:-$ROOT}
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1

# fxbench importable: where it is not, the repository's environment script (carried wheels in .gpu/), and
# failing that a link to benchmark/.
if ! python3 -c 'import fxbench.cli' 2>/dev/null && [ -f ops/gpu/gpu_env.sh ] && [ -d .gpu ]; then
  source ops/gpu/gpu_env.sh
fi
if ! python3 -c 'import fxbench' 2>/dev/null; then
  mkdir -p /tmp/fxb_src && ln -sfn "$ROOT/benchmark" /tmp/fxb_src/fxbench
  export PYTHONPATH=/tmp/fxb_src${PYTHONPATH:+:$PYTHONPATH}
fi
fxb() { python3 -c 'import sys; sys.argv[0] = "fxbench"; from fxbench.cli import main; main()' "$@"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

pack() {  # pack <id>: one tar per baseline, at most 16 MB per file
  local id=$1 parts=("submissions/$id")
  [ -d "$WORK/results/$id" ] && parts+=("results/$id")
  rm -f "$OUT/$id.tar" "$OUT/$id.tar.part-"*
  tar --exclude='.fxbench-shards' -C "$WORK" -cf "$OUT/$id.tar" "${parts[@]}"
  if [ "$(stat -c %s "$OUT/$id.tar")" -gt 16000000 ]; then
    split -b 15M -d "$OUT/$id.tar" "$OUT/$id.tar.part-" && rm "$OUT/$id.tar"
    echo "note: $id.tar is over 16 MB: split into $id.tar.part-NN (cat them back together)"
  fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__, "cuda", torch.cuda.is_available())'
printf 'id\tphase\tseconds\tstatus\n' > "$OUT/timings.tsv"
DATA_ARGS=(); [ -n "${FXB_TRAIN_DATA:-}" ] && DATA_ARGS=(--data "$FXB_TRAIN_DATA")
EVAL_ARGS=(); [ -n "${FXB_EVAL_DATA:-}" ] && EVAL_ARGS=(--data "$FXB_EVAL_DATA")
read -r -a EXTRA <<< "${FXB_EVAL_EXTRA:-}"

IDS=()
for b in $BASELINES; do
  echo "=== train $b ($(( $(date +%s) - START )) s elapsed)"
  t0=$(now)
  folder=$(fxb train "$CONFIGS/$b.yaml" "${DATA_ARGS[@]}" --out "$WORK/submissions" \
    --device "$DEVICE" --recipe "$RECIPE" | tail -n 1)
  status=$?
  id=$(basename "${folder:-$b}")
  printf '%s\ttrain\t%s\t%s\n' "$id" "$(since "$t0")" "$([ $status -eq 0 ] && echo ok || echo "failed($status)")" >> "$OUT/timings.tsv"
  if [ $status -eq 0 ] && [ -f "$folder/model.yaml" ]; then IDS+=("$id"); pack "$id"; fi
done

if [ "${FXB_SKIP_EVAL:-0}" != 1 ]; then
  for id in "${IDS[@]}"; do
    left=$(( DEADLINE - ($(date +%s) - START) - 20 ))
    if [ $left -lt 30 ]; then
      echo "=== skip evaluation of $id: only $left s left"; printf '%s\teval\t0\tskipped\n' "$id" >> "$OUT/timings.tsv"; continue
    fi
    echo "=== evaluate $id, preset $PRESET ($left s left)"
    t0=$(now)
    timeout "$left" python3 -c 'import sys; sys.argv[0] = "fxbench"; from fxbench.cli import main; main()' \
      run "$WORK/submissions/$id/model.yaml" --preset "$PRESET" --device "$DEVICE" --out "$WORK/results" \
      "${EVAL_ARGS[@]}" "${EXTRA[@]}"
    status=$?
    st=ok; [ $status -eq 124 ] && st=timeout; [ $status -ne 0 ] && [ $status -ne 124 ] && st="failed($status)"
    printf '%s\teval-%s\t%s\t%s\n' "$id" "$PRESET" "$(since "$t0")" "$st" >> "$OUT/timings.tsv"
    pack "$id"
  done
fi

echo "=== summary ($(( $(date +%s) - START )) s in all)"
python3 ops/gpu/gpu_summary.py "$OUT/timings.tsv" --submissions "$WORK/submissions" --results "$WORK/results" || true
ls -la "$OUT"
