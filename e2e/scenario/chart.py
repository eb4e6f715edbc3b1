"""Tier C, the product as a platform team installs it: the chart, the operator in a pod, injected sidecars.

    node.py exec .venv/bin/python e2e/scenario/chart.py --image IMAGE                 (the local node)
    .venv/bin/python e2e/scenario/chart.py --image IMAGE --sidecar-image PROXY_IMAGE \
        --kubeconfig KUBECONFIG [--kubectl kubectl]                                    (any cluster: kind.py)

On the local node it runs inside the node's namespaces (Helm's library and `kubectl port-forward` need the
API server and the forwarded port on the node's loopback), with the node's kubeconfig and kubectl by default.
Given a kubeconfig it runs against that cluster from wherever it is started; nothing here assumes the node:
the images are refs the cluster already holds (`imagePullPolicy: Never`), the OTLP receiver is read through
the API server's service proxy, and the injected shape checked follows the API server's version (a native
sidecar from 1.29). Step by step, each printed with its time:
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
     the route has ejection off (`maxEjectionPercent: 0`), so every request tries the dead primary first and
     fails over, and the one sidecar's health reports add up to what the operator calls failing across
     sidecars (5 failures, half of the provider's requests): `kubectl get llmroutes -o wide` and `kubectl
     get llmproviders` show Degraded True; the provider's pod comes back, traffic returns to it, and
     Degraded goes back to False;
  8. `helm uninstall`: the operator, its Services, Secret, webhook and RBAC are gone, the CRDs and the
     LLMRoute are kept, and the injected pod still serves its last table.
Exits 1 on the first failed check, saying what was expected and what was seen, after printing the
operator's and the sidecar's logs.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
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
    namespace,
    node_kubectl,
    reachable,
    results,
    sim,
    target,
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
# The failover loop: the primary dies ~2 s in, after some 30 answers; the rest (some 90) fail over, so its
# failures are well over half its requests (Degraded). Bounded in count, and in time even if each failed
# connection waits a second (a node with the kernel's default ICMP rate limit).
LOOP_REQUESTS = 120
LOOP_SECONDS = 150
RECOVERY_BATCH = 40          # requests per batch once the primary is back, until Degraded clears...
RECOVERY_BATCHES = 6         # ...at most this many batches


@dataclass(frozen=True)
class Options:
    image: str                # the llmroute image: the operator, and the simulators, app and receiver pods
    sidecar_image: str        # the injected sidecar's image (the chart's injection.image)
    kubeconfig: Path          # the cluster's, for Helm's library and kubectl
    kubectl: str              # the kubectl binary


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="chart.py", description="The chart scenario of make e2e, on one cluster.")
    p.add_argument("--image", required=True, metavar="REF",
                   help="the llmroute image (operator/Dockerfile, or the local build), already in the cluster")
    p.add_argument("--sidecar-image", metavar="REF", help="the sidecar's image (proxy/Dockerfile); default --image")
    p.add_argument("--kubeconfig", type=Path, default=STATE / "config" / "admin.kubeconfig", metavar="FILE",
                   help="the cluster's kubeconfig (default: the local node's admin kubeconfig)")
    p.add_argument("--kubectl", metavar="PATH",
                   help="kubectl (default: the local node's build when a node is up, else kubectl on PATH)")
    a = p.parse_args(argv)
    for ref in (a.image, a.sidecar_image or a.image):
        if ":" not in ref.rsplit("/", 1)[-1]:
            p.error(f"an image ref needs a tag (the pods use imagePullPolicy: Never): {ref}")
    return Options(a.image, a.sidecar_image or a.image, a.kubeconfig, a.kubectl or node_kubectl() or "kubectl")


def values(image: str, sidecar_image: str, otlp: str) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    sidecar_repository, sidecar_tag = sidecar_image.rsplit(":", 1)
    env = {"LLMROUTE_USAGE_REPORT_SECONDS": "1",     # so spend shows up in status within the scenario
           "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,      # traces to the receiver pod, sent every 0.5 s
           "OTEL_BSP_SCHEDULE_DELAY": "500", "OTEL_METRICS_EXPORTER": "none"}
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "injection": {"image": {"repository": sidecar_repository, "tag": sidecar_tag}, "imagePullPolicy": "Never",
                          "env": [{"name": k, "value": v} for k, v in env.items()]}}


def otlp_receiver(image: str) -> str:
    """The OTLP/HTTP receiver pod (otlp_receiver.py) behind a Service; its endpoint, for the chart's values."""
    labels = {"app": "otlp"}
    namespace(OBSERVE)
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


def spans() -> dict[str, Any] | None:
    """What the receiver counted, read through the API server's service proxy (from a host outside the
    cluster's network too, as with kind)."""
    out = subprocess.run([*kubectl_argv(), "get", "--raw",
                          f"/api/v1/namespaces/{OBSERVE}/services/otlp:4318/proxy/spans"],
                         capture_output=True, text=True, timeout=20)
    try:
        return dict(json.loads(out.stdout)) if out.returncode == 0 else None
    except ValueError:
        return None


def helm_config(options: Options) -> helm.Config:
    return helm.Config(kubeconfig_path=options.kubeconfig, namespace=SYSTEM)


def install(options: Options, otlp: str) -> None:
    t0 = time.monotonic()
    config = helm_config(options)
    try:
        release = config.install(helm.Chart.load(CHART), RELEASE,
                                 values(options.image, options.sidecar_image, otlp), namespace=SYSTEM,
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
                     # Ejection off: every request tries the primary first, so when its pod is gone each one
                     # fails over (zero client-visible errors all the same) and the failures add up to Degraded.
                     "outlierDetection": {"maxEjectionPercent": 0},
                     "budget": {"limitUSD": 100.0, "period": "day"}}}


def app_pod(name: str, image: str, inject: bool) -> dict[str, Any]:
    labels = {"app": "chat", **({"llmroute.dev/inject": "true"} if inject else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [
                {"name": "app", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "infinity"],
                 "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}, "securityContext": SECURE}]}}


def workloads(image: str) -> None:
    t0 = time.monotonic()
    namespace(NS)
    apply(*sim("sim-a", image, NS), *sim("sim-b", image, NS),
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llm-keys", "namespace": NS},
           "stringData": {"sim": KEY}})
    apply(provider("sim-a", cluster_ip(NS, "sim-a")), provider("sim-b", cluster_ip(NS, "sim-b")),
          route("sim-a", "sim-b"))
    apply(app_pod("app", image, inject=True), app_pod("plain", image, inject=False))
    log(f"providers, route and pods applied in {time.monotonic() - t0:.1f} s")


def native_sidecars() -> bool:
    """Whether the API server is 1.29 or later, where the webhook injects a native sidecar."""
    version = json.loads(kubectl("get", "--raw", "/version"))
    return (int(version["major"]), int(version["minor"].rstrip("+"))) >= (1, 29)


def injected() -> None:
    pod = get("pod", "-n", NS, "app")
    spec = pod["spec"]
    names = [c["name"] for c in spec["containers"]]
    if native_sidecars():
        init = spec.get("initContainers") or []
        check(names == ["app"] and [c["name"] for c in init][:1] == ["llmroute-proxy"]
              and init[0].get("restartPolicy") == "Always" and "startupProbe" in init[0],
              "the API server called the webhook: the stored pod's first init container is the sidecar, a native "
              "sidecar (restartPolicy Always, a startup probe) before the app", (names, init))
        sidecar = init[0]
    else:
        check(names == ["llmroute-proxy", "app"], "the API server called the webhook: the stored pod's containers "
              "are the sidecar, then the app (before Kubernetes 1.29: a regular container)", names)
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
    reachable(NS, "plain", [f"http://{cluster_ip(NS, name)}/v1/models" for name in ("sim-a", "sim-b")])
    status = synced()
    check(True, f"LLMRoute chat: Accepted, Synced 1/1, table {status['tableVersion']}")
    kubectl("wait", "-n", NS, "--for=condition=Synced", "llmroute/chat", "--timeout=10s")
    model, via, answer = via_sdk("hello from the SDK")
    check(via == "sim-a" and model == MODEL and answer.startswith(f"[sim-openai {MODEL}] You said: hello from the SDK"),
          "the OpenAI SDK through the injected sidecar is answered by sim-a, the primary", (model, via, answer))
    spent = eventually(lambda: route_status().get("spend", {}).get("periodUSD") or None,
                       "the sidecar's usage reports add up to spend in the LLMRoute's status", 30, route_status)
    check(KEY not in str(get("llmroute", "-n", NS, "chat")), f"LLMRoute chat shows spend {spent} USD, and no key")


def traced() -> None:
    kubectl("wait", "-n", OBSERVE, "--for=condition=Ready", "pod/otlp", "--timeout=60s", timeout=70)
    def some() -> dict[str, Any] | None:
        seen = spans()
        return seen if seen and seen["count"] > 0 else None
    got = eventually(some, "the sidecar's spans reach the OTLP receiver pod", 30, spans)
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
    status = get("pod", "-n", NS, "app")["status"]
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
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


def wide(kind: str) -> dict[str, dict[str, str]]:
    return columns(kubectl("get", kind, "-n", NS, "-o", "wide"))


def columns(text: str) -> dict[str, dict[str, str]]:
    """A `kubectl get` table as a person reads it: {name: {COLUMN: value}}. A column's name may hold one space
    (SPEND %); kubectl puts at least three between columns and left-aligns every cell under its heading."""
    lines = text.splitlines()
    heads = list(re.finditer(r"\S+(?: \S+)*", lines[0])) if lines else []
    edges = [*(m.start() for m in heads), None]
    rows = ({h.group(): line[a:b].strip() for h, a, b in zip(heads, edges[:-1], edges[1:], strict=True)}
            for line in lines[1:])
    return {row["NAME"]: row for row in rows}


def listed() -> dict[str, dict[str, str]]:
    return {**wide("llmroutes"), **wide("llmproviders")}


def degraded_shown(route: str, provider: str) -> dict[str, dict[str, str]] | None:
    """The two listings, once they show Degraded `route` for chat and `provider` for sim-a (True or False),
    sim-b not Degraded, and chat's spend."""
    rows = listed()
    chat, sim_a, sim_b = rows.get("chat", {}), rows.get("sim-a", {}), rows.get("sim-b", {})
    shown = (chat.get("DEGRADED") == route and sim_a.get("DEGRADED") == provider and sim_b.get("DEGRADED") == "False"
             and chat.get("SPEND %", "") not in ("", "<none>"))
    return rows if shown else None


def degraded(image: str) -> None:
    """After the failover: the dead primary shows as Degraded; it comes back, serves again, and it clears."""
    t0 = time.monotonic()
    rows = eventually(lambda: degraded_shown("True", "True"), "kubectl get llmroutes -o wide: chat Degraded True "
                      "with its spend; kubectl get llmproviders: sim-a Degraded True, sim-b False", 30, listed)
    status = route_status()
    check(status.get("degradedProviders") == ["sim-a"] and "sim-a" in condition(status, "Degraded").get("message", ""),
          f"the sidecar's health reports made sim-a Degraded, shown {time.monotonic() - t0:.1f} s after the loop: "
          f"{rows}", status.get("conditions"))
    t1 = time.monotonic()
    # The deleted pod's object must be gone first: applied while it still terminates, the same name would
    # patch the dying pod instead of creating a new one.
    gone(NS, "sim-a")
    apply(sim("sim-a", image, NS)[0])  # the same Service, so the same cluster IP: the table is unchanged
    eventually(lambda: "ready" if kubectl("get", "pod", "-n", NS, "sim-a", "--ignore-not-found", "-o",
                                          "jsonpath={.status.conditions[?(@.type=='Ready')].status}").strip()
               == "True" else None, "the new pod sim-a Ready", 120,
               lambda: kubectl("describe", "pod", "-n", NS, "sim-a", check=False)[-1500:])
    batches: list[list[dict[str, Any]]] = []

    def recovered() -> dict[str, dict[str, str]] | None:
        if len(batches) < RECOVERY_BATCHES:  # until healthy answers outweigh the failures in the window
            batches.append(results(kubectl(*client_argv(NS, "app", RECOVERY_BATCH, 30, 0.02), timeout=60)))
        return degraded_shown("False", "False")

    eventually(recovered, "Degraded False again on chat and sim-a once sim-a answers", 90, listed)
    sent = [r for batch in batches for r in batch]
    check(all(r["status"] == 200 for r in sent) and [r["provider"] for r in batches[-1]] == ["sim-a"] * RECOVERY_BATCH,
          f"sim-a is back and serves again ({len(sent)} requests, all answered), and Degraded cleared "
          f"{time.monotonic() - t1:.1f} s after it returned", [r for r in sent if r["status"] != 200][:3] or
          [r.get("provider") for r in batches[-1]])


def deselected() -> None:
    """The LLMRoute is deleted: the running sidecar gets a table without routes and answers 503 no_route,
    instead of serving the deleted route on with its providers' key."""
    t0 = time.monotonic()
    kubectl("delete", "llmroute", "-n", NS, "chat", "--timeout=30s", timeout=40)

    def refused() -> str | None:
        try:
            via_sdk("after the route was deleted")
        except openai.APIStatusError as error:
            return error.message if (error.status_code, error.code) == (503, "no_route") else None
        return None

    said = eventually(refused, "the app's sidecar answers 503 no_route once its LLMRoute is deleted", 30)
    check("No LLMRoute selects this pod" in said, f"LLMRoute chat deleted: the running sidecar answers 503 no_route "
          f"{time.monotonic() - t0:.1f} s later, serving the deleted route no more", said)
    t1 = time.monotonic()
    apply(route("sim-a", "sim-b"))
    synced()
    _, via, _ = via_sdk("after the route came back")
    check(via == "sim-a", f"LLMRoute chat applied again: served again {time.monotonic() - t1:.1f} s later", via)


def gone(namespace: str, name: str, wait_s: float = 30) -> None:
    """A deleted pod's object gone. Kubernetes 1.20's kubelet can leave a pod whose containers have ended
    Terminating for a minute or more (its sandbox stopped again and again, removed only at a later sync):
    what the scenario controls, the pod's processes ending on SIGTERM, has happened, so past `wait_s` such
    a pod's object is force-deleted. One whose container still runs is a failure."""
    def pod() -> dict[str, Any] | None:  # kubectl prints nothing at all for a pod it does not find
        found = kubectl("get", "pod", "-n", namespace, name, "--ignore-not-found", "-o", "json")
        return json.loads(found) if found.strip() else None

    deadline = time.monotonic() + wait_s
    while (left := pod()) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    if left is None:
        return
    statuses = left.get("status", {}).get("containerStatuses") or []
    check(not any("running" in s.get("state", {}) for s in statuses),
          f"the deleted pod {name}'s containers ended within {wait_s:.0f} s", statuses)
    log(f"the kubelet left {name} Terminating {wait_s:.0f} s after its containers ended; force-deleting the object")
    kubectl("delete", "pod", "-n", namespace, name, "--grace-period=0", "--force", "--wait=false", check=False)
    eventually(lambda: "gone" if pod() is None else None, f"the deleted pod {name} gone", 30, pod)


def runs(pod: dict[str, Any]) -> bool:
    """Whether a pod is not on its way out, or still has a container running."""
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return not pod["metadata"].get("deletionTimestamp") or any("running" in s.get("state", {}) for s in statuses)


def uninstall(options: Options) -> None:
    """`helm uninstall` removes the operator and its webhook, keeps the CRDs and resources, breaks no pod."""
    t0 = time.monotonic()
    config = helm_config(options)
    try:
        config.uninstall(RELEASE, timeout=60)
    finally:
        config.close()
    eventually(lambda: None if operator_pods() or any(runs(p) for p in get("pod", "-n", SYSTEM)["items"]) else True,
               f"no pod left running in {SYSTEM} after helm uninstall", 60, lambda: get("pod", "-n", SYSTEM)["items"])
    for pod in get("pod", "-n", SYSTEM)["items"]:
        gone(SYSTEM, pod["metadata"]["name"])
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


def run(options: Options) -> None:
    t0 = time.monotonic()
    target(options.kubectl, options.kubeconfig)
    image = options.image
    otlp = otlp_receiver(image)
    install(options, otlp)
    workloads(image)
    injected()
    serving()
    traced()
    route_change("sim-b", "sim-a", "a changed LLMRoute")
    operator_restart()
    failover(NS, "app", "sim-a", "sim-b", LOOP_REQUESTS, LOOP_SECONDS)
    degraded(image)
    deselected()
    uninstall(options)
    log(f"scenario passed in {time.monotonic() - t0:.1f} s")


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    try:
        run(options)
    except (Failed, subprocess.TimeoutExpired, helm.HelmError, openai.OpenAIError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        dump_logs()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
