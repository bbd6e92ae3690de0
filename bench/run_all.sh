#!/usr/bin/env bash
# Runs every benchmark in bench/ in turn, then the demo, and rebuilds
# docs/benchmarks.md and docs/demo-accuracy.svg.
#
#   bench/run_all.sh [BUILD_DIR]          (default: build-bench/)
#   BENCH_ONLY="storage serving" bench/run_all.sh    # a subset:
#       storage learner serving learning compress acceptance demo  (all by default)
#
# BUILD_DIR is configured with -DDISTILLD_BUILD_BENCH=ON; scripts/test and
# scripts/demo configure build/ with the benchmarks off, hence a separate dir.
#
# Takes 40-70 minutes on a 2-core machine (acceptance ~10 min, compress ~17 min and the learner
# benchmarks ~10 min on a loaded box; the first run also trains the learner
# benchmarks' teacher (~7 min) and the demo's, which later runs reuse from
# BUILD_DIR/bench-work/; bench_compress trains its own each time, as its
# fragment was measured). Raw output goes to
# BUILD_DIR/bench-results/<UTC time>/*.log and is appended to docs/benchmarks.md.
#
# What is regenerated, honestly:
#   - docs/benchmarks-serving.md and docs/benchmarks-learning.md: rewritten by
#     serving_bench and learning_bench themselves;
#   - docs/demo-accuracy.svg: by bench/plot_demo.py from the demo's summary;
#   - docs/benchmarks.md: its header is kept, the fragments are merged below it
#     and the raw logs appended (bench/merge_benchmarks.py);
#   - docs/benchmarks-{storage,learner,compress}.md are written by hand from the
#     logs (those benchmarks print their tables; they do not write markdown).
#     The merge step fails if the summary table quotes a figure no fragment has.
# Keep the machine otherwise idle: every figure here is sensitive to load.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath -m "${1:-$src/build-bench}")
only=${BENCH_ONLY:-storage learner serving learning compress acceptance demo}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$build/bench-results/$stamp
work=$build/bench-work
mkdir -p "$results" "$work/learner" "$work/compress"
failed=()

wants() { [[ " $only " == *" $1 "* ]]; }

# step NAME COMMAND...: runs COMMAND with its output teed to NAME.log, and
# carries on with the next benchmark if it fails.
step() {
  local name=$1
  shift
  echo "== $name: $*" | tee "$results/$name.log"
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$results/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$results/$name.log"
  ((rc == 0)) || failed+=("$name")
}

{
  echo "date (UTC):   $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "commit:       $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu:          $(nproc) x $(lscpu | sed -n 's/^Model name: *//p')"
  echo "kernel:       $(uname -r)"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (at the start)"
  echo "build:        $build ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt" 2>/dev/null))"
} >"$results/machine.txt"

# 1. Build what the benchmarks need (two jobs: LibTorch units need ~1.5 GB each).
if [[ -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$src" -B "$build" -DDISTILLD_BUILD_BENCH=ON >/dev/null || exit 1
else
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDISTILLD_BUILD_BENCH=ON || exit 1
fi
targets=()
wants storage && targets+=(bench_storage)
wants learner && targets+=(bench_offline_quality bench_class_incremental bench_distill_throughput)
wants serving && targets+=(serving_bench)
# bench/learning is newer than this script's first version: run it where it exists.
[[ -x "$src/bench/learning/run.sh" ]] || only=${only/learning/}
wants learning && targets+=(learning_bench)
wants compress && targets+=(bench_compress)
wants demo && targets+=(distilld)
cmake --build "$build" -j2 --target "${targets[@]}" || exit 1
cat "$results/machine.txt"

# 2. Storage (docs/benchmarks-storage.md reports two consecutive runs).
if wants storage; then
  step storage-run1 "$build/bench/storage/bench_storage" --seconds 3
  step storage-run2 "$build/bench/storage/bench_storage" --seconds 3
fi

# 3. Learner (docs/benchmarks-learner.md), from a scratch directory; the
#    teacher from (c) is reused by (b) and by later runs.
if wants learner; then
  lb=$build/bench/learner
  pushd "$work/learner" >/dev/null || exit 1
  [[ -f teacher.pt ]] ||
    step learner-teacher "$lb/bench_offline_quality" --teacher teacher.pt --threads 2 --teacher-epochs 3
  step learner-offline "$lb/bench_offline_quality" --teacher teacher.pt --threads 1
  step learner-class-incremental "$lb/bench_class_incremental" --teacher teacher.pt --threads 1 --epochs 3
  step learner-class-incremental-offline15 "$lb/bench_class_incremental" --teacher teacher.pt --threads 1 \
    --rows offline --epochs 15 --work-dir bench_ci_off15
  step learner-class-incremental-e5r2 "$lb/bench_class_incremental" --teacher teacher.pt --threads 1 \
    --epochs 5 --replay-ratio 2 --rows reservoir class_balanced --work-dir bench_ci_e5r2
  step learner-throughput "$lb/bench_distill_throughput" --threads 1 2 --steps 300 --repeats 3
  popd >/dev/null || exit 1
fi

# 4. Serving: wrk at 1/16/64 connections, in-process baseline, hot swaps.
#    Rewrites docs/benchmarks-serving.md.
wants serving && step serving "$src/bench/serving/run.sh" "$build" 10

# 4b. Online learning: ingest through POST /v1/samples (wrk) against direct
#     appends, and time to adapt. Rewrites docs/benchmarks-learning.md.
wants learning && step learning "$src/bench/learning/run.sh" "$build"

# 5. Compression (docs/benchmarks-compress.md); trains its own 20k-image teacher.
if wants compress; then
  pushd "$work/compress" >/dev/null || exit 1
  step compress "$build/bench/compress/bench_compress" --out-dir .
  popd >/dev/null || exit 1
fi

# 5b. Acceptance (docs/benchmarks-acceptance.md, by hand from the summary):
#     a user's own PyTorch models through the HTTP API with the example config,
#     labelled, mostly unlabelled and CNN. Uses build/daemon/distilld's sibling
#     in this build dir.
if wants acceptance; then
  step acceptance "$src/bench/acceptance/run.sh" "$work/acceptance" --distilld "$build/daemon/distilld"
fi

# 6. A quick demo (3,000 samples per phase) and its accuracy plot. The state
#    dir keeps the demo's teacher between runs; the rest is reset by the demo.
if wants demo; then
  step demo "$build/daemon/distilld" demo --state-dir "$work/demo-state" --phase-limit 3000 --exit \
    --listen 127.0.0.1:0
  if [[ -f "$work/demo-state/demo-summary.json" ]]; then
    step plot python3 "$src/bench/plot_demo.py" "$work/demo-state" "$src/docs/demo-accuracy.svg"
  else
    failed+=(plot)
  fi
fi

# 7. docs/benchmarks.md: header kept, fragments merged, raw logs appended.
# Not a step: its own log would be half-written while it is merged.
python3 "$src/bench/merge_benchmarks.py" --logs "$results" || failed+=(merge)

echo
echo "raw output: $results"
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all benchmarks ran; update docs/benchmarks-{storage,learner,compress,acceptance}.md and the summary in"
echo "docs/benchmarks.md from the logs if their figures changed, then run again:"
echo "  bench/merge_benchmarks.py --logs $results"
