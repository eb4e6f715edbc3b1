"""`POST /v1/messages/count_tokens`, as the official `anthropic` SDK calls it (Claude Code through
`client.beta.messages.count_tokens`, every turn).

The count is asked where the request would be sent: Anthropic and Gemini count it exactly, with the
target's model and key; an OpenAI target's count is the sidecar's own estimate, and so is the count
of a target that fails. Counting is never charged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.routing.rules import RequestFacts
from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.table import TargetId
from tests.proxy.server import spending
from tests.proxy.server.conftest import last_request, sim_requests
from tests.proxy.server.spending import SettledLimits
from tests.proxy.stack import KEYS, Stack

SYSTEM = "Be brief."
HELLO: Any = [{"role": "user", "content": "hi there, how are you?"}]
Count = Callable[..., Any]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("count"), config=spending.CONFIG) as running:
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
    """What the sidecar records of the requests it serves: spend, budget, decisions, per-target counters."""
    def counters() -> tuple[int, dict[TargetId, int]]:
        sidecar = stack.sidecar
        return len(sidecar.decisions), {target: c.requests for target, c in sidecar.counters.items()}

    return spending.status(stack)["spend"], spending.budget(stack), stack.call(counters)


def target_id(stack: Stack, tier: str, index: int = 0) -> TargetId:
    table = stack.sidecar.table
    route = table.route("main") if table is not None else None
    assert route is not None
    return route.tiers[tier].targets[index].id
