"""One HTTP/1.1 client connection: a plain asyncio Protocol that writes a request and parses its
response with llhttp (httptools).

Why not aiohttp's client: a relayed request spent ~200-250 µs of CPU in `ClientSession._request`
and its response protocol (bench/README.md, 2026-12-03 evening), more than the routing itself.
The sidecar needs a small part of it: one request at a time on a keep-alive connection, the
response's headers, and its body as it arrives. That part is here; the pool that owns the
connections is `server/pool.py`, and the failure map stays in `server/upstream.py`.

Wake-ups go through futures that only ever get `None`: a future holding an exception, awaited in
a frame that holds the future, is a reference cycle that keeps the connection's buffers alive
until a full collection (issue 11, defect 2). Failures are kept as text and raised fresh.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

READ_HIGH_WATER = 256 * 1024
"""Unread body bytes at which the socket stops being read, until the reader takes them."""

MAX_HEAD = 256 * 1024
"""A response whose status line and headers are larger than this is refused."""

SERVER_DISCONNECTED = "Server disconnected"


class ConnectFailed(Exception):
    """No connection could be made (refused, DNS, TLS handshake, unreachable)."""


class CertificateUntrusted(ConnectFailed):
    """The server's TLS certificate did not verify."""


class ConnectionLost(Exception):
    """The connection ended (or spoke something other than HTTP) before the response did.

    `stale`: the server had closed the connection, not reset it, and not one byte of the
    response had arrived (or the request could not even be written): what a server's close of
    an idle keep-alive connection looks like when it crosses the next request. A reset after
    the request went out is not stale: the server may have read the request."""

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.stale = stale


def describe_os_error(exc: BaseException) -> str:
    """The reason of an OS error without its address ("Connection refused", not the socket's peer)."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or "name resolution failed"
    if isinstance(exc, OSError) and exc.errno and not isinstance(exc, ssl.SSLError):
        return os.strerror(exc.errno)
    return (str(exc) or type(exc).__name__)[:200]


def request_head(method: str, target: str, host: str, headers: Mapping[str, str],
                 body: bytes | None) -> tuple[bytes, bool]:
    """The request line and headers, and whether the connection may carry another request after it.

    The request's own headers go out unchanged. `Host`, `Content-Length`, `Accept: */*` and
    `Accept-Encoding: gzip, deflate` are added unless the request has them, as aiohttp did; no
    User-Agent is.
    """
    own = {name.lower() for name in headers}
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    if "host" not in own:
        lines.append(f"Host: {host}\r\n")
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    if "accept" not in own:
        lines.append("Accept: */*\r\n")
    if "accept-encoding" not in own:
        lines.append("Accept-Encoding: gzip, deflate\r\n")
    if "content-length" not in own and "transfer-encoding" not in own \
            and (body is not None or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise ValueError("Newline or carriage return character detected in HTTP status message or header")
    reusable = "connection" not in own or not any(
        name.lower() == "connection" and "close" in value.lower() for name, value in headers.items())
    return text.encode("utf-8"), reusable


class Http1Connection(asyncio.Protocol):
    """One connection to one origin, carrying one request at a time.

    The pool calls `send`, then `wait_head`; the response reads the body with `read_any` and
    ends with `drained` (read to the end: the pool may take the connection back) or `close`.
    """

    __slots__ = (
        "_buffered", "_complete", "_decoder", "_encoding", "_error", "_got_bytes", "_head_size", "_interim",
        "_loop", "_no_reuse", "_parser", "_parts", "_paused", "_raw_headers", "_stale", "_transport",
        "_until_close", "_waiter", "closed", "content_length", "headers", "idle_since", "keep_alive",
        "key", "on_lost", "status",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, key: Any) -> None:
        self._loop = loop
        self.key = key
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.on_lost: Callable[[Http1Connection], None] | None = None  # the pool forgets it
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: CIMultiDictProxy[str] | None = None
        self.content_length: int | None = None
        self.keep_alive = False
        self._raw_headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._interim = False
        self._parts: list[bytes] = []
        self._buffered = 0
        self._complete = False
        self._got_bytes = False
        self._error: str | None = None
        self._decoder: Any = None
        self._encoding = ""
        self._until_close = False
        self._no_reuse = False
        self._stale = False

    # --- what the pool and the response call

    def send(self, head: bytes, body: bytes | None, *, reusable: bool = True) -> None:
        """Write one request. The previous response must have been read to its end."""
        self._reset()
        self._no_reuse = not reusable
        transport = self._transport
        assert transport is not None
        if self._paused:  # the last answer ended with more unread than the high-water mark, then was dropped
            self._paused = False
            transport.resume_reading()
        if body and len(body) <= 65536:
            transport.write(head + body)
        else:
            transport.write(head)
            if body:
                transport.write(body)
        if transport.is_closing():  # the write itself failed: the server cannot have read the request
            self._stale = True

    async def wait_head(self) -> None:
        """Wait for the response's status and headers (1xx answers are skipped)."""
        while self.headers is None:
            if self._error is not None or self.closed:
                raise ConnectionLost(self._error or SERVER_DISCONNECTED, stale=self._stale and not self._got_bytes)
            await self._wait()

    async def read_any(self) -> bytes:
        """The body bytes that arrived and were not read yet, waiting for some; b"" at the end."""
        while True:
            parts = self._parts
            if parts:
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                self._parts = []
                self._buffered = 0
                if self._paused and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
                return data
            if self._error is not None:
                raise ConnectionLost(self._error)
            if self._complete:
                return b""
            if self.closed:
                raise ConnectionLost(SERVER_DISCONNECTED)
            await self._wait()

    @property
    def drained(self) -> bool:
        """The whole response arrived and every byte of it was read."""
        return self._complete and not self._parts and self._error is None

    @property
    def reusable(self) -> bool:
        """It may carry another request: the response ended cleanly on a live HTTP/1.1 keep-alive connection."""
        return self._complete and self.keep_alive and not self._no_reuse and not self.closed \
            and self._error is None and self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        transport = self._transport
        self.closed = True
        if transport is not None:
            transport.close()

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        except asyncio.CancelledError:
            self.close()  # a half-read response must never carry another request
            raise
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, reason: str) -> None:
        if self._error is None:
            self._error = reason
        self.close()
        self._wake()

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.closed:
            return
        if self._complete or self._error is not None:
            self.close()  # bytes nobody asked for: this connection's framing cannot be trusted any more
            return
        self._got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("invalid HTTP response (protocol upgrade)")
            return
        except httptools.HttpParserError as exc:
            if self._error is None:  # the callbacks' own failures come with their reason
                self._fail(f"invalid HTTP response ({describe_os_error(exc)})")
            return
        if self.headers is None:
            self._head_size += len(data)
            if self._head_size > MAX_HEAD:
                self._fail(f"response head larger than {MAX_HEAD} bytes")
                return
        if self._buffered > READ_HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        self._parser = None  # it holds this protocol's callbacks: no cycle outlives the socket
        if not self._complete and self._error is None:
            if self.headers is not None and self._until_close and exc is None:
                self._end_body()
            else:
                if exc is None:
                    self._stale = True
                reason = SERVER_DISCONNECTED if exc is None else describe_os_error(exc)
                if self.headers is not None:
                    reason = f"response body cut short ({reason})"
                self._error = reason
        self._wake()
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(self)

    # --- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        if self._complete:  # a second answer to one request: nothing on this connection can be trusted
            self._no_reuse = True
            return
        status = parser.get_status_code()
        if 100 <= status < 200:
            self._interim = True  # 100 Continue and friends: the real answer follows
            self._raw_headers = []
            return
        headers = CIMultiDict(self._raw_headers)
        self._raw_headers = []
        length = headers.get("content-length")
        if length is not None:
            try:
                self.content_length = int(length)
            except ValueError:
                self.content_length = None
        encoding = headers.get("content-encoding", "").strip().lower()
        self._encoding = encoding
        if encoding == "gzip":
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = _DeflateDecoder()
        self._until_close = length is None and "chunked" not in headers.get("transfer-encoding", "").lower() \
            and status not in (204, 304)
        self.status = status
        self.headers = CIMultiDictProxy(headers)

    def on_body(self, body: bytes) -> None:
        if self._complete:
            return
        decoder = self._decoder
        if decoder is not None:
            if self._error is not None:
                return
            try:
                body = decoder.decompress(body)
            except zlib.error:
                self._fail(f"Can not decode content-encoding: {self._encoding}")
                return
            if not body:
                return
        self._parts.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._complete:
            return
        parser = self._parser
        assert parser is not None
        self.keep_alive = parser.should_keep_alive() and parser.get_http_version() == "1.1"
        self._end_body()

    def _end_body(self) -> None:
        decoder = self._decoder
        if decoder is not None and self._error is None:
            try:
                tail = decoder.flush()
            except zlib.error:
                self._fail(f"Can not decode content-encoding: {self._encoding}")
                return
            if tail:
                self._parts.append(tail)
                self._buffered += len(tail)
        self._complete = True


class _DeflateDecoder:
    """`Content-Encoding: deflate`: zlib-wrapped as the RFC says, or raw deflate as some servers send."""

    __slots__ = ("_inner",)

    def __init__(self) -> None:
        self._inner: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            # RFC 1950: the first byte's low nibble is 8 (deflate) in a zlib stream
            wbits = zlib.MAX_WBITS if data and data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            self._inner = zlib.decompressobj(wbits)
        result: bytes = self._inner.decompress(data)
        return result

    def flush(self) -> bytes:
        return b"" if self._inner is None else bytes(self._inner.flush())
