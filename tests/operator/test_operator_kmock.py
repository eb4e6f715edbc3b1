"""Tier A: the whole operator (kopf, index, hub, status writer) against kmock, sidecars over TLS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import kopf
import pytest

from llmroute_operator.certs import CertFiles, write_self_signed
from llmroute_operator.contracts import PodRef
from llmroute_proxy.server.runner import build_sidecar
from llmroute_proxy.sync.client import ClusterSettings, OperatorClient
from llmroute_proxy.sync.persist import TableStore
from tests.operator.kopfcluster import (
    TIMEOUT,
    Cluster,
    Emulator,
    FakeSidecar,
    conditions,
    plural_path,
    prepare,
    running_operator,
)
from tests.operator.resources import KEY, node, pod, provider, route, secret
from tests.operator.test_hub import NeverSleep
from tests.syncfakes import write_token

pytestmark = pytest.mark.kmock(cls=Emulator)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return write_self_signed(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def cluster(kmock: Emulator, certs: CertFiles) -> AsyncIterator[Cluster]:
    prepare(kmock)
    async with running_operator(kmock, certs) as running:
        for body in (node(), provider(), secret(), route(budget_usd=10.0), pod("chat-0"), pod("chat-1")):
            await running.create(body)
        yield running


async def test_a_selected_pod_is_served_its_table_and_a_route_change_reaches_it(cluster: Cluster) -> None:
    async with FakeSidecar.connect(cluster, "team-a", "chat-0") as car:
        first = await car.table()
        assert first.table["region"] == "eu-west-1"
        assert [d["metadata"]["name"] for d in first.table["documents"]] == ["openai-main", "chat"]
        assert first.table["credentials"] == {"openai-main": KEY}  # read from the Secret, not watched
        await car.ack()
        await cluster.until(lambda: conditions(cluster.status("LLMRoute", "team-a", "chat")).get("Synced", ("",))[0] == "True")
        status = cluster.status("LLMRoute", "team-a", "chat")
        assert status["sidecars"]["summary"] == "1/1" and status["tableVersion"] == first.version[:16]

        await cluster.patch(route(model="gpt-4o", budget_usd=10.0))
        second = await car.table()
        assert second.table["documents"][1]["spec"]["tiers"]["fast"]["targets"][0]["model"] == "gpt-4o"
        await cluster.until(lambda: cluster.status("LLMRoute", "team-a", "chat").get("observedGeneration") == 2)
        assert conditions(cluster.status("LLMRoute", "team-a", "chat"))["Synced"][0] == "False"
        await car.ack()
        await cluster.until(lambda: conditions(cluster.status("LLMRoute", "team-a", "chat"))["Synced"][0] == "True")


async def test_a_bad_route_is_not_accepted_and_the_running_table_stays(cluster: Cluster) -> None:
    def accepted_reason() -> str:
        return conditions(cluster.status("LLMRoute", "team-a", "chat")).get("Accepted", ("", ""))[1]

    async with FakeSidecar.connect(cluster, "team-a", "chat-0") as car:
        good = await car.table()
        await car.ack()
        await cluster.until(lambda: accepted_reason() == "Accepted")
        await cluster.patch(route(budget_usd=10.0, defaultTier="slow"))

        def refused() -> bool:
            return accepted_reason() == "Invalid"

        await cluster.until(refused)
        accepted = conditions(cluster.status("LLMRoute", "team-a", "chat"))["Accepted"]
        assert accepted[1] == "Invalid" and "spec.defaultTier" in accepted[2], accepted
        assert "keeps serving" in accepted[2]
        assert cluster.status("LLMRoute", "team-a", "chat")["observedGeneration"] == 2
        assert any(e["reason"] == "Invalid" and e["involvedObject"]["name"] == "chat"
                   for e in cluster.events("team-a"))
        current = cluster.operator.index.table_for(PodRef("team-a", "chat-0"))
        assert current is not None and current.version == good.version
        await cluster.patch(route(model="gpt-4o", budget_usd=10.0))  # the next push is this fix, nothing between
        fixed = await car.table()
        assert fixed.table["documents"][1]["spec"]["tiers"]["fast"]["targets"][0]["model"] == "gpt-4o"


async def test_status_counts_acks_names_nacks_and_sums_spend(cluster: Cluster) -> None:
    async with FakeSidecar.connect(cluster, "team-a", "chat-0") as car0, \
            FakeSidecar.connect(cluster, "team-a", "chat-1") as car1:
        await car0.table()
        await car1.table()
        await car0.ack()
        await car1.nack("table.documents: something the sidecar cannot run")

        def counted() -> bool:
            return cluster.status("LLMRoute", "team-a", "chat").get("sidecars", {}).get("nacked") == ["chat-1"]

        await cluster.until(counted)
        status = cluster.status("LLMRoute", "team-a", "chat")
        assert status["sidecars"]["summary"] == "1/2"
        assert conditions(status)["Synced"][:2] == ("False", "Rejected")
        assert any(e["reason"] == "TableRejected" and "chat-1" in e["message"] for e in cluster.events("team-a"))

        await car0.usage("chat", 3.0)
        await car1.usage("chat", 5.5)
        await cluster.until(lambda: cluster.status("LLMRoute", "team-a", "chat").get("spend", {}).get("periodUSD") == 8.5)
        status = cluster.status("LLMRoute", "team-a", "chat")
        assert status["spend"]["percentOfBudget"] == 85.0
        assert conditions(status)["BudgetWarning"][0] == "True" and conditions(status)["BudgetExceeded"][0] == "False"
        assert any(e["reason"] == "BudgetWarning" for e in cluster.events("team-a"))
        assert KEY not in str(status) and KEY not in str(cluster.events("team-a"))


async def test_spend_reported_just_before_the_operator_stops_is_in_the_status_it_leaves(
        kmock: Emulator, certs: CertFiles) -> None:
    """A stopping operator (an upgrade, a node drain) writes status once more before it closes the sidecars'
    streams: the spend their last reports brought, held back by the debounce, is not lost to the next one."""
    prepare(kmock)
    async with running_operator(kmock, certs, status_debounce_s=3600.0) as stopping:  # no pass but the last
        for body in (node(), provider(), secret(), route(budget_usd=10.0), pod("chat-0")):
            await stopping.create(body)
        async with FakeSidecar.connect(stopping, "team-a", "chat-0") as car:
            await car.table()
            await car.ack()
            await car.usage("chat", 3.0)
            book = stopping.operator.book
            async with asyncio.timeout(TIMEOUT):
                while book.spend("team-a", "chat", book.clock())[1] != 3.0:  # the report is in
                    await asyncio.sleep(0.01)
            assert stopping.status("LLMRoute", "team-a", "chat") == {}  # nothing written yet
            stopping.stop.set()
            async with asyncio.timeout(TIMEOUT):
                async for _ in car.ws:  # leases, until the hub closes the stream
                    pass
        status = stopping.status("LLMRoute", "team-a", "chat")
        assert status["spend"]["periodUSD"] == 3.0
        assert status["sidecars"]["summary"] == "1/1"  # written while the sidecar was still connected


async def test_the_admin_plane_answers_health_readiness_and_metrics(cluster: Cluster) -> None:
    async with FakeSidecar.connect(cluster, "team-a", "chat-0") as car:
        await car.table()
        await car.ack()
        await cluster.until(lambda: cluster.status("LLMRoute", "team-a", "chat").get("sidecars", {}).get("synced") == 1)
        base = f"http://127.0.0.1:{cluster.operator.admin_port}"
        async with aiohttp.ClientSession() as session:
            for path in ("/healthz", "/readyz"):
                async with session.get(base + path) as response:
                    assert response.status == 200, path
            async with session.get(base + "/metrics") as response:
                text = await response.text()
        assert "llmroute_operator_sidecars_connected 1.0" in text
        assert 'llmroute_operator_resources{accepted="true",kind="LLMRoute"} 1.0' in text
        assert "llmroute_operator_table_compilations_total" in text
        assert "llmroute_operator_table_pushes_total 1.0" in text
        assert 'llmroute_operator_budget_spent_percent{namespace="team-a",route="chat"} 0.0' in text
        assert 'llmroute_operator_provider_degraded{namespace="team-a",provider="openai-main"} 0.0' in text
        assert "llmroute_operator_ack_latency_seconds_count 1.0" in text
        leased = [line for line in text.splitlines() if line.startswith("llmroute_operator_leased_requests_per_minute{")]
        assert leased and all(float(line.rsplit(" ", 1)[1]) <= 600 for line in leased)
        assert 'llmroute_operator_lease_total_per_minute{bound="configured",provider="team-a/openai-main",' \
               'window="requests"}' in text
        assert KEY not in text


async def test_the_real_sidecar_installs_what_the_operator_serves_and_follows_a_change(
        cluster: Cluster, tmp_path: Path) -> None:
    car = build_sidecar()
    settings = ClusterSettings(url=f"wss://localhost:{cluster.operator.hub_port}/v1/sync", ca_file=cluster.certs.ca,
                               token_file=write_token(tmp_path / "token", PodRef("team-a", "chat-0")),
                               state_dir=tmp_path / "state")
    client = OperatorClient(settings, car, TableStore(settings.state_dir), sleep=NeverSleep())
    task = asyncio.create_task(client.connect_once())
    try:
        await cluster.until(lambda: cluster.status("LLMRoute", "team-a", "chat").get("sidecars", {}).get("synced") == 1)
        assert car.table is not None
        target = car.table.route("chat").tiers["fast"].targets[0]  # type: ignore[union-attr]
        assert target.credential is not None and target.credential.reveal() == KEY
        assert (target.region, car.table.region) == ("eu-west-1", "eu-west-1")  # its node's endpoint first
        first = car.pushed_version
        await cluster.patch(route(model="gpt-4o", budget_usd=10.0))
        await cluster.until(lambda: car.pushed_version != first and conditions(
            cluster.status("LLMRoute", "team-a", "chat"))["Synced"][0] == "True")
        assert car.table.route("chat").tiers["fast"].targets[0].model == "gpt-4o"  # type: ignore[union-attr]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await car.upstream.close()


@attrs.define(kw_only=True)
class SlowSecretEmulator(Emulator):
    """An API server that takes a second to answer for the Secret `keys-b`."""

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.resource.plural == "secrets" and request.name == "keys-b":
            await asyncio.sleep(1.0)
        return await super()._handle(request)


@pytest.mark.kmock(cls=SlowSecretEmulator)
async def test_a_starting_operator_pushes_no_table_before_it_has_read_the_cluster_and_its_secrets(
        kmock: SlowSecretEmulator, certs: CertFiles) -> None:
    """An operator restart: the hub takes the sidecars' streams at once, while kopf is still listing and the
    Secrets are still being read. A table pushed then lacks the routes whose providers' keys are not read
    yet, and the sidecar would swap its whole table for it: its first push must be the whole table."""
    prepare(kmock)
    bodies = (node(), secret(), secret("keys-b"), provider(), provider("anthropic-b", secret="keys-b"),
              route(), route("batch", provider_name="anthropic-b"), pod("chat-0"))
    for body in bodies:  # there before the operator starts
        async with kmock.post(plural_path(body["kind"], body["metadata"].get("namespace", "")), json=body) as made:
            assert made.status in (200, 201), await made.text()
    async with running_operator(kmock, certs) as running, FakeSidecar.connect(running, "team-a", "chat-0") as car:
        first = await car.table()
        routes = sorted(d["metadata"]["name"] for d in first.table["documents"] if d["kind"] == "LLMRoute")
        assert routes == ["batch", "chat"]
        assert sorted(first.table["credentials"]) == ["anthropic-b", "openai-main"]


@attrs.define(kw_only=True)
class RotatingTokenEmulator(Emulator):
    """An API server that takes one bearer token: the one the kubelet wrote last (the tests' own requests
    carry none)."""

    valid: str = "rotated-token"

    async def _handle(self, request: Any) -> Any:
        given = request.headers.get("Authorization", "")
        if given and given != f"Bearer {self.valid}":
            return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                              "reason": "Unauthorized", "code": 401}, status=401)
        return await super()._handle(request)


@pytest.mark.kmock(cls=RotatingTokenEmulator)
async def test_kopf_logs_in_again_with_the_rotated_token_when_the_api_server_refuses_the_old_one(
        kmock: RotatingTokenEmulator, certs: CertFiles) -> None:
    """In a pod kopf's credentials are the projected token, which the kubelet rotates: after a 401, the
    login must read it again, not hand kopf back the token it had at start."""
    prepare(kmock)
    server = str(kmock.url).rstrip("/")
    tokens = ["expired-token"]

    def login() -> kopf.ConnectionInfo:
        token = tokens[-1]
        tokens.append("rotated-token")  # the kubelet has written the new one by the next read
        return kopf.ConnectionInfo(server=server, token=token)

    async with running_operator(kmock, certs, login) as cluster:
        for body in (node(), provider(), secret(), route(), pod("chat-0")):
            await cluster.create(body)
        await cluster.until(lambda: conditions(cluster.status("LLMRoute", "team-a", "chat")).get(
            "Accepted", ("",))[0] == "True")
    assert len(tokens) >= 3  # logged in, refused, logged in again
