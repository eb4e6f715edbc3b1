"""An answer that comes without usage (a compatible server that sends none even when asked, an Azure
api-version before 2024-09-01) is charged an estimate of what was answered.

The provider bills it all the same: the route's budget, the tokens-per-minute charge, the spend
reported to the operator, the metrics and the request's outcome all take the one estimate (the
prompt's, and the output's from the answer's own text), instead of the `max_tokens` worst case or
nothing. The client gets the answer as the server sent it: the sidecar invents no usage for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmroute_proxy.routing.cost import cost_usd
from llmroute_proxy.routing.tokens import estimate_tokens
from llmroute_proxy.server.outcome import Outcome
from llmroute_proxy.sim import Fault, FaultKind
from tests.proxy.server import spending
from tests.proxy.server.spending import (
    MAX_TOKENS,
    PROMPT,
    WORST_CASE,
    SettledLimits,
    budget,
    ended,
    route_spend,
)
from tests.proxy.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # padded answers: the simulator's first piece (its name and model) would be denser than the others
    with Stack(tmp_path_factory.mktemp("unmetered"), config=spending.CONFIG, answer_bytes=1200) as running:
        yield running


@pytest.fixture
def unmetered(stack: Stack) -> Iterator[None]:
    stack.call(lambda: stack.faults["oai"].always(Fault(FaultKind.NO_USAGE)))
    yield
    stack.call(lambda: stack.faults["oai"].clear())


def answer(stack: Stack, stream: bool) -> tuple[str, list[tuple[int, int]], str | None]:
    """Ask for an answer: its text, the usage (prompt, completion) the client got, its cost header."""
    client = spending.chat(stack)
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model="fast", messages=spending.MESSAGES,
                                                                max_tokens=MAX_TOKENS)
        completion = raw.parse()
        usage = completion.usage
        return (completion.choices[0].message.content or "",
                [] if usage is None else [(usage.prompt_tokens, usage.completion_tokens)],
                raw.headers.get("x-llmroute-cost-usd"))
    chunks = list(client.chat.completions.create(model="fast", messages=spending.MESSAGES, max_tokens=MAX_TOKENS,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage is not None], None


def assert_charged_everywhere_alike(stack: Stack, outcome: Outcome, before: tuple[float, dict[str, int], float],
                                    limits: SettledLimits) -> float:
    """The outcome's usage is what the budget, the spend, the metrics and the TPM limiter took; its cost."""
    spent_before, spend_before, metric_before = before
    assert outcome.usage is not None
    cost = cost_usd(outcome.usage, spending.PRICING)
    assert outcome.cost_usd == pytest.approx(cost)
    after = budget(stack)
    assert after["spent_usd"] - spent_before == pytest.approx(cost)
    assert after["reserved_usd"] == 0
    spend = route_spend(stack)
    assert spend["requests"] - spend_before.get("requests", 0) == 1
    assert spend["input_tokens"] - spend_before.get("input_tokens", 0) == outcome.usage.input_tokens
    assert spend["output_tokens"] - spend_before.get("output_tokens", 0) == outcome.usage.output_tokens
    assert spending.cost_metric(stack) - metric_before == pytest.approx(cost)
    assert limits.settled == [("metered", PROMPT + MAX_TOKENS, outcome.usage.total_tokens)]
    return cost


def before(stack: Stack) -> tuple[float, dict[str, int], float]:
    return budget(stack)["spent_usd"], route_spend(stack), spending.cost_metric(stack)


@pytest.mark.usefixtures("unmetered")
@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_an_answer_without_usage_is_charged_its_prompt_and_about_what_it_answered_not_max_tokens(
        stack: Stack, limits: SettledLimits, stream: bool) -> None:
    was = before(stack)
    text, usages, cost_header = answer(stack, stream)
    outcome = ended(stack)

    assert text and usages == []  # as the server sent it: the sidecar makes none up
    assert outcome.status == 200 and outcome.usage_estimated
    assert outcome.usage is not None and outcome.usage.input_tokens == PROMPT
    if stream:  # from the chunks read, at the size of those at hand
        assert 0.75 * estimate_tokens(text) <= outcome.usage.output_tokens <= 1.5 * estimate_tokens(text)
    else:  # from the answer's own text
        assert outcome.usage.output_tokens == estimate_tokens(text)
    cost = assert_charged_everywhere_alike(stack, outcome, was, limits)
    assert 0 < cost < WORST_CASE / 10
    assert cost_header is None if stream else float(cost_header or 0) == pytest.approx(cost, rel=1e-3)
    decision = spending.status(stack)["decisions"][0]
    assert (decision["status"], decision["usage_estimated"]) == (200, True)


@pytest.mark.usefixtures("unmetered")
def test_unmetered_answers_do_not_run_the_budget_out_before_its_money_is_spent(stack: Stack) -> None:
    """Two answers at their `max_tokens` fill this budget (a third is refused); six unmetered ones are
    answered, and leave most of it."""
    spent_before = budget(stack)["spent_usd"]
    for stream in (False, True) * 3:
        assert answer(stack, stream)[0]
        assert ended(stack).status == 200
    assert budget(stack)["spent_usd"] - spent_before < WORST_CASE / 2


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_an_answer_with_usage_is_charged_that_usage_not_an_estimate(
        stack: Stack, limits: SettledLimits, stream: bool) -> None:
    was = before(stack)
    _, usages, _ = answer(stack, stream)
    outcome = ended(stack)

    assert outcome.usage is not None and not outcome.usage_estimated
    assert usages == [(outcome.usage.input_tokens, outcome.usage.output_tokens)]  # the server's count
    assert_charged_everywhere_alike(stack, outcome, was, limits)
