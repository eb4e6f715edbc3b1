"""`POST /v1/messages/count_tokens`, as the official `anthropic` SDK calls it (Claude Code through
`client.beta.messages.count_tokens`, every turn).

The count is asked where the request would be sent: Anthropic and Gemini count it exactly, with the
target's model and key; an OpenAI target's count is the sidecar's own estimate, and so is the count
of a target that fails. Counting is never charged, but it is seen as every request is: an access
line, a SERVER span (with the target's CLIENT span when it is asked), and in flight for the drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any
from unittest.mock import ANY
from urllib.request import urlopen

import aiohttp
import anthropic
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.routing.rules import RequestFacts
from llmroute_proxy.server.runner import drain
from llmroute_proxy.server.telemetry import Telemetry, TelemetrySettings
from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.table import Target, TargetId
from tests.proxy.server import spending
from tests.proxy.server.conftest import last_request, sim_requests
from tests.proxy.server.spending import SettledLimits
from tests.proxy.stack import KEYS, Stack

SYSTEM = "Be brief."
HELLO: Any = [{"role": "user", "content": "hi there, how are you?"}]
Count = Callable[..., Any]
SPANS = InMemorySpanExporter()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    telemetry = Telemetry(TelemetrySettings(), span_exporter=SPANS)
    with Stack(tmp_path_factory.mktemp("count"), config=spending.CONFIG, telemetry=telemetry) as running:
        yield running


def client(stack: Stack, route: str = "main") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="app-key-never-forwarded", max_retries=0,
                               default_headers={"x-llmroute-route": route})


def plain(api: anthropic.Anthropic) -> Count:
    return api.messages.with_raw_response.count_tokens


def beta(api: anthropic.Anthropic) -> Count:
    return api.beta.messages.with_raw_response.count_tokens


COUNTERS = [pytest.param(plain, id="messages"), pytest.param(beta, id="beta")]


def estimate(messages: list[Any], system: str | None = None) -> int:
    """The sidecar's own estimate of a Messages prompt (the canonical request's, as routing takes it)."""
    canonical = ([{"role": "system", "content": system}] if system else []) + messages
    return RequestFacts("", canonical, {}, False, None).prompt_tokens


@pytest.mark.parametrize("count", COUNTERS)
@pytest.mark.parametrize(("tier", "sim"), [("anthropic", "claude"), ("gemini", "gem")])
def test_anthropic_and_gemini_count_exactly_with_the_targets_model_and_key(
        stack: Stack, count: Count, tier: str, sim: str) -> None:
    raw = count(client(stack))(model=tier, system=SYSTEM, messages=HELLO)
    counted = raw.parse()
    sent = last_request(stack, sim)
    billed = client(stack).messages.create(model=tier, max_tokens=100, system=SYSTEM, messages=HELLO)

    assert counted.input_tokens == billed.usage.input_tokens  # the provider's own figure
    assert counted.input_tokens != estimate(HELLO, SYSTEM)
    assert raw.headers["x-llmroute-token-count"] == "exact"
    assert (raw.headers["x-llmroute-route"], raw.headers["x-llmroute-tier"], raw.headers["x-llmroute-provider"]) == (
        "main", tier, sim)
    if sim == "claude":
        assert sent.path == "/v1/messages/count_tokens"
        assert sent.body == {"model": "claude-sonnet-4-5", "system": SYSTEM, "messages": HELLO}
        assert sent.headers["x-api-key"] == KEYS["claude"]
    else:
        assert sent.path == "/v1beta/models/gemini-2.5-flash:countTokens"
        whole = sent.body["generateContentRequest"]
        assert whole["model"] == "models/gemini-2.5-flash"
        assert whole["systemInstruction"] == {"parts": [{"text": SYSTEM}]}
        assert sent.headers["x-goog-api-key"] == KEYS["gem"]


@pytest.mark.parametrize("count", COUNTERS)
def test_an_openai_tier_gets_the_sidecars_estimate_which_grows_with_the_prompt(stack: Stack, count: Count) -> None:
    longer: Any = [{"role": "user", "content": "hi there, how are you? " * 40}]
    short = count(client(stack))(model="openai", messages=HELLO)
    long = count(client(stack))(model="openai", messages=longer)

    assert short.headers["x-llmroute-token-count"] == long.headers["x-llmroute-token-count"] == "estimated"
    assert short.headers["x-llmroute-provider"] == "oai" and short.headers["x-llmroute-tier"] == "openai"
    assert 0 < short.parse().input_tokens == estimate(HELLO) < long.parse().input_tokens == estimate(longer)
    assert sim_requests(stack, "oai") == 0


def test_a_request_is_counted_where_the_rules_would_send_it(stack: Stack) -> None:
    """The `gemini-word` rule picks the gemini tier for `auto`, as it would for the message itself."""
    raw = plain(client(stack))(model="auto", messages=[{"role": "user", "content": "ask gemini please"}])

    assert raw.headers["x-llmroute-tier"] == "gemini" and raw.headers["x-llmroute-token-count"] == "exact"
    assert sim_requests(stack, "gem") == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"model": "anthropic"}, "messages"),
    ({"model": "anthropic", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": HELLO}, "model"),
])
def test_a_bad_body_is_refused_naming_the_field_and_nothing_is_asked(
        stack: Stack, body: dict[str, Any], field: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(stack).post("/v1/messages/count_tokens?beta=true", body=body, cast_to=object)

    assert refused.value.status_code == 400
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and field in error["message"]
    assert sum(sim_requests(stack, name) for name in stack.sims) == 0


FAILURES = [
    pytest.param(Fault(FaultKind.STATUS, status=529), id="overloaded"),
    pytest.param(Fault(FaultKind.STATUS, status=429, retry_after=1), id="rate-limited"),
    pytest.param(Fault(FaultKind.STATUS, status=500), id="server-error"),
    pytest.param(Fault(FaultKind.STATUS, status=401, message="invalid x-api-key {key}", echo_key=True), id="key"),
    pytest.param(Fault(FaultKind.RESET), id="reset"),
    pytest.param(Fault(FaultKind.HANG), id="timeout"),
]


@pytest.mark.parametrize("fault", FAILURES)
def test_a_failing_anthropic_target_is_answered_the_estimate_and_keeps_its_circuit(
        stack: Stack, fault: Fault) -> None:
    stack.call(lambda: stack.faults["claude"].always(fault))
    outline = [plain(client(stack))(model="anthropic", messages=HELLO) for _ in range(3)]

    assert [raw.parse().input_tokens for raw in outline] == [estimate(HELLO)] * 3
    assert {raw.headers["x-llmroute-token-count"] for raw in outline} == {"estimated"}
    assert {raw.headers["x-llmroute-provider"] for raw in outline} == {"claude"}
    assert all(KEYS["claude"] not in raw.http_response.text for raw in outline)
    assert sim_requests(stack, "claude") == 3 and sim_requests(stack, "gem") == 0  # no failover
    claude = target_id(stack, "anthropic")
    assert stack.call(lambda: stack.sidecar.health.is_available(claude, stack.sidecar.clock()))


def test_the_clients_own_fault_comes_back_as_anthropic_said_it_without_the_key(stack: Stack) -> None:
    refusal = Fault(FaultKind.STATUS, status=400, code="invalid_request_error",
                    message="messages.0.content: too many images near {key}", echo_key=True)
    stack.call(lambda: stack.faults["claude"].next(refusal))
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(stack).messages.count_tokens(model="anthropic", messages=HELLO)

    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages.0.content: too many images near ")
    assert KEYS["claude"] not in refused.value.response.text
    assert refused.value.response.headers["x-llmroute-provider"] == "claude"


def test_an_open_circuit_is_passed_over_for_the_next_target_in_the_order(stack: Stack) -> None:
    oai, oai_b = target_id(stack, "ha", 0), target_id(stack, "ha", 1)
    route = stack.sidecar.table.route("main") if stack.sidecar.table else None
    assert route is not None
    stack.call(lambda: stack.sidecar.health.on_failure(oai, FailureKind.AUTH, stack.sidecar.clock(), None,
                                                        route.outlier_detection, (oai, oai_b)))
    raw = plain(client(stack))(model="ha", messages=HELLO)

    assert raw.headers["x-llmroute-provider"] == "oai-b"


def test_counting_spends_nothing_and_is_no_request(stack: Stack, limits: SettledLimits) -> None:
    """No budget, no tokens-per-minute admission, no request in the spend, the counters or the decisions."""
    before = recorded(stack)
    for route, tier in (("chat-ui", "fast"), ("claude-ui", "claude"), ("main", "gemini")):
        plain(client(stack, route))(model=tier, messages=HELLO)
        beta(client(stack, route))(model=tier, messages=HELLO)

    assert recorded(stack) == before
    assert limits.settled == []
    assert sim_requests(stack, "claude") == sim_requests(stack, "gem") == 2


def recorded(stack: Stack) -> tuple[Any, ...]:
    """What the sidecar records of the requests it serves: spend, budget, decisions, per-target
    counters, and the metrics of requests, attempts, tokens and cost."""
    def counters() -> tuple[int, dict[TargetId, int]]:
        sidecar = stack.sidecar
        return len(sidecar.decisions), {target: c.requests for target, c in sidecar.counters.items()}

    return spending.status(stack)["spend"], spending.budget(stack), stack.call(counters), request_metrics(stack)


REQUEST_METRICS = ("llmroute_requests_total", "llmroute_request_duration_seconds_count", "llmroute_requests_in_flight",
                   "llmroute_attempts_total", "llmroute_failovers_total", "llmroute_cost_usd_total",
                   "gen_ai_client_operation_duration_seconds_count", "gen_ai_client_token_usage_count")


def request_metrics(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urlopen(stack.admin_url + "/metrics") as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name in REQUEST_METRICS}


def target_id(stack: Stack, tier: str, index: int = 0) -> TargetId:
    return main_target(stack, tier, index).id


def main_target(stack: Stack, tier: str, index: int = 0) -> Target:
    table = stack.sidecar.table
    route = table.route("main") if table is not None else None
    assert route is not None
    return route.tiers[tier].targets[index]


# --- seen as every request is: the access log, the trace, the drain ------------------------------

PRIVATE = "my passport number is P1234567 and my key is sk-live-in-the-prompt"


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The access lines written since the test began."""
    caplog.set_level(logging.INFO, "llmroute.access")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "llmroute.access"]


@pytest.fixture
def spans(stack: Stack) -> Callable[[], dict[str, ReadableSpan]]:
    """The spans finished since the test began, by name (those of earlier tests flushed out first: the
    exporter is batched, so a span an earlier test ended may still be on its way)."""
    stack.sidecar.telemetry.flush()
    SPANS.clear()

    def finished() -> dict[str, ReadableSpan]:
        stack.sidecar.telemetry.flush()
        return {span.name: span for span in SPANS.get_finished_spans()}
    return finished


@pytest.mark.parametrize(("tier", "sim", "upstream_model", "how"), [
    ("anthropic", "claude", "claude-sonnet-4-5", "exact"),
    ("openai", "oai", "gpt-4o-mini", "estimated"),
])
def test_a_count_writes_one_access_line_of_where_it_was_counted_without_its_prompt(
        stack: Stack, access: Callable[[], list[str]], spans: Callable[[], dict[str, ReadableSpan]], tier: str,
        sim: str, upstream_model: str, how: str) -> None:
    plain(client(stack))(model=tier, system=PRIVATE, messages=[{"role": "user", "content": PRIVATE}])

    [line] = access()
    assert PRIVATE not in line and "P1234567" not in line and "sk-live" not in line
    server = spans()["POST /v1/messages/count_tokens"]
    asked = [{"target": target_id(stack, tier), "status": 200, "outcome": "ok", "ms": ANY}]
    tried = asked if how == "exact" else []  # the sidecar estimates an OpenAI count without asking
    assert orjson.loads(line) == {
        "route": "main", "model": tier, "tier": tier, "rule": "model", "experiment": None,
        "target": target_id(stack, tier), "provider": sim, "upstream_model": upstream_model, "stream": False,
        "attempts": len(tried), "tried": tried, "status": 200, "latency_ms": ANY, "input_tokens": None,
        "output_tokens": None, "cached_input_tokens": None, "cost_usd": None,
        "trace_id": format(server.context.trace_id, "032x"), "token_count": how}


def test_a_failing_count_shows_the_targets_failure_in_its_line_and_its_client_span(
        stack: Stack, access: Callable[[], list[str]], spans: Callable[[], dict[str, ReadableSpan]]) -> None:
    stack.call(lambda: stack.faults["claude"].next(Fault(FaultKind.STATUS, status=529)))
    raw = plain(client(stack))(model="anthropic", messages=HELLO)

    assert raw.headers["x-llmroute-token-count"] == "estimated"
    line = orjson.loads(access()[0])
    assert (line["status"], line["token_count"], line["target"]) == (200, "estimated", target_id(stack, "anthropic"))
    assert [(t["status"], t["outcome"]) for t in line["tried"]] == [(529, "overloaded")]
    found = spans()
    attempt = found["count_tokens claude-sonnet-4-5"].attributes or {}
    assert (attempt["error.type"], attempt["http.response.status_code"]) == ("overloaded", 529)
    assert (found["POST /v1/messages/count_tokens"].attributes or {})["llmroute.token_count"] == "estimated"


def test_a_refused_count_writes_its_line_and_span_with_its_400_and_no_prompt(
        stack: Stack, access: Callable[[], list[str]], spans: Callable[[], dict[str, ReadableSpan]]) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client(stack).post("/v1/messages/count_tokens", cast_to=object,
                           body={"model": "anthropic", "messages": [{"role": "robot", "content": PRIVATE}]})

    [line] = access()
    assert PRIVATE not in line
    entry = orjson.loads(line)
    assert (entry["route"], entry["status"], entry["token_count"], entry["target"], entry["attempts"]) == (
        "main", 400, "none", None, 0)
    assert entry["refused"] == "invalid_request"
    assert entry["model"] == ""  # a count's model is written once it is routed, a name the route knows
    server = spans()["POST /v1/messages/count_tokens"].attributes or {}
    assert (server["http.response.status_code"], server["error.type"], server["llmroute.token_count"]) == (
        400, "400", "none")


@pytest.mark.parametrize(("tier", "provider_name"), [("anthropic", "anthropic"), ("gemini", "gcp.gemini")])
def test_a_count_is_a_server_span_with_the_targets_count_as_its_client_span(
        stack: Stack, spans: Callable[[], dict[str, ReadableSpan]], tier: str, provider_name: str) -> None:
    plain(client(stack))(model=tier, messages=HELLO)

    found = spans()
    target = main_target(stack, tier)
    server, attempt = found["POST /v1/messages/count_tokens"], found[f"count_tokens {target.model}"]
    assert server.kind is SpanKind.SERVER and attempt.kind is SpanKind.CLIENT
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    assert dict(server.attributes or {}) == {
        "http.request.method": "POST", "http.route": "/v1/messages/count_tokens",
        "gen_ai.operation.name": "count_tokens", "llmroute.route": "main", "llmroute.tier": tier,
        "llmroute.rule": "model", "llmroute.token_count": "exact", "http.response.status_code": 200,
        "llmroute.attempts": 1}
    client_attributes = attempt.attributes or {}
    assert (client_attributes["gen_ai.operation.name"], client_attributes["gen_ai.provider.name"],
            client_attributes["gen_ai.request.model"], client_attributes["llmroute.target"]) == (
        "count_tokens", provider_name, target.model, target.id)
    assert "error.type" not in client_attributes


def test_an_estimated_count_is_a_server_span_alone(stack: Stack, spans: Callable[[], dict[str, ReadableSpan]]) -> None:
    plain(client(stack))(model="openai", messages=HELLO)

    found = spans()
    assert list(found) == ["POST /v1/messages/count_tokens"]
    assert (found["POST /v1/messages/count_tokens"].attributes or {})["llmroute.token_count"] == "estimated"


async def test_the_drain_waits_for_a_count_in_flight(stack: Stack, access: Callable[[], list[str]]) -> None:
    stack.call(lambda: stack.faults["claude"].next(Fault(FaultKind.LATENCY, seconds=0.3)))
    try:
        async with aiohttp.ClientSession() as session:
            counting = await count_asking_claude(stack, session)
            stack.run(drain(stack.sidecar, 5))
            assert [orjson.loads(line)["status"] for line in access()] == [200]  # answered before the drain ended
            answer = await asyncio.wait_for(counting, 10)
            assert answer.status == 200 and answer.headers["x-llmroute-token-count"] == "exact"
    finally:
        undrain(stack)


async def test_a_count_still_waiting_at_the_drain_deadline_gets_503_draining(
        stack: Stack, access: Callable[[], list[str]]) -> None:
    stack.call(lambda: stack.faults["claude"].always(Fault(FaultKind.HANG)))
    try:
        async with aiohttp.ClientSession() as session:
            counting = await count_asking_claude(stack, session)
            stack.run(drain(stack.sidecar, 0.05))
            answer = await asyncio.wait_for(counting, 10)
            assert answer.status == 503 and (await answer.json())["error"]["type"] == "overloaded_error"
            assert [orjson.loads(line)["status"] for line in access()] == [503]
    finally:
        undrain(stack)


async def count_asking_claude(stack: Stack, session: aiohttp.ClientSession) -> asyncio.Task[aiohttp.ClientResponse]:
    """A count sent, once the sidecar has asked Claude for it (the answer is awaited by the caller)."""
    counting = asyncio.create_task(session.post(stack.url + "/v1/messages/count_tokens",
                                                json={"model": "anthropic", "messages": HELLO}))
    async with asyncio.timeout(10):
        while sim_requests(stack, "claude") == 0:
            await asyncio.sleep(0.01)
    return counting


def undrain(stack: Stack) -> None:
    def reset() -> None:
        stack.sidecar.draining = False
        stack.sidecar.drain_cut = None

    stack.call(reset)
