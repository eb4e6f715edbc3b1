"""A request whose tier was exhausted and that a fallback tier answered is that tier's, wherever a
request's tier is reported: its `x-llmroute-tier`, its access line, `/status`'s decision and spend,
the request and cost metrics, its SERVER span, and each attempt's CLIENT span (the tier its target was
taken from). The chosen tier is kept as `fallback_from`. A request every tier failed is reported in the
tier last tried; each attempt's billed cost is its own tier's spend. A request stays in its
experiment's arm whatever tier answered it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.request import urlopen

import anthropic
import openai
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.server.telemetry import Telemetry, TelemetrySettings
from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.table import TargetId
from tests.proxy.documents import QUICK_FALLBACK, route, target
from tests.proxy.server.spending import ended, status
from tests.proxy.server.tracing import spans_from_now
from tests.proxy.stack import CLAUDE, GEM, Stack

CLAUDE_ID, GEM_ID = TargetId("claude/claude-sonnet-4-5@here"), TargetId("gem/gemini-2.5-flash@here")
CONFIG = [
    CLAUDE, GEM,
    route("tiered", {"smart": [target("claude", "claude-sonnet-4-5")], "cheap": [target("gem", "gemini-2.5-flash")]},
          default_tier="smart",
          fallback={**QUICK_FALLBACK, "fallbackTiers": ["smart", "cheap"]},  # each tier falls back on the other
          outlierDetection={"consecutiveFailures": 5, "baseEjection": "30s"}),
    route("armed", {"smart": [target("gem", "gemini-2.5-flash")], "cheap": [target("gem", "gemini-2.5-flash")]},
          default_tier="smart",
          experiments=[{"name": "challenger", "tier": "smart", "percent": 100,
                        "targets": [target("claude", "claude-sonnet-4-5")]}],
          fallback={"maxAttempts": 3, "perTryTimeout": "3s", "fallbackTiers": ["cheap"]},
          outlierDetection={"consecutiveFailures": 5, "baseEjection": "30s"}),
]
HELLO: Any = [{"role": "user", "content": "hello"}]
SPANS = InMemorySpanExporter()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    telemetry = Telemetry(TelemetrySettings(), span_exporter=SPANS)
    with Stack(tmp_path_factory.mktemp("fallback-tiers"), config=CONFIG, telemetry=telemetry) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_spend(stack: Stack) -> None:
    """Each test reads the spend of its own requests alone."""
    stack.call(stack.sidecar.spend.clear)


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    caplog.set_level(logging.INFO, "llmroute.access")
    return lambda: [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "llmroute.access"]


@pytest.fixture
def spans(stack: Stack) -> Callable[[], list[ReadableSpan]]:
    """The spans finished since the test began."""
    return spans_from_now(stack, SPANS)


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)


def by_tier(stack: Stack) -> dict[tuple[str, str], float]:
    """The request and cost metrics' points by (metric, `llmroute_tier`), summed."""
    with urlopen(stack.admin_url + "/metrics") as response:
        text = response.read().decode()
    points: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("llmroute_requests_total", "llmroute_cost_usd_total"):
                key = (sample.name, sample.labels["llmroute_tier"])
                points[key] = points.get(key, 0.0) + sample.value
    return points


@pytest.fixture
def metric(stack: Stack) -> Callable[[str], dict[str, float]]:
    """What a metric (`llmroute_requests_total`, `llmroute_cost_usd_total`) gained since the test began, by tier."""
    before = by_tier(stack)

    def gained(name: str) -> dict[str, float]:
        return {tier: value - before.get((metric, tier), 0.0) for (metric, tier), value in by_tier(stack).items()
                if metric == name and value != before.get((metric, tier), 0.0)}
    return gained


def tiers_of(found: list[ReadableSpan]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The SERVER span's attributes, and each CLIENT span's (target, tier) in the order they started."""
    server = next(span for span in found if span.name.startswith("POST "))
    attempts = sorted((span for span in found if span is not server), key=lambda span: span.start_time or 0)
    return dict(server.attributes or {}), [(str((span.attributes or {})["llmroute.target"]),
                                            str((span.attributes or {})["llmroute.tier"])) for span in attempts]


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_an_answer_from_a_fallback_tier_is_that_tiers_everywhere_it_is_reported(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], spans: Callable[[], list[ReadableSpan]],
        metric: Callable[[str], dict[str, float]], stream: bool) -> None:
    stack.call(lambda: stack.faults["claude"].always(Fault(FaultKind.STATUS, status=529)))
    raw = client(stack).chat.completions.with_raw_response.create(model="smart", messages=HELLO, stream=stream)
    if stream:
        list(raw.parse())
        ended(stack)  # its line and metrics are written a moment after the client read the last byte

    assert (raw.headers["x-llmroute-tier"], raw.headers["x-llmroute-provider"]) == ("cheap", "gem")
    [line] = access()
    assert (line["tier"], line["fallback_from"], line["rule"], line["target"]) == ("cheap", "smart", "model", GEM_ID)
    page = status(stack)
    decision = page["decisions"][0]
    assert (decision["tier"], decision["fallback_from"]) == ("cheap", "smart")
    assert set(page["spend"]["tiers"]) == {"tiered/cheap"}  # Claude's 529 was billed nothing
    assert page["spend"]["tiers"]["tiered/cheap"]["cost_usd"] == pytest.approx(line["cost_usd"])
    assert metric("llmroute_requests_total") == {"cheap": 1}
    assert metric("llmroute_cost_usd_total") == {"cheap": pytest.approx(line["cost_usd"])}
    server, attempts = tiers_of(spans())
    assert (server["llmroute.tier"], server["llmroute.fallback_from"]) == ("cheap", "smart")
    assert attempts == [(CLAUDE_ID, "smart"), (GEM_ID, "cheap")]


def test_an_answer_from_the_chosen_tier_has_no_fallback_from(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], spans: Callable[[], list[ReadableSpan]]) -> None:
    raw = client(stack).chat.completions.with_raw_response.create(model="smart", messages=HELLO)

    assert raw.headers["x-llmroute-tier"] == "smart"
    [line] = access()
    assert line["tier"] == "smart" and "fallback_from" not in line
    assert "fallback_from" not in status(stack)["decisions"][0]
    server, attempts = tiers_of(spans())
    assert server["llmroute.tier"] == "smart" and "llmroute.fallback_from" not in server
    assert attempts == [(CLAUDE_ID, "smart")]


def test_a_request_every_tier_failed_is_reported_in_the_tier_last_tried(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], spans: Callable[[], list[ReadableSpan]],
        metric: Callable[[str], dict[str, float]]) -> None:
    stack.call(lambda: [stack.faults[name].always(Fault(FaultKind.STATUS, status=500)) for name in ("claude", "gem")])
    with pytest.raises(openai.APIStatusError) as failed:
        client(stack).chat.completions.create(model="smart", messages=HELLO)

    assert failed.value.status_code == 502
    assert failed.value.response.headers["x-llmroute-tier"] == "cheap"
    [line] = access()
    assert (line["tier"], line["fallback_from"]) == ("cheap", "smart")
    assert [attempt["target"] for attempt in line["tried"]][:2] == [CLAUDE_ID, GEM_ID]
    assert metric("llmroute_requests_total") == {"cheap": 1}
    server, _ = tiers_of(spans())
    assert (server["llmroute.tier"], server["llmroute.fallback_from"]) == ("cheap", "smart")


def test_a_billed_failure_is_its_own_tiers_spend_and_the_answer_the_fallback_tiers(
        stack: Stack, metric: Callable[[str], dict[str, float]]) -> None:
    """Gemini bills an empty answer (the prompt and its thoughts): the `cheap` tier spent that, though the
    answer came from `smart`, its fallback."""
    stack.call(lambda: stack.faults["gem"].next(Fault(FaultKind.EMPTY_ANSWER)))
    raw = client(stack).chat.completions.with_raw_response.create(model="cheap", messages=HELLO)

    assert raw.headers["x-llmroute-tier"] == "smart"
    spend = status(stack)["spend"]
    billed, answered = spend["tiers"]["tiered/cheap"], spend["tiers"]["tiered/smart"]
    assert billed["cost_usd"] > 0 and billed["cost_usd"] == pytest.approx(spend["targets"][GEM_ID]["cost_usd"])
    assert answered["cost_usd"] > 0 and answered["cost_usd"] == pytest.approx(spend["targets"][CLAUDE_ID]["cost_usd"])
    assert billed["cost_usd"] + answered["cost_usd"] == pytest.approx(float(raw.headers["x-llmroute-cost-usd"]))
    costs = metric("llmroute_cost_usd_total")
    assert costs == {"cheap": pytest.approx(billed["cost_usd"]), "smart": pytest.approx(answered["cost_usd"])}


def test_a_count_for_a_fallback_tiers_target_names_that_tier_in_its_span(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], spans: Callable[[], list[ReadableSpan]]) -> None:
    """The chosen tier's only target has its circuit open: the count is asked of the fallback tier's."""
    tiered = stack.sidecar.table.route("tiered") if stack.sidecar.table else None
    assert tiered is not None
    stack.call(lambda: stack.sidecar.health.on_failure(CLAUDE_ID, FailureKind.AUTH, stack.sidecar.clock(), None,
                                                        tiered.outlier_detection, (CLAUDE_ID,)))
    api = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
    raw = api.messages.with_raw_response.count_tokens(model="smart", messages=HELLO)

    assert (raw.headers["x-llmroute-tier"], raw.headers["x-llmroute-provider"]) == ("cheap", "gem")
    [line] = access()
    assert (line["tier"], line["fallback_from"], line["token_count"]) == ("cheap", "smart", "exact")
    server, attempts = tiers_of(spans())
    assert (server["llmroute.tier"], server["llmroute.fallback_from"]) == ("cheap", "smart")
    assert attempts == [(GEM_ID, "cheap")]


def test_a_request_stays_in_its_experiment_arm_when_a_fallback_tier_answers(
        stack: Stack, access: Callable[[], list[dict[str, Any]]]) -> None:
    """Every `smart` request of route `armed` is the challenger's, whose one target (Claude) fails: the
    `cheap` tier answers, and the request is still reported in the challenger's arm, its cost included."""
    stack.call(lambda: stack.faults["claude"].always(Fault(FaultKind.STATUS, status=529)))
    raw = client(stack).chat.completions.with_raw_response.create(
        model="smart", messages=HELLO, extra_headers={"x-llmroute-route": "armed"})

    assert (raw.headers["x-llmroute-tier"], raw.headers["x-llmroute-experiment"]) == ("cheap", "challenger")
    [line] = access()
    assert (line["experiment"], line["tier"], line["fallback_from"]) == ("challenger", "cheap", "smart")
    assert [attempt["target"] for attempt in line["tried"]] == [CLAUDE_ID, GEM_ID]
    spend = status(stack)["spend"]
    assert line["cost_usd"] > 0
    assert spend["experiments"]["armed/challenger"]["cost_usd"] == pytest.approx(line["cost_usd"])
