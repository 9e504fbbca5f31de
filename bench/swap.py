"""Hot-swap and cold-start benchmark for `scoria up`, each figure against a baseline from the
same run.

- Swap through the admin API: from the start of `PUT /admin/functions/<id>` (a build whose
  bytes differ, so it is really compiled) to the first request answered by the new version,
  for the example functions; the same for `PUT /admin/models/<name>` with the FAQ index and
  with MiniLM. Baseline: a restart of the host (the cold start below without the cache).
- Swap through `--watch`: from writing a rebuilt component to the first request it answers.
- Cold start: from process start to the first `/classify` and `/faq` answers, with an empty
  compile cache and with a filled one (models loaded in both).

Writes every run's figures to `<out>/swap.json` and a plot of the medians (see report.py).

Usage (./dev bench swap runs this): python bench/swap.py --bin-dir target/debug [--runs 5]
    [--out docs/bench]
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np
import onnx
from onnx import numpy_helper

from common import ROOT, free_port
from report import Report, step

TOKEN = "swap-benchmark-token-0001"
WASM = os.path.join(ROOT, "functions/target/wasm32-wasip2/release")
PHOTO = os.path.join(ROOT, "tests/data/chelsea.png")
QUESTION = json.dumps({"question": "How do I make a copy of an array?", "k": 1}).encode()


def request(url, data=None, content_type=None, method=None, token=None, timeout=60):
    headers = {}
    if content_type:
        headers["content-type"] = content_type
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def with_custom_section(wasm, payload):
    """The same component with a custom section appended: new bytes, same behaviour."""
    name = b"scoria-bench"
    body = bytes([len(name)]) + name + payload
    size, out = len(body), bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        out.append(byte | (0x80 if size else 0))
        if not size:
            break
    return wasm + b"\x00" + bytes(out) + body


def permuted_index(path):
    """The FAQ index with its first two entries' columns swapped (see host/tests/hot_swap.rs)."""
    model = onnx.load(path)
    init = next(t for t in model.graph.initializer if t.name == "matrix")
    m = numpy_helper.to_array(init).copy()
    m[:, [0, 1]] = m[:, [1, 0]]
    init.CopyFrom(numpy_helper.from_array(m, "matrix"))
    return model.SerializeToString()


class Host:
    """A `scoria up` process on a free port."""

    def __init__(self, scoria, manifest, extra=()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [scoria, "up", "--manifest", manifest, "--listen", f"127.0.0.1:{self.port}", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})

    def first_answer(self, path, body, content_type):
        """Seconds from process start to the first 200 on `path` (polled every 5 ms)."""
        while True:
            try:
                status, _ = request(self.base + path, body, content_type, timeout=30)
                if status == 200:
                    return time.perf_counter() - self.started
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.proc.poll() is not None or time.perf_counter() - self.started > 300:
                sys.exit(f"scoria ({' '.join(self.proc.args[1:4])}) did not answer on {path}")
            time.sleep(0.005)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def best_match(base):
    _, body = request(base + "/faq", QUESTION, "application/json")
    return json.loads(body)["matches"][0]["id"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", help="where the JSON and plot go (default docs/bench)")
    a = ap.parse_args()
    scoria = os.path.join(a.bin_dir, "scoria")
    manifest = os.path.join(ROOT, "spin.toml")
    med = lambda xs: statistics.median(xs) * 1e3  # noqa: E731

    step(f"cold starts, without and with the compile cache, {a.runs} times")
    cold, warm = {"/classify": [], "/faq": []}, {"/classify": [], "/faq": []}
    for _ in range(a.runs):
        cache = tempfile.mkdtemp()
        for target in (cold, warm):
            h = Host(scoria, manifest, ["--cache-dir", cache])
            target["/classify"].append(h.first_answer("/classify", open(PHOTO, "rb").read(), "image/png"))
            target["/faq"].append(h.first_answer("/faq", QUESTION, "application/json"))
            h.stop()
        shutil.rmtree(cache)

    step(f"swaps through the admin API, {a.runs} of each")
    token_file = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    token_file.write(TOKEN + "\n")
    token_file.close()
    h = Host(scoria, manifest, ["--admin-token-file", token_file.name, "--no-compile-cache"])
    h.first_answer("/faq", QUESTION, "application/json")
    swaps = {}
    for fid, wasm in [("image-classify", "image_classify.wasm"), ("faq-match", "faq_match.wasm")]:
        original = open(os.path.join(WASM, wasm), "rb").read()
        times = []
        for _ in range(a.runs):
            new = with_custom_section(original, os.urandom(16))
            digest = hashlib.sha256(new).hexdigest()
            t = time.perf_counter()
            status, body = request(f"{h.base}/admin/functions/{fid}", new, "application/wasm", "PUT", TOKEN)
            assert status == 200 and json.loads(body)["digest"] == digest, body
            # The PUT returns once the new version serves; prove it with a request.
            if fid == "image-classify":
                request(h.base + "/classify", open(PHOTO, "rb").read(), "image/png")
            else:
                best_match(h.base)
            times.append(time.perf_counter() - t)
        swaps[f"function {fid} (PUT, compiled)"] = times
    index = os.path.join(ROOT, "models/faq-javascript/index.onnx")
    versions = [permuted_index(index), open(index, "rb").read()]
    times = []
    for i in range(a.runs * 2):
        t = time.perf_counter()
        request(f"{h.base}/admin/models/faq-javascript", versions[i % 2], "application/octet-stream", "PUT", TOKEN)
        got = best_match(h.base)
        times.append(time.perf_counter() - t)
        assert got == ("array-remove-item" if i % 2 == 0 else "array-clone"), got
    swaps["model faq-javascript (PUT, 0.2 MB)"] = times
    minilm = open(os.path.join(ROOT, "models/all-minilm-l6-v2/model.onnx"), "rb").read()
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        request(f"{h.base}/admin/models/all-minilm-l6-v2", minilm, "application/octet-stream", "PUT", TOKEN)
        best_match(h.base)
        times.append(time.perf_counter() - t)
    swaps["model all-minilm-l6-v2 (PUT, 90 MB)"] = times
    h.stop()
    os.unlink(token_file.name)

    step(f"swaps through --watch, {a.runs} times")
    # A rebuilt faq-match written next to a copy of the manifest.
    work = tempfile.mkdtemp()
    source = os.path.join(work, "faq_match.wasm")
    shutil.copy(os.path.join(WASM, "faq_match.wasm"), source)
    text = open(manifest).read().replace(
        'source = "functions/target/wasm32-wasip2/release/faq_match.wasm"', f'source = "{source}"')
    for rel in ('"models/', '"faq/', '"functions/'):
        text = text.replace(rel, f'"{ROOT}/{rel[1:]}')
    watched = os.path.join(work, "spin.toml")
    open(watched, "w").write(text)
    token_file = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    token_file.write(TOKEN + "\n")
    token_file.close()
    h = Host(scoria, watched, ["--watch", "--models-dir", os.path.join(ROOT, "models"), "--no-compile-cache",
                               "--admin-token-file", token_file.name])
    h.first_answer("/faq", QUESTION, "application/json")
    original = open(source, "rb").read()
    times = []
    for _ in range(a.runs):
        new = with_custom_section(original, os.urandom(16))
        digest = hashlib.sha256(new).hexdigest()
        t = time.perf_counter()
        open(source, "wb").write(new)
        # The admin API (read-only use) says when the watcher's swap is done.
        while serving_digest(h, "faq-match") != digest:
            time.sleep(0.005)
        best_match(h.base)
        times.append(time.perf_counter() - t)
    h.stop()
    shutil.rmtree(work)
    os.unlink(token_file.name)
    swaps["function faq-match (--watch, file written)"] = times

    restart = med(cold["/faq"])
    print(f"{os.cpu_count()} CPUs; medians of {a.runs} runs; baseline: a restart without the compile cache "
          f"({restart:.0f} ms to the first /faq answer)")
    print(f"{'swap':<46}{'ms':>9}{'vs restart':>12}")
    for name, xs in swaps.items():
        print(f"{name:<46}{med(xs):>9.1f}{med(xs) / restart:>11.3f}x")
    print(f"\n{'cold start to the first answer':<46}{'no cache':>9}{'cache':>9}{'ratio':>9}")
    for path in ("/classify", "/faq"):
        c, w = med(cold[path]), med(warm[path])
        print(f"{path:<46}{c:>9.0f}{w:>9.0f}{w / c:>8.3f}x")

    report = Report("swap", a.out)
    bars = {name: med(xs) for name, xs in swaps.items()}
    for path in ("/classify", "/faq"):
        bars[f"cold start to {path}, compile cache"] = med(warm[path])
        bars[f"cold start to {path}, no cache (a restart)"] = med(cold[path])
    report.plot_bars("medians", f"Hot swaps and cold starts, to the first answer (medians of {a.runs})", bars)
    ms = lambda runs: {k: [x * 1e3 for x in xs] for k, xs in runs.items()}  # noqa: E731
    report.save({"runs": a.runs, "swaps_ms": ms(swaps), "cold_start_no_cache_ms": ms(cold),
                 "cold_start_compile_cache_ms": ms(warm)})


def serving_digest(h, fid):
    _, body = request(h.base + "/admin/functions", token=TOKEN)
    return next(f["digest"] for f in json.loads(body)["functions"] if f["id"] == fid)


if __name__ == "__main__":
    main()
