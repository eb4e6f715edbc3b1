"""A real Kubernetes API server (tier B): etcd and kube-apiserver v1.20 on loopback, started for the tests.

The binaries are Debian's `kubernetes` source package built once per machine by
`e2e/cluster/build-binaries.sh` (cached under ~/.cache/llmroute); etcd is Debian's `etcd-server`.
No node runs: tests create Pod and Node objects and set their status themselves. Authentication is a
static admin token (group system:masters) plus real service-account tokens (TokenRequest, TokenReview),
authorization is RBAC, so what a ClusterRole does not grant is really forbidden.

Run by hand: `python -m tests.kube.apiserver` starts one and prints a kubeconfig path.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.cluster.controlplane import apiserver_argv, etcd_argv, write_service_account_keys

from llmroute_operator.crds import load_crds
from tests.kube.client import rest
from tests.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "e2e" / "cluster" / "build-binaries.sh"
ADMIN_TOKEN = "llmroute-tier-b-admin"
READY_TIMEOUT_S = 60.0


class ApiServerUnavailable(RuntimeError):
    """The binaries could not be found or built, or the server did not become ready."""


def kubernetes_bin_dir() -> Path:
    """`$LLMROUTE_K8S_BIN`, else the build script's cache (which builds once if it must, 7-8 min)."""
    if configured := os.environ.get("LLMROUTE_K8S_BIN"):
        return Path(configured)
    result = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ApiServerUnavailable(f"{BUILD_SCRIPT.name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class ApiServer:
    """One etcd + kube-apiserver pair in a private directory; `start()` returns once /readyz answers."""

    bin_dir: Path
    root: Path
    port: int = 0
    _etcd: subprocess.Popen[bytes] | None = None
    _apiserver: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The self-signed serving certificate the API server made in its cert dir (its own CA)."""
        return self.root / "certs" / "apiserver.crt"

    @property
    def service_account_key(self) -> Path:
        """The key the API server signs service-account tokens with (tests mint tokens with it)."""
        return self.root / "sa.key"

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    def start(self) -> ApiServer:
        (self.root / "certs").mkdir(parents=True, exist_ok=True)
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        etcd_port, peer_port, port = free_ports(3)
        self.port = self.port or port
        self._etcd = subprocess.Popen(etcd_argv(self.root / "etcd", etcd_port, peer_port),
                                      stdout=subprocess.DEVNULL, stderr=(logs / "etcd.log").open("wb"))
        tokens = self.root / "tokens.csv"
        tokens.write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        self._apiserver = subprocess.Popen(
            apiserver_argv(self.bin_dir / "kube-apiserver", etcd_port=etcd_port, port=self.port, tokens=tokens,
                           service_account_keys=write_service_account_keys(self.root),
                           service_cidr="10.96.0.0/24",
                           extra=["--bind-address=127.0.0.1", f"--cert-dir={self.root / 'certs'}",
                                  "--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount",
                                  "--logtostderr=true", "--v=0"]),
            stdout=subprocess.DEVNULL, stderr=(logs / "kube-apiserver.log").open("wb"))
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            assert self._apiserver is not None and self._etcd is not None
            for name, process in (("kube-apiserver", self._apiserver), ("etcd", self._etcd)):
                if process.poll() is not None:
                    raise ApiServerUnavailable(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            if self.ca_file.exists():
                try:
                    if rest(self.url, ADMIN_TOKEN, self.ssl_context(), "GET", "/readyz", timeout=2)[0] == 200:
                        return
                except OSError as error:  # urllib's URLError too: not listening yet
                    last = str(error)
            time.sleep(0.2)
        raise ApiServerUnavailable(f"not ready within {READY_TIMEOUT_S}s ({last}):\n{self.log_tail('kube-apiserver')}")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kubeconfig(self, path: Path, token: str = ADMIN_TOKEN, namespace: str = "default") -> Path:
        """A kubeconfig for this server as the holder of `token`."""
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: tier-b, cluster: {{server: '{self.url}', certificate-authority: '{self.ca_file}'}}}}]\n"
            f"users: [{{name: user, user: {{token: '{token}'}}}}]\n"
            f"contexts: [{{name: tier-b, context: {{cluster: tier-b, user: user, namespace: {namespace}}}}}]\n"
            "current-context: tier-b\n")
        path.chmod(0o600)
        return path

    def request(self, method: str, path: str, body: object = None,
                content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        """One call as the admin: the status and the JSON body (other bodies as {"text": ...})."""
        return rest(self.url, ADMIN_TOKEN, self.ssl_context(), method, path, body, content_type)

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The built kubectl (the host's may be a newer, unsupported skew) as the admin."""
        config = self.root / "admin.kubeconfig"
        if not config.exists():
            self.kubeconfig(config)
        return subprocess.run([str(self.kubectl_path), "--kubeconfig", str(config), *args],
                              input=stdin, capture_output=True, text=True, timeout=60, check=False)

    def install_crds(self) -> None:
        """Create both CRDs (or keep them) and wait until they are Established and served."""
        for crd in load_crds():
            status, body = self.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            assert status in (201, 409), body
        deadline = time.monotonic() + 30
        for crd in load_crds():
            while True:
                _, body = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                              f"{crd['metadata']['name']}")
                conditions = {c["type"]: c["status"] for c in body.get("status", {}).get("conditions", [])}
                if conditions.get("Established") == "True":
                    break
                assert time.monotonic() < deadline, body.get("status")
                time.sleep(0.1)
            plural = crd["spec"]["names"]["plural"]
            while self.request("GET", f"/apis/{crd['spec']['group']}/v1alpha1/{plural}")[0] != 200:
                assert time.monotonic() < deadline  # discovery and storage are ready once a list answers
                time.sleep(0.1)

    def stop(self) -> None:
        for process in (self._apiserver, self._etcd):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (self._apiserver, self._etcd):
            if process is None:
                continue
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._apiserver = self._etcd = None


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="llmroute-apiserver-"))
    server = ApiServer(kubernetes_bin_dir(), root).start()
    config = server.kubeconfig(root / "kubeconfig")
    print(f"API server ready at {server.url}\nexport KUBECONFIG={config}\n(Ctrl-C stops it)", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
