"""Tier B: a sidecar's real projected token through the hub's real TokenReview.

Each sidecar holds what the kubelet would project into its pod: a TokenRequest bound to the pod,
audience llmroute.dev. The hub verifies it with a TokenReview against the real API server, using the
operator's own service-account token and only the RBAC the chart grants it, and serves the pod named by
the token's bound-object claims, never one the sidecar names itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmroute_operator.certs import CertFiles, write_self_signed
from llmroute_operator.contracts import PodRef
from llmroute_operator.hub import Hub
from llmroute_operator.tokenreview import AUDIENCE, KubernetesTokenReviewer
from llmroute_proxy.server.runner import build_sidecar
from llmroute_proxy.sync.client import ClusterSettings, OperatorClient
from llmroute_proxy.sync.persist import TableStore
from tests.kube.apiserver import ApiServer
from tests.kube.client import API_AUDIENCE, Kube
from tests.syncfakes import FakeSink, FakeSource, desired, documents, running_hub

# What the hub needs of the API server: review tokens, and check the token's pod still exists.
HUB_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return write_self_signed(tmp_path_factory.mktemp("hub-certs"))


@dataclass
class Operator:
    """The hub as the operator runs it, reviewing tokens with the operator's own credentials."""

    source: FakeSource
    sink: FakeSink
    url: str


@asynccontextmanager
async def running_operator(apiserver: ApiServer, token: str, certs: CertFiles) -> AsyncIterator[Operator]:
    connector = aiohttp.TCPConnector(ssl=apiserver.ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        reviewer = KubernetesTokenReviewer(session, apiserver.url, {"Authorization": f"Bearer {token}"})
        source, sink = FakeSource(), FakeSink()
        async with running_hub(Hub(source, sink, reviewer), certs) as url:
            yield Operator(source, sink, url)


@dataclass
class AppPod:
    ref: PodRef
    token_file: Path


async def app_pod(admin: Kube, namespace: str, name: str, tmp_path: Path, audience: str = AUDIENCE) -> AppPod:
    """A pod object and the token the kubelet would project into it."""
    await admin.service_account(namespace, name)
    pod = await admin.pod(namespace, name, service_account=name)
    token_file = tmp_path / f"{name}.token"
    token_file.write_text(await admin.bound_token(pod, audience))
    return AppPod(PodRef(namespace, name), token_file)


def sidecar_client(operator: Operator, pod: AppPod, certs: CertFiles, state: Path) -> OperatorClient:
    settings = ClusterSettings(url=operator.url, ca_file=certs.ca, token_file=pod.token_file, state_dir=state)
    return OperatorClient(settings, build_sidecar(), TableStore(settings.state_dir), sleep=_never)


async def _never(seconds: float) -> None:
    await asyncio.Event().wait()


async def test_a_projected_token_gets_its_own_pods_table_through_a_real_token_review(
        apiserver: ApiServer, admin: Kube, certs: CertFiles, tmp_path: Path) -> None:
    namespace = await admin.namespace("team")
    chat, batch = [await app_pod(admin, namespace, name, tmp_path) for name in ("chat", "batch")]
    async with running_operator(apiserver, await admin.operator_token(HUB_RULES), certs) as operator:
        tables = {chat.ref: desired(), batch.ref: desired(documents(model="gpt-4o"))}
        for ref, table in tables.items():
            await operator.source.set(ref, table)
        clients = [sidecar_client(operator, pod, certs, tmp_path / pod.ref.name) for pod in (chat, batch)]
        tasks = [asyncio.create_task(client.connect_once()) for client in clients]
        try:
            acked = await operator.sink.wait_for("acked", 2, timeout=30)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(acked) == sorted(("acked", ref, table.version) for ref, table in tables.items())


@pytest.mark.parametrize("case", ["other-audience", "deleted-pod", "forged"])
async def test_a_token_that_does_not_identify_a_live_pod_is_refused_and_never_logged(
        apiserver: ApiServer, admin: Kube, certs: CertFiles, tmp_path: Path, case: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    namespace = await admin.namespace("team")
    audience = API_AUDIENCE if case == "other-audience" else AUDIENCE
    pod = await app_pod(admin, namespace, "chat", tmp_path, audience=audience)
    if case == "deleted-pod":
        await admin.delete(f"/api/v1/namespaces/{namespace}/pods/chat")
    if case == "forged":
        real = pod.token_file.read_text()
        pod.token_file.write_text(real[:-8] + ("A" * 8 if not real.endswith("A" * 8) else "B" * 8))
    token = pod.token_file.read_text()
    async with running_operator(apiserver, await admin.operator_token(HUB_RULES), certs) as operator:
        await operator.source.set(pod.ref, desired())
        client = sidecar_client(operator, pod, certs, tmp_path / "state")
        with pytest.raises(Exception, match=r"HTTP 40[13]"):
            await client.connect_once()
        [(_, reason)] = operator.sink.of("refused")
    assert operator.sink.of("acked") == []
    assert token not in reason and token not in caplog.text
    assert token[-20:] not in caplog.text


@pytest.mark.parametrize("missing", range(len(HUB_RULES)), ids=["no-tokenreviews", "no-get-pods"])
async def test_the_hub_needs_each_of_its_rbac_rules(
        apiserver: ApiServer, admin: Kube, certs: CertFiles, tmp_path: Path, missing: int) -> None:
    namespace = await admin.namespace("team")
    pod = await app_pod(admin, namespace, "chat", tmp_path)
    rules = [rule for i, rule in enumerate(HUB_RULES) if i != missing]
    async with running_operator(apiserver, await admin.operator_token(rules), certs) as operator:
        await operator.source.set(pod.ref, desired())
        with pytest.raises(Exception, match="HTTP 503"):
            await sidecar_client(operator, pod, certs, tmp_path / "state").connect_once()
        [(_, reason)] = operator.sink.of("refused")
    assert "HTTP 403" in reason  # the API server's Forbidden, as the hub saw it
