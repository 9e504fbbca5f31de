"""The /classify benchmark: end-to-end through `scoria up` against a native baseline, same run.

End-to-end: oha (a real HTTP load generator) POSTs a real photo to a running `scoria up`.
Native: host/examples/native_classify.rs runs the same decode and preprocessing code (the
`vision` crate) and the same tract model in-process, no WebAssembly and no HTTP.
Both come from the same cargo profile, so the ratios compare like with like.

Prints latency p50/p99 at concurrency 1, throughput at concurrency 2 and 8, each as a ratio
to the baseline, and where the time goes (decode, preprocess, inference, the rest). Writes
every figure to `<out>/classify.json`, and plots: latency and throughput against concurrency
for both sides, and the split of a request's time (see report.py).

Usage (./dev bench runs this): python bench/classify.py [--photo tests/data/chelsea.png]
    [--requests 200] [--seconds 15] [--out docs/bench]
"""

import argparse
import json
import os
import subprocess

from common import ROOT, oha, scoria_up, server_timing_medians
from report import Report, step

LEVELS = (1, 2, 8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photo", default=os.path.join(ROOT, "tests/data/chelsea.png"))
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--bin-dir", required=True, help="folder holding scoria and examples/native_classify")
    ap.add_argument("--oha", required=True)
    ap.add_argument("--backend", default="tract", choices=["tract", "onnxruntime", "auto"],
                    help="for both sides: scoria up --backend, and the native baseline")
    ap.add_argument("--out", help="where the JSON and plots go (default docs/bench)")
    a = ap.parse_args()

    step(f"native baseline: {a.requests} photos one at a time, then {a.seconds} s at c=2 and c=8")
    native = json.loads(subprocess.run(
        [os.path.join(a.bin_dir, "examples", "native_classify"), os.path.join(ROOT, "models"), a.photo,
         str(a.requests), str(a.seconds), "2", "8"],
        check=True, capture_output=True, text=True, env={**os.environ, "SCORIA_BACKEND": a.backend}).stdout)

    with scoria_up(os.path.join(a.bin_dir, "scoria"), extra=["--backend", a.backend]) as base:
        url = f"{base}/classify"
        run = lambda extra: oha(a.oha, url, a.photo, "image/png", extra)  # noqa: E731
        run(["-n", "20", "-c", "1"])  # warm-up
        step(f"scoria up: {a.requests} photos one at a time")
        c1 = run(["-n", str(a.requests), "-c", "1"])
        step(f"scoria up: {a.seconds} s at c=2")
        c2 = run(["-z", f"{a.seconds}s", "-c", "2"])
        step(f"scoria up: {a.seconds} s at c=8")
        c8 = run(["-z", f"{a.seconds}s", "-c", "8"])
        step("scoria up: Server-Timing of 50 requests")
        split = server_timing_medians(url, open(a.photo, "rb").read(), "image/png", 50)
        inf_ms, host_total_ms = split["inference"], split["total"]

    p50 = c1["latencyPercentiles"]["p50"] * 1e3
    p99 = c1["latencyPercentiles"]["p99"] * 1e3
    rows = [
        ("latency p50, c=1 (ms)", p50, native["total_ms_p50"]),
        ("latency p99, c=1 (ms)", p99, native["total_ms_p99"]),
        ("throughput c=2 (img/s)", c2["summary"]["requestsPerSec"], native["throughput"]["2"]),
        ("throughput c=8 (img/s)", c8["summary"]["requestsPerSec"], native["throughput"]["8"]),
    ]
    print(f"photo: {os.path.relpath(a.photo, ROOT)}; {os.cpu_count()} CPUs; same cargo profile for both")
    print(f"{'metric':<26}{'scoria up':>12}{'native':>12}{'ratio':>9}")
    for name, e2e, base in rows:
        print(f"{name:<26}{e2e:>12.2f}{base:>12.2f}{e2e / base:>8.3f}x")
    n_dec, n_pre, n_inf = native["decode_ms_p50"], native["preprocess_ms_p50"], native["inference_ms_p50"]
    n_tot = n_dec + n_pre + n_inf
    print("\nwhere the time goes (p50)")
    print(f"  native:    decode {n_dec:.2f} ms ({n_dec / n_tot:.0%}), preprocess {n_pre:.2f} ms "
          f"({n_pre / n_tot:.0%}), inference {n_inf:.2f} ms ({n_inf / n_tot:.0%})")
    rest = p50 - inf_ms
    print(f"  scoria up: inference {inf_ms:.2f} ms ({inf_ms / p50:.0%}, host-measured), "
          f"guest decode+preprocess, instantiation and HTTP {rest:.2f} ms ({rest / p50:.0%}); "
          f"host-side total {host_total_ms:.2f} ms")
    target = 1.15
    verdict = "meets" if p50 / native["total_ms_p50"] <= target else "misses"
    print(f"\np50 ratio {p50 / native['total_ms_p50']:.3f}x {verdict} the {target}x target")

    served = dict(zip(LEVELS, (c1, c2, c8)))
    pct = lambda d, q: d["latencyPercentiles"][q] * 1e3  # noqa: E731
    report = Report("classify", a.out)
    subject = f"/classify, {os.path.basename(a.photo)}, {a.backend}"
    report.plot_latency(f"{subject}: latency", {
        "scoria up": {c: {"p50": pct(d, "p50"), "p99": pct(d, "p99")} for c, d in served.items()},
        "native, in-process": {1: {"p50": native["total_ms_p50"], "p99": native["total_ms_p99"]}},
    })
    report.plot_throughput(f"{subject}: throughput", {
        "scoria up": {c: d["summary"]["requestsPerSec"] for c, d in served.items()},
        "native, in-process": {int(c): v for c, v in native["throughput"].items()},
    }, unit="images/s")
    host = {k: split.get(k, 0.0) for k in ("queue", "body", "instance", "inference")}
    host["guest and hand-offs"] = max(host_total_ms - sum(host.values()), 0.0)
    host["HTTP and client"] = max(split.get("client", host_total_ms) - host_total_ms, 0.0)
    report.plot_split(f"{subject}: where a request's time goes, c=1", {
        "scoria up": host,
        "native, in-process": {"decode and preprocess": n_dec + n_pre, "inference": n_inf},
    }, ["queue", "body", "instance", "decode and preprocess", "guest and hand-offs", "inference",
        "HTTP and client"])
    report.save({
        "photo": os.path.relpath(a.photo, ROOT), "backend": a.backend,
        "scoria": {str(c): {"p50_ms": pct(d, "p50"), "p90_ms": pct(d, "p90"), "p99_ms": pct(d, "p99"),
                            "requests_per_s": d["summary"]["requestsPerSec"]} for c, d in served.items()},
        "scoria_server_timing_ms": split,
        "native": native,
    })


if __name__ == "__main__":
    main()
