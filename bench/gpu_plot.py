"""Plots of a GPU benchmark run, drawn from its `gpu-results.json` on any machine.

bench/gpu.py runs where the GPU is, often a lent machine without matplotlib, and writes every
figure to `gpu-results.json` with the GPU, the CPUs and the date. This draws them as the
other benchmarks' plots are drawn (see report.py): for tensor bodies, latency percentiles
and throughput against concurrency for each Scoria configuration beside native ONNX Runtime
at the same batch size, and where a request's time goes at each configuration's highest
concurrency.

Usage: python bench/gpu_plot.py .gpu/out/gpu-results.json [--out docs/bench]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import Report  # noqa: E402

STEPS = ["queue", "body", "instance", "inference", "guest and hand-offs", "HTTP and client"]


def levels(results, kind="tensor"):
    """{configuration: {concurrency: figures}} of the Scoria runs with `kind` bodies."""
    out = {}
    for key, r in results["scoria"].items():
        parts = key.split("/")
        if len(parts) < 3 or parts[-2] != kind or not parts[-1].startswith("c") or not isinstance(r, dict):
            continue
        out.setdefault("/".join(parts[:-2]), {})[int(parts[-1][1:])] = r
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", help="gpu-results.json written by bench/gpu.py")
    ap.add_argument("--out", help="where the plots go (default docs/bench)")
    a = ap.parse_args()
    with open(a.results) as f:
        results = json.load(f)
    runs = levels(results)
    if not runs:
        sys.exit(f"{a.results} holds no Scoria runs with tensor bodies")
    report = Report("gpu", a.out, "bench/gpu-device.sh, then bench/gpu_plot.py",
                    ran_on=results.get("machine"), date=results.get("date"))
    latency = {f"Scoria {name}": {c: {"p50": r["p50_ms"], "p99": r["p99_ms"]} for c, r in by_c.items()}
               for name, by_c in runs.items()}
    throughput = {f"Scoria {name}": {c: r["img_per_s"] for c, r in by_c.items()} for name, by_c in runs.items()}
    for variant, native in results.get("native", {}).items():
        batches = {int(k[5:]): v for k, v in native.items() if k.startswith("batch") and k[5:].isdigit()}
        if 1 in batches:
            latency[f"native {variant}, batch 1"] = {1: {"p50": batches[1].get("p50_ms"),
                                                         "p99": batches[1].get("p99_ms")}}
        throughput[f"native {variant}, batch = concurrency"] = {b: v["img_per_s"] for b, v in batches.items()}
    report.plot_latency("ResNet-152 on CUDA, tensor bodies: latency", latency)
    report.plot_throughput("ResNet-152 on CUDA, tensor bodies: throughput", throughput, unit="images/s")
    split = {}
    for name, by_c in runs.items():
        top = max(by_c)
        st = by_c[top].get("split_ms") or {}
        if "total" not in st:
            continue
        bar = {k: st.get(k, 0.0) for k in ("queue", "body", "instance", "inference")}
        bar["guest and hand-offs"] = max(st["total"] - sum(bar.values()), 0.0)
        bar["HTTP and client"] = max(st.get("client", st["total"]) - st["total"], 0.0)
        split[f"{name}, c={top}"] = bar
    if split:
        report.plot_split("ResNet-152 on CUDA: where a request's time goes under load", split, STEPS)
    report.save(results)


if __name__ == "__main__":
    main()
