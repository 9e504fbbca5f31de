"""The /faq benchmark: end-to-end through `scoria up` against a native baseline, same run.

End-to-end: oha POSTs one question (15 words by default) to a running `scoria up`.
Native: host/examples/native_faq.rs runs the same tokenising and pooling code (the `text`
crate) and the same embedding and index models on the same tract backend, in-process, with
the tokenizer loaded once. Both come from the same cargo profile.

Prints latency p50/p99 at concurrency 1 and throughput at concurrency 2, each as a ratio to
the baseline, and the split between tokenising, embedding and matching on both sides (the
function reports its steps in Server-Timing).

Usage (./dev bench faq runs this): python bench/faq.py --bin-dir target/debug --oha oha
    [--question "..."] [--requests 300] [--seconds 10]
"""

import argparse
import json
import os
import subprocess
import tempfile

from common import ROOT, oha, scoria_up, server_timing_medians

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
    a = ap.parse_args()

    body = json.dumps({"question": a.question}).encode()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(body)
        f.flush()
        # The server first: it (re)builds the index if the list changed.
        with scoria_up(os.path.join(a.bin_dir, "scoria"), extra=["--backend", a.backend]) as base:
            url = f"{base}/faq"
            run = lambda extra: oha(a.oha, url, f.name, "application/json", extra)  # noqa: E731
            run(["-n", "30", "-c", "1"])  # warm-up, and tract's plan for this length
            c1 = run(["-n", str(a.requests), "-c", "1"])
            c2 = run(["-z", f"{a.seconds}s", "-c", "2"])
            split = server_timing_medians(url, body, "application/json", 50)
    native = json.loads(subprocess.run(
        [os.path.join(a.bin_dir, "examples", "native_faq"), os.path.join(ROOT, "models"), "faq-javascript",
         a.question, str(a.requests), str(a.seconds), "2"],
        check=True, capture_output=True, text=True, env={**os.environ, "SCORIA_BACKEND": a.backend}).stdout)

    p50 = c1["latencyPercentiles"]["p50"] * 1e3
    p99 = c1["latencyPercentiles"]["p99"] * 1e3
    rows = [
        ("latency p50, c=1 (ms)", p50, native["total_ms_p50"]),
        ("latency p99, c=1 (ms)", p99, native["total_ms_p99"]),
        ("throughput c=2 (req/s)", c2["summary"]["requestsPerSec"], native["throughput"]["2"]),
    ]
    print(f"question: {a.question!r} ({len(a.question.split())} words); {os.cpu_count()} CPUs; "
          "same cargo profile for both")
    print(f"{'metric':<26}{'scoria up':>12}{'native':>12}{'ratio':>9}")
    for name, e2e, base in rows:
        print(f"{name:<26}{e2e:>12.2f}{base:>12.2f}{e2e / base:>8.3f}x")
    print("\nwhere the time goes (p50, ms)")
    print(f"  native:    tokenize {native['tokenize_ms_p50']:.2f}, embed {native['embed_ms_p50']:.2f}, "
          f"match {native['match_ms_p50']:.2f}")
    # The guest's own steps, then the host's (body, instance); the rest is hand-offs and HTTP.
    steps = ["cards", "tokenizer", "tokenize", "embed", "match", "body", "instance"]
    rest = split.get("total", p50) - sum(split.get(k, 0) for k in steps)
    print("  scoria up: " + ", ".join(f"{k} {split.get(k, 0):.2f}" for k in steps)
          + f", the rest {rest:.2f} (host-side total {split.get('total', 0):.2f}); "
          "`cards`, `tokenizer` and `instance` are per-request costs of a fresh instance")
    verdict = "meets" if p50 < 10 else "misses"
    print(f"\np50 {p50:.2f} ms {verdict} the 10 ms target")


if __name__ == "__main__":
    main()
