"""etcd and kube-apiserver as both of our runs start them: the real node (node.py, tier C) and the API
server alone (tests/kube/apiserver.py, tier B).

What they share is here once: the service-account key pair, etcd's command line, and the API server's flags
every run needs (etcd, the secure port only, static tokens, bound service-account tokens). Each caller adds
its own flags: the node its CA, the kubelet's client certificate and Node authorization; tier B a
self-signed serving certificate and no ServiceAccount admission (no controller-manager makes accounts there).
Imported by node.py as a sibling script (`controlplane`) and by the tests as `e2e.cluster.controlplane`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"


def write_service_account_keys(directory: Path) -> tuple[Path, Path]:
    """The key that signs service-account tokens (0600) and its public half; (private, public)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / "sa.key", directory / "sa.pub"
    private.touch(mode=0o600)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def etcd_argv(data_dir: Path, client_port: int, peer_port: int, *, name: str = "default",
              metrics_port: int | None = None) -> list[str]:
    """One etcd member on 127.0.0.1 (Debian's etcd-server)."""
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    argv = [shutil.which("etcd") or "/usr/bin/etcd", "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{name}={peer}"]
    if metrics_port is not None:
        argv += ["--listen-metrics-urls", f"http://127.0.0.1:{metrics_port}"]
    return argv


def apiserver_argv(binary: Path, *, etcd_port: int, port: int, tokens: Path, service_account_keys: tuple[Path, Path],
                   service_cidr: str, extra: Sequence[str] = ()) -> list[str]:
    """kube-apiserver on etcd at `etcd_port`, HTTPS on `port` only, the static tokens in `tokens` (CSV), bound
    service-account tokens signed by `service_account_keys` (private, public); then the caller's flags."""
    private, public = service_account_keys
    return [str(binary), f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--secure-port={port}", "--insecure-port=0",
            f"--token-auth-file={tokens}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}", f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={public}", f"--service-account-signing-key-file={private}",
            f"--service-cluster-ip-range={service_cidr}", "--profiling=false", *extra]
