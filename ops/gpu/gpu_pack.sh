#!/usr/bin/env bash
# Build .gpu/ for ops/gpu/gpu_v2.sh: the payload a GPU window needs beside the working tree (wheels of the
# dependencies the device image lacks, pyautoattack's sources, the prepared dataset as lossless WebP,
# and what earlier windows brought back), split into call folders .gpu/call-1, .gpu/call-2, ... each small
# enough to travel with the working tree in one device call (64 MiB in all). Prints the calls to make.
#
# Usage: bash ops/gpu/gpu_pack.sh [--prepared DIR | --source FRACATLAS_DIR] [--prev DIR] [--limit-mib N] [--runner S]
#   --prepared DIR  a prepared dataset (fxbench data prepare); default: prepare one from --source
#   --source DIR    FracAtlas release (default $FXBENCH_FRACATLAS, else ../shared/data/fracatlas beside the repo)
#   --prev DIR      state-*.tar files fetched from earlier windows (default .gpu/prev when present): the
#                   next window skips finished results, reuses finished shards and trained baselines
#   --limit-mib N   what one call may carry with the tree (default 64; 1 MiB is kept as a margin)
#   --runner S      the window script the printed calls run (default gpu_v2.sh; gpu_v3.sh: the v3 full runs)
# Needs: the project's virtualenv active (fxbench importable), pip reaching PyPI (wheels, first time only).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PREPARED="" SOURCE=${FXB_SOURCE:-${FXBENCH_FRACATLAS:-$ROOT/../shared/data/fracatlas}} PREV="" LIMIT_MIB=64 RUNNER=gpu_v2.sh
while [ $# -gt 0 ]; do
  case "$1" in
    --prepared) PREPARED=$2; shift 2 ;;
    --source) SOURCE=$2; shift 2 ;;
    --prev) PREV=$2; shift 2 ;;
    --limit-mib) LIMIT_MIB=$2; shift 2 ;;
    --runner) RUNNER=$2; shift 2 ;;
    *) echo "gpu_pack.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -z "$PREV" ] && [ -d .gpu/prev ] && PREV=.gpu/prev
git check-ignore -q .gpu/ || { echo "gpu_pack.sh: .gpu/ must be git-ignored (.gitignore)" >&2; exit 2; }
BUILD=.gpu/build
PAYLOAD=$BUILD/payload
mkdir -p "$BUILD" "$PAYLOAD/whl" "$PAYLOAD/src"

# 1. Wheels: what fxbench imports and the device image lacks (docs/baselines.md lists why each), at the
#    versions of this environment. pyautoattack's wheel is 42 MB (example models): its sources travel instead.
WHEELS="pydantic pydantic-core annotated-types typing-inspection datasets dill multiprocess jsonschema
jsonschema-specifications referencing rpds-py platformdirs captum quantus cachetools typing-extensions"
SPECS=$(python3 - $WHEELS <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))
PY
)
if [ ! -f "$PAYLOAD/whl/.specs" ] || [ "$(cat "$PAYLOAD/whl/.specs")" != "$SPECS" ]; then
  rm -f "$PAYLOAD"/whl/*.whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$PAYLOAD/whl" $SPECS 2> "$BUILD/pip.log" || { cat "$BUILD/pip.log" >&2; exit 1; }
  echo "$SPECS" > "$PAYLOAD/whl/.specs"
fi
python3 - "$PAYLOAD/src" <<'PY'
import shutil, sys
from importlib.metadata import distribution
from pathlib import Path
dest = Path(sys.argv[1]); dist = distribution("pyautoattack")
pkg = Path(dist.locate_file("pyautoattack"))
shutil.rmtree(dest / "pyautoattack", ignore_errors=True)
shutil.copytree(pkg, dest / "pyautoattack", ignore=shutil.ignore_patterns("examples", "__pycache__", "*.pt", "*.h5"))
info = Path(dist._path)  # the .dist-info folder: importlib.metadata.version("pyautoattack") works there too
shutil.rmtree(dest / info.name, ignore_errors=True)
(dest / info.name).mkdir()
shutil.copy(info / "METADATA", dest / info.name / "METADATA")
PY

# 2. Data: the prepared dataset as lossless WebP (pixel-identical; the fingerprint is recomputed and checked).
if [ -z "$PREPARED" ]; then
  PREPARED=$BUILD/prepared
  [ -f "$PREPARED/fxbench.json" ] || python3 -m fxbench data prepare --source "$SOURCE" --out "$PREPARED"
fi
FP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["fingerprint"])' "$PREPARED/fxbench.json")
if [ ! -f "$PAYLOAD/data/fxbench.json" ] || ! grep -q "$FP" "$PAYLOAD/data/fxbench.json"; then
  python3 ops/gpu/gpu_pack_data.py "$PREPARED" "$PAYLOAD/data" --workers "$(nproc)"
fi

# 3. Resume: from earlier windows' state tars, what the next window needs (result.json of finished results
#    as markers, shards of interrupted full runs, trained baselines that are not in the tree).
rm -rf "$PAYLOAD/resume"
if [ -n "$PREV" ] && compgen -G "$PREV/*.tar" >/dev/null; then
  mkdir -p "$PAYLOAD/resume"
  python3 ops/gpu/gpu_v2.py slim-resume "$PREV" "$PAYLOAD/resume/resume.tar" --repo "$ROOT"
fi

# 4. Split the payload over calls: each carries one part beside the tree (tracked + untracked files).
TREE=$( { git ls-files -z --cached; git ls-files -z --others --exclude-standard; } | xargs -0 stat -c %s 2>/dev/null \
  | awk '{s+=$1} END {print s+0}')
BUDGET=$(( LIMIT_MIB * 1048576 - TREE - 1048576 ))
[ $BUDGET -gt 1048576 ] || { echo "gpu_pack.sh: the tree alone is $((TREE / 1048576)) MiB: nothing else fits in one call" >&2; exit 2; }
rm -rf .gpu/call-* "$BUILD/parts"
mkdir -p "$BUILD/parts"
# xz: the WebP images do not shrink, the dataset's hash columns and metadata do (2 MiB on FracAtlas).
tar -C "$PAYLOAD" -cf - . | xz -T0 -6 | split -b "$BUDGET" -d -a 2 - "$BUILD/parts/payload.tar.xz.part-"
python3 - "$BUILD/parts" "$TREE" "$BUDGET" "$RUNNER" <<'PY'
import hashlib, json, shutil, sys
from pathlib import Path
parts_dir, tree, budget, runner = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
parts = sorted(parts_dir.glob("payload.tar.xz.part-*"))
entries = [{"name": p.name, "bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in parts]
pid = hashlib.sha256("".join(e["sha256"] for e in entries).encode()).hexdigest()[:12]
man = {"id": pid, "parts": entries}
for i, p in enumerate(parts, 1):
    call = Path(f".gpu/call-{i}"); call.mkdir(parents=True)
    shutil.move(str(p), call / p.name)
    (call / f"manifest-{pid}.json").write_text(json.dumps(man, indent=1))
MiB = 2**20
print(f"payload {pid}: {sum(e['bytes'] for e in entries) / MiB:.1f} MiB in {len(parts)} call(s); tree {tree / MiB:.1f} MiB; "
      f"at most {budget / MiB:.1f} MiB beside it per call")
for i, e in enumerate(entries, 1):
    last = i == len(entries)
    print(f"  call {i}: carry [\".gpu/call-{i}\"] ({e['bytes'] / MiB:.1f} MiB), command: "
          + (f"timeout 575 bash ops/gpu/{runner}  (timeout_s 600: the work runs in this call)" if last
             else f"bash ops/gpu/{runner}  (timeout_s 120: stashes the part; make the next call at once, the machine stays warm 30 s)"))
PY
