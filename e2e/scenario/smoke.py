"""Tier C smoke scenario on the real node: the sidecar in standalone mode (no operator) in a real pod routes
to simulated providers behind Services. (Failover while a provider's pod is deleted is in chart.py, with the
sidecar the webhook injects.)

    smoke.py IMAGE     (IMAGE: the llmroute image ref imported into the node, e.g. localhost/llmroute:<hash>)

Two simulated OpenAI providers (`llmroute_proxy.sim` openai) run as pods behind Services; the app pod has an `app`
container and the `llmroute` sidecar, whose standalone config (a ConfigMap) names the Services' cluster IPs
(there is no cluster DNS). Requests go from inside the app container to localhost:15400 with urllib (the image's
Python), exactly as an application would. Prints one line per check and its timings; exits 1 on the first
failed check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from kit import (
    MODEL,
    SECURE,
    Failed,
    apply,
    check,
    client_argv,
    cluster_ip,
    kubectl,
    log,
    namespace,
    reachable,
    results,
    sim,
)

NS = "llmroute-e2e"


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
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": NS},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [
                {"name": "app", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "infinity"],
                 "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}, "securityContext": SECURE},
                {"name": "llmroute", "image": image, "imagePullPolicy": "Never",
                 "args": ["serve", "--config", "/etc/llmroute/llmroute.yaml", "--admin-host", "0.0.0.0"],
                 "env": [{"name": "SIM_API_KEY", "value": "sk-sim-e2e"}],
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/llmroute", "readOnly": True}],
                 "readinessProbe": {"httpGet": {"path": "/readyz", "port": 15401}, "periodSeconds": 1},
                 "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
                 "securityContext": SECURE}],
                "volumes": [{"name": "config", "configMap": {"name": "llmroute-config"}}]}}


def run(image: str) -> None:
    t0 = time.monotonic()
    namespace(NS)
    apply(*sim("sim-a", image, NS), *sim("sim-b", image, NS))
    ips = {n: cluster_ip(NS, n) for n in ("sim-a", "sim-b")}
    apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "llmroute-config", "namespace": NS},
           "data": {"llmroute.yaml": sidecar_config(ips)}}, app_pod(image))
    kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/sim-a", "pod/sim-b", "pod/app", "--timeout=120s",
            timeout=130)
    log(f"pods Ready in {time.monotonic() - t0:.1f} s (sim-a {ips['sim-a']}, sim-b {ips['sim-b']})")
    reachable(NS, "app", [f"http://{ip}/v1/models" for ip in ips.values()])

    first = results(kubectl(*client_argv(NS, "app", 3, 30, 0)))
    check(len(first) == 3 and all(r["status"] == 200 for r in first),
          "3 requests from the app container through the sidecar answered 200", first)
    check(all(r["provider"] == "sim-a" and r["content"].startswith(f"[sim-openai {MODEL}] You said: hello")
              for r in first), "answered by the simulator behind sim-a's Service, the primary target", first)
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
