#!/usr/bin/env bash
# Prints every CPython >= 3.12 with headers and a shared libpython on this
# machine (one per minor version), one executable per line, oldest first.
# CMake, when not given -DPython_EXECUTABLE, picks the last one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
subinterp_pythons
