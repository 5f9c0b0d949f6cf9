#!/usr/bin/env bash
# Two builds of palm side by side: `palm farm` of each in turn, R rounds,
# then each build's messages/s per round (take the medians). Alternating
# keeps a noisy machine's drift out of the comparison.
# Usage: OLD=/tmp/old/build/tools/palm NEW=build/tools/palm R=5 \
#          scripts/farm_ab.sh -w 2 -n 2000000 [--bypass]
# (an old build: git worktree add /tmp/old <commit>; cmake there)
set -euo pipefail
: "${OLD:?set OLD to the palm binary of the other build}"
NEW=${NEW:-$(cd "$(dirname "$0")/.." && pwd)/build/tools/palm}
R=${R:-5}
[ $# -eq 0 ] && set -- -w 2 -n 1000000
for _ in $(seq 1 "$R"); do
  for which in OLD NEW; do
    bin=${!which}
    rate=$("$bin" farm "$@" 2>&1 | sed -nE 's/.* s, ([0-9.]+ [kM]) messages\/s.*/\1/p')
    echo "$which ${rate:-failed}"
  done
done | awk '{rates[$1] = rates[$1] " " $2 $3} END {print "OLD:" rates["OLD"]; print "NEW:" rates["NEW"]}'
