# Sourced by gpu_v2.sh and gpu_v3.sh after their options (needs ROOT, STASH, WORK, OUT, PACK_ONLY, DATA and
# RESUME_DIR set): steps 1 to 3 of a lent-GPU window, the same for every window script. Exits the caller when
# the payload is still incomplete or when only packing was asked; leaves DATA, PAYLOAD and RESUME set.

# 1. Payload: stash this call's part; unpack once all parts are here.
if [ -z "$DATA" ]; then
  python3 ops/gpu/gpu_v2.py assemble --stash "$STASH" --repo "$ROOT"
  if [ $? -ne 0 ]; then
    echo "=== payload incomplete: part stashed on this machine; run the next call (carry the next .gpu/call-N)"
    exit 0
  fi
  DATA=$STASH/payload/data
fi
PAYLOAD=$STASH/payload

# 2. Python environment: fxbench from this tree; its missing dependencies from the carried wheels.
if ! python3 -c 'import fxbench.cli, pydantic, datasets, captum, quantus, pyautoattack, jsonschema, platformdirs' 2>/dev/null; then
  SITE=$STASH/site
  if [ ! -f "$SITE/.installed" ] && [ -d "$PAYLOAD/whl" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$PAYLOAD"/whl/*.whl \
      && cp -r "$PAYLOAD"/src/* "$SITE"/ && touch "$SITE/.installed"
  fi
  mkdir -p "$STASH/pkg" && ln -sfn "$ROOT/benchmark" "$STASH/pkg/fxbench"
  export PYTHONPATH=$STASH/pkg:$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c 'import fxbench, torch, timm; print("fxbench", fxbench.__file__, "| torch", torch.__version__, "| timm", timm.__version__, "| cuda", torch.cuda.is_available())' \
  || { echo "=== fxbench cannot be imported: see above"; exit 1; }

# 3. What earlier calls on this machine returned is on the lead's side: do not ship it again.
python3 ops/gpu/gpu_v2.py mark-shipped --work "$WORK"
if [ "$PACK_ONLY" = 1 ]; then
  python3 ops/gpu/gpu_v2.py pack --work "$WORK" --out "$OUT"; ls -la "$OUT"; exit 0
fi
RESUME=()
[ -z "$RESUME_DIR" ] && [ -d "$PAYLOAD/resume" ] && RESUME_DIR=$PAYLOAD/resume
[ -n "$RESUME_DIR" ] && [ ! -f "$WORK/.resumed" ] && RESUME=(--resume "$RESUME_DIR") && touch "$WORK/.resumed"
