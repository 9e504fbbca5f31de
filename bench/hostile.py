"""Attack a running Scoria host as hostile and careless clients would, and report what held.

Each attack runs for a bounded time against `scoria up` (any one on this machine: its process
is found from the port, for its RSS), then checks that the host recovered: the function answers
again, its queue is empty, probes answered throughout. The attacks are those of issue 28:
clients that hang up while queued, bodies that never arrive, idle and half-sent connections, a
connection flood past --max-connections, images that decode to hundreds of MB, NaN tensors,
junk and oversized admin uploads, unread bodies on keep-alive connections, and lower-case
bearer schemes. Nothing here is a test of speed.

Usage: python bench/hostile.py [--url http://127.0.0.1:3000] [--api-key KEY]
                               [--admin-token TOKEN] [--connections 6000] [--json]
"""

import argparse
import http.client
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soak import listening_pid, rss_mib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Host:
    def __init__(self, url, api_key, admin_token):
        u = urllib.parse.urlsplit(url)
        self.addr = (u.hostname, u.port)
        self.api_key = api_key
        self.admin_token = admin_token
        self.pid = listening_pid(u.port)
        if self.pid is None:
            sys.exit(f"no process listens on port {u.port}; start `scoria up` first")

    def request(self, method, path, body=None, headers=None, timeout=60):
        """`(status, headers, body)` on a new connection."""
        h = dict(headers or {})
        if self.api_key and not path.startswith(("/admin", "/healthz", "/readyz", "/metrics")):
            h.setdefault("authorization", f"Bearer {self.api_key}")
        c = http.client.HTTPConnection(*self.addr, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def metric(self, name):
        """The sum of a metric's samples in /metrics."""
        _, _, text = self.request("GET", "/metrics")
        total = 0.0
        for line in text.decode().splitlines():
            if re.match(rf"{name}(\{{| )", line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def sock(self, data=b""):
        s = socket.create_connection(self.addr, timeout=30)
        if data:
            s.sendall(data)
        return s

    def auth_line(self):
        return f"authorization: Bearer {self.api_key}\r\n" if self.api_key else ""

    def rss(self):
        return rss_mib(self.pid)


def png(width, height, channels, depth):
    """A black PNG written with zlib alone (zeros compress to almost nothing)."""
    color = {3: 2, 4: 6}[channels]
    row = b"\0" + bytes(width * channels * depth // 8)
    z = zlib.compressobj(1)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def at_once(n, fn):
    """Run `fn(i)` in `n` threads started together; their results in order."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # a refused or reset connection is an answer too
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def peak_rss_during(host, fn):
    """`(fn's result, MiB the host's RSS rose by at its peak while fn ran)`."""
    before, peak, done = host.rss(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], host.rss())
            time.sleep(0.01)

    t = threading.Thread(target=sample)
    t.start()
    try:
        result = fn()
    finally:
        done.set()
        t.join()
    return result, peak[0] - before


def photo_ok(host):
    body = open(os.path.join(ROOT, "tests/data/chelsea.png"), "rb").read()
    status, _, _ = host.request("POST", "/classify", body, {"content-type": "image/png"})
    return status == 200


# Each attack returns (held, what was seen).

def hang_up_while_queued(host, a):
    body = open(os.path.join(ROOT, "tests/data/chelsea.png"), "rb").read()
    head = (f"POST /classify HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n{host.auth_line()}"
            f"content-length: {len(body)}\r\n\r\n").encode()
    stop = time.time() + a.duration
    rounds = 0
    while time.time() < stop:
        socks = [host.sock(head + body) for _ in range(200)]
        time.sleep(0.3)
        for s in socks:
            s.close()
        rounds += 1
    time.sleep(3)
    depth = host.metric("scoria_queue_depth")
    statuses = at_once(50, lambda i: host.request("POST", "/classify", body, {"content-type": "image/png"})[0])
    ok = statuses.count(200)
    return depth == 0 and ok == 50, f"{rounds} rounds of 200 clients hanging up; queue depth after: {depth:.0f}; then {ok}/50 answered 200"


def slow_bodies(host, a):
    head = (f"POST /classify HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n{host.auth_line()}"
            "content-length: 1000000\r\n\r\n0123456789").encode()
    socks = [host.sock(head) for _ in range(64)]
    time.sleep(0.5)
    t = time.time()
    ok = photo_ok(host)
    took = time.time() - t
    answers = []
    for s in socks:
        s.settimeout(60)
        try:
            answers.append(s.recv(64).split(b" ")[1].decode())
        except (OSError, IndexError):
            answers.append("closed")
        s.close()
    codes = {c: answers.count(c) for c in set(answers)}
    return ok and took < 5, f"64 bodies that never arrive; a photo meanwhile: {'200' if ok else 'failed'} in {took:.2f} s; the 64 got {codes}"


def idle_connections(host, a):
    socks = [host.sock() for _ in range(2000)]
    socks += [host.sock(b"GET /healthz HTTP/1.1\r\nhost: x\r\n") for _ in range(500)]
    t = time.time()
    status, _, _ = host.request("GET", "/healthz", timeout=10)
    took = time.time() - t
    deadline = time.time() + a.idle_timeout + 15
    while time.time() < deadline and host.metric("scoria_open_connections") > 10:
        time.sleep(1)
    left = host.metric("scoria_open_connections")
    closed_after = time.time() - t
    for s in socks:
        s.close()
    return status == 200 and left <= 10, (f"2,000 idle and 500 half-sent connections; /healthz {status} in {took:.2f} s; "
                                          f"{left:.0f} still open after {closed_after:.0f} s")


def connection_flood(host, a):
    socks, failed = [], 0
    for _ in range(a.connections):
        try:
            socks.append(host.sock())
        except OSError:
            failed += 1
    probes = {}
    for p in ("/healthz", "/readyz", "/metrics"):
        try:
            probes[p] = host.request("GET", p, timeout=10)[0]
        except OSError as e:
            probes[p] = type(e).__name__
    try:
        fn = host.request("GET", "/classify", timeout=10)[0]
    except OSError as e:
        fn = type(e).__name__
    shed = host.metric("scoria_connections_shed_total")
    for s in socks:
        s.close()
    held = all(v == 200 for v in probes.values())
    return held, (f"{len(socks)} connections opened ({failed} refused by this client's limits); probes {probes}; "
                  f"a function call got {fn}; shed so far: {shed:.0f}")


def deep_pngs(host, a):
    body = png(6324, 6324, 4, 16)
    statuses, grew = peak_rss_during(host, lambda: at_once(16, lambda i: host.request(
        "POST", "/classify", body, {"content-type": "image/png"})[0]))
    held = all(isinstance(s, int) and 400 <= s < 500 for s in statuses) and grew < 200
    return held, f"16 PNGs of 6324x6324 16-bit RGBA ({len(body) // 1024} KB each) at once: {sorted(set(map(str, statuses)))}, RSS +{grew:.0f} MiB"


def wide_pngs(host, a):
    body = png(6000, 6000, 3, 8)
    budget = host.metric("scoria_memory_budget_bytes") / 2**20

    def one(i):
        s, h, _ = host.request("POST", "/classify", body, {"content-type": "image/png"})
        return s, h.get("retry-after")

    answers, grew = peak_rss_during(host, lambda: at_once(16, one))
    statuses = [a if isinstance(a, Exception) else a[0] for a in answers]
    fine = all(not isinstance(x, Exception) and (x[0] == 200 or (x[0] == 503 and x[1])) for x in answers)
    held = fine and grew < budget + 256
    return held, (f"16 PNGs of 6000x6000 RGB (108 MB decoded each) at once, budget {budget:.0f} MiB: "
                  f"{statuses.count(200)} x 200, {statuses.count(503)} x 503; RSS +{grew:.0f} MiB")


def nan_tensor(host, a):
    statuses = []
    for v in (float("nan"), float("inf")):
        body = struct.pack("<f", v) * (3 * 224 * 224)
        statuses.append(host.request("POST", "/classify", body, {"content-type": "application/x-tensor"})[0])
    return statuses == [400, 400], f"all-NaN and all-Inf tensors: {statuses}"


def unread_bodies(host, a):
    failures = 0
    s = host.sock()
    for i in range(300):
        try:
            s.sendall(b"POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n\r\n" + b"x" * 2000)
            r = http.client.HTTPResponse(s)
            r.begin()
            r.read()
            if r.getheader("connection", "").lower() == "close":
                s.close()
                s = host.sock()
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            r = http.client.HTTPResponse(s)
            r.begin()
            r.read()
            if r.status != 200:
                failures += 1
        except (OSError, http.client.HTTPException):
            failures += 1
            s.close()
            s = host.sock()
    s.close()
    return failures == 0, f"300 POSTs to an unknown path, each followed by a request that honours the answer's Connection: {failures} failed"


def bearer_case(host, a):
    seen = {}
    if host.api_key:
        for scheme in ("bearer", "BEARER"):
            seen[f"key, {scheme}"] = host.request("POST", "/classify", open(os.path.join(ROOT, "tests/data/chelsea.png"), "rb").read(),
                                                  {"content-type": "image/png", "authorization": f"{scheme} {host.api_key}"})[0]
    if host.admin_token:
        for scheme in ("bearer", "BEARER"):
            seen[f"admin, {scheme}"] = host.request("GET", "/admin/functions", headers={"authorization": f"{scheme} {host.admin_token}"})[0]
    if not seen:
        return None, "skipped: give --api-key or --admin-token"
    return all(v == 200 for v in seen.values()), str(seen)


def admin_uploads(host, a):
    if not host.admin_token:
        return None, "skipped: give --admin-token"
    auth = {"authorization": f"Bearer {host.admin_token}"}
    status, _, body = host.request("PUT", "/admin/functions/image-classify", b"(module junk " * 80_000, auth)
    s = host.sock(f"PUT /admin/models/efficientnet-lite0 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {host.admin_token}\r\n"
                  "content-length: 2147483648\r\n\r\n".encode())
    t = time.time()
    r = http.client.HTTPResponse(s)
    r.begin()
    r.read()
    took = time.time() - t
    s.close()
    held = status == 422 and len(body) < 1000 and r.status == 413 and took < 2
    return held, f"1 MB of junk: {status}, a {len(body)} byte answer; 2 GiB declared: {r.status} in {took:.2f} s, unread"


ATTACKS = [hang_up_while_queued, slow_bodies, idle_connections, connection_flood, deep_pngs, wide_pngs,
           nan_tensor, unread_bodies, bearer_case, admin_uploads]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:3000")
    ap.add_argument("--api-key")
    ap.add_argument("--admin-token")
    ap.add_argument("--connections", type=int, default=6000, help="size of the connection flood")
    ap.add_argument("--duration", type=float, default=10, help="seconds of clients hanging up")
    ap.add_argument("--idle-timeout", type=float, default=60, help="the host's --idle-timeout")
    ap.add_argument("--only", help="comma-separated attack names")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    host = Host(a.url, a.api_key, a.admin_token)
    if not photo_ok(host):
        sys.exit("POST /classify with a photo does not answer 200 before any attack; check --url and --api-key")
    rss_start = host.rss()
    report = []
    for attack in ATTACKS:
        if a.only and attack.__name__ not in a.only.split(","):
            continue
        started = time.time()
        try:
            held, seen = attack(host, a)
        except Exception as e:
            held, seen = False, f"the attack itself failed: {type(e).__name__}: {e}"
        alive = photo_ok(host)
        entry = {"attack": attack.__name__, "held": bool(held) and alive if held is not None else None,
                 "seen": seen, "photo_after": alive, "seconds": round(time.time() - started, 1)}
        report.append(entry)
        if not a.json:
            mark = {True: "held", False: "BROKE", None: "skipped"}[entry["held"]]
            print(f"{mark:7} {attack.__name__:22} {seen}; a photo after: {'200' if alive else 'FAILED'}", flush=True)
    summary = {"attacks": report, "rss_start_mib": rss_start, "rss_end_mib": host.rss()}
    if a.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"host RSS {rss_start:.0f} MiB before, {summary['rss_end_mib']:.0f} MiB after")
    sys.exit(0 if all(e["held"] is not False for e in report) else 1)


if __name__ == "__main__":
    main()
