"""Tier C, the product as a platform team installs it: the chart, the operator in a pod, injected sidecars.

    node.py exec .venv/bin/python e2e/scenario/chart.py IMAGE

Runs inside the node's namespaces (Helm's library and `kubectl port-forward` need the API server and the
forwarded port on the node's loopback). Step by step, each printed with its time:
  1. `helm install` of charts/llmroute with Helm's own library (helm-python-sdk), the images from the local
     build: CRDs, RBAC, the operator Deployment, the hub and webhook Services, the generated TLS, the
     MutatingWebhookConfiguration; the operator pod becomes Ready;
  2. two simulated OpenAI providers as pods behind Services, LLMProviders naming their cluster IPs (no cluster
     DNS) and a key from a Secret, an LLMRoute selecting `app: chat`;
  3. a pod labelled `llmroute.dev/inject: "true"`: the API server called the webhook, so the stored pod has
     the sidecar (first container, cluster mode, projected token of audience llmroute.dev, the hub's
     cluster IP, a memory-backed state directory); a pod without the label is stored as it was sent;
  4. the sidecar gets its table from the operator in its pod: the pod becomes Ready, the LLMRoute says
     Synced 1/1, a request through the sidecar with the official OpenAI SDK is answered by the primary, and
     the sidecar's usage reports show up as spend in the route's status, and its traces reach an OTLP/HTTP
     receiver pod (otlp_receiver.py, named in the chart's injection.env);
  5. the route changes (the other provider first): the running sidecar serves the new table, no restart;
  6. the operator's pod is deleted under traffic: every request is answered; the new pod resyncs the sidecar
     (a route change made after it started reaches the sidecar);
  7. the primary provider's pod is deleted under traffic: zero client-visible errors, the traffic moves;
  8. `helm uninstall`: the operator, its Services, Secret, webhook and RBAC are gone, the CRDs and the
     LLMRoute are kept, and the injected pod still serves its last table.
Exits 1 on the first failed check, saying what was expected and what was seen, after printing the
operator's and the sidecar's logs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import helm_python as helm
import openai
from kit import (
    MODEL,
    SECURE,
    STATE,
    Failed,
    apply,
    check,
    client_argv,
    cluster_ip,
    eventually,
    failover,
    get,
    kubectl,
    kubectl_argv,
    log,
    results,
    sim,
)

CHART = Path(__file__).resolve().parents[2] / "charts" / "llmroute"
RELEASE = "llmroute"
SYSTEM = "llmroute-system"        # the release's namespace (never injected)
NS = "team"                       # the application's namespace
GROUP = "llmroute.dev"
KEY = "sk-sim-e2e-0123456789abcdef"
OBSERVE = "observability"         # the OTLP receiver's namespace
HERE = Path(__file__).resolve().parent
OPERATOR = "app.kubernetes.io/component=operator"
LOOP_REQUESTS = 80           # the failover loop (the primary dies ~2 s in): bounded in count...
LOOP_SECONDS = 60            # ...and in time


def values(image: str, otlp: str) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    env = {"LLMROUTE_USAGE_REPORT_SECONDS": "1",     # so spend shows up in status within the scenario
           "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,      # traces to the receiver pod, sent every 0.5 s
           "OTEL_BSP_SCHEDULE_DELAY": "500", "OTEL_METRICS_EXPORTER": "none"}
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "injection": {"imagePullPolicy": "Never", "env": [{"name": k, "value": v} for k, v in env.items()]}}


def otlp_receiver(image: str) -> str:
    """The OTLP/HTTP receiver pod (otlp_receiver.py) behind a Service; its endpoint, for the chart's values."""
    labels = {"app": "otlp"}
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OBSERVE}})
    apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "otlp", "namespace": OBSERVE, "labels": labels},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
               "name": "receiver", "image": image, "imagePullPolicy": "Never",
               "command": ["python3", "-c", (HERE / "otlp_receiver.py").read_text()],
               "readinessProbe": {"httpGet": {"path": "/spans", "port": 4318}, "periodSeconds": 1},
               "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
               "securityContext": SECURE}]}},
          {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "otlp", "namespace": OBSERVE},
           "spec": {"selector": labels, "ports": [{"port": 4318, "targetPort": 4318}]}})
    return f"http://{cluster_ip(OBSERVE, 'otlp')}:4318"


def spans(otlp: str) -> dict[str, Any] | None:
    """What the receiver counted; the node's own processes reach cluster IPs."""
    try:
        with urllib.request.urlopen(f"{otlp}/spans", timeout=5) as response:
            return dict(json.load(response))
    except (OSError, ValueError):
        return None


def helm_config() -> helm.Config:
    return helm.Config(kubeconfig_path=STATE / "config" / "admin.kubeconfig", namespace=SYSTEM)


def install(image: str, otlp: str) -> None:
    t0 = time.monotonic()
    config = helm_config()
    try:
        release = config.install(helm.Chart.load(CHART), RELEASE, values(image, otlp), namespace=SYSTEM,
                                 create_namespace=True, timeout=120)
    finally:
        config.close()
    check(release.get("status") == "deployed", f"helm install of {RELEASE} into {SYSTEM} is deployed",
          {k: v for k, v in release.items() if k != "manifest"})
    kubectl("wait", "--for=condition=Established", "crd/llmproviders.llmroute.dev", "crd/llmroutes.llmroute.dev",
            "--timeout=30s")
    kubectl("wait", "-n", SYSTEM, "--for=condition=Ready", "pod", "-l", OPERATOR,
            "--timeout=90s", timeout=100)
    log(f"chart installed and the operator pod Ready in {time.monotonic() - t0:.1f} s")


def provider(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "LLMProvider", "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "openai", "endpoints": [{"region": "node", "url": f"http://{ip}/v1"}],
                     "credentials": {"secretRef": {"name": "llm-keys", "key": "sim"}},
                     "models": [{"name": MODEL, "pricing": {"inputPerMTok": 1000.0, "outputPerMTok": 2000.0}}]}}


def route(primary: str, secondary: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "LLMRoute", "metadata": {"name": "chat", "namespace": NS},
            "spec": {"podSelector": {"matchLabels": {"app": "chat"}},
                     "tiers": {"main": {"targets": [{"provider": primary, "model": MODEL},
                                                    {"provider": secondary, "model": MODEL, "priority": 1}]}},
                     "defaultTier": "main",
                     "fallback": {"maxAttempts": 3, "perTryTimeout": "5s",
                                  "onErrors": ["rate_limited", "overloaded", "server_error", "timeout",
                                               "connection", "stream_broken"]},
                     "outlierDetection": {"consecutiveFailures": 1, "baseEjection": "30s"},
                     "budget": {"limitUSD": 100.0, "period": "day"}}}


def app_pod(name: str, image: str, inject: bool) -> dict[str, Any]:
    labels = {"app": "chat", **({"llmroute.dev/inject": "true"} if inject else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [
                {"name": "app", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "infinity"],
                 "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}, "securityContext": SECURE}]}}


def workloads(image: str) -> None:
    t0 = time.monotonic()
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    apply(*sim("sim-a", image, NS), *sim("sim-b", image, NS),
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llm-keys", "namespace": NS},
           "stringData": {"sim": KEY}})
    apply(provider("sim-a", cluster_ip(NS, "sim-a")), provider("sim-b", cluster_ip(NS, "sim-b")),
          route("sim-a", "sim-b"))
    # Pods wait for their namespace's default ServiceAccount, which the controller-manager makes.
    eventually(lambda: kubectl("get", "serviceaccount", "-n", NS, "default", check=False) or None,
               f"the default ServiceAccount of {NS}", 30)
    apply(app_pod("app", image, inject=True), app_pod("plain", image, inject=False))
    log(f"providers, route and pods applied in {time.monotonic() - t0:.1f} s")


def injected() -> None:
    pod = get("pod", "-n", NS, "app")
    spec = pod["spec"]
    names = [c["name"] for c in spec["containers"]]
    check(names == ["llmroute-proxy", "app"], "the API server called the webhook: the stored pod's containers "
          "are the sidecar, then the app (Kubernetes 1.20: a regular container, not a native sidecar)", names)
    sidecar = spec["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in sidecar["env"]}
    hub_ip = cluster_ip(SYSTEM, f"{RELEASE}-hub")
    check(env.get("LLMROUTE_OPERATOR_URL") == f"wss://{hub_ip}:15443/v1/sync"
          and env.get("LLMROUTE_OPERATOR_SERVER_NAME") == f"{RELEASE}-hub.{SYSTEM}.svc",
          f"the sidecar dials the hub Service's cluster IP {hub_ip} and verifies its DNS name",
          {k: env.get(k) for k in ("LLMROUTE_OPERATOR_URL", "LLMROUTE_OPERATOR_SERVER_NAME")})
    check("BEGIN CERTIFICATE" in str(env.get("LLMROUTE_OPERATOR_CA_DATA"))
          and env.get("LLMROUTE_USAGE_REPORT_SECONDS") == "1"
          and all(k in env for k in ("POD_NAME", "POD_NAMESPACE", "NODE_NAME")),
          "the hub's CA, the chart's injection.env and the downward-API identity are in its environment",
          sorted(env))
    volumes = {v["name"]: v for v in spec["volumes"]}
    token = (volumes.get("llmroute-token", {}).get("projected", {}).get("sources") or [{}])[0]
    check(token.get("serviceAccountToken", {}).get("audience") == "llmroute.dev",
          "a projected service-account token of audience llmroute.dev", volumes.get("llmroute-token"))
    check(volumes.get("llmroute-state", {}).get("emptyDir", {}).get("medium") == "Memory",
          "a memory-backed state directory for the last good table", volumes.get("llmroute-state"))
    check(pod["metadata"].get("annotations", {}).get("llmroute.dev/status") == "injected",
          "the pod is annotated llmroute.dev/status: injected", pod["metadata"].get("annotations"))
    plain = get("pod", "-n", NS, "plain")
    check([c["name"] for c in plain["spec"]["containers"]] == ["app"]
          and "llmroute.dev/status" not in (plain["metadata"].get("annotations") or {})
          and not any(v["name"].startswith("llmroute") for v in plain["spec"].get("volumes") or []),
          "a pod without the label is stored untouched", plain["spec"]["containers"])


def route_status() -> dict[str, Any]:
    return dict(get("llmroute", "-n", NS, "chat").get("status") or {})


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def synced(other_than: str | None = None) -> dict[str, Any]:
    """The route's status once Accepted, Synced and 1/1 (with a table version other than `other_than`)."""
    def probe() -> dict[str, Any] | None:
        status = route_status()
        done = (condition(status, "Accepted").get("status") == "True"
                and condition(status, "Synced").get("status") == "True"
                and status.get("sidecars", {}).get("summary") == "1/1"
                and status.get("tableVersion") not in (None, other_than))
        return status if done else None
    return eventually(probe, "LLMRoute chat Accepted, Synced 1/1" + (" with a new table" if other_than else ""),
                      60, route_status)


class Forward:
    """`kubectl port-forward` to the app pod's sidecar (which listens on the pod's loopback only)."""

    def __init__(self, pod: str, port: int) -> None:
        self.process = subprocess.Popen([*kubectl_argv(), "port-forward", "-n", NS, f"pod/{pod}", f":{port}"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 15400"
        if "127.0.0.1:" not in line:
            self.close()
            raise Failed(f"kubectl port-forward to {pod}:{port}: {line.strip()} {self.process.stderr.read()[:300]}"
                         if self.process.stderr else line)
        self.url = f"http://127.0.0.1:{line.split('127.0.0.1:')[1].split()[0]}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def ask(url: str, content: str) -> tuple[str, str, str]:
    """One chat completion through the sidecar with the official OpenAI SDK: model, provider, answer."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="app-key-unused", max_retries=0, timeout=20)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": content}])
        completion = raw.parse()
        return completion.model, raw.headers.get("x-llmroute-provider", ""), completion.choices[0].message.content or ""
    finally:
        client.close()


def via_sdk(content: str) -> tuple[str, str, str]:
    forward = Forward("app", 15400)
    try:
        return ask(forward.url, content)
    finally:
        forward.close()


def serving() -> None:
    t0 = time.monotonic()
    kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/app", "pod/plain", "pod/sim-a", "pod/sim-b",
            "--timeout=120s", timeout=130)
    log(f"pods Ready in {time.monotonic() - t0:.1f} s")
    status = synced()
    check(True, f"LLMRoute chat: Accepted, Synced 1/1, table {status['tableVersion']}")
    kubectl("wait", "-n", NS, "--for=condition=Synced", "llmroute/chat", "--timeout=10s")
    model, via, answer = via_sdk("hello from the SDK")
    check(via == "sim-a" and model == MODEL and answer.startswith(f"[sim-openai {MODEL}] You said: hello from the SDK"),
          "the OpenAI SDK through the injected sidecar is answered by sim-a, the primary", (model, via, answer))
    spent = eventually(lambda: route_status().get("spend", {}).get("periodUSD") or None,
                       "the sidecar's usage reports add up to spend in the LLMRoute's status", 30, route_status)
    check(KEY not in str(get("llmroute", "-n", NS, "chat")), f"LLMRoute chat shows spend {spent} USD, and no key")


def traced(otlp: str) -> None:
    kubectl("wait", "-n", OBSERVE, "--for=condition=Ready", "pod/otlp", "--timeout=60s", timeout=70)
    def some() -> dict[str, Any] | None:
        seen = spans(otlp)
        return seen if seen and seen["count"] > 0 else None
    got = eventually(some, "the sidecar's spans reach the OTLP receiver pod", 30, lambda: spans(otlp))
    check(True, f"the sidecar's traces reached the OTLP receiver pod: {got['count']} spans {got['names']}")


def route_change(primary: str, secondary: str, why: str, before: str | None = None) -> None:
    """The route's primary changes; the running sidecar gets the new table (no restart) and serves it."""
    t0 = time.monotonic()
    before = before or route_status().get("tableVersion")
    restarts = sidecar_restarts()
    apply(route(primary, secondary))
    status = synced(other_than=before)
    _, via, _ = via_sdk(f"after the change {why}")
    check(via == primary and sidecar_restarts() == restarts,
          f"{why}: the route now starting at {primary} reached the running sidecar (table {before} -> "
          f"{status['tableVersion']}, Synced 1/1, no restart) in {time.monotonic() - t0:.1f} s",
          (via, sidecar_restarts()))


def sidecar_restarts() -> int:
    statuses = get("pod", "-n", NS, "app")["status"].get("containerStatuses") or []
    return sum(int(c.get("restartCount", 0)) for c in statuses)


def operator_pods() -> list[str]:
    pods = get("pod", "-n", SYSTEM, "-l", OPERATOR)["items"]
    return [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]


def operator_restart() -> None:
    """The operator's pod is deleted under traffic: the sidecar keeps serving its table; the new pod resyncs."""
    t0 = time.monotonic()
    old = operator_pods()
    version = route_status().get("tableVersion")
    loop = subprocess.Popen([*kubectl_argv(), *client_argv(NS, "app", 40, 30, 0.1)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    kubectl("delete", "pod", "-n", SYSTEM, *old, "--wait=false")
    log(f"deleted the operator pod {', '.join(old)} while the client loop runs")
    out, err = loop.communicate(timeout=60)
    got = results(out)
    check(len(got) == 40 and all(r["status"] == 200 for r in got),
          "40 requests while the operator pod was deleted: all answered 200",
          [r for r in got if r["status"] != 200][:3] or f"{len(got)} answers {err[-300:]}")
    new = eventually(lambda: [p for p in operator_pods() if p not in old] or None, "a new operator pod", 30,
                     operator_pods)
    kubectl("wait", "-n", SYSTEM, "--for=condition=Ready", f"pod/{new[0]}", "--timeout=90s", timeout=100)
    log(f"new operator pod {new[0]} Ready {time.monotonic() - t0:.1f} s after the delete")
    route_change("sim-a", "sim-b", "through the new operator pod", before=version)


def uninstall() -> None:
    """`helm uninstall` removes the operator and its webhook, keeps the CRDs and resources, breaks no pod."""
    t0 = time.monotonic()
    config = helm_config()
    try:
        config.uninstall(RELEASE, timeout=60)
    finally:
        config.close()
    eventually(lambda: None if operator_pods() or get("pod", "-n", SYSTEM)["items"] else True,
               f"no pod left in {SYSTEM} after helm uninstall", 60, lambda: get("pod", "-n", SYSTEM)["items"])
    left = kubectl("get", "deployment,service,secret,configmap,mutatingwebhookconfiguration,clusterrole",
                   "-A", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name")
    check(not left.strip(), "helm uninstall removed the operator, its Services, TLS Secret, webhook and RBAC", left)
    crds = kubectl("get", "crd", "-o", "name")
    check("llmroutes.llmroute.dev" in crds and "llmproviders.llmroute.dev" in crds
          and "chat" in kubectl("get", "llmroute", "-n", NS, "-o", "name"),
          "the CRDs and the LLMRoute are kept (helm.sh/resource-policy: keep)", crds)
    after = results(kubectl(*client_argv(NS, "app", 3, 30, 0)))
    check(len(after) == 3 and all(r["status"] == 200 for r in after),
          f"the injected pod still serves its last table with the operator uninstalled "
          f"({time.monotonic() - t0:.1f} s)", after)


def dump_logs() -> None:
    for args in (("-n", SYSTEM, "-l", OPERATOR, "--tail=40"),
                 ("-n", NS, "app", "-c", "llmroute-proxy", "--tail=40")):
        print(f"--- kubectl logs {' '.join(args)}", file=sys.stderr)
        out = subprocess.run([*kubectl_argv(), "logs", *args], capture_output=True, text=True, timeout=20)
        print(out.stdout + out.stderr, file=sys.stderr)


def run(image: str) -> None:
    t0 = time.monotonic()
    otlp = otlp_receiver(image)
    install(image, otlp)
    workloads(image)
    injected()
    serving()
    traced(otlp)
    route_change("sim-b", "sim-a", "a changed LLMRoute")
    operator_restart()
    failover(NS, "app", "sim-a", "sim-b", LOOP_REQUESTS, LOOP_SECONDS)
    uninstall()
    log(f"scenario passed in {time.monotonic() - t0:.1f} s")


def main() -> int:
    try:
        run(sys.argv[1])
    except (Failed, subprocess.TimeoutExpired, helm.HelmError, openai.OpenAIError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        dump_logs()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
