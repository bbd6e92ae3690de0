#!/bin/bash
# A/B of two distilld binaries on single-sample JSON infer: each serves the
# example config (paths and port changed) with the given teacher and student
# in turn, wrk drives 64 connections (2 s warm-up, then N seconds), rounds
# alternate A and B so drift on a shared machine hits both alike. Prints one
# line per run and the mean requests/s of each binary.
#
#   bench/serving/ab_infer.sh A_BINARY B_BINARY TEACHER STUDENT [ROUNDS] [SECONDS]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
a=$1 b=$2 teacher=$3 student=$4 rounds=${5:-6} seconds=${6:-8}
work=$(mktemp -d /tmp/ab_infer.XXXXXX)
port=$((20000 + RANDOM % 20000))
/usr/bin/python3 - "$src" "$work" "$port" "$teacher" "$student" <<'EOF'
import json, os, sys
src, work, port, teacher, student = sys.argv[1:]
sys.path.insert(0, os.path.join(src, "bench", "acceptance"))
import user_models, user_stream
user_stream.write_config(user_stream.EXAMPLE_CONFIG, os.path.join(work, "cfg.yaml"), int(port),
                         os.path.join(work, "state"), teacher, student)
x, _ = user_models.load_fashion("test")
os.makedirs(os.path.join(work, "bodies"))
for i in range(16):
    body = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                        "data": [round(float(v), 4) for v in x[i].ravel()]}]}
    open(os.path.join(work, "bodies", "json_%d.txt" % i), "w").write(json.dumps(body))
EOF
export BODY_DIR=$work/bodies BODY_COUNT=16
for round in $(seq "$rounds"); do
  for side in A B; do
    bin=$a; [[ $side == B ]] && bin=$b
    rm -rf "$work/state"
    "$bin" serve --config "$work/cfg.yaml" > "$work/distilld_$side.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do curl -sf "localhost:$port/v2/health/ready" >/dev/null && break; sleep 0.1; done
    wrk -t2 -c64 -d2s -s "$src/bench/serving/infer_json.lua" "http://127.0.0.1:$port" >/dev/null
    out=$(wrk -t2 -c64 -d"${seconds}s" -s "$src/bench/serving/infer_json.lua" "http://127.0.0.1:$port")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    echo "round $round $side $rps req/s, non-2xx ${non2xx:-0}"
    kill "$pid"
    wait "$pid" || true
  done
done | tee "$work/runs.txt"
awk '{s[$3] += $4; n[$3]++} END {printf "mean A %.0f req/s, B %.0f req/s, B/A %.3f\n", s["A"]/n["A"], s["B"]/n["B"], (s["B"]/n["B"])/(s["A"]/n["A"])}' "$work/runs.txt"
rm -rf "$work"
