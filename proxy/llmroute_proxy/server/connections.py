"""Slow clients are bounded: a connection cap, and deadlines for reading a request's head and body.

aiohttp has a keep-alive timeout (idle connections between requests) but no deadline for reading a
request: a client that sends its head or body a byte at a time holds a connection, a file descriptor
and a parser for as long as it likes, and nothing limits how many connections are open. 1,000 such
clients held 1,000 descriptors for over a minute.

Each connection passes through a small protocol (`GuardedConnection`) in front of aiohttp's own:

- **Cap.** Beyond `max_connections` open connections, a new one is answered 503 and closed at once,
  before aiohttp sees it, so the connections already open keep being served.
- **Head deadline.** From the moment a connection is accepted, or the first byte of a later request on
  it, its request line and headers must be complete within `head_s`. Bytes arriving do not extend it.
- **Body deadline.** From the moment the head is complete, the body must be complete within `body_s`.

A connection past a deadline is answered 408 (when no answer has begun) and closed. A request's start
and end are told by a middleware (`track_requests`) that every guarded app carries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from llmroute_proxy.dialects.anthropic.errors import anthropic_error_body
from llmroute_proxy.dialects.openai.errors import openai_error_body
from llmroute_proxy.errors import LLMRouteError

log = logging.getLogger("llmroute.proxy")

# After a 408 the sending side is shut and what the client still sends is read and dropped for this
# long: closing at once, with its bytes unread, would make the kernel reset the connection, and a
# reset can destroy the 408 before the client reads it.
LINGER_S = 1.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 1024
    """Open connections per listener; more are answered 503 and closed."""
    head_s: float = 10.0
    """Request line and headers complete within this, from accept or from a request's first byte."""
    body_s: float = 30.0
    """The body complete within this, from the end of the head."""
    keepalive_s: float = 75.0
    """An idle connection between requests is closed after this (aiohttp's own timer)."""

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in ("head_s", "body_s", "keepalive_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")


Schedule = Callable[[float, Callable[[], None]], asyncio.TimerHandle]


class ConnectionGuard:
    """One listener's connections: how many are open, and their deadlines.

    `schedule(delay, callback)` arms a deadline; the event loop's `call_later` unless a test injects
    its own clock.
    """

    def __init__(self, limits: ConnectionLimits, schedule: Schedule | None = None,
                 closed: Callable[[str], None] | None = None) -> None:
        """`closed(reason)` counts each connection refused or cut: `refused`, `head_timeout`, `body_timeout`."""
        self.limits = limits
        self.open = 0
        self.refused = 0
        self.cut = 0
        self._schedule = schedule
        self._closed = closed

    def count(self, reason: str) -> None:
        if self._closed is not None:
            self._closed(reason)

    def factory(self, server: Server) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to listen with, in front of aiohttp's `server`."""
        return lambda: GuardedConnection(self, server)

    def schedule(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        if self._schedule is not None:
            return self._schedule(delay, callback)
        return asyncio.get_running_loop().call_later(delay, callback)


class _Phase(Enum):
    HEAD = "head"  # waiting for a request's head
    REQUEST = "request"  # a request is being handled (its body may still be arriving)
    IDLE = "idle"  # between requests: aiohttp's keep-alive timer is in charge
    LINGER = "linger"  # answered before its body was read: aiohttp reads and drops the rest (≤ 10 s)


class GuardedConnection(asyncio.Protocol):
    """Forwards everything to aiohttp's `RequestHandler`, and cuts the connection at a deadline."""

    def __init__(self, guard: ConnectionGuard, server: Server) -> None:
        self._guard = guard
        self._server = server
        self._inner: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._phase = _Phase.HEAD
        self._timer: asyncio.TimerHandle | None = None
        self._request: web.BaseRequest | None = None
        self._lingering = False

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        guard = self._guard
        if guard.open >= guard.limits.max_connections:
            guard.refused += 1
            guard.count("refused")
            if guard.refused == 1 or guard.refused % 1000 == 0:
                log.warning("connection limit of %d reached: new connections are refused with 503 "
                            "(%d so far)", guard.limits.max_connections, guard.refused)
            transport.write(_answer(503, f"This llmroute sidecar already has {guard.limits.max_connections} "
                                         "connections open; try again shortly.", None, retry_after=True))
            transport.close()
            return
        guard.open += 1
        self._inner = self._server()
        self._inner.connection_made(transport)
        self._arm(guard.limits.head_s, self._head_expired)

    def data_received(self, data: bytes) -> None:
        if self._inner is None or self._lingering:
            return
        if self._phase is _Phase.LINGER and (self._request is None or self._request.content.is_eof()):
            self._phase = _Phase.IDLE
        if self._phase is _Phase.IDLE:
            self._phase = _Phase.HEAD
            self._arm(self._guard.limits.head_s, self._head_expired)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None and not self._lingering:
            self._inner.eof_received()
        return None  # as aiohttp: the transport closes on a client's half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._request = None
        inner, self._inner = self._inner, None
        if inner is not None:
            self._guard.open -= 1
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # --- told by the middleware ---------------------------------------------------------------

    def request_started(self, request: web.BaseRequest) -> None:
        self._phase = _Phase.REQUEST
        self._request = request
        self._disarm()
        if not request.content.is_eof():
            self._arm(self._guard.limits.body_s, self._body_expired)

    def request_done(self, request: web.BaseRequest) -> None:
        self._disarm()
        if request.content.is_eof():
            self._phase, self._request = _Phase.IDLE, None
        else:
            # what arrives next is the rest of this body, not a new request's head
            self._phase = _Phase.LINGER

    # --- deadlines ----------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self._guard.schedule(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_expired(self) -> None:
        self._timer = None
        if self._phase is _Phase.HEAD:
            self._cut("head_timeout", f"the request's head did not arrive within {self._guard.limits.head_s:g}s",
                      None, True)

    def _body_expired(self) -> None:
        self._timer = None
        request = self._request
        if self._phase is _Phase.REQUEST and request is not None and not request.content.is_eof():
            # an answer that has begun cannot be replaced; the close alone tells the client then
            untouched = request.writer.output_size == 0
            self._cut("body_timeout", f"the request's body did not arrive within {self._guard.limits.body_s:g}s",
                      request.path, untouched)

    def _cut(self, reason: str, why: str, path: str | None, answer: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        guard = self._guard
        guard.cut += 1
        guard.count(reason)
        if guard.cut == 1 or guard.cut % 1000 == 0:
            log.warning("closed a slow connection from %s (%d so far): %s", _peer(transport), guard.cut, why)
        else:
            log.debug("closed a slow connection from %s: %s", _peer(transport), why)
        if not answer or not transport.can_write_eof():
            transport.close()
            return
        transport.write(_answer(408, f"Request timeout: {why}.", path))
        transport.write_eof()
        self._lingering = True
        self._arm(LINGER_S, transport.close)


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tells a guarded connection when a request's head is complete and when its handler is done."""
    transport = request.transport
    connection = transport.get_protocol() if transport is not None else None
    if not isinstance(connection, GuardedConnection):
        return await handler(request)
    connection.request_started(request)
    try:
        return await handler(request)
    finally:
        connection.request_done(request)


def guard_app(app: web.Application) -> None:
    """Let `app`'s requests tell their connection's guard when they start and end."""
    app.middlewares.insert(0, track_requests)


class _Refusal(LLMRouteError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = "timeout_error" if status == 408 else "service_unavailable"
        self.code = "request_timeout" if status == 408 else "too_many_connections"


_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}


def _answer(status: int, message: str, path: str | None, retry_after: bool = False) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, in the endpoint's error dialect when the
    path tells it (OpenAI's shape when it is not known yet)."""
    error = _Refusal(status, message)
    shape: dict[str, Any] = anthropic_error_body(error, status) if path is not None and \
        path.startswith("/v1/messages") else openai_error_body(error)
    body = orjson.dumps(shape)
    head = [f"HTTP/1.1 {status} {_REASONS[status]}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close"]
    if retry_after:
        head.append("Retry-After: 1")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


class GuardedSite(web.TCPSite):
    """A `TCPSite` whose connections pass through `guard` before reaching aiohttp."""

    __slots__ = ("_guard",)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard,
                 backlog: int = 1024) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self._guard = guard

    async def start(self) -> None:
        # TCPSite.start, with the guard's protocol factory in front of the runner's server
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server), self._host, self._port, backlog=self._backlog)
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port
