#!/usr/bin/env bash
# Class-incremental Fashion-MNIST with dormant units recycled (the default),
# over several seeds, against offline rows with about the same training steps
# at each learning rate (docs/benchmarks-learner.md, "Dormant units").
# Usage: bench/learner/class_incremental_recycle.sh BENCH_BINARY TEACHER.pt [seed...]
# Run from a scratch directory; each configuration writes its own work dir.
# Two runs at a time (one thread each) on a 2-core machine: BENCH_JOBS=2.
set -euo pipefail
bin=$1 teacher=$2
shift 2
seeds=("$@")
[[ ${#seeds[@]} -eq 0 ]] && seeds=(1 2 3 4 5 6 7)
run() {  # label, then bench arguments; prints the label before each table row
  local label=$1
  shift
  "$bin" --teacher "$teacher" --threads 1 "$@" 2>/dev/null | grep -E '^\| ' | grep -vE '^\| row' |
    sed "s/^/$label /"
}
seed_runs() {
  local s=$1
  for lr in 1e-3 2e-3; do
    run "seed=$s lr=$lr ft=3 recycle=1" --seed "$s" --lr "$lr" --epochs 3 --finetune-epochs 3 \
      --rows reservoir class_balanced --work-dir "rc_${lr}_$s"
    run "seed=$s lr=$lr ft=3 recycle=0" --seed "$s" --lr "$lr" --epochs 3 --finetune-epochs 3 --recycle 0 \
      --rows class_balanced --work-dir "rn_${lr}_$s"
    run "seed=$s lr=$lr offline6" --seed "$s" --lr "$lr" --epochs 6 --rows offline --work-dir "ro_${lr}_$s"
  done
  run "seed=$s lr=2e-3 ft=0 recycle=1" --seed "$s" --lr 2e-3 --epochs 3 --finetune-epochs 0 \
    --rows reservoir class_balanced \
    --work-dir "r0_$s"
  run "seed=$s lr=3e-3 offline6" --seed "$s" --lr 3e-3 --epochs 6 --rows offline --work-dir "ro_3e-3_$s"
}
jobs=${BENCH_JOBS:-1}
for s in "${seeds[@]}"; do
  seed_runs "$s" > "recycle_seed_$s.txt" &
  while (( $(jobs -rp | wc -l) >= jobs )); do wait -n; done
done
wait
for s in "${seeds[@]}"; do cat "recycle_seed_$s.txt"; done
