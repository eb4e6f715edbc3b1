"""The I/O loops around the pure index and status computer: status writes and Secret reads.

`StatusWriter` recomputes every status when something changed (debounced, so a thousand ACKs arriving
together make one pass) and at least every `resync_s` (for time-driven changes: a budget period ending,
a failure window passing); it patches only statuses that differ from what it wrote, and posts the Events
the computation calls for. `SecretReader` reads the Secrets that providers name, at once when one is
missing and again every `refresh_s`, so a rotated key reaches the sidecars without a watch on Secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from llmroute_operator.contracts import PodRef
from llmroute_operator.index import ClusterIndex
from llmroute_operator.status import Event, ObjectRef, StatusBook, compute

log = logging.getLogger("llmroute.status")

Sleep = Callable[[float], Awaitable[None]]


class StatusApi(Protocol):
    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool: ...

    async def post_event(self, event: Event, uid: str | None) -> None: ...


class SecretApi(Protocol):
    async def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None: ...


class StatusWriter:
    def __init__(self, index: ClusterIndex, book: StatusBook, api: StatusApi, *,
                 clock: Callable[[], float] = time.time, debounce_s: float = 1.0, resync_s: float = 30.0,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.index, self.book, self.api = index, book, api
        self.clock, self.debounce_s, self.resync_s, self.sleep = clock, debounce_s, resync_s, sleep
        self.written: dict[ObjectRef, dict[str, Any]] = {}  # what the API holds: patches are diffs from it
        # what the last pass computed, patched or not: the Events of a change go with its first computation,
        # so a patch that fails and is retried does not announce the change again
        self.computed: dict[ObjectRef, dict[str, Any]] = {}
        self.passes = 0
        self.failures = 0
        self.passed = asyncio.Event()  # set after every pass, for whoever waits for status to catch up
        self.ready: asyncio.Event | None = None  # when set: no pass before it (the index is still filling)
        # told (namespace, route, period start, USD) of each route's spend read back from its status
        self.spend_seeded: list[Callable[[str, str, float, float], None]] = [book.seed_spend]
        self._due = asyncio.Event()

    def poke(self) -> None:
        self._due.set()

    def seed(self, ref: ObjectRef, status: Mapping[str, Any] | None) -> None:
        """The status a resource already has (after an operator restart): not rewritten when unchanged,
        its transitions not announced again, and its spend counted on from where it was."""
        if ref in self.written or not status:
            return
        self.written[ref] = dict(status)
        self.computed[ref] = dict(status)
        spend = status.get("spend") or {}
        start = spend.get("periodStart")
        if ref[0] == "LLMRoute" and isinstance(start, str) and isinstance(spend.get("periodUSD"), int | float):
            with contextlib.suppress(ValueError):
                stamp = datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
                for seeded in self.spend_seeded:
                    seeded(ref[1], ref[2], stamp, float(spend["periodUSD"]))

    def forget(self, ref: ObjectRef) -> None:
        self.written.pop(ref, None)
        self.computed.pop(ref, None)

    async def run(self) -> None:
        if self.ready is not None:
            await self.ready.wait()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self.resync_s)
            if self.debounce_s > 0:
                await self.sleep(self.debounce_s)
            self._due.clear()
            try:
                await self.write_once()
            except Exception:  # one bad pass must not end status writing
                log.exception("status pass failed")

    async def write_once(self) -> None:
        statuses, events = compute(self.index, self.book, self.computed, self.clock())
        self.computed = statuses
        for ref, status in statuses.items():
            old = self.written.get(ref)
            if old == status:
                continue
            patch = {**{key: None for key in old or {} if key not in status}, **status}
            try:
                if await self.api.patch_status(ref, patch):
                    self.written[ref] = status
            except Exception as error:  # retried on the next pass
                self.failures += 1
                log.warning("status of %s %s/%s not written: %s", *ref, error)
        for gone in set(self.written) - set(statuses):
            del self.written[gone]
        uids = {(v.kind, v.namespace, v.name): v.uid for v in self.index.verdicts()}
        for event in events:
            kind, namespace, name = event.involved
            pod = self.index.pod(PodRef(namespace, name)) if kind == "Pod" else None
            try:
                await self.api.post_event(event, pod.uid if pod is not None else uids.get(event.involved))
            except Exception as error:
                log.warning("event %s for %s %s/%s not posted: %s", event.reason, *event.involved, error)
        self.passes += 1
        self.passed.set()


class SecretReader:
    def __init__(self, index: ClusterIndex, api: SecretApi, *, refresh_s: float = 30.0) -> None:
        self.index, self.api, self.refresh_s = index, api, refresh_s
        self.reads = 0
        self._due = asyncio.Event()

    def poke(self) -> None:
        """A provider changed: read the Secrets it names that the index does not hold yet."""
        if self.index.missing_secrets():
            self._due.set()

    async def run(self) -> None:
        while True:
            poked = False
            with contextlib.suppress(TimeoutError):
                poked = await asyncio.wait_for(self._due.wait(), self.refresh_s)
            self._due.clear()
            try:
                await self.read(self.index.missing_secrets() if poked else self.index.named_secrets())
            except Exception:
                log.exception("reading Secrets failed")

    async def read(self, keys: set[tuple[str, str]]) -> None:
        for namespace, name in sorted(keys):
            data = await self.api.secret_data(namespace, name)
            self.reads += 1
            if data is None:
                self.index.delete_secret(namespace, name)
            else:
                self.index.put_secret(namespace, name, data)
