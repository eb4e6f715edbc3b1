"""The operator, kopf included, against kmock's in-process Kubernetes API, and fake sidecars over the hub.

kmock needs help with kopf 1.45 in five places (see shared/testing.md); these tests meet them so:
objects get `uid`, `resourceVersion` and a `generation` that grows with spec changes (`Emulator`);
the operator names its Events itself (no `generateName`); a status patch is a merge of `{"status": …}`,
which kmock's whole-object merge applies correctly; the handlers know the kind of list items without
it; watch streams are read by kopf line by line whatever their content type. Discovery comes from
kmock's bundled built-in resources plus the two CRDs from crds/.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import attrs
import kmock
import kopf
import orjson

from llmroute_operator.certs import CertFiles
from llmroute_operator.crds import load_crds
from llmroute_operator.hub import hub_ssl_context
from llmroute_operator.k8s import Connection, KubernetesApi
from llmroute_operator.main import Operator, Settings
from llmroute_proxy.sync.protocol import SYNC_PATH, Ack, Hello, Nack, TablePush, decode_down, encode
from tests.syncfakes import FakeReviewer

TIMEOUT = 10.0


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock that stamps objects as an API server does: uid, resourceVersion, generation."""

    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            if request.action == kmock.action.CREATE:
                metadata = data.setdefault("metadata", {})
                metadata.setdefault("uid", str(uuid.uuid4()))
                metadata.setdefault("generation", 1)
                metadata["resourceVersion"] = str(next(self._versions))
            elif request.action == kmock.action.UPDATE and request.name is not None:
                metadata = data.setdefault("metadata", {})
                metadata["resourceVersion"] = str(next(self._versions))
                key = (request.resource, request.namespace, request.name)
                if "spec" in data and request.subresource is None and key in self.objects:
                    current = self.objects[key].raw.get("metadata", {}).get("generation", 1)
                    metadata["generation"] = current + 1
        return await super()._handle(request)


def plural_path(kind: str, namespace: str, name: str | None = None) -> str:
    group = {"LLMProvider": "/apis/llmroute.dev/v1alpha1", "LLMRoute": "/apis/llmroute.dev/v1alpha1"}.get(kind, "/api/v1")
    plural = {"LLMProvider": "llmproviders", "LLMRoute": "llmroutes", "Pod": "pods", "Secret": "secrets",
              "Node": "nodes", "Event": "events"}[kind]
    base = f"{group}/{plural}" if kind == "Node" else f"{group}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


@dataclass
class Cluster:
    api: Emulator
    operator: Operator
    certs: CertFiles
    stop: asyncio.Event

    async def create(self, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        path = plural_path(body["kind"], metadata.get("namespace", ""))
        async with self.api.post(path, json=body) as response:
            assert response.status in (200, 201), await response.text()

    async def patch(self, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        path = plural_path(body["kind"], metadata.get("namespace", ""), metadata["name"])
        async with self.api.patch(path, data=orjson.dumps({"spec": body["spec"]}),
                                  headers={"Content-Type": "application/merge-patch+json"}) as response:
            assert response.status == 200, await response.text()

    def status(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        resource = "llmroute.dev/v1alpha1/" + {"LLMRoute": "llmroutes", "LLMProvider": "llmproviders"}[kind]
        return dict(self.api.objects[resource, namespace, name].raw.get("status") or {})

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return [obj.raw for (resource, ns, _), obj in self.api.objects.items()
                if resource.plural == "events" and ns == namespace and not obj.deleted]

    async def until(self, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait for a status pass after which `check` holds (status passes follow every change)."""
        writer = self.operator.writer
        async with asyncio.timeout(timeout):
            while not check():
                writer.passed.clear()
                await writer.passed.wait()


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c.get("reason", ""), c.get("message", "")) for c in status.get("conditions", [])}


def prepare(api: Emulator) -> None:
    api.resources.load_bundled()
    for crd in load_crds():
        names = crd["spec"]["names"]
        api.resources[f"{crd['spec']['group']}/v1alpha1/{names['plural']}"] = kmock.ResourceInfo(
            kind=names["kind"], singular=names["singular"], namespaced=True, subresources={"status"},
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"})


@contextlib.asynccontextmanager
async def running_operator(api: Emulator, certs: CertFiles, login: Callable[[], kopf.ConnectionInfo] | None = None,
                           status_debounce_s: float = 0.0) -> AsyncIterator[Cluster]:
    server = str(api.url).rstrip("/")
    async with aiohttp.ClientSession() as session:
        k8s = KubernetesApi(session, Connection(server, False, dict), instance="test")
        settings = Settings(hub_host="127.0.0.1", hub_port=0, admin_host="127.0.0.1", admin_port=0,
                            status_debounce_s=status_debounce_s, status_resync_s=3600.0, secret_refresh_s=3600.0)
        operator = Operator(settings, k8s, k8s, FakeReviewer(), events_posted=lambda: k8s.events_posted)
        stop = asyncio.Event()
        task = asyncio.create_task(operator.run(login or kopf.ConnectionInfo(server=server), stop_flag=stop,
                                                hub_ssl=hub_ssl_context(str(certs.cert), str(certs.key))),
                                   name="operator-run")
        try:
            async with asyncio.timeout(TIMEOUT):
                await operator.ready.wait()
                while not operator.hub_port:
                    await asyncio.sleep(0)
            yield Cluster(api, operator, certs, stop)
        finally:
            stop.set()
            async with asyncio.timeout(TIMEOUT):
                await task


class FakeSidecar:
    """A sidecar's side of the stream, message by message, for the tests to drive."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.version: str | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, cluster: Cluster, namespace: str, pod: str) -> AsyncIterator[FakeSidecar]:
        context = ssl.create_default_context(cafile=str(cluster.certs.ca))
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"wss://localhost:{cluster.operator.hub_port}{SYNC_PATH}", ssl=context,
                headers={"Authorization": f"Bearer pod:{namespace}:{pod}"}) as ws:
            await ws.send_str(encode(Hello(None, "test")))
            yield cls(ws)

    async def table(self, timeout: float = TIMEOUT) -> TablePush:
        """The next table pushed (leases in between are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                message = decode_down(await self.ws.receive_str())
                if isinstance(message, TablePush):
                    self.version = message.version
                    return message

    async def ack(self) -> None:
        assert self.version is not None
        await self.ws.send_str(encode(Ack(self.version)))

    async def nack(self, error: str) -> None:
        assert self.version is not None
        await self.ws.send_str(encode(Nack(self.version, error)))

    async def usage(self, route: str, cost_usd: float) -> None:
        await self.ws.send_str(orjson.dumps({"type": "usage", "interval": 10, "routes": {
            route: {"requests": 1, "input_tokens": 10, "output_tokens": 5, "cost_usd": cost_usd}}}).decode())
