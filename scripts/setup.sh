#!/usr/bin/env bash
# Installs everything palm needs to build, test and benchmark, from Debian 12
# packages only. Idempotent and quiet when all is there; assumes nothing (a
# bare Debian 12 may lack the compiler, cmake, pkg-config and git). Run as root,
# or as a user with sudo.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config git ca-certificates
  # libraries (DESIGN.md "Dependencies")
  libzmq3-dev cppzmq-dev libprotobuf-dev protobuf-compiler libboost-dev
  libconcurrentqueue-dev libexpected-dev libspdlog-dev libfmt-dev libcli11-dev libssl-dev
  libbenchmark-dev libgtest-dev libgmock-dev
  # Python test peers (Debian's interpreter, /usr/bin/python3)
  python3 python3-zmq python3-protobuf
  # multi-host tests (network namespaces) and process tools
  iproute2 util-linux procps
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E bash "$0" "$@"
  fi
  echo "setup: need root to install: ${missing[*]}" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
