"""Tier C smoke scenario on the real node: the sidecar in a real pod routes to simulated providers behind
Services, and fails over with no client-visible error when the primary provider's pod is deleted.

    smoke.py IMAGE     (IMAGE: the llmroute image ref imported into the node, e.g. localhost/llmroute:<hash>)

Two simulated OpenAI providers (`llmroute-sim openai`) run as pods behind Services; the app pod has an `app`
container and the `llmroute` sidecar, whose standalone config (a ConfigMap) names the Services' cluster IPs
(there is no cluster DNS). Requests go from inside the app container to localhost:15400 with urllib (the image's
Python), exactly as an application would. Prints one line per check and its timings; exits 1 on the first
failed check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

NODE = Path(__file__).resolve().parents[1] / "cluster" / "node.py"
NS = "llmroute-e2e"
MODEL = "gpt-4o-mini"
LOOP_REQUESTS = 80           # the failover loop (sim-a dies ~2 s in, after its grace period): bounded in count...
LOOP_SECONDS = 60            # ...and in time


class Failed(Exception):
    pass


def log(msg: str) -> None:
    print(f"smoke: {msg}", file=sys.stderr, flush=True)


def kubectl(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
    out = subprocess.run([sys.executable, str(NODE), "kubectl", *args], input=stdin, capture_output=True,
                         text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise Failed(f"kubectl {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def apply(*objects: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def sim(name: str, image: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
           "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
               "name": "sim", "image": image, "imagePullPolicy": "Never",
               "command": ["llmroute-sim", "openai", "--host", "0.0.0.0", "--port", "8080"],
               "ports": [{"containerPort": 8080}],
               "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
               "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
               "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                   "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}}]}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
           "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}}
    return [pod, svc]


def sidecar_config(ips: dict[str, str]) -> str:
    docs = [{"apiVersion": "llmroute.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": name},
             "spec": {"type": "openai", "endpoints": [{"region": "node", "url": f"http://{ip}/v1"}],
                      "credentials": {"env": "SIM_API_KEY"}, "models": [{"name": MODEL}]}}
            for name, ip in ips.items()]
    docs.append({"apiVersion": "llmroute.dev/v1alpha1", "kind": "LLMRoute", "metadata": {"name": "e2e"},
                 "spec": {"tiers": {"main": {"targets": [{"provider": "sim-a", "model": MODEL},
                                                         {"provider": "sim-b", "model": MODEL, "priority": 1}]}},
                          "defaultTier": "main",
                          "fallback": {"maxAttempts": 3, "perTryTimeout": "5s",
                                       "onErrors": ["rate_limited", "overloaded", "server_error", "timeout",
                                                    "connection", "stream_broken"]},
                          "outlierDetection": {"consecutiveFailures": 1, "baseEjection": "30s"}}})
    return "\n---\n".join(json.dumps(d) for d in docs)


def app_pod(image: str) -> dict[str, Any]:
    secure = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
              "capabilities": {"drop": ["ALL"]}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": NS},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [
                {"name": "app", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "infinity"],
                 "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}, "securityContext": secure},
                {"name": "llmroute", "image": image, "imagePullPolicy": "Never",
                 "args": ["serve", "--config", "/etc/llmroute/llmroute.yaml", "--admin-host", "0.0.0.0"],
                 "env": [{"name": "SIM_API_KEY", "value": "sk-sim-e2e"}],
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/llmroute", "readOnly": True}],
                 "readinessProbe": {"httpGet": {"path": "/readyz", "port": 15401}, "periodSeconds": 1},
                 "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
                 "securityContext": secure}],
                "volumes": [{"name": "config", "configMap": {"name": "llmroute-config"}}]}}


# The client, run inside the app container: N chat completions to the sidecar, one JSON line each.
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


def client_argv(n: int, limit: float, gap: float) -> list[str]:
    return ["exec", "-n", NS, "app", "-c", "app", "--", "python3", "-c", CLIENT, str(n), str(limit), str(gap)]


def results(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def check(ok: bool, what: str) -> None:
    if not ok:
        raise Failed(what)
    log(f"ok: {what}")


def run(image: str) -> None:
    t0 = time.monotonic()
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    apply(*sim("sim-a", image), *sim("sim-b", image))
    ips = {n: kubectl("get", "service", "-n", NS, n, "-o", "jsonpath={.spec.clusterIP}").strip()
           for n in ("sim-a", "sim-b")}
    apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "llmroute-config", "namespace": NS},
           "data": {"llmroute.yaml": sidecar_config(ips)}}, app_pod(image))
    kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/sim-a", "pod/sim-b", "pod/app", "--timeout=120s",
            timeout=130)
    log(f"pods Ready in {time.monotonic() - t0:.1f} s (sim-a {ips['sim-a']}, sim-b {ips['sim-b']})")

    first = results(kubectl(*client_argv(3, 30, 0)))
    check(len(first) == 3 and all(r["status"] == 200 for r in first),
          f"3 requests from the app container through the sidecar answered 200: {first}")
    check(all(r["provider"] == "sim-a" and r["content"].startswith(f"[sim-openai {MODEL}] You said: hello")
              for r in first), "answered by the simulator behind sim-a's Service, the primary target")

    t1 = time.monotonic()
    loop = subprocess.Popen([sys.executable, str(NODE), "kubectl", *client_argv(LOOP_REQUESTS, LOOP_SECONDS, 0.1)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    kubectl("delete", "pod", "-n", NS, "sim-a", "--wait=false")
    log("deleted pod sim-a while the client loop runs")
    out, err = loop.communicate(timeout=LOOP_SECONDS + 30)
    got = results(out)
    failed = [r for r in got if r["status"] != 200]
    providers = [r.get("provider") for r in got]
    log(f"loop: {len(got)} requests in {time.monotonic() - t1:.1f} s, providers in order: "
        f"{''.join('a' if p == 'sim-a' else 'b' if p == 'sim-b' else '?' for p in providers)}")
    check(loop.returncode == 0 and len(got) == LOOP_REQUESTS, f"the loop ran all {LOOP_REQUESTS} requests {err[-300:]}")
    check(not failed, f"zero client-visible errors while sim-a's pod was deleted (failures: {failed[:3]})")
    check("sim-a" in providers[:5] and providers[-5:] == ["sim-b"] * 5,
          "traffic moved from sim-a to sim-b and stayed there")
    log(f"scenario passed in {time.monotonic() - t0:.1f} s")


def main() -> int:
    try:
        run(sys.argv[1])
    except (Failed, subprocess.TimeoutExpired) as exc:
        log(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
