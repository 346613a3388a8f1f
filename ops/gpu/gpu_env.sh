# Source on the lent GPU machine (Python 3.12 with torch, timm, pandas, pyarrow, but without fxbench's other
# dependencies): installs the carried wheels of .gpu/whl into /tmp/site and makes `fxbench` importable.
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
cp -r .gpu/src/* /tmp/site/
ln -sfn "$PWD/benchmark" /tmp/site/fxbench
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fxbench() { python3 -m fxbench "$@"; }
export -f fxbench
set +e
