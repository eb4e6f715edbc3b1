"""The hub: the TLS WebSocket server in the operator process that every sidecar keeps a stream to.

A sidecar connects to `/v1/sync` with its pod's projected service-account token. The hub asks its
`TokenReviewer` who that is (a refusal is an HTTP 401/403 before the upgrade, with a JSON reason
and never the token), then serves that pod, and only that pod, the table the `TableSource` has for
it: at once, unless the sidecar's hello says it already runs that version, and again on every
change — nothing when the version did not change. ACKs, NACKs and usage reports go to the
`ReportSink`. One encoded message per table version is shared by every pod that runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from aiohttp import WSMsgType, web

from llmroute_operator.contracts import DesiredTable, PodRef, ReportSink, TableSource
from llmroute_operator.leases import LeaseBook
from llmroute_operator.tokenreview import Identity, Refused, TokenReviewer
from llmroute_proxy.scrubbing import scrubber_of
from llmroute_proxy.sync.protocol import (
    ROUTE_KIND,
    SYNC_PATH,
    Ack,
    Hello,
    Nack,
    ProtocolError,
    TablePush,
    UnknownMessage,
    UsageReport,
    decode_up,
    encode,
    tell_of,
)
from llmroute_proxy.table import BudgetPeriod

log = logging.getLogger("llmroute.hub")

T = TypeVar("T")

HELLO_TIMEOUT_S = 10.0
ENCODED_TABLES_KEPT = 256


@dataclass(slots=True)
class Connection:
    pod: PodRef
    uid: str
    ws: web.WebSocketResponse
    sent: str | None = None  # the version it runs or was last sent
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Hub:
    def __init__(self, source: TableSource, sink: ReportSink, reviewer: TokenReviewer, *,
                 leases: LeaseBook | None = None, hello_timeout_s: float = HELLO_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic, wallclock: Callable[[], float] = time.time,
                 synced: asyncio.Event | None = None) -> None:
        self.source = source
        self.synced = synced  # when given: no table and no lease before it is set (the source is filling)
        self.sink = sink
        self.reviewer = reviewer
        self.leases = leases
        self.hello_timeout_s = hello_timeout_s
        self.clock = clock
        self.wallclock = wallclock
        self.connections: dict[PodRef, Connection] = {}
        self._encoded: OrderedDict[str, str] = OrderedDict()
        self._periods: OrderedDict[str, dict[str, BudgetPeriod]] = OrderedDict()  # version → route → period
        self._lease_due = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(SYNC_PATH, self.handle)
        app.on_shutdown.append(self._close_all)
        if self.leases is not None:
            app.cleanup_ctx.append(self._lease_loop)
        return app

    async def _lease_loop(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self.renew_leases_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def renew_leases_forever(self) -> None:
        """Leases for every connected pod: when one connects or leaves, and every third of the TTL."""
        assert self.leases is not None
        while True:
            await self.renew_leases()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lease_due.wait(), self.leases.ttl_s / 3)
            self._lease_due.clear()

    async def renew_leases(self) -> None:
        if self.leases is None or (self.synced is not None and not self.synced.is_set()):
            return
        tables: dict[PodRef, DesiredTable] = {}
        periods: dict[str, BudgetPeriod] = {}
        for pod in list(self.connections):
            desired = self.source.table_for(pod)
            if desired is not None:
                tables[pod] = desired
                periods |= {f"{pod.namespace}/{r}": p for r, p in self._budget_periods(desired).items()}
        granted = self.leases.leases(tables, self.clock(), self.wallclock(), periods)
        for pod, lease in granted.items():
            conn = self.connections.get(pod)
            if conn is not None and not conn.ws.closed:
                with contextlib.suppress(ConnectionError):
                    await conn.ws.send_str(encode(lease))

    def _budget_periods(self, desired: DesiredTable) -> Mapping[str, BudgetPeriod]:
        return _kept(self._periods, desired.version, lambda: budget_periods(desired))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            identity = await self._authenticate(request)
        except Refused as refusal:
            peer = request.remote or "unknown peer"
            log.warning("sidecar connection from %s refused (token for pod %s): %s", peer,
                        refusal.pod or "none", refusal.reason)
            self.sink.refused(f"{peer}: {refusal.reason}", refusal.pod)
            return web.json_response({"error": refusal.reason}, status=refusal.status)
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        await self._serve(Connection(identity.pod, identity.uid, ws))
        return ws

    async def _authenticate(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "no bearer token")
        return await self.reviewer.review(token.strip())

    async def _serve(self, conn: Connection) -> None:
        previous = self.connections.get(conn.pod)
        if previous is not None:  # a reconnect while the old stream is not yet seen dead
            await previous.ws.close(message=b"replaced by a newer connection")
        self.connections[conn.pod] = conn
        self.sink.connected(conn.pod)
        try:
            hello = await self._hello(conn)
            if hello is None:
                return
            conn.sent = hello.version
            if self.leases is not None:
                self.leases.announce(conn.pod, None if hello.budgets is None else
                                     {f"{conn.pod.namespace}/{route}": spent for route, spent in hello.budgets.items()})
            pusher = asyncio.create_task(self._push_or_close(conn))
            conn.tasks.append(pusher)
            await self._receive(conn)
        finally:
            for task in conn.tasks:
                task.cancel()
            for outcome in await asyncio.gather(*conn.tasks, return_exceptions=True):
                if isinstance(outcome, Exception):  # the stream's end is seen all the same
                    log.error("sidecar %s: its pusher failed: %r", conn.pod, outcome)
            if self.connections.get(conn.pod) is conn:  # not when a newer stream of the pod replaced it
                del self.connections[conn.pod]
                if self.leases is not None:
                    self.leases.depart(conn.pod)
                    self._lease_due.set()
                self.sink.disconnected(conn.pod)

    async def _hello(self, conn: Connection) -> Hello | None:
        try:
            message = await conn.ws.receive(timeout=self.hello_timeout_s)
        except TimeoutError:
            await conn.ws.close(message=b"no hello")
            return None
        if message.type is not WSMsgType.TEXT:
            return None
        try:
            hello = decode_up(message.data)
            if not isinstance(hello, Hello):
                raise ProtocolError("type", "the first message must be hello")
        except ProtocolError as error:
            log.warning("sidecar %s broke the protocol: %s", conn.pod, error)
            await conn.ws.close(message=str(error)[:120].encode())
            return None
        return hello

    async def _push_or_close(self, conn: Connection) -> None:
        """A push that fails ends the stream (the sidecar reconnects and is served anew): left open
        without its pusher, the pod would get no more tables; left failed, the stream's end was not seen."""
        try:
            await self._push(conn)
        except (ConnectionError, RuntimeError) as error:
            log.info("pushing to sidecar %s failed, closing its stream: %s", conn.pod, error)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.close()

    async def _push(self, conn: Connection) -> None:
        """The pod's table now and after every change; its lease after each."""
        said_in_hello = conn.sent  # until the pod's table is known: after an operator restart, not at once
        if self.synced is not None:
            await self.synced.wait()
        while not conn.ws.closed:
            generation = self.source.generation()
            desired = self.source.table_for(conn.pod)
            if desired is not None and desired.version != conn.sent:
                await conn.ws.send_str(self._encode(desired))
                conn.sent = desired.version
                self.sink.pushed(conn.pod, desired.version)
                said_in_hello = None
            elif desired is not None and desired.version == said_in_hello:
                self.sink.acked(conn.pod, desired.version)  # it already runs it (persisted)
                said_in_hello = None
            self._lease_due.set()
            await self.source.changed(generation)

    async def _receive(self, conn: Connection) -> None:
        unknown: set[str] = set()
        async for message in conn.ws:
            if message.type is not WSMsgType.TEXT:
                continue
            try:
                up = decode_up(message.data)
            except UnknownMessage as newer:
                if tell_of(unknown, newer):
                    log.info("sidecar %s sent a message of type %r this operator does not know (a newer sidecar): "
                             "skipped, as are the next ones of its type", conn.pod, newer.kind[:64])
                continue
            except ProtocolError as error:
                log.warning("sidecar %s sent a bad message, ignored: %s", conn.pod, error)
                continue
            match up:
                case Ack(version):
                    self.sink.acked(conn.pod, version)
                case Nack(version, reason):
                    reason = self._scrub(conn.pod, reason)
                    log.warning("sidecar %s refused table %s: %s", conn.pod, version[:16], reason)
                    self.sink.nacked(conn.pod, version, reason)
                case UsageReport():
                    report = orjson.loads(message.data)
                    self.sink.usage(conn.pod, report)
                    self._observe(conn.pod, report)
                case Hello():
                    log.warning("sidecar %s said hello twice; ignored", conn.pod)

    def _scrub(self, pod: PodRef, text: str) -> str:
        """`text` from the sidecar without the pod's keys or any key shape: it is logged and reported."""
        desired = self.source.table_for(pod)
        credentials = (desired.payload.get("credentials") or {}) if desired is not None else {}
        return scrubber_of(frozenset(v for v in credentials.values() if isinstance(v, str)))(text)

    def _observe(self, pod: PodRef, report: Mapping[str, object]) -> None:
        if self.leases is None:
            return
        desired = self.source.table_for(pod)
        periods = {} if desired is None else \
            {f"{pod.namespace}/{r}": p for r, p in self._budget_periods(desired).items()}
        self.leases.observe(pod, report, self.clock(), self.wallclock(), periods)

    def _encode(self, desired: DesiredTable) -> str:
        return _kept(self._encoded, desired.version, lambda: encode(TablePush(desired.version, desired.payload)))

    async def _close_all(self, app: web.Application) -> None:
        for conn in list(self.connections.values()):
            await conn.ws.close(message=b"operator shutting down")


def _kept(cache: OrderedDict[str, T], version: str, make: Callable[[], T]) -> T:
    """What `make` gives for a table version, made once; only the newest ENCODED_TABLES_KEPT versions are
    kept (every edit of a route or provider makes new versions, for as long as the operator runs)."""
    value = cache.get(version)
    if value is None:
        value = cache[version] = make()
        while len(cache) > ENCODED_TABLES_KEPT:
            cache.popitem(last=False)
    return value


def hub_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


class CertificateReloader:
    """Loads a renewed certificate (cert-manager renews the mounted Secret) into the served context in place:
    handshakes after it use the new one, open streams keep theirs, and nothing restarts."""

    def __init__(self, context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
        self.context, self.files = context, (cert_file, key_file)
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int, int], ...]:
        stats = [os.stat(path) for path in self.files]  # follows the Secret volume's ..data symlink
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)

    def check(self) -> bool:
        """True when a changed pair was loaded; a pair that does not load yet is tried again next time."""
        try:
            stamp = self._stamp()
            if stamp == self.stamp:
                return False
            # Tried apart first: a failed load into the live context could leave it a certificate without its key.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(*self.files)
            self.context.load_cert_chain(*self.files)
        except (OSError, ssl.SSLError) as error:
            log.warning("the renewed certificate %s does not load yet, still serving the previous one: %s",
                        self.files[0], error)
            return False
        self.stamp = stamp
        log.info("serving the renewed certificate %s", self.files[0])
        return True

    async def run(self, interval_s: float = 30.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.check()


async def start_hub(hub: Hub, host: str, port: int, ssl_context: ssl.SSLContext) -> web.AppRunner:
    """Listening; `await runner.cleanup()` stops it and closes every stream."""
    runner = web.AppRunner(hub.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=2048).start()
    return runner


def budget_periods(desired: DesiredTable) -> dict[str, BudgetPeriod]:
    """Route name → its budget period, read from the route documents of the payload."""
    out: dict[str, BudgetPeriod] = {}
    for document in desired.payload.get("documents") or ():
        if not isinstance(document, Mapping) or document.get("kind") != ROUTE_KIND:
            continue
        budget = (document.get("spec") or {}).get("budget") or {}
        with contextlib.suppress(ValueError, TypeError):
            out[str((document.get("metadata") or {}).get("name"))] = BudgetPeriod(budget.get("period", "day"))
    return out
