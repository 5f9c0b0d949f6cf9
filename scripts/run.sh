#!/usr/bin/env bash
# Sets up, builds and runs palm's main job. Until the servers land this is the
# core demo: a producer and a consumer process exchanging frame handles
# through a channel in shared memory (`palm demo`); it becomes the local
# master/worker farm (`palm farm`) with the servers.
# Extra arguments go to the command.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target palm >/dev/null
exec build/tools/palm demo "$@"
