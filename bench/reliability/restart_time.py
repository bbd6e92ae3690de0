#!/usr/bin/python3
"""How long a restarted `distilld serve` takes to be ready, against the cost of
starting the binary at all, measured in the same run.

Starts the daemon once with the example config (paths and the port changed,
and the count trigger off) and a user's TorchScript teacher and student, ingests labelled
samples, runs one learner round to its outcome, and leaves samples waiting:
the state a restart meets in production. Then, --cycles times, kills it
(SIGKILL by default: a crash, so RocksDB replays its log) and measures the
time from exec to the first 200 of GET /v2/health/ready on a fresh connection
(polled every 5 ms). The reference, alternated with the restarts, is
`distilld --version`: the dynamic loader and LibTorch's initialisers, which
every start pays before main(). The daemon's own log line ("started in ...")
splits the rest. On a shared machine the absolute times
drift; the difference and the ratio between the two are what to compare.
Prints JSON.

  /usr/bin/python3 bench/reliability/restart_time.py --distilld build/daemon/distilld \\
      --models /tmp/models --cycles 20 --out /tmp/restart.json

--models is a directory from bench/acceptance/user_models.py (teacher.pt,
student_mlp.pt); without it a small random teacher and student are made.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "acceptance"))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import user_stream as us  # noqa: E402
from conn_flood import probe  # noqa: E402
from full_disk import tiny_models  # noqa: E402


def start_and_time(distilld, cfg, logf, port, limit_s=120):
    """(process, seconds from exec to ready) or (process, None)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([distilld, "serve", "--config", cfg], stdout=logf, stderr=subprocess.STDOUT)
    while time.perf_counter() - t0 < limit_s:
        if proc.poll() is not None:
            return proc, None
        if probe(port, timeout=1.0, path="/v2/health/ready")[0] == 200:
            return proc, time.perf_counter() - t0
        time.sleep(0.005)
    return proc, None


STARTED = re.compile(r"started in (\d+) ms: state dir opened in (\d+) ms, active student loaded and warmed in "
                     r"(\d+) ms, learner started in (\d+) ms")


def start_phases(log_path, offset):
    """The daemon's own account of the start logged after byte `offset`."""
    with open(log_path) as f:
        f.seek(offset)
        hits = STARTED.findall(f.read())
    if not hits:
        return None
    total, state, student, learner = (int(v) for v in hits[-1])
    return {"start_ms": total, "state_ms": state, "student_ms": student, "learner_ms": learner}


def version_time(distilld):
    t0 = time.perf_counter()
    subprocess.run([distilld, "--version"], check=True, capture_output=True)
    return time.perf_counter() - t0


def prepare_state(args, cfg, port, logf):
    """Samples ingested, one round decided, more samples waiting."""
    proc, ready = start_and_time(args.distilld, cfg, logf, port)
    assert ready is not None, "daemon did not start (see %s)" % logf.name
    c = us.Http("127.0.0.1", port, timeout=120)
    rng = np.random.default_rng(1)
    xtr, ytr = us.user_models.load_fashion("train")
    order = rng.permutation(len(ytr))[: args.samples + args.waiting]
    sent = 0
    for i in range(0, len(order), 256):
        idx = order[i:i + 256]
        body, hdrs = us.binary_body([("input", "FP32", xtr[idx]), ("label", "INT64", ytr[idx].astype(np.int64))])
        st, _, data = c.request("POST", "/v1/samples", body, hdrs)
        assert st == 200, (st, data[:200])
        sent += len(idx)
        if sent == args.samples:
            st, body = c.json("POST", "/v1/learner/rounds", {})
            assert st == 202, (st, body)
            t0 = time.time()
            while time.time() - t0 < 600:
                st, r = c.json("GET", "/v1/learner/rounds/%d" % body["round_id"])
                if st == 200 and r.get("ended_us") is not None:
                    print("round %d: %s" % (r["id"], r["outcome"]), file=sys.stderr)
                    break
                time.sleep(0.5)
    c.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    return sent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distilld", default=os.path.join(REPO, "build", "daemon", "distilld"))
    ap.add_argument("--models", default="", help="directory of bench/acceptance/user_models.py")
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--samples", type=int, default=6000, help="ingested before the round")
    ap.add_argument("--waiting", type=int, default=2048, help="ingested after it, left waiting")
    ap.add_argument("--signal", choices=("KILL", "TERM"), default="KILL")
    ap.add_argument("--work", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="restart_time_")
    os.makedirs(work, exist_ok=True)
    if args.models:
        teacher = os.path.join(args.models, "teacher.pt")
        student = os.path.join(args.models, "student_mlp.pt")
    else:
        teacher, student = tiny_models(os.path.join(work, "models"))
    port = us.free_port()
    cfg = os.path.join(work, "distilld.yaml")
    text = us.write_config(us.EXAMPLE_CONFIG, cfg, port, os.path.join(work, "state"), teacher, student)
    # Rounds only when asked: a restart then meets samples waiting, and no
    # count-triggered round competes with the start being timed.
    assert text.count("  trigger_count: 1000\n") == 1
    open(cfg, "w").write(text.replace("  trigger_count: 1000\n", "  trigger_count: 100000000\n"))
    logf = open(os.path.join(work, "distilld.log"), "w")
    ingested = prepare_state(args, cfg, port, logf)

    ready, reference, phases, failed = [], [], [], 0
    proc, _ = start_and_time(args.distilld, cfg, logf, port)
    for _ in range(args.cycles):
        proc.send_signal(getattr(signal, "SIG" + args.signal))
        proc.wait(timeout=120)
        reference.append(version_time(args.distilld))
        logf.flush()
        offset = os.path.getsize(logf.name)
        proc, t = start_and_time(args.distilld, cfg, logf, port)
        if t is None:
            failed += 1
        else:
            ready.append(t)
            p = start_phases(logf.name, offset)
            if p:
                phases.append(p)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)

    def summary(v):
        return {"mean_ms": round(1e3 * statistics.mean(v), 1), "median_ms": round(1e3 * statistics.median(v), 1),
                "max_ms": round(1e3 * max(v), 1), "min_ms": round(1e3 * min(v), 1)} if v else None

    res = {"distilld": args.distilld, "teacher": teacher, "student": student, "signal": args.signal,
           "samples_ingested": ingested, "cycles": args.cycles, "not_ready": failed,
           "ready": summary(ready), "reference_version": summary(reference),
           "ready_within_2s": sum(1 for t in ready if t <= 2.0),
           "median_ready_over_reference": round(statistics.median(ready) / statistics.median(reference), 2)
           if ready and reference else None,
           "median_ready_minus_reference_ms": round(1e3 * (statistics.median(ready) - statistics.median(reference)), 1)
           if ready and reference else None,
           "daemon_start_median_ms": {k: statistics.median(p[k] for p in phases) for k in phases[0]}
           if phases else None,
           "loadavg": os.getloadavg(), "work": work}
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        open(args.out, "w").write(text + "\n")


if __name__ == "__main__":
    main()
