"""Delivery modes: simulators' answers reach clients fragmented, delayed, large and over TLS,
and faults (FIN, RST, a port going down) cross the delivery front unchanged."""

from __future__ import annotations

import asyncio
import random
import ssl
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import openai
import orjson
import pytest

from llmroute_proxy.sim import Fault, FaultKind, FaultPlan, SimServer, openai_app
from llmroute_proxy.sim.network import Delivery
from llmroute_proxy.sim.tls import LocalCA

KEY = "sk-delivery-test"
QUESTION = "héllo wörld — 日本語 🚀 and more"

# --- cutting (pure) ----------------------------------------------------------------------------


@pytest.mark.parametrize("delivery", [Delivery(fragment=1), Delivery(fragment=5), Delivery(fragment=9, jitter=True),
                                      Delivery()])
def test_fragments_put_back_together_are_the_data(delivery: Delivery) -> None:
    data = "é日🚀 data: {}\n\n".encode() * 7
    pieces = list(delivery.fragments(data, random.Random(1)))
    assert b"".join(pieces) == data
    assert all(0 < len(piece) <= (delivery.fragment or len(data)) for piece in pieces)


def test_one_byte_fragments_cut_at_every_byte_boundary() -> None:
    assert list(Delivery(fragment=1).fragments(b"abc", random.Random(0))) == [b"a", b"b", b"c"]


def test_jittered_fragments_fall_at_varied_offsets_and_replay_from_the_seed() -> None:
    delivery = Delivery(fragment=16, jitter=True)
    sizes = [len(p) for p in delivery.fragments(bytes(4000), random.Random(7))]
    assert len(set(sizes)) > 8
    assert sizes == [len(p) for p in delivery.fragments(bytes(4000), random.Random(7))]


@pytest.mark.parametrize("bad", [{"fragment": -1}, {"gap": -0.1}, {"gap": float("nan")}])
def test_a_bad_delivery_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Delivery(**bad)  # type: ignore[arg-type]


# --- over the wire -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create()


def client_context(ca: LocalCA) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.cert_pem)
    return context


class Reads(asyncio.Protocol):
    """Records each piece of data as the client's transport hands it over."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.reads.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc) if exc is not None else self.done.set_result(None)


async def raw_exchange(server: SimServer, body: bytes, context: ssl.SSLContext | None) -> list[bytes]:
    """POST `body` and return the reads the client saw, one item per read, until the server closes."""
    loop = asyncio.get_running_loop()
    transport, reads = await loop.create_connection(Reads, server.host, server.port, ssl=context)
    transport.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                    + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        await asyncio.wait_for(reads.done, 10)
    finally:
        transport.close()
    return reads.reads


def chat(stream: bool = False) -> bytes:
    return orjson.dumps({"model": "gpt-4o-mini", "stream": stream,
                         "messages": [{"role": "user", "content": QUESTION}]})


async def test_one_byte_delivery_over_tls_arrives_in_one_byte_reads(ca: LocalCA, tmp_path: Path) -> None:
    app = openai_app(KEY)
    async with await SimServer.start(app, delivery=Delivery(fragment=1),
                                     ssl_context=ca.server_context(tmp_path)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        reads = await raw_exchange(server, chat(stream=True), client_context(ca))
    whole = b"".join(reads)
    assert whole.startswith(b"HTTP/1.1 200 OK\r\n") and b"data: [DONE]" in whole
    assert "日本語".encode() in whole and "🚀".encode() in whole
    # most reads are a single byte: the client really saw cuts inside events and characters
    assert sum(len(r) == 1 for r in reads) > len(whole) // 2


async def test_a_gap_between_fragments_delays_the_answer(ca: LocalCA, tmp_path: Path) -> None:
    app = openai_app(KEY)
    async with await SimServer.start(app, delivery=Delivery(fragment=256, gap=0.05)) as server:
        started = time.monotonic()
        reads = await raw_exchange(server, chat(), None)
        elapsed = time.monotonic() - started
    fragments = -(-len(b"".join(reads)) // 256)
    assert fragments >= 3
    assert elapsed >= 0.05 * (fragments - 1) * 0.9


async def test_a_long_answer_is_at_least_the_bytes_asked_for(ca: LocalCA, tmp_path: Path) -> None:
    app = openai_app(KEY, answer_bytes=512 * 1024)
    server = await SimServer.start(app, delivery=Delivery(fragment=32 * 1024, jitter=True),
                                   ssl_context=ca.server_context(tmp_path))
    async with server, openai.AsyncOpenAI(api_key=KEY, base_url=server.url + "/v1",
                                          http_client=_httpx_trusting(ca)) as client:
        answer = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}])
    text = answer.choices[0].message.content or ""
    assert len(text.encode()) >= 512 * 1024
    assert text.startswith("[sim-openai gpt-4o-mini] You said: " + QUESTION)


async def test_an_untrusted_client_refuses_the_simulator_certificate(tmp_path: Path) -> None:
    app = openai_app(KEY)
    other = LocalCA.create("someone else")
    async with await SimServer.start(app, ssl_context=LocalCA.create().server_context(tmp_path)) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await raw_exchange(server, chat(), client_context(other))


async def test_a_reset_crosses_the_front_as_a_reset(ca: LocalCA, tmp_path: Path) -> None:
    plan = FaultPlan()
    plan.next(Fault(FaultKind.RESET))
    async with await SimServer.start(openai_app(KEY, faults=plan), delivery=Delivery(fragment=3)) as server:
        with pytest.raises(ConnectionResetError):
            await raw_exchange(server, chat(), None)


async def test_a_cut_stream_crosses_the_front_as_a_cut(ca: LocalCA, tmp_path: Path) -> None:
    plan = FaultPlan()
    plan.next(Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=2))
    async with await SimServer.start(openai_app(KEY, faults=plan), delivery=Delivery(fragment=7),
                                     ssl_context=ca.server_context(tmp_path)) as server:
        whole = b"".join(await raw_exchange(server, chat(stream=True), client_context(ca)))
    assert whole.startswith(b"HTTP/1.1 200 OK") and b"[DONE]" not in whole and b"delta" in whole


async def test_a_front_that_stops_listening_refuses_and_comes_back(ca: LocalCA, tmp_path: Path) -> None:
    async with await SimServer.start(openai_app(KEY), delivery=Delivery(fragment=64)) as server:
        port = server.port
        await server.stop_listening()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(server.host, port)
        await server.resume()
        assert server.port == port
        assert b"".join(await raw_exchange(server, chat(), None)).startswith(b"HTTP/1.1 200 OK")


def _httpx_trusting(ca: LocalCA) -> openai.DefaultAsyncHttpxClient:
    return openai.DefaultAsyncHttpxClient(verify=client_context(ca))


def test_the_command_line_serves_a_fragmented_long_answer_over_tls(ca: LocalCA, tmp_path: Path) -> None:
    cert, key = ca.issue()
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "key.pem").write_text(key)
    command = [sys.executable, "-c", "from llmroute_proxy.sim.server import main; main()", "anthropic",
               "--fragment", "700", "--jitter", "--gap", "0.001", "--answer-bytes", "60000",
               "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split(" listening on ")[1].strip()
            assert url.startswith("https://127.0.0.1:")
            client = anthropic.Anthropic(api_key="any", base_url=url, max_retries=0,
                                         http_client=anthropic.DefaultHttpxClient(verify=client_context(ca)))
            message = client.messages.create(model="claude-sonnet-4-5", max_tokens=30_000, timeout=30,
                                             messages=[{"role": "user", "content": QUESTION}])
        finally:
            process.terminate()
    text = message.content[0].text  # type: ignore[union-attr]
    assert len(text.encode()) >= 60_000 and QUESTION in text
