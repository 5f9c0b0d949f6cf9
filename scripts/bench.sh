#!/usr/bin/env bash
# Builds the micro-benchmarks in Release and runs them with repetitions,
# reporting medians (the figures quoted in BENCHMARKS.md).
# Usage: scripts/bench.sh [BENCH_NAME...]   (default: every *_bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
benches=("$@")
[ ${#benches[@]} -eq 0 ] && benches=($(cd build/bench && ls *_bench))
for b in "${benches[@]}"; do
  echo "== $b"
  "build/bench/$b" --benchmark_repetitions="${REPS:-5}" \
    --benchmark_report_aggregates_only=true --benchmark_display_aggregates_only=true \
    | grep -E '_median|^Benchmark|^---' || true
done
