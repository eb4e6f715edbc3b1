"""A client that stops a streamed answer (a chat UI's stop button) pays for what was streamed.

The provider bills the prompt and the output it generated until the connection closed: the
route's budget, the tokens-per-minute charge, the spend reported to the operator, the metrics
and the request's outcome all take that one estimate, instead of the `max_tokens` worst case
(the budget) or nothing (everything else). A client gone before any answer costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anthropic
import openai
import pytest

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.routing.cost import cost_usd
from llmroute_proxy.routing.tokens import estimate_tokens
from llmroute_proxy.server.runner import drain
from llmroute_proxy.sim import Fault, FaultKind
from llmroute_proxy.table import Pricing
from tests.proxy.server.conftest import sim_requests
from tests.proxy.server.spending import (
    CONFIG,
    MAX_TOKENS,
    MESSAGES,
    PRICING,
    PROMPT,
    WORST_CASE,
    SettledLimits,
    budget,
    chat,
    cost_metric,
    ended,
    route_spend,
    status,
)
from tests.proxy.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stopped"), config=CONFIG) as running:
        yield running


def stop_after(stack: Stack, shown: int) -> str:
    """Stream an answer and press stop once `shown` chunks of text have arrived; what the client saw."""
    stream = chat(stack).chat.completions.create(model="fast", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                 stream=True)
    texts: list[str] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
        if len(texts) == shown:
            break
    stream.close()
    return "".join(texts)


def test_a_stopped_stream_charges_the_budget_about_what_was_streamed_not_its_max_tokens(
        stack: Stack, limits: SettledLimits) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STALL_AFTER_TOKENS, tokens=3)))
    spent_before, spend_before, metric_before = budget(stack)["spent_usd"], route_spend(stack), cost_metric(stack)
    shown = stop_after(stack, 3)
    outcome = ended(stack)

    assert outcome.status == 499  # the client closed it
    assert outcome.usage_estimated
    usage = outcome.usage
    assert usage is not None and usage.input_tokens == PROMPT
    assert 0.5 * estimate_tokens(shown) <= usage.output_tokens <= 2 * estimate_tokens(shown)
    cost = cost_usd(usage, PRICING)
    assert outcome.cost_usd == pytest.approx(cost)
    assert [(a.target, a.status) for a in outcome.attempts] == [("metered/gpt-4o-mini@here", 200)]

    after = budget(stack)
    assert after["spent_usd"] - spent_before == pytest.approx(cost)
    assert cost < WORST_CASE / 100  # a few tokens, not 4096 of them
    assert after["reserved_usd"] == 0
    # what the usage reports to the operator, the metrics and the TPM limiter were told: the same
    spend = route_spend(stack)
    assert spend["requests"] - spend_before.get("requests", 0) == 1
    assert spend["input_tokens"] - spend_before.get("input_tokens", 0) == usage.input_tokens
    assert spend["output_tokens"] - spend_before.get("output_tokens", 0) == usage.output_tokens
    assert cost_metric(stack) - metric_before == pytest.approx(cost)
    assert limits.settled == [("metered", PROMPT + MAX_TOKENS, usage.total_tokens)]
    decision = status(stack)["decisions"][0]
    assert (decision["status"], decision["usage_estimated"]) == (499, True)


def test_stopped_streams_do_not_run_the_budget_out_before_its_money_is_spent(stack: Stack) -> None:
    """Two answers at their `max_tokens` fill this budget; five stopped ones leave it nearly whole."""
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STALL_AFTER_TOKENS, tokens=2)))
    for _ in range(5):
        stop_after(stack, 2)
        ended(stack)
    stack.call(lambda: stack.faults["oai"].clear())
    answer = chat(stack).chat.completions.create(model="fast", messages=MESSAGES, max_tokens=MAX_TOKENS)
    assert answer.choices[0].message.content
    assert budget(stack)["spent_usd"] < WORST_CASE / 10


async def test_a_client_gone_before_any_answer_charges_nothing(stack: Stack, limits: SettledLimits) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.HANG)))
    spent_before, spend_before = budget(stack)["spent_usd"], route_spend(stack)
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0,
                                default_headers={"x-llmroute-route": "chat-ui"})
    waiting = asyncio.create_task(client.chat.completions.create(
        model="fast", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True))
    async with asyncio.timeout(10):
        while sim_requests(stack, "oai") == 0:
            await asyncio.sleep(0.005)
    waiting.cancel()
    await client.close()
    outcome = await asyncio.to_thread(ended, stack)

    assert (outcome.status, outcome.usage, outcome.cost_usd, outcome.usage_estimated) == (499, None, None, False)
    after = budget(stack)
    assert (after["spent_usd"], after["reserved_usd"]) == (spent_before, 0)
    assert route_spend(stack) == spend_before
    assert limits.settled == [("metered", PROMPT + MAX_TOKENS, PROMPT)]  # the prompt alone, as before


def test_the_usage_a_stream_carried_before_it_was_stopped_counts_its_prompt(stack: Stack) -> None:
    """Claude's `message_start` counts the prompt: that count, not the sidecar's estimate, is charged,
    with the output streamed after it."""
    stack.call(lambda: stack.faults["claude"].always(Fault(FaultKind.STALL_AFTER_TOKENS, tokens=3)))
    claude = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0,
                                 default_headers={"x-llmroute-route": "claude-ui"})
    with claude.messages.stream(model="claude", max_tokens=MAX_TOKENS, messages=MESSAGES) as stream:
        texts: list[str] = []
        for event in stream:
            if event.type == "message_start":
                counted = event.message.usage.input_tokens
            if event.type == "text" and event.text:
                texts.append(event.text)
            if len(texts) == 3:
                break
    outcome = ended(stack)

    assert outcome.status == 499 and outcome.usage_estimated
    assert outcome.usage is not None and outcome.usage.input_tokens == counted != PROMPT
    assert outcome.usage.output_tokens >= estimate_tokens("".join(texts)) // 2 > 1  # more than message_start's 1
    assert outcome.cost_usd == pytest.approx(cost_usd(outcome.usage, Pricing(input_per_mtok=3.0, output_per_mtok=15.0)))


def test_a_stream_cut_by_the_drain_deadline_before_it_carried_usage_is_charged_the_same_estimate(
        stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.STALL_AFTER_TOKENS, tokens=3)))
    spent_before = budget(stack)["spent_usd"]
    stream = chat(stack).chat.completions.create(model="fast", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                 stream=True)
    shown = 0
    try:
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                shown += bool(chunk.choices and chunk.choices[0].delta.content)
                if shown == 3:
                    stack.run(drain(stack.sidecar, 0))  # the drain time is up: open streams are cut
        assert "shutting down" in caught.value.message
        outcome = ended(stack)
    finally:
        def reset() -> None:
            stack.sidecar.draining = False
            stack.sidecar.drain_cut = None

        stack.call(reset)
    assert outcome.usage_estimated and outcome.usage is not None
    # the estimate keeps the tier OpenAI's chunks reported (the simulator's `default`)
    assert outcome.usage == Usage(PROMPT, outcome.usage.output_tokens, service_tier="default")
    assert outcome.usage.output_tokens > 0
    assert budget(stack)["spent_usd"] - spent_before == pytest.approx(cost_usd(outcome.usage, PRICING))
    assert outcome.attempts[-1].reason == "the drain's deadline cut the stream"



def test_a_stream_the_provider_broke_midway_is_charged_what_it_streamed(stack: Stack) -> None:
    """No failover once the first token is out: the client gets an in-band error, and the provider's
    bill for the output it generated is estimated as for a stopped stream, not charged at max_tokens."""
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=3)))
    spent_before, spend_before = budget(stack)["spent_usd"], route_spend(stack)
    texts: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in chat(stack).chat.completions.create(model="fast", messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                         stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
    outcome = ended(stack)
    assert outcome.usage_estimated and outcome.usage is not None and outcome.usage.input_tokens == PROMPT
    assert 0.5 * estimate_tokens("".join(texts)) <= outcome.usage.output_tokens <= 2 * estimate_tokens("".join(texts))
    after = budget(stack)
    assert after["spent_usd"] - spent_before == pytest.approx(cost_usd(outcome.usage, PRICING))
    assert after["reserved_usd"] == 0 and after["spent_usd"] - spent_before < WORST_CASE / 100
    assert route_spend(stack)["output_tokens"] - spend_before.get("output_tokens", 0) == outcome.usage.output_tokens
