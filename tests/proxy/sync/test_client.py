"""The sidecar's side of cluster mode without an operator: settings, backoff, persistence, usage deltas."""

from __future__ import annotations

import asyncio
import logging
import random
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from llmroute_operator.certs import write_self_signed
from llmroute_operator.hub import hub_ssl_context
from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.scrubbing import MARKER
from llmroute_proxy.server.runner import build_sidecar
from llmroute_proxy.sync.client import (
    Backoff,
    ClusterConfigError,
    ClusterSettings,
    ConnectFailed,
    OperatorClient,
    restore_persisted,
)
from llmroute_proxy.sync.persist import TableStore
from llmroute_proxy.sync.protocol import Lease, encode, payload_version, table_payload
from llmroute_proxy.sync.usage import UsageMark
from llmroute_proxy.table import Limits, TargetId
from tests.syncfakes import KEY, documents


def test_settings_come_from_the_environment_with_the_documented_defaults() -> None:
    settings = ClusterSettings.from_env({"LLMROUTE_OPERATOR_URL": "wss://op.llmroute:15443/v1/sync"})
    assert settings.token_file == Path("/var/run/secrets/llmroute.dev/token")
    assert settings.state_dir == Path("/var/run/llmroute") and settings.ca_file is None
    assert settings.report_interval_s == 10.0


@pytest.mark.parametrize("env, message", [
    ({"LLMROUTE_OPERATOR_URL": "http://op:15443/v1/sync"}, "must be a wss:// URL"),
    ({"LLMROUTE_OPERATOR_URL": "wss://u:p@op/v1/sync"}, "must not carry credentials"),
    ({"LLMROUTE_OPERATOR_URL": "wss://op/v1/sync", "LLMROUTE_USAGE_REPORT_SECONDS": "x"}, "must be a number"),
    ({"LLMROUTE_OPERATOR_URL": "wss://op/v1/sync", "LLMROUTE_USAGE_REPORT_SECONDS": "0"}, "must be positive"),
])
def test_bad_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        ClusterSettings.from_env(env)


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [min(8.0, 0.5 * 2 ** n) for n in range(10)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[5:]) > 2.0  # the ceiling did grow
    assert len(set(delays)) == 10  # jittered, not fixed
    backoff.reset()
    assert backoff.next_delay() <= 0.5


async def test_the_client_reconnects_with_backoff_while_the_operator_is_unreachable(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    settings = ClusterSettings(url="wss://127.0.0.1:9/v1/sync", ca_file=None, token_file=token,
                               state_dir=tmp_path / "state", backoff_base_s=1.0, backoff_cap_s=4.0)
    slept: list[float] = []
    done = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if seconds == settings.report_interval_s:  # the lease watch: no lease, nothing to do
            await asyncio.Event().wait()
        slept.append(seconds)
        if len(slept) >= 6:
            done.set()
            await asyncio.Event().wait()

    sidecar = build_sidecar()
    client = OperatorClient(settings, sidecar, TableStore(settings.state_dir), rng=random.Random(1), sleep=sleep)
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    await sidecar.upstream.close()
    assert all(0 <= d <= min(4.0, 2 ** n) for n, d in enumerate(slept))
    assert client.state == "disconnected" and client.backoff.attempts == 6
    assert client.last_error is not None and "Connect" in client.last_error


async def test_an_unreadable_token_file_is_a_failed_connect_that_names_the_file(tmp_path: Path) -> None:
    settings = ClusterSettings(url="wss://127.0.0.1:9/v1/sync", ca_file=None, token_file=tmp_path / "absent",
                               state_dir=tmp_path)
    sidecar = build_sidecar()
    client = OperatorClient(settings, sidecar, TableStore(tmp_path))
    with pytest.raises(Exception, match=f"cannot read the service-account token {tmp_path / 'absent'}"):
        await client.connect_once()
    await sidecar.upstream.close()


async def test_an_operator_that_takes_the_connection_but_never_answers_is_given_up_on_in_time(
        tmp_path: Path) -> None:
    """A hub behind a black hole, or hung: the TCP connection opens but no TLS or upgrade answer comes.
    Each attempt must end within its connect timeout, or the sidecar would wait out aiohttp's 5-minute
    default before its next attempt, however soon the operator is back."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # never answers

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    (tmp_path / "token").write_text("t\n")
    settings = ClusterSettings(url=f"wss://127.0.0.1:{port}/v1/sync", ca_file=None, token_file=tmp_path / "token",
                               state_dir=tmp_path, connect_timeout_s=0.2)
    sidecar = build_sidecar()
    client = OperatorClient(settings, sidecar, TableStore(tmp_path))
    try:
        with pytest.raises(ConnectFailed, match=r"did not answer within 0\.2s"):
            await asyncio.wait_for(client.connect_once(), 5)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await sidecar.upstream.close()


async def test_the_operator_token_is_scrubbed_like_the_table_keys(tmp_path: Path) -> None:
    token = "eyJhbGciOiJSUzI1NiIsImtpZCI6InNpZGVjYXIifQ.eyJhdWQiOlsibGxtcm91dGUuZGV2Il19.c2lnbmF0dXJl"
    (tmp_path / "token").write_text(token + "\n")
    settings = ClusterSettings(url="wss://127.0.0.1:9/v1/sync", ca_file=None, token_file=tmp_path / "token",
                               state_dir=tmp_path)
    sidecar = build_sidecar()
    client = OperatorClient(settings, sidecar, TableStore(tmp_path))
    with pytest.raises(OSError):
        await client.connect_once()  # nothing listens: the token was read all the same
    await sidecar.upstream.close()
    assert sidecar.scrubber.scrub(f"refused {token}") == f"refused {MARKER}"


async def test_the_persisted_table_is_0600_and_restored_and_a_corrupt_one_is_ignored(tmp_path: Path) -> None:
    store = TableStore(tmp_path / "state")
    payload = table_payload("us", documents(), {"openai-main": KEY})
    store.save(payload_version(payload), payload)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.save(payload_version(payload), payload)  # replaced atomically, still 0600
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in store.directory.iterdir()] == ["last-table.json"]
    sidecar = build_sidecar()
    assert restore_persisted(sidecar, store) and sidecar.table_source == "persisted"
    store.path.write_text("{not json")
    fresh = build_sidecar()
    assert not restore_persisted(fresh, store) and fresh.table is None
    await sidecar.upstream.close()
    await fresh.upstream.close()


def test_usage_reports_are_deltas_and_only_a_commit_moves_the_mark() -> None:
    mark = UsageMark()
    first = {"routes": {"chat": {"requests": 2, "cost_usd": 0.5}},
             "targets": {"t": {"requests": 2, "failures": 1, "errors.timeout": 1}}}
    report = mark.report(first, 10)
    assert report.routes == {"chat": {"requests": 2, "cost_usd": 0.5}}
    assert report.targets == {"t": {"requests": 2, "failures": 1, "errors": {"timeout": 1}}}
    assert mark.report(first, 10) == report  # not sent: the same deltas again
    assert mark.unsent(first, "routes", "cost_usd") == {"chat": 0.5}  # what the hello leaves to the report
    mark.commit(first)
    assert mark.report(first, 10).is_empty() and mark.unsent(first, "routes", "cost_usd") == {}
    later = {"routes": {"chat": {"requests": 5, "cost_usd": 0.75}}, "targets": first["targets"]}
    assert mark.report(later, 10).routes == {"chat": {"requests": 3, "cost_usd": 0.25}}


class HeldStream:
    """The operator stream as the client sees it, whose sends wait until the test lets them through."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.open = asyncio.Event()

    async def send_str(self, text: str) -> None:
        await self.open.wait()
        self.sent.append(orjson.loads(text))


async def test_the_final_report_made_while_a_periodic_one_is_going_out_does_not_send_the_same_usage_again(
        tmp_path: Path) -> None:
    """The drain's final report and the timer's report each made their deltas from the same mark when
    one came while the other waited on the socket: the operator summed the same spend twice."""
    settings = ClusterSettings(url="wss://op/v1/sync", ca_file=None, token_file=tmp_path / "token",
                               state_dir=tmp_path / "state")
    sidecar = build_sidecar()
    client = OperatorClient(settings, sidecar, TableStore(settings.state_dir))
    target = TargetId("openai-main/gpt-4o-mini@us")
    sidecar.record_spend(Usage(100, 20), 0.5, "chat", "fast", target, None)
    sidecar.counters_for(target).requests += 1
    stream = HeldStream()
    client._ws = stream  # type: ignore[assignment]
    try:
        periodic = asyncio.create_task(client._report())
        await asyncio.sleep(0)
        final = asyncio.create_task(client.send_final_report())
        await asyncio.sleep(0)
        stream.open.set()
        await periodic
        assert await final is True
    finally:
        await sidecar.upstream.close()
    assert [r["final"] for r in stream.sent] == [False, True]
    assert sum(r["routes"].get("chat", {}).get("cost_usd", 0) for r in stream.sent) == 0.5  # type: ignore[union-attr,attr-defined]
    assert sum(r["providers"].get("openai-main", {}).get("requests", 0) for r in stream.sent) == 1  # type: ignore[union-attr,attr-defined]


def test_the_tls_server_name_comes_from_the_environment_and_must_be_a_host_name() -> None:
    base = {"LLMROUTE_OPERATOR_URL": "wss://10.96.0.12:15443/v1/sync"}
    assert ClusterSettings.from_env(base).server_name is None
    named = ClusterSettings.from_env({**base, "LLMROUTE_OPERATOR_SERVER_NAME": "llmroute.llmroute.svc"})
    assert named.server_name == "llmroute.llmroute.svc"
    with pytest.raises(ClusterConfigError, match="LLMROUTE_OPERATOR_SERVER_NAME must be a host name"):
        ClusterSettings.from_env({**base, "LLMROUTE_OPERATOR_SERVER_NAME": "https://x/"})


def test_the_ca_may_come_as_pem_text_but_not_together_with_a_ca_file() -> None:
    base = {"LLMROUTE_OPERATOR_URL": "wss://10.96.0.12:15443/v1/sync"}
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    settings = ClusterSettings.from_env({**base, "LLMROUTE_OPERATOR_CA_DATA": pem})
    assert settings.ca_data == pem.strip() and settings.ca_file is None
    with pytest.raises(ClusterConfigError, match="exclude each other"):
        ClusterSettings.from_env({**base, "LLMROUTE_OPERATOR_CA_DATA": pem, "LLMROUTE_OPERATOR_CA": "/ca.pem"})
    with pytest.raises(ClusterConfigError, match="must hold PEM certificates"):
        ClusterSettings.from_env({**base, "LLMROUTE_OPERATOR_CA_DATA": "not a cert"})


async def fake_operator(tmp_path: Path, operator: Callable[[web.Request], Awaitable[web.WebSocketResponse]]
                        ) -> tuple[web.AppRunner, ClusterSettings]:
    """An operator's hub played by `operator` over TLS, and the settings of a sidecar that dials it."""
    certs = write_self_signed(tmp_path / "certs")
    app = web.Application()
    app.router.add_get("/v1/sync", operator)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=hub_ssl_context(str(certs.cert), str(certs.key)))
    await site.start()
    token = tmp_path / "token"
    token.write_text("t")
    settings = ClusterSettings(url=f"wss://localhost:{runner.addresses[0][1]}/v1/sync", ca_file=certs.ca,
                               token_file=token, state_dir=tmp_path / "state", backoff_base_s=1.0, backoff_cap_s=4.0)
    return runner, settings


async def test_an_operator_that_accepts_and_drops_every_stream_is_backed_off_from_until_it_works(
        tmp_path: Path) -> None:
    """A crash-looping operator accepts the WebSocket, then closes it: that is no reason to forget the
    backoff (every pod would reconnect at once, again and again); the first lease it sends is."""
    works = asyncio.Event()

    async def operator(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if works.is_set():
            await ws.send_str(encode(Lease(ttl=60.0)))
            await ws.receive()  # until the client goes
        await ws.close()
        return ws

    runner, settings = await fake_operator(tmp_path, operator)
    slept: list[float] = []
    dropped_four_times = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if seconds == settings.report_interval_s:  # the lease watch and the reporter: not what is looked at
            await asyncio.Event().wait()
        slept.append(seconds)
        if len(slept) == 4:
            dropped_four_times.set()
            await works.wait()

    sidecar = build_sidecar()
    client = OperatorClient(settings, sidecar, TableStore(settings.state_dir), rng=random.Random(1), sleep=sleep)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(dropped_four_times.wait(), 10)
        assert client.connects == 4 and client.backoff.attempts == 4  # accepted four times, backed off four times
        works.set()
        for _ in range(200):
            if client.state == "connected" and client.backoff.attempts == 0:
                break
            await asyncio.sleep(0.02)
        assert client.backoff.attempts == 0 and sidecar.leases.state(sidecar.clock()) == "held"
    finally:
        task.cancel()
        await sidecar.upstream.close()
        await runner.cleanup()


async def test_a_newer_operator_is_followed_though_it_says_what_this_sidecar_does_not_know(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An upgraded operator talks to sidecars still running the older image: its new message types and
    fields are skipped, its tables and leases taken as before."""
    caplog.set_level(logging.INFO, "llmroute.sync")
    payload = table_payload("us", documents(), {"openai-main": KEY})
    version = payload_version(payload)
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def operator(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # the hello
        for _ in range(3):
            await ws.send_str('{"type": "drain", "within_s": 30}')
        await ws.send_str(orjson.dumps({"type": "lease", "ttl": 60, "epoch": 3,
                                        "limits": {"openai-main": {"requestsPerMinute": 12, "imagesPerMinute": 1}},
                                        "budgets": {}}).decode())
        await ws.send_str(orjson.dumps({"type": "table", "version": version, "table": payload,
                                        "compression": "none"}).decode())
        async for message in ws:
            await answers.put(orjson.loads(message.data))
        return ws

    runner, settings = await fake_operator(tmp_path, operator)
    sidecar = build_sidecar()
    client = OperatorClient(settings, sidecar, TableStore(settings.state_dir), sleep=lambda _: asyncio.Event().wait())
    task = asyncio.create_task(client.connect_once())
    try:
        answer = await asyncio.wait_for(answers.get(), 10)
        assert answer == {"type": "ack", "version": version}
        assert sidecar.leases.state(sidecar.clock()) == "held"
        assert sidecar.leases.limits({"openai-main": Limits(600.0)}, sidecar.clock())["openai-main"] == Limits(12.0)
        told = [r.getMessage() for r in caplog.records if "'drain'" in r.getMessage()]
        assert len(told) == 1 and "a newer operator" in told[0], told
    finally:
        task.cancel()
        await sidecar.upstream.close()
        await runner.cleanup()
