#!/usr/bin/python3
"""A soak of distilld: ingest, inference, capture with feedback and learner
rounds, all at once, for a set time, recording the daemon's resident memory,
open file descriptors, RocksDB size and models directory over time.

The daemon runs config/distilld.example.yaml with the paths changed, a
capture fraction of 0.02 and learner.keep_served_versions 5 (so the
retention policy, not the disk, bounds models/), a teacher trained here for
one epoch on Fashion-MNIST and an untrained MLP 784-64-10 student, both
TorchScript files built in Python as a user's would be. It is driven only
over HTTP:
- ingest: a binary POST /v1/samples of 64 labelled Fashion-MNIST training
  images every second (rounds then start on the example's count trigger);
- inference: two clients sending binary single-image requests with an id,
  about 150 a second each;
- feedback: every 20th request's true label through POST /v1/feedback
  (a 404 means the request was not captured).

Targets (issue 18): RSS flat within 10% after warm-up (the first 20% of the
run), at most two model versions in memory (distilld_models_loaded),
models/ bounded by the retention policy, no failed inference, and the status
reads the soak itself makes (/metrics, /v1/learner, the versions list)
answered within 5 s while rounds write to the store.

Usage:
  /usr/bin/python3 bench/reliability/soak.py --duration-s 3600 --out /tmp/soak.json
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "acceptance"))
sys.dont_write_bytecode = True
import user_models  # noqa: E402
import user_stream as us  # noqa: E402

KEEP_SERVED = 5
INGEST_BATCH = 64


def build_models(out, xtr, ytr):
    """A teacher trained one epoch on Fashion-MNIST and an untrained student."""
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                  torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    perm = torch.randperm(len(y))
    for i in range(0, len(y), 128):
        idx = perm[i:i + 128]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(teacher(x[idx]), y[idx]).backward()
        opt.step()
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 10))
    paths = []
    for name, m in (("teacher", teacher), ("student", student)):
        p = os.path.join(out, name + ".pt")
        torch.jit.save(torch.jit.script(m.eval()), p)
        paths.append(p)
    return paths


def write_config(path, port, state_dir, teacher, student):
    text = us.write_config(us.EXAMPLE_CONFIG, path, port, state_dir, teacher, student)
    for old, new in (("  fraction: 0.0", "  fraction: 0.02"),
                     ("  keep_served_versions: -1", "  keep_served_versions: %d" % KEEP_SERVED)):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    open(path, "w").write(text)
    return text


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def rss_bytes(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def gauge(metrics_text, name):
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Load:
    """The client threads and their counters."""

    def __init__(self, port, xtr, ytr):
        self.port, self.xtr, self.ytr = port, xtr, ytr
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"ingest_ok": 0, "ingest_refused": 0, "infer_ok": 0, "infer_failed": 0,
                       "feedback_ok": 0, "feedback_not_captured": 0, "transport_errors": 0}
        self.threads = [threading.Thread(target=self.ingest, daemon=True)]
        self.threads += [threading.Thread(target=self.infer, args=(k,), daemon=True) for k in range(2)]

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def ingest(self):
        c = us.Http("127.0.0.1", self.port)
        rng = np.random.default_rng(1)
        while not self.stop.is_set():
            idx = rng.integers(0, len(self.ytr), INGEST_BATCH)
            body, hdrs = us.binary_body([("input", "FP32", self.xtr[idx]), ("label", "INT64", self.ytr[idx])])
            try:
                st, _, _ = c.request("POST", "/v1/samples", body, hdrs)
                self.add("ingest_ok" if st == 200 else "ingest_refused", INGEST_BATCH if st == 200 else 1)
            except Exception:
                self.add("transport_errors")
            self.stop.wait(1.0)

    def infer(self, k):
        c = us.Http("127.0.0.1", self.port)
        rng = np.random.default_rng(100 + k)
        n = 0
        while not self.stop.is_set():
            i = int(rng.integers(0, len(self.ytr)))
            rid = "soak-%d-%d" % (k, n)
            n += 1
            body, hdrs = infer_body(self.xtr[i:i + 1], rid)
            try:
                st, _, _ = c.request("POST", "/v2/models/fashion/infer", body, hdrs)
                self.add("infer_ok" if st == 200 else "infer_failed")
                if n % 20 == 0:
                    fst, _ = c.json("POST", "/v1/feedback", {"id": rid, "label": int(self.ytr[i])})
                    self.add("feedback_ok" if fst == 200 else "feedback_not_captured")
            except Exception:
                self.add("transport_errors")
            time.sleep(0.005)


def infer_body(x, rid):
    """A binary infer request with an id, which capture remembers for feedback."""
    raw = x.astype("<f4").tobytes()
    header = json.dumps({"id": rid, "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                                "parameters": {"binary_data_size": len(raw)}}]},
                        separators=(",", ":")).encode()
    return header + raw, {"Content-Type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(len(header))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distilld", default=us.DEFAULT_DISTILLD)
    ap.add_argument("--duration-s", type=float, default=3600)
    ap.add_argument("--sample-s", type=float, default=10)
    ap.add_argument("--work", default="/tmp/distilld-soak")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    subprocess.run(["rm", "-rf", args.work], check=True)
    os.makedirs(args.work)
    xtr, ytr = user_models.load_fashion("train")
    teacher, student = build_models(os.path.join(args.work, "models_in"), xtr, ytr)
    port = us.free_port()
    state = os.path.join(args.work, "state")
    cfg = os.path.join(args.work, "distilld.yaml")
    write_config(cfg, port, state, teacher, student)
    logf = open(os.path.join(args.work, "distilld.log"), "w")
    proc = subprocess.Popen([args.distilld, "serve", "--config", cfg], stdout=logf, stderr=subprocess.STDOUT)
    mon = us.Http("127.0.0.1", port, timeout=60)
    for _ in range(600):
        try:
            if mon.request("GET", "/v2/health/ready")[0] == 200:
                break
        except Exception:
            pass
        time.sleep(0.1)
    else:
        sys.exit("distilld did not get ready; see %s" % logf.name)

    load = Load(port, xtr, ytr)
    for t in load.threads:
        t.start()
    samples = []
    status_failures = 0
    t0 = time.time()
    try:
        while time.time() - t0 < args.duration_s and proc.poll() is None:
            time.sleep(args.sample_s)
            try:
                t_read = time.monotonic()
                _, _, metrics = mon.request("GET", "/metrics")
                text = metrics.decode()
                _, learner = mon.json("GET", "/v1/learner")
                _, versions = mon.json("GET", "/v1/models/fashion/versions")
                status_ms = (time.monotonic() - t_read) * 1000
            except Exception as e:  # a read that timed out is a finding, not the end of the soak
                status_failures += 1
                us.log("status read failed: %r" % (e,))
                continue
            models_dir = os.path.join(state, "models")
            row = {
                "t_s": round(time.time() - t0, 1),
                "rss_mb": round(rss_bytes(proc.pid) / 2**20, 1),
                "open_fds": len(os.listdir("/proc/%d/fd" % proc.pid)),
                "rocksdb_mb": round(du(os.path.join(state, "samples")) / 2**20, 2),
                "models_dir_mb": round(du(models_dir) / 2**20, 2),
                "model_files": len([f for f in os.listdir(models_dir) if f.endswith(".pt")]),
                "models_loaded": gauge(text, "distilld_models_loaded"),
                "versions": len(versions["versions"]),
                "rounds": learner["rounds_completed"],
                "samples_waiting": learner["samples_waiting"],
                "status_ms": round(status_ms, 1),
            }
            with load.lock:
                row.update(load.counts)
            samples.append(row)
            us.log(" ".join("%s=%s" % kv for kv in row.items()))
    finally:
        load.stop.set()
        for t in load.threads:
            t.join(timeout=30)
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        logf.close()

    warm = [s for s in samples if s["t_s"] >= 0.2 * args.duration_s]
    window = max(1, len(warm) // 10)
    start_rss = statistics.median(s["rss_mb"] for s in warm[:window]) if warm else None
    end_rss = statistics.median(s["rss_mb"] for s in warm[-window:]) if warm else None
    drift = (end_rss - start_rss) / start_rss if warm else None
    summary = {
        "duration_s": args.duration_s,
        "samples": len(samples),
        "alive_at_end": alive,
        "exit_code": proc.returncode,
        "rss_mb_after_warmup": start_rss,
        "rss_mb_at_end": end_rss,
        "rss_drift": None if drift is None else round(drift, 4),
        "rss_max_mb": max(s["rss_mb"] for s in samples) if samples else None,
        "open_fds_min_max": [min(s["open_fds"] for s in samples), max(s["open_fds"] for s in samples)]
        if samples else None,
        "rocksdb_mb_max": max(s["rocksdb_mb"] for s in samples) if samples else None,
        "models_dir_mb_max": max(s["models_dir_mb"] for s in samples) if samples else None,
        "model_files_max": max(s["model_files"] for s in samples) if samples else None,
        "models_loaded_max": max((s["models_loaded"] or 0) for s in samples) if samples else None,
        "versions_at_end": samples[-1]["versions"] if samples else None,
        "rounds_at_end": samples[-1]["rounds"] if samples else None,
        "counts": samples[-1] if samples else None,
        "status_read_ms_max": max(s["status_ms"] for s in samples) if samples else None,
        "status_read_failures": status_failures,
        "keep_versions": 20,
        "keep_served_versions": KEEP_SERVED,
    }
    summary["targets"] = {
        "rss_flat_within_10pct": drift is not None and abs(drift) <= 0.10,
        "at_most_two_models_loaded": summary["models_loaded_max"] is not None and summary["models_loaded_max"] <= 2,
        "model_files_bounded": summary["model_files_max"] is not None
        and summary["model_files_max"] <= 20 + KEEP_SERVED + 1,
        "no_failed_inference": bool(samples) and samples[-1]["infer_failed"] == 0,
        # GET /metrics, /v1/learner and /v1/models/.../versions in turn, all
        # answered within 5 s while rounds write to the store.
        "status_reads_within_5s": bool(samples) and status_failures == 0
        and summary["status_read_ms_max"] <= 5000,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        us.write_json(args.out, {"summary": summary, "series": samples})
    sys.exit(0 if all(summary["targets"].values()) and alive else 1)


if __name__ == "__main__":
    main()
