"""The operator's own Kubernetes API calls, beside kopf's watches: status patches, Events, Secret reads.

kopf watches and logs in; this module reuses the same `kopf.ConnectionInfo` for the few writes and reads
kopf does not do for us, over one aiohttp session. Secrets are read one by one with `get` (never
listed or watched), so the operator only ever receives the Secrets that providers name, and its RBAC
needs no `list`/`watch` on Secrets. Nothing here logs a response body.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import orjson

from llmroute_operator.status import Event, ObjectRef

log = logging.getLogger("llmroute.k8s")

GROUP_VERSION = "llmroute.dev/v1alpha1"
PLURALS = {"LLMProvider": "llmproviders", "LLMRoute": "llmroutes"}
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
COMPONENT = "llmroute-operator"


def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """In a pod: the service account, with the API server's address from the environment (no cluster
    DNS needed). Elsewhere: $KUBECONFIG or ~/.kube/config, read now (not at import)."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = SA_DIR / "token"
    if host and token_file.exists():
        ca = SA_DIR / "ca.crt"
        host = f"[{host}]" if ":" in host else host
        return kopf.ConnectionInfo(server=f"https://{host}:{port}", token=token_file.read_text().strip(),
                                   ca_path=str(ca) if ca.exists() else None)
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig ($KUBECONFIG or ~/.kube/config)")
    return info


@dataclass(frozen=True, slots=True)
class Connection:
    server: str
    ssl: ssl.SSLContext | bool
    headers: Callable[[], dict[str, str]]


def connection(info: kopf.ConnectionInfo, scratch: Path | None = None) -> Connection:
    """TLS and credentials for aiohttp from kopf's ConnectionInfo (client certificates go to 0600 files)."""
    context: ssl.SSLContext | bool = True
    if info.server.startswith("https"):
        context = ssl.create_default_context()
        if info.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if info.ca_path:
            context.load_verify_locations(cafile=os.fsdecode(info.ca_path))
        if info.ca_data:
            context.load_verify_locations(cadata=_pem(info.ca_data))
        cert, key = info.certificate_path, info.private_key_path
        if info.certificate_data and info.private_key_data:
            folder = Path(tempfile.mkdtemp(prefix="llmroute-", dir=scratch))
            cert, key = folder / "client.crt", folder / "client.key"
            for path, data in ((cert, info.certificate_data), (key, info.private_key_data)):
                path.touch(mode=0o600)
                path.write_text(_pem(data))
        if cert and key:
            context.load_cert_chain(os.fsdecode(cert), os.fsdecode(key))
    static = {"Authorization": f"Bearer {info.token}"} if info.token else {}
    if info.username and info.password:
        static = {"Authorization": "Basic " + base64.b64encode(f"{info.username}:{info.password}".encode()).decode()}
    token_file = SA_DIR / "token"
    in_cluster = info.token is not None and token_file.exists()

    def headers() -> dict[str, str]:
        if in_cluster:  # the kubelet rotates the projected token: read it again
            return {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        return dict(static)

    return Connection(info.server.rstrip("/"), context, headers)


def _pem(data: str | bytes) -> str:
    """kubeconfig's *-data fields are base64 of PEM; accept PEM as it is too."""
    text = data.decode() if isinstance(data, bytes) else data
    return text if "-----BEGIN" in text else base64.b64decode(text).decode()


class KubernetesApi:
    def __init__(self, session: aiohttp.ClientSession, conn: Connection, instance: str | None = None) -> None:
        self.session, self.conn = session, conn
        self.instance = instance or socket.gethostname()
        self.status_writes = 0
        self.events_posted = 0

    async def server_version(self) -> str:
        """The API server's `gitVersion` (e.g. v1.29.3): /version is readable by everyone."""
        async with self.session.get(f"{self.conn.server}/version", headers=self.conn.headers(),
                                    ssl=self.conn.ssl) as response:
            await _raise_for_status(response)
            return str(orjson.loads(await response.read()).get("gitVersion", ""))

    async def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The Secret's `data`, or None when it does not exist or may not be read."""
        url = f"{self.conn.server}/api/v1/namespaces/{namespace}/secrets/{name}"
        async with self.session.get(url, headers=self.conn.headers(), ssl=self.conn.ssl) as response:
            if response.status in (403, 404):
                if response.status == 403:
                    log.warning("may not read Secret %s/%s (RBAC)", namespace, name)
                return None
            await _raise_for_status(response)
            body = orjson.loads(await response.read())
        data = body.get("data") or {}
        return data if isinstance(data, dict) else {}

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool:
        """A merge patch of the resource's status subresource; False when the resource is gone."""
        kind, namespace, name = ref
        url = f"{self.conn.server}/apis/{GROUP_VERSION}/namespaces/{namespace}/{PLURALS[kind]}/{name}/status"
        headers = {**self.conn.headers(), "Content-Type": "application/merge-patch+json"}
        async with self.session.patch(url, data=orjson.dumps({"status": patch}), headers=headers,
                                      ssl=self.conn.ssl) as response:
            if response.status == 404:
                return False
            await _raise_for_status(response)
        self.status_writes += 1
        return True

    async def post_event(self, event: Event, uid: str | None, now: datetime | None = None) -> None:
        kind, namespace, name = event.involved
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {"apiVersion": GROUP_VERSION if kind in PLURALS else "v1", "kind": kind,
                               "name": name, "namespace": namespace, **({"uid": uid} if uid else {})},
            "type": event.type, "reason": event.reason, "message": event.message[:1024],
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "reportingInstance": self.instance, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        url = f"{self.conn.server}/api/v1/namespaces/{namespace}/events"
        headers = {**self.conn.headers(), "Content-Type": "application/json"}
        async with self.session.post(url, data=orjson.dumps(body), headers=headers, ssl=self.conn.ssl) as response:
            await _raise_for_status(response)
        self.events_posted += 1


class ApiError(Exception):
    """The API server refused a request; `message` is its Status message (never a Secret's body)."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(f"HTTP {status}: {message}")


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    try:
        message = str(orjson.loads(await response.read()).get("message", ""))
    except (orjson.JSONDecodeError, AttributeError, aiohttp.ClientError):
        message = response.reason or ""
    raise ApiError(response.status, message[:500])
