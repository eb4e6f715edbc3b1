"""The status writer: one pass per burst of changes, a patch only for what differs, Secrets read by name."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from llmroute_operator.contracts import PodRef
from llmroute_operator.index import ClusterIndex
from llmroute_operator.status import Event, ObjectRef, StatusBook
from llmroute_operator.writer import SecretReader, StatusWriter
from tests.operator.resources import KEY, node, pod, provider, route, secret

ROUTE: ObjectRef = ("LLMRoute", "team-a", "chat")


class FakeApi:
    def __init__(self) -> None:
        self.patches: list[tuple[ObjectRef, dict[str, Any]]] = []
        self.events: list[tuple[Event, str | None]] = []
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.reads: list[tuple[str, str]] = []

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool:
        self.patches.append((ref, dict(patch)))
        return True

    async def post_event(self, event: Event, uid: str | None) -> None:
        self.events.append((event, uid))

    async def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        self.reads.append((namespace, name))
        return self.secrets.get((namespace, name))


def world(pods: int = 3) -> tuple[ClusterIndex, StatusBook, FakeApi, StatusWriter]:
    index = ClusterIndex()
    for body in (node(), provider(), secret(), route(), *(pod(f"chat-{i}") for i in range(pods))):
        index.put(body)
    book = StatusBook(clock=lambda: 1_780_000_000.0)
    api = FakeApi()
    return index, book, api, StatusWriter(index, book, api, clock=lambda: 1_780_000_000.0)


async def test_a_thousand_acks_make_one_patch_and_an_unchanged_pass_none() -> None:
    index, book, api, writer = world(1000)
    await writer.write_once()
    first = len(api.patches)
    assert first == 2  # the route and the provider
    for i in range(1000):
        p = PodRef("team-a", f"chat-{i}")
        book.connected(p)
        table = index.table_for(p)
        assert table is not None
        book.acked(p, table.version)
    await writer.write_once()
    assert [ref for ref, _ in api.patches[first:]] == [ROUTE]
    assert api.patches[-1][1]["sidecars"]["summary"] == "1000/1000"
    await writer.write_once()
    assert len(api.patches) == first + 1


async def test_a_seeded_status_that_still_holds_is_not_rewritten_nor_announced() -> None:
    _index, _book, _api, writer = world()
    await writer.write_once()
    written = dict(writer.written)
    _, _book2, api2, writer2 = world()
    for ref, status in written.items():
        writer2.seed(ref, status)
    await writer2.write_once()
    assert api2.patches == [] and api2.events == []


async def test_fields_that_disappear_are_removed_by_the_merge_patch() -> None:
    index, _book, api, writer = world()
    index.put(route(budget_usd=5.0, generation=2))
    await writer.write_once()
    assert "spend" in writer.written[ROUTE]
    index.put(route(generation=3))
    await writer.write_once()
    assert api.patches[-1][0] == ROUTE and api.patches[-1][1]["spend"] is None


async def test_events_carry_the_uid_of_their_object() -> None:
    index, _book, api, writer = world()
    index.put(route(generation=2, defaultTier="slow"))
    await writer.write_once()
    assert [(e.reason, uid) for e, uid in api.events] == [("Invalid", "uid-chat")]


async def test_the_writer_runs_a_pass_when_poked() -> None:
    _index, _book, api, writer = world()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    writer.sleep = sleep
    task = asyncio.create_task(writer.run())
    writer.poke()
    async with asyncio.timeout(5):
        await writer.passed.wait()
    task.cancel()
    assert slept == [1.0] and api.patches


async def test_the_secret_reader_reads_named_secrets_only_and_drops_deleted_ones() -> None:
    index = ClusterIndex()
    for body in (node(), provider(), route(), pod()):
        index.put(body)
    api = FakeApi()
    api.secrets[("team-a", "keys")] = secret()["data"]
    reader = SecretReader(index, api)
    await reader.read(index.missing_secrets())
    assert api.reads == [("team-a", "keys")]
    table = index.table_for(PodRef("team-a", "chat-0"))
    assert table is not None and table.payload["credentials"] == {"openai-main": KEY}
    del api.secrets[("team-a", "keys")]
    await reader.read(index.named_secrets())
    verdict = index.verdict("LLMProvider", "team-a", "openai-main")
    assert verdict is not None and [p.path for p in verdict.unresolved] == ["spec.credentials.secretRef.name"]


async def test_a_refusal_event_goes_to_the_pod_with_the_pods_uid() -> None:
    _index, book, api, writer = world()
    book.refused("127.0.0.1: token not authenticated", PodRef("team-a", "chat-1"))
    await writer.write_once()
    assert [(e.involved, e.reason, uid) for e, uid in api.events if e.reason == "SidecarRefused"] == \
        [(("Pod", "team-a", "chat-1"), "SidecarRefused", "uid-chat-1")]


async def test_a_budget_alert_is_posted_once_though_its_status_patch_failed_and_is_retried() -> None:
    """A status patch that fails (the API server is busy) is retried on the next pass; the Warning that
    went with the change was posted already and must not be posted again with every retry."""
    index, book, api, writer = world()
    index.put(route(budget_usd=10.0, generation=2))
    await writer.write_once()
    failing = True

    async def patch_status(ref: ObjectRef, patch: Mapping[str, Any]) -> bool:
        if failing:
            raise ConnectionError("the API server is busy")
        api.patches.append((ref, dict(patch)))
        return True

    api.patch_status = patch_status  # type: ignore[method-assign]
    book.usage(PodRef("team-a", "chat-0"), {"type": "usage", "interval": 10,
                                            "routes": {"chat": {"requests": 1, "cost_usd": 9.0}}})
    await writer.write_once()
    await writer.write_once()
    failing = False
    await writer.write_once()
    assert [e.reason for e, _ in api.events].count("BudgetWarning") == 1
    assert writer.written[ROUTE]["spend"]["periodUSD"] == 9.0 and writer.failures == 2
