"""The cluster index: which pod gets which table, per-resource verdicts, and the compile cache."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmroute_operator.contracts import GlobalLimits, PodRef
from llmroute_operator.index import ClusterIndex
from llmroute_operator.judging import Problem
from llmroute_proxy.sync.protocol import compile_payload, payload_version
from llmroute_proxy.table import METADATA_AUTH
from tests.operator.resources import KEY, node, pod, provider, route, secret, secret_data

POD = PodRef("team-a", "chat-0")


def loaded(*objects: dict[str, Any]) -> ClusterIndex:
    index = ClusterIndex()
    for body in objects:
        index.put(body)
    return index


def cluster(*extra: dict[str, Any]) -> ClusterIndex:
    return loaded(node(), provider(), secret(), route(budget_usd=50.0), pod(), *extra)


def routes_in(index: ClusterIndex, pod_ref: PodRef = POD) -> list[str] | None:
    """The routes of the pod's table (None: no table for it, the pod keeps what it has)."""
    table = index.table_for(pod_ref)
    if table is None:
        return None
    return [d["metadata"]["name"] for d in table.payload["documents"] if d["kind"] == "LLMRoute"]


def test_a_selected_pod_gets_its_routes_and_their_providers_with_the_credential_resolved() -> None:
    table = cluster().table_for(POD)
    assert table is not None
    assert table.version == payload_version(table.payload)
    assert table.payload["region"] == "eu-west-1"
    assert [(d["kind"], d["metadata"]) for d in table.payload["documents"]] == \
        [("LLMProvider", {"name": "openai-main"}), ("LLMRoute", {"name": "chat"})]
    assert table.payload["credentials"] == {"openai-main": KEY}  # the Secret's trailing newline is gone
    assert table.provider_limits == {"team-a/openai-main": GlobalLimits(600, None, 8)}
    assert table.route_budgets == {"team-a/chat": 50.0}
    compiled = compile_payload(table.payload)  # what the sidecar does with it: no NACK
    assert compiled.route("chat") is not None


def test_a_vertex_provider_on_workload_identity_reaches_the_pod_without_a_key() -> None:
    """No Secret to resolve: the pod's metadata server gives its tokens; the sidecar compiles the table
    with a target that takes them from there."""
    vertex = provider("vx", secret=None, type="vertex", credentials={"workloadIdentity": {}}, regions=("eu-west-1",),
                      endpoints=[{"region": "eu-west-1",
                                  "url": "https://europe-west1-aiplatform.googleapis.com/v1/projects/p/locations/europe-west1"}],
                      models=[{"name": "gemini-2.5-flash", "pricing": {"inputPerMTok": 0.3, "outputPerMTok": 2.5}}])
    index = loaded(node(), vertex, route(provider_name="vx", model="gemini-2.5-flash"), pod())
    table = index.table_for(POD)
    assert table is not None
    assert table.payload["credentials"] == {}
    [target] = compile_payload(table.payload).route("chat").tiers["fast"].targets  # type: ignore[union-attr]
    assert (target.credential, target.options.get("auth")) == (None, METADATA_AUTH)


def test_the_payload_carries_no_kubernetes_bookkeeping() -> None:
    table = cluster().table_for(POD)
    assert table is not None
    for document in table.payload["documents"]:
        assert set(document) == {"apiVersion", "kind", "metadata", "spec"}
        assert document["metadata"] == {"name": document["metadata"]["name"]}


@pytest.mark.parametrize(("selector", "labels", "selected"), [
    ({"matchLabels": {"app": "chat"}}, {"app": "chat"}, True),
    ({"matchLabels": {"app": "chat"}}, {"app": "chat", "tier": "web"}, True),
    ({"matchLabels": {"app": "chat"}}, {"app": "search"}, False),
    ({"matchLabels": {"app": "chat"}}, {}, False),
    ({}, {"anything": "x"}, True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["chat", "qa"]}]}, {"app": "qa"}, True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["chat"]}]}, {"app": "qa"}, False),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["chat"]}]}, {"app": "qa"}, True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["chat"]}]}, {}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "Sideways"}]}, {"gpu": "1"}, False),
    ({"matchLabels": {"app": "chat"}, "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]},
     {"app": "chat", "canary": "1"}, False),
])
def test_pod_selector(selector: dict[str, Any], labels: dict[str, str], selected: bool) -> None:
    index = loaded(node(), provider(), secret(), route(selector=selector), pod(labels=labels))
    assert routes_in(index) == (["chat"] if selected else [])
    assert (index.selected_pods("team-a", "chat") == [POD]) is selected


def test_a_route_selects_only_pods_of_its_own_namespace() -> None:
    index = cluster(pod("chat-0", "team-b"), secret(namespace="team-b"))
    assert routes_in(index, PodRef("team-b", "chat-0")) == []  # known, selected by nothing: no route
    assert index.table_for(PodRef("team-a", "ghost")) is None  # not known (yet): nothing to say


@pytest.mark.parametrize(("node_region", "first"), [
    ("eu-west-1", "eu-west-1"),
    ("us-east-1", "us-east-1"),
    ("ap-south-1", "us-east-1"),  # no endpoint there: the order as applied
])
def test_endpoints_of_the_pods_region_come_first(node_region: str, first: str) -> None:
    index = cluster(node("node-eu", region=node_region))
    table = index.table_for(POD)
    assert table is not None and table.payload["region"] == node_region
    endpoints = table.payload["documents"][0]["spec"]["endpoints"]
    assert endpoints[0]["region"] == first and len(endpoints) == 2


def test_a_pod_not_yet_on_a_node_gets_a_table_without_region() -> None:
    index = cluster(pod(node=None))
    table = index.table_for(POD)
    assert table is not None and table.payload["region"] == ""


def test_a_thousand_pods_with_the_same_inputs_cost_one_compilation() -> None:
    index = cluster(*(pod(f"chat-{i}") for i in range(1000)))
    versions = {index.table_for(PodRef("team-a", f"chat-{i}")).version for i in range(1000)}  # type: ignore[union-attr]
    assert len(versions) == 1
    assert index.compilations == 1 and index.cache_hits == 999


def test_distinct_inputs_are_compiled_once_each() -> None:
    pods = [pod(f"chat-{i}", node="node-eu" if i % 2 else "node-us") for i in range(100)]
    index = cluster(node("node-us", "us-east-1"), *pods)
    for i in range(100):
        index.table_for(PodRef("team-a", f"chat-{i}"))
    assert index.compilations == 2
    index.put(route(budget_usd=60.0, generation=2))
    for i in range(100):
        index.table_for(PodRef("team-a", f"chat-{i}"))
    assert index.compilations == 4


def test_a_route_change_reaches_the_pod_and_moves_the_generation() -> None:
    index = cluster()
    before, generation = index.table_for(POD), index.generation()
    assert index.put(route(model="gpt-4o", budget_usd=50.0, generation=2))
    after = index.table_for(POD)
    assert index.generation() > generation
    assert before is not None and after is not None and after.version != before.version
    assert after.payload["documents"][1]["spec"]["tiers"]["fast"]["targets"][0]["model"] == "gpt-4o"


BAD_ROUTES = [
    (route(generation=2, defaultTier="slow"), "spec.defaultTier"),
    (route(generation=2, fallback={"maxAttempts": "three"}), "spec.fallback.maxAttempts"),
    (route(generation=2, tiers={"fast": {"targets": []}}), "spec.tiers.fast.targets"),
]


@pytest.mark.parametrize(("bad", "path"), BAD_ROUTES)
def test_a_bad_route_is_reported_with_its_field_path_and_the_last_good_version_keeps_serving(
        bad: dict[str, Any], path: str) -> None:
    index = cluster()
    good = index.table_for(POD)
    generation = index.generation()
    assert index.put(bad) is False
    assert index.generation() == generation
    assert index.table_for(POD) == good
    verdict = index.verdict("LLMRoute", "team-a", "chat")
    assert verdict is not None and not verdict.accepted and verdict.generation == 2
    assert [p.path for p in verdict.problems] == [path] and verdict.serving is not None
    assert index.put(route(model="gpt-4o", generation=3))  # fixed: it serves again
    verdict = index.verdict("LLMRoute", "team-a", "chat")
    assert verdict is not None and verdict.accepted and verdict.problems == ()


def test_a_route_that_was_never_good_serves_nothing() -> None:
    index = loaded(node(), provider(), secret(), pod(), route(defaultTier="slow"))
    assert index.table_for(POD) is None
    verdict = index.verdict("LLMRoute", "team-a", "chat")
    assert verdict is not None and verdict.serving is None and not verdict.accepted


def test_a_route_naming_a_missing_provider_is_unresolved_at_the_targets_path() -> None:
    index = cluster()
    index.put(route(provider_name="nope", generation=2))
    verdict = index.verdict("LLMRoute", "team-a", "chat")
    assert verdict is not None and not verdict.accepted and verdict.problems == ()
    assert [p.path for p in verdict.unresolved] == ["spec.tiers.fast.targets[0].provider"]
    assert index.table_for(POD) is not None  # the good version still serves


@pytest.mark.parametrize(("bad", "path"), [
    (provider(generation=2, type="openia"), "spec.type"),
    (provider(generation=2, endpoints=[{"region": "us", "url": "not a url"}]), "spec.endpoints[0].url"),
    (provider(generation=2, credentials={"env": "OPENAI_API_KEY"}), "spec.credentials"),
    (provider(generation=2, secret="other"), "spec.credentials.secretRef.name"),
    (provider(generation=2, credentials={"secretRef": {"name": "keys", "key": "nope"}}),
     "spec.credentials.secretRef.key"),
])
def test_a_bad_provider_is_reported_and_changes_no_table(bad: dict[str, Any], path: str) -> None:
    index = cluster()
    good = index.table_for(POD)
    assert index.put(bad) is False
    assert index.table_for(POD) == good
    verdict = index.verdict("LLMProvider", "team-a", "openai-main")
    assert verdict is not None and not verdict.accepted
    assert path in [p.path for p in (*verdict.problems, *verdict.unresolved)]
    route_verdict = index.verdict("LLMRoute", "team-a", "chat")
    assert route_verdict is not None and route_verdict.accepted  # judged against the serving provider


def test_secrets_are_kept_only_when_a_provider_names_them() -> None:
    index = loaded(node(), provider(), route(), pod())
    assert index.missing_secrets() == {("team-a", "keys")}
    assert index.put(secret("unrelated")) is False
    assert index.table_for(POD) is None
    verdict = index.verdict("LLMProvider", "team-a", "openai-main")
    assert verdict is not None and verdict.unresolved == (
        Problem("spec.credentials.secretRef.name", "Secret 'keys' not found in namespace 'team-a'"),)
    assert index.put(secret())
    assert index.missing_secrets() == set()
    assert index.table_for(POD) is not None
    index.delete(provider())
    assert index.put(secret(key="rotated")) is False  # nobody names it any more: dropped


def test_a_rotated_secret_is_a_new_version_and_a_deleted_one_keeps_the_last_key() -> None:
    index = cluster()
    before = index.table_for(POD)
    assert index.put(secret(key="sk-rotated"))
    after = index.table_for(POD)
    assert before is not None and after is not None and after.version != before.version
    assert after.payload["credentials"] == {"openai-main": "sk-rotated"}
    assert index.delete(secret()) is False
    assert index.table_for(POD) == after
    verdict = index.verdict("LLMProvider", "team-a", "openai-main")
    assert verdict is not None and [p.path for p in verdict.unresolved] == ["spec.credentials.secretRef.name"]


def test_undecodable_secret_values_are_ignored() -> None:
    index = loaded(node(), provider(), route(), pod())
    index.put_secret("team-a", "keys", {"openai": "%%%", **secret_data(other="x")})
    verdict = index.verdict("LLMProvider", "team-a", "openai-main")
    assert verdict is not None and [p.path for p in verdict.unresolved] == ["spec.credentials.secretRef.key"]


def test_deleting_a_provider_drops_the_routes_that_use_it_from_tables() -> None:
    index = cluster()
    assert index.delete(provider())
    assert index.table_for(POD) is None  # the route still selects the pod: it keeps its last table
    verdict = index.verdict("LLMRoute", "team-a", "chat")
    assert verdict is not None and [p.path for p in verdict.unresolved] == ["spec.tiers.fast.targets[0].provider"]


def test_only_the_providers_a_pods_routes_name_reach_it() -> None:
    index = cluster(provider("other", secret="keys"))
    table = index.table_for(POD)
    assert table is not None
    assert [d["metadata"]["name"] for d in table.payload["documents"]] == ["openai-main", "chat"]
    assert set(table.payload["credentials"]) == {"openai-main"}
    assert index.routes_using("team-a", "openai-main") == ["chat"] and index.routes_using("team-a", "other") == []


@pytest.mark.parametrize(("change", "moves"), [
    (pod(), False),  # the same pod again (a status update): nothing
    (pod(labels={"app": "chat", "version": "2"}), True),
    (pod(node="node-us"), True),
    (node("node-eu"), False),
    (node("node-eu", region="eu-central-1"), True),
    (node("node-unused", region="x"), False),
])
def test_which_changes_move_the_generation(change: dict[str, Any], moves: bool) -> None:
    index = cluster()
    generation = index.generation()
    assert index.put(change) is moves
    assert (index.generation() > generation) is moves


def test_a_pod_relabelled_out_of_the_selector_loses_its_routes() -> None:
    index = cluster()
    assert routes_in(index) == ["chat"]
    index.put(pod(labels={"app": "other"}))
    table = index.table_for(POD)
    assert table is not None and table.payload["documents"] == [] and table.payload["credentials"] == {}
    assert compile_payload(table.payload).routes == ()  # the sidecar takes it: it then answers no_route


def test_a_deleted_route_leaves_the_pods_it_selected_no_route_and_no_key() -> None:
    index = cluster()
    index.delete(route())
    table = index.table_for(POD)
    assert table is not None and routes_in(index) == [] and "openai-main" not in table.payload["credentials"]
    assert table.provider_limits == {} and table.route_budgets == {}  # nothing leased to it either
    assert index.delete(pod()) and index.pods() == []


def test_listeners_hear_verdict_changes_that_move_no_table() -> None:
    index = cluster()
    heard: list[int] = []
    index.listeners.append(lambda: heard.append(1))
    index.put(route(generation=2, defaultTier="slow"))
    assert heard


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="ConfigMap"):
        ClusterIndex().put({"kind": "ConfigMap", "metadata": {"name": "x"}})


async def test_changed_wakes_a_waiter_when_a_table_may_have_changed() -> None:
    index = cluster()
    since = index.generation()
    waiter = asyncio.create_task(index.changed(since))
    await asyncio.sleep(0)
    assert not waiter.done()
    index.put(route(model="gpt-4o", generation=2))
    assert await asyncio.wait_for(waiter, 1.0) == since + 1
