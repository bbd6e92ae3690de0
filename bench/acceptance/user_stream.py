#!/usr/bin/python3
"""distilld acceptance run: what a new user does, over HTTP only.

Starts `distilld serve` with the example config (only listen, state_dir,
model.teacher and model.student changed), streams Fashion-MNIST to it in five
class-incremental phases (0,1) (2,3) (4,5) (6,7) (8,9) through POST /v1/samples
while a background client sends single-sample inference requests, asks for a
learner round after each phase, waits until the phase is learnt (or 600 s),
scores the served model on the 10,000 test images after every phase, stops the
daemon, then trains the same initial student offline in PyTorch on the pooled
data for reference. Writes everything to --out (JSON) and prints a summary.

  /usr/bin/python3 bench/acceptance/user_stream.py --student mlp --work /tmp/acc/mlp --out /tmp/acc/mlp.json
  /usr/bin/python3 bench/acceptance/user_stream.py --summarize a.json b.json c.json
"""
import argparse
import collections
import datetime
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_DISTILLD = os.path.join(REPO, "build", "daemon", "distilld")
EXAMPLE_CONFIG = os.path.join(REPO, "config", "distilld.example.yaml")

sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import user_models  # noqa: E402

PHASES = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
BATCH = 256              # samples per POST /v1/samples
EVAL_BATCH = 250         # test images per scoring request
STREAM_SEED = 20240      # shuffle of each phase's samples: STREAM_SEED + phase index
OFFLINE_SEED = 777
PHASE_TIMEOUT_S = 600.0
POLL_S = 0.05
HTTP_TIMEOUT_S = 120.0
# The loss the daemon uses (config/distilld.example.yaml: learner.alpha, learner.temperature).
KD_ALPHA = 0.5
KD_T = 4.0
OFFLINE_LR = 1e-3
OFFLINE_BATCH = 64
# Outcomes of a round that has not ended (docs/api.md: "queued and running (not
# ended)"); every other outcome (promoted, rejected, failed, aborted, skipped,
# merged, or one this script does not know) is terminal.
PENDING_OUTCOMES = ("running", "queued")
# Below the example config's server.idle_timeout_ms (60 s): see Client.request.
IDLE_RECONNECT_S = 50.0


def log(msg):
    sys.stdout.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


# ---------------------------------------------------------------- HTTP


class Http:
    """One keep-alive HTTP/1.1 connection; reconnects after an error."""

    def __init__(self, host, port, timeout=HTTP_TIMEOUT_S, idle_reconnect_s=IDLE_RECONNECT_S):
        self.host, self.port, self.timeout = host, port, timeout
        self.idle_reconnect_s = idle_reconnect_s
        self.conn = None
        self.reconnects = 0
        self.idle_reconnects = 0
        self.last_used = 0.0

    def _connect(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        """(status, response headers dict lower-cased, body bytes). Raises on a
        transport error, after closing the connection (the next call reconnects).
        A connection idle for longer than idle_reconnect_s is replaced first:
        the server closes idle keep-alive connections (server.idle_timeout_ms),
        and a request written into one it already closed fails with EPIPE
        without ever reaching it (HTTP clients with an idle-connection timeout
        do the same)."""
        now = time.monotonic()
        if self.conn is not None and now - self.last_used > self.idle_reconnect_s:
            self.close()
            self.idle_reconnects += 1
        self.last_used = now
        self._connect()
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            data = r.read()
            self.last_used = time.monotonic()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            if hdrs.get("connection", "").lower() == "close":
                self.close()
            return r.status, hdrs, data
        except Exception:
            self.close()
            self.reconnects += 1
            raise

    def json(self, method, path, obj=None):
        body = None if obj is None else json.dumps(obj).encode()
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        st, h, data = self.request(method, path, body, hdrs)
        try:
            parsed = json.loads(split_binary_response(h, data)[0]) if data else None
        except ValueError:
            parsed = {"_raw": data[:500].decode("utf-8", "replace")}
        return st, parsed


def binary_body(tensors, outputs=None):
    """Triton binary tensor extension: JSON header then raw little-endian bytes
    of each tensor in order. tensors: [(name, datatype, ndarray)]."""
    inputs, blobs = [], []
    for name, dtype, arr in tensors:
        raw = arr.astype({"FP32": "<f4", "INT64": "<i8"}[dtype], copy=False).tobytes()
        inputs.append({"name": name, "shape": list(arr.shape), "datatype": dtype,
                       "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    header = {"inputs": inputs}
    if outputs is not None:
        header["outputs"] = outputs
    hjson = json.dumps(header, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/octet-stream",
               "Inference-Header-Content-Length": str(len(hjson))}
    return hjson + b"".join(blobs), headers


def split_binary_response(headers, data):
    """(JSON bytes, binary tail) of a response that may use the binary extension."""
    n = headers.get("inference-header-content-length")
    if n is None:
        return data, b""
    n = int(n)
    return data[:n], data[n:]


# ---------------------------------------------------------------- config


def read_model_field(text, key):
    """The value of `key` in the top-level `model:` section of the YAML text."""
    m = re.search(r"^model:\s*\n((?:[ \t]+.*\n|\s*\n)+)", text, re.M)
    if not m:
        raise SystemExit("example config has no model: section")
    f = re.search(r'^  %s:\s*"([^"]*)"' % re.escape(key), m.group(1), re.M)
    if not f:
        raise SystemExit("example config has no model.%s" % key)
    return f.group(1)


def write_config(example_path, out_path, port, state_dir, teacher, student):
    text = open(example_path).read()
    subs = [
        ('  listen: "127.0.0.1:8080"', '  listen: "127.0.0.1:%d"' % port),
        ('  state_dir: "./state"', '  state_dir: "%s"' % state_dir),
        ('  teacher: ""', '  teacher: "%s"' % teacher),
        ('  student: ""', '  student: "%s"' % student),
    ]
    lines = text.split("\n")
    for old, new in subs:
        hits = [i for i, l in enumerate(lines) if l == old]
        assert len(hits) == 1, "config line %r found %d times (expected exactly once)" % (old, len(hits))
        lines[hits[0]] = new
    new_text = "\n".join(lines)
    changed = [(a, b) for a, b in zip(text.split("\n"), lines) if a != b]
    assert len(changed) == 4, changed
    with open(out_path, "w") as f:
        f.write(new_text)
    return new_text


def weight_average_decay(config_text):
    """learner.weight_average_decay of the config the daemon ran (0 if absent)."""
    import re
    hit = re.search(r"^  weight_average_decay:\s*([0-9.eE+-]+)", config_text, re.M)
    return float(hit.group(1)) if hit else 0.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---------------------------------------------------------------- daemon


def wait_for_binary(path, log_every=60):
    waited = 0.0
    while not (os.path.isfile(path) and os.access(path, os.X_OK)):
        if waited % log_every == 0:
            log("waiting for %s to exist ..." % path)
        time.sleep(5)
        waited += 5
    # A binary being relinked grows for a while; wait until its size is steady.
    last = -1
    while True:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            time.sleep(2)
            continue
        if st.st_size == last and time.time() - st.st_mtime > 2:
            return
        last = st.st_size
        time.sleep(2)


def binary_info(path):
    info = {"path": path}
    try:
        st = os.stat(path)
        info["size"] = st.st_size
        info["mtime"] = datetime.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        info["sha256"] = h.hexdigest()
        info["version"] = subprocess.run([path, "--version"], capture_output=True, text=True,
                                         timeout=30).stdout.strip()
    except Exception as e:  # informational only
        info["error"] = repr(e)
    return info


class Daemon:
    def __init__(self, binary, config_path, log_path, port):
        self.binary, self.config_path, self.log_path, self.port = binary, config_path, log_path, port
        self.proc = None
        self.start_attempts = []

    def start(self, state_dir, attempts=6, ready_timeout=180):
        for attempt in range(1, attempts + 1):
            wait_for_binary(self.binary)
            if os.path.exists(state_dir):
                shutil.rmtree(state_dir)
            os.makedirs(state_dir)
            rec = {"attempt": attempt, "time": time.time()}
            logf = open(self.log_path, "ab")
            logf.write(("==== user_stream.py: start attempt %d at %s\n" % (attempt, time.ctime())).encode())
            logf.flush()
            try:
                self.proc = subprocess.Popen([self.binary, "serve", "--config", self.config_path],
                                             stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
            except OSError as e:  # ETXTBSY / ENOENT while the binary is being replaced
                rec["error"] = "exec: %s" % e
                self.start_attempts.append(rec)
                logf.close()
                log("start failed (%s); retrying" % e)
                time.sleep(5)
                continue
            logf.close()
            t0 = time.monotonic()
            while time.monotonic() - t0 < ready_timeout:
                if self.proc.poll() is not None:
                    break
                try:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    c.request("GET", "/v2/health/ready")
                    r = c.getresponse()
                    r.read()
                    c.close()
                    if r.status == 200:
                        rec["ready_s"] = time.monotonic() - t0
                        rec["pid"] = self.proc.pid
                        self.start_attempts.append(rec)
                        return rec
                except OSError:
                    pass
                time.sleep(0.1)
            rc = self.proc.poll()
            if rc is None:
                self.proc.kill()
                self.proc.wait()
                rec["error"] = "not ready after %d s" % ready_timeout
            else:
                rec["error"] = "exited with %s before ready" % rc
            self.start_attempts.append(rec)
            log("daemon start attempt %d failed: %s (log %s); retrying" % (attempt, rec["error"], self.log_path))
            time.sleep(5)
        raise RuntimeError("distilld did not start after %d attempts; see %s" % (attempts, self.log_path))

    def stop(self, timeout=120):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            rc = self.proc.wait(timeout=timeout)
            killed = False
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            killed = True
        return {"exit_code": rc, "killed_after_timeout": killed, "stop_s": time.monotonic() - t0}


# ---------------------------------------------------------------- background inference


class InferenceClient(threading.Thread):
    """Single-sample JSON infer requests on one keep-alive connection, paced at
    `rps`. Remembers when each model_version was first seen."""

    def __init__(self, port, model, input_name, images, rps):
        super().__init__(daemon=True)
        self.port, self.model, self.rps = port, model, rps
        self.path = "/v2/models/%s/infer" % model
        self.bodies = []
        for i in range(len(images)):
            data = [round(float(v), 6) for v in images[i].reshape(-1)]
            self.bodies.append(json.dumps({
                "inputs": [{"name": input_name, "shape": [1, 1, 28, 28], "datatype": "FP32", "data": data}],
                "outputs": [{"name": "label"}]}, separators=(",", ":")).encode())
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.ok = 0
        self.non200 = collections.Counter()
        self.exceptions = collections.Counter()
        self.bad_body = 0
        self.first_seen = {}      # model_version (int) -> time.monotonic() first seen
        self.version_counts = collections.Counter()
        self.latencies_ms = []
        self.errors_sample = []   # the first few failures, for the report
        self.t_start = self.t_end = None

    def _fail(self, what):
        if len(self.errors_sample) < 20:
            self.errors_sample.append({"t": time.time(), "what": what})

    def run(self):
        conn = Http("127.0.0.1", self.port, timeout=30)
        interval = 1.0 / self.rps if self.rps > 0 else 0.0
        nxt = time.monotonic()
        self.t_start = nxt
        i = 0
        while not self.stop_event.is_set():
            now = time.monotonic()
            if nxt > now:
                time.sleep(nxt - now)
                continue
            if now - nxt > 1.0:  # fell behind by more than a second: do not burst
                nxt = now
            nxt += interval
            body = self.bodies[i % len(self.bodies)]
            i += 1
            t = time.monotonic()
            try:
                st, h, data = conn.request("POST", self.path, body, {"Content-Type": "application/json"})
            except Exception as e:
                with self.lock:
                    self.requests += 1
                    self.exceptions[type(e).__name__] += 1
                self._fail("exception %r" % e)
                time.sleep(0.01)
                continue
            lat = (time.monotonic() - t) * 1000
            with self.lock:
                self.requests += 1
                self.latencies_ms.append(lat)
                if st != 200:
                    self.non200[st] += 1
                    self._fail("status %d: %s" % (st, data[:200].decode("utf-8", "replace")))
                    continue
            try:
                r = json.loads(data)
                v = int(r["model_version"])
                out = [o for o in r["outputs"] if o["name"] == "label"][0]
                assert len(out["data"]) == 1 and 0 <= int(out["data"][0]) < 10
            except Exception as e:
                with self.lock:
                    self.bad_body += 1
                self._fail("bad body %r: %s" % (e, data[:200]))
                continue
            with self.lock:
                self.ok += 1
                self.version_counts[v] += 1
                if v not in self.first_seen:
                    self.first_seen[v] = t + lat / 1000  # when the answer arrived
        self.t_end = time.monotonic()
        conn.close()

    def seen_at(self, version):
        with self.lock:
            return self.first_seen.get(version)

    def report(self):
        with self.lock:
            lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
            dur = (self.t_end or time.monotonic()) - (self.t_start or time.monotonic())
            return {
                "target_rps": self.rps,
                "requests": self.requests,
                "ok": self.ok,
                "non_200": {str(k): v for k, v in self.non200.items()},
                "exceptions": dict(self.exceptions),
                "bad_bodies": self.bad_body,
                "failed": sum(self.non200.values()) + sum(self.exceptions.values()) + self.bad_body,
                "duration_s": dur,
                "achieved_rps": self.requests / dur if dur > 0 else 0.0,
                "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                               "p999": float(np.percentile(lat, 99.9)), "max": float(lat.max())},
                "versions_served": {str(k): v for k, v in sorted(self.version_counts.items())},
                "errors_sample": self.errors_sample,
            }


# ---------------------------------------------------------------- the run


class Run:
    def __init__(self, args):
        self.a = args
        self.api = Http("127.0.0.1", args.port)          # learner polls, eval
        self.ingest = Http("127.0.0.1", args.port)       # POST /v1/samples, own keep-alive connection
        self.learner_first_seen = {}                      # active_version -> monotonic, from GET /v1/learner
        self.rounds_cache = {}
        self.max_round_seen = 0
        self.ingest_stats = {"batches": 0, "samples": 0, "non_200": {}, "exceptions": {}, "retries": 0,
                             "errors_sample": []}
        self.learner_snapshots = []
        self.surprises = []

    # -- learner helpers
    def learner(self):
        st, body = self.api.json("GET", "/v1/learner")
        if st != 200:
            raise RuntimeError("GET /v1/learner: %d %s" % (st, body))
        v = body.get("active_version")
        if isinstance(v, int) and v not in self.learner_first_seen:
            self.learner_first_seen[v] = time.monotonic()
        return body

    def round(self, rid):
        st, body = self.api.json("GET", "/v1/learner/rounds/%d" % rid)
        if st == 404:
            return None
        if st != 200:
            raise RuntimeError("GET round %d: %d %s" % (rid, st, body))
        self.rounds_cache[rid] = body
        self.max_round_seen = max(self.max_round_seen, rid)
        return body

    def newest_round_id(self):
        rid = max(self.max_round_seen, 0)
        while self.round(rid + 1) is not None:
            rid += 1
        return rid

    def post_round(self, posts):
        t = time.monotonic()
        st, body = self.api.json("POST", "/v1/learner/rounds", {})
        posts.append({"t_rel": t, "status": st, "body": body})
        if st == 202 and isinstance(body, dict) and "round_id" in body:
            return int(body["round_id"])
        if st == 409 and isinstance(body, dict) and isinstance(body.get("round_id"), int):
            return int(body["round_id"])
        if st not in (202, 409):
            self.surprises.append("POST /v1/learner/rounds answered %d: %s" % (st, body))
        return None

    def served_since(self, version, infer):
        """Monotonic time the served version was first seen as `version`."""
        ts = [t for t in (infer.seen_at(version), self.learner_first_seen.get(version)) if t is not None]
        return min(ts) if ts else None

    # -- ingest
    def send_batch(self, x, labels):
        body, headers = binary_body([(self.input_name, "FP32", x), ("label", "INT64", labels)])
        for attempt in range(4):
            try:
                st, h, data = self.ingest.request("POST", "/v1/samples", body, headers)
            except Exception as e:
                self.ingest_stats["exceptions"][type(e).__name__] = \
                    self.ingest_stats["exceptions"].get(type(e).__name__, 0) + 1
                if len(self.ingest_stats["errors_sample"]) < 20:
                    self.ingest_stats["errors_sample"].append("exception %r" % e)
                self.ingest_stats["retries"] += 1
                time.sleep(0.5)
                continue
            if st == 200:
                r = json.loads(data)
                if r.get("accepted") != len(x):
                    raise RuntimeError("POST /v1/samples accepted %s of %d: %s" % (r.get("accepted"), len(x), r))
                self.ingest_stats["batches"] += 1
                self.ingest_stats["samples"] += len(x)
                return r
            k = str(st)
            self.ingest_stats["non_200"][k] = self.ingest_stats["non_200"].get(k, 0) + 1
            if len(self.ingest_stats["errors_sample"]) < 20:
                self.ingest_stats["errors_sample"].append("status %d: %s" % (st, data[:300].decode("utf-8", "replace")))
            self.ingest_stats["retries"] += 1
            time.sleep(0.5)
        raise RuntimeError("POST /v1/samples failed 4 times")

    # -- scoring
    def score(self, xte, yte):
        path = "/v2/models/%s/infer" % self.model
        preds = np.empty(len(xte), dtype=np.int64)
        versions = collections.Counter()
        failures = 0
        for i in range(0, len(xte), EVAL_BATCH):
            xb = xte[i:i + EVAL_BATCH]
            body, headers = binary_body([(self.input_name, "FP32", xb)], outputs=[{"name": "label"}])
            for attempt in range(4):
                try:
                    st, h, data = self.api.request("POST", path, body, headers)
                except Exception as e:
                    failures += 1
                    self.surprises.append("scoring request raised %r" % e)
                    time.sleep(0.5)
                    continue
                if st != 200:
                    failures += 1
                    self.surprises.append("scoring request answered %d: %s" % (st, data[:200]))
                    time.sleep(0.5)
                    continue
                js, tail = split_binary_response(h, data)
                r = json.loads(js)
                out = [o for o in r["outputs"] if o["name"] == "label"][0]
                if "data" in out:
                    lab = np.array(out["data"], dtype=np.int64)
                else:
                    lab = np.frombuffer(tail, dtype="<i8")
                preds[i:i + len(xb)] = lab
                versions[int(r["model_version"])] += len(xb)
                break
            else:
                raise RuntimeError("scoring failed 4 times")
        return preds, versions, failures

    @staticmethod
    def accuracies(preds, y):
        per_class = {str(c): float((preds[y == c] == c).mean()) for c in range(10)}
        per_task = [float((preds[np.isin(y, t)] == y[np.isin(y, t)]).mean()) for t in PHASES]
        return float((preds == y).mean()), per_class, per_task

    # -- one phase
    def wait_for_phase(self, p, t0, infer, first_round_of_phase):
        deadline = t0 + PHASE_TIMEOUT_S
        posts = []
        my_round = self.post_round(posts)
        polled = []             # rounds we waited for
        if my_round is not None:
            polled.append(my_round)
        orphan_polls = 0
        idle_stuck_polls = 0
        last_post = time.monotonic()
        final_round = None
        result = {"adapted": False}
        target_version = None
        # Changes of GET /v1/learner seen while waiting:
        # [s since t0, state, samples_waiting, round.id, rounds_queued, active_version].
        trace = []
        round_trace = []  # [s since t0, round id, outcome] at every change seen
        while True:
            now = time.monotonic()
            if now > deadline:
                result["timed_out"] = True
                break
            L = self.learner()
            key = (L.get("state"), L.get("samples_waiting"), (L.get("round") or {}).get("id"),
                   L.get("rounds_queued"), L.get("active_version"))
            if not trace or trace[-1][1:] != list(key):
                trace.append([round(time.monotonic() - t0, 3)] + list(key))
            if target_version is not None:
                ts = self.served_since(target_version, infer)
                if ts is not None:
                    result["adapted"] = True
                    result["time_to_adapt_s"] = max(0.0, ts - t0)
                    result["served_version"] = target_version
                    break
                time.sleep(POLL_S)
                continue
            if my_round is not None:
                R = self.round(my_round)
                if R is not None and not any(x[1] == my_round and x[2] == R.get("outcome") for x in round_trace):
                    round_trace.append([round(time.monotonic() - t0, 3), my_round, R.get("outcome")])
                if R is None:
                    self.surprises.append("phase %d: round %d named by the API answers 404" % (p + 1, my_round))
                    my_round = None
                elif R.get("outcome") in PENDING_OUTCOMES:
                    # A round recorded as running that the learner is not running, with
                    # nothing waiting and the learner idle, would never end.
                    if (L.get("state") == "idle" and L.get("samples_waiting") == 0
                            and (L.get("round") or {}).get("id") != my_round):
                        orphan_polls += 1
                        if orphan_polls * POLL_S >= 5.0:
                            self.surprises.append(
                                "phase %d: round %d stays 'running' while the learner is idle with nothing "
                                "waiting (it last ran round %s): the requested round was dropped"
                                % (p + 1, my_round, (L.get("round") or {}).get("id")))
                            result.setdefault("orphaned_rounds", []).append(my_round)
                            my_round = None
                    else:
                        orphan_polls = 0
                    time.sleep(POLL_S)
                    continue
                else:
                    my_round = None
                    orphan_polls = 0
            state, waiting = L.get("state"), L.get("samples_waiting")
            if state == "idle" and waiting and waiting > 0:
                # Samples of the phase still wait (the round that ran took only the first
                # ones, or failed): ask for another round (unless one is queued), at most
                # every 250 ms.
                if not L.get("rounds_queued") and time.monotonic() - last_post >= 0.25:
                    last_post = time.monotonic()
                    my_round = self.post_round(posts)
                    if my_round is not None:
                        polled.append(my_round)
            elif state == "idle" and waiting == 0:
                # The latest round that consumed the phase's samples: the newest one
                # that took samples (not one skipped or merged because another round
                # had taken them).
                newest = self.newest_round_id()
                phase_rounds = []
                for i in range(first_round_of_phase, newest + 1):
                    r = self.rounds_cache.get(i)
                    if r is None or r.get("outcome") in PENDING_OUTCOMES:
                        r = self.round(i)
                    phase_rounds.append(r)
                stuck = [r["id"] for r in phase_rounds if r is not None and r.get("outcome") in PENDING_OUTCOMES
                         and r["id"] not in result.get("orphaned_rounds", [])]
                if stuck:
                    # The learner is idle with nothing waiting: a round still recorded as
                    # running is not being run. Give it 5 s, then note it and go on.
                    idle_stuck_polls += 1
                    if idle_stuck_polls * POLL_S >= 5.0:
                        self.surprises.append("phase %d: round(s) %s stay 'running' while the learner is idle "
                                              "with nothing waiting" % (p + 1, stuck))
                        result.setdefault("orphaned_rounds", []).extend(stuck)
                    time.sleep(POLL_S)
                    continue
                idle_stuck_polls = 0
                consumed = [r for r in phase_rounds if r is not None and (r.get("samples_new") or 0) > 0
                            and r.get("outcome") not in ("skipped", "merged")]
                if not consumed:
                    self.surprises.append("phase %d: learner idle, nothing waiting, but no round consumed the "
                                          "phase's samples (rounds %s)" % (p + 1, [
                                              (r["id"], r["outcome"]) for r in phase_rounds if r]))
                    break
                R = consumed[-1]
                final_round = R["id"]
                if R.get("outcome") == "promoted" and R.get("candidate_version"):
                    target_version = int(R["candidate_version"])
                    continue
                break  # the phase's last round was not promoted: nothing left to learn from
            time.sleep(POLL_S)
        # Rounds of this phase: every round that began since the phase's stream started.
        newest = self.newest_round_id()
        ids = list(range(first_round_of_phase, newest + 1))
        rounds = [self.round(i) for i in ids]
        result.update({
            "t_wait_s": time.monotonic() - t0,
            "round_posts": [{"dt_s": q["t_rel"] - t0, "status": q["status"], "body": q["body"]} for q in posts],
            "rounds_polled": polled,
            "learner_trace": trace,
            "round_trace": round_trace,
            "final_round": final_round,
            "target_version": target_version,
            "rounds": [{"id": r["id"], "trigger": r.get("trigger"), "outcome": r.get("outcome"),
                        "reason": r.get("reason"), "samples_new": r.get("samples_new"),
                        "samples_replay": r.get("samples_replay"),
                        "candidate_version": r.get("candidate_version"),
                        "steps": (r.get("loss") or {}).get("steps"),
                        "duration_s": ((r["ended_us"] - r["started_us"]) / 1e6) if r.get("ended_us") else None}
                       for r in rounds if r is not None],
        })
        result["round_outcomes"] = [r["outcome"] for r in result["rounds"]]
        result["learner_at_end"] = self.learner()
        return result

    def main(self):
        a = self.a
        res = {"args": vars(a).copy(), "started": datetime.datetime.now().isoformat(timespec="seconds")}
        self.res = res
        t_run = time.monotonic()
        os.makedirs(a.work, exist_ok=True)

        # a. models
        t = time.monotonic()
        models_dir = a.models or os.path.join(a.work, "models")
        paths = user_models.ensure_models(models_dir, kinds=("teacher", a.student), log=log)
        teacher_path, student_path = paths["teacher"], paths[a.student]
        res["models"] = {"dir": models_dir, "teacher": teacher_path, "student": student_path,
                         "build_s": time.monotonic() - t}
        xtr, ytr = user_models.load_fashion("train")
        xte, yte = user_models.load_fashion("test")
        import torch
        res["models"]["accuracy"] = user_models.test_accuracies(
            {"teacher": teacher_path, a.student: student_path}, log=log)

        # b. config
        example_path = a.example or EXAMPLE_CONFIG
        example_text = open(example_path).read()
        self.model = read_model_field(example_text, "name")
        self.input_name = read_model_field(example_text, "input_name")
        state_dir = os.path.join(os.path.abspath(a.work), "state")
        cfg_path = os.path.join(a.work, "distilld.yaml")
        cfg_text = write_config(example_path, cfg_path, a.port, state_dir, teacher_path, student_path)
        res["config"] = {"path": cfg_path, "text": cfg_text, "model_name": self.model}

        # c. daemon
        log_path = os.path.join(os.path.abspath(a.work), "distilld.log")
        if os.path.exists(log_path):
            os.remove(log_path)
        res["daemon"] = {"log": log_path, "binary": binary_info(a.distilld)}
        daemon = Daemon(a.distilld, cfg_path, log_path, a.port)
        infer = None
        try:
            start = daemon.start(state_dir)
            res["daemon"]["start"] = start
            res["daemon"]["start_attempts"] = daemon.start_attempts
            res["daemon"]["binary_at_start"] = binary_info(a.distilld)
            log("distilld ready on 127.0.0.1:%d in %.1f s (pid %d, log %s)"
                % (a.port, start["ready_s"], start["pid"], log_path))
            L0 = self.learner()
            res["learner_initial"] = L0
            st, v0 = self.api.json("GET", "/v1/models/%s/versions" % self.model)
            res["versions_initial"] = v0

            # d. background inference
            infer = InferenceClient(a.port, self.model, self.input_name, xte[:200], a.infer_rps)
            infer.start()

            # initial score
            preds, versions, fails = self.score(xte, yte)
            acc0 = self.accuracies(preds, yte)
            res["initial_eval"] = {"accuracy": acc0[0], "per_class": acc0[1], "per_task": acc0[2],
                                   "versions": {str(k): v for k, v in versions.items()}}
            log("initial served model: accuracy %.2f%% (version %s)" % (100 * acc0[0], dict(versions)))

            # e-g. phases
            res["phases"] = []
            acc_matrix = []
            stream_labelled_mask = []
            stream_index = []
            batch_no = 0
            for p, classes in enumerate(PHASES):
                ph = {"phase": p + 1, "classes": list(classes)}
                idx = np.where(np.isin(ytr, classes))[0]
                idx = idx[np.random.RandomState(STREAM_SEED + p).permutation(len(idx))]
                idx = idx[:a.phase_samples]
                first_round = self.newest_round_id() + 1
                ph["first_round_id_possible"] = first_round
                t_stream = time.monotonic()
                first_id = last_id = None
                labelled = 0
                for s in range(0, len(idx), BATCH):
                    bi = idx[s:s + BATCH]
                    is_lab = batch_no % a.labelled_every == 0
                    labels = ytr[bi] if is_lab else np.full(len(bi), -1, dtype=np.int64)
                    r = self.send_batch(xtr[bi], labels)
                    first_id = r.get("first_id") if first_id is None else first_id
                    last_id = r.get("last_id")
                    stream_index.append(bi)
                    stream_labelled_mask.append(np.full(len(bi), is_lab))
                    labelled += len(bi) if is_lab else 0
                    batch_no += 1
                t0 = time.monotonic()
                ph.update({"samples": int(len(idx)), "labelled_samples": int(labelled),
                           "batches": int((len(idx) + BATCH - 1) // BATCH), "sample_ids": [first_id, last_id],
                           "stream_s": t0 - t_stream,
                           "stream_samples_per_s": len(idx) / max(1e-9, t0 - t_stream)})
                log("phase %d %s: %d samples (%d labelled) sent in %.1f s; asking for a round"
                    % (p + 1, classes, len(idx), labelled, t0 - t_stream))
                w = self.wait_for_phase(p, t0, infer, first_round)
                ph.update(w)
                preds, versions, fails = self.score(xte, yte)
                acc, per_class, per_task = self.accuracies(preds, yte)
                acc_matrix.append(per_task)
                ph["eval"] = {"accuracy": acc, "per_class": per_class, "per_task": per_task,
                              "versions": {str(k): v for k, v in versions.items()}, "failed_requests": fails}
                res["phases"].append(ph)
                tta = ph.get("time_to_adapt_s")
                log("phase %d: %s; rounds %s; served accuracy %.2f%% (version %s)"
                    % (p + 1, ("adapted in %.2f s" % tta) if ph["adapted"] else
                       ("NOT adapted (%s)" % ("timed out" if ph.get("timed_out") else "last round not promoted")),
                       ", ".join("%d:%s:%s" % (r["id"], r["trigger"], r["outcome"]) for r in ph["rounds"]),
                       100 * acc, ",".join(map(str, versions))))

            # final bookkeeping while the daemon is up
            time.sleep(1.0)
            infer.stop_event.set()
            infer.join(timeout=30)
            res["inference"] = infer.report()
            rounds = []
            rid = 1
            while True:
                r = self.round(rid)
                if r is None:
                    break
                rounds.append(r)
                rid += 1
            res["rounds"] = rounds
            st, res["versions_final"] = self.api.json("GET", "/v1/models/%s/versions" % self.model)
            st, res["events"] = self.api.json("GET", "/v1/events?limit=500")
            res["learner_final"] = self.learner()
        finally:
            if infer is not None and infer.is_alive():
                infer.stop_event.set()
                infer.join(timeout=30)
                res.setdefault("inference", infer.report())
            self.api.close()
            self.ingest.close()
            res["daemon"]["stop"] = daemon.stop()
            log("distilld stopped: %s" % res["daemon"]["stop"])
            res["daemon"]["log_warnings"] = scan_log(log_path)

        # h. metrics
        m = {}
        m["accuracy_after_phase"] = [ph["eval"]["accuracy"] for ph in res["phases"]]
        m["final_accuracy"] = m["accuracy_after_phase"][-1]
        m["acc_matrix"] = acc_matrix
        forg = []
        for j in range(len(PHASES) - 1):
            best = max(acc_matrix[i][j] for i in range(j, len(PHASES) - 1))
            forg.append(best - acc_matrix[-1][j])
        m["forgetting_per_task"] = forg
        m["average_forgetting"] = float(np.mean(forg))
        m["failed_inference_requests"] = res["inference"]["failed"]
        m["failed_ingest_requests"] = sum(res_vals(self.ingest_stats["non_200"])) + \
            sum(res_vals(self.ingest_stats["exceptions"]))
        m["failed_scoring_requests"] = sum(ph["eval"]["failed_requests"] for ph in res["phases"])
        m["failed_requests"] = m["failed_inference_requests"] + m["failed_ingest_requests"]
        m["phases"] = [{"phase": ph["phase"], "classes": ph["classes"], "adapted": ph["adapted"],
                        "time_to_adapt_s": ph.get("time_to_adapt_s"), "round_outcomes": ph["round_outcomes"],
                        "rounds": ["%d:%s:%s" % (r["id"], r["trigger"], r["outcome"]) for r in ph["rounds"]]}
                       for ph in res["phases"]]
        m["total_steps"] = int(sum(int((r.get("loss") or {}).get("steps") or 0) for r in res["rounds"]))
        m["round_outcome_counts"] = dict(collections.Counter(r.get("outcome") for r in res["rounds"]))
        res["ingest"] = self.ingest_stats
        res["metrics"] = m
        res["surprises"] = self.surprises

        # i. offline reference
        t = time.monotonic()
        order = np.concatenate(stream_index)
        mask = np.concatenate(stream_labelled_mask)
        torch.set_num_threads(a.threads)
        res["offline"] = offline_reference(student_path, teacher_path, xtr[order], ytr[order], mask,
                                           xte, yte, m["total_steps"], a.offline_epochs, a.offline_seeds,
                                           weight_average_decay(cfg_text))
        res["offline"]["duration_s"] = time.monotonic() - t
        gaps = {}
        for row in res["offline"]["rows"]:
            gaps[row["name"]] = 100.0 * (m["final_accuracy"] - row["accuracy"])
        m["gap_points"] = gaps

        # verdicts
        step_row = [r for r in res["offline"]["rows"] if r["name"] == "offline_steps"][0]
        tta = [ph.get("time_to_adapt_s") for ph in res["phases"]]
        m["verdicts"] = {
            "final_within_0.5_of_offline_steps": bool(100 * (m["final_accuracy"] - step_row["accuracy"]) >= -0.5),
            "final_within_0.5_of_offline_%dep" % a.offline_epochs: bool(
                gaps["offline_%dep" % a.offline_epochs] >= -0.5),
            "zero_failed_requests": m["failed_requests"] == 0,
            "every_phase_adapted_under_5s": bool(all(x is not None and x < 5.0 for x in tta)),
            "adapt_target_applies": a.student == "mlp",
        }
        if "offline_steps_avg" in gaps:
            m["verdicts"]["final_within_0.5_of_offline_steps_avg"] = bool(gaps["offline_steps_avg"] >= -0.5)
        res["duration_s"] = time.monotonic() - t_run
        res["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        write_json(a.out, res)
        print_summary(res)
        log("wrote %s (%.0f s in all)" % (a.out, res["duration_s"]))
        return 0


def res_vals(d):
    return list(d.values())


def scan_log(path, limit=80):
    """Warning and error lines of the daemon log (the first `limit`) and counts."""
    out = {"warning_lines": [], "counts": {}}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                low = line.lower()
                for k in ("error", "warn", "fatal", "abort", "terminate"):
                    if k in low:
                        out["counts"][k] = out["counts"].get(k, 0) + 1
                if ("error" in low or "warn" in low or "fatal" in low) and len(out["warning_lines"]) < limit:
                    out["warning_lines"].append(line.rstrip("\n")[:400])
    except OSError as e:
        out["error"] = repr(e)
    return out


def write_json(path, obj):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    os.replace(tmp, path)


# ---------------------------------------------------------------- offline reference


def kd_loss(s, t, y, labelled, alpha=KD_ALPHA, T=KD_T):
    """The daemon's loss (learner/kd_loss.cc): per sample a*CE + (1-a)*T^2*KL for
    a labelled one, T^2*KL alone for an unlabelled one, averaged over the batch."""
    import torch.nn.functional as F
    log_ps = F.log_softmax(s / T, dim=1)
    log_pt = F.log_softmax(t / T, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1) * (T * T)
    ce = F.cross_entropy(s, y.clamp(min=0), reduction="none")
    lab = labelled.to(s.dtype)
    per = lab * (alpha * ce + (1 - alpha) * kl) + (1 - lab) * kl
    return per.mean()


def offline_reference(student_path, teacher_path, x, y, labelled, xte, yte, steps_match, epochs, seeds=3,
                      avg_decay=0.0):
    """The rows of offline_trajectory averaged over `seeds` seeds (shuffling
    differs; the initial weights are the user's file): one trajectory's test
    accuracy moves by a few tenths of a point from epoch to epoch, as large as
    the gap being judged."""
    runs = [offline_trajectory(student_path, teacher_path, x, y, labelled, xte, yte, steps_match, epochs,
                               OFFLINE_SEED + k, avg_decay) for k in range(max(1, seeds))]
    out = dict(runs[0])
    out["seeds"] = [OFFLINE_SEED + k for k in range(len(runs))]
    out["train_s"] = sum(r["train_s"] for r in runs)
    rows = []
    for i, row in enumerate(runs[0]["rows"]):
        accs = [r["rows"][i]["accuracy"] for r in runs]
        merged = dict(row)
        merged["accuracy"] = float(np.mean(accs))
        merged["accuracy_per_seed"] = accs
        merged["per_class"] = {c: float(np.mean([r["rows"][i]["per_class"][c] for r in runs])) for c in row["per_class"]}
        rows.append(merged)
        log("offline %s: mean of %d seeds %.2f%% (%s)" % (row["name"], len(runs), 100 * merged["accuracy"],
                                                          ", ".join("%.2f" % (100 * v) for v in accs)))
    out["rows"] = rows
    return out


def offline_trajectory(student_path, teacher_path, x, y, labelled, xte, yte, steps_match, epochs, seed,
                       avg_decay=0.0):
    """Trains the initial student on the pooled stream (same samples, same labelled
    pattern) with Adam lr 1e-3, batch 64, the daemon's loss. Rows: as many steps as
    the daemon ran in all ("offline_steps") and `epochs` epochs ("offline_<E>ep").
    Both rows come from one seeded trajectory (the shorter one is a checkpoint of
    it), which is exactly what two separate runs with the same seed would give.
    With avg_decay > 0 (the daemon's learner.weight_average_decay) a third row,
    "offline_steps_avg", scores the same trajectory's moving average of weights
    (same warm-up as learner/weight_average.cc) at the same-steps checkpoint:
    the technique the daemon used, given to the offline student too."""
    import torch
    teacher = torch.jit.load(teacher_path)
    teacher.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    with torch.no_grad():
        tl = torch.cat([teacher(xt[i:i + 1000]) for i in range(0, len(xt), 1000)])
    yt = torch.from_numpy(y.astype(np.int64))
    lt = torch.from_numpy(labelled.astype(bool))
    n = len(xt)
    per_epoch = (n + OFFLINE_BATCH - 1) // OFFLINE_BATCH
    ep_steps = per_epoch * epochs
    checkpoints = {"offline_steps": int(steps_match), "offline_%dep" % epochs: int(ep_steps)}
    total = max(checkpoints.values())
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    student = torch.jit.load(student_path)
    opt = torch.optim.Adam(student.parameters(), lr=OFFLINE_LR)
    averaged = [t for t in list(student.parameters()) + list(student.buffers()) if t.is_floating_point()]
    average = [t.detach().clone() for t in averaged] if avg_decay > 0 else None
    avg_updates = 0

    def evaluate():
        student.eval()
        with torch.no_grad():
            p = torch.cat([student(torch.from_numpy(xte[i:i + 1000])).argmax(1)
                           for i in range(0, len(xte), 1000)]).numpy()
        student.train()
        per_class = {str(c): float((p[yte == c] == c).mean()) for c in range(10)}
        return float((p == yte).mean()), per_class

    def evaluate_average():
        saved = [t.detach().clone() for t in averaged]
        with torch.no_grad():
            for t, a in zip(averaged, average):
                t.copy_(a)
        out = evaluate()
        with torch.no_grad():
            for t, v in zip(averaged, saved):
                t.copy_(v)
        return out

    results = {}
    for name, at in checkpoints.items():
        if at == 0:
            acc, pc = evaluate()
            results[name] = {"name": name, "steps": 0, "epochs": 0.0, "accuracy": acc, "per_class": pc}
    student.train()
    t0 = time.monotonic()
    order = None
    loss_sum, loss_n = 0.0, 0
    for step in range(total):
        pos = (step % per_epoch) * OFFLINE_BATCH
        if pos == 0:
            order = torch.from_numpy(rng.permutation(n))
        idx = order[pos:pos + OFFLINE_BATCH]
        opt.zero_grad()
        loss = kd_loss(student(xt[idx]), tl[idx], yt[idx], lt[idx])
        loss.backward()
        opt.step()
        if average is not None:
            d = min(avg_decay, (1.0 + avg_updates) / (10.0 + avg_updates))
            with torch.no_grad():
                for a, t in zip(average, averaged):
                    a.mul_(d).add_(t.detach(), alpha=1.0 - d)
            avg_updates += 1
            if step + 1 == steps_match:
                acc, pc = evaluate_average()
                results["offline_steps_avg"] = {"name": "offline_steps_avg", "steps": steps_match,
                                                "epochs": steps_match / per_epoch, "accuracy": acc,
                                                "per_class": pc, "weight_average_decay": avg_decay}
                log("offline offline_steps_avg: %d steps, moving average (decay %g): test accuracy %.2f%%"
                    % (steps_match, avg_decay, 100 * acc))
        loss_sum += float(loss)
        loss_n += 1
        for name, at in checkpoints.items():
            if at == step + 1:
                acc, pc = evaluate()
                results[name] = {"name": name, "steps": at, "epochs": at / per_epoch, "accuracy": acc,
                                 "per_class": pc, "mean_loss": loss_sum / max(1, loss_n)}
                log("offline %s: %d steps (%.2f epochs): test accuracy %.2f%%" % (name, at, at / per_epoch,
                                                                                 100 * acc))
    return {"samples": n, "labelled": int(lt.sum()), "batch": OFFLINE_BATCH, "lr": OFFLINE_LR,
            "alpha": KD_ALPHA, "temperature": KD_T, "steps_per_epoch": per_epoch,
            "train_s": time.monotonic() - t0,
            "rows": [results[k] for k in list(checkpoints) + ["offline_steps_avg"] if k in results]}


# ---------------------------------------------------------------- summary


def fmt_pct(v):
    return "  n/a " if v is None else "%6.2f%%" % (100 * v)


def print_summary(res):
    m = res["metrics"]
    a = res["args"]
    print()
    print("distilld acceptance: student=%s labelled_every=%d phase_samples=%d infer_rps=%s"
          % (a["student"], a["labelled_every"], a["phase_samples"], a["infer_rps"]))
    print("  phase  classes  acc after  time to adapt  rounds (id:trigger:outcome)")
    for ph, acc in zip(m["phases"], m["accuracy_after_phase"]):
        tta = ph["time_to_adapt_s"]
        print("  %5d  %-7s  %s   %13s  %s" % (
            ph["phase"], "%d,%d" % tuple(ph["classes"]), fmt_pct(acc),
            ("%.2f s" % tta) if tta is not None else "not adapted", " ".join(ph["rounds"])))
    print("  final accuracy           %s" % fmt_pct(m["final_accuracy"]))
    print("  average forgetting       %.2f points (tasks 1-4: %s)"
          % (100 * m["average_forgetting"], ", ".join("%.1f" % (100 * f) for f in m["forgetting_per_task"])))
    inf = res["inference"]
    print("  failed requests          %d (inference %d of %d at %.0f rps, p99 %.1f ms; ingest %d)"
          % (m["failed_requests"], m["failed_inference_requests"], inf["requests"], inf["achieved_rps"],
             inf["latency_ms"]["p99"], m["failed_ingest_requests"]))
    print("  rounds                   %s; optimizer steps %d" % (m["round_outcome_counts"], m["total_steps"]))
    for row in res["offline"]["rows"]:
        print("  %-22s   %s  (%d steps, %.2f epochs)  final - offline = %+.2f points"
              % (row["name"], fmt_pct(row["accuracy"]), row["steps"], row["epochs"],
                 m["gap_points"][row["name"]]))
    print("  daemon exit code         %s" % res["daemon"]["stop"]["exit_code"])
    print("  verdicts:")
    for k, v in m["verdicts"].items():
        if k == "adapt_target_applies":
            continue
        extra = "" if k != "every_phase_adapted_under_5s" or m["verdicts"]["adapt_target_applies"] \
            else " (target is for the MLP only)"
        print("    %-40s %s%s" % (k, "PASS" if v else "FAIL", extra))
    if res.get("surprises"):
        print("  noted:")
        for s in res["surprises"]:
            print("    - " + s)
    print()


def short_name(path):
    """The file name, with its directory when the name alone is generic."""
    parts = os.path.abspath(path).split(os.sep)
    return os.path.join(*parts[-2:]) if parts[-1] in ("result.json", "out.json") else parts[-1]


def summarize(files):
    runs = []
    for f in files:
        with open(f) as fh:
            runs.append((f, json.load(fh)))
    print("%-34s %-4s %-4s %8s %8s %9s %6s %s" % ("run", "stud", "lab", "final", "forget", "off_steps",
                                                 "fails", "time to adapt per phase (s)"))
    for f, r in runs:
        m, a = r["metrics"], r["args"]
        off = [x for x in r["offline"]["rows"] if x["name"] == "offline_steps"][0]
        tta = " ".join("-" if p["time_to_adapt_s"] is None else "%.1f" % p["time_to_adapt_s"] for p in m["phases"])
        print("%-34s %-4s 1/%-2d %7.2f%% %7.2fp %8.2f%% %6d %s" % (
            short_name(f)[-34:], a["student"], a["labelled_every"], 100 * m["final_accuracy"],
            100 * m["average_forgetting"], 100 * off["accuracy"], m["failed_requests"], tta))
    lab = [r for f, r in runs if r["args"]["student"] == "mlp" and r["args"]["labelled_every"] == 1]
    unl = [r for f, r in runs if r["args"]["student"] == "mlp" and r["args"]["labelled_every"] > 1]
    if lab and unl:
        ratio = unl[0]["metrics"]["final_accuracy"] / lab[0]["metrics"]["final_accuracy"]
        print("mostly-unlabelled MLP final accuracy = %.2f%% of the labelled MLP's (target >= 98%%): %s"
              % (100 * ratio, "PASS" if ratio >= 0.98 else "FAIL"))
    for f, r in runs:
        v = r["metrics"]["verdicts"]
        print("%s: %s" % (short_name(f), ", ".join(
            "%s=%s" % (k, "PASS" if x else "FAIL") for k, x in v.items() if k != "adapt_target_applies")))
    return 0


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distilld", default=DEFAULT_DISTILLD, help="daemon binary (default %(default)s)")
    ap.add_argument("--work", default="/tmp/acceptance/work", help="scratch directory")
    ap.add_argument("--student", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--labelled-every", type=int, default=1,
                    help="batch i (counted over the whole stream) carries labels iff i %% K == 0")
    ap.add_argument("--phase-samples", type=int, default=None,
                    help="samples per phase (default 12000 = all of the two classes; --quick: 2000)")
    ap.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    ap.add_argument("--infer-rps", type=float, default=200.0)
    ap.add_argument("--out", default=None, help="result JSON (default WORK/result.json)")
    ap.add_argument("--models", default=None,
                    help="model cache directory (default WORK/models; built there when missing)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2000 samples per phase, 1 offline epoch")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the Python-side training")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="print a combined summary of result files")
    ap.add_argument("--offline-seeds", type=int, default=3,
                    help="offline reference rows are the mean over this many shuffling seeds")
    ap.add_argument("--example", default=None,
                    help="a different example config to start from (experiments only; the acceptance run "
                         "uses the repository's config/distilld.example.yaml)")
    args = ap.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    if args.labelled_every < 1:
        ap.error("--labelled-every must be >= 1")
    if args.phase_samples is None:
        args.phase_samples = 2000 if args.quick else 12000
    args.offline_epochs = 1 if args.quick else 5
    if args.port == 0:
        args.port = free_port()
    args.work = os.path.abspath(args.work)
    if args.out is None:
        args.out = os.path.join(args.work, "result.json")
    args.distilld = os.path.abspath(args.distilld)
    import torch
    torch.set_num_threads(args.threads)
    run = Run(args)
    try:
        return run.main()
    except BaseException as e:
        # Keep whatever was measured, with the error, for the post-mortem.
        import traceback
        res = getattr(run, "res", {"args": vars(args)})
        res["error"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        res["surprises"] = run.surprises
        res["ingest"] = run.ingest_stats
        try:
            write_json(args.out, res)
            log("run failed; partial results in %s" % args.out)
        except Exception:
            pass
        raise


if __name__ == "__main__":
    sys.exit(main())
