"""The one seam through which the sidecar talks to providers.

Every upstream call goes through `UpstreamClient` (an HTTP/1.1 client of our own: `http1.py`
for one connection, `pool.py` for keep-alive), and every failure is mapped here, in one place,
to an `UpstreamError` whose `kind` drives failover. Tests replace the whole client, or point it
at simulated providers on loopback.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable
from types import TracebackType
from typing import Literal

from multidict import CIMultiDictProxy

from llmroute_proxy.dialects.base import UpstreamRequest
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.server.http1 import (
    CertificateUntrusted,
    ConnectFailed,
    ConnectionLost,
    Http1Connection,
    describe_os_error,
    request_head,
)
from llmroute_proxy.server.pool import KEEPALIVE_S, ConnectionPool, Resolver, getaddrinfo, split_url
from llmroute_proxy.trust import client_context

MAX_ERROR_BODY = 64 * 1024
MAX_RESPONSE_BODY = 64 * 1024 * 1024
MAX_CA_BUNDLES = 64


class UpstreamResponse:
    """An open upstream response. Close it (or use `async with`) to free the connection.

    Once the body has been read to its end, the connection goes back to the pool at once (the
    response no longer needs it); `close` before that closes the connection.
    """

    __slots__ = ("_conn", "_eof", "_pool", "_target", "content_length", "headers", "idle_timeout", "status")

    def __init__(self, conn: Http1Connection, pool: ConnectionPool, target: str) -> None:
        self._conn: Http1Connection | None = conn
        self._pool = pool
        self._target = target
        self._eof = False
        self.idle_timeout: float | None = None
        self.status = conn.status
        assert conn.headers is not None
        self.headers: CIMultiDictProxy[str] = conn.headers
        self.content_length = conn.content_length

    async def read(self, limit: int = MAX_RESPONSE_BODY) -> bytes:
        """The whole body, however the network splits and delays it. A body larger than `limit`
        (declared or found so) is a SERVER_ERROR failure, and no more of it is read."""
        declared = self.content_length
        if declared is not None and declared > limit:
            raise UpstreamError(FailureKind.SERVER_ERROR, f"{self._target}: response larger than {limit} bytes")
        body, more = await self._collect(limit)
        if more:
            raise UpstreamError(FailureKind.SERVER_ERROR, f"{self._target}: response larger than {limit} bytes")
        return body

    async def read_head(self, limit: int) -> bytes:
        """The first `limit` bytes of the body (all of it when shorter): enough to classify an
        error answer, whose status and leading fields matter and whose size does not."""
        body, _ = await self._collect(limit)
        return body

    async def _collect(self, limit: int) -> tuple[bytes, bool]:
        """Read to the end of the body or until past `limit`: (at most `limit` bytes, whether more came).

        A read returns what has arrived so far, not `limit` bytes: an answer split across TCP
        segments would be cut short. Every body read goes through this loop.
        """
        parts: list[bytes] = []
        size = 0
        with _mapped(self._target):
            while data := await self._read_any():
                parts.append(data)
                size += len(data)
                if size > limit:
                    return b"".join(parts)[:limit], True
        return (parts[0] if len(parts) == 1 else b"".join(parts)), False

    async def _read_any(self) -> bytes:
        conn = self._conn
        if conn is None:
            return b""
        data = await conn.read_any()
        if conn.drained:  # read to the end: the connection may carry the next request now
            self._conn = None
            self._eof = True
            self._pool.release(conn)
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. Once `idle_timeout` is set, waiting longer than that for data
        is a TIMEOUT failure (streams set it after their first token: a model may think long
        before it, which the first-token deadline bounds instead).

        One watchdog timer per stream, re-armed lazily from the time of the last data, instead of
        a timeout context per read: a long stream makes thousands of reads.
        """
        watchdog = _IdleWatchdog(self)
        try:
            while True:
                with _mapped(self._target):
                    data = await watchdog.guard(self._read_any())
                if not data:
                    return
                yield data
        finally:
            watchdog.stop()

    def at_eof(self) -> bool:
        """The whole body has arrived and been read."""
        return self._eof

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool if the body had all
        arrived (unread bytes are dropped), else it is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is None:
            self.release()
        else:
            self.close()


class _IdleWatchdog:
    """Cancels the reading task once it has waited `idle_s` for upstream data."""

    __slots__ = ("_fired", "_handle", "_loop", "_response", "_task", "_waiting_since")

    def __init__(self, response: UpstreamResponse) -> None:
        self._response = response
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._waiting_since: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False

    async def guard(self, read: Awaitable[bytes]) -> bytes:
        self._waiting_since = self._loop.time()
        idle = self._response.idle_timeout
        if self._handle is None and idle is not None:
            self._handle = self._loop.call_at(self._waiting_since + idle, self._check)
        try:
            return await read
        except asyncio.CancelledError:
            if self._fired and self._task is not None and self._task.uncancel() == 0:
                raise UpstreamError(FailureKind.TIMEOUT, f"no data for {idle:g}s (idle timeout)") from None
            raise
        finally:
            self._waiting_since = None

    def _check(self) -> None:
        since = self._waiting_since
        now = self._loop.time()
        idle = self._response.idle_timeout or 0.0
        if since is not None and now - since >= idle and self._task is not None:
            self._fired = True
            self._handle = None
            self._task.cancel()
            return
        # data came meanwhile (or we are not reading): look again when the current wait could expire
        self._handle = self._loop.call_at((since if since is not None else now) + idle, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class UpstreamClient:
    """Sends `UpstreamRequest`s over pooled keep-alive connections (`server/pool.py`).

    TLS is verified with the system's CAs, as OpenSSL finds them when the client is created
    (so `SSL_CERT_FILE` and `SSL_CERT_DIR` apply), or with a target's own CA bundle alone.
    Connections are pooled per context: one verified against one bundle never serves another.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._default_tls = client_context()
        self._bundle_tls: dict[str, ssl.SSLContext] = {}

    @classmethod
    def create(cls, *, resolve: Resolver = getaddrinfo, keepalive_s: float = KEEPALIVE_S) -> UpstreamClient:
        return cls(ConnectionPool(keepalive_s=keepalive_s, resolve=resolve))

    async def send(self, request: UpstreamRequest, target: str, *, ca_bundle: str | None = None) -> UpstreamResponse:
        """Send and wait for the response headers; the caller bounds the wait with its deadlines."""
        with _mapped(target):
            origin, path = split_url(request.url)
            head, reusable = request_head(request.method, path, origin.host_header, request.headers, request.body)
            tls = self._tls(ca_bundle) if origin.scheme == "https" else None
            conn = await self._pool.request(origin, tls, head, request.body, reusable=reusable)
        return UpstreamResponse(conn, self._pool, target)

    def _tls(self, ca_bundle: str | None) -> ssl.SSLContext:
        if ca_bundle is None:
            return self._default_tls
        context = self._bundle_tls.get(ca_bundle)
        if context is None:
            if len(self._bundle_tls) >= MAX_CA_BUNDLES:  # bundles replaced by reloads: start afresh
                self._bundle_tls.clear()
            context = self._bundle_tls[ca_bundle] = client_context(ca_bundle)
        return context

    async def close(self) -> None:
        await self._pool.close()


class _mapped:
    """Turn connection and OS failures into classified `UpstreamError`s, naming the target but no URL secret."""

    __slots__ = ("_target",)

    def __init__(self, target: str) -> None:
        self._target = target

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc is None or isinstance(exc, UpstreamError | asyncio.CancelledError):
            return False
        # A failure's traceback holds the frames that hold the connection and its buffers: kept
        # as our error's cause, that would keep the attempt alive until a full collection
        # (issue 11, defect 2). Our error names the cause; the cause's frames are not worth that.
        exc.__traceback__ = None
        if isinstance(exc, CertificateUntrusted):
            raise UpstreamError(FailureKind.CONNECTION,
                                f"{self._target}: TLS certificate not trusted ({exc})") from exc
        if isinstance(exc, ConnectFailed):
            raise UpstreamError(FailureKind.CONNECTION, f"{self._target}: cannot connect ({exc})") from exc
        if isinstance(exc, ConnectionLost | ConnectionResetError):
            raise UpstreamError(FailureKind.CONNECTION,
                                f"{self._target}: connection lost ({describe_os_error(exc)})") from exc
        if isinstance(exc, TimeoutError):
            raise UpstreamError(FailureKind.TIMEOUT, f"{self._target}: timed out") from exc
        if isinstance(exc, OSError):
            raise UpstreamError(FailureKind.CONNECTION,
                                f"{self._target}: connection lost ({describe_os_error(exc)})") from exc
        return False
