"""CPU threads for ONNX Runtime: latency at low load against throughput at saturation.

Each model holds several sessions (concurrent requests run side by side) and each session
uses some intra-op threads (one request spreads over cores). Scoria's default is one session
per core with one thread each; ONNX Runtime's and Triton's is one session using every core;
`solo_intra_threads = 0` adds a session on every core for a compute that starts alone.
This serves `/classify` through `scoria up --backend onnxruntime` with each configuration in
turn, in one run, and prints p50 at concurrency 1 and throughput at 1x and 2x the core count,
as ratios against the default.

Usage: threads.py --bin-dir DIR --oha BIN [--model resnet152] [--photo F]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, card_table, oha, scoria_up  # noqa: E402
from report import Report, step  # noqa: E402

MANIFESTS = {"efficientnet-lite0": "spin.toml", "resnet152": "spin-resnet152.toml"}


def measure(a, sessions, threads, solo, cores):
    """p50 at c=1 (ms) and req/s at c=cores and c=2*cores for one configuration."""
    lines = [f"sessions = {sessions}", f"intra_threads = {threads}"]
    if solo is not None:
        lines.append(f"solo_intra_threads = {solo}")
    drop = ["solo_intra_threads"] if solo is None else []
    with card_table(a.model, "onnxruntime", lines, drop) as models, scoria_up(
            os.path.join(a.bin_dir, "scoria"), os.path.join(ROOT, MANIFESTS[a.model]),
            ["--backend", "onnxruntime", "--models-dir", models]) as base:
        url = f"{base}/classify"
        run = lambda c, n: oha(a.oha, url, a.photo, "image/jpeg", ["-n", str(n), "-c", str(c)])  # noqa: E731
        run(1, max(a.requests // 5, 3))
        p50 = run(1, a.requests)["latencyPercentiles"]["p50"] * 1e3
        rates = [run(c, a.requests * 2)["summary"]["requestsPerSec"] for c in (cores, 2 * cores)]
        return p50, rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--model", default="resnet152", choices=sorted(MANIFESTS))
    ap.add_argument("--photo", default=os.path.join(ROOT, "tests/data/chelsea.jpg"))
    ap.add_argument("--requests", type=int, default=20, help="per measurement at c=1 (twice that under load)")
    ap.add_argument("--out", help="where the JSON and plots go (default docs/bench)")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    configs = [(cores, 1, None, "default: a session per core, one thread each"),
               (cores, 1, 0, "the default, plus every core for a compute that runs alone"),
               (1, cores, None, "one session, every core (ONNX Runtime's and Triton's default)"),
               (cores, cores, None, "a session per core, every core each")]
    rows = []
    for k, (sessions, threads, solo, what) in enumerate(configs):
        step(f"configuration {k + 1} of {len(configs)}: {what}")
        rows.append((sessions, threads, what, *measure(a, sessions, threads, solo, cores)))
        print(f"sessions={sessions} intra_threads={threads} solo_intra_threads={solo}: done", flush=True)
    base_p50, base_rates = rows[0][3], rows[0][4]
    print(f"\n{a.model} on ONNX Runtime, {cores} CPUs, {os.path.relpath(a.photo, ROOT)}; ratios against the default")
    print(f"{'sessions':>8}{'threads':>8}{'p50 c=1':>16}{f'req/s c={cores}':>20}{f'req/s c={2 * cores}':>20}   configuration")
    for sessions, threads, what, p50, rates in rows:
        cells = [f"{p50:.1f} ms {p50 / base_p50:.2f}x"] + [
            f"{r:.2f} {r / b:.2f}x" for r, b in zip(rates, base_rates)]
        print(f"{sessions:>8}{threads:>8}{cells[0]:>16}{cells[1]:>20}{cells[2]:>20}   {what}")

    out = Report(f"threads-{a.model}", a.out, f"./dev bench threads --model {a.model}")
    label = lambda sessions, threads, what: f"{sessions} x {threads}: {what}"  # noqa: E731
    out.plot_bars("p50", f"{a.model} on ONNX Runtime: p50 at c=1, sessions x intra-op threads",
                  {label(s_, t, w): p50 for s_, t, w, p50, _ in rows})
    out.plot_bars("throughput", f"{a.model} on ONNX Runtime: requests/s at c={2 * cores}",
                  {label(s_, t, w): rates[1] for s_, t, w, _, rates in rows}, unit="req/s")
    out.save({"model": a.model, "photo": os.path.relpath(a.photo, ROOT), "cpus": cores,
              "configurations": [{"sessions": s_, "intra_threads": t, "what": w, "p50_ms": p50,
                                  "requests_per_s": {str(cores): rates[0], str(2 * cores): rates[1]}}
                                 for s_, t, w, p50, rates in rows]})


if __name__ == "__main__":
    main()
