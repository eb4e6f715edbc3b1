"""A real Kubernetes API server on loopback for tier-B tests: etcd and kube-apiserver v1.20.

The binaries come from `e2e/cluster/build-binaries.sh` (built once per machine from Debian's source and
cached; it prints their folder), or from `LLMROUTE_K8S_BIN`. etcd is Debian's. Everything binds
127.0.0.1 on free ports; an admin static token (group system:masters) authenticates the tests. Ready in
about 5 s; see /work/shared/testing.md for what such a server does and does not do (no CEL rules, no
pods ever run).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

REPO = Path(__file__).resolve().parents[1]
TOKEN = "llmroute-tier-b-admin"
READY_TIMEOUT_S = 60.0


def binaries() -> Path:
    configured = os.environ.get("LLMROUTE_K8S_BIN")
    if configured:
        return Path(configured)
    done = subprocess.run(["bash", str(REPO / "e2e/cluster/build-binaries.sh")], check=True,
                          stdout=subprocess.PIPE, text=True)
    return Path(done.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class KubeAPI:
    url: str
    kubeconfig: Path
    bin_dir: Path

    def request(self, method: str, path: str, body: object = None,
                content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        """The status and the JSON body (non-JSON bodies as {"text": ...})."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, context=_INSECURE, timeout=30) as response:
                return response.status, _body(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _body(error.read())

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                              input=stdin, capture_output=True, text=True, timeout=60)


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE  # the API server's self-signed serving certificate, on loopback


def _body(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        return {"text": raw.decode(errors="replace")}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _write_files(workdir: Path, url: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (workdir / "sa.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    (workdir / "sa.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (workdir / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")
    (workdir / "kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "t", "user": {"token": TOKEN}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t", "namespace": "default"}}],
    }))


@contextmanager
def running_apiserver(workdir: Path) -> Iterator[KubeAPI]:
    bin_dir = binaries()
    etcd_client, etcd_peer, secure = _free_port(), _free_port(), _free_port()
    url = f"https://127.0.0.1:{secure}"
    _write_files(workdir, url)
    logs = (workdir / "etcd.log").open("wb"), (workdir / "apiserver.log").open("wb")
    etcd = subprocess.Popen([
        shutil.which("etcd") or "/usr/bin/etcd", "--data-dir", str(workdir / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
        "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
        "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
        "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
    ], stdout=logs[0], stderr=subprocess.STDOUT)
    apiserver = subprocess.Popen([
        str(bin_dir / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_client}",
        "--bind-address=127.0.0.1", f"--secure-port={secure}", f"--cert-dir={workdir / 'certs'}",
        f"--token-auth-file={workdir / 'tokens.csv'}", "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc",
        "--api-audiences=https://kubernetes.default.svc",
        f"--service-account-key-file={workdir / 'sa.pub'}",
        f"--service-account-signing-key-file={workdir / 'sa.key'}",
        "--service-cluster-ip-range=10.96.0.0/24", "--disable-admission-plugins=ServiceAccount",
    ], stdout=logs[1], stderr=subprocess.STDOUT)
    api = KubeAPI(url, workdir / "kubeconfig", bin_dir)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if api.request("GET", "/readyz")[0] == 200:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline or apiserver.poll() is not None:
                raise RuntimeError(f"kube-apiserver not ready; see {workdir / 'apiserver.log'}")
            time.sleep(0.25)
        yield api
    finally:
        apiserver.kill()  # its graceful shutdown takes seconds, and nothing here outlives the test
        etcd.terminate()
        for process in (apiserver, etcd):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
