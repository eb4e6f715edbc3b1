"""Status documents and Events from the index's verdicts and the sidecars' ACKs, NACKs and usage reports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmroute_operator.contracts import PodRef
from llmroute_operator.index import ClusterIndex
from llmroute_operator.status import (
    MAX_REFUSED_PODS,
    REFUSAL_EVENT_INTERVAL_S,
    Event,
    ObjectRef,
    StatusBook,
    compute,
)
from tests.operator.resources import KEY, node, pod, provider, route, secret

DAY0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
ROUTE: ObjectRef = ("LLMRoute", "team-a", "chat")
PROVIDER: ObjectRef = ("LLMProvider", "team-a", "openai-main")
PODS = [PodRef("team-a", f"chat-{i}") for i in range(3)]


class World:
    def __init__(self, *extra: dict[str, Any]) -> None:
        self.now = DAY0
        self.index = ClusterIndex()
        for body in (node(), provider(), secret(), route(budget_usd=10.0), *(pod(p.name) for p in PODS), *extra):
            self.index.put(body)
        self.book = StatusBook(clock=lambda: self.now)
        self.statuses: dict[ObjectRef, dict[str, Any]] = {}

    def compute(self) -> list[Event]:
        self.statuses, events = compute(self.index, self.book, self.statuses, self.now)
        return events

    def route(self) -> dict[str, Any]:
        self.compute()
        return self.statuses[ROUTE]

    def version(self, p: PodRef) -> str:
        table = self.index.table_for(p)
        assert table is not None
        return table.version

    def connect_all(self) -> None:
        for p in PODS:
            self.book.connected(p)

    def spend(self, p: PodRef, usd: float) -> None:
        self.book.usage(p, {"type": "usage", "interval": 10, "routes": {"chat": {"requests": 1, "cost_usd": usd}}})


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c.get("message", "")) for c in status["conditions"]}


def test_an_accepted_route_without_sidecars_is_not_synced() -> None:
    status = World().route()
    c = conditions(status)
    assert c["Accepted"][:2] == ("True", "Accepted") and c["ResolvedRefs"][0] == "True"
    assert c["Synced"][:2] == ("False", "NoSidecars")
    assert status["sidecars"] == {"selected": 0, "synced": 0, "summary": "0/0", "nacked": []}
    assert status["observedGeneration"] == 1 and "tableVersion" not in status
    assert all(cond["observedGeneration"] == 1 for cond in status["conditions"])


def test_synced_counts_the_connected_selected_sidecars_that_acked_their_current_table() -> None:
    world = World()
    world.connect_all()
    world.book.acked(PODS[0], world.version(PODS[0]))
    world.book.acked(PODS[1], world.version(PODS[1]))
    world.book.acked(PODS[2], "an-older-version")
    status = world.route()
    assert status["sidecars"]["summary"] == "2/3"
    assert conditions(status)["Synced"] == ("False", "Syncing", "2/3 sidecars run the current table")
    assert status["tableVersion"] == world.version(PODS[0])[:16]
    world.book.acked(PODS[2], world.version(PODS[2]))
    status = world.route()
    assert conditions(status)["Synced"][:2] == ("True", "AllSynced") and status["sidecars"]["synced"] == 3
    world.book.disconnected(PODS[2])
    assert world.route()["sidecars"]["summary"] == "2/2"


def test_a_route_change_unsyncs_until_the_new_version_is_acked() -> None:
    world = World()
    world.connect_all()
    for p in PODS:
        world.book.acked(p, world.version(p))
    assert conditions(world.route())["Synced"][0] == "True"
    world.index.put(route(model="gpt-4o", budget_usd=10.0, generation=2))
    status = world.route()
    assert conditions(status)["Synced"][0] == "False" and status["observedGeneration"] == 2


def test_a_nack_is_named_in_status_and_its_reason_goes_to_a_warning_event_without_secrets() -> None:
    world = World()
    world.connect_all()
    version = world.version(PODS[1])
    world.book.nacked(PODS[1], version, f"table.credentials.openai-main: bad key {KEY}")
    events = world.compute()
    status = world.statuses[ROUTE]
    assert status["sidecars"]["nacked"] == ["chat-1"]
    assert conditions(status)["Synced"][:2] == ("False", "Rejected")
    nacks = [e for e in events if e.reason == "TableRejected"]
    assert [(e.involved, e.type) for e in nacks] == [(ROUTE, "Warning")]
    assert "chat-1" in nacks[0].message and KEY not in nacks[0].message and "[redacted]" in nacks[0].message
    assert not [e for e in world.compute() if e.reason == "TableRejected"]  # posted once
    world.book.acked(PODS[1], version)
    assert world.route()["sidecars"]["nacked"] == []


def test_the_synced_condition_says_why_a_sidecar_refused_the_table_without_its_keys() -> None:
    """Events expire (an hour by default) and kubectl get -o yaml does not show them: the reason a
    sidecar refused the table stays in the condition as long as the refusal does."""
    world = World()
    world.connect_all()
    version = world.version(PODS[2])
    world.book.nacked(PODS[2], version, f"table.documents: LLMRoute/chat: spec.x: unknown field (key {KEY})")
    world.compute()
    world.compute()  # long after the Event went out
    synced = conditions(world.statuses[ROUTE])["Synced"]
    assert synced[:2] == ("False", "Rejected")
    assert "refused by chat-2: table.documents: LLMRoute/chat: spec.x: unknown field" in synced[2]
    assert KEY not in synced[2] and "[redacted]" in synced[2]


def test_the_synced_condition_names_a_few_refusing_pods_and_keeps_room_for_the_reason() -> None:
    pods = [PodRef("team-a", f"chat-{i}") for i in range(3, 40)]
    world = World(*(pod(p.name) for p in pods))
    for p in (*PODS, *pods):
        world.book.connected(p)
        world.book.nacked(p, world.version(p), "table.documents: LLMRoute/chat: spec.x: unknown field")
    message = conditions(world.route())["Synced"][2]
    assert "refused by chat-0, chat-1, chat-10, chat-11, chat-12 and 35 more: table.documents:" in message
    assert len(world.statuses[ROUTE]["sidecars"]["nacked"]) == 40


@pytest.mark.parametrize(("bad", "reason", "path", "refs"), [
    (route(generation=2, defaultTier="slow"), "Invalid", "spec.defaultTier", "True"),
    (route(generation=2, provider_name="nope"), "UnresolvedRefs", "spec.tiers.fast.targets[0].provider", "False"),
])
def test_a_bad_route_is_not_accepted_with_its_field_path_and_one_warning(
        bad: dict[str, Any], reason: str, path: str, refs: str) -> None:
    world = World()
    world.compute()
    world.index.put(bad)
    events = world.compute()
    c = conditions(world.statuses[ROUTE])
    assert c["Accepted"][:2] == ("False", reason)
    assert path in c["Accepted"][2] and "the previous accepted version keeps serving" in c["Accepted"][2]
    assert c["ResolvedRefs"][0] == refs
    assert world.statuses[ROUTE]["observedGeneration"] == 2
    assert [(e.involved, e.reason) for e in events] == [(ROUTE, reason)]
    assert world.compute() == []


@pytest.mark.parametrize(("spent", "warning", "exceeded", "alerts"), [
    ([1.0, 2.0], "False", "False", []),
    ([4.0, 4.0], "True", "False", ["BudgetWarning"]),
    ([6.0, 4.5], "True", "True", ["BudgetExceeded", "BudgetWarning"]),
])
def test_spend_is_summed_over_sidecars_and_alerts_at_thresholds(
        spent: list[float], warning: str, exceeded: str, alerts: list[str]) -> None:
    world = World()
    world.compute()
    for p, usd in zip(PODS, spent, strict=False):
        world.spend(p, usd)
    events = world.compute()
    status = world.statuses[ROUTE]
    assert status["spend"]["periodUSD"] == pytest.approx(sum(spent))
    assert status["spend"]["percentOfBudget"] == pytest.approx(10 * sum(spent), abs=0.1)
    assert status["spend"]["periodStart"] == "2026-05-28T00:00:00Z"
    c = conditions(status)
    assert (c["BudgetWarning"][0], c["BudgetExceeded"][0]) == (warning, exceeded)
    assert sorted(e.reason for e in events) == alerts and all(e.type == "Warning" for e in events)


def test_a_budget_is_not_called_exceeded_or_alerting_before_it_is() -> None:
    """The percentage shown is rounded; the thresholds are compared with what was spent."""
    world = World()
    world.spend(PODS[0], 7.996)  # 79.96 % shows as 80.0
    c = conditions(world.route())
    assert world.statuses[ROUTE]["spend"]["percentOfBudget"] == 80.0 and c["BudgetWarning"][0] == "False"
    world.spend(PODS[0], 2.0035)  # 99.995 % shows as 100.0
    c = conditions(world.route())
    assert world.statuses[ROUTE]["spend"]["percentOfBudget"] == 100.0
    assert (c["BudgetWarning"][0], c["BudgetExceeded"][0]) == ("True", "False")
    world.spend(PODS[0], 0.01)
    assert conditions(world.route())["BudgetExceeded"][0] == "True"


def test_spend_starts_again_in_a_new_period() -> None:
    world = World()
    world.spend(PODS[0], 9.0)
    assert world.route()["spend"]["percentOfBudget"] == 90.0
    world.now += 86_400
    assert world.route()["spend"] == {"periodUSD": 0.0, "percentOfBudget": 0.0, "periodStart": "2026-05-29T00:00:00Z"}


def test_spend_read_back_after_a_restart_counts_in_the_same_period() -> None:
    world = World()
    world.book.seed_spend("team-a", "chat", 1_779_926_400.0, 3.0)  # 2026-05-28T00:00:00Z
    world.spend(PODS[0], 1.0)
    assert world.route()["spend"]["periodUSD"] == 4.0


MONTH_BUDGET = {"limitUSD": 10.0, "period": "month", "alertAtPercent": 50}
MAY = 1_777_593_600.0  # 2026-05-01T00:00:00Z, the month of DAY0


def test_a_month_budgets_spend_read_back_survives_reports_that_come_before_the_first_status_pass() -> None:
    """After an operator restart the sidecars' reports arrive as soon as the hub is up: before the route's
    period is known (the first status pass) they must not restart the spend in the wrong period."""
    world = World(route(budget=MONTH_BUDGET))
    world.book.seed_spend("team-a", "chat", MAY, 6.0)
    world.spend(PODS[0], 1.0)
    assert world.route()["spend"] == {"periodUSD": 7.0, "percentOfBudget": 70.0, "periodStart": "2026-05-01T00:00:00Z"}


def test_spend_read_back_after_reports_that_came_first_counts_both_and_alerts_no_second_time() -> None:
    """The hub serves sidecars before kopf has listed the routes whose status holds the spend so far."""
    world = World(route(budget=MONTH_BUDGET))
    world.spend(PODS[0], 1.0)
    world.book.seed_spend("team-a", "chat", MAY, 6.0)
    warned = {"type": "BudgetWarning", "status": "True", "reason": "AlertThresholdReached",
              "lastTransitionTime": "2026-05-20T00:00:00Z"}
    world.statuses[ROUTE] = {"spend": {"periodUSD": 6.0, "percentOfBudget": 60.0,
                                       "periodStart": "2026-05-01T00:00:00Z"}, "conditions": [warned]}
    events = world.compute()
    assert world.statuses[ROUTE]["spend"]["periodUSD"] == 7.0
    assert [e.reason for e in events if e.reason.startswith("Budget")] == []


def failing(world: World, p: PodRef, requests: int, failures: int) -> None:
    world.book.usage(p, {"type": "usage", "interval": 10, "targets": {
        "openai-main/gpt-4o-mini@eu-west-1": {"requests": requests, "failures": failures,
                                              "errors": {"rate_limited": failures}}}})


def test_a_provider_failing_across_sidecars_is_degraded_until_the_window_passes() -> None:
    world = World()
    world.compute()
    failing(world, PODS[0], 4, 3)
    failing(world, PODS[1], 4, 3)
    events = world.compute()
    provider_c = conditions(world.statuses[PROVIDER])["Degraded"]
    assert provider_c[:2] == ("True", "TargetsFailing")
    assert provider_c[2] == "openai-main/gpt-4o-mini@eu-west-1: 6 of 8 failed (rate_limited 6)"
    assert world.statuses[ROUTE]["degradedProviders"] == ["openai-main"]
    assert conditions(world.statuses[ROUTE])["Degraded"][0] == "True"
    assert sorted((e.involved[0], e.reason) for e in events) == [("LLMProvider", "Degraded"), ("LLMRoute", "Degraded")]
    world.now += 121
    world.compute()
    assert conditions(world.statuses[PROVIDER])["Degraded"][0] == "False"


def test_a_provider_failing_in_an_experiment_arm_degrades_the_route() -> None:
    """An experiment sends part of a tier's traffic to its own targets: when their provider fails across
    sidecars, the route's requests fail over too, and its status must say which provider is degraded."""
    arm = {"name": "try-b", "tier": "fast", "percent": 20, "targets": [{"provider": "provider-b", "model": "m"}]}
    world = World(provider("provider-b"), route(budget_usd=10.0, experiments=[arm]))
    world.compute()
    for p in PODS[:2]:
        world.book.usage(p, {"type": "usage", "interval": 10, "targets": {
            "provider-b/m@eu-west-1": {"requests": 4, "failures": 3, "errors": {"server_error": 3}}}})
    world.compute()
    assert world.statuses[ROUTE]["degradedProviders"] == ["provider-b"]
    assert conditions(world.statuses[ROUTE])["Degraded"][:2] == ("True", "ProviderFailing")


@pytest.mark.parametrize(("requests", "failures", "degraded"), [(100, 10, False), (6, 4, False), (10, 5, True)])
def test_degraded_needs_enough_failures_and_a_high_ratio(requests: int, failures: int, degraded: bool) -> None:
    world = World()
    failing(world, PODS[0], requests, failures)
    world.compute()
    assert (conditions(world.statuses[PROVIDER])["Degraded"][0] == "True") is degraded


def test_provider_status_names_regions_and_the_routes_using_it() -> None:
    world = World()
    world.compute()
    status = world.statuses[PROVIDER]
    assert status["regions"] == "us-east-1,eu-west-1" and status["routes"] == ["chat"]
    assert conditions(status)["Accepted"][0] == "True" and status["observedGeneration"] == 1


def test_a_route_whose_pods_table_does_not_compile_is_not_synced_and_says_why() -> None:
    """Each resource is judged on its own, but a pod's table joins them: a provider that stops listing a
    model one route uses leaves every pod of that route on its previous table. A route added for those
    pods then runs nowhere; it must not say Synced 1/1 (kubectl wait would pass) but what keeps it out."""
    models = [{"name": "gpt-4o-mini"}, {"name": "gpt-4o"}]
    world = World(provider(models=models))
    world.connect_all()
    for p in PODS:
        world.book.acked(p, world.version(p))
    world.index.put(provider(generation=2, models=[{"name": "gpt-4o"}]))
    world.index.put(route("batch", model="gpt-4o"))
    world.compute()
    batch = world.statuses[("LLMRoute", "team-a", "batch")]
    synced = conditions(batch)["Synced"]
    assert synced[:2] == ("False", "TableInvalid"), synced
    assert "3 of 3 sidecars keep their previous table" in synced[2]
    assert "LLMRoute/chat: spec.tiers.fast.targets[0].model: model 'gpt-4o-mini' is not listed" in synced[2]
    assert batch["sidecars"]["synced"] == 0 and batch["sidecars"]["summary"] == "0/3"


def test_a_sidecar_that_left_is_forgotten_so_pod_churn_does_not_grow_the_book() -> None:
    """Deployments roll: pods come and go by the thousand. What the book knew of a pod whose stream
    closed counts for nothing (status counts connected sidecars; a returning one says hello again)."""
    world = World()
    for i in range(100):
        p = PodRef("team-a", f"gone-{i}")
        world.book.connected(p)
        world.book.pushed(p, "v1")
        world.book.nacked(p, "v1", "bad")
        world.book.acked(p, "v0")
        world.book.disconnected(p)
    assert (world.book.acks, world.book.nacks, world.book.connected_pods) == ({}, {}, set())
    assert world.book.pending_events  # the NACKs' Warnings still go out


def test_an_unchanged_world_computes_the_same_status_later() -> None:
    world = World()
    world.connect_all()
    first = dict(world.route())
    world.now += 30
    assert world.route() == first


def test_a_transition_moves_last_transition_time() -> None:
    world = World()
    before = {c["type"]: c["lastTransitionTime"] for c in world.route()["conditions"]}
    world.now += 60
    world.connect_all()
    for p in PODS:
        world.book.acked(p, world.version(p))
    after = {c["type"]: c["lastTransitionTime"] for c in world.route()["conditions"]}
    assert after["Synced"] != before["Synced"] and after["Accepted"] == before["Accepted"]


def test_no_status_or_event_ever_holds_a_credential() -> None:
    world = World()
    world.connect_all()
    world.book.nacked(PODS[0], world.version(PODS[0]), f"it was {KEY}")
    world.index.put(provider(generation=2, type="nope"))
    events = world.compute()
    text = json.dumps([world.statuses[k] for k in sorted(world.statuses)]) + repr(events)
    assert KEY not in text and "TableRejected" in text


OPAQUE_KEY = "0f3a9c5e7b1d4f6a8c0e2b4d6f8a1c3e"  # an Azure-style key: no shape to know it by, only its value


@pytest.mark.parametrize(("pasted", "key"), [
    ("sk-proj-Abcdef1234567890ghijKLMN", "Abcdef1234567890ghijKLMN"),
    ("generativelanguage.googleapis.com/v1beta?key=AIzaSyA1234567890abcdefghijklmnopqrs", "1234567890abcdefghij"),
    (OPAQUE_KEY, OPAQUE_KEY[4:-4]),
])
def test_a_key_pasted_into_a_providers_url_is_never_echoed_in_status_or_events(pasted: str, key: str) -> None:
    """The CRD checks url with CEL so that its error never echoes a key pasted there; where CEL does not
    run (before 1.25) the operator's own parser refuses it, quoting it: that text goes to status and Events."""
    world = World(secret(key=OPAQUE_KEY))
    world.compute()
    world.index.put(provider(generation=2, endpoints=[{"region": "eu-west-1", "url": pasted}]))
    events = world.compute()
    text = json.dumps([world.statuses[k] for k in sorted(world.statuses)]) + repr(events)
    assert "spec.endpoints[0].url: expected an http:// or https:// URL" in text and "[redacted]" in text
    assert key not in text


def test_pods_refusing_one_table_for_one_reason_make_one_event_naming_them() -> None:
    """Sidecars too old for a new table all refuse it: one Warning for the route, not one per pod."""
    world = World()
    world.connect_all()
    for ref in PODS:
        world.book.nacked(ref, world.version(ref), "table.documents: LLMRoute/chat: spec.x: unknown field 'x'")
    [nack] = [e for e in world.compute() if e.reason == "TableRejected"]
    assert nack.message.startswith(f"{len(PODS)} pods ({', '.join(sorted(p.name for p in PODS))}) refused table ")
    assert nack.message.endswith("unknown field 'x'")


def test_a_nack_reason_quoting_a_key_of_any_shape_reaches_no_event() -> None:
    world = World()
    world.connect_all()
    shaped = "sk-ant-api03-Zyxwvu9876543210abcdefGHIJ"
    world.book.nacked(PODS[0], world.version(PODS[0]), f"table.documents: LLMProvider/x: it said {shaped}")
    events = world.compute()
    [nack] = [e for e in events if e.reason == "TableRejected"]
    assert "Zyxwvu9876543210" not in nack.message and "[redacted]" in nack.message


def test_no_condition_has_an_empty_message_which_the_api_server_takes_for_null() -> None:
    world = World()
    world.compute()
    for status in world.statuses.values():
        assert all(c.get("message", None) != "" for c in status["conditions"])
        assert all(c["reason"] for c in status["conditions"])


def test_ack_latency_runs_from_the_push_to_the_ack_of_that_version() -> None:
    world = World()
    world.book.pushed(PODS[0], "v1")
    world.now += 0.2
    world.book.acked(PODS[0], "v0")  # an older version: not this push's ACK
    world.now += 0.1
    world.book.acked(PODS[0], "v1")
    latency = world.book.ack_latency
    assert latency.count == 1 and abs(latency.total - 0.3) < 1e-6
    assert dict(zip(latency.bounds, latency.counts, strict=True))[0.25] == 0
    assert dict(zip(latency.bounds, latency.counts, strict=True))[0.5] == 1
    assert world.book.push_count == 1 and world.book.ack_count == 2


def test_a_refused_token_naming_an_existing_pod_makes_one_warning_on_that_pod_per_interval() -> None:
    world = World()
    chat = PODS[0]
    world.book.refused("127.0.0.1: token not authenticated: Token has expired.", chat)
    [event] = world.compute()
    assert event.involved == ("Pod", "team-a", "chat-0") and (event.type, event.reason) == ("Warning", "SidecarRefused")
    assert event.message.endswith("token not authenticated: Token has expired.")
    for _ in range(3):  # a sidecar retrying with the same token: counted, one Event per interval
        world.book.refused("127.0.0.1: token not authenticated: Token has expired.", chat)
        assert world.compute() == []
    world.now += REFUSAL_EVENT_INTERVAL_S + 1
    [event] = world.compute()
    assert "(3 times since the last such Event)" in event.message
    assert world.compute() == [] and world.book.refusals == 4


def test_a_refused_token_naming_no_existing_pod_is_only_counted() -> None:
    world = World()
    world.book.refused("127.0.0.1: token not authenticated", PodRef("team-a", "no-such-pod"))
    world.book.refused("127.0.0.1: no bearer token", None)
    assert world.compute() == [] and world.book.refusals == 2 and world.book.pending_refusals == {}


def test_refusals_waiting_for_their_event_are_bounded() -> None:
    book = StatusBook(clock=lambda: DAY0)
    for i in range(MAX_REFUSED_PODS + 50):
        book.refused("forged", PodRef("team-a", f"p-{i}"))
    assert len(book.pending_refusals) == MAX_REFUSED_PODS and book.refusals == MAX_REFUSED_PODS + 50


UNPRICED = [{"name": "gpt-4o-mini"}, {"name": "gpt-4o", "pricing": {"inputPerMTok": 2.5, "outputPerMTok": 10.0}}]


def test_a_route_whose_models_have_no_pricing_says_so_once_as_a_warning_and_clears_when_priced() -> None:
    """A budget that never counts a model's answers is a silent failure: the route says which, and why."""
    world = World(provider(models=UNPRICED))

    events = world.compute()
    assert conditions(world.statuses[ROUTE])["Priced"] == (
        "False", "PricingMissing", "openai-main/gpt-4o-mini has no pricing: its budget never counts them; give "
        "the model's pricing in its LLMProvider (pricing of zeros for a free model)")
    assert [(e.type, e.reason) for e in events if e.involved == ROUTE] == [("Warning", "PricingMissing")]
    assert not [e for e in world.compute() if e.involved == ROUTE]  # said once, not at every pass

    world.index.put(provider(generation=2))  # the default models are priced
    assert conditions(world.route())["Priced"][:2] == ("True", "AllPriced")


def test_an_experiment_arm_on_an_unlisted_model_counts_as_unpriced() -> None:
    """A provider that lists no models takes any model, and prices none of them."""
    arm = {"name": "try-b", "tier": "fast", "percent": 20, "targets": [{"provider": "provider-b", "model": "big"}]}
    world = World(provider("provider-b", models=[]), route(budget_usd=10.0, experiments=[arm], generation=2))

    status, reason, message = conditions(world.route())["Priced"]
    assert (status, reason) == ("False", "PricingMissing") and message.startswith("provider-b/big has no pricing")
