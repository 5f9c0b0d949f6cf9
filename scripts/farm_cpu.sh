#!/usr/bin/env bash
# Where the CPU of a `palm farm` goes: every thread's CPU time per message,
# sampled by `perf record -e cpu-clock` (software clock: no hardware
# counters are needed, so it works in this guest), split into work and the
# scheduler's share (sched_yield, context switches, wake-ups: a waiter's
# bounded spin, which a busier farm would turn into work). On 2 cores the
# sum of the work column bounds the throughput: 2 cores / (sum per message).
# Usage: scripts/farm_cpu.sh [palm farm flags...]
#   N=2000000 BIN=build/tools/palm scripts/farm_cpu.sh --bypass
set -euo pipefail
command -v perf >/dev/null || { echo "farm_cpu: needs perf (apt-get install linux-perf)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-2000000}
BIN=${BIN:-$root/build/tools/palm}
HZ=${HZ:-5000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
perf record -q -e cpu-clock -F "$HZ" -o "$out/perf.data" -- "$BIN" farm -w 2 -n "$N" "$@" >"$out/farm.log" 2>&1
grep -E "messages/s" "$out/farm.log"
# One line a thread: samples -> µs a message; the scheduler's symbols apart.
printf "%-30s %8s %8s %7s\n" "thread (pid/tid name)" "us/msg" "work" "sched"
perf script -i "$out/perf.data" -F comm,pid,tid,ip,sym 2>/dev/null | awk -v hz="$HZ" -v n="$N" '
  {
    key = $2 " " $1
    total[key]++; all++
    if ($4 ~ /sched_yield|finish_task_switch|__schedule|^schedule$|futex|rseq|exit_to_user|_raw_spin_unlock_irq|do_syscall_64|entry_SYSCALL/) waited[key]++
  }
  END {
    for (k in total) {
      if (total[k] * 100 < all) continue  # under 1 % of the samples
      us = total[k] / hz * 1e6 / n
      w = (total[k] - waited[k]) / hz * 1e6 / n
      printf "%-30s %8.3f %8.3f %6.1f%%\n", k, us, w, 100 * waited[k] / total[k]
      sum += us; work += w
    }
    printf "%-30s %8.3f %8.3f\n", "all threads", sum, work
  }' | sort -k3 -n -r
