#!/usr/bin/env bash
# Instructions per message of every thread of a `palm farm` (master and
# client in one process, the workers in theirs), counted by callgrind:
# stable on a noisy 2-core guest where wall-clock figures are not. Spin
# rounds are counted too (valgrind runs one thread at a time): compare the
# job functions' inclusive counts (Client::run_master / run_bypass,
# Worker::serve_one), not the totals.
# Usage: scripts/farm_callgrind.sh [palm farm flags...]
#   N=20000 BIN=build/tools/palm OUT=/tmp/cg scripts/farm_callgrind.sh --bypass
# Then: callgrind_annotate --inclusive=yes $OUT/cg.<pid>-<thread>
set -euo pipefail
command -v valgrind >/dev/null || { echo "farm_callgrind: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-20000}
BIN=${BIN:-$root/build/tools/palm}
OUT=${OUT:-/tmp/palm-callgrind}
rm -rf "$OUT" && mkdir -p "$OUT"
valgrind --tool=callgrind --separate-threads=yes --trace-children=yes --dump-instr=no \
  --callgrind-out-file="$OUT/cg.%p" "$BIN" farm -w 2 -n "$N" "$@" >"$OUT/farm.log" 2>&1
grep -E "messages/s|p50" "$OUT/farm.log" || true
for f in "$OUT"/cg.*-*; do
  total=$(grep -m1 -E "^(summary|totals):" "$f" | awk '{print $2}')
  cmd=$(grep -m1 "^cmd:" "$f" | awk '{print $3}')
  echo "$(basename "$f") ${cmd:-?} instructions=${total:-0} per_message=$(( ${total:-0} / N ))"
done | sort -t= -k3 -n -r | head -12
