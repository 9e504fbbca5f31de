"""Scoria against the servers a user would run instead, in one run on one machine (issue 26's
yardsticks). Each target is printed as a ratio, with p50, p99 and throughput for each side.

- **Photo**: `/classify` with `tests/data/chelsea.jpg` and `.png` through `scoria up
  --backend onnxruntime` against `bench/peers/classify_fastapi.py` (FastAPI under uvicorn, one
  worker per CPU, Pillow, ONNX Runtime), the same model with the same settings (one intra-op
  thread, full optimisation), the same preprocessing. Targets: p50 at concurrency 1 at most
  0.9x the peer's, throughput at concurrency 4 at least 1.15x.
- **Tensor**: `/classify` on `spin-nullnet.toml` with a 602,112-byte `application/x-tensor`
  body at concurrency 8: the host's CPU time per request (user + system, from /proc). Target:
  at most 0.25 ms.
- **Hello**: `functions/hello-p2` through `scoria up` against `wasmtime serve` (wasmtime-cli
  from crates.io, the host's wasmtime major version, installed into .cache/tools by `./dev
  bench peers`) on the same component. Target: throughput at concurrency 1 and 8 at least the
  peer's.

Usage: peers.py --bin-dir DIR --oha BIN --wasmtime BIN [--seconds 5] [--out DIR]
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, cpu_seconds, free_port, manifest_beside_root, oha, peer_process, scoria_process, scoria_up  # noqa: E402
from report import Report, step  # noqa: E402

HELLO = "functions/target/wasm32-wasip2/release/hello_p2.wasm"


def run(a, url, body, ctype, c):
    """p50, p99 (ms) and req/s at concurrency `c`, after a 1 s warm-up."""
    oha(a.oha, url, body, ctype, ["-z", "1s", "-c", str(c)])
    d = oha(a.oha, url, body, ctype, ["-z", f"{a.seconds}s", "-c", str(c)])
    pct = d["latencyPercentiles"]
    r = {"p50": pct["p50"] * 1e3, "p99": pct["p99"] * 1e3, "rps": d["summary"]["requestsPerSec"]}
    step(f"  c={c}: p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, {r['rps']:.0f} req/s")
    return r


def hello_manifest():
    """A manifest beside spin.toml serving hello-p2 at /hello."""
    text = f"""spin_manifest_version = 2
[application]
name = "bench-hello"
[[trigger.scoria]]
route = "/hello"
component = "hello"
[component.hello]
source = "{HELLO}"
"""
    return manifest_beside_root(text, ".bench-hello-")


def photo(a, workers):
    sides = {}
    bodies = {ext: os.path.join(ROOT, "tests", "data", f"chelsea.{ext}") for ext in ("jpg", "png")}
    ctypes = {"jpg": "image/jpeg", "png": "image/png"}
    step("photo: Scoria (onnxruntime)")
    with scoria_up(os.path.join(a.bin_dir, "scoria"), None, ["--backend", "onnxruntime"]) as base:
        for ext, body in bodies.items():
            sides[("Scoria", ext)] = {c: run(a, f"{base}/classify", body, ctypes[ext], c) for c in (1, 4)}
    port = free_port()
    uvicorn = os.path.join(os.path.dirname(sys.executable), "uvicorn")
    step(f"photo: FastAPI + uvicorn ({workers} workers) + Pillow + ONNX Runtime")
    with peer_process([uvicorn, "--workers", str(workers), "--port", str(port), "--log-level", "warning",
                       "--app-dir", os.path.join(ROOT, "bench", "peers"), "classify_fastapi:app"],
                      f"http://127.0.0.1:{port}/classify",
                      {"SCORIA_MODEL_DIR": os.path.join(ROOT, "models", "efficientnet-lite0")}) as url:
        for ext, body in bodies.items():
            sides[("FastAPI", ext)] = {c: run(a, url, body, ctypes[ext], c) for c in (1, 4)}
    return sides


def tensor(a):
    with tempfile.TemporaryDirectory() as tmp:
        body = os.path.join(tmp, "input.f32")
        np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype("<f4").tofile(body)
        step("tensor: Scoria on nullnet, c=8")
        manifest = os.path.join(ROOT, "spin-nullnet.toml")
        with scoria_process(os.path.join(a.bin_dir, "scoria"), manifest, ["--backend", "onnxruntime"]) as (base, pid):
            url = f"{base}/classify"
            oha(a.oha, url, body, "application/x-tensor", ["-z", "1s", "-c", "8"])
            before = cpu_seconds(pid)
            d = oha(a.oha, url, body, "application/x-tensor", ["-z", f"{a.seconds}s", "-c", "8"])
            used = cpu_seconds(pid) - before
    n = sum(d.get("statusCodeDistribution", {}).values())
    return {"rps": d["summary"]["requestsPerSec"], "p50": d["latencyPercentiles"]["p50"] * 1e3,
            "cpu_ms": used / n * 1e3}


def hello(a):
    sides = {}
    body = os.path.join(ROOT, "bench", "peers", "classify_fastapi.py")  # any small body
    path = hello_manifest()
    try:
        step("hello: Scoria")
        with scoria_up(os.path.join(a.bin_dir, "scoria"), path) as base:
            sides["Scoria"] = {c: run(a, f"{base}/hello", body, "text/plain", c) for c in (1, 8)}
    finally:
        os.remove(path)
    port = free_port()
    step("hello: wasmtime serve")
    # -Scli: the component imports wasi:cli (its environment), which `serve` leaves out by default.
    with peer_process([a.wasmtime, "serve", "-Scli", "--addr", f"127.0.0.1:{port}", os.path.join(ROOT, HELLO)],
                      f"http://127.0.0.1:{port}/hello") as url:
        sides["wasmtime serve"] = {c: run(a, url, body, "text/plain", c) for c in (1, 8)}
    return sides


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--oha", required=True)
    p.add_argument("--wasmtime", required=True)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--out")
    a = p.parse_args()
    workers = os.cpu_count()

    photos = photo(a, workers)
    t = tensor(a)
    h = hello(a)

    print("\nphoto, EfficientNet-Lite0 on ONNX Runtime (1 intra-op thread) on both sides")
    print(f"{'side':<10} {'body':<5} {'c=1 p50':>8} {'p99':>7} {'req/s':>7} {'c=4 p50':>8} {'p99':>7} {'req/s':>7}")
    for (side, ext), lv in photos.items():
        print(f"{side:<10} {ext:<5} {lv[1]['p50']:>8.2f} {lv[1]['p99']:>7.2f} {lv[1]['rps']:>7.0f} "
              f"{lv[4]['p50']:>8.2f} {lv[4]['p99']:>7.2f} {lv[4]['rps']:>7.0f}")
    ratios = {}
    for ext in ("jpg", "png"):
        s, f = photos[("Scoria", ext)], photos[("FastAPI", ext)]
        r = {"p50_c1": s[1]["p50"] / f[1]["p50"], "rps_c4": s[4]["rps"] / f[4]["rps"]}
        ratios[f"photo_{ext}"] = r
        ok = "met" if r["p50_c1"] <= 0.9 and r["rps_c4"] >= 1.15 else "NOT met"
        print(f"  {ext}: p50 {r['p50_c1']:.2f}x (target <= 0.9), throughput {r['rps_c4']:.2f}x (>= 1.15): {ok}")
    print(f"\ntensor on nullnet, c=8: {t['rps']:.0f} req/s, p50 {t['p50']:.2f} ms, "
          f"host CPU {t['cpu_ms']:.3f} ms a request (target <= 0.25): {'met' if t['cpu_ms'] <= 0.25 else 'NOT met'}")
    print("\nhello-p2")
    for side, lv in h.items():
        print(f"{side:<15} c=1 {lv[1]['rps']:>6.0f} req/s (p50 {lv[1]['p50']:.2f} ms)   "
              f"c=8 {lv[8]['rps']:>6.0f} req/s (p50 {lv[8]['p50']:.2f} ms)")
    for c in (1, 8):
        r = h["Scoria"][c]["rps"] / h["wasmtime serve"][c]["rps"]
        ratios[f"hello_c{c}"] = r
        print(f"  c={c}: Scoria / wasmtime serve {r:.2f}x (target >= 1): {'met' if r >= 1 else 'NOT met'}")

    report = Report("peers", a.out, f"./dev bench peers --seconds {a.seconds}")
    report.plot_latency("chelsea.jpg: Scoria and FastAPI, latency",
                        {side: lv for (side, ext), lv in photos.items() if ext == "jpg"})
    report.plot_throughput("chelsea.jpg: Scoria and FastAPI, throughput",
                           {side: {c: v["rps"] for c, v in lv.items()} for (side, ext), lv in photos.items() if ext == "jpg"})
    report.save({"photo": {f"{side} {ext}": {str(c): v for c, v in lv.items()} for (side, ext), lv in photos.items()},
                 "tensor": t, "hello": {side: {str(c): v for c, v in lv.items()} for side, lv in h.items()},
                 "ratios": ratios, "peer_workers": workers})


if __name__ == "__main__":
    main()
