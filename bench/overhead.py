"""Scoria's own cost per request, against a baseline build of the function in the same run.

/classify with `application/x-tensor` bodies (one 224x224 image, 602,112 bytes) on
`nullnet`, a model that costs almost nothing (spin-nullnet.toml), so that what is measured
is HTTP, a fresh instance of image-classify, its handling of the body, wasi-nn and the host:
what Scoria adds to every request, and what a GPU node pays on its CPUs for each image it
feeds the GPU.

The current build (functions/target) and a baseline build of the same function (`--baseline`,
for example the previous commit's: `./dev bench overhead --baseline-rev REV` builds it) are
served by the same host binary in `--rounds` alternating pairs. For each: requests per second
at concurrency 8, p50, and the host's CPU time per request (user + system time of the scoria
process over the run, from /proc). Then the ratios current / baseline.

Usage: overhead.py --bin-dir DIR --oha BIN --baseline WASM [--rounds 3] [--seconds 5] [--current-reuse N]
"""

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, cpu_seconds, manifest_beside_root, oha, scoria_process, with_instance_reuse  # noqa: E402
from report import Report  # noqa: E402

MANIFEST = os.path.join(ROOT, "spin-nullnet.toml")
CURRENT = "functions/target/wasm32-wasip2/release/image_classify.wasm"
CONCURRENCY = 8


def manifest_for(wasm, reuse=1):
    """spin-nullnet.toml serving `wasm` with `instance_reuse = reuse`, written beside it
    (paths are relative to a manifest)."""
    with open(MANIFEST) as f:
        text = f.read().replace(CURRENT, os.path.relpath(wasm, ROOT))
    text = with_instance_reuse(text, "image-classify", reuse)
    return manifest_beside_root(text, ".overhead-")


def measure(a, wasm, body, reuse=1):
    """req/s, p50 (ms) and host CPU per request (µs) for one build."""
    manifest = manifest_for(wasm, reuse)
    try:
        with scoria_process(os.path.join(a.bin_dir, "scoria"), manifest, ["--backend", "onnxruntime"]) as (base, pid):
            url = f"{base}/classify"
            oha(a.oha, url, body, "application/x-tensor", ["-z", "2s", "-c", str(CONCURRENCY)])
            before = cpu_seconds(pid)
            d = oha(a.oha, url, body, "application/x-tensor", ["-z", f"{a.seconds}s", "-c", str(CONCURRENCY)])
            used = cpu_seconds(pid) - before
    finally:
        os.remove(manifest)
    done = sum(d.get("statusCodeDistribution", {}).values())
    return {
        "req_s": d["summary"]["requestsPerSec"],
        "p50_ms": d["latencyPercentiles"]["p50"] * 1e3,
        "cpu_us": used / done * 1e6,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--baseline", required=True, help="image_classify.wasm to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--current-reuse", type=int, default=1,
                    help="serve the current build with `instance_reuse` set to this (1: a fresh instance per request)")
    ap.add_argument("--out", help="where the JSON and plots go (default docs/bench)")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        body = os.path.join(tmp, "input.f32")
        np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype("<f4").tofile(body)
        runs = {"baseline": [], "current": []}
        for r in range(a.rounds):
            for name, wasm, reuse in (("baseline", a.baseline, 1),
                                      ("current", os.path.join(ROOT, CURRENT), a.current_reuse)):
                m = measure(a, wasm, body, reuse)
                runs[name].append(m)
                print(f"round {r + 1} {name:8}: {m['req_s']:7.0f} req/s  p50 {m['p50_ms']:5.2f} ms  "
                      f"host CPU {m['cpu_us']:6.0f} µs/request", flush=True)

    def median(name, key):
        return statistics.median(m[key] for m in runs[name])

    reuse = f"; current with instance_reuse = {a.current_reuse}" if a.current_reuse > 1 else ""
    print(f"\nnullnet, application/x-tensor (1 image), c={CONCURRENCY}, medians of {a.rounds} rounds{reuse}:")
    print("| measure | baseline | current | current / baseline |\n|---|---|---|---|")
    for key, label, fmt in (("req_s", "requests/s", "{:.0f}"), ("p50_ms", "p50 (ms)", "{:.2f}"),
                            ("cpu_us", "host CPU per request (µs)", "{:.0f}")):
        b, c = median("baseline", key), median("current", key)
        print(f"| {label} | {fmt.format(b)} | {fmt.format(c)} | {c / b:.2f}x |")

    command = "./dev bench overhead" + (f" --current-reuse {a.current_reuse}" if a.current_reuse > 1 else "")
    out = Report("overhead", a.out, command)
    current = "current" + (f", instance_reuse = {a.current_reuse}" if a.current_reuse > 1 else "")
    out.plot_bars("cpu", f"Host CPU per 602 KB tensor request on nullnet, c={CONCURRENCY} (medians of {a.rounds})",
                  {"baseline": median("baseline", "cpu_us"), current: median("current", "cpu_us")}, unit="µs")
    out.plot_bars("throughput", f"Requests/s on nullnet, c={CONCURRENCY} (medians of {a.rounds})",
                  {"baseline": median("baseline", "req_s"), current: median("current", "req_s")}, unit="req/s")
    out.save({"concurrency": CONCURRENCY, "current_reuse": a.current_reuse, "rounds": runs})


if __name__ == "__main__":
    main()
