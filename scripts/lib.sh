# Shared by the scripts in this folder: source it, do not run it.

SUBINTERP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUBINTERP_PROBE="$SUBINTERP_ROOT/cmake/python_probe.py"

subinterp_log() { printf '==> %s\n' "$*" >&2; }
subinterp_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Candidate interpreters, in the order CMake looks at them
# (cmake/SubinterpPython.cmake): pyenv installs, then PATH.
subinterp_python_candidates() {
  local roots=() root exe name
  [[ -n "${PYENV_ROOT:-}" ]] && roots+=("$PYENV_ROOT")
  [[ -n "${HOME:-}" ]] && roots+=("$HOME/.pyenv")
  roots+=(/root/.pyenv)
  for root in "${roots[@]}"; do
    while IFS= read -r exe; do
      [[ -x $exe ]] && printf '%s\n' "$exe"
    done < <(printf '%s\n' "$root"/versions/*/bin/python3 | sort -V -r)
  done
  for name in python3.{19..12} python3; do
    command -v "$name" 2>/dev/null || true
  done
}

# Runs the probe: prints "<version> <tag> <executable>" if `$1` can build
# subinterp (CPython >= 3.12, headers, shared libpython), else fails.
subinterp_probe() {
  local line
  line="$(timeout 30 "$1" "$SUBINTERP_PROBE" 2>/dev/null)" || return 1
  [[ $line == "OK "* ]] || return 1
  printf '%s\n' "${line#OK }"
}

# "3.12", "3.13", ... of the interpreter `$1` (fails if it does not qualify).
subinterp_python_tag() {
  local info
  info="$(subinterp_probe "$1")" || return 1
  info="${info#* }"
  printf '%s\n' "${info%% *}"
}

# Every usable CPython, one executable per line, oldest first; of several
# with the same minor version (3.12.1, 3.12.4) the newest, as builds are
# kept per minor version (build/test-py3.12).
subinterp_pythons() {
  local cand seen=$'\n'
  while IFS= read -r cand; do
    [[ $seen == *$'\n'"$cand"$'\n'* ]] && continue
    seen+="$cand"$'\n'
    subinterp_probe "$cand" || true
  done < <(subinterp_python_candidates) |
    sort -s -t' ' -k1,1V -r | awk '!seen[$2]++' | sort -s -t' ' -k1,1V | cut -d' ' -f3-
}
