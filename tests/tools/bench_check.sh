#!/bin/sh
# Runs `palm bench ARGS... --csv OUT.csv --plot OUT.svg` as a user would,
# then checks it: exit code 0 (every reply of every case was checked right),
# no segment of its farms left in /dev/shm, and the CSV and SVG
# (check_bench_csv.py with EXPECT: --transports ... --payloads ... --workers
# ... --runs ...).
# usage: bench_check.sh PALM OUT "EXPECT" ARGS...
palm=$1 out=$2 expect=$3
shift 3
"$palm" bench "$@" --csv "$out.csv" --plot "$out.svg" &
pid=$!
wait $pid
rc=$?
if ls /dev/shm/palm-farm-$pid-* /dev/shm/palm-bypass-$pid-* >/dev/null 2>&1; then
  echo "segment left: $(ls /dev/shm/palm-farm-$pid-* /dev/shm/palm-bypass-$pid-* 2>/dev/null)"
  exit 1
fi
if [ $rc -ne 0 ]; then
  echo "palm bench exited $rc"
  exit 1
fi
# shellcheck disable=SC2086 # EXPECT is a list of flags
exec /usr/bin/python3 "$(dirname "$0")/check_bench_csv.py" "$out.csv" --svg "$out.svg" $expect
