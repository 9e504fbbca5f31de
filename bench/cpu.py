"""CPU benchmark, three ways in one run: /classify through Scoria on tract and on ONNX Runtime,
against ONNX Runtime (and tract) called natively in-process on the same photo with the same
decode and preprocessing code (examples/native_classify), for EfficientNet-Lite0 and ResNet-152.
Then `--backend auto`: which backend it picks, against the faster of the two measured here.

Usage: cpu.py --bin-dir DIR --oha BIN [--photo F] [--models efficientnet-lite0,resnet152] [--rounds 3]
Prints p50 latencies at concurrency 1 and the ratios; the target is Scoria on ONNX Runtime
within 1.1x of native ONNX Runtime at p50. It also sends the photo's preprocessed tensor
(`application/x-tensor`) and compares that with native inference on the same tensor: the
serving cost alone, without the guest's image decoding. Scoria on ONNX Runtime runs twice per
round: with a fresh instance per request (the default), and with `instance_reuse = 16` (an
instance serves up to 16 requests, one at a time, keeping its model card and labels). Native
and Scoria on ONNX Runtime are measured in
`--rounds` back-to-back pairs and the pair with the median ratio is reported, with the range:
on a shared machine one noisy pair moved the ratio by almost 0.2 (1.24x to 1.42x).
Writes every round's figures to `<out>/cpu.json`, and plots of the p50s and of where a tensor
request's time goes (see report.py).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, oha, reused, scoria_up, server_timing_medians  # noqa: E402
from report import Report, step  # noqa: E402

MANIFESTS = {"efficientnet-lite0": "spin.toml", "resnet152": "spin-resnet152.toml"}
# Requests per measurement: enough for a stable p50 at each model's cost on 2 cores.
REQUESTS = {"efficientnet-lite0": 200, "resnet152": 20}
# `instance_reuse` for the second Scoria configuration: an instance serves up to this many
# requests, one at a time, and keeps its model card and labels between them.
REUSE = 16


def native(bin_dir, model, backend, photo, n, tensor_file=None):
    """p50 of decode + preprocess + inference, in-process, one at a time. With `tensor_file`,
    also writes the photo's tensor there and times inference alone on it (`tensor_ms_p50`)."""
    env = {**os.environ, "SCORIA_BACKEND": backend, "SCORIA_MODEL": model, "RUST_LOG": "warn"}
    if tensor_file:
        env["SCORIA_TENSOR_FILE"] = tensor_file
    out = subprocess.run(
        [os.path.join(bin_dir, "examples", "native_classify"), os.path.join(ROOT, "models"), photo, str(n), "1", "1"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    return json.loads(out)


def served(bin_dir, oha_bin, manifest, backend, bodies, n):
    """p50 of /classify through `scoria up` on `manifest` for each `(file, content type)` in
    `bodies`, one request at a time, each after a warm-up; one host serves them all. Also the
    medians of each body's `Server-Timing` steps over another n requests: `(p50s, steps)`."""
    with scoria_up(os.path.join(bin_dir, "scoria"), manifest, ["--backend", backend]) as base:
        url = f"{base}/classify"
        p50s, steps = [], []
        for body, ctype in bodies:
            oha(oha_bin, url, body, ctype, ["-n", str(max(n // 10, 3)), "-c", "1"])
            d = oha(oha_bin, url, body, ctype, ["-n", str(n), "-c", "1"])
            p50s.append(d["latencyPercentiles"]["p50"] * 1e3)
            with open(body, "rb") as f:
                steps.append(server_timing_medians(url, f.read(), ctype, n))
        return p50s, steps


def auto_choice(bin_dir, model):
    """The backend `--backend auto` serves `model` with, and why, from the host's log."""
    manifest = os.path.join(ROOT, MANIFESTS[model])
    proc = subprocess.Popen(
        [os.path.join(bin_dir, "scoria"), "up", "--manifest", manifest, "--backend", "auto", "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ, "RUST_LOG": "info"})
    try:
        deadline = time.time() + 300
        for line in proc.stderr:
            if f"model={model}" in line and "model loaded" in line:
                backend = line.split('backend="', 1)[1].split('"', 1)[0]
                why = line.split("why=", 1)[1].split(" batching=", 1)[0].strip('"') if "why=" in line else ""
                return backend, why
            if time.time() > deadline:
                break
        sys.exit(f"scoria --backend auto did not load {model}")
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True, help="folder holding scoria and examples/native_classify")
    ap.add_argument("--oha", required=True)
    ap.add_argument("--photo", default=os.path.join(ROOT, "tests/data/chelsea.jpg"))
    ap.add_argument("--models", default="efficientnet-lite0,resnet152")
    ap.add_argument("--rounds", type=int, default=3, help="native/Scoria ONNX Runtime pairs per model")
    ap.add_argument("--out", help="where the JSON and plots go (default docs/bench)")
    a = ap.parse_args()
    rows, picks = [], {}
    work = tempfile.mkdtemp(prefix="scoria-bench-cpu-")
    for model in a.models.split(","):
        n = REQUESTS[model]
        # The photo's preprocessed tensor, as native_classify computes it, so that both sides
        # of the tensor comparison run the model on the same input.
        tensor = os.path.join(work, f"{model}.f32")
        bodies = [(a.photo, "image/jpeg"), (tensor, "application/x-tensor")]
        fresh = os.path.join(ROOT, MANIFESTS[model])
        rounds = []
        with reused(MANIFESTS[model], "image-classify", REUSE) as reuse:
            for k in range(max(a.rounds, 1)):
                step(f"{model}: round {k + 1} of {max(a.rounds, 1)} (native, then Scoria fresh and reused)")
                nat = native(a.bin_dir, model, "onnxruntime", a.photo, n, tensor)
                r = {"native": nat["total_ms_p50"], "native_tensor": nat["tensor_ms_p50"], "stages": nat}
                for name, manifest in (("fresh", fresh), ("reuse", reuse)):
                    (photo_ms, tensor_ms), (_, split) = served(a.bin_dir, a.oha, manifest, "onnxruntime", bodies, n)
                    r[name] = {"photo": photo_ms, "tensor": tensor_ms, "split": split}
                rounds.append(r)
        step(f"{model}: tract, native and served; then --backend auto")
        nat_tract = native(a.bin_dir, model, "tract", a.photo, n)
        (s_tract,), _ = served(a.bin_dir, a.oha, fresh, "tract", bodies[:1], n)
        rows.append((model, rounds, nat_tract["total_ms_p50"], s_tract))
        picks[model] = auto_choice(a.bin_dir, model)
        print(f"{model}: done", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    report(a, rows, picks)
    files(a, rows, picks)


def median_round(rounds, ratio):
    """The round with the median `ratio(round)`, and every round's ratio in order."""
    ranked = sorted(rounds, key=ratio)
    return ranked[len(ranked) // 2], [ratio(r) for r in ranked]


# The native figure in a round that each body is compared with.
NATIVE_OF = {"photo": "native", "tensor": "native_tensor"}


def ratio_of(body, name):
    """A round's Scoria / native ratio for `body` served by configuration `name`."""
    return lambda r: r[name][body] / r[NATIVE_OF[body]]


def report(a, rows, picks):
    print(f"\nphoto {os.path.relpath(a.photo, ROOT)}; {os.cpu_count()} CPUs; p50 at c=1 in ms "
          "(decode + preprocess + inference; Scoria adds HTTP and the WebAssembly instance)")
    print(f"{'model':<20}{'native ORT':>11}{'Scoria ORT':>11}{'ratio':>8}{'native tract':>13}"
          f"{'Scoria tract':>13}{'ratio':>8}   auto")
    for model, rounds, n_tract, s_tract in rows:
        r, _ = median_round(rounds, ratio_of("photo", "fresh"))
        n_ort, s_ort = r["native"], r["fresh"]["photo"]
        picked, why = picks[model]
        faster = "onnxruntime" if s_ort < s_tract else "tract"
        verdict = "the faster" if picked == faster else f"NOT the faster ({faster})"
        print(f"{model:<20}{n_ort:>11.2f}{s_ort:>11.2f}{s_ort / n_ort:>7.3f}x{n_tract:>13.2f}{s_tract:>13.2f}"
              f"{s_tract / n_tract:>7.3f}x   {picked}: {verdict}; {why}")
    print("\nnative ONNX Runtime p50 by stage (ms): decode, preprocess, inference")
    for model, rounds, *_ in rows:
        st = median_round(rounds, ratio_of("photo", "fresh"))[0]["stages"]
        print(f"  {model}: {st['decode_ms_p50']:.2f}, {st['preprocess_ms_p50']:.2f}, {st['inference_ms_p50']:.2f}")
    print("\ntarget: Scoria on ONNX Runtime within 1.1x of native ONNX Runtime at p50 (median round; all rounds). "
          "fresh: a fresh instance per request (the default); "
          f"reuse: `instance_reuse = {REUSE}` (an instance serves up to {REUSE} requests, one at a time, "
          "keeping its model card and labels). tensor: the photo's tensor as the body (application/x-tensor), "
          "against native inference and top-5 on the same tensor, what serving adds without the guest's decoding")
    for model, rounds, *_ in rows:
        for body, nat_key in NATIVE_OF.items():
            for name in ("fresh", "reuse"):
                r, every = median_round(rounds, ratio_of(body, name))
                ratio = ratio_of(body, name)(r)
                all_rounds = ", ".join(f"{x:.3f}x" for x in every)
                print(f"  {model:<19} {body:<7}{name:<6} native {r[nat_key]:>7.2f}, Scoria {r[name][body]:>7.2f}: "
                      f"{ratio:.3f}x {'meets' if ratio <= 1.1 else 'misses'} it (+{r[name][body] - r[nat_key]:.2f} ms; "
                      f"all rounds {all_rounds})")
    print("\nwhere Scoria's time goes with the tensor body (the median tensor round): medians over as many "
          "requests again, one at a time, of the client's wait and the host's Server-Timing steps, in ms. body: "
          "the host reading the request body; instance: making the instance (0 for a reused one); in host: the "
          "rest of the host's total (the guest's own work, wasi-nn's copies, hand-offs between threads); "
          "outside: the client's wait minus the host's total (HTTP and the client)")
    print(f"  {'model':<20}{'':<7}{'client':>8}{'host total':>11}{'body':>7}{'instance':>9}{'inference':>10}"
          f"{'(native)':>9}{'in host':>8}{'outside':>8}")
    for model, rounds, *_ in rows:
        for name in ("fresh", "reuse"):
            r, _ = median_round(rounds, ratio_of("tensor", name))
            st, nat_t = r[name]["split"], r["native_tensor"]
            rest = st["total"] - st["queue"] - st["body"] - st["instance"] - st["inference"]
            print(f"  {model:<20}{name:<7}{st['client']:>8.2f}{st['total']:>11.2f}{st['body']:>7.2f}"
                  f"{st['instance']:>9.2f}{st['inference']:>10.2f}{nat_t:>9.2f}{rest:>8.2f}"
                  f"{st['client'] - st['total']:>8.2f}")


def files(a, rows, picks):
    """The JSON of every round, and for each model a plot of its p50s (median rounds) and of
    where a tensor request's time goes."""
    profile = os.path.basename(os.path.normpath(a.bin_dir))
    prefix = "SCORIA_PROFILE=release " if profile == "release" else ""
    out = Report("cpu", a.out, f"{prefix}./dev bench cpu --models {a.models} --rounds {a.rounds}")
    for model, rounds, n_tract, s_tract in rows:
        bars = {}
        for body in ("photo", "tensor"):
            for name, label in (("fresh", "Scoria, fresh instances"), ("reuse", f"Scoria, instance_reuse = {REUSE}")):
                r, _ = median_round(rounds, ratio_of(body, name))
                bars.setdefault(f"{body}: native ONNX Runtime", r[NATIVE_OF[body]])
                bars[f"{body}: {label}"] = r[name][body]
        bars["photo: native tract"] = n_tract
        bars["photo: Scoria, tract"] = s_tract
        out.plot_bars(f"{model}-p50", f"{model}: p50 at c=1, {profile} builds (median of {len(rounds)} rounds)", bars)
        split = {}
        for name in ("fresh", "reuse"):
            r, _ = median_round(rounds, ratio_of("tensor", name))
            st = r[name]["split"]
            host = {k: st.get(k, 0.0) for k in ("queue", "body", "instance", "inference")}
            host["guest and hand-offs"] = max(st["total"] - sum(host.values()), 0.0)
            host["HTTP and client"] = max(st["client"] - st["total"], 0.0)
            split[f"Scoria, {name}"] = host
        split["native ONNX Runtime"] = {"inference": median_round(rounds, ratio_of("tensor", "fresh"))[0]["native_tensor"]}
        out.plot_split(f"{model}: where a tensor request's time goes, c=1", split,
                       ["queue", "body", "instance", "guest and hand-offs", "inference", "HTTP and client"],
                       kind=f"{model}-split")
    out.save({"photo": os.path.relpath(a.photo, ROOT), "profile": profile, "instance_reuse": REUSE,
              "models": {model: {"rounds": rounds, "native_tract_ms_p50": n_tract, "scoria_tract_ms_p50": s_tract,
                                 "auto": {"picked": picks[model][0], "why": picks[model][1]}}
                         for model, rounds, n_tract, s_tract in rows}})


if __name__ == "__main__":
    main()
