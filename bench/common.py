"""What the benchmark and evaluation scripts share: starting `scoria up` and driving oha."""

import contextlib
import http.client
import json
import os
import platform
import statistics
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine():
    """The CPU model and count, e.g. `AMD EPYC 9V74 (2 CPUs)`: where a benchmark ran."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} CPUs)"


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def peer_process(cmd, url, env=None):
    """Run a peer server (`cmd`, a list) until the block ends, once `url` answers at all (any
    HTTP status counts: a POST-only route answers a GET with 405); yields `url`."""
    server = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    sys.exit(f"the peer {' '.join(cmd[:2])} did not start")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def scoria_up(scoria_bin, manifest=None, extra=()):
    """Run `scoria up` on a free port until the block ends; yields its base URL once ready."""
    with scoria_process(scoria_bin, manifest, extra) as (base, _pid):
        yield base


@contextlib.contextmanager
def scoria_process(scoria_bin, manifest=None, extra=()):
    """`scoria_up`, yielding `(base URL, pid)`: for benchmarks that read the host's CPU time."""
    port = free_port()
    server = subprocess.Popen(
        [scoria_bin, "up", "--manifest", manifest or os.path.join(ROOT, "spin.toml"),
         "--listen", f"127.0.0.1:{port}", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                if urllib.request.urlopen(f"{base}/readyz").status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                sys.exit("scoria did not become ready")
            time.sleep(0.2)
        yield base, server.pid
    finally:
        server.terminate()
        server.wait()


@contextlib.contextmanager
def card_table(model, section, lines, drop=()):
    """A models folder in which `<model>/model.toml` has `lines` (`key = value`) set in
    `[section]`: into the card's own table if it has one, replacing the same keys there. Keys
    in `drop` are removed. Yields the folder, for `scoria up --models-dir`.

    The folder is temporary and outside the checkout, and links to everything else in
    `models/`, so that a benchmark killed half-way leaves no tracked file changed."""
    models = os.path.join(ROOT, "models")
    with open(os.path.join(models, model, "model.toml")) as f:
        original = f.read()
    keys = {line.split("=", 1)[0].strip() for line in lines} | set(drop)
    kept = [line for line in original.splitlines() if line.split("=", 1)[0].strip() not in keys]
    header = f"[{section}]"
    if header in kept:
        at = kept.index(header) + 1
        text = "\n".join(kept[:at] + list(lines) + kept[at:]) + "\n"
    else:
        text = "\n".join(kept + ["", header, *lines]) + "\n"
    with tempfile.TemporaryDirectory(prefix="scoria-bench-models-") as tmp:
        for name in os.listdir(models):
            if name != model:
                os.symlink(os.path.join(models, name), os.path.join(tmp, name))
        os.mkdir(os.path.join(tmp, model))
        for name in os.listdir(os.path.join(models, model)):
            if name != "model.toml":
                os.symlink(os.path.join(models, model, name), os.path.join(tmp, model, name))
        with open(os.path.join(tmp, model, "model.toml"), "w") as f:
            f.write(text)
        yield tmp


def manifest_beside_root(text, prefix):
    """Write manifest `text` to a new file beside spin.toml (a manifest's paths are relative
    to it) whose name starts with `prefix`; returns its path. The caller removes it."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".toml", dir=ROOT)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def with_instance_reuse(text, component, n):
    """Manifest `text` with `instance_reuse = n` set for `component`."""
    table = f"[component.{component}.tool.scoria]\n"
    if table not in text:
        sys.exit(f"the manifest has no {table.strip()}")
    return text.replace(table, f"{table}instance_reuse = {n}\n")


@contextlib.contextmanager
def reused(manifest, component, n):
    """`manifest` (a path under ROOT) with `instance_reuse = n` for `component`, written
    beside it (its paths are relative to it) until the block ends; yields its path."""
    with open(os.path.join(ROOT, manifest)) as f:
        text = with_instance_reuse(f.read(), component, n)
    path = manifest_beside_root(text, ".bench-reuse-")
    try:
        yield path
    finally:
        os.remove(path)


def oha(oha_bin, url, body_file, content_type, extra, strict=True):
    """One oha run; exits if any request failed. With `strict=False` it returns oha's report
    whatever the requests got (a failed oha run: `{"error": its stderr}`), for a caller that
    counts the failures itself."""
    r = subprocess.run(
        [oha_bin, "-m", "POST", "-D", body_file, "-T", content_type, "--no-tui", "--output-format", "json",
         *extra, url],
        check=strict, capture_output=True, text=True,
    )
    if r.returncode != 0:
        return {"error": r.stderr[-2000:]}
    d = json.loads(r.stdout)
    if not strict:
        return d
    codes = d.get("statusCodeDistribution", {})
    bad = {k: v for k, v in codes.items() if k != "200"}
    if bad or (d["summary"]["successRate"] or 0.0) < 1.0:
        sys.exit(f"benchmark requests failed: {codes} {d.get('errorDistribution')}")
    return d


def server_timing(response):
    """`Server-Timing` entries of a response as {name: ms}, from the host and the guest."""
    out = {}
    for header in response.headers.get_all("server-timing") or []:
        for entry in header.split(","):
            name, _, dur = entry.strip().partition(";dur=")
            if dur:
                out[name] = float(dur)
    return out


def server_timing_medians(url, body, content_type, n, until=None):
    """Median of each `Server-Timing` entry over `n` requests of `body`, one at a time on one
    kept-alive connection, and of the time the client waited for each (`client`), in ms.
    With `until` (a `time.perf_counter()` value), no request starts after it but the first."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    seen = {}
    try:
        for i in range(n):
            started = time.perf_counter()
            if i and until is not None and started > until:
                break
            conn.request("POST", parsed.path + (f"?{parsed.query}" if parsed.query else ""), body,
                         {"content-type": content_type})
            r = conn.getresponse()
            r.read()
            seen.setdefault("client", []).append((time.perf_counter() - started) * 1e3)
            if r.status != 200:
                sys.exit(f"benchmark request failed: {r.status}")
            for k, v in server_timing(r).items():
                seen.setdefault(k, []).append(v)
    finally:
        conn.close()
    return {k: statistics.median(v) for k, v in seen.items()}
