"""`E2E_CLUSTER=kind make e2e`: the chart scenario on a kind cluster, for a machine with Docker.

    kind.py            create the cluster, build and load the images, run e2e/scenario/chart.py, delete it all

The same checks as the local node's run (e2e/scenario/chart.py, given this cluster's kubeconfig and the
images' refs), on the Kubernetes version of kind's node image (from 1.29 the webhook injects a native
sidecar, which the scenario then checks). Steps, each timed:
  1. up:       `kind create cluster` with the config `kind_config()` renders (one control-plane node, the API
               server on 127.0.0.1 only), its kubeconfig in a private directory (never ~/.kube/config); the
               node's ICMP rate limit off, as on the local node;
  2. images:   `docker build` of operator/Dockerfile (the llmroute image: operator, simulators, app) and
               proxy/Dockerfile (the injected sidecar), then `kind load docker-image` of both;
  3. scenario: chart.py --kubeconfig … --image … --sidecar-image … (kubectl from PATH);
  4. down:     `kind delete cluster`;
  5. check:    no kind cluster of that name and no container labelled with it is left.
Where docker (with a reachable daemon), kind or kubectl is missing it says so in one line and exits 0;
E2E_REQUIRED=1 makes that a failure, as for the local node. Differences from the local node: the cluster
has DNS and its pods have egress through Docker's network (the scenario depends on neither); the host is
not checked for leftovers beyond Docker's containers, which kind owns.

Settings: E2E_KIND_NAME (default llmroute-e2e), E2E_KIND_NODE_IMAGE (a kindest/node image, best pinned
by digest; default: kind's own), E2E_KIND_TAG (the images' tag, default e2e). Stdlib only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("docker", "kind", "kubectl")

Run = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class Settings:
    name: str = "llmroute-e2e"
    node_image: str | None = None
    tag: str = "e2e"
    python: str = sys.executable

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        tag = env.get("E2E_KIND_TAG") or "e2e"
        if tag == "latest":  # :latest makes the kubelet pull whatever the policy says
            raise ValueError("E2E_KIND_TAG must not be latest")
        return cls(env.get("E2E_KIND_NAME") or "llmroute-e2e", env.get("E2E_KIND_NODE_IMAGE") or None, tag)

    @property
    def image(self) -> str:
        return f"llmroute/llmroute:{self.tag}"

    @property
    def sidecar_image(self) -> str:
        return f"llmroute/llmroute-proxy:{self.tag}"


def log(msg: str) -> None:
    print(f"e2e: {msg}", file=sys.stderr, flush=True)


def missing(which: Callable[[str], str | None] = shutil.which, run: Run = subprocess.run) -> str | None:
    """What this host lacks for the kind path, in one line; None when it has it all."""
    absent = [tool for tool in TOOLS if which(tool) is None]
    if absent:
        return f"E2E_CLUSTER=kind needs {', '.join(TOOLS)}; not on PATH: {', '.join(absent)}"
    try:
        info = run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "E2E_CLUSTER=kind: docker info did not answer within 30 s (is the daemon running?)"
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"E2E_CLUSTER=kind: docker cannot reach its daemon ({reason})"
    return None


def kind_config(settings: Settings) -> str:
    """The kind Cluster config: one control-plane node, the API server listening on 127.0.0.1 only (JSON is
    YAML, and kind reads either)."""
    node: dict[str, object] = {"role": "control-plane"}
    if settings.node_image:
        node["image"] = settings.node_image
    return json.dumps({"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": settings.name,
                       "networking": {"apiServerAddress": "127.0.0.1"}, "nodes": [node]}, indent=1) + "\n"


def commands(settings: Settings, workdir: Path) -> dict[str, list[list[str]]]:
    """Every step's commands, in order (what main() runs; tests read them)."""
    kubeconfig = workdir / "kubeconfig"
    return {
        "up": [["kind", "create", "cluster", "--name", settings.name, "--config", str(workdir / "kind.json"),
                "--kubeconfig", str(kubeconfig), "--wait", "180s"],
               # As on the local node (node.py): the node refuses every connection to a Service with no
               # endpoint at once, not one a second (the kernel's ICMP rate limit, in the node's namespace).
               ["docker", "exec", f"{settings.name}-control-plane", "sysctl", "-w", "net.ipv4.icmp_ratelimit=0"]],
        "images": [
            ["docker", "build", "-f", str(REPO / "operator" / "Dockerfile"), "-t", settings.image, str(REPO)],
            ["docker", "build", "-f", str(REPO / "proxy" / "Dockerfile"), "-t", settings.sidecar_image, str(REPO)],
            ["kind", "load", "docker-image", "--name", settings.name, settings.image, settings.sidecar_image],
        ],
        "scenario": [[settings.python, str(REPO / "e2e" / "scenario" / "chart.py"), "--kubeconfig", str(kubeconfig),
                      "--kubectl", "kubectl", "--image", settings.image, "--sidecar-image", settings.sidecar_image]],
        "down": [["kind", "delete", "cluster", "--name", settings.name, "--kubeconfig", str(kubeconfig)]],
    }


def leftovers(settings: Settings, run: Run = subprocess.run) -> list[str]:
    """What is left of the cluster: its name among kind's clusters, containers labelled with it."""
    left = []
    clusters = run(["kind", "get", "clusters"], capture_output=True, text=True, timeout=60)
    if settings.name in clusters.stdout.split():
        left.append(f"kind cluster {settings.name}")
    containers = run(["docker", "ps", "-a", "-q", "--filter", f"label=io.x-k8s.kind.cluster={settings.name}"],
                     capture_output=True, text=True, timeout=60)
    left += [f"container {c}" for c in containers.stdout.split()]
    return left


def main(env: Mapping[str, str] = os.environ, run: Run = subprocess.run,
         which: Callable[[str], str | None] = shutil.which) -> int:
    try:
        settings = Settings.from_env(env)
    except ValueError as error:
        log(str(error))
        return 2
    lack = missing(which, run)
    if lack is not None:
        log(f"skipped: {lack}")
        return 1 if env.get("E2E_REQUIRED") == "1" else 0
    timings: list[str] = []
    rc = 0

    def phase(name: str, steps: Sequence[list[str]]) -> bool:
        start = time.monotonic()
        try:
            return all(run(step, cwd=REPO, text=True).returncode == 0 for step in steps)
        finally:
            timings.append(f"{name} {time.monotonic() - start:.0f}s")

    with tempfile.TemporaryDirectory(prefix="llmroute-kind-") as scratch:
        workdir = Path(scratch)
        (workdir / "kind.json").write_text(kind_config(settings))
        steps = commands(settings, workdir)
        try:
            for name in ("up", "images", "scenario"):
                if not phase(name, steps[name]):
                    log(f"{name} failed")
                    rc = 1
                    break
        finally:
            if not phase("down", steps["down"]):
                rc = 1
            start = time.monotonic()
            left = leftovers(settings, run)
            timings.append(f"check {time.monotonic() - start:.0f}s")
            if left:
                log(f"left behind: {', '.join(left)}")
                rc = 1
    log(f"timings (kind): {' '.join(timings)}")
    log("passed" if rc == 0 else "FAILED")
    return rc


if __name__ == "__main__":
    sys.exit(main())
