#!/usr/bin/env bash
# Sets up, builds and runs palm's whole test suite:
#   1. Release build (warnings as errors), every test;
#   2. ASan+UBSan build of the core and transport tests (-O1);
#   3. TSan build of the threaded core and transport tests (TSan does not
#      follow fork, so tests that start processes are left to 1 and 2).
# Prints the time of each stage. Exit status: 0 only if every stage passed.
# Usage: scripts/test.sh [--quick]   (--quick: stage 1 only)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)
quick=0
[ "${1:-}" = "--quick" ] && quick=1

stage() {  # stage NAME COMMAND...
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name"
  "$@"
  echo "== $name: $((SECONDS - t0)) s"
}

configure_build() {  # configure_build DIR CMAKE_ARGS...
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DPALM_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

run_ctest() {  # run_ctest DIR CTEST_ARGS...
  local dir=$1; shift
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@"
}

stage "set-up" bash scripts/setup.sh
stage "build (release)" configure_build build -DCMAKE_BUILD_TYPE=Release
stage "test (release)" run_ctest build
[ $quick -eq 1 ] && exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
stage "build (asan+ubsan)" configure_build build-asan -DCMAKE_BUILD_TYPE=Debug \
  -DPALM_SANITIZE=address -DPALM_BUILD_BENCH=OFF
stage "test (asan+ubsan)" run_ctest build-asan
stage "build (tsan)" configure_build build-tsan -DCMAKE_BUILD_TYPE=Debug \
  -DPALM_SANITIZE=thread -DPALM_BUILD_BENCH=OFF
stage "test (tsan)" run_ctest build-tsan -L threaded
