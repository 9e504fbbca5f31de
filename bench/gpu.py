"""GPU benchmark: ResNet-152 through Scoria on CUDA at concurrency 1, 8, 64 and 256, with
dynamic batching on and off, against ONNX Runtime's Python API with CUDA (bench/gpu_native.py)
on the same machine in the same run. fp16 and fp32.

Run on a GPU machine with the CUDA build of ONNX Runtime (ORT_DYLIB_PATH set, and
`onnxruntime` importable for the native baseline), a built `scoria`, `image_classify.wasm`
and `oha`. `./dev bench gpu` does it here; `bench/gpu-device.sh` on a lent GPU machine.

Usage: gpu.py --scoria BIN --oha BIN [--out DIR] [--seconds 6] [--quick]
Results are written as they come to DIR/gpu-results.json, then printed as tables with the
ratios against the native figures.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, card_table, free_port, machine, oha, reused, server_timing_medians  # noqa: E402

CONCURRENCY = [1, 8, 64, 256]
# The card's `[onnxruntime]` lines for CUDA graphs, the default: a worker thread per session
# (4), batched or not.
GRAPH = ['cuda_conv_algo_search = "heuristic"', "cuda_graph = true"]


def metrics(base):
    """`{(name, model): value}` for the batch and inference histograms' sums and counts."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        for name in ("scoria_batch_size", "scoria_inference_duration_seconds", "scoria_batch_queue_delay_seconds"):
            for suffix in ("_sum", "_count"):
                if line.startswith(name + suffix + "{"):
                    out[name + suffix] = out.get(name + suffix, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


class Host:
    """`scoria up --device gpu` on a free port, its log kept in the output folder."""

    def __init__(self, scoria, manifest, batching, log_path, device, ready_timeout=240, extra=()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [scoria, "up", "--manifest", os.path.join(ROOT, manifest), "--device", device, "--batching", batching,
             "--backend", "onnxruntime",
             "--listen", f"127.0.0.1:{self.port}", "--max-concurrency", "512", "--max-queue", "4096",
             *extra],
            stdout=self.log, stderr=subprocess.STDOUT,
            # Per-run timings of the batcher (merge, backend) go to the log for diagnosis.
            env={**os.environ, "RUST_LOG": "info,scoria::nn::batch=debug"})
        deadline = time.time() + ready_timeout
        while True:
            try:
                if urllib.request.urlopen(f"{self.base}/readyz", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise SystemExit(f"scoria did not become ready; see {log_path}")
            time.sleep(0.25)

    def stop(self):
        """SIGTERM, as Kubernetes stops a pod; returns how the host exited: its exit code and
        the CUDA failures and aborts its log shows (a clean stop has none)."""
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            text = f.read()
        return {"code": self.proc.returncode, "cuda_failures": text.count("CUDA failure"),
                "aborted": "terminate called" in text}


def batch_log(log_path, offset):
    """From the host's `batch run` debug lines after `offset`: the mean time to put a batch's
    inputs together in ms (merged, or written straight into a backend's staging buffers: the
    host's own copying), the share of rows run that were padding, and the log's new end."""
    units = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
    with open(log_path, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        text = f.read()
        end = f.tell()
    merged, items, rows = [], 0, 0
    for line in text.splitlines():
        if "batch run" not in line or "merged=" not in line:
            continue
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        value = fields["merged"]
        num = value.rstrip("nsuµm")
        merged.append(float(num) * units.get(value[len(num):], 0.0))
        if fields.get("items", "").isdigit() and fields.get("size", "").isdigit():
            items += int(fields["items"])
            rows += int(fields["size"])
    mean = sum(merged) / len(merged) if merged else None
    padding = 1 - items / rows if rows else None
    return mean, padding, end


class SplitSampler:
    """Requests sent one at a time beside the load, from 1 s into it until 1 s before its end
    (`seconds` long): the medians of their `Server-Timing` steps (`queue`, `body`, `instance`,
    `inference`, `total`) and of the time the client waited (`client`), so that the latency
    under load splits into the host's steps and what is outside the host (HTTP, the load
    generator sharing the CPUs)."""

    def __init__(self, url, body_path, ctype, seconds, n=20):
        with open(body_path, "rb") as f:
            body = f.read()
        self.split = None
        until = time.perf_counter() + max(seconds - 1, 1.5)
        self.thread = threading.Thread(target=self._sample, args=(url, body, ctype, n, until), daemon=True)
        self.thread.start()

    def _sample(self, url, body, ctype, n, until):
        time.sleep(1)
        try:
            medians = server_timing_medians(url, body, ctype, n, until)
            self.split = {k: round(v, 2) for k, v in medians.items()}
        except (OSError, SystemExit) as e:
            self.split = {"error": str(e)}

    def result(self):
        self.thread.join(60)
        return self.split


def host_log(out, name):
    """Where the host serving configuration `name` writes its log."""
    return os.path.join(out, f"scoria-{name.replace('/', '-')}.log")


def scoria_runs(a, variant, batching, label, card, plan, results, save, reuse=None):
    """One host, its card's `[onnxruntime]` given `card` lines (and with `reuse`, the function's
    `instance_reuse`); for each `(input, levels)` in `plan`, oha at each concurrency level."""
    manifest = "spin-resnet152.toml" if variant == "fp32" else "spin-resnet152-fp16.toml"
    name = f"{variant}/batching-{batching}/{label}"
    log_path = host_log(a.out, name)
    model = "resnet152" if variant == "fp32" else "resnet152-fp16"
    with contextlib.ExitStack() as stack:
        models = stack.enter_context(card_table(model, "onnxruntime", card))
        if reuse:
            manifest = stack.enter_context(reused(manifest, "image-classify", reuse))
        started = time.time()
        host = Host(a.scoria, manifest, batching, log_path, a.device, a.ready_timeout,
                    ["--models-dir", models])
        results["scoria"][f"{name}/ready_s"] = round(time.time() - started, 1)
    offset = 0
    try:
        url = f"{host.base}/classify"
        for kind, levels in plan:
            body, ctype = (a.photo, "image/jpeg") if kind == "jpeg" else (a.tensor, "application/x-tensor")
            for c in levels:
                # Warm-up, and the queue of the previous level drained.
                oha(a.oha, url, body, ctype, ["-z", "2s", "-w", "-c", str(c)])
                _, _, offset = batch_log(log_path, offset)
                before = metrics(host.base)
                sampler = SplitSampler(url, body, ctype, a.seconds)
                d = oha(a.oha, url, body, ctype, ["-z", f"{a.seconds}s", "-w", "-c", str(c)])
                split = sampler.result()
                after = metrics(host.base)
                delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                runs = max(delta.get("scoria_batch_size_count", 0.0), 1.0)
                mean_batch = delta.get("scoria_batch_size_sum", 0.0) / runs
                mean_run_ms = delta.get("scoria_inference_duration_seconds_sum", 0.0) / runs * 1e3
                merge, padding, offset = batch_log(log_path, offset)
                results["scoria"][f"{name}/{kind}/c{c}"] = {
                    "img_per_s": round(d["summary"]["requestsPerSec"], 1),
                    "p50_ms": round(d["latencyPercentiles"]["p50"] * 1e3, 2),
                    "p99_ms": round(d["latencyPercentiles"]["p99"] * 1e3, 2),
                    "mean_batch": round(mean_batch, 1),
                    "mean_run_ms": round(mean_run_ms, 2),
                    # Of which the host's copying of the callers' inputs into one batch.
                    "mean_merge_ms": round(merge, 2) if merge is not None else None,
                    # Rows run that were padding (zeros up to a warmed size), of all rows run.
                    "padding": round(padding, 3) if padding is not None else None,
                    # What one stream of runs of this size would sustain: the model's side.
                    "run_img_per_s": round(mean_batch / mean_run_ms * 1e3, 1) if mean_run_ms else None,
                    "mean_queue_ms": round(
                        delta.get("scoria_batch_queue_delay_seconds_sum", 0.0)
                        / max(delta.get("scoria_batch_queue_delay_seconds_count", 0.0), 1.0) * 1e3, 2),
                    # Medians of the host's Server-Timing steps (and the client's wait) for
                    # requests sent one at a time beside the load: where a request's time goes.
                    "split_ms": split,
                }
                save()
    finally:
        results["scoria"][f"{name}/exit"] = host.stop()
        save()


SWAP_TOKEN = "gpu-benchmark-admin-token-0001"


def swap_under_load(a, results, save, seconds=60, swaps=2):
    """Hot swaps of ResNet-152 fp16 on the GPU while it serves oha at c=64: a new version loads
    beside the serving one (its CUDA graphs captured while the old one runs, under the host's
    capture lock) and replaces it. Reports every status code oha got, how long each `PUT`
    took, the load's throughput against the same load without a swap in the same host (the
    10 s before the load that spans the `PUT`s), and the latencies of requests sent one at a
    time beside the load, before and during the swaps: the pauses the captures cause."""
    name = "fp16/batching-on/swap-under-load"
    log_path = host_log(a.out, name)
    weights = os.path.join(ROOT, "models/resnet152-fp16/resnet152-fp16.onnx")
    token = os.path.join(a.out, "admin-token.txt")
    with open(token, "w") as f:
        f.write(SWAP_TOKEN + "\n")
    # The models folder lives as long as the host: a swap reads the card from it.
    models_dir = contextlib.ExitStack()
    models = models_dir.enter_context(card_table("resnet152-fp16", "onnxruntime", GRAPH))
    try:
        host = Host(a.scoria, "spin-resnet152-fp16.toml", "on", log_path, a.device, a.ready_timeout,
                    ["--admin-token-file", token, "--models-dir", models])
    except BaseException:
        models_dir.close()
        raise
    c = 8 if a.device == "cpu" else 64
    url = f"{host.base}/classify"
    with open(a.tensor, "rb") as f:
        body = f.read()

    def classify():
        req = urllib.request.Request(url, data=body, headers={"content-type": "application/x-tensor"})
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                answer, status = json.loads(r.read())["predictions"], r.status
        except urllib.error.HTTPError as e:
            answer, status = None, e.code
        except OSError as e:
            answer, status = None, str(e)
        return time.perf_counter() - t, status, answer

    def oha_json(duration):
        return oha(a.oha, url, a.tensor, "application/x-tensor", ["-z", f"{duration}s", "-w", "-c", str(c)],
                   strict=False)

    try:
        _, _, first = classify()

        def same(answer):
            """The first answer's top class, and its top five's scores within 0.01: batches of
            other sizes round fp16 differently, so scores move in the third decimal."""
            if not answer or answer[0]["index"] != first[0]["index"]:
                return False
            scores = {p["index"]: p["score"] for p in answer}
            return all(abs(scores.get(p["index"], -1.0) - p["score"]) <= 0.01 for p in first)

        oha_json(2)  # warm-up
        before = oha_json(max(seconds // 6, 3))
        probes, puts, loaded = [], [], {}
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                latency, status, answer = classify()
                probes.append((time.perf_counter(), latency, status, same(answer)))

        def load():
            loaded["oha"] = oha_json(seconds)

        threads = [threading.Thread(target=probe, daemon=True), threading.Thread(target=load, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(2)
        calm_until = time.perf_counter()
        with open(weights, "rb") as f:
            new = f.read()
        for _ in range(swaps):
            req = urllib.request.Request(f"{host.base}/admin/models/resnet152-fp16", data=new, method="PUT",
                                         headers={"content-type": "application/octet-stream",
                                                  "authorization": f"Bearer {SWAP_TOKEN}"})
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = f"{e.code} {e.read()[:300]!r}"
            puts.append((t, time.perf_counter(), status))
        threads[1].join(seconds + 120)
        stop.set()
        threads[0].join(130)
        d = loaded.get("oha", {})
        during = [p for p in probes if any(s <= p[0] and p[0] - p[1] <= e for s, e, _ in puts)]
        calm = [p for p in probes if p[0] < calm_until]

        def ms(xs, q):
            return round(float(np.percentile([x[1] for x in xs], q)) * 1e3, 2) if xs else None

        r = {
            "concurrency": c,
            "put_s": [round(e - s, 1) for s, e, _ in puts],
            "put_status": [s for _, _, s in puts],
            "load_codes": d.get("statusCodeDistribution"),
            "load_errors": d.get("errorDistribution") or d.get("error"),
            "load_img_per_s": round(d["summary"]["requestsPerSec"], 1) if "summary" in d else None,
            "no_swap_img_per_s": round(before["summary"]["requestsPerSec"], 1) if "summary" in before else None,
            "load_p99_ms": round(d["latencyPercentiles"]["p99"] * 1e3, 1) if "latencyPercentiles" in d else None,
            "load_max_ms": round(d["summary"]["slowest"] * 1e3, 1) if "summary" in d else None,
            "probe_codes": sorted({str(p[2]) for p in probes}),
            # Answers unlike the first one's (by `same`), of all, before and during the swaps.
            "probe_other_answers": {"before": sum(1 for p in calm if p[2] == 200 and not p[3]),
                                    "during": sum(1 for p in during if p[2] == 200 and not p[3]),
                                    "all": sum(1 for p in probes if p[2] == 200 and not p[3])},
            "probe_before": {"n": len(calm), "p50_ms": ms(calm, 50), "max_ms": ms(calm, 100)},
            "probe_during": {"n": len(during), "p50_ms": ms(during, 50), "p99_ms": ms(during, 99),
                             "max_ms": ms(during, 100)},
            "probe_after": same(classify()[2]),
        }
        results["scoria"][f"{name}/c{c}"] = r
        save()
    finally:
        results["scoria"][f"{name}/exit"] = host.stop()
        models_dir.close()
        save()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scoria", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--out", default=os.path.join(ROOT, ".cache", "bench-gpu"))
    ap.add_argument("--photo", default=os.path.join(ROOT, "tests/data/chelsea.jpg"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--python", default=sys.executable, help="Python with onnxruntime-gpu, for the baseline")
    ap.add_argument("--quick", action="store_true",
                    help="every level for batched fp16 tensors (with and without CUDA graphs), the ends elsewhere")
    ap.add_argument("--native-searches", default="exhaustive,heuristic",
                    help="cuDNN searches for the baseline, comma-separated (Scoria's default is heuristic)")
    ap.add_argument("--configs", default="",
                    help="only these Scoria configurations, comma-separated (e.g. fp16/batching-on/cuda-graph)")
    ap.add_argument("--native-variants", default="fp16,fp32", help="models for the native baseline")
    ap.add_argument("--ready-timeout", type=float, default=240,
                    help="seconds a host may take to load and warm before its configuration is given up")
    ap.add_argument("--device", default="gpu", choices=["gpu", "cpu"],
                    help="cpu: a small dry run of this script on a machine without a GPU")
    ap.add_argument("--swap", action="store_true",
                    help="also swap the fp16 model twice through the admin API while it serves c=64")
    ap.add_argument("--swap-seconds", type=int, default=60, help="how long the load beside the swaps runs")
    a = ap.parse_args()
    dry = a.device == "cpu"
    concurrency = [1, 8] if dry else CONCURRENCY
    os.makedirs(a.out, exist_ok=True)
    results = {"photo": os.path.relpath(a.photo, ROOT), "seconds": a.seconds, "native": {}, "scoria": {},
               # For the plots, which bench/gpu_plot.py draws from this file on another machine.
               "machine": f"{gpu_name()}, {machine()}", "date": time.strftime("%Y-%m-%d")}
    # A preprocessed image as a client that sends tensors would: float32 [1, 3, 224, 224].
    a.tensor = os.path.join(a.out, "input.f32")
    np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32).tofile(a.tensor)
    path = os.path.join(a.out, "gpu-results.json")

    def save():
        with open(path, "w") as f:
            json.dump(results, f, indent=1)

    models = {"fp16": "models/resnet152-fp16/resnet152-fp16.onnx", "fp32": "models/resnet152/resnet152.onnx"}
    for variant, onnx in models.items():
        if variant not in a.native_variants.split(","):
            continue
        for search in a.native_searches.upper().split(","):
            r = subprocess.run([a.python, os.path.join(ROOT, "bench/gpu_native.py"), os.path.join(ROOT, onnx),
                                "--conv-algo-search", search, "--device", a.device,
                                *(["--batches", "1,8", "--seconds", "1"] if dry else ["--seconds", "2", "--batches",
                                                                                       "1,8,32,128"])],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"native {variant} {search.lower()} failed:\n{r.stderr[-3000:]}", flush=True)
                continue
            results["native"][f"{variant}/{search.lower()}"] = json.loads(r.stdout)
            save()
            print(f"native {variant} {search.lower()}: {r.stdout.strip()}", flush=True)
    full = [("tensor", concurrency), ("jpeg", concurrency)]
    ends = [concurrency[0], concurrency[-1]]
    # Plain sessions (CUDA graphs are on by default on a GPU).
    heuristic = ['cuda_conv_algo_search = "heuristic"', "cuda_graph = false"]
    exhaustive_graph = ['cuda_conv_algo_search = "exhaustive"', "cuda_graph = true"]
    # (variant, batching, label, the card's [onnxruntime] lines): plan. The quick plan is
    # every level for fp16 tensors batched, with and without CUDA graphs, and the ends
    # elsewhere; JPEG at the top level shows the front end's ceiling.
    configs = [
        ("fp16", "on", "heuristic", heuristic, [("tensor", concurrency), ("jpeg", ends[1:])]),
        ("fp16", "on", "cuda-graph", GRAPH, [("tensor", concurrency), ("jpeg", ends[1:])]),
        ("fp16", "off", "heuristic", heuristic, [("tensor", ends)]),
        ("fp16", "off", "cuda-graph", GRAPH, [("tensor", [1, 8] if dry else [1, 8, 256])]),
        ("fp16", "on", "exhaustive", ['cuda_conv_algo_search = "exhaustive"', "cuda_graph = false"],
         [("tensor", ends)]),
        ("fp32", "on", "heuristic", heuristic, [("tensor", ends[1:])]),
        ("fp32", "on", "cuda-graph", GRAPH, [("tensor", ends)]),
        ("fp32", "off", "heuristic", heuristic, [("tensor", ends[:1])]),
        # cuDNN's exhaustive search picks the kernels that the graphs then replay.
        ("fp16", "off", "cuda-graph-exhaustive", exhaustive_graph, [("tensor", ends[:1])]),
        ("fp16", "on", "cuda-graph-exhaustive", exhaustive_graph, [("tensor", ends)]),
        # Other numbers of batch workers (and sessions) than the default four.
        ("fp16", "on", "cuda-graph-2-workers", GRAPH + ["sessions = 2"], [("tensor", concurrency[2:])]),
        ("fp16", "on", "cuda-graph-3-workers", GRAPH + ["sessions = 3"], [("tensor", concurrency[2:])]),
        ("fp16", "on", "cuda-graph-6-workers", GRAPH + ["sessions = 6"], [("tensor", concurrency[2:])]),
        # Instances serving 16 requests each: less host CPU per request for the front end.
        ("fp16", "on", "cuda-graph-reuse", GRAPH, [("tensor", concurrency[2:]), ("jpeg", ends[1:])], 16),
    ]
    if a.configs:
        configs = [c for c in configs if f"{c[0]}/batching-{c[1]}/{c[2]}" in a.configs.split(",")]
    elif a.quick:
        # The exhaustive search runs at load for every padded size and session: minutes.
        configs = [c for c in configs if "exhaustive" not in c[2] and "workers" not in c[2]]
    for variant, batching, label, card, plan, *reuse in configs:
        name = f"{variant}/batching-{batching}/{label}"
        try:
            scoria_runs(a, variant, batching, label, card, plan if a.quick else full, results, save, *reuse)
            print(f"scoria {name} done", flush=True)
        except (SystemExit, subprocess.CalledProcessError, OSError) as e:
            # Keep what the other configurations measure; the log says what went wrong.
            log = host_log(a.out, name)
            tail = open(log).read()[-3000:] if os.path.exists(log) else ""
            print(f"scoria {name} failed: {e}\n{tail}", flush=True)
            results["scoria"][f"{name}/error"] = str(e)
            save()
    if a.swap:
        try:
            swap_under_load(a, results, save, seconds=min(a.swap_seconds, 20) if dry else a.swap_seconds)
            print("scoria swap under load done", flush=True)
        except (SystemExit, OSError, KeyError, ValueError) as e:
            print(f"scoria swap under load failed: {e}", flush=True)
            results["scoria"]["fp16/batching-on/swap-under-load/error"] = str(e)
            save()
    report(results)


def report(results):
    print(f"\nResNet-152 on {gpu_name()}, photo {results['photo']}, {results['seconds']} s per level")
    print("native ONNX Runtime (Python, CUDA EP, host-to-device copy included):")
    for key, r in results["native"].items():
        two = f"; two sessions at once {r['batch128x2']['img_per_s']:.0f} img/s" if "batch128x2" in r else ""
        print(f"  {key:<16} batch 1 p50 {r['batch1']['p50_ms']:.2f} ms; {biggest(r)} "
              f"{r[biggest(r)]['img_per_s']:.0f} img/s{two}")
    print(f"\n{'scoria':<44}{'img/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'batch':>7}{'run ms':>8}{'merge':>7}"
          f"{'run img/s':>10}   vs native")
    for key, r in results["scoria"].items():
        variant = key.split("/")[0]
        if key.endswith("/error") or key.endswith("/ready_s") or key.endswith("/exit"):
            print(f"{key:<44}{r}")
            continue
        if "swap-under-load" in key:
            print(f"{key:<44}")
            for k, v in r.items():
                print(f"{'':<6}{k}: {v}")
            continue
        native = results["native"].get(f"{variant}/exhaustive")
        vs = ""
        if native and key.endswith("/c1"):
            vs = f"p50 {r['p50_ms'] / native['batch1']['p50_ms']:.2f}x batch-1 latency"
        elif native:
            vs = f"{r['img_per_s'] / native[biggest(native)]['img_per_s']:.2f}x {biggest(native)} throughput"
        run_rate = f"{r['run_img_per_s']:>10.0f}" if r.get("run_img_per_s") else f"{'-':>10}"
        merge = f"{r['mean_merge_ms']:>7.2f}" if r.get("mean_merge_ms") is not None else f"{'-':>7}"
        print(f"{key:<44}{r['img_per_s']:>8.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['mean_batch']:>7.1f}"
              f"{r['mean_run_ms']:>8.2f}{merge}{run_rate}   {vs}")
        if r.get("padding") is not None:
            print(f"{'':<6}padding: {r['padding'] * 100:.1f}% of the rows run")
        if r.get("split_ms"):
            print(f"{'':<6}split (ms, medians of requests beside the load): "
                  + ", ".join(f"{k} {v}" for k, v in r["split_ms"].items()))


def biggest(native):
    """The key of the largest batch the native run measured (`batch128` on a GPU)."""
    return max((k for k in native if k.startswith("batch") and k[5:].isdigit()), key=lambda k: int(k[5:]))


def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip() or "unknown GPU"
    except OSError:
        return "unknown GPU"


if __name__ == "__main__":
    main()
