#!/bin/bash
# The distilld acceptance matrix, one run after the other (never in parallel:
# the machine has 2 cores and each run times the daemon's learner):
#   1. labelled MLP             (--student mlp)
#   2. mostly-unlabelled MLP    (--student mlp --labelled-every 20)
#   3. labelled CNN             (--student cnn)
# then a combined summary. Usage: bench/acceptance/run.sh [OUT_DIR] (default /tmp/acceptance).
# Extra arguments after OUT_DIR go to every run (e.g. --quick, --distilld PATH).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
PY=/usr/bin/python3
OUT="${1:-/tmp/acceptance}"
shift || true
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# The user's models, built once (deterministic) and shared by the three runs.
start=$(date +%s)
"$PY" "$HERE/user_models.py" --out "$OUT/models" 2>&1 | tee "$OUT/models.log" || exit 1

status=0
run() {
  local name="$1"; shift
  echo "=== $name: user_stream.py $* (log $OUT/$name.stdout)"
  local t0=$(date +%s)
  "$PY" "$HERE/user_stream.py" --models "$OUT/models" --work "$OUT/$name" --out "$OUT/$name.json" "$@" \
    2>&1 | tee "$OUT/$name.stdout"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  [ "$rc" -eq 0 ] || status=1
}

run mlp_labelled     --student mlp "$@"
run mlp_unlabelled20 --student mlp --labelled-every 20 "$@"
run cnn_labelled     --student cnn "$@"

files=()
for n in mlp_labelled mlp_unlabelled20 cnn_labelled; do
  [ -f "$OUT/$n.json" ] && grep -q '"metrics"' "$OUT/$n.json" && files+=("$OUT/$n.json")
done
echo
echo "=== combined summary ($(( $(date +%s) - start )) s in all)"
if [ ${#files[@]} -gt 0 ]; then
  "$PY" "$HERE/user_stream.py" --summarize "${files[@]}" | tee "$OUT/summary.txt"
else
  echo "no run finished"
fi
exit $status
