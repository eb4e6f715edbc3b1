"""The connection layer: slow clients are bounded (a connection cap, deadlines for reading a request's
head and body), and what aiohttp would refuse in plain text is answered in the client's dialect.

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

A connection past a deadline is answered 408 (when no answer has begun) and closed.

Every request passes through the `FrontDoor` before aiohttp's application code (its expect handler, its
router): it tells the connection when a request's head is complete and when its handler is done, refuses
an `Expect` or a Content-Encoding the sidecar cannot honour, applies the listener's screen (the data
plane's browser policy) and reads what is left of a body that could not be decoded. What aiohttp
would answer itself in plain text (malformed HTTP, no route) is answered as JSON in the endpoint's
dialect (`refusals`), with one WARNING line that names the peer, the path and what was wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from llmroute_proxy.server import refusals
from llmroute_proxy.server.origins import Screen
from llmroute_proxy.server.refusals import Refusal

log = logging.getLogger("llmroute.proxy")

# After a 408 the sending side is shut and what the client still sends is read and dropped for this
# long: closing at once, with its bytes unread, would make the kernel reset the connection, and a
# reset can destroy the 408 before the client reads it.
LINGER_S = 1.0
_LINE_KEPT = 256  # bytes of a request line kept to tell which endpoint a malformed request was for


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
AppHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class ConnectionGuard:
    """One listener's connections: how many are open, and their deadlines.

    `schedule(delay, callback)` arms a deadline; the event loop's `call_later` unless a test injects
    its own clock.
    """

    def __init__(self, limits: ConnectionLimits, schedule: Schedule | None = None,
                 closed: Callable[[str], None] | None = None) -> None:
        """`closed(reason)` counts each connection refused or cut: `refused`, `head_timeout`, `body_timeout`,
        `malformed`."""
        self.limits = limits
        self.open = 0
        self.refused = 0
        self.cut = 0
        self.requests_refused: dict[str, int] = {}
        """Requests answered by the connection layer itself, by `Refusal.reason`."""
        self._schedule = schedule
        self._closed = closed

    def count(self, reason: str) -> None:
        if self._closed is not None:
            self._closed(reason)

    def factory(self, server: Server) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to listen with, in front of aiohttp's `server`."""
        return lambda: GuardedConnection(self, server)

    def request_refused(self, refusal: Refusal, peer: str, path: str | None) -> None:
        """One WARNING line for the first refusal of each kind and every 1,000th (DEBUG for the others),
        so that a flood of bad requests does not flood the log."""
        seen = self.requests_refused[refusal.reason] = self.requests_refused.get(refusal.reason, 0) + 1
        level = logging.WARNING if seen == 1 or seen % 1000 == 0 else logging.DEBUG
        log.log(level, "refused a request from %s to %s with %d (%d of this kind so far): %s", peer,
                _path_shown(path), refusal.status, seen, refusal.message)

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
        self._line = b""  # the start of the latest request line, for answering a malformed request
        self._line_length: int | None = None  # its length, once its end has arrived
        self._line_seen = 0

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
            transport.write(refusals.whole_answer(refusals.too_many_connections(guard.limits.max_connections), None))
            transport.close()
            return
        guard.open += 1
        self._inner = _answering_handler(self._server)
        self._inner.connection_made(transport)
        self._arm(guard.limits.head_s, self._head_expired)

    def data_received(self, data: bytes) -> None:
        if self._inner is None or self._lingering:
            return
        if self._phase is _Phase.LINGER and (self._request is None or self._request.content.is_eof()):
            self._phase = _Phase.IDLE
        if self._phase is _Phase.IDLE:
            self._phase = _Phase.HEAD
            self._line, self._line_length, self._line_seen = b"", None, 0
            self._arm(self._guard.limits.head_s, self._head_expired)
        if self._phase is _Phase.HEAD and self._line_length is None:
            self._sniff(data)
        self._inner.data_received(data)

    def _sniff(self, data: bytes) -> None:
        end = data.find(b"\n")
        if len(self._line) < _LINE_KEPT:
            self._line += data[: min(_LINE_KEPT - len(self._line), len(data) if end < 0 else end)]
        if end >= 0:
            self._line_length = self._line_seen + end
        self._line_seen += len(data)

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

    # --- told by the front door and the answering handler ------------------------------------

    def request_line(self) -> tuple[str | None, int | None]:
        """The path of the latest request line (None if not known), and the line's length (None while its end
        has not arrived)."""
        parts = self._line.split(b" ", 2)
        path = parts[1].decode("latin-1") if len(parts) >= 2 and parts[1].startswith(b"/") else None
        return path, self._line_length

    def refused_malformed(self, refusal: Refusal, path: str | None) -> None:
        self._guard.count("malformed")
        self._guard.request_refused(refusal, _peer(self._transport) if self._transport else "?", path)

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
        transport.write(refusals.whole_answer(refusals.too_slow(reason, why), path))
        transport.write_eof()
        self._lingering = True
        self._arm(LINGER_S, transport.close)


class FrontDoor:
    """Every request passes here before aiohttp's application code runs (its expect handler, its router):
    tells the connection when a request starts and ends, refuses what the sidecar cannot honour, asks the
    listener's `screen` (the data plane's browser policy) whether to answer before the application, and
    answers the router's 404 and 405 as JSON. What a middleware would do belongs here: aiohttp's
    middlewares cost every request two calls and frames more."""

    __slots__ = ("_guard", "_inner", "_screen")

    def __init__(self, inner: AppHandler, guard: ConnectionGuard, screen: Screen | None = None) -> None:
        self._inner = inner
        self._guard = guard
        self._screen = screen

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        transport = request.transport
        connection = transport.get_protocol() if transport is not None else None
        guarded = connection if isinstance(connection, GuardedConnection) else None
        if guarded is not None:
            guarded.request_started(request)
        try:
            refusal = _screened(request)
            if refusal is None:
                try:
                    response = self._screen(request) if self._screen is not None else None
                    if response is None:
                        response = await self._inner(request)
                except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
                    allowed = exc.headers.get(hdrs.ALLOW) if exc.status == 405 else None
                    refusal = refusals.not_routed(exc.status, request.method, request.path, allowed)
                else:
                    if hdrs.CONTENT_ENCODING in request.headers and not request.content.is_eof():
                        await _undecodable_body_dropped(request, response)
                    return response
            self._guard.request_refused(refusal, _peer(transport) if transport is not None else "?", request.path)
            return _json(refusal, request.path)
        finally:
            if guarded is not None:
                guarded.request_done(request)


async def _undecodable_body_dropped(request: BaseRequest, response: web.StreamResponse) -> None:
    """A body aiohttp cannot decode (Content-Encoding) and nobody read to its end: aiohttp would read on
    after the answer, meet the error and log it as unhandled. It is read here; if it fails, the rest of
    the connection's bytes mean nothing, so it ends and is closed after the answer."""
    try:
        await request.read()
    except web.RequestPayloadError:
        request.content.feed_eof()
        response.force_close()
    except web.HTTPRequestEntityTooLarge:
        pass


def _screened(request: BaseRequest) -> Refusal | None:
    """A Content-Encoding the sidecar does not decode, or an Expect other than aiohttp's (100-continue)."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING)
    refusal = refusals.unsupported_encoding(encoding) if encoding is not None else None
    expect = request.headers.get(hdrs.EXPECT)
    if refusal is None and expect and request.version == HttpVersion11 and expect.lower() != "100-continue":
        refusal = refusals.failed_expectation(expect)
    return refusal


class AnsweringHandler(RequestHandler):
    """aiohttp's `RequestHandler`, but what it answers itself (malformed HTTP; a handler that raised or timed
    out) is JSON in the endpoint's dialect, and a malformed request is logged as one line without
    a traceback or the bytes received."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            if request.writer.output_size > 0:  # aiohttp logs it and gives up on the connection
                return super().handle_error(request, status, exc, message)
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            return _json(refusals.failed(status), request.path, close=True)
        # aiohttp answers a request its parser gave up on as HTTP/1.0, not knowing what the client spoke; the
        # sidecar speaks HTTP/1.1 (RFC 9112 §2.3), and most of these requests (`br` bodies…) said so
        request._version = HttpVersion11
        protocol = self.transport.get_protocol() if self.transport is not None else None
        if isinstance(protocol, GuardedConnection):
            path, line_length = protocol.request_line()
            refusal = refusals.malformed(exc, line_length)
            protocol.refused_malformed(refusal, path)
        else:
            path, refusal = None, refusals.malformed(exc, None)
            log.warning("refused a malformed request from %s: %s", request.remote, refusal.message)
        return _json(refusal, path, close=True)


def _answering_handler(server: Server) -> RequestHandler:
    # Server.__call__, building our RequestHandler: aiohttp has no setting for the class it builds
    return AnsweringHandler(server, loop=asyncio.get_running_loop(), **server._kwargs)


def _json(refusal: Refusal, path: str | None, close: bool = False) -> web.Response:
    response = web.Response(status=refusal.status, body=refusals.body(refusal, path), content_type="application/json",
                            headers=refusal.headers())
    if close:
        response.force_close()
    return response


def _path_shown(path: str | None) -> str:
    """A path for the log: without its query (which may carry a key), printable, at most 100 characters."""
    if path is None:
        return "?"
    path = path.split("?", 1)[0]
    path = "".join(c if " " < c <= "~" else "?" for c in path)
    return path if len(path) <= 100 else path[:97] + "..."


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


class GuardedSite(web.TCPSite):
    """A `TCPSite` whose connections pass through `guard` before reaching aiohttp."""

    __slots__ = ("_guard", "_screen")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard,
                 backlog: int = 1024, screen: Screen | None = None) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self._guard = guard
        self._screen = screen

    async def start(self) -> None:
        # TCPSite.start, with the guard's protocol factory in front of the runner's server
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        if not isinstance(server.request_handler, FrontDoor):
            server.request_handler = FrontDoor(server.request_handler, self._guard, self._screen)
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server), self._host, self._port, backlog=self._backlog)
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port
