"""The Open Inference Protocol's cost: EfficientNet-Lite0 on a preprocessed tensor through
`POST /v2/models/efficientnet-lite0/infer` (REST, Triton's binary tensor data, as
`tritonclient.http` sends it) and through gRPC's `ModelInfer` (`raw_input_contents`, as
`tritonclient.grpc` sends it), against the same tensor through the `/classify` route
(`application/x-tensor`), in one `scoria up`, one run.

The route runs the image-classify function around the model (a fresh instance, the softmax
and its top five as JSON); the protocol runs the model alone and sends back the 1,000 logits
as binary data. Both go through the same admission, batching and model. oha (a real HTTP load
generator) sends the same body over and over: latency at concurrency 1, throughput at 1 and 8.
oha speaks no gRPC, so gRPC's figures come from grpcio's own client sending one prebuilt
message from 1 and 8 threads; the REST route is measured that way too (`http.client`), so
that gRPC is compared with a client of the same kind.

Prints each figure and the ratio protocol/route (target: p50 and throughput within 1.05x of
the route's), writes `<out>/oip.json` and plots of latency and throughput.

Usage (./dev bench oip runs this): python bench/oip.py [--requests 300] [--seconds 10]
"""

import argparse
import http.client
import json
import os
import statistics
import tempfile
import threading
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from common import free_port, oha, scoria_up
from report import Report, step

MODEL = "efficientnet-lite0"
LEVELS = (1, 8)


def bodies(tmp):
    """The same 1x3x224x224 float32 tensor as the route's body and as the protocol's."""
    rng = np.random.default_rng(7)
    tensor = rng.uniform(-1, 1, size=(1, 3, 224, 224)).astype(np.float32).tobytes()
    route = os.path.join(tmp, "tensor.bin")
    with open(route, "wb") as f:
        f.write(tensor)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(tensor)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    oip = os.path.join(tmp, "oip.bin")
    with open(oip, "wb") as f:
        f.write(header + tensor)
    return route, oip, len(header)


def python_client(call, requests, seconds, level):
    """Latency of `requests` calls one at a time (c=1), or throughput of `level` threads
    calling for `seconds`; `call` makes one request on its own connection object."""
    if level == 1:
        lat = []
        for _ in range(requests):
            t = time.perf_counter()
            call()
            lat.append(time.perf_counter() - t)
        lat.sort()
        return {"p50_ms": statistics.median(lat) * 1e3, "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
                "requests_per_s": len(lat) / sum(lat)}
    done, lat, stop = [0] * level, [[] for _ in range(level)], time.perf_counter() + seconds

    def worker(i):
        while time.perf_counter() < stop:
            t = time.perf_counter()
            call()
            lat[i].append(time.perf_counter() - t)
            done[i] += 1
    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(level)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    all_lat = sorted(x for w in lat for x in w)
    return {"p50_ms": statistics.median(all_lat) * 1e3, "p99_ms": all_lat[int(len(all_lat) * 0.99) - 1] * 1e3,
            "requests_per_s": sum(done) / (time.perf_counter() - start)}


def grpc_call(address, tensor):
    """One ModelInfer on a channel of its own thread, as tritonclient.grpc frames it."""
    local = threading.local()
    request = service_pb2.ModelInferRequest(
        model_name=MODEL,
        inputs=[service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 3, 224, 224])],
        raw_input_contents=[tensor])

    def call():
        if not hasattr(local, "stub"):
            channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 1 << 26)])
            local.stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        local.stub.ModelInfer(request)
    return call


def http_call(base, body, ctype):
    """One POST of `body` to the x-tensor route, on a keep-alive connection of its own thread."""
    host, port = base.removeprefix("http://").split(":")
    local = threading.local()

    def call():
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host, int(port))
        local.conn.request("POST", "/classify", body=body, headers={"Content-Type": ctype})
        r = local.conn.getresponse()
        r.read()
        assert r.status == 200, r.status
    return call


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--bin-dir", required=True, help="folder holding scoria")
    ap.add_argument("--oha", required=True)
    ap.add_argument("--backend", default="tract", choices=["tract", "onnxruntime", "auto"])
    ap.add_argument("--out", help="where the JSON and plots go (default docs/bench)")
    a = ap.parse_args()

    grpc_address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp, \
            scoria_up(os.path.join(a.bin_dir, "scoria"),
                      extra=["--backend", a.backend, "--grpc-listen", grpc_address]) as base:
        route_body, oip_body, header_length = bodies(tmp)
        paths = {
            "route": (f"{base}/classify", route_body, "application/x-tensor", []),
            "protocol": (f"{base}/v2/models/{MODEL}/infer", oip_body, "application/octet-stream",
                         ["-H", f"Inference-Header-Content-Length: {header_length}"]),
        }
        results = {name: {} for name in paths}
        for name, (url, body, ctype, headers) in paths.items():
            oha(a.oha, url, body, ctype, ["-n", "30", "-c", "1", *headers])  # warm-up
        # Alternate the two, level by level, so a drift of the machine hits both alike.
        for c in LEVELS:
            for name, (url, body, ctype, headers) in paths.items():
                if c == 1:
                    step(f"{name}: {a.requests} requests one at a time")
                    d = oha(a.oha, url, body, ctype, ["-n", str(a.requests), "-c", "1", *headers])
                else:
                    step(f"{name}: {a.seconds} s at c={c}")
                    d = oha(a.oha, url, body, ctype, ["-z", f"{a.seconds}s", "-c", str(c), *headers])
                results[name][c] = {
                    "p50_ms": d["latencyPercentiles"]["p50"] * 1e3,
                    "p99_ms": d["latencyPercentiles"]["p99"] * 1e3,
                    "requests_per_s": d["summary"]["requestsPerSec"],
                }
        # gRPC, and the route again with a Python client of the same kind.
        tensor = open(route_body, "rb").read()
        clients = {"route, python client": http_call(base, tensor, "application/x-tensor"),
                   "grpc, python client": grpc_call(grpc_address, tensor)}
        for name, call in clients.items():
            results[name] = {}
            for _ in range(10):
                call()  # warm-up
        for c in LEVELS:
            for name, call in clients.items():
                step(f"{name}: " + (f"{a.requests} requests one at a time" if c == 1 else f"{a.seconds} s at c={c}"))
                results[name][c] = python_client(call, a.requests, a.seconds, c)

    route, proto = results["route"], results["protocol"]
    print(f"EfficientNet-Lite0, a preprocessed 1x3x224x224 tensor, {a.backend}; {os.cpu_count()} CPUs")
    print(f"{'metric':<28}{'/classify':>12}{'/v2 infer':>12}{'ratio':>9}")
    rows = [(f"latency p50, c={c} (ms)", "p50_ms", c) for c in LEVELS]
    rows += [(f"throughput, c={c} (req/s)", "requests_per_s", c) for c in LEVELS]
    verdicts = []
    for label, key, c in rows:
        r, p = route[c][key], proto[c][key]
        print(f"{label:<28}{r:>12.2f}{p:>12.2f}{p / r:>8.3f}x")
        ratio = p / r if key == "p50_ms" else r / p
        verdicts.append(ratio <= 1.05)
    print("\nthe protocol is within 1.05x of the route on every figure" if all(verdicts)
          else "\nthe protocol misses the 1.05x target on at least one figure")

    route_py, grpc_py = results["route, python client"], results["grpc, python client"]
    print("\nwith grpcio and http.client (Python, one connection per thread)")
    print(f"{'metric':<28}{'/classify':>12}{'gRPC infer':>12}{'ratio':>9}")
    for label, key, c in rows:
        r, p = route_py[c][key], grpc_py[c][key]
        print(f"{label:<28}{r:>12.2f}{p:>12.2f}{p / r:>8.3f}x")

    report = Report("oip", a.out)
    subject = f"{MODEL}, preprocessed tensor, {a.backend}"
    series = {"/classify (x-tensor, oha)": route, "/v2 infer (binary, oha)": proto,
              "/classify (python)": route_py, "gRPC ModelInfer (python)": grpc_py}
    report.plot_latency(f"{subject}: latency",
                        {k: {c: {"p50": v["p50_ms"], "p99": v["p99_ms"]} for c, v in d.items()} for k, d in series.items()})
    report.plot_throughput(f"{subject}: throughput",
                           {k: {c: v["requests_per_s"] for c, v in d.items()} for k, d in series.items()})
    report.save({"model": MODEL, "backend": a.backend,
                 "route": {str(c): v for c, v in route.items()},
                 "protocol": {str(c): v for c, v in proto.items()},
                 "route_python_client": {str(c): v for c, v in route_py.items()},
                 "grpc_python_client": {str(c): v for c, v in grpc_py.items()}})


if __name__ == "__main__":
    main()
