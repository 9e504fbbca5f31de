"""Native baseline for the GPU benchmark: ResNet-152 through ONNX Runtime's Python API with the
CUDA execution provider, in-process, inputs from host memory (so the host-to-device copy is
included, as it is in Scoria).

Usage: gpu_native.py <model.onnx> [--batches 1,8,64,128] [--seconds 3]
Prints one JSON object: per batch size, p50 and p99 latency (ms) of one run and throughput
(images/s) when runs follow each other; then `batch128x2`: two sessions running batches of
128 from two threads at once, as Scoria's two batch workers do.
"""

import argparse
import json
import os
import threading
import time

# As the host does: ONNX Runtime's telemetry off unless asked for, set before it initialises.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batches", default="1,8,64,128")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--conv-algo-search", default="EXHAUSTIVE", choices=["HEURISTIC", "EXHAUSTIVE", "DEFAULT"])
    ap.add_argument("--device", default="gpu", choices=["gpu", "cpu"], help="cpu: only to try the script out")
    args = ap.parse_args()
    providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": args.conv_algo_search}), "CPUExecutionProvider"]
    session = ort.InferenceSession(args.model, providers=providers if args.device == "gpu" else providers[1:])
    if args.device == "gpu" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit(f"CUDA execution provider not active: {session.get_providers()}")
    rng = np.random.default_rng(0)
    out = {"model": args.model, "onnxruntime": ort.__version__, "conv_algo_search": args.conv_algo_search}
    for b in [int(x) for x in args.batches.split(",")]:
        x = rng.standard_normal((b, 3, 224, 224), dtype=np.float32)
        for _ in range(5):
            session.run(None, {"input": x})
        times = []
        end = time.perf_counter() + args.seconds
        while time.perf_counter() < end or len(times) < 10:
            t = time.perf_counter()
            session.run(None, {"input": x})
            times.append(time.perf_counter() - t)
        times.sort()
        out[f"batch{b}"] = {
            "p50_ms": round(times[len(times) // 2] * 1e3, 3),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3, 3),
            "img_per_s": round(b * len(times) / sum(times), 1),
        }
    if args.device == "gpu":
        out["batch128x2"] = concurrent(args, providers, 128, 2, rng)
    print(json.dumps(out))


def concurrent(args, providers, batch, streams, rng):
    """Throughput of `streams` sessions each running `batch`-sized runs from its own thread."""
    sessions = [ort.InferenceSession(args.model, providers=providers) for _ in range(streams)]
    x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
    for s in sessions:
        for _ in range(3):
            s.run(None, {"input": x})
    counts = [0] * streams

    def loop(i, end):
        while time.perf_counter() < end:
            sessions[i].run(None, {"input": x})
            counts[i] += 1

    start = time.perf_counter()
    end = start + args.seconds
    threads = [threading.Thread(target=loop, args=(i, end)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"img_per_s": round(batch * sum(counts) / (time.perf_counter() - start), 1)}


if __name__ == "__main__":
    main()
