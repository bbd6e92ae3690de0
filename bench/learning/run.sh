#!/bin/sh
# Builds learning_bench and runs it: durable ingest through POST /v1/samples
# (wrk; JSON and binary; batch 1, 32, 256; with and without concurrent
# inference), against direct SampleStore appends in the same run, and the
# time from the last acknowledged sample of a 12,000-sample phase to a
# promoted version serving. Writes docs/benchmarks-learning.md. Loopback only.
#
#   bench/learning/run.sh [build dir] [seconds per wrk run]
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build-bench}
seconds=${2:-8}
command -v wrk >/dev/null || { echo "wrk is not installed (Debian package wrk)" >&2; exit 1; }
[ -f "$build/build.ninja" ] || cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j2 --target learning_bench
"$build/bench/learning/learning_bench" "$src/bench" "$src/docs/benchmarks-learning.md" "$seconds"
