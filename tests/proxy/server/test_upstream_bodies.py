"""Upstream bodies are read whole, however the network splits and delays them (issue 11, defect 1).

A raw TCP server writes each HTTP response in the pieces a test gives it, with a pause between
writes, the way a real network hands over a long answer: nothing here depends on aiohttp's server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from llmroute_proxy.dialects.base import UpstreamRequest
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.server.upstream import MAX_ERROR_BODY, UpstreamClient


class PiecewiseServer:
    """Answers every request with `pieces`, written one TCP write each, `gap` seconds apart."""

    def __init__(self, pieces: Sequence[bytes], gap: float) -> None:
        self.pieces = pieces
        self.gap = gap
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> PiecewiseServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        for index, piece in enumerate(self.pieces):
            if index:
                await asyncio.sleep(self.gap)
            writer.write(piece)
            await writer.drain()
        writer.close()


def response(status: int, body: bytes, *, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n"
            "connection: close\r\n\r\n").encode() + body


def chunked(status: int, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
            f"connection: close\r\n\r\n{len(body):x}\r\n").encode() + body + b"\r\n0\r\n\r\n"


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient.create()
    yield upstream
    await upstream.close()


def request(url: str) -> UpstreamRequest:
    return UpstreamRequest("POST", url, {"content-type": "application/json"}, b"{}")


ANSWER = b'{"id": "x", "choices": [{"message": {"content": "' + "é日🚀".encode() * 40 + b'"}}]}'


async def read_answer(client: UpstreamClient, pieces: Sequence[bytes], gap: float, limit: int | None = None,
                      error: bool = False) -> bytes:
    async with PiecewiseServer(pieces, gap) as server:
        answer = await client.send(request(server.url), "t")
        async with answer:
            if error:
                return await answer.read_head(MAX_ERROR_BODY if limit is None else limit)
            return await (answer.read() if limit is None else answer.read(limit))


async def test_an_answer_in_two_writes_50ms_apart_is_read_whole(client: UpstreamClient) -> None:
    whole = response(200, ANSWER)
    cut = len(whole) - len(ANSWER) // 2
    assert await read_answer(client, [whole[:cut], whole[cut:]], gap=0.05) == ANSWER


async def test_a_512_kib_answer_in_one_write_is_read_whole(client: UpstreamClient) -> None:
    big = b'{"text": "' + b"x" * (512 * 1024) + b'"}'
    assert await read_answer(client, [response(200, big)], gap=0.0) == big


async def test_an_answer_split_at_every_byte_is_read_whole(client: UpstreamClient) -> None:
    whole = response(200, ANSWER)
    head = len(whole) - len(ANSWER)
    pieces = [whole[:head], *(whole[i:i + 1] for i in range(head, len(whole)))]
    assert await read_answer(client, pieces, gap=0.0) == ANSWER


async def test_a_chunked_answer_in_pieces_is_read_whole(client: UpstreamClient) -> None:
    whole = chunked(200, ANSWER)
    pieces = [whole[i:i + 7] for i in range(0, len(whole), 7)]
    assert await read_answer(client, pieces, gap=0.002) == ANSWER


async def test_an_error_body_in_two_writes_is_read_whole(client: UpstreamClient) -> None:
    error = b'{"error": {"message": "rate limited", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}'
    whole = response(429, error)
    cut = len(whole) - 20
    assert await read_answer(client, [whole[:cut], whole[cut:]], gap=0.05, error=True) == error


async def test_an_error_body_longer_than_the_limit_is_cut_at_the_limit(client: UpstreamClient) -> None:
    error = b"<html>" + b"e" * 5000 + b"</html>"
    assert await read_answer(client, [response(502, error)], gap=0.0, limit=1000, error=True) == error[:1000]


async def test_an_answer_larger_than_the_limit_is_refused_as_a_server_error(client: UpstreamClient) -> None:
    big = b"y" * 5000
    whole = chunked(200, big)
    with pytest.raises(UpstreamError) as refused:
        await read_answer(client, [whole[:3000], whole[3000:]], gap=0.01, limit=4096)
    assert refused.value.kind is FailureKind.SERVER_ERROR
    assert "larger than 4096 bytes" in str(refused.value)


async def test_a_declared_length_over_the_limit_is_refused_before_reading(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamError) as refused:
        await read_answer(client, [response(200, b"{}", declared=10_000)], gap=0.0, limit=4096)
    assert refused.value.kind is FailureKind.SERVER_ERROR


def test_only_the_upstream_seam_reads_aiohttp_response_content() -> None:
    """Reading `.content` directly is how defect 1 happened: every body read stays in upstream.py."""
    package = Path(__file__).parents[3] / "proxy" / "llmroute_proxy"
    readers = [path.relative_to(package).as_posix() for path in package.rglob("*.py")
               if "sim" not in path.parts and ".content.read" in path.read_text()]
    assert readers == []
    assert ".content.read(" not in (package / "server" / "upstream.py").read_text()
