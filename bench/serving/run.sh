#!/bin/sh
# Builds serving_bench and runs the serving benchmark: wrk (JSON and binary
# single-sample Fashion-MNIST infer at 1, 16 and 64 connections), an
# in-process forward baseline in the same run, and p99 during 50 hot swaps.
# Writes docs/benchmarks-serving.md. Loopback only.
#
#   bench/serving/run.sh [build dir] [seconds per wrk run]
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
seconds=${2:-10}
command -v wrk >/dev/null || { echo "wrk is not installed (Debian package wrk)" >&2; exit 1; }
[ -f "$build/build.ninja" ] || cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j2 --target serving_bench
"$build/bench/serving/serving_bench" "$src/bench/serving" "$src/docs/benchmarks-serving.md" "$seconds"
