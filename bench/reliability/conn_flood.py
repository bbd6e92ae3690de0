#!/usr/bin/python3
"""A slow-request flood against `distilld serve` with the example config.

N connections (default 8,000, twice server.max_connections' default 4,096)
each send half a request line and then stay silent. Meanwhile, and after, a
real client opens a fresh connection for GET /v2/health/live every 100 ms and
records whether it was answered and how fast; the same probe before the
flood is the reference. Prints JSON.

  /usr/bin/python3 bench/reliability/conn_flood.py --out /tmp/conn_flood.json
"""
import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "acceptance"))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import user_stream as us  # noqa: E402
from full_disk import tiny_models, start  # noqa: E402


def probe(port, timeout=2.0, path="/v2/health/live"):
    """(status or 0, seconds) of one health check on a fresh connection."""
    t0 = time.perf_counter()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        status = int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else 0
    except (OSError, ValueError, IndexError):
        status = 0
    return status, time.perf_counter() - t0


def probes(port, n):
    out = []
    for _ in range(n):
        out.append(probe(port))
        time.sleep(0.1)
    ok = [t for st, t in out if st == 200]
    return {"probes": n, "answered_200": len(ok), "statuses": sorted({st for st, _ in out}),
            "median_ms": round(1e3 * statistics.median(ok), 2) if ok else None,
            "max_ms": round(1e3 * max(ok), 2) if ok else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distilld", default=us.DEFAULT_DISTILLD)
    ap.add_argument("--work", default="/tmp/distilld-conn-flood")
    ap.add_argument("--connections", type=int, default=8000)
    ap.add_argument("--out", default="/tmp/conn_flood.json")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.connections + 1024  # ours and the daemon's (it inherits the limit)
    if hard != resource.RLIM_INFINITY and hard < need:
        raise SystemExit("needs %d open files, the hard limit is %d" % (need, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    os.makedirs(args.work, exist_ok=True)
    teacher, student = tiny_models(os.path.join(args.work, "models"))
    port = us.free_port()
    cfg = os.path.join(args.work, "distilld.yaml")
    us.write_config(us.EXAMPLE_CONFIG, cfg, port, os.path.join(args.work, "state"), teacher, student)
    logf = open(os.path.join(args.work, "distilld.log"), "w")
    proc, c = start(args.distilld, cfg, logf, port)
    assert c is not None, "daemon did not start"
    c.close()
    res = {"connections": args.connections, "before": probes(port, 20)}
    flood, t0 = [], time.time()
    for _ in range(args.connections):
        s = socket.socket()
        s.setblocking(True)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHo")
        flood.append(s)
    res["flood_open_s"] = round(time.time() - t0, 2)
    res["during"] = probes(port, 50)
    # How many of the flood the server still holds (the rest it closed).
    m = us.Http("127.0.0.1", port)
    st, _, body = m.request("GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(("distilld_http_open_connections ", "distilld_http_evicted_connections_total ",
                            "distilld_http_refused_connections_total ")):
            k, v = line.split()
            res[k] = float(v)
    m.close()
    for s in flood:
        s.close()
    res["alive"] = proc.poll() is None
    proc.terminate()
    proc.wait(timeout=60)
    res["binary"] = us.binary_info(args.distilld)
    json.dump(res, open(args.out, "w"), indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
