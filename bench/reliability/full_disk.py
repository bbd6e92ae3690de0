#!/usr/bin/python3
"""distilld on a filling disk, for real: a small tmpfs holds the state dir.

For two settings of storage.min_free_mb (the floor, then 0 = no floor) this
starts `distilld serve` with config/distilld.example.yaml (listen, state_dir,
model.teacher, model.student and storage.min_free_mb changed; the learner's
triggers are pushed out so that every acknowledged sample is still waiting
at the end and can be counted), streams binary POST /v1/samples batches of
256 Fashion-MNIST-sized images until the daemon refuses one or dies, then
checks that it still serves, SIGKILLs it, restarts it on the same full disk,
and counts the samples it kept against those it acknowledged.

Needs root (it mounts a tmpfs). Usage:
  sudo /usr/bin/python3 bench/reliability/full_disk.py --out /tmp/full_disk.json
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "acceptance"))
sys.dont_write_bytecode = True
import user_stream as us  # noqa: E402

BATCH = 256


def tiny_models(out):
    """A random MLP teacher and student, as a user's TorchScript files: the
    disk, not the learning, is under test."""
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name, hidden in (("teacher", 256), ("student", 32)):
        m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, 10))
        torch.jit.save(torch.jit.script(m.eval()), os.path.join(out, name + ".pt"))
    return os.path.join(out, "teacher.pt"), os.path.join(out, "student.pt")


def sh(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def config(path, port, state_dir, teacher, student, min_free_mb):
    text = us.write_config(us.EXAMPLE_CONFIG, path, port, state_dir, teacher, student)
    for old, new in (("  min_free_mb: 256", "  min_free_mb: %d" % min_free_mb),
                     ("  trigger_count: 1000", "  trigger_count: 100000000"),
                     ("  trigger_interval_s: 300", "  trigger_interval_s: 1000000")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    open(path, "w").write(text)


def start(distilld, cfg, logf, port):
    proc = subprocess.Popen([distilld, "serve", "--config", cfg], stdout=logf, stderr=subprocess.STDOUT)
    c = us.Http("127.0.0.1", port, timeout=30)
    for _ in range(600):
        if proc.poll() is not None:
            return proc, None
        try:
            if c.request("GET", "/v2/health/ready")[0] == 200:
                return proc, c
        except Exception:
            pass
        time.sleep(0.1)
    return proc, None


def one_setting(args, teacher, student, min_free_mb):
    mnt = os.path.join(args.work, "mnt_%d" % min_free_mb)
    os.makedirs(mnt, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", "size=%dm" % args.size_mb, "tmpfs", mnt)
    res = {"min_free_mb": min_free_mb, "fs_mb": args.size_mb}
    try:
        port = us.free_port()
        cfg = os.path.join(args.work, "distilld_%d.yaml" % min_free_mb)
        config(cfg, port, os.path.join(mnt, "state"), teacher, student, min_free_mb)
        logf = open(os.path.join(args.work, "distilld_%d.log" % min_free_mb), "w")
        proc, c = start(args.distilld, cfg, logf, port)
        assert c is not None, "daemon did not start"
        rng = np.random.default_rng(1)
        acked, batches, first_refusal = 0, 0, None
        t0 = time.time()
        while time.time() - t0 < 600:
            x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
            y = rng.integers(0, 10, BATCH).astype(np.int64)
            body, hdrs = us.binary_body([("input", "FP32", x), ("label", "INT64", y)])
            try:
                st, _, data = c.request("POST", "/v1/samples", body, hdrs)
            except Exception as e:  # the daemon died under us
                first_refusal = {"transport_error": repr(e)}
                break
            if st != 200:
                first_refusal = {"status": st, "body": data.decode("utf-8", "replace")[:400]}
                break
            acked += BATCH
            batches += 1
        time.sleep(1)
        res["acked_samples"] = acked
        res["first_refusal"] = first_refusal
        res["alive_after"] = proc.poll() is None
        res["exit_code"] = proc.poll()
        df = os.statvfs(mnt)
        res["free_mb_at_end"] = round(df.f_bavail * df.f_frsize / 2**20, 1)
        if res["alive_after"]:
            infer, ih = us.binary_body([("input", "FP32", np.zeros((1, 1, 28, 28), np.float32))])
            res["infer_status_when_full"] = c.request("POST", "/v2/models/fashion/infer", infer, ih)[0]
            res["ready_status_when_full"] = c.request("GET", "/v2/health/ready")[0]
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Restart on the same (nearly) full disk.
        proc, c = start(args.distilld, cfg, logf, port)
        res["restarted"] = c is not None
        if c is not None:
            st, learner = c.json("GET", "/v1/learner")
            res["samples_kept_after_restart"] = learner.get("samples_waiting") if st == 200 else None
            res["lost_acknowledged"] = acked - (res["samples_kept_after_restart"] or 0)
            infer, ih = us.binary_body([("input", "FP32", np.zeros((1, 1, 28, 28), np.float32))])
            res["infer_status_after_restart"] = c.request("POST", "/v2/models/fashion/infer", infer, ih)[0]
            proc.send_signal(signal.SIGTERM)
        else:
            res["restart_exit_code"] = proc.poll()
        proc.wait(timeout=60)
        logf.close()
        tail = open(os.path.join(args.work, "distilld_%d.log" % min_free_mb)).read().splitlines()
        res["log_tail"] = [l for l in tail if "Assertion" in l or "abort" in l.lower() or "disk nearly full" in l][-3:]
    finally:
        subprocess.run(["umount", "-l", mnt])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distilld", default=us.DEFAULT_DISTILLD)
    ap.add_argument("--work", default="/tmp/distilld-full-disk")
    ap.add_argument("--size-mb", type=int, default=160, help="tmpfs size")
    ap.add_argument("--min-free-mb", type=int, default=32, help="the floor of the first run")
    ap.add_argument("--out", default="/tmp/full_disk.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it mounts a tmpfs")
    os.makedirs(args.work, exist_ok=True)
    teacher, student = tiny_models(os.path.join(args.work, "models"))
    runs = [one_setting(args, teacher, student, m) for m in (args.min_free_mb, 0)]
    out = {"command": " ".join(sys.argv), "binary": us.binary_info(args.distilld), "runs": runs}
    json.dump(out, open(args.out, "w"), indent=1)
    print(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
