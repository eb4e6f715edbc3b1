"""The upstream client's own HTTP/1.1 behaviour: keep-alive, stale connections, framing, decoding,
back-pressure and cancellation, against raw asyncio servers on 127.0.0.1.

Each server is a script per accepted connection (`Script`), so a test says exactly what the
provider's side of the socket does and counts connections and requests itself.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from multidict import CIMultiDictProxy

from llmroute_proxy.dialects.base import UpstreamRequest
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.server.http1 import READ_HIGH_WATER
from llmroute_proxy.server.pool import Address
from llmroute_proxy.server.upstream import UpstreamClient

Script = Callable[["RawServer", int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
"""What the server does on its n-th accepted connection (from 0)."""


class RawServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            # every script still running ends: its reads see the end, its writes fail. One that is
            # closing already ended; aborting it then can crash in asyncio (a transport whose close
            # flushed its buffer has no loop left, but counts no lost connection, in 3.11).
            if not writer.transport.is_closing():
                writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            await self.script(self, index, reader, writer)
        except ConnectionError:
            pass  # the client (or the test's end) closed the connection
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request's head (its body is read and dropped); None when the client closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
            return None
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        self.requests.append(head)
        return head


def ok(body: bytes = b'{"ok": true}', *, extra: str = "", version: str = "1.1") -> bytes:
    return (f"HTTP/{version} 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


def chunked(body: bytes, pieces: int = 3) -> bytes:
    step = max(1, len(body) // pieces)
    out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    for start in range(0, len(body), step):
        piece = body[start:start + step]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def request(url: str) -> UpstreamRequest:
    return UpstreamRequest("POST", url, {"content-type": "application/json", "authorization": "Bearer k"}, b"{}")


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient.create()
    yield upstream
    await upstream.close()


async def fetch(client: UpstreamClient, url: str) -> bytes:
    async with asyncio.timeout(10):
        answer = await client.send(request(url), "t")
        async with answer:
            return await answer.read()


def keep_answering(answer: bytes) -> Script:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(answer)
            await writer.drain()
    return script


def serving(script: Script) -> RawServer:
    return RawServer(script)


# --- keep-alive


async def test_a_connection_read_to_the_end_carries_the_next_request(client: UpstreamClient) -> None:
    async with serving(keep_answering(ok())) as server:
        for _ in range(3):
            assert await fetch(client, server.url()) == b'{"ok": true}'
    assert (server.connections, len(server.requests)) == (1, 3)


async def test_a_chunked_answer_is_read_whole_and_its_connection_reused(client: UpstreamClient) -> None:
    body = b'{"text": "' + b"abc" * 1000 + b'"}'
    async with serving(keep_answering(chunked(body, pieces=5))) as server:
        assert await fetch(client, server.url()) == body
        assert await fetch(client, server.url()) == body
    assert server.connections == 1


@pytest.mark.parametrize("extra", ["connection: close\r\n"], ids=["connection-close"])
async def test_an_answer_saying_connection_close_is_not_pooled(client: UpstreamClient, extra: str) -> None:
    """The server keeps the socket open but said close: a pooled one would wait forever for an answer."""
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok(extra=extra))
        await writer.drain()
        await reader.read()  # never answers again on this connection

    async with serving(script) as server:
        for _ in range(2):
            assert await fetch(client, server.url()) == b'{"ok": true}'
    assert server.connections == 2


async def test_an_http_1_0_answer_is_not_pooled(client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok(version="1.0", extra="connection: keep-alive\r\n"))
        await writer.drain()
        await reader.read()

    async with serving(script) as server:
        for _ in range(2):
            assert await fetch(client, server.url()) == b'{"ok": true}'
    assert server.connections == 2


async def test_a_request_saying_connection_close_does_not_leave_its_connection_pooled(
        client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok())
        await writer.drain()
        await reader.read()

    async with serving(script) as server:
        for _ in range(2):
            async with asyncio.timeout(10):
                answer = await client.send(UpstreamRequest("POST", server.url(), {"Connection": "close"}, b"{}"), "t")
                async with answer:
                    await answer.read()
    assert server.connections == 2


async def test_a_second_answer_to_one_request_leaves_the_connection_unpooled(client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok(b'{"n": %d}' % index) + ok(b'{"unasked": 1}'))
        await writer.drain()
        await reader.read()

    async with serving(script) as server:
        assert await fetch(client, server.url()) == b'{"n": 0}'
        assert await fetch(client, server.url()) == b'{"n": 1}'
    assert server.connections == 2


async def test_an_interim_100_continue_is_skipped(client: UpstreamClient) -> None:
    async with serving(keep_answering(b"HTTP/1.1 100 Continue\r\n\r\n" + ok())) as server:
        assert await fetch(client, server.url()) == b'{"ok": true}'
        assert await fetch(client, server.url()) == b'{"ok": true}'
    assert server.connections == 1


async def test_an_unread_answer_is_not_pooled(client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)  # 90 bytes never come
        await writer.drain()
        await reader.read()

    async with serving(script) as server:
        for _ in range(2):
            async with asyncio.timeout(10):
                answer = await client.send(request(server.url()), "t")
                answer.release()
    assert server.connections == 2


async def test_an_idle_connection_is_closed_after_the_keepalive_time(client: UpstreamClient) -> None:
    """No waiting for the 60 s: the pool's sweep is due then, and run as if they had passed."""
    closed = asyncio.Event()

    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok())
        await writer.drain()
        if await reader.read() == b"":
            closed.set()

    pool: Any = client._pool
    async with serving(script) as server:
        assert await fetch(client, server.url()) == b'{"ok": true}'
        [idle] = [conn for conns in pool._idle.values() for conn in conns]
        assert pool._sweep.when() == pytest.approx(idle.idle_since + 60.0)
        idle.idle_since -= 59.0
        pool._expire()  # 59 s idle: kept
        assert not idle.closed
        idle.idle_since -= 1.0
        pool._expire()  # 60 s: closed
        async with asyncio.timeout(10):
            await closed.wait()
        assert await fetch(client, server.url()) == b'{"ok": true}'
    assert server.connections == 2


# --- stale connections


async def test_a_reused_connection_closed_before_any_answer_is_retried_once_on_a_fresh_one(
        client: UpstreamClient) -> None:
    """The provider closed the idle connection as the request went out: the request still succeeds."""
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok(b'{"n": %d}' % index))
        await writer.drain()
        if index == 0:
            await server.read_request(reader)  # the second request came on the reused connection...
            return  # ...and the server closes it without a byte of answer
        await reader.read()

    async with serving(script) as server:
        assert await fetch(client, server.url()) == b'{"n": 0}'
        assert await fetch(client, server.url()) == b'{"n": 1}'
    assert (server.connections, len(server.requests)) == (2, 3)


async def test_a_reused_connection_reset_after_the_request_is_not_retried(client: UpstreamClient) -> None:
    """A reset may come after the server read the request: a provider that resets requests sees each once."""
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok())
        await writer.drain()
        await server.read_request(reader)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    async with serving(script) as server:
        await fetch(client, server.url())
        with pytest.raises(UpstreamError) as failed:
            await fetch(client, server.url())
    assert failed.value.kind is FailureKind.CONNECTION
    assert str(failed.value) == "t: connection lost (Connection reset by peer)"
    assert (server.connections, len(server.requests)) == (1, 2)


async def test_a_fresh_connection_closed_before_any_answer_is_not_retried(client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)

    async with serving(script) as server:
        with pytest.raises(UpstreamError) as failed:
            await fetch(client, server.url())
    assert failed.value.kind is FailureKind.CONNECTION
    assert "t: connection lost (" in str(failed.value)
    assert (server.connections, len(server.requests)) == (1, 1)


async def test_a_reused_connection_cut_after_part_of_the_answer_is_not_retried(client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok())
        await writer.drain()
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-le")
        await writer.drain()

    async with serving(script) as server:
        await fetch(client, server.url())
        with pytest.raises(UpstreamError) as failed:
            await fetch(client, server.url())
    assert failed.value.kind is FailureKind.CONNECTION
    assert (server.connections, len(server.requests)) == (1, 2)


async def test_a_reused_connection_failing_twice_fails_once_more_on_the_fresh_one_only(
        client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if index == 0:
            writer.write(ok())
            await writer.drain()
            await server.read_request(reader)

    async with serving(script) as server:
        await fetch(client, server.url())
        with pytest.raises(UpstreamError) as failed:
            await fetch(client, server.url())
    assert failed.value.kind is FailureKind.CONNECTION
    assert (server.connections, len(server.requests)) == (2, 3)


# --- bodies


@pytest.mark.parametrize(("encoding", "encode"), [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
], ids=["gzip", "deflate", "raw-deflate"])
async def test_a_compressed_answer_is_decoded(client: UpstreamClient, encoding: str,
                                              encode: Callable[[bytes], bytes]) -> None:
    body = b'{"text": "' + "é日".encode() * 2000 + b'"}'
    async with serving(keep_answering(ok(encode(body), extra=f"content-encoding: {encoding}\r\n"))) as server:
        assert await fetch(client, server.url()) == body
        assert await fetch(client, server.url()) == body
    assert server.connections == 1
    assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in server.requests[0]


async def test_a_corrupt_compressed_answer_is_a_connection_failure(client: UpstreamClient) -> None:
    async with serving(keep_answering(ok(b"not gzip at all", extra="content-encoding: gzip\r\n"))) as server:
        with pytest.raises(UpstreamError) as failed:
            await fetch(client, server.url())
    assert failed.value.kind is FailureKind.CONNECTION


async def test_an_answer_without_length_is_read_until_the_server_closes(client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst ")
        await writer.drain()
        writer.write(b"second")

    async with serving(script) as server:
        assert await fetch(client, server.url()) == b"first second"
        assert await fetch(client, server.url()) == b"first second"
    assert server.connections == 2


async def test_a_body_cut_short_is_a_connection_failure(client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)

    async with serving(script) as server:
        with pytest.raises(UpstreamError) as failed:
            await fetch(client, server.url())
    assert failed.value.kind is FailureKind.CONNECTION
    assert "connection lost" in str(failed.value)


async def test_a_body_larger_than_the_limit_is_refused_and_its_connection_closed(client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if index == 0:  # more than the limit, and the rest of the body still to come
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1388\r\n" + b"z" * 5000 + b"\r\n")
            await writer.drain()
            await reader.read()
            server.closed_by_client.set()
            return
        writer.write(ok())
        await writer.drain()

    async with serving(script) as server:
        async with asyncio.timeout(10):
            answer = await client.send(request(server.url()), "t")
            with pytest.raises(UpstreamError) as refused:
                async with answer:
                    await answer.read(limit=4096)
            await server.closed_by_client.wait()
        assert await fetch(client, server.url()) == b'{"ok": true}'
    assert refused.value.kind is FailureKind.SERVER_ERROR
    assert server.connections == 2


async def test_headers_are_a_case_insensitive_multidict_with_every_value(client: UpstreamClient) -> None:
    answer_bytes = ok(extra="X-RateLimit-Remaining-Requests: 7\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n")
    async with serving(keep_answering(answer_bytes)) as server:
        async with asyncio.timeout(10):
            answer = await client.send(request(server.url()), "t")
            async with answer:
                await answer.read()
    assert isinstance(answer.headers, CIMultiDictProxy)
    assert answer.headers["x-ratelimit-remaining-requests"] == "7"
    assert answer.headers.getall("SET-COOKIE") == ["a=1", "b=2"]
    assert answer.status == 200


async def test_the_request_goes_out_with_its_own_headers_and_host(client: UpstreamClient) -> None:
    async with serving(keep_answering(ok())) as server:
        async with asyncio.timeout(10):
            sent = UpstreamRequest("POST", server.url("/v1beta/models/x:generate?key=SECRET&alt=sse"),
                                   {"X-Goog-Api-Client": "a/1", "content-type": "application/json"}, b"{}")
            async with await client.send(sent, "t") as answer:
                await answer.read()
    head = server.requests[0]
    assert head.startswith(b"POST /v1beta/models/x:generate?key=SECRET&alt=sse HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{server.port}\r\n".encode() in head
    assert b"\r\nX-Goog-Api-Client: a/1\r\n" in head and b"\r\nContent-Length: 2\r\n" in head
    assert b"user-agent" not in head.lower()


async def test_a_header_with_a_newline_is_refused_before_sending(client: UpstreamClient) -> None:
    async with serving(keep_answering(ok())) as server:
        with pytest.raises(ValueError):
            await client.send(UpstreamRequest("POST", server.url(), {"x-a": "b\r\nx-injected: 1"}, b"{}"), "t")
    assert server.requests == []


# --- back-pressure and cancellation


async def test_an_unread_stream_stops_the_socket_being_read_and_resumes_when_read(client: UpstreamClient) -> None:
    total = 24 * 1024 * 1024
    written = 0

    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await server.read_request(reader)
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n".encode())
        block = b"d" * 65536
        while written < total:
            writer.write(block)
            written += len(block)
            await writer.drain()

    async with serving(script) as server:
        async with asyncio.timeout(20):
            answer = await client.send(request(server.url()), "t")
            conn: Any = answer._conn  # the connection under test
            while conn._transport is not None and conn._transport.is_reading():
                await asyncio.sleep(0.005)  # until the client stops reading its socket
            paused_at = written
            for _ in range(20):  # the server is stuck behind full socket buffers, not the client's memory
                await asyncio.sleep(0.005)
            assert conn._buffered <= READ_HIGH_WATER + 1024 * 1024
            assert written < total
            assert written - paused_at < total // 2
            received = 0
            async for data in answer.chunks():
                received += len(data)
            assert received == total


async def test_a_whole_answer_dropped_unread_while_reading_was_paused_leaves_a_working_connection(
        client: UpstreamClient) -> None:
    """The read that completes the answer is the one that takes it past the high-water mark: the
    server holds its last bytes back until the client holds all the others (below the mark)."""
    body = b"x" * (READ_HIGH_WATER + 10)
    tail_at = len(body) - 20
    all_but_the_tail_held, answered = asyncio.Event(), 0

    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        while await server.read_request(reader) is not None:
            answer = ok(body)
            if answered == 0:
                writer.write(answer[:len(answer) - 20])
                await writer.drain()
                await all_but_the_tail_held.wait()
                answer = answer[len(answer) - 20:]
            answered += 1
            writer.write(answer)
            await writer.drain()

    async with serving(script) as server:
        async with asyncio.timeout(10):
            answer = await client.send(request(server.url()), "t")
            conn: Any = answer._conn
            while conn._buffered < tail_at:
                await asyncio.sleep(0.005)
            assert not conn._paused
            all_but_the_tail_held.set()
            while not conn._complete:
                await asyncio.sleep(0.005)
            assert conn._paused
            answer.release()  # whole, unread: back to the pool
            assert await fetch(client, server.url()) == body
    assert server.connections == 1


async def test_a_cancelled_read_closes_the_connection_and_never_pools_it(client: UpstreamClient) -> None:
    async def script(server: RawServer, index: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await reader.read()  # the rest never comes; EOF when the client closes
        server.closed_by_client.set()

    async with serving(script) as server:
        async with asyncio.timeout(10):
            answer = await client.send(request(server.url()), "t")
            conn: Any = answer._conn
            reading = asyncio.create_task(answer.read())
            while conn._waiter is None:  # until the read waits for the rest
                await asyncio.sleep(0)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            await server.closed_by_client.wait()
            answer.release()
    assert server.connections == 1


# --- connecting


async def test_names_are_resolved_by_the_given_resolver() -> None:
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> Sequence[Address]:
        asked.append((host, port))
        return [(socket.AF_INET, ("127.0.0.1", port))]

    client = UpstreamClient.create(resolve=resolve)
    try:
        async with serving(keep_answering(ok())) as server:
            url = f"http://provider.example:{server.port}/v1/chat/completions"
            assert await fetch(client, url) == b'{"ok": true}'
            assert await fetch(client, url) == b'{"ok": true}'
    finally:
        await client.close()
    assert asked == [("provider.example", server.port)]  # once: the connection was pooled
    assert f"\r\nHost: provider.example:{server.port}\r\n".encode() in server.requests[0]


async def test_an_address_that_refuses_is_passed_over_for_the_next(client: UpstreamClient) -> None:
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    dead_port = refusing.getsockname()[1]
    refusing.close()

    async with serving(keep_answering(ok())) as server:
        async def resolve(host: str, port: int) -> Sequence[Address]:
            return [(socket.AF_INET, ("127.0.0.1", dead_port)), (socket.AF_INET, ("127.0.0.1", server.port))]

        two = UpstreamClient.create(resolve=resolve)
        try:
            assert await fetch(two, "http://provider.example/v1/chat/completions") == b'{"ok": true}'
        finally:
            await two.close()
    assert b"\r\nHost: provider.example\r\n" in server.requests[0]


async def test_a_name_that_does_not_resolve_cannot_connect_and_no_url_is_told() -> None:
    async def resolve(host: str, port: int) -> Sequence[Address]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    client = UpstreamClient.create(resolve=resolve)
    try:
        with pytest.raises(UpstreamError) as failed:
            await client.send(request("https://nowhere.example/v1?key=SECRET"), "t")
    finally:
        await client.close()
    assert str(failed.value) == "t: cannot connect (Name or service not known)"
    assert failed.value.kind is FailureKind.CONNECTION


async def test_a_refused_connection_cannot_connect(client: UpstreamClient) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(UpstreamError) as failed:
        await client.send(request(f"http://127.0.0.1:{port}/v1?key=SECRET"), "t")
    assert str(failed.value) == "t: cannot connect (Connection refused)"
