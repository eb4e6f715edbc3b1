"""What the tier C scenarios share: kubectl in the node, objects applied as one List, simulated providers as
pods behind Services, a client loop run inside an app container, and checks that say what was expected.

By default kubectl is the local node's own build with its admin kubeconfig: a scenario running inside the
node's namespaces (`node.py exec`) calls it directly, one on the host (smoke.py) goes through `node.py
kubectl`. A scenario given another cluster (chart.py's --kubeconfig, as the kind path runs it) calls
`target(kubectl, kubeconfig)` first, and every kubectl call here goes there instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

NODE = Path(__file__).resolve().parents[1] / "cluster" / "node.py"
STATE = Path(os.environ.get("E2E_STATE", "/tmp/llmroute-e2e"))
MODEL = "gpt-4o-mini"
T = TypeVar("T")


class Failed(Exception):
    pass


def log(msg: str) -> None:
    print(f"{Path(sys.argv[0]).stem}: {msg}", file=sys.stderr, flush=True)


def in_node() -> bool:
    """True when this process already runs in the node's network namespace."""
    try:
        namespaces = json.loads((STATE / "namespaces.json").read_text())
        return bool(os.readlink("/proc/self/ns/net") == namespaces["net"])
    except (OSError, ValueError, KeyError):
        return False


_target: list[str] = []  # kubectl and --kubeconfig, when a scenario names its cluster


def node_kubectl() -> str | None:
    """The local node's kubectl (the build matching its API server), when a node is up."""
    try:
        return str(json.loads((STATE / "kubectl").read_text())[0])
    except (OSError, ValueError, IndexError):
        return None


def target(kubectl: str, kubeconfig: Path) -> None:
    """Every kubectl call of this process goes to the cluster of `kubeconfig`."""
    _target[:] = [kubectl, f"--kubeconfig={kubeconfig}"]


def kubectl_argv() -> list[str]:
    if _target:
        return list(_target)
    if in_node():
        return list(json.loads((STATE / "kubectl").read_text()))
    return [sys.executable, str(NODE), "kubectl"]


def kubectl(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
    out = subprocess.run([*kubectl_argv(), *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise Failed(f"kubectl {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def get(*args: str) -> Any:
    """`kubectl get ... -o json`, parsed."""
    return json.loads(kubectl("get", *args, "-o", "json"))


def apply(*objects: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def check(ok: bool, what: str, seen: object = None) -> None:
    """Passes, or fails saying what was expected and, when given, what was seen instead."""
    if not ok:
        raise Failed(what if seen is None else f"expected: {what}; seen: {seen}")
    log(f"ok: {what}")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 60,
               seen: Callable[[], object] | None = None) -> T:
    """The first non-None answer of `probe`, polled every 0.5 s; on time-out fails with what was seen."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            raise Failed(f"expected within {timeout:.0f} s: {what}; seen: {seen() if seen else 'nothing'}")
        time.sleep(0.5)


SECURE = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
          "capabilities": {"drop": ["ALL"]}}


# The simulators' entry point, through the image's `python3`: the local build's launchers and the Dockerfiles'
# virtual environment both put llmroute_proxy on its path, and neither image needs a `llmroute-sim` script.
SIM_COMMAND = ["python3", "-c", "from llmroute_proxy.sim.server import main; main()"]


def sim(name: str, image: str, namespace: str) -> list[dict[str, Any]]:
    """A simulated OpenAI provider (`llmroute_proxy.sim` openai) as a pod behind a Service of the same name."""
    labels = {"app": name}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
           "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
               "name": "sim", "image": image, "imagePullPolicy": "Never",
               "command": [*SIM_COMMAND, "openai", "--host", "0.0.0.0", "--port", "8080"],
               "ports": [{"containerPort": 8080}],
               "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
               "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
               "securityContext": SECURE}]}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
           "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}}
    return [pod, svc]


def namespace(name: str) -> None:
    """The namespace, once its default ServiceAccount exists: until the controller-manager makes it, the API
    server refuses the namespace's pods."""
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    eventually(lambda: kubectl("get", "serviceaccount", "-n", name, "default", check=False) or None,
               f"the default ServiceAccount of {name}", 30)


# Run inside an app container: polls each URL until it answers with any HTTP status (a refused or reset
# connection means kube-proxy has not yet programmed the Service's endpoints), for at most the given seconds.
REACH = textwrap.dedent("""\
    import sys, time, urllib.request, urllib.error
    limit, urls = float(sys.argv[1]), sys.argv[2:]
    end = time.monotonic() + limit
    for url in urls:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except urllib.error.HTTPError:
                break
            except Exception as e:
                if time.monotonic() > end:
                    sys.exit(f"{url}: {e!r}")
                time.sleep(0.2)
    """)


def reachable(namespace: str, pod: str, urls: list[str], limit: float = 30) -> None:
    """Every URL answers from `pod`'s app container: a pod turning Ready does not mean its Service already routes
    to it (kube-proxy syncs its rules a moment later, and until then the cluster IP refuses connections)."""
    t0 = time.monotonic()
    out = subprocess.run([*kubectl_argv(), "exec", "-n", namespace, pod, "-c", "app", "--", "python3", "-c", REACH,
                          str(limit), *urls], capture_output=True, text=True, timeout=limit + 30)
    check(out.returncode == 0, f"{', '.join(urls)} answer from the {pod} pod ({time.monotonic() - t0:.1f} s)",
          out.stderr.strip()[-300:])


def cluster_ip(namespace: str, service: str) -> str:
    return kubectl("get", "service", "-n", namespace, service, "-o", "jsonpath={.spec.clusterIP}").strip()


# The client, run inside an app container: N chat completions to the sidecar, one JSON line each.
CLIENT = textwrap.dedent("""\
    import json, sys, time, urllib.request, urllib.error
    n, limit, gap = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    end = time.monotonic() + limit
    for i in range(n):
        if time.monotonic() > end:
            break
        body = json.dumps({"model": "%s", "messages": [{"role": "user", "content": f"hello {i}"}]}).encode()
        req = urllib.request.Request("http://localhost:15400/v1/chat/completions", body,
                                     {"Content-Type": "application/json", "Authorization": "Bearer app"})
        t = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                out = {"status": r.status, "provider": r.headers.get("x-llmroute-provider"),
                       "attempts": r.headers.get("x-llmroute-attempts"),
                       "content": json.load(r)["choices"][0]["message"]["content"]}
        except urllib.error.HTTPError as e:
            out = {"status": e.code, "error": e.read().decode()[:200]}
        except Exception as e:
            out = {"status": 0, "error": repr(e)[:200]}
        out["ms"] = round((time.monotonic() - t) * 1000)
        print(json.dumps(out), flush=True)
        time.sleep(gap)
    """) % MODEL


def client_argv(namespace: str, pod: str, n: int, limit: float, gap: float) -> list[str]:
    return ["exec", "-n", namespace, pod, "-c", "app", "--", "python3", "-c", CLIENT, str(n), str(limit), str(gap)]


def results(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def failover(namespace: str, pod: str, victim: str, survivor: str, requests: int, seconds: float) -> None:
    """The client loop in `pod`'s app container while `victim`'s pod is deleted ~2 s in: every request
    answers 200, and the traffic that began on `victim` ends on `survivor`."""
    t0 = time.monotonic()
    loop = subprocess.Popen([*kubectl_argv(), *client_argv(namespace, pod, requests, seconds, 0.1)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    kubectl("delete", "pod", "-n", namespace, victim, "--wait=false")
    log(f"deleted pod {victim} while the client loop runs")
    out, err = loop.communicate(timeout=seconds + 30)
    got = results(out)
    failed = [r for r in got if r["status"] != 200]
    providers = [r.get("provider") for r in got]
    moved = sorted(r["ms"] for r in got if r.get("provider") == survivor)
    log(f"loop: {len(got)} requests in {time.monotonic() - t0:.1f} s, providers in order: "
        f"{''.join('a' if p == victim else 'b' if p == survivor else '?' for p in providers)}; "
        f"ms on {survivor}: median {moved[len(moved) // 2] if moved else '-'}, max {moved[-1] if moved else '-'}")
    check(loop.returncode == 0 and len(got) == requests, f"the loop ran all {requests} requests",
          f"{len(got)} requests, exit {loop.returncode}, {err[-300:]}")
    check(not failed, f"zero client-visible errors while {victim}'s pod was deleted", f"failures {failed[:3]}")
    check(victim in providers[:5] and providers[-5:] == [survivor] * 5,
          f"traffic moved from {victim} to {survivor} and stayed there", providers)
