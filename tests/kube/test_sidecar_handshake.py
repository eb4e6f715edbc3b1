"""Tier B: a sidecar's real projected token through the hub's real TokenReview.

Each sidecar holds what the kubelet would project into its pod: a TokenRequest bound to the pod,
audience llmroute.dev. The hub verifies it with a TokenReview against the real API server, using the
operator's own service-account token and only the RBAC the chart grants it, and serves the pod named by
the token's bound-object claims, never one the sidecar names itself.

Tokens the API server would never issue are made with its own signing key (tests/kube/tokens.py): one
whose only fault is an expiry in the past, one that claims a pod of the same name in another namespace,
one of a service account bound to another pod (which the API server accepts and the hub must not).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmroute_operator.certs import CertFiles, write_self_signed
from llmroute_operator.contracts import PodRef, ReportSink
from llmroute_operator.hub import Hub
from llmroute_operator.index import ClusterIndex
from llmroute_operator.k8s import Connection, KubernetesApi
from llmroute_operator.status import StatusBook
from llmroute_operator.tokenreview import AUDIENCE, KubernetesTokenReviewer
from llmroute_operator.writer import StatusWriter
from llmroute_proxy.server.runner import build_sidecar
from llmroute_proxy.sync.client import ClusterSettings, OperatorClient
from llmroute_proxy.sync.persist import TableStore
from tests.kube.apiserver import ApiServer
from tests.kube.client import API_AUDIENCE, Kube
from tests.kube.tokens import claims, resign
from tests.syncfakes import FakeSink, FakeSource, desired, documents, running_hub

# What the hub needs of the API server: review tokens, and check the token's pod still exists.
HUB_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
]
# What telling a pod's owners about a refusal needs: a Warning Event on that Pod.
EVENTS_RULE: dict[str, Any] = {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}


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
        [(_, reason, _)] = operator.sink.of("refused")
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
        [(_, reason, _)] = operator.sink.of("refused")
    assert "HTTP 403" in reason  # the API server's Forbidden, as the hub saw it


@dataclass
class Refusals:
    """The operator's refusal path for real: the hub's reports in a StatusBook, the pods in the index as its
    watch would put them, and the status writer posting Events with the operator's own token."""

    book: StatusBook
    writer: StatusWriter
    url: str


@asynccontextmanager
async def refusing_operator(apiserver: ApiServer, token: str, certs: CertFiles,
                            pods: list[dict[str, Any]]) -> AsyncIterator[Refusals]:
    connector = aiohttp.TCPConnector(ssl=apiserver.ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {"Authorization": f"Bearer {token}"}
        reviewer = KubernetesTokenReviewer(session, apiserver.url, headers)
        index, book = ClusterIndex(), StatusBook(time.time)
        for pod in pods:
            index.put(pod, "Pod")
        api = KubernetesApi(session, Connection(apiserver.url, apiserver.ssl_context(), lambda: dict(headers)))
        sink: ReportSink = book
        async with running_hub(Hub(FakeSource(), sink, reviewer), certs) as url:
            yield Refusals(book, StatusWriter(index, book, api), url)


async def connect_with(url: str, token_file: Path, certs: CertFiles, state: Path) -> None:
    """One handshake; a served connection would wait for a table forever, so it ends (fails) after 20 s."""
    settings = ClusterSettings(url=url, ca_file=certs.ca, token_file=token_file, state_dir=state)
    async with asyncio.timeout(20):
        await OperatorClient(settings, build_sidecar(), TableStore(settings.state_dir), sleep=_never).connect_once()


async def refused_events(admin: Kube, namespace: str) -> list[dict[str, Any]]:
    listed = await admin.get(f"/api/v1/namespaces/{namespace}/events")
    return [e for e in listed["items"] if e["reason"] == "SidecarRefused"]


@pytest.mark.parametrize("case", ["expired", "other-namespace", "other-pod"])
async def test_a_token_signed_with_the_real_key_that_is_expired_or_for_another_namespace_or_pod_is_refused(
        apiserver: ApiServer, admin: Kube, certs: CertFiles, tmp_path: Path, case: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Refused, logged without the token, and told to the pod the token names with a Warning Event."""
    caplog.set_level(logging.DEBUG)
    team, other = await admin.namespace("team"), await admin.namespace("other")
    pods = {}
    for namespace, name in ((team, "chat"), (team, "batch"), (other, "chat")):
        await admin.service_account(namespace, name)
        pods[namespace, name] = await admin.pod(namespace, name, service_account=name)
    real = await admin.bound_token(pods[team, "chat"], AUDIENCE)
    bound, now, key = claims(real)["kubernetes.io"], int(time.time()), apiserver.service_account_key
    if case == "expired":  # nothing else wrong with it
        token, named, status = resign(real, key, iat=now - 660, nbf=now - 660, exp=now - 60), (team, "chat"), 401
    elif case == "other-namespace":  # team/chat's token, claiming the pod of the same name in `other`
        victim = pods[other, "chat"]["metadata"]
        token = resign(real, key, sub=f"system:serviceaccount:{other}:chat",
                       **{"kubernetes.io": {**bound, "namespace": other, "pod": {"name": "chat", "uid": victim["uid"]}}})
        named, status = (other, "chat"), 401
    else:  # service account chat bound to pod batch, which runs as batch: the API server authenticates it
        victim = pods[team, "batch"]["metadata"]
        token = resign(real, key, **{"kubernetes.io": {**bound, "pod": {"name": "batch", "uid": victim["uid"]}}})
        named, status = (team, "batch"), 403
    token_file = tmp_path / "token"
    token_file.write_text(token)
    operator_token = await admin.operator_token([*HUB_RULES, EVENTS_RULE])
    async with refusing_operator(apiserver, operator_token, certs, list(pods.values())) as operator:
        with pytest.raises(Exception, match=f"HTTP {status}"):
            await connect_with(operator.url, token_file, certs, tmp_path / "state")
        assert operator.book.refusals == 1 and operator.book.connected_pods == set()
        await operator.writer.write_once()
    [event] = await refused_events(admin, named[0])
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": named[0], "name": named[1],
                                       "uid": pods[named]["metadata"]["uid"]}
    assert event["type"] == "Warning"
    assert {"expired": "Token has expired", "other-namespace": "ServiceAccount UID",
            "other-pod": f"names pod {team}/batch, which runs as batch"}[case] in event["message"]
    for namespace in {team, other} - {named[0]}:
        assert await refused_events(admin, namespace) == []
    refusals = [r.getMessage() for r in caplog.records if r.name == "llmroute.hub" and "refused" in r.getMessage()]
    assert len(refusals) == 1 and f"{named[0]}/{named[1]}" in refusals[0]
    assert token not in caplog.text and token.split(".")[2][-20:] not in caplog.text
    assert token not in event["message"]


async def test_the_refusal_event_needs_its_rbac_rule(
        apiserver: ApiServer, admin: Kube, certs: CertFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    namespace = await admin.namespace("team")
    pod = await app_pod(admin, namespace, "chat", tmp_path)
    pod.token_file.write_text(resign(pod.token_file.read_text(), apiserver.service_account_key,
                                     exp=int(time.time()) - 60))
    live = await admin.get(f"/api/v1/namespaces/{namespace}/pods/chat")
    async with refusing_operator(apiserver, await admin.operator_token(HUB_RULES), certs, [live]) as operator:
        with pytest.raises(Exception, match="HTTP 401"):
            await connect_with(operator.url, pod.token_file, certs, tmp_path / "state")
        await operator.writer.write_once()
    assert await refused_events(admin, namespace) == []
    assert "event SidecarRefused for Pod" in caplog.text and "HTTP 403" in caplog.text
