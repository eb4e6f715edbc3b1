"""The hub and real sidecar clients over TLS: push, ACK/NACK, refusals, persistence, usage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from llmroute_operator.certs import CertFiles, write_self_signed
from llmroute_operator.contracts import DesiredTable, PodRef
from llmroute_operator.hub import ENCODED_TABLES_KEPT, Hub
from llmroute_operator.leases import LeaseBook
from llmroute_operator.tokenreview import Refused
from llmroute_proxy.server.runner import build_sidecar
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.server.status import status_document
from llmroute_proxy.sync.client import ClusterSettings, OperatorClient, restore_persisted
from llmroute_proxy.sync.persist import TableStore
from llmroute_proxy.sync.protocol import payload_version, table_payload
from llmroute_proxy.table import BudgetPeriod
from tests.syncfakes import (
    KEY,
    FakeReviewer,
    FakeSink,
    FakeSource,
    desired,
    documents,
    running_hub,
    write_token,
)

POD = PodRef("team-a", "chat-0")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return write_self_signed(tmp_path_factory.mktemp("certs"))


class Parts:
    def __init__(self) -> None:
        self.source = FakeSource()
        self.sink = FakeSink()
        self.reviewer = FakeReviewer()
        self.hub = Hub(self.source, self.sink, self.reviewer)
        self.url = ""


@pytest.fixture
async def parts(certs: CertFiles) -> AsyncIterator[Parts]:
    p = Parts()
    async with running_hub(p.hub, certs) as url:
        p.url = url
        yield p


@pytest.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    car = build_sidecar()
    yield car
    await car.upstream.close()


class NeverSleep:
    """The injected sleep: whoever sleeps waits until the test is over (the reporter, the lease watch)."""

    def __init__(self) -> None:
        self.requested: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def raw_stream(parts: Parts, certs: CertFiles,
                     hello: dict[str, object] | None = None) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """POD's stream to the hub, message by message, its hello sent: a sidecar the test speaks for."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    headers = {"Authorization": f"Bearer pod:{POD.namespace}:{POD.name}"}
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(parts.url, headers=headers, ssl=context) as ws:
        await ws.send_json(hello or {"type": "hello", "version": None, "sidecar": "9.9.9"})
        yield ws


def client_for(parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles, pod: PodRef = POD,
               sleep: NeverSleep | None = None) -> OperatorClient:
    settings = ClusterSettings(url=parts.url, ca_file=certs.ca, token_file=write_token(tmp_path / "token", pod),
                               state_dir=tmp_path / "state")
    return OperatorClient(settings, sidecar, TableStore(settings.state_dir), sleep=sleep or NeverSleep())


async def test_a_table_is_pushed_at_once_applied_acked_and_persisted_0600(
        parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles) -> None:
    table = desired()
    await parts.source.set(POD, table)
    client = client_for(parts, sidecar, tmp_path, certs)
    assert sidecar.table is None  # /readyz says 503 until now
    task = asyncio.create_task(client.connect_once())
    acked = await parts.sink.wait_for("acked")
    assert acked == [("acked", POD, table.version)]
    assert sidecar.table is not None and sidecar.table_source == "operator"
    assert sidecar.pushed_version == table.version
    route = sidecar.table.route("chat")
    assert route is not None and route.tiers["fast"].targets[0].credential.reveal() == KEY
    saved = tmp_path / "state" / "last-table.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    status = status_document(sidecar)
    assert status["table"]["source"] == "operator" and status["table"]["pushed_version"] == table.version
    assert status["operator"]["state"] == "connected" and status["operator"]["url"] == parts.url
    task.cancel()


async def test_every_change_is_pushed_and_an_unchanged_version_is_not_sent_again(
        parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles) -> None:
    await parts.source.set(POD, desired())
    client = client_for(parts, sidecar, tmp_path, certs)
    task = asyncio.create_task(client.connect_once())
    await parts.sink.wait_for("acked")
    await parts.source.set(POD, desired())  # a change elsewhere: same version for this pod
    await parts.source.set(PodRef("team-a", "other"), desired(documents(model="gpt-4o")))
    changed = desired(documents(model="gpt-4o"))
    await parts.source.set(POD, changed)
    acked = await parts.sink.wait_for("acked", 2)
    assert acked[-1] == ("acked", POD, changed.version)
    assert client.tables_received == 2
    assert sidecar.table is not None and sidecar.table.route("chat").tiers["fast"].targets[0].model == "gpt-4o"  # type: ignore[union-attr]
    task.cancel()


async def test_a_table_without_routes_is_taken_and_kept_so_no_key_outlives_the_routes_that_used_it(
        parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles) -> None:
    """What the operator pushes when no LLMRoute selects the pod any more (index.py): no documents at all."""
    await parts.source.set(POD, desired())
    task = asyncio.create_task(client_for(parts, sidecar, tmp_path, certs).connect_once())
    await parts.sink.wait_for("acked")
    payload = table_payload("us", [], {})
    unselected = DesiredTable(payload_version(payload), payload)
    await parts.source.set(POD, unselected)
    acked = await parts.sink.wait_for("acked", 2)
    assert acked[-1] == ("acked", POD, unselected.version)
    assert sidecar.table is not None and sidecar.table.routes == () and sidecar.table.targets() == {}
    task.cancel()
    restarted = build_sidecar()
    try:
        assert restore_persisted(restarted, TableStore(tmp_path / "state"))  # not the old routes after a restart
        assert restarted.table is not None and restarted.table.routes == ()
        assert KEY not in (tmp_path / "state" / "last-table.json").read_text()
    finally:
        await restarted.upstream.close()


async def test_a_broken_table_is_nacked_with_its_field_path_and_the_old_one_kept(
        parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = desired()
    await parts.source.set(POD, good)
    client = client_for(parts, sidecar, tmp_path, certs)
    task = asyncio.create_task(client.connect_once())
    await parts.sink.wait_for("acked")
    running = sidecar.table
    broken_docs = documents()
    broken_docs[1]["spec"]["tiers"]["fast"]["targets"][0]["provider"] = "nope"
    broken = desired(broken_docs)
    await parts.source.set(POD, broken)
    [(_, pod, version, error)] = await parts.sink.wait_for("nacked")
    assert (pod, version) == (POD, broken.version)
    assert "spec.tiers.fast.targets[0].provider" in error
    assert sidecar.table is running and sidecar.pushed_version == good.version
    assert (tmp_path / "state" / "last-table.json").read_bytes().count(good.version.encode()) == 1
    assert KEY not in caplog.text and KEY not in error
    task.cancel()


async def test_a_missing_credential_is_nacked_without_any_key_in_the_reason(
        parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles) -> None:
    table = desired(key="")
    await parts.source.set(POD, table)
    task = asyncio.create_task(client_for(parts, sidecar, tmp_path, certs).connect_once())
    [(_, _, _, error)] = await parts.sink.wait_for("nacked")
    assert error == "table.credentials.openai-main: missing for provider openai-main"
    assert sidecar.table is None
    task.cancel()


async def test_a_nack_reason_that_quotes_a_key_is_scrubbed_before_the_hub_logs_or_reports_it(
        parts: Parts, certs: CertFiles, caplog: pytest.LogCaptureFixture) -> None:
    """NACK reasons come from the sidecar, which is not the operator's code to trust (another version,
    a bug): the hub logs them, so they pass the scrubber first, with the pod's keys and key shapes."""
    caplog.set_level(logging.DEBUG)
    table = desired()
    await parts.source.set(POD, table)
    async with raw_stream(parts, certs) as ws:
        assert (await ws.receive_json())["type"] == "table"
        shaped = "sk-ant-api03-Zyxwvu9876543210abcdefGHIJ"
        await ws.send_json({"type": "nack", "version": table.version, "error": f"bad key {KEY}, also {shaped}"})
        [(_, _, _, error)] = await parts.sink.wait_for("nacked")
    assert error.startswith("bad key [redacted]") and KEY not in error and "Zyxwvu9876543210" not in error
    assert "refused table" in caplog.text
    assert KEY not in caplog.text and "Zyxwvu9876543210" not in caplog.text


async def test_a_newer_sidecar_is_served_though_it_says_what_this_hub_does_not_know(
        parts: Parts, certs: CertFiles, caplog: pytest.LogCaptureFixture) -> None:
    """Pods keep their sidecar's image until they are replaced, so an upgraded sidecar may talk to an older
    operator: its new fields and message types are skipped, and everything else works as before."""
    caplog.set_level(logging.INFO, "llmroute.hub")
    table = desired()
    await parts.source.set(POD, table)
    newer_hello = {"type": "hello", "version": None, "sidecar": "9.9.9", "features": ["drain"],
                   "budgets": {"chat": {"periodStart": 0, "spentUSD": 0.5, "byModel": {"m": 0.5}}}}
    async with raw_stream(parts, certs, newer_hello) as ws:
        assert (await ws.receive_json())["type"] == "table"
        for _ in range(3):
            await ws.send_json({"type": "progress", "pending": 1})
        await ws.send_json({"type": "ack", "version": table.version, "installedIn_ms": 4})
        await ws.send_json({"type": "usage", "interval": 1, "routes": {"chat": {"requests": 2, "cached_tokens": 7}},
                            "rate_limits": {"openai-main": {"age_s": 0, "images": {"limit": 1}}}})
        [(_, pod, report)] = await parts.sink.wait_for("usage")
        assert not ws.closed
    assert parts.sink.of("acked") == [("acked", POD, table.version)]
    assert pod == POD and report["routes"]["chat"]["requests"] == 2
    told = [r.getMessage() for r in caplog.records if "'progress'" in r.getMessage()]
    assert len(told) == 1 and "a newer sidecar" in told[0], told


async def test_a_hub_whose_source_is_not_synced_yet_serves_no_table_and_no_lease_until_it_is(
        parts: Parts, certs: CertFiles) -> None:
    synced = asyncio.Event()
    parts.hub.synced, parts.hub.leases = synced, LeaseBook(ttl_s=30)
    await parts.source.set(POD, desired(documents(model="gpt-4o")))  # what a half-filled index makes
    async with raw_stream(parts, certs) as ws:
        await parts.sink.wait_for("connected")
        await parts.hub.renew_leases()
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.3)
        whole = desired()
        await parts.source.set(POD, whole)
        synced.set()
        first = await ws.receive_json(timeout=5)
        assert (first["type"], first["version"]) == ("table", whole.version)


async def test_a_push_that_fails_on_a_dying_stream_still_lets_the_hub_see_the_pod_leave(
        parts: Parts, certs: CertFiles) -> None:
    """A table change pushed while the sidecar's socket is dying fails in the pusher; the stream's end
    must still be seen (the pod disconnected, its connection and lease let go), not stop at that error."""
    await parts.source.set(POD, desired())
    async with raw_stream(parts, certs) as ws:
        assert (await ws.receive_json())["type"] == "table"
        served = parts.hub.connections[POD]

        async def dying(_: str) -> None:
            raise ConnectionResetError("Cannot write to closing transport")

        served.ws.send_str = dying  # type: ignore[method-assign]
        await parts.source.set(POD, desired(documents(model="gpt-4o")))
        await asyncio.sleep(0.1)
    await parts.sink.wait_for("disconnected", timeout=5)
    assert POD not in parts.hub.connections


def test_what_the_hub_keeps_per_table_version_is_bounded(parts: Parts) -> None:
    """Every edit of a route or provider makes new table versions for as long as the operator runs."""
    for n in range(ENCODED_TABLES_KEPT + 50):
        table = desired(documents(budget_usd=float(n + 1)))
        assert parts.hub._budget_periods(table) == {"chat": BudgetPeriod.DAY}
        parts.hub._encode(table)
    assert len(parts.hub._periods) == len(parts.hub._encoded) == ENCODED_TABLES_KEPT


@pytest.mark.parametrize("header, reason", [
    ({}, "no bearer token"),
    ({"Authorization": "Basic abc"}, "no bearer token"),
    ({"Authorization": "Bearer forged-token-1234"}, "token not authenticated: invalid bearer token"),
])
async def test_a_bad_or_missing_token_is_refused_before_the_upgrade_and_never_logged(
        parts: Parts, header: dict[str, str], reason: str, caplog: pytest.LogCaptureFixture,
        certs: CertFiles) -> None:
    caplog.set_level(logging.DEBUG)
    context = ssl.create_default_context(cafile=str(certs.ca))
    async with aiohttp.ClientSession() as session, \
            session.get(parts.url, headers=header, ssl=context) as response:
        assert response.status == 401
        assert await response.json() == {"error": reason}
    [(_, logged, named)] = parts.sink.of("refused")
    assert logged.endswith(reason) and "forged-token-1234" not in logged and named is None
    assert "forged-token-1234" not in caplog.text
    assert parts.sink.of("connected") == []


@pytest.mark.parametrize("refusal", [
    Refused(401, "token not authenticated: token has expired", POD),
    Refused(401, "token is not for audience llmroute.dev"),
    Refused(403, "token was issued for an earlier pod named team-a/chat-0", POD),
])
async def test_refusals_of_the_reviewer_reach_the_sidecar_as_http_status(
        parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles, refusal: Refused) -> None:
    client = client_for(parts, sidecar, tmp_path, certs)
    parts.reviewer.refusals[f"pod:{POD.namespace}:{POD.name}"] = refusal
    with pytest.raises(Exception, match=f"HTTP {refusal.status}"):
        await client.connect_once()
    assert parts.sink.of("refused") == [("refused", f"127.0.0.1: {refusal.reason}", refusal.pod)]
    assert sidecar.table is None


async def test_each_pod_gets_only_its_own_table(parts: Parts, tmp_path: Path, certs: CertFiles) -> None:
    other = PodRef("team-b", "batch-0")
    mine, theirs = desired(), desired(documents(model="gpt-4o"))
    await parts.source.set(POD, mine)
    await parts.source.set(other, theirs)
    cars = [build_sidecar(), build_sidecar()]
    tasks = []
    for i, (pod, car) in enumerate(zip((POD, other), cars, strict=True)):
        (tmp_path / str(i)).mkdir()
        tasks.append(asyncio.create_task(client_for(parts, car, tmp_path / str(i), certs, pod).connect_once()))
    acked = await parts.sink.wait_for("acked", 2)
    assert sorted(acked) == sorted([("acked", POD, mine.version), ("acked", other, theirs.version)])
    assert [c.pushed_version for c in cars] == [mine.version, theirs.version]
    for task in tasks:
        task.cancel()
    for car in cars:
        await car.upstream.close()


async def test_a_restarted_sidecar_serves_its_persisted_table_and_the_hub_does_not_resend_it(
        parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles) -> None:
    table = desired()
    await parts.source.set(POD, table)
    first = asyncio.create_task(client_for(parts, sidecar, tmp_path, certs).connect_once())
    await parts.sink.wait_for("acked")
    first.cancel()
    await parts.sink.wait_for("disconnected")

    restarted = build_sidecar()
    try:
        assert restore_persisted(restarted, TableStore(tmp_path / "state"))
        assert restarted.table_source == "persisted" and restarted.pushed_version == table.version
        client = client_for(parts, restarted, tmp_path, certs)
        task = asyncio.create_task(client.connect_once())
        await parts.sink.wait_for("acked", 2)
        assert parts.sink.of("acked")[-1] == ("acked", POD, table.version)
        assert client.tables_received == 0
        task.cancel()
    finally:
        await restarted.upstream.close()


async def test_a_persisted_table_counts_as_acked_when_the_pods_table_is_known_only_after_the_hello(
        parts: Parts, tmp_path: Path, certs: CertFiles) -> None:
    """An operator restart: the hub takes streams before kopf has listed the pods and resources, so the
    sidecar's hello comes while the hub knows no table for its pod. When the index has it and it is the
    version the sidecar runs, the sidecar is synced; nothing is sent."""
    table = desired()
    TableStore(tmp_path / "state").save(table.version, table.payload)
    restarted = build_sidecar()
    try:
        assert restore_persisted(restarted, TableStore(tmp_path / "state"))
        client = client_for(parts, restarted, tmp_path, certs)
        task = asyncio.create_task(client.connect_once())
        async with asyncio.timeout(10):
            while parts.source.lookups == 0:  # the hello was read and the pod's table looked up: none yet
                await asyncio.sleep(0.01)
        await parts.source.set(POD, table)
        assert await parts.sink.wait_for("acked", timeout=5) == [("acked", POD, table.version)]
        assert client.tables_received == 0 and not parts.sink.of("pushed")
        task.cancel()
    finally:
        await restarted.upstream.close()


async def test_a_stream_replaced_by_a_newer_one_from_the_same_pod_leaves_the_pod_connected(
        parts: Parts, tmp_path: Path, certs: CertFiles) -> None:
    """A sidecar that reconnects before the hub saw its old stream die: the old stream's end must not
    mark the pod as gone (status would count it out of Synced until its next reconnect)."""
    await parts.source.set(POD, desired())
    cars = [build_sidecar(), build_sidecar()]
    try:
        old = asyncio.create_task(client_for(parts, cars[0], tmp_path, certs).connect_once())
        await parts.sink.wait_for("acked")
        new = asyncio.create_task(client_for(parts, cars[1], tmp_path, certs).connect_once())
        await parts.sink.wait_for("acked", 2)
        await old  # the hub closed it: its connection ended
        await asyncio.sleep(0.1)
        states = [e[0] for e in parts.sink.events if e[0] in ("connected", "disconnected")]
        assert states[-1] == "connected", states
        assert parts.hub.connections[POD].ws is not None and not parts.hub.connections[POD].ws.closed
        new.cancel()
    finally:
        for car in cars:
            await car.upstream.close()


async def test_the_token_file_is_read_again_on_every_connect(
        parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles) -> None:
    client = client_for(parts, sidecar, tmp_path, certs)
    (tmp_path / "token").write_text("rotated-but-bad\n")
    with pytest.raises(Exception, match="HTTP 401"):
        await client.connect_once()
    write_token(tmp_path / "token", POD)
    await parts.source.set(POD, desired())
    task = asyncio.create_task(client.connect_once())
    await parts.sink.wait_for("acked")
    assert parts.reviewer.calls == 2
    task.cancel()


async def test_usage_deltas_are_reported_and_what_was_not_sent_is_carried_over(
        parts: Parts, sidecar: Sidecar, tmp_path: Path, certs: CertFiles) -> None:
    from llmroute_proxy.dialects.base import Usage
    from llmroute_proxy.table import TargetId

    await parts.source.set(POD, desired())
    client = client_for(parts, sidecar, tmp_path, certs)
    target = TargetId("openai-main/gpt-4o-mini@us")
    sidecar.record_spend(Usage(100, 20), 0.5, "chat", "fast", target, None)
    sidecar.counters_for(target).requests += 1
    assert await client.send_final_report() is False  # not connected: nothing sent, nothing lost
    task = asyncio.create_task(client.connect_once())
    await parts.sink.wait_for("acked")
    assert await client.send_final_report() is True
    [(_, pod, report)] = await parts.sink.wait_for("usage")
    assert pod == POD and report["final"] is True
    assert report["routes"] == {"chat": {"requests": 1, "input_tokens": 100, "output_tokens": 20,
                                         "cost_usd": 0.5}}
    assert report["providers"] == {"openai-main": {"requests": 1, "tokens": 120}}
    sidecar.record_spend(Usage(10, 5), 0.25, "chat", "fast", target, None)
    sidecar.counters_for(target).requests += 1
    sidecar.counters_for(target).failures += 1
    sidecar.counters_for(target).errors["rate_limited"] = 1
    await client.send_final_report()
    [_, (_, _, second)] = await parts.sink.wait_for("usage", 2)
    assert second["routes"]["chat"] == {"requests": 1, "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.25}
    assert second["targets"][target]["errors"] == {"rate_limited": 1}
    assert second["targets"][target]["failures"] == 1
    task.cancel()


DAY = 1_779_926_400.0  # 2026-05-28T00:00:00Z
NOON = DAY + 43_200


def spend(car: Sidecar, usd: float) -> None:
    """A request on chat that cost `usd`: settled in the budget ledger and counted for the usage report."""
    from llmroute_proxy.dialects.base import Usage
    from llmroute_proxy.table import TargetId

    budget = car.table.route("chat").budget  # type: ignore[union-attr]
    assert budget is not None
    decision = car.ledger.reserve("chat", budget, usd, NOON)
    assert decision.reservation is not None
    car.ledger.settle(decision.reservation, usd, NOON)
    car.record_spend(Usage(100, 20), usd, "chat", "fast", TargetId("openai-main/gpt-4o-mini@us"), None)


async def test_after_an_operator_restart_the_hello_says_the_sidecars_spend_and_the_gone_stay_spent(
        sidecar: Sidecar, certs: CertFiles, tmp_path: Path) -> None:
    """The sidecar spent 25 and reported it; a sidecar gone in a rollout spent 35; the operator restarts (its
    route's status says 60) while the sidecar spends 5 more. Its hello says 25 (the 5 is its next report's):
    it is leased up to 100 − 35, from a floor of 25, then 30 once the 5 is reported; nothing counted twice."""
    from dataclasses import replace

    from llmroute_operator.contracts import DesiredTable

    base = desired(documents(budget_usd=100))
    table = DesiredTable(base.version, base.payload, {}, {"team-a/chat": 100.0})
    sidecar.wallclock = lambda: NOON
    before = Parts()
    before.hub = Hub(before.source, before.sink, before.reviewer, leases=LeaseBook(ttl_s=30), wallclock=lambda: NOON)
    async with running_hub(before.hub, certs) as url:
        before.url = url
        await before.source.set(POD, table)
        client = client_for(before, sidecar, tmp_path, certs)
        task = asyncio.create_task(client.connect_once())
        await before.sink.wait_for("acked")
        spend(sidecar, 25.0)
        assert await client.send_final_report()
        await before.sink.wait_for("usage")
        task.cancel()
    spend(sidecar, 5.0)

    book = LeaseBook(ttl_s=30)
    book.seed_spend("team-a", "chat", DAY, 60.0)  # what the status writer reads back at the restart
    after = Parts()
    after.hub = Hub(after.source, after.sink, after.reviewer, leases=book, wallclock=lambda: NOON)
    async with running_hub(after.hub, certs) as url:
        client.settings = replace(client.settings, url=url)
        await after.source.set(POD, table)
        task = asyncio.create_task(client.connect_once())
        async with asyncio.timeout(10):
            while sidecar.leases.spent_floors() != {"chat": 25.0}:
                await asyncio.sleep(0.02)
        assert sidecar.ledger.snapshot("chat", NOON).limit_usd == 100 - 35
        assert await client.send_final_report()
        [(_, _, report)] = await after.sink.wait_for("usage")
        assert report["routes"]["chat"]["cost_usd"] == 5.0
        await after.hub.renew_leases()
        async with asyncio.timeout(10):
            while sidecar.leases.spent_floors() != {"chat": 30.0}:
                await asyncio.sleep(0.02)
        ledger = sidecar.ledger.snapshot("chat", NOON)
        assert (ledger.spent_usd, ledger.limit_usd) == (30.0, 100 - 35)  # 35 left: 100 − 35 gone − its 30
        task.cancel()


async def test_two_sidecars_get_leases_that_split_the_providers_global_limit(
        certs: CertFiles, tmp_path: Path) -> None:
    from llmroute_operator.contracts import DesiredTable, GlobalLimits
    from llmroute_operator.leases import LeaseBook

    parts = Parts()
    parts.hub = Hub(parts.source, parts.sink, parts.reviewer, leases=LeaseBook(ttl_s=30))
    base = desired()
    table = DesiredTable(base.version, base.payload, {"team-a/openai-main": GlobalLimits(600.0, None, 8)})
    pods = [POD, PodRef("team-a", "chat-1")]
    cars = [build_sidecar(), build_sidecar()]
    async with running_hub(parts.hub, certs) as url:
        parts.url = url
        tasks = []
        for i, (pod, car) in enumerate(zip(pods, cars, strict=True)):
            await parts.source.set(pod, table)
            (tmp_path / str(i)).mkdir()
            tasks.append(asyncio.create_task(client_for(parts, car, tmp_path / str(i), certs, pod).connect_once()))
        await parts.sink.wait_for("acked", 2)

        def shares() -> list[object]:
            return [car.leases.limits(car.table.provider_limits, car.clock())["openai-main"]  # type: ignore[union-attr]
                    for car in cars]

        async with asyncio.timeout(10):
            while shares() != [shares()[0]] * 2 or shares()[0].requests_per_minute != 300.0:  # type: ignore[attr-defined]
                await asyncio.sleep(0.02)
        assert [car.leases.state(car.clock()) for car in cars] == ["held", "held"]
        assert sum(s.max_concurrency for s in shares()) == 8  # type: ignore[attr-defined]
        for task in tasks:
            task.cancel()
    for car in cars:
        await car.upstream.close()


async def test_a_provider_failing_for_one_sidecar_leaves_its_share_to_the_other_through_the_hub(
        certs: CertFiles, tmp_path: Path) -> None:
    """The wiring of the degraded-provider split: real sidecars' reports → the hub's lease book → leases."""
    from llmroute_operator.contracts import DesiredTable, GlobalLimits
    from llmroute_operator.leases import LeaseBook
    from llmroute_proxy.table import TargetId

    parts = Parts()
    parts.hub = Hub(parts.source, parts.sink, parts.reviewer, leases=LeaseBook(ttl_s=30, half_life_s=1))
    base = desired()
    table = DesiredTable(base.version, base.payload, {"team-a/openai-main": GlobalLimits(600.0, None, None)})
    pods = [POD, PodRef("team-a", "chat-1")]
    cars = [build_sidecar(), build_sidecar()]
    async with running_hub(parts.hub, certs) as url:
        parts.url = url
        clients, tasks = [], []
        for i, (pod, car) in enumerate(zip(pods, cars, strict=True)):
            await parts.source.set(pod, table)
            (tmp_path / str(i)).mkdir()
            clients.append(client_for(parts, car, tmp_path / str(i), certs, pod))
            tasks.append(asyncio.create_task(clients[-1].connect_once()))
        await parts.sink.wait_for("acked", 2)
        target = TargetId("openai-main/gpt-4o-mini@us")
        for car in cars:  # the same demand; for the first sidecar nearly every attempt fails
            car.counters_for(target).requests = 100
        cars[0].counters_for(target).failures = 95
        cars[0].counters_for(target).errors["server_error"] = 95
        for client in clients:
            assert await client.send_final_report()
        await parts.sink.wait_for("usage", 2)
        await parts.hub.renew_leases()

        def rpm(car: Sidecar) -> float | None:
            return car.leases.limits(car.table.provider_limits, car.clock())["openai-main"].requests_per_minute  # type: ignore[union-attr]

        async with asyncio.timeout(10):
            while (rpm(cars[0]) or 0) >= 120 or (rpm(cars[1]) or 0) <= 480:
                await asyncio.sleep(0.02)
        assert (rpm(cars[0]) or 0) + (rpm(cars[1]) or 0) <= 600
        for task in tasks:
            task.cancel()
    for car in cars:
        await car.upstream.close()


async def test_a_providers_stated_limit_travels_in_the_usage_report_and_shrinks_the_leases(
        certs: CertFiles, tmp_path: Path) -> None:
    """The wiring of the rate-limit headers: an answer's headers → the sidecar's report → the lease book."""
    from multidict import CIMultiDict

    from llmroute_operator.contracts import DesiredTable, GlobalLimits
    from llmroute_operator.leases import LeaseBook
    from llmroute_proxy.providers.registry import provider_for
    from llmroute_proxy.table import ProviderType

    parts = Parts()
    parts.hub = Hub(parts.source, parts.sink, parts.reviewer, leases=LeaseBook(ttl_s=30))
    base = desired()
    await parts.source.set(POD, DesiredTable(base.version, base.payload,
                                             {"team-a/openai-main": GlobalLimits(600.0, None, None)}))
    car = build_sidecar()
    async with running_hub(parts.hub, certs) as url:
        parts.url = url
        client = client_for(parts, car, tmp_path, certs)
        task = asyncio.create_task(client.connect_once())
        await parts.sink.wait_for("acked")
        headers = CIMultiDict({"x-ratelimit-limit-requests": "200", "x-ratelimit-remaining-requests": "199",
                               "x-ratelimit-reset-requests": "300ms"})
        car.rate_limits_seen.seen("openai-main", provider_for(ProviderType.OPENAI).rate_limits, headers, car.clock())
        assert await client.send_final_report()
        [(_, _, report)] = await parts.sink.wait_for("usage")
        assert report["rate_limits"]["openai-main"]["requests"] == {"limit": 200, "remaining": 199, "reset_s": 0.3}
        await parts.hub.renew_leases()

        def rpm() -> float | None:
            return car.leases.limits(car.table.provider_limits, car.clock())["openai-main"].requests_per_minute  # type: ignore[union-attr]

        async with asyncio.timeout(10):
            while (rpm() or 600) > 200:  # 199 remained, and the rest refills by its reset
                await asyncio.sleep(0.02)
        assert (rpm() or 0) >= 199
        assert await client.send_final_report()  # nothing new was seen: nothing said again
        [_, (_, _, again)] = await parts.sink.wait_for("usage", 2)
        assert "rate_limits" not in again
        task.cancel()
    await car.upstream.close()


@pytest.mark.parametrize("server_name", [None, "llmroute.llmroute.svc"])
async def test_a_hub_reached_by_ip_is_verified_against_the_configured_server_name(
        sidecar: Sidecar, tmp_path: Path, server_name: str | None) -> None:
    """No cluster DNS: injection puts the Service's cluster IP in the URL, its DNS name and the CA in env."""
    named = write_self_signed(tmp_path / "named", hosts=("llmroute.llmroute.svc",))
    p = Parts()
    await p.source.set(POD, desired())
    async with running_hub(p.hub, named) as url:
        settings = ClusterSettings(url=url.replace("localhost", "127.0.0.1"), ca_file=None,
                                   ca_data=named.ca.read_text(), token_file=write_token(tmp_path / "token", POD),
                                   state_dir=tmp_path / "state", server_name=server_name)
        client = OperatorClient(settings, sidecar, TableStore(settings.state_dir), sleep=NeverSleep())
        if server_name is None:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await client.connect_once()
            return
        task = asyncio.create_task(client.connect_once())
        assert await p.sink.wait_for("acked") == [("acked", POD, desired().version)]
        task.cancel()
