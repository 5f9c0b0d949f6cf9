#!/usr/bin/env bash
# Sets up, builds and runs palm's main job: the local farm (`palm farm`), a
# Master and a Client in one process and one `palm worker` process per core,
# over shared memory; it streams 200000 messages through `_.echo`, checks
# every reply and prints throughput and round-trip latency.
# Extra arguments go to `palm farm` (e.g. --workers 2 --transport tcp
# --method sha256; see `build/tools/palm farm --help`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target palm >/dev/null
exec build/tools/palm farm "$@"
