#!/bin/bash
# How the replay defaults were chosen: the labelled MLP acceptance run over a
# grid of replay.capacity x replay.replay_ratio x learner.epochs, RUNS runs
# each (the automatic triggers split phases differently from run to run, so
# one run is not enough). Each cell starts from config/distilld.example.yaml
# with those three lines changed (user_stream.py --example); everything else
# is the shipped default. One offline seed per run (the offline rows are
# noisier than with run.sh's three).
# Usage: bench/acceptance/defaults_grid.sh OUT_DIR MODELS_DIR [RUNS]
#   MODELS_DIR: from user_models.py --out (run.sh leaves one in OUT/models)
# Then: bench/acceptance/grid_summary.py OUT_DIR/*.json
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$1"; MODELS="$2"; RUNS="${3:-3}"
EXAMPLE="$HERE/../../config/distilld.example.yaml"
mkdir -p "$OUT"
grep -q '^  capacity: ' "$EXAMPLE" && grep -q '^  replay_ratio: ' "$EXAMPLE" && grep -q '^  epochs: ' "$EXAMPLE"
for cap in 2000 5000 10000; do for ratio in 1.0 2.0; do for ep in 2 3; do
  v=c${cap}_r${ratio}_e${ep}
  sed "s/^  capacity: .*/  capacity: $cap/; s/^  replay_ratio: .*/  replay_ratio: $ratio/; s/^  epochs: .*/  epochs: $ep/" \
    "$EXAMPLE" > "$OUT/$v.yaml"
  for k in $(seq 1 "$RUNS"); do
    /usr/bin/python3 "$HERE/user_stream.py" --models "$MODELS" --student mlp --offline-seeds 1 \
      --example "$OUT/$v.yaml" --work "$OUT/work" --out "$OUT/${v}_$k.json" > "$OUT/${v}_$k.stdout" 2>&1
    rm -rf "$OUT/work/state"
  done
done; done; done
