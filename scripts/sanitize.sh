#!/usr/bin/env bash
# Builds subinterp with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# every test on every CPython >= 3.12 found (build/asan-py3.X). Arguments go
# to scripts/test.sh (for example --python PATH). For ThreadSanitizer:
# bash scripts/test.sh --preset tsan
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/test.sh" --preset asan "$@"
