"""Load and soak a running Scoria host with real photos.

Drives `POST /classify` at a fixed concurrency for a fixed time, cycling through the test
photos, and reports errors, p50, p99, throughput and the host's resident memory (RSS) at the
start and the end of the measured period. The host's process is found from the port it
listens on, so it can be any running `scoria up` on this machine.

Usage: python bench/soak.py [--url http://127.0.0.1:3000] [--concurrency 8] [--duration 60]
                            [--warmup 3] [--api-key KEY] [--json]
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = [("chelsea.png", "image/png"), ("coffee.png", "image/png"), ("rocket.jpg", "image/jpeg"),
          ("grace_hopper.jpg", "image/jpeg"), ("chelsea.webp", "image/webp")]


def listening_pid(port):
    """The pid of the process listening on TCP `port`, from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(url, bodies, api_key, stop_at, measure_from, results, lock):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    i = 0
    while time.time() < stop_at:
        body, ctype = bodies[i % len(bodies)]
        i += 1
        headers = {"content-type": ctype}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        t = time.perf_counter()
        try:
            conn.request("POST", u.path or "/classify", body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            status = r.status
        except (OSError, http.client.HTTPException) as e:
            status = f"{type(e).__name__}"
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        dt = time.perf_counter() - t
        if time.time() >= measure_from:
            with lock:
                results.append((status, dt))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:3000/classify")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--api-key")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    port = urllib.parse.urlsplit(a.url).port
    pid = listening_pid(port)
    if pid is None:
        sys.exit(f"no process listens on port {port}; start `scoria up` first")
    bodies = [(open(os.path.join(ROOT, "tests/data", n), "rb").read(), t) for n, t in PHOTOS]

    start = time.time()
    measure_from = start + a.warmup
    stop_at = measure_from + a.duration
    results, lock = [], threading.Lock()
    threads = [threading.Thread(target=worker, args=(a.url, bodies, a.api_key, stop_at, measure_from, results, lock))
               for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, measure_from - time.time()))
    rss_start = rss_mib(pid)
    for t in threads:
        t.join()
    rss_end = rss_mib(pid)

    ok = sorted(dt for s, dt in results if s == 200)
    errors = {}
    for s, _ in results:
        if s != 200:
            errors[str(s)] = errors.get(str(s), 0) + 1
    q = lambda p: ok[min(len(ok) - 1, int(round(p * (len(ok) - 1))))] * 1e3 if ok else float("nan")
    report = {
        "concurrency": a.concurrency,
        "seconds": a.duration,
        "requests": len(results),
        "errors": errors,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "mean_ms": statistics.fmean(ok) * 1e3 if ok else float("nan"),
        "throughput_rps": len(ok) / a.duration,
        "rss_start_mib": rss_start,
        "rss_end_mib": rss_end,
        "rss_growth": rss_end / rss_start - 1,
    }
    if a.json:
        print(json.dumps(report))
    else:
        print(f"{a.concurrency} clients for {a.duration:.0f} s against {a.url} (pid {pid})")
        print(f"  requests {report['requests']}, errors {sum(errors.values())} {errors or ''}")
        print(f"  p50 {report['p50_ms']:.1f} ms, p99 {report['p99_ms']:.1f} ms, {report['throughput_rps']:.1f} req/s")
        print(f"  host RSS {rss_start:.1f} MiB -> {rss_end:.1f} MiB ({report['rss_growth']:+.1%})")


if __name__ == "__main__":
    main()
