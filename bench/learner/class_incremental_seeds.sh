#!/usr/bin/env bash
# Class-incremental Fashion-MNIST over several seeds, with the offline rows
# that match each replay setting's training steps (docs/benchmarks-learner.md).
# Usage: bench/learner/class_incremental_seeds.sh BENCH_BINARY TEACHER.pt [seed...]
# Run from a scratch directory; each configuration writes its own work dir.
# These are session 4's measurements, from before dormant units were recycled
# (hence --recycle 0 --finetune-epochs 0, the defaults then); class_incremental_recycle.sh measures the current default.
set -euo pipefail
bin=$1 teacher=$2
shift 2
seeds=("$@")
[[ ${#seeds[@]} -eq 0 ]] && seeds=(1 2 3)
run() {  # label, then bench arguments
  local label=$1
  shift
  echo "### $label: $*"
  "$bin" --teacher "$teacher" --threads 1 --recycle 0 --finetune-epochs 0 "$@" 2>/dev/null | grep -E '^\|' | grep -vE '^\| row|^\|---'
}
for s in "${seeds[@]}"; do
  echo "## seed $s"
  run "replay ratio 1 (default), offline 3 epochs" --seed "$s" --epochs 3 --work-dir "r1_$s"
  run "offline, steps of ratio 1" --seed "$s" --rows offline --epochs 6 --work-dir "o6_$s"
  run "replay ratio 4" --seed "$s" --epochs 3 --replay-ratio 4 --rows reservoir class_balanced --work-dir "r4_$s"
  run "replay ratio 4, shifted views" --seed "$s" --epochs 3 --replay-ratio 4 --augment-shift 1 \
    --rows reservoir class_balanced --work-dir "r4s_$s"
  run "offline, steps of ratio 4" --seed "$s" --rows offline --epochs 13 --work-dir "o13_$s"
  run "offline, 15 epochs" --seed "$s" --rows offline --epochs 15 --work-dir "o15_$s"
done
