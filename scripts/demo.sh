#!/usr/bin/env bash
# Builds subinterp (preset "default") for the newest CPython >= 3.12 found
# and runs the demo, bench/demo.py, passing it this script's arguments.
#
#   bash scripts/demo.sh [demo arguments]
#   SUBINTERP_PYTHON=/path/to/python3.12 bash scripts/demo.sh   another Python
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SUBINTERP_ROOT"
bash scripts/deps.sh

python="${SUBINTERP_PYTHON:-$(subinterp_pythons | tail -n 1)}"
[[ -n $python ]] || subinterp_die "no CPython >= 3.12 with headers and a shared libpython found"
tag="$(subinterp_python_tag "$python")" ||
  subinterp_die "$python is not a CPython >= 3.12 with headers and a shared libpython"
[[ -f bench/demo.py ]] || subinterp_die "bench/demo.py is missing"

dir="build/default-py${tag}"
log="$dir/demo-build.log"
mkdir -p "$dir"
subinterp_log "building subinterp for Python $tag in $dir (log: $log)"
if ! { cmake --preset default -B "$dir" -DPython_EXECUTABLE="$python" -DSUBINTERP_TESTS=OFF &&
       cmake --build "$dir" --parallel 2; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  subinterp_die "build failed (full log: $log)"
fi

export PYTHONPATH="$SUBINTERP_ROOT/$dir/python:$SUBINTERP_ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
export SUBINTERP_BUILD_DIR="$SUBINTERP_ROOT/$dir"
subinterp_log "running bench/demo.py with $python"
exec "$python" bench/demo.py "$@"
