"""Slow clients are bounded: head and body read deadlines, a connection cap, the keep-alive timeout.

Raw sockets on 127.0.0.1, because no HTTP client sends a head a byte at a time. Deadlines are
tiny (0.2 s) where real timers run, and every bound asserted is generous: the tests show that a
connection is cut, not how precisely on time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from llmroute_proxy.cli import listen, parser
from llmroute_proxy.server.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from llmroute_proxy.server.runner import Listen, build_sidecar, start_listeners
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.sim import Fault, FaultKind, FaultPlan, SimServer, openai_app
from llmroute_proxy.table import Pricing, ProviderType, Route, Secret, Table, Target, TargetId, Tier

TINY = 0.2
PATIENCE = 5.0  # far above every deadline used here: a cut must come well before it
HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"X-Padding: " + b"p" * 200 + b"\r\nContent-Length: 60\r\n\r\n")
MODELS = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def table(url: str = "http://127.0.0.1:9/v1") -> Table:
    target = Target(id=TargetId("oai/gpt-4o-mini@here"), provider="oai", provider_type=ProviderType.OPENAI,
                    model="gpt-4o-mini", url=url, region="here", credential=Secret("k-oai"),
                    pricing=Pricing(1.0, 2.0))
    return Table(version="v-slow", region="here",
                 routes=(Route(name="main", tiers={"fast": Tier("fast", (target,))}, rules=(), default_tier="fast"),))


@asynccontextmanager
async def sidecar_listening(limits: ConnectionLimits, url: str | None = None) -> AsyncIterator[tuple[int, Sidecar]]:
    sidecar = build_sidecar()
    sidecar.install(table(url) if url else table())
    runners = await start_listeners(sidecar, Listen(port=0, admin_port=0, limits=limits))
    try:
        yield runners[0].addresses[0][1], sidecar
    finally:
        for runner in runners:
            await runner.cleanup()
        await sidecar.upstream.close()
        sidecar.telemetry.shutdown()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    try:
        return await asyncio.wait_for(reader.read(), PATIENCE)
    except ConnectionResetError:
        return b""


async def drip(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, data: bytes) -> int:
    """Send `data` a byte at a time until the server closes; return how many bytes went out."""
    sent = 0
    for byte in data:
        if reader.at_eof() or writer.is_closing():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        sent += 1
        await asyncio.sleep(0.02)
    return sent


async def test_a_head_sent_byte_by_byte_is_cut_at_the_head_deadline_with_408() -> None:
    async with sidecar_listening(ConnectionLimits(head_s=TINY, body_s=PATIENCE)) as (port, _):
        reader, writer = await connect(port)
        sender = asyncio.create_task(drip(writer, reader, HEAD))
        answer = await until_closed(reader)
        sent = await asyncio.wait_for(sender, PATIENCE)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Connection: close" in answer
    body = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout" and "head" in body["error"]["message"]
    assert sent < len(HEAD)  # cut while the head was still arriving


async def test_a_stalled_body_is_cut_at_the_body_deadline_with_408_in_the_endpoints_dialect() -> None:
    async with sidecar_listening(ConnectionLimits(head_s=PATIENCE, body_s=TINY)) as (port, sidecar):
        answers = []
        for head in (HEAD, HEAD.replace(b"/v1/chat/completions", b"/v1/messages")):
            reader, writer = await connect(port)
            writer.write(head + b'{"model": "fast", ')  # 18 of the 60 bytes promised, then silence
            await writer.drain()
            answers.append(await until_closed(reader))
            writer.close()
        assert closed_connections(sidecar)[("data", "body_timeout")] == 2
    openai_answer, anthropic_answer = answers
    assert openai_answer.startswith(b"HTTP/1.1 408 ")
    error = orjson.loads(openai_answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_timeout" and "body" in error["message"]
    assert anthropic_answer.startswith(b"HTTP/1.1 408 ")
    shaped = orjson.loads(anthropic_answer.split(b"\r\n\r\n", 1)[1])
    assert shaped["type"] == "error" and shaped["error"]["type"] == "timeout_error"
    assert "body" in shaped["error"]["message"]


async def test_bytes_arriving_do_not_move_the_head_deadline() -> None:
    armed: list[tuple[float, asyncio.TimerHandle, Callable[[], None]]] = []
    loop = asyncio.get_running_loop()

    def schedule(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = loop.call_later(3600, callback)  # fired by the test, never by the clock
        armed.append((delay, handle, callback))
        return handle

    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    await GuardedSite(runner, "127.0.0.1", 0, ConnectionGuard(ConnectionLimits(head_s=7.0), schedule)).start()
    try:
        reader, writer = await connect(runner.addresses[0][1])
        for byte in HEAD[:40]:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.005)
        live = [(delay, callback) for delay, handle, callback in armed if not handle.cancelled()]
        assert [delay for delay, _, _ in armed] == [7.0]  # armed once, at accept
        assert len(live) == 1
        live[0][1]()  # the deadline passes
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        writer.close()
    finally:
        for _, handle, _ in armed:
            handle.cancel()
        await runner.cleanup()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_for_fds(count: int) -> int:
    async with asyncio.timeout(PATIENCE):
        while open_fds() > count:
            await asyncio.sleep(0.01)
    return open_fds()


async def test_connections_over_the_cap_are_refused_while_those_within_are_served() -> None:
    cap = 3
    async with sidecar_listening(ConnectionLimits(max_connections=cap, head_s=PATIENCE)) as (port, _):
        baseline = open_fds()
        held = [await connect(port) for _ in range(cap)]  # silent: slow clients holding their slots
        reader, writer = await connect(port)
        refused = await until_closed(reader)
        writer.close()
        assert refused == b"" or refused.startswith(b"HTTP/1.1 503 ")
        if refused:
            assert orjson.loads(refused.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_many_connections"
        for held_reader, held_writer in held:  # the first `cap` are still served
            held_writer.write(MODELS)
            await held_writer.drain()
            assert (await until_closed(held_reader)).startswith(b"HTTP/1.1 200 OK")
            held_writer.close()
        await wait_for_fds(baseline)  # the slots are free again
        reader, writer = await connect(port)
        writer.write(MODELS)
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
        assert await wait_for_fds(baseline) <= baseline  # fewer: descriptors of earlier tests closed meanwhile


def closed_connections(sidecar: Sidecar) -> dict[tuple[str, str], float]:
    body, _ = sidecar.telemetry.prometheus_text()
    return {(s.labels["llmroute_plane"], s.labels["llmroute_reason"]): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples
            if s.name == "llmroute_connections_closed_total"}


def open_connections(sidecar: Sidecar) -> dict[str, float]:
    body, _ = sidecar.telemetry.prometheus_text()
    return {s.labels["llmroute_plane"]: s.value for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == "llmroute_connections_open"}


async def test_many_slow_clients_are_all_cut_counted_and_every_descriptor_comes_back() -> None:
    async with sidecar_listening(ConnectionLimits(max_connections=50, head_s=TINY)) as (port, sidecar):
        baseline = open_fds()
        clients = [await connect(port) for _ in range(60)]  # 10 over the cap
        for _, writer in clients:
            writer.write(HEAD[:5])
        answers = await asyncio.gather(*(until_closed(reader) for reader, _ in clients))
        for _, writer in clients:
            writer.close()
        assert all(a == b"" or a.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 503 ")) for a in answers)
        assert await wait_for_fds(baseline) <= baseline  # fewer: descriptors of earlier tests closed meanwhile
        closed = closed_connections(sidecar)
        assert closed[("data", "head_timeout")] + closed.get(("data", "refused"), 0) == 60
        # every connection cut got its 408, although its client was still sending (no reset ate it)
        assert sum(a.startswith(b"HTTP/1.1 408 ") for a in answers) == closed[("data", "head_timeout")] >= 50
        assert open_connections(sidecar) == {"data": 0, "admin": 0}


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_time() -> None:
    async with sidecar_listening(ConnectionLimits(keepalive_s=TINY)) as (port, _):
        reader, writer = await connect(port)
        writer.write(MODELS.replace(b"Connection: close\r\n", b""))
        await writer.drain()
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 200 OK")  # then closed while idle
        writer.close()


async def test_an_answer_that_takes_longer_than_the_read_deadlines_is_not_cut() -> None:
    faults = FaultPlan()
    faults.always(Fault(FaultKind.LATENCY, seconds=3 * TINY))
    sim = await SimServer.start(openai_app("k-oai", faults=faults))
    try:
        async with sidecar_listening(ConnectionLimits(head_s=TINY, body_s=TINY),
                                     url=sim.url + "/v1") as (port, _):
            body = orjson.dumps({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
            reader, writer = await connect(port)
            writer.write(HEAD.replace(b"Content-Length: 60", b"Content-Length: %d" % len(body)).replace(
                b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nConnection: close\r\n") + body)
            await writer.drain()
            answer = await until_closed(reader)
            writer.close()
    finally:
        await sim.close()
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]


def test_the_limits_come_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert listen(parser().parse_args(["serve"])).limits == ConnectionLimits(1024, 10.0, 30.0, 75.0)
    args = parser().parse_args(["serve", "--max-connections", "8", "--header-read-seconds", "2.5",
                                "--body-read-seconds", "4", "--keepalive-seconds", "9"])
    assert listen(args).limits == ConnectionLimits(8, 2.5, 4.0, 9.0)
    for name, value in (("MAX_CONNECTIONS", "9"), ("HEADER_READ_SECONDS", "1"), ("BODY_READ_SECONDS", "2"),
                        ("KEEPALIVE_SECONDS", "3")):
        monkeypatch.setenv(f"LLMROUTE_{name}", value)
    assert listen(parser().parse_args(["serve"])).limits == ConnectionLimits(9, 1.0, 2.0, 3.0)


@pytest.mark.parametrize("flag", ["--max-connections=0", "--header-read-seconds=0", "--body-read-seconds=-1",
                                  "--keepalive-seconds=nan", "--max-connections=x"])
def test_a_limit_that_is_not_positive_is_refused_at_start_up(flag: str) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", flag])
