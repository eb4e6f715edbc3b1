"""The one seam through which the sidecar talks to providers.

Every upstream call goes through `UpstreamClient`, and every aiohttp failure is mapped here,
in one place, to an `UpstreamError` whose `kind` drives failover. Tests replace the whole
client, or point it at simulated providers on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable
from types import TracebackType
from typing import Literal

import aiohttp

from llmroute_proxy.dialects.base import UpstreamRequest
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.trust import client_context

MAX_ERROR_BODY = 64 * 1024
MAX_RESPONSE_BODY = 64 * 1024 * 1024
MAX_CA_BUNDLES = 64


class UpstreamResponse:
    """An open upstream response. Close it (or use `async with`) to free the connection."""

    __slots__ = ("_response", "_target", "headers", "idle_timeout", "status")

    def __init__(self, response: aiohttp.ClientResponse, target: str) -> None:
        self._response = response
        self._target = target
        self.idle_timeout: float | None = None
        self.status = response.status
        self.headers = response.headers

    async def read(self, limit: int = MAX_RESPONSE_BODY) -> bytes:
        """The whole body, however the network splits and delays it. A body larger than `limit`
        (declared or found so) is a SERVER_ERROR failure, and no more of it is read."""
        declared = self._response.content_length
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

        aiohttp's `content.read(n)` returns what is buffered so far, not `n` bytes: an answer
        split across TCP segments would be cut short. Every body read goes through this loop.
        """
        parts: list[bytes] = []
        size = 0
        with _mapped(self._target):
            async for data in self._response.content.iter_any():
                parts.append(data)
                size += len(data)
                if size > limit:
                    return b"".join(parts)[:limit], True
        return b"".join(parts), False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. Once `idle_timeout` is set, waiting longer than that for data
        is a TIMEOUT failure (streams set it after their first token: a model may think long
        before it, which the first-token deadline bounds instead).

        One watchdog timer per stream, re-armed lazily from the time of the last data, instead of
        a timeout context per read: a long stream makes thousands of reads.
        """
        content = self._response.content
        watchdog = _IdleWatchdog(self)
        try:
            while True:
                with _mapped(self._target):
                    data = await watchdog.guard(content.readany())
                if not data:
                    return
                yield data
        finally:
            watchdog.stop()

    def at_eof(self) -> bool:
        """The whole body has arrived and been read."""
        return self._response.content.at_eof()

    def close(self) -> None:
        self._response.close()

    def release(self) -> None:
        self._response.release()

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
    """Sends `UpstreamRequest`s over one pooled keep-alive session.

    TLS is verified with the system's CAs, as OpenSSL finds them when the client is created
    (so `SSL_CERT_FILE` and `SSL_CERT_DIR` apply), or with a target's own CA bundle alone.
    Connections are pooled per context: one verified against one bundle never serves another.
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._default_tls = client_context()
        self._bundle_tls: dict[str, ssl.SSLContext] = {}

    @classmethod
    def create(cls) -> UpstreamClient:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60,
                                         ttl_dns_cache=300, enable_cleanup_closed=True)
        session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                        skip_auto_headers=("User-Agent",), raise_for_status=False)
        return cls(session)

    async def send(self, request: UpstreamRequest, target: str, *, ca_bundle: str | None = None) -> UpstreamResponse:
        """Send and wait for the response headers; the caller bounds the wait with its deadlines."""
        with _mapped(target):
            response = await self._session.request(
                request.method, request.url, data=request.body, headers=request.headers,
                allow_redirects=False, ssl=self._tls(ca_bundle),
            )
        return UpstreamResponse(response, target)

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
        await self._session.close()


class _mapped:
    """Turn aiohttp/OS failures into classified `UpstreamError`s, naming the target but no URL secret."""

    __slots__ = ("_target",)

    def __init__(self, target: str) -> None:
        self._target = target

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc is None or isinstance(exc, UpstreamError | asyncio.CancelledError):
            return False
        # aiohttp keeps some failures (a stream's ClientPayloadError in its StreamReader) while
        # their traceback holds the frames that hold the reader: a cycle that keeps the attempt's
        # response, transport and buffers alive until a full collection (issue 11, defect 2).
        # Our error names the cause; the cause's frames are not worth that.
        exc.__traceback__ = None
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            reason = getattr(exc.certificate_error, "verify_message", None) or _describe(exc.certificate_error)
            raise UpstreamError(FailureKind.CONNECTION,
                                f"{self._target}: TLS certificate not trusted ({reason})") from exc
        if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError | socket.gaierror):
            raise UpstreamError(FailureKind.CONNECTION, f"{self._target}: cannot connect ({_describe(exc)})") from exc
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError
                      | aiohttp.ClientOSError | ConnectionResetError):
            raise UpstreamError(FailureKind.CONNECTION,
                                f"{self._target}: connection lost ({_describe(exc)})") from exc
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            raise UpstreamError(FailureKind.TIMEOUT, f"{self._target}: timed out") from exc
        if isinstance(exc, aiohttp.ClientError):
            raise UpstreamError(FailureKind.CONNECTION, f"{self._target}: {_describe(exc)}") from exc
        return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or type(exc.os_error).__name__
    text = str(exc) or type(exc).__name__
    return text[:200]
