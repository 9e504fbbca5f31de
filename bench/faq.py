"""The /faq benchmark: end-to-end through `scoria up` against a native baseline, same run.

End-to-end: oha POSTs one question (15 words by default) to a running `scoria up`.
Native: host/examples/native_faq.rs runs the same tokenising and pooling code (the `text`
crate) and the same embedding and index models on the same tract backend, in-process, with
the tokenizer loaded once. Both come from the same cargo profile.

Prints latency p50/p99 at concurrency 1 and throughput at concurrency 2, each as a ratio to
the baseline, and the split between tokenising, embedding and matching on both sides (the
function reports its steps in Server-Timing). Scoria is measured twice: with a fresh instance
per request (the default) and with `instance_reuse = 16`. Writes every figure to
`<out>/faq.json`, and plots: latency and throughput against concurrency for each side, and
the split of a request's time (see report.py).

Usage (./dev bench faq runs this): python bench/faq.py --bin-dir target/debug --oha oha
    [--question "..."] [--requests 300] [--seconds 10] [--out docs/bench]
"""

import argparse
import json
import os
import subprocess
import tempfile

from common import ROOT, oha, reused, scoria_up, server_timing_medians
from report import Report, step

# `instance_reuse` for the second configuration.
REUSE = 16
QUESTION = "How can I remove duplicate values from a JavaScript array without writing a manual loop?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--question", default=QUESTION)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--bin-dir", required=True, help="folder holding scoria and examples/native_faq")
    ap.add_argument("--oha", required=True)
    ap.add_argument("--backend", default="tract", choices=["tract", "onnxruntime", "auto"],
                    help="for both sides: scoria up --backend, and the native baseline")
    ap.add_argument("--out", help="where the JSON and plots go (default docs/bench)")
    a = ap.parse_args()

    body = json.dumps({"question": a.question}).encode()
    served = {}
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(body)
        f.flush()
        with reused("spin.toml", "faq-match", REUSE) as reuse:
            for name, manifest in (("scoria up", None), (f"reuse {REUSE}", reuse)):
                # The server first: it (re)builds the index if the list changed.
                with scoria_up(os.path.join(a.bin_dir, "scoria"), manifest, ["--backend", a.backend]) as base:
                    url = f"{base}/faq"
                    run = lambda extra: oha(a.oha, url, f.name, "application/json", extra)  # noqa: E731
                    run(["-n", "30", "-c", "1"])  # warm-up, and tract's plan for this length
                    step(f"{name}: {a.requests} questions one at a time")
                    c1 = run(["-n", str(a.requests), "-c", "1"])
                    step(f"{name}: {a.seconds} s at c=2")
                    c2 = run(["-z", f"{a.seconds}s", "-c", "2"])
                    step(f"{name}: Server-Timing of 50 questions")
                    split = server_timing_medians(url, body, "application/json", 50)
                served[name] = (c1, c2, split)
    step(f"native baseline: {a.requests} questions one at a time, then {a.seconds} s at c=2")
    native = json.loads(subprocess.run(
        [os.path.join(a.bin_dir, "examples", "native_faq"), os.path.join(ROOT, "models"), "faq-javascript",
         a.question, str(a.requests), str(a.seconds), "2"],
        check=True, capture_output=True, text=True, env={**os.environ, "SCORIA_BACKEND": a.backend}).stdout)

    print(f"question: {a.question!r} ({len(a.question.split())} words); {os.cpu_count()} CPUs; "
          f"same cargo profile for both. reuse {REUSE}: `instance_reuse = {REUSE}`, an instance serves up to "
          f"{REUSE} questions, keeping its cards and tokenizer")
    print(f"{'metric':<26}" + "".join(f"{name:>12}" for name in served) + f"{'native':>12}"
          + "".join(f"{'ratio':>9}" for _ in served))
    p50 = {name: c1["latencyPercentiles"]["p50"] * 1e3 for name, (c1, _, _) in served.items()}
    rows = [
        ("latency p50, c=1 (ms)", p50, native["total_ms_p50"]),
        ("latency p99, c=1 (ms)", {n: c1["latencyPercentiles"]["p99"] * 1e3 for n, (c1, _, _) in served.items()},
         native["total_ms_p99"]),
        ("throughput c=2 (req/s)", {n: c2["summary"]["requestsPerSec"] for n, (_, c2, _) in served.items()},
         native["throughput"]["2"]),
    ]
    for metric, values, base in rows:
        print(f"{metric:<26}" + "".join(f"{v:>12.2f}" for v in values.values()) + f"{base:>12.2f}"
              + "".join(f"{v / base:>8.3f}x" for v in values.values()))
    print("\nwhere the time goes (p50, ms)")
    print(f"  native:    tokenize {native['tokenize_ms_p50']:.2f}, embed {native['embed_ms_p50']:.2f}, "
          f"match {native['match_ms_p50']:.2f}")
    # The guest's own steps, then the host's (body, instance); the rest is hand-offs and HTTP.
    steps = ["cards", "tokenizer", "tokenize", "embed", "match", "body", "instance"]
    for name, (_, _, split) in served.items():
        rest = split.get("total", p50[name]) - sum(split.get(k, 0) for k in steps)
        print(f"  {name + ':':<11}" + ", ".join(f"{k} {split.get(k, 0):.2f}" for k in steps)
              + f", the rest {rest:.2f} (host-side total {split.get('total', 0):.2f})")
    print("  (`cards`, `tokenizer` and `instance` are per-request costs of a fresh instance)")
    print()
    for name, ms in p50.items():
        print(f"{name}: p50 {ms:.2f} ms {'meets' if ms < 10 else 'misses'} the 10 ms target")

    pct = lambda d, q: d["latencyPercentiles"][q] * 1e3  # noqa: E731
    report = Report("faq", a.out)
    subject = f"/faq, a {len(a.question.split())}-word question, {a.backend}"
    latency = {name: {1: {"p50": pct(c1, "p50"), "p99": pct(c1, "p99")},
                      2: {"p50": pct(c2, "p50"), "p99": pct(c2, "p99")}} for name, (c1, c2, _) in served.items()}
    latency["native, in-process"] = {1: {"p50": native["total_ms_p50"], "p99": native["total_ms_p99"]}}
    report.plot_latency(f"{subject}: latency", latency)
    throughput = {name: {1: c1["summary"]["requestsPerSec"], 2: c2["summary"]["requestsPerSec"]}
                  for name, (c1, c2, _) in served.items()}
    throughput["native, in-process"] = {int(c): v for c, v in native["throughput"].items()}
    report.plot_throughput(f"{subject}: throughput", throughput)
    bars = {}
    for name, (_, _, split) in served.items():
        bar = {k: split.get(k, 0.0) for k in steps}
        bar["hand-offs"] = max(split.get("total", 0.0) - sum(bar.values()), 0.0)
        bar["HTTP and client"] = max(split.get("client", 0.0) - split.get("total", 0.0), 0.0)
        bars[name] = bar
    bars["native, in-process"] = {"tokenize": native["tokenize_ms_p50"], "embed": native["embed_ms_p50"],
                                  "match": native["match_ms_p50"]}
    report.plot_split(f"{subject}: where a question's time goes, c=1", bars,
                      ["body", "instance", "cards", "tokenizer", "tokenize", "embed", "match", "hand-offs",
                       "HTTP and client"])
    report.save({
        "question": a.question, "backend": a.backend, "instance_reuse": REUSE,
        "scoria": {name: {"1": {"p50_ms": pct(c1, "p50"), "p99_ms": pct(c1, "p99"),
                                "requests_per_s": c1["summary"]["requestsPerSec"]},
                          "2": {"p50_ms": pct(c2, "p50"), "p99_ms": pct(c2, "p99"),
                                "requests_per_s": c2["summary"]["requestsPerSec"]},
                          "server_timing_ms": split} for name, (c1, c2, split) in served.items()},
        "native": native,
    })


if __name__ == "__main__":
    main()
