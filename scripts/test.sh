#!/usr/bin/env bash
# Builds subinterp and runs every test (C++, Python, install) on every
# CPython >= 3.12 found (scripts/pythons.sh), then prints a summary ending in
# the line "N passed, N failed". Exits non-zero if a test or a build failed,
# or if no usable Python was found.
#
#   bash scripts/test.sh                    all Pythons, preset "default"
#   bash scripts/test.sh --python PATH      only that interpreter (repeatable)
#   bash scripts/test.sh --preset asan      ASan+UBSan build (also: tsan, debug)
#   bash scripts/test.sh -- -L python       extra arguments go to ctest
#
# Build folders: build/test-py3.X for the default preset, build/<preset>-py3.X
# for the others. CTEST_PARALLEL_LEVEL runs tests in parallel (default: one
# at a time, since some tests measure parallel speed-ups).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

preset=default
pythons=()
ctest_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) [[ $# -ge 2 ]] || subinterp_die "--python needs a path"; pythons+=("$2"); shift 2 ;;
    --python=*) pythons+=("${1#*=}"); shift ;;
    --preset) [[ $# -ge 2 ]] || subinterp_die "--preset needs a name"; preset="$2"; shift 2 ;;
    --preset=*) preset="${1#*=}"; shift ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; ctest_args+=("$@"); break ;;
    *) subinterp_die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$preset" in
  default) build_prefix=test ;;
  debug|asan|tsan) build_prefix="$preset" ;;
  *) subinterp_die "unknown preset '$preset' (default, debug, asan, tsan)" ;;
esac

cd "$SUBINTERP_ROOT"
bash scripts/deps.sh

if [[ ${#pythons[@]} -eq 0 ]]; then
  mapfile -t pythons < <(subinterp_pythons)
fi
if [[ ${#pythons[@]} -eq 0 ]]; then
  subinterp_log "no CPython >= 3.12 with headers and a shared libpython found"
  echo "0 passed, 1 failed"
  exit 1
fi

total_passed=0
total_failed=0
summary=()

# Reads ctest's JUnit file: prints "<passed> <failed> <skipped>".
junit_counts() {
  local head tests failures skipped disabled
  head="$(tr '\n\t' '  ' <"$1" | grep -o '<testsuite [^>]*>' | head -n 1)"
  [[ -n $head ]] || return 1
  attr() { local v; v="$(grep -o " $1=\"[0-9]*\"" <<<"$head" | grep -o '[0-9]\+')"; echo "${v:-0}"; }
  tests="$(attr tests)"; failures="$(attr failures)"
  skipped="$(attr skipped)"; disabled="$(attr disabled)"
  echo "$((tests - failures - skipped - disabled)) $failures $((skipped + disabled))"
}

for python in "${pythons[@]}"; do
  if ! tag="$(subinterp_python_tag "$python")"; then
    subinterp_log "$python is not a CPython >= 3.12 with headers and a shared libpython"
    summary+=("$python: unusable interpreter")
    total_failed=$((total_failed + 1))
    continue
  fi
  dir="build/${build_prefix}-py${tag}"
  junit="$SUBINTERP_ROOT/$dir/ctest-junit.xml"
  subinterp_log "Python $tag ($python): configure $dir (preset $preset)"
  if ! cmake --preset "$preset" -B "$dir" -DPython_EXECUTABLE="$python"; then
    summary+=("Python $tag: configure FAILED")
    total_failed=$((total_failed + 1))
    continue
  fi
  subinterp_log "Python $tag: build"
  if ! cmake --build "$dir" --parallel 2; then
    summary+=("Python $tag: build FAILED")
    total_failed=$((total_failed + 1))
    continue
  fi
  subinterp_log "Python $tag: test"
  rm -f "$junit"
  ctest_rc=0
  ctest --test-dir "$dir" --output-on-failure --timeout 600 --no-tests=error \
    --output-junit "$junit" "${ctest_args[@]}" || ctest_rc=$?
  if counts="$(junit_counts "$junit" 2>/dev/null)"; then
    read -r passed failed skipped <<<"$counts"
    # ctest can fail without a failed test (no tests, a crash in discovery).
    if [[ $ctest_rc -ne 0 && $failed -eq 0 ]]; then failed=1; fi
  else
    passed=0 failed=1 skipped=0
  fi
  summary+=("Python $tag ($preset): $passed passed, $failed failed, $skipped skipped")
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
done

echo
echo "==== summary ===="
printf '%s\n' "${summary[@]}"
echo "$total_passed passed, $total_failed failed"
[[ $total_failed -eq 0 ]]
