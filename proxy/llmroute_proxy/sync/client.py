"""Cluster mode: the sidecar's stream to the operator.

It connects over TLS with the pod's projected service-account token (re-read on every connect:
the kubelet rotates it), says which table it runs, then applies every pushed table atomically or
NACKs it and keeps the old one, persists the last good table, takes limit leases, and sends usage
deltas on a timer and once more when the sidecar drains. When the stream breaks it reconnects
with exponential backoff and full jitter while the sidecar keeps serving what it has.
Clock, randomness and sleeping are injected, so tests drive all of it without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from llmroute_proxy import __version__
from llmroute_proxy.routing.leases import BudgetShare, LeaseGrant
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.sync.persist import TableStore
from llmroute_proxy.sync.protocol import (
    Ack,
    Hello,
    Lease,
    Nack,
    PeriodSpend,
    ProtocolError,
    TablePush,
    TableRejected,
    UnknownMessage,
    compile_payload,
    decode_down,
    encode,
    payload_version,
    rate_limits_json,
    tell_of,
)
from llmroute_proxy.sync.usage import Counters, UsageMark

log = logging.getLogger("llmroute.sync")

DEFAULT_TOKEN_FILE = "/var/run/secrets/llmroute.dev/token"
DEFAULT_STATE_DIR = "/var/run/llmroute"


class ClusterConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    url: str
    ca_file: Path | None
    token_file: Path
    state_dir: Path
    report_interval_s: float = 10.0
    server_name: str | None = None  # the name the hub's certificate is checked against, when not the URL's host
    ca_data: str | None = None  # the CA as PEM text (LLMROUTE_OPERATOR_CA_DATA), instead of ca_file
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    connect_timeout_s: float = 10.0  # TCP, TLS and the upgrade together: a hung hub must not hold the retries

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ClusterSettings:
        url = environ.get("LLMROUTE_OPERATOR_URL", "")
        parts = urlsplit(url)
        if parts.scheme != "wss" or not parts.hostname:
            raise ClusterConfigError(f"LLMROUTE_OPERATOR_URL must be a wss:// URL, got {url!r}")
        if parts.username or parts.password:
            raise ClusterConfigError("LLMROUTE_OPERATOR_URL must not carry credentials")
        ca = environ.get("LLMROUTE_OPERATOR_CA")
        ca_data = environ.get("LLMROUTE_OPERATOR_CA_DATA", "").strip() or None
        if ca and ca_data:
            raise ClusterConfigError("LLMROUTE_OPERATOR_CA and LLMROUTE_OPERATOR_CA_DATA exclude each other")
        if ca_data is not None and "-----BEGIN CERTIFICATE-----" not in ca_data:
            raise ClusterConfigError("LLMROUTE_OPERATOR_CA_DATA must hold PEM certificates")
        server_name = environ.get("LLMROUTE_OPERATOR_SERVER_NAME", "").strip() or None
        if server_name is not None and (any(c.isspace() or c in "/:@" for c in server_name)):
            raise ClusterConfigError(f"LLMROUTE_OPERATOR_SERVER_NAME must be a host name, got {server_name!r}")
        interval = environ.get("LLMROUTE_USAGE_REPORT_SECONDS", "10")
        try:
            report_interval = float(interval)
        except ValueError:
            raise ClusterConfigError(f"LLMROUTE_USAGE_REPORT_SECONDS must be a number, got {interval!r}") from None
        if not report_interval > 0:
            raise ClusterConfigError(f"LLMROUTE_USAGE_REPORT_SECONDS must be positive, got {interval!r}")
        return cls(url=url, ca_file=Path(ca) if ca else None,
                   token_file=Path(environ.get("LLMROUTE_TOKEN_FILE", DEFAULT_TOKEN_FILE)),
                   state_dir=Path(environ.get("LLMROUTE_STATE_DIR", DEFAULT_STATE_DIR)),
                   report_interval_s=report_interval, server_name=server_name,
                   ca_data=ca_data)


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniformly in [0, min(cap, base·2ⁿ)]."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random) -> None:
        self._base, self._cap, self._rng = base_s, cap_s, rng
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self._cap, self._base * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempts = 0


class ConnectFailed(Exception):
    """A connect attempt that failed before the stream was up; the message holds no secret."""


def restore_persisted(sidecar: Sidecar, store: TableStore) -> bool:
    """Serve the last good table right away, before the operator is reached."""
    persisted = store.load()
    if persisted is None:
        return False
    try:
        table = compile_payload(persisted.payload)
    except TableRejected as error:
        log.warning("persisted table %s no longer compiles (%s); waiting for the operator",
                    persisted.version[:16], error)
        return False
    sidecar.install(table, source="persisted", pushed_version=persisted.version)
    return True


def sidecar_counters(sidecar: Sidecar) -> Counters:
    """The sidecar's cumulative counts, in the shape usage reports are made from."""
    routes = {name: spend.to_json() for (kind, name), spend in sidecar.spend.items() if kind == "route"}
    targets: dict[str, dict[str, float]] = {}
    providers: dict[str, dict[str, float]] = {}
    for target, counters in sidecar.counters.items():
        spend = sidecar.spend.get(("target", target))
        fields: dict[str, float] = {"requests": counters.requests, "failures": counters.failures,
                                    **{f"errors.{k}": n for k, n in counters.errors.items()}}
        if spend is not None:
            fields |= {"input_tokens": spend.input_tokens, "output_tokens": spend.output_tokens,
                       "cost_usd": spend.cost_usd}
        targets[target] = fields
        demand = providers.setdefault(target.split("/", 1)[0], {"requests": 0, "tokens": 0})
        demand["requests"] += counters.requests
        demand["tokens"] += fields.get("input_tokens", 0) + fields.get("output_tokens", 0)
    return {"routes": routes, "targets": targets, "providers": providers}


def period_spend(sidecar: Sidecar, unsent: Mapping[str, float]) -> dict[str, PeriodSpend]:
    """The hello's `budgets`: per route with a budget, what the sidecar has spent in its current period
    less what its next usage report carries (`unsent`, USD by route), so the operator counts none twice."""
    now = sidecar.wallclock()
    out: dict[str, PeriodSpend] = {}
    for route in sidecar.ledger.routes():
        status = sidecar.ledger.snapshot(route, now)
        spent = status.spent_usd - unsent.get(route, 0.0)
        if spent > 0:
            out[route] = PeriodSpend(status.period_start, spent)
    return out


Sleep = Callable[[float], Awaitable[None]]


class OperatorClient:
    def __init__(self, settings: ClusterSettings, sidecar: Sidecar, store: TableStore, *,
                 rng: random.Random | None = None, sleep: Sleep = asyncio.sleep,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.sidecar = sidecar
        self.store = store
        self.backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s, rng or random.Random())
        self._sleep = sleep
        self._wallclock = wallclock
        self._usage = UsageMark()
        self._rate_limits_after = float("-inf")  # answers seen until then had their rate limits reported
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._report_lock = asyncio.Lock()  # one report at a time, from its deltas to the mark's move
        self.state = "connecting"
        self.since = wallclock()
        self.last_error: str | None = None
        self.connects = 0
        self.tables_received = 0
        sidecar.operator_status = self.status

    def status(self) -> dict[str, Any]:
        parts = urlsplit(self.settings.url)
        return {"url": f"{parts.scheme}://{parts.netloc}{parts.path}", "state": self.state, "since": self.since,
                "attempts": self.backoff.attempts, "last_error": self.last_error,
                "lease": self.sidecar.leases.state(self.sidecar.clock())}

    async def run(self) -> None:
        """Connect, serve the stream, and reconnect forever (until cancelled)."""
        watcher = asyncio.create_task(self.watch_lease())
        try:
            await self._connect_forever()
        finally:
            watcher.cancel()

    async def watch_lease(self) -> None:
        """Connected or not, a lease whose TTL passes falls back to its safe shares."""
        while True:
            now, expiry = self.sidecar.clock(), self.sidecar.leases.expires_at()
            if expiry is not None and now < expiry:
                await self._sleep(expiry - now)
                self.sidecar.expire_lease()
            else:
                await self._sleep(self.settings.report_interval_s)

    async def _connect_forever(self) -> None:
        while True:
            self._set_state("connecting")
            try:
                await self.connect_once()
            except asyncio.CancelledError:
                raise
            except ConnectFailed as error:
                self._failed(str(error))
            except (TimeoutError, aiohttp.ClientError, OSError) as error:
                self._failed(_describe(error))
            delay = self.backoff.next_delay()
            log.info("operator stream down; reconnecting in %.2fs", delay)
            await self._sleep(delay)

    async def connect_once(self) -> None:
        """One connection, until it closes; raises ConnectFailed when it cannot be opened."""
        token = self._read_token()
        self.sidecar.hold_secrets("operator token", [token])  # scrubbed from logs and status too
        ssl_context = self._ssl_context()
        async with aiohttp.ClientSession() as session:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    ws = await session.ws_connect(self.settings.url, ssl=ssl_context, heartbeat=30.0,
                                                  server_hostname=self.settings.server_name,
                                                  headers={"Authorization": f"Bearer {token}"},
                                                  max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
            except aiohttp.WSServerHandshakeError as error:
                raise ConnectFailed(f"operator refused the connection: HTTP {error.status}") from None
            except TimeoutError:
                raise ConnectFailed(f"the operator did not answer within {self.settings.connect_timeout_s:g}s "
                                    "(connection, TLS and upgrade)") from None
            self._ws = ws
            self.connects += 1
            self._set_state("connected")
            try:
                async with self._report_lock:  # the mark must not move between the hello's figures and it
                    await self._send(self._hello())
                reporter = asyncio.create_task(self._report_periodically())
                try:
                    await self._read(ws)
                finally:
                    reporter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reporter
            finally:
                self._ws = None
                await ws.close()
        self._set_state("disconnected")

    def _hello(self) -> Hello:
        unsent = self._usage.unsent(sidecar_counters(self.sidecar), "routes", "cost_usd")
        return Hello(self.sidecar.pushed_version, __version__, period_spend(self.sidecar, unsent))

    async def send_final_report(self, timeout_s: float = 2.0) -> bool:
        """On drain: the last usage deltas, if the stream is up. True when they went out."""
        if self._ws is None:
            return False
        try:
            return await asyncio.wait_for(self._report(final=True), timeout_s)
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            return False

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        unknown: set[str] = set()
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                down = decode_down(message.data)
            except UnknownMessage as newer:
                if tell_of(unknown, newer):
                    log.info("operator sent a message of type %r this sidecar does not know (a newer operator): "
                             "skipped, as are the next ones of its type", newer.kind[:64])
                continue
            except ProtocolError as error:
                log.error("operator sent a message that breaks the protocol: %s", error)
                continue
            # The operator works, not just accepts: only now is the backoff forgotten (an operator that
            # accepts and drops every stream, crash-looping, would otherwise be reconnected to at once).
            self.backoff.reset()
            if isinstance(down, TablePush):
                self.tables_received += 1
                await self._send(self._apply(down))
            elif isinstance(down, Lease):
                self._take_lease(down)
        self.last_error = f"stream closed by the operator (code {ws.close_code})"

    def _apply(self, push: TablePush) -> Ack | Nack:
        """Install the table, or refuse it and keep the one running."""
        if push.version == self.sidecar.pushed_version and self.sidecar.table is not None:
            return Ack(push.version)
        if payload_version(push.table) != push.version:
            return self._nack(push.version, "table.version: is not the sha256 of the canonical table")
        try:
            table = compile_payload(push.table)
        except TableRejected as error:
            return self._nack(push.version, str(error))
        self.sidecar.install(table, source="operator", pushed_version=push.version)
        try:
            self.store.save(push.version, push.table)
        except OSError as error:
            log.error("cannot persist table %s under %s: %s", push.version[:16], self.store.directory,
                      error.strerror)
        return Ack(push.version)

    def _nack(self, version: str, error: str) -> Nack:
        running = self.sidecar.pushed_version
        log.error("table %s refused, keeping %s: %s", version[:16], running[:16] if running else "none", error)
        return Nack(version, error)

    def _take_lease(self, lease: Lease) -> None:
        limits = dict(lease.limits)
        budgets = {name: BudgetShare(b.limit_usd, b.spent_usd) for name, b in lease.budgets.items()}
        self.sidecar.grant_lease(LeaseGrant(self.sidecar.clock() + lease.ttl, limits, budgets))

    async def _report_periodically(self) -> None:
        while True:
            await self._sleep(self.settings.report_interval_s)
            await self._report()

    async def _report(self, *, final: bool = False) -> bool:
        # The drain's final report may come while the timer's waits on the socket: made from the same
        # mark, both would carry the same usage and the operator would count it twice.
        async with self._report_lock:
            return await self._report_now(final=final)

    async def _report_now(self, *, final: bool) -> bool:
        current = sidecar_counters(self.sidecar)
        report = self._usage.report(current, self.settings.report_interval_s, final=final)
        now = self.sidecar.clock()
        seen = self.sidecar.rate_limits_seen.since(self._rate_limits_after, now, self._wallclock())
        if seen:
            report = replace(report, rate_limits={provider: rate_limits_json(limits, age)
                                                  for provider, (limits, age) in seen.items()})
        if report.is_empty() and not final:
            return True
        await self._send(report)
        self._usage.commit(current)  # only once it went out: unsent deltas stay for the next report
        self._rate_limits_after = now
        return True

    async def _send(self, message: Ack | Nack | Hello | Any) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionError("operator stream is closed")
        async with self._send_lock:
            await ws.send_str(encode(message))

    def _read_token(self) -> str:
        path = self.settings.token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise ConnectFailed(f"cannot read the service-account token {path}: {reason}") from None
        if not token:
            raise ConnectFailed(f"the service-account token file {path} is empty")
        return token

    def _ssl_context(self) -> ssl.SSLContext:
        ca, data = self.settings.ca_file, self.settings.ca_data
        try:
            return ssl.create_default_context(cafile=str(ca) if ca else None, cadata=data)
        except (OSError, ssl.SSLError) as error:
            where = ca if data is None else "LLMROUTE_OPERATOR_CA_DATA"
            raise ConnectFailed(f"cannot load the operator CA {where}: {_describe(error)}") from None

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.since = self._wallclock()
            if state == "connected":
                log.info("connected to the operator at %s", self.status()["url"])

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        self._set_state("disconnected")
        log.warning("operator connection failed: %s", reason)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]
