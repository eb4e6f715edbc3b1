"""Experiments, local limits, context windows, budgets and deadlines through a running sidecar."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

from llmroute_proxy.sim import Fault, FaultKind
from tests.proxy.documents import provider, route, target
from tests.proxy.server.conftest import sim_requests
from tests.proxy.stack import DOCUMENTS, Stack

OAI_MINI, OAI_B_MINI = target("oai", "gpt-4o-mini"), target("oai-b", "gpt-4o-mini", priority=1)
PREMIUM, CHEAP = [target("claude", "claude-sonnet-4-5")], [target("oai", "gpt-4o-mini")]
ROUTES = [
    provider("limited", "openai-compatible", "{oai_b}/v1", key_env="TEST_OAI_B_KEY", region="there",
             limits={"maxConcurrency": 1, "requestsPerMinute": 3}),
    provider("metered", "openai-compatible", "{oai_b}/v1", key_env="TEST_OAI_B_KEY", region="there",
             limits={"tokensPerMinute": 600}),
    route("features", {"ab": [OAI_MINI], "limited": [target("limited", "gpt-4o-mini")],
                      "metered": [target("metered", "gpt-4o-mini")], "ctx": [OAI_MINI, OAI_B_MINI]},
          default_tier="ab",
          experiments=[{"name": "canary", "tier": "ab", "percent": 50, "stickyBy": "header:x-user",
                        "targets": [target("oai-b", "gpt-4o-mini")]}],
          fallback={"maxAttempts": 3, "perTryTimeout": "3s", "firstByteTimeout": "2s", "overallTimeout": "10s"}),
    route("patient", {"only": [OAI_MINI]}, default_tier="only",
          fallback={"firstByteTimeout": "5s", "idleTimeout": "600ms"}),
    route("strict", {"only": [OAI_MINI, OAI_B_MINI]}, default_tier="only", fallback={"onErrors": ["rate_limited"]}),
    route("hurried", {"only": [OAI_MINI, OAI_B_MINI]}, default_tier="only",
          fallback={"perTryTimeout": "5s", "overallTimeout": "600ms"}),
    route("frugal", {"premium": PREMIUM, "cheap": CHEAP}, default_tier="premium",
          budget={"limitUSD": 0.001, "period": "day", "onExceeded": "downgrade:cheap"}),
    route("frugal-ab", {"premium": PREMIUM, "cheap": CHEAP}, default_tier="premium",
          experiments=[{"name": "challenger", "tier": "premium", "percent": 100,
                        "targets": [target("oai-b", "gpt-4o-mini")]}],
          budget={"limitUSD": 0.0001, "period": "day", "onExceeded": "downgrade:cheap"}),
    route("capped", {"premium": PREMIUM}, default_tier="premium",
          budget={"limitUSD": 0.001, "period": "day", "onExceeded": "reject"}),
]

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("features"), config=[*DOCUMENTS, *ROUTES]) as running:
        yield running


def client(stack: Stack, route: str = "features", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0,
                         default_headers={"x-llmroute-route": route, **headers})


def test_an_experiment_takes_its_percent_sticky_by_user(stack: Stack) -> None:
    arms: dict[str, str] = {}
    for i in range(60):
        raw = client(stack, **{"x-user": f"user-{i}"}).chat.completions.with_raw_response.create(
            model="ab", messages=HELLO)
        arms[f"user-{i}"] = raw.headers.get("x-llmroute-experiment", "control")
        expected = "oai-b" if arms[f"user-{i}"] == "canary" else "oai"
        assert raw.headers["x-llmroute-provider"] == expected
    canary = sum(arm == "canary" for arm in arms.values())
    assert 15 <= canary <= 45  # 50 % of 60, far from either extreme
    for user in ("user-1", "user-2", "user-3"):
        again = client(stack, **{"x-user": user}).chat.completions.with_raw_response.create(
            model="ab", messages=HELLO)
        assert again.headers.get("x-llmroute-experiment", "control") == arms[user]


async def test_a_requests_output_cap_counts_against_a_tokens_per_minute_limit_until_it_is_answered(
        stack: Stack) -> None:
    """As OpenAI's own limiter counts `max_tokens`: otherwise concurrent requests overrun the limit
    by their answers. The real usage is settled when the answer comes."""
    stack.call(lambda: stack.faults["oai-b"].next(Fault(FaultKind.LATENCY, seconds=1.5)))
    metered = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0,
                                 default_headers={"x-llmroute-route": "features"})
    big = asyncio.create_task(metered.chat.completions.create(model="metered", messages=HELLO, max_tokens=550))
    await asyncio.sleep(0.5)  # the big one holds its 550 (and its prompt) of the 600
    with pytest.raises(openai.RateLimitError) as refused:
        await metered.chat.completions.create(model="metered", messages=HELLO, max_tokens=100)
    assert "local rate or concurrency limit" in refused.value.message
    assert (await big).choices
    # answered with a short reply: what it did not write was given back at once
    assert (await metered.chat.completions.create(model="metered", messages=HELLO, max_tokens=100)).choices
    await metered.close()


async def test_a_request_whose_client_gave_up_gives_its_output_cap_back_at_once(stack: Stack) -> None:
    """The client hangs up while its answer is awaited: the attempt is abandoned, and its tokens-per-minute
    charge is settled to the prompt alone instead of keeping the 550-token cap it never used."""
    stack.call(lambda: stack.faults["oai-b"].next(Fault(FaultKind.LATENCY, seconds=1.5)))
    metered = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0,
                                 default_headers={"x-llmroute-route": "features"})
    with pytest.raises(openai.APITimeoutError):
        await metered.chat.completions.create(model="metered", messages=HELLO, max_tokens=550, timeout=0.5)
    await asyncio.sleep(0.2)  # the sidecar sees the closed connection and cancels the request's handler
    assert (await metered.chat.completions.create(model="metered", messages=HELLO, max_tokens=100)).choices
    await metered.close()


def test_requests_over_a_providers_local_rpm_get_429_with_retry_after(stack: Stack) -> None:
    limited = client(stack)
    for _ in range(3):
        limited.chat.completions.create(model="limited", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as caught:
        limited.chat.completions.create(model="limited", messages=HELLO)
    assert "local rate or concurrency limit" in caught.value.message
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.response.headers["x-llmroute-attempts"] == "0"


async def test_a_provider_at_its_max_concurrency_refuses_the_next_request(stack: Stack) -> None:
    stack.call(lambda: stack.sidecar.limits.configure({}))  # fresh RPM bucket for this test
    stack.call(lambda: stack.sidecar.limits.configure(stack.sidecar.table.provider_limits))  # type: ignore[union-attr]
    stack.call(lambda: stack.faults["oai-b"].next(Fault(FaultKind.LATENCY, seconds=1.0)))
    slow = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0,
                              default_headers={"x-llmroute-route": "features"})
    holder = asyncio.create_task(slow.chat.completions.create(model="limited", messages=HELLO))
    await asyncio.sleep(0.3)
    with pytest.raises(openai.RateLimitError):
        await slow.chat.completions.create(model="limited", messages=HELLO)
    assert (await holder).choices
    await slow.close()


def test_a_context_length_error_moves_only_to_a_larger_window(stack: Stack) -> None:
    too_long = Fault(FaultKind.STATUS, status=400, code="context_length_exceeded",
                     message="This model's maximum context length is 8000 tokens.")
    stack.call(lambda: stack.faults["oai"].always(too_long))
    raw = client(stack).chat.completions.with_raw_response.create(model="ctx", messages=HELLO)
    assert raw.headers["x-llmroute-provider"] == "oai-b"  # 16000 > 8000
    stack.call(lambda: stack.faults["oai-b"].always(too_long))
    with pytest.raises(openai.BadRequestError) as caught:
        client(stack).chat.completions.create(model="ctx", messages=HELLO)
    assert caught.value.code == "context_length_exceeded"


def test_the_overall_deadline_answers_504(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.HANG)))
    with pytest.raises(openai.APIStatusError) as caught:
        client(stack, route="hurried").chat.completions.create(model="only", messages=HELLO)
    assert caught.value.status_code == 504
    assert sim_requests(stack, "oai-b") == 0


def test_a_spent_budget_downgrades_to_the_cheap_tier(stack: Stack) -> None:
    frugal = client(stack, route="frugal")
    tiers = [frugal.chat.completions.with_raw_response.create(model="auto", messages=HELLO, max_tokens=10)
             .headers["x-llmroute-tier"] for _ in range(12)]
    premium = tiers.index("cheap")
    assert premium >= 1
    assert tiers == ["premium"] * premium + ["cheap"] * (12 - premium)
    spent = stack.call(lambda: stack.sidecar.ledger.snapshot("frugal", stack.sidecar.wallclock()).spent_usd)
    assert spent <= 0.001
    assert spent > 0.001 - 0.0002  # it switched only when one more premium answer might not fit


def test_a_downgraded_request_goes_to_the_downgrade_tier_not_to_the_experiment_of_the_tier_it_left(
        stack: Stack) -> None:
    frugal = client(stack, route="frugal-ab")
    answers = [frugal.chat.completions.with_raw_response.create(model="auto", messages=HELLO, max_tokens=10)
               for _ in range(12)]
    downgraded = [raw.headers for raw in answers if raw.headers["x-llmroute-tier"] == "cheap"]
    assert downgraded, "the budget never ran out"
    for headers in downgraded:
        assert headers["x-llmroute-provider"] == "oai"
        assert "x-llmroute-experiment" not in headers
    first = answers[0].headers
    assert (first["x-llmroute-tier"], first["x-llmroute-experiment"], first["x-llmroute-provider"]) == (
        "premium", "challenger", "oai-b")


def test_a_spent_budget_with_reject_answers_429_until_the_period_ends(stack: Stack) -> None:
    capped = client(stack, route="capped")
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(12):
            capped.chat.completions.create(model="auto", messages=HELLO, max_tokens=10)
    assert "budget" in caught.value.message
    assert caught.value.code == "budget_exceeded"
    assert 0 < int(caught.value.response.headers["retry-after"]) <= 86400
    assert caught.value.response.headers["x-should-retry"] == "false"  # nothing changes before the reset


def test_a_failure_left_out_of_on_errors_ends_the_request_with_502_not_a_failover(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    with pytest.raises(openai.InternalServerError) as caught:
        client(stack, route="strict").chat.completions.create(model="only", messages=HELLO)
    assert caught.value.status_code == 502
    assert "oai/gpt-4o-mini@here: 503" in caught.value.message
    assert sim_requests(stack, "oai-b") == 0
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STATUS, status=429)))
    raw = client(stack, route="strict").chat.completions.with_raw_response.create(model="only", messages=HELLO)
    assert raw.headers["x-llmroute-provider"] == "oai-b"


async def test_a_slow_first_token_is_bounded_by_the_first_token_deadline_and_later_gaps_by_idle(
        stack: Stack) -> None:
    import aiohttp
    import orjson

    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.SLOW_STREAM, seconds=1.0)))
    async with aiohttp.ClientSession() as session, session.post(
            stack.url + "/v1/chat/completions", headers={"x-llmroute-route": "patient"},
            json={"model": "only", "messages": HELLO, "stream": True}) as response:
        body = await response.read()
    assert response.status == 200  # the first token came after 1 s, inside the 5 s first-token deadline
    events = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert any(b'"content"' in e for e in events[:-1])
    assert b"[DONE]" not in events
    error = orjson.loads(events[-1])["error"]
    assert "idle timeout" in error["message"]


def test_responses_requests_take_the_same_experiment_arm_and_budget_as_chat(stack: Stack) -> None:
    arms = set()
    for i in range(20):
        sdk = client(stack, **{"x-user": f"user-{i}"})
        chat = sdk.chat.completions.with_raw_response.create(model="ab", messages=HELLO).headers
        turn = sdk.responses.with_raw_response.create(model="ab", input="hello").headers
        arm = turn.get("x-llmroute-experiment", "control")
        assert arm == chat.get("x-llmroute-experiment", "control")
        assert turn["x-llmroute-provider"] == ("oai-b" if arm == "canary" else "oai")
        arms.add(arm)
    assert arms == {"canary", "control"}
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(12):
            client(stack, route="capped").responses.create(model="auto", input="hello", max_output_tokens=16)
    assert caught.value.code == "budget_exceeded" and "budget" in caught.value.message
