"""Fakes of the operator's side of the hub seam, a running hub over TLS, and table payloads."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from llmroute_operator.certs import CertFiles
from llmroute_operator.contracts import DesiredTable, Generation, PodRef
from llmroute_operator.hub import Hub, hub_ssl_context
from llmroute_operator.tokenreview import Identity, Refused
from llmroute_proxy.sync.protocol import payload_version, table_payload

KEY = "sk-test-key-do-not-log-0123456789"


def documents(model: str = "gpt-4o-mini", rpm: float | None = 600, budget_usd: float | None = None,
              url: str = "http://127.0.0.1:9/v1") -> list[dict[str, Any]]:
    limits = {} if rpm is None else {"limits": {"requestsPerMinute": rpm, "maxConcurrency": 8}}
    route: dict[str, Any] = {"tiers": {"fast": {"targets": [{"provider": "openai-main", "model": model}]}},
                             "defaultTier": "fast"}
    if budget_usd is not None:
        route["budget"] = {"limitUSD": budget_usd, "period": "day", "onExceeded": "reject"}
    return [
        {"apiVersion": "llmroute.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": "openai-main"},
         "spec": {"type": "openai", "endpoints": [{"region": "us", "url": url}],
                  "credentials": {"secretRef": {"name": "keys", "key": "openai"}}, **limits}},
        {"apiVersion": "llmroute.dev/v1alpha1", "kind": "LLMRoute", "metadata": {"name": "chat"},
         "spec": route},
    ]


def desired(docs: list[dict[str, Any]] | None = None, key: str = KEY) -> DesiredTable:
    payload = table_payload("us", docs if docs is not None else documents(), {"openai-main": key})
    return DesiredTable(payload_version(payload), copy.deepcopy(payload))


class FakeSource:
    def __init__(self) -> None:
        self.tables: dict[PodRef, DesiredTable] = {}
        self._generation = Generation()
        self.lookups = 0

    def table_for(self, pod: PodRef) -> DesiredTable | None:
        self.lookups += 1
        return self.tables.get(pod)

    def generation(self) -> int:
        return self._generation.value

    async def changed(self, since: int) -> int:
        return await self._generation.changed(since)

    async def set(self, pod: PodRef, table: DesiredTable | None) -> None:
        if table is None:
            self.tables.pop(pod, None)
        else:
            self.tables[pod] = table
        await self._generation.bump()


@dataclass
class FakeSink:
    events: list[tuple[str, Any, ...]] = field(default_factory=list)  # type: ignore[misc]
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def _add(self, *event: Any) -> None:
        self.events.append(event)
        self.arrived.set()

    def connected(self, pod: PodRef) -> None:
        self._add("connected", pod)

    def disconnected(self, pod: PodRef) -> None:
        self._add("disconnected", pod)

    def pushed(self, pod: PodRef, version: str) -> None:
        self._add("pushed", pod, version)

    def acked(self, pod: PodRef, version: str) -> None:
        self._add("acked", pod, version)

    def nacked(self, pod: PodRef, version: str, error: str) -> None:
        self._add("nacked", pod, version, error)

    def usage(self, pod: PodRef, report: Mapping[str, Any]) -> None:
        self._add("usage", pod, dict(report))

    def refused(self, reason: str, pod: PodRef | None) -> None:
        self._add("refused", reason, pod)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[tuple[Any, ...]]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.of(kind)


class FakeReviewer:
    """Tokens are `pod:NS:NAME` (valid) or anything else, refused as an API server would."""

    def __init__(self) -> None:
        self.calls = 0
        self.refusals: dict[str, Refused] = {}

    async def review(self, token: str) -> Identity:
        self.calls += 1
        if token in self.refusals:
            raise self.refusals[token]
        kind, _, rest = token.partition(":")
        namespace, _, name = rest.partition(":")
        if kind != "pod" or not namespace or not name:
            raise Refused(401, "token not authenticated: invalid bearer token")
        return Identity(PodRef(namespace, name), f"uid-{name}")


@asynccontextmanager
async def running_hub(hub: Hub, certs: CertFiles) -> AsyncIterator[str]:
    """The hub on a free loopback port; yields its wss:// URL."""
    runner = web.AppRunner(hub.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=hub_ssl_context(str(certs.cert), str(certs.key)))
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"wss://localhost:{port}/v1/sync"
    finally:
        await runner.cleanup()


def write_token(path: Path, pod: PodRef) -> Path:
    path.write_text(f"pod:{pod.namespace}:{pod.name}\n")
    return path
