"""Keep-alive connections to providers, pooled per origin and TLS context.

A connection goes back to the pool only when its response was read to the end on a live
HTTP/1.1 keep-alive connection (`Http1Connection.reusable`); the newest idle one is used first,
and one idle for `keepalive_s` is closed. There is no limit on connections: the routes' own
limits bound concurrency.

A request that fails on a reused connection before one byte of its response arrived, because
the server closed that connection (a FIN, not a reset) or the request could not be written, is
sent once more on a fresh connection: the server closed the idle connection as the request
went out, and a healthy provider must not be ejected for a stale socket. (Go's net/http retries a
POST only when none of it was written; this one is retried anyway, as failing over would send it
again too.) A reset is not retried (the server may have read the request: a provider that resets
requests must see each once), nor is a fresh connection's failure: those are the provider's.

Names are resolved with `loop.getaddrinfo` for each new connection (injectable: `resolve`),
and the addresses are raced as RFC 8305's happy eyeballs say (aiohappyeyeballs, as aiohttp did).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohappyeyeballs

from llmroute_proxy.server.http1 import (
    CertificateUntrusted,
    ConnectFailed,
    ConnectionLost,
    Http1Connection,
    describe_os_error,
)

Address = tuple[int, tuple[Any, ...]]
"""(address family, socket address) as getaddrinfo gives them."""
Resolver = Callable[[str, int], Awaitable[Sequence[Address]]]

KEEPALIVE_S = 60.0
HAPPY_EYEBALLS_DELAY_S = 0.25
"""With several addresses (IPv6 and IPv4), the next is tried this long after the last one
started, not after it failed (RFC 8305, as aiohttp did)."""
MAX_CACHED_URLS = 1024


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    host_header: str


def split_url(url: str, _cache: dict[str, tuple[Origin, str]] = {}) -> tuple[Origin, str]:  # noqa: B006
    """The origin of `url` and its request target (path and query), for the request line."""
    found = _cache.get(url)
    if found is not None:
        return found
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConnectFailed("not an http(s) URL")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ConnectFailed("invalid port") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if parts.port is None or port == (443 if scheme == "https" else 80) else f"{shown}:{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if not target.isascii() or " " in target:
        target = quote(target, safe="/?&=%:@!$'()*+,;~-._")
    found = (Origin(scheme, host, port, host_header), target)
    if len(_cache) >= MAX_CACHED_URLS:
        _cache.clear()
    _cache[url] = found
    return found


async def getaddrinfo(host: str, port: int) -> Sequence[Address]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         proto=socket.IPPROTO_TCP)
    return [(family, address) for family, _, _, _, address in infos]


class ConnectionPool:
    def __init__(self, *, keepalive_s: float = KEEPALIVE_S, resolve: Resolver = getaddrinfo) -> None:
        self.keepalive_s = keepalive_s
        self._resolve = resolve
        self._idle: dict[Any, list[Http1Connection]] = {}
        self._open: set[Http1Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, origin: Origin, tls: ssl.SSLContext | None, head: bytes, body: bytes | None,
                      *, reusable: bool = True) -> Http1Connection:
        """Send one request and return its connection once the response's head has arrived."""
        key = (origin, tls)
        conn = self._take(key)
        if conn is not None:
            conn.send(head, body, reusable=reusable)
            try:
                await conn.wait_head()
                return conn
            except ConnectionLost as lost:
                if not lost.stale:
                    raise
            # the server closed it while it was idle: once more, on a fresh connection
        conn = await self._connect(origin, tls, key)
        conn.send(head, body, reusable=reusable)
        await conn.wait_head()
        return conn

    def release(self, conn: Http1Connection) -> None:
        """Take back a connection whose response was read to the end, or close it."""
        if self._closed or not conn.reusable:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        idle = self._idle.get(conn.key)
        if idle is None:
            self._idle[conn.key] = [conn]
        else:
            idle.append(conn)
        if self._sweep is None:
            self._sweep = loop.call_at(conn.idle_since + self.keepalive_s, self._expire)

    def _take(self, key: Any) -> Http1Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_kept = asyncio.get_running_loop().time() - self.keepalive_s
        while idle:
            conn = idle.pop()
            if conn.reusable and conn.idle_since > oldest_kept:
                return conn
            conn.close()
        return None

    def _expire(self) -> None:
        """Close the connections idle for `keepalive_s`; look again when the next one will be."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        oldest_kept = now - self.keepalive_s
        next_due: float | None = None
        for key, idle in list(self._idle.items()):
            kept = []
            for conn in idle:
                if conn.reusable and conn.idle_since > oldest_kept:
                    kept.append(conn)
                    next_due = conn.idle_since if next_due is None else min(next_due, conn.idle_since)
                else:
                    conn.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        if next_due is not None:
            self._sweep = loop.call_at(max(next_due + self.keepalive_s, now + 0.05), self._expire)

    async def _connect(self, origin: Origin, tls: ssl.SSLContext | None, key: Any) -> Http1Connection:
        if self._closed:
            raise ConnectFailed("client closed")
        loop = asyncio.get_running_loop()
        try:
            addresses = await self._resolve(origin.host, origin.port)
        except OSError as exc:
            raise ConnectFailed(describe_os_error(exc)) from None
        if not addresses:
            raise ConnectFailed("no address found")
        infos = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address) for family, address in addresses]
        try:
            sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S)
        except (OSError, RuntimeError) as exc:
            raise ConnectFailed(describe_os_error(exc)) from None
        conn = Http1Connection(loop, key)
        try:
            await loop.create_connection(lambda: conn, sock=sock, ssl=tls,
                                         server_hostname=origin.host if tls is not None else None)
        except ssl.SSLCertVerificationError as exc:
            raise CertificateUntrusted(exc.verify_message or describe_os_error(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(_strip_ssl_location(describe_os_error(exc))) from None
        self._open.add(conn)
        conn.on_lost = self._open.discard
        return conn

    async def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._idle.clear()
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost


def _strip_ssl_location(reason: str) -> str:
    return reason.split(" (_ssl.c:")[0]
