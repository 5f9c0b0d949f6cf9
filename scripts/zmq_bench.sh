#!/usr/bin/env bash
# Runs bench/zmq_bench (palm's ZeroMQ endpoints beside raw cppzmq, in one run)
# over ipc and tcp with repetitions, and prints the medians side by side with
# the ratios palm/raw (the issue-4 table in BENCHMARKS.md).
# Usage: scripts/zmq_bench.sh [BUILD_DIR]   (default: build; REPS=5;
#        FILTER, a --benchmark_filter regex, default: the ipc and tcp cases)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target zmq_bench >/dev/null
out=$(mktemp /tmp/palm-zmq-bench.XXXXXX.json)
trap 'rm -f "$out"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bench/zmq_bench" --benchmark_filter="${FILTER:-<Scheme::k(Ipc|Tcp)>}" \
  --benchmark_repetitions="${REPS:-5}" \
  --benchmark_report_aggregates_only=true --benchmark_display_aggregates_only=true \
  --benchmark_out="$out" --benchmark_out_format=json >/dev/null 2>&1
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'PY'
import json, re, sys

rows = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    # medians of the repetitions (REPS=1: the single run)
    if b.get("aggregate_name", "median" if b.get("run_type") == "iteration" else "") != "median":
        continue
    m = re.match(r"BM_(Palm|Raw)(PingPong|Throughput)<Scheme::k(\w+)>/(\d+)", b["run_name"])
    if m:
        side, bench, scheme, size = m.groups()
        rows[(bench, scheme.lower(), int(size), side)] = b

def size(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1 << 10 else f"{n} B"

def rate(b, n):
    # 64 B: messages/s; larger: MB/s of payload.
    return (f'{b["items_per_second"] / 1e3:.0f} k/s' if n < 1024
            else f'{b["bytes_per_second"] / 1e6:.0f} MB/s')

print("| case | payload | palm | raw | palm/raw | palm cpu µs | raw cpu µs |")
print("|---|---|---:|---:|---:|---:|---:|")
for (bench, scheme, n, side), b in sorted(rows.items(), key=lambda kv: (kv[0][0] != "PingPong", kv[0][1], kv[0][2])):
    if side != "Palm" or (bench, scheme, n, "Raw") not in rows:
        continue
    r = rows[(bench, scheme, n, "Raw")]
    cpu = lambda x: f'{x.get("cpu_us", float("nan")):.3g}'
    if bench == "PingPong":
        for q in ("p50_us", "p99_us"):
            print(f"| ping-pong {q[:3]} {scheme} | {size(n)} | {b[q]:.0f} µs | {r[q]:.0f} µs "
                  f"| {b[q] / r[q]:.2f}x | {cpu(b)} | {cpu(r)} |")
    else:
        print(f"| throughput {scheme} | {size(n)} | {rate(b, n)} | {rate(r, n)} "
              f"| {b['items_per_second'] / r['items_per_second']:.2f} | {cpu(b)} | {cpu(r)} |")
PY
