#!/usr/bin/env bash
# Installs the Debian packages that building and testing subinterp needs,
# and only those that are missing: with everything present it asks no
# network and takes well under a second.
#
#   bash scripts/deps.sh           build and test
#   bash scripts/deps.sh --bench   also the peers bench/bench_server.py runs
#                                  (wrk, gunicorn, uWSGI, Apache mod_wsgi)
set -euo pipefail

# One Debian package a line; add libboost-dev (Asio, Beast) and libcli11-dev
# here when code that needs them lands.
PACKAGES=(
  cmake
  ninja-build
  g++
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  libboost-dev
  libseccomp-dev
  pkg-config
  python3-flask
  python3-django
  redis-server
  python3-celery
  python3-redis
  python3-dask
)
if [[ ${1:-} == --bench ]]; then
  PACKAGES+=(wrk gunicorn uwsgi-core uwsgi-plugin-python3 apache2 libapache2-mod-wsgi-py3)
fi

missing=()
for package in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)"
  [[ $status == "install ok installed" ]] || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "==> installing ${missing[*]}" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "error: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
