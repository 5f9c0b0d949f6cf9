#!/usr/bin/env bash
# Runs bench/transport_bench (palm Endpoints over shm, ipc and tcp in one
# run) with repetitions and prints the medians side by side, with the ratios
# shm/tcp and shm/ipc (the table quoted in BENCHMARKS.md).
# Usage: scripts/transport_bench.sh [BUILD_DIR]   (default: build; REPS=5)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target transport_bench >/dev/null
out=$(mktemp /tmp/palm-transport-bench.XXXXXX.json)
trap 'rm -f "$out"' EXIT
"$build/bench/transport_bench" --benchmark_repetitions="${REPS:-5}" \
  --benchmark_report_aggregates_only=true --benchmark_display_aggregates_only=true \
  --benchmark_out="$out" --benchmark_out_format=json >/dev/null
python3 - "$out" <<'EOF'
import json, sys

rows = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    bench, scheme, size = b["run_name"].split("/")[:3]
    rows[(bench, int(size), scheme)] = b

def si(x, unit=""):
    for d, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= d:
            return f"{x / d:.3g} {p}{unit}"
    return f"{x:.3g} {unit}"

def size(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1 << 10 else f"{n} B"

print("| bench | payload | shm msg/s | ipc msg/s | tcp msg/s | shm B/s | ipc B/s | tcp B/s "
      "| shm/tcp | shm/ipc | shm p50 | tcp p50 |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for bench, n in sorted({(k[0], k[1]) for k in rows}, key=lambda k: (k[0] != "PingPong", k[1])):
    r = {s: rows.get((bench, n, s)) for s in ("shm", "ipc", "tcp")}
    if not all(r.values()):
        continue
    ips = {s: r[s]["items_per_second"] for s in r}
    bps = {s: r[s]["bytes_per_second"] for s in r}
    p50 = lambda s: f'{r[s]["p50_us"]:.3g} µs' if "p50_us" in r[s] else "-"
    print(f"| {bench} | {size(n)} | {si(ips['shm'])} | {si(ips['ipc'])} | {si(ips['tcp'])} "
          f"| {si(bps['shm'], 'B')} | {si(bps['ipc'], 'B')} | {si(bps['tcp'], 'B')} "
          f"| {ips['shm'] / ips['tcp']:.1f}x | {ips['shm'] / ips['ipc']:.1f}x | {p50('shm')} | {p50('tcp')} |")
copies = sum(b.get("copies", 0) for b in rows.values())
print(f"\nframes copied into a segment (all shm rows): {copies:.0f}")
EOF
