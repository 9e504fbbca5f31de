"""Tabular scoring against the Python server it replaces, in one run on one machine.

`/predict/<model>` (default `breast-cancer`: StandardScaler + GradientBoostingClassifier)
through `scoria up`, on tract and on ONNX Runtime, against `bench/peers/sklearn_flask.py`:
Flask under gunicorn with one sync worker per CPU, calling the same fitted pipeline's
`predict_proba`, as the reference architecture's scoring image does. Every side gets the same
body: one held-out record, `{"instances": [record]}`. Scoria runs as spin.toml configures the
predict components, `instance_reuse = 16` (the function keeps nothing between requests but
its parsed card), and once more on tract with a fresh instance per request, the host's
default, which shows what the fresh instance costs.

For each side: p50, p99 and requests per second at each concurrency (oha, `--seconds` each,
after a warm-up), then the targets as ratios: Scoria's p50 at concurrency 1 at most a third
of the Python server's, and its throughput at concurrency 8 at least 3x.

Usage: tabular.py --bin-dir DIR --oha BIN [--model breast-cancer] [--seconds 5] [--out DIR]
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, free_port, manifest_beside_root, oha, peer_process, scoria_up  # noqa: E402
from report import Report, step  # noqa: E402

LEVELS = (1, 2, 8)
# `instance_reuse`, as spin.toml sets it for the predict components; the last Scoria side
# takes a fresh instance per request (the host's default), to show what that costs here.
REUSE = 16


def manifest(model, reuse):
    """A manifest beside spin.toml serving `model` alone at /predict/<model>, each instance
    serving `reuse` requests (1: a fresh instance per request, the default)."""
    text = f"""spin_manifest_version = 2
[application]
name = "bench-tabular"
[[trigger.scoria]]
route = "/predict/{model}"
component = "predict"
[component.predict]
source = "functions/target/wasm32-wasip2/release/predict.wasm"
files = [{{ source = "models/{model}", destination = "/models/{model}" }}]
environment = {{ SCORIA_MODEL = "{model}" }}
[component.predict.tool.scoria]
models = ["{model}"]
instance_reuse = {reuse}
"""
    return manifest_beside_root(text, ".bench-tabular-")


def flask_peer(model, workers):
    """gunicorn serving bench/peers/sklearn_flask.py on a free port, until the block ends."""
    port = free_port()
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    return peer_process(
        [gunicorn, "--workers", str(workers), "--bind", f"127.0.0.1:{port}", "--chdir",
         os.path.join(ROOT, "bench", "peers"), "--log-level", "warning", "sklearn_flask:app"],
        f"http://127.0.0.1:{port}/predict",
        {"SCORIA_PIPELINE": os.path.join(ROOT, "models", model, "pipeline.joblib")})


def measure(a, url, body):
    """{concurrency: {p50, p99 (ms), rps}} for one server."""
    oha(a.oha, url, body, "application/json", ["-z", "1s", "-c", "2"])
    out = {}
    for c in LEVELS:
        d = oha(a.oha, url, body, "application/json", ["-z", f"{a.seconds}s", "-c", str(c)])
        pct = d["latencyPercentiles"]
        out[c] = {"p50": pct["p50"] * 1e3, "p99": pct["p99"] * 1e3, "rps": d["summary"]["requestsPerSec"]}
        step(f"  c={c}: p50 {out[c]['p50']:.2f} ms, p99 {out[c]['p99']:.2f} ms, {out[c]['rps']:.0f} req/s")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--oha", required=True)
    p.add_argument("--model", default="breast-cancer")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--out")
    a = p.parse_args()

    with open(os.path.join(ROOT, "models", a.model, "holdout.json")) as f:
        record = json.load(f)["records"][0]
    body_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump({"instances": [record]}, body_file)
    body_file.close()
    workers = os.cpu_count()
    sides = {}
    try:
        for backend, reuse in (("tract", REUSE), ("onnxruntime", REUSE), ("tract", 1)):
            name = f"Scoria ({backend})" if reuse == REUSE else f"Scoria ({backend}, fresh instances)"
            step(name)
            path = manifest(a.model, reuse)
            try:
                with scoria_up(os.path.join(a.bin_dir, "scoria"), path, ["--backend", backend]) as base:
                    sides[name] = measure(a, f"{base}/predict/{a.model}", body_file.name)
            finally:
                os.remove(path)
        step(f"Flask + gunicorn ({workers} workers) + scikit-learn")
        with flask_peer(a.model, workers) as url:
            sides[f"Flask, {workers} workers"] = measure(a, url, body_file.name)
    finally:
        os.remove(body_file.name)

    peer = sides[f"Flask, {workers} workers"]
    print(f"\n/predict/{a.model}, one record a request, {a.seconds} s per level")
    print(f"{'side':<30} " + " ".join(f"{'c=' + str(c) + ' p50':>10} {'p99':>8} {'req/s':>8}" for c in LEVELS))
    for name, levels in sides.items():
        print(f"{name:<30} " + " ".join(
            f"{levels[c]['p50']:>10.2f} {levels[c]['p99']:>8.2f} {levels[c]['rps']:>8.0f}" for c in LEVELS))
    print("\ntargets against the Python server: p50 at c=1 <= 0.33x, throughput at c=8 >= 3x")
    ratios = {}
    for name, levels in sides.items():
        if levels is peer:
            continue
        r = {"p50_c1": levels[1]["p50"] / peer[1]["p50"], "rps_c8": levels[8]["rps"] / peer[8]["rps"]}
        ratios[name] = r
        ok = "met" if r["p50_c1"] <= 1 / 3 and r["rps_c8"] >= 3 else "NOT met"
        print(f"{name:<30} p50 {r['p50_c1']:.3f}x, throughput {r['rps_c8']:.2f}x: {ok}")

    report = Report("tabular", a.out, f"./dev bench tabular --model {a.model} --seconds {a.seconds}")
    subject = f"/predict/{a.model}, one record a request"
    report.plot_latency(f"{subject}: latency", {n: {c: v for c, v in lv.items()} for n, lv in sides.items()})
    report.plot_throughput(f"{subject}: throughput", {n: {c: v["rps"] for c, v in lv.items()} for n, lv in sides.items()})
    report.save({"model": a.model, "seconds": a.seconds, "peer_workers": workers,
                 "sides": {n: {str(c): v for c, v in lv.items()} for n, lv in sides.items()}, "ratios": ratios})


if __name__ == "__main__":
    main()
