"""A request for `n` answers may use its output cap `n` times over, and the provider bills every
answer: the budget reserves, and the tokens-per-minute limit admits, the cap times `n`, so that a
request that respects its own `max_tokens` never spends past either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from llmroute_proxy.dialects.base import ChatRequest
from tests.proxy.server import spending
from tests.proxy.server.spending import MAX_TOKENS, PROMPT, WORST_CASE, SettledLimits, budget
from tests.proxy.stack import Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own per test: each starts with the whole budget (room for 2.5 worst-case answers)."""
    with Stack(tmp_path, config=spending.CONFIG) as running:
        yield running


def ask(stack: Stack, n: int) -> None:
    spending.chat(stack).chat.completions.create(model="fast", messages=spending.MESSAGES, max_tokens=MAX_TOKENS, n=n)


def test_three_answers_are_refused_by_a_budget_with_room_for_two_and_a_half(stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError) as refused:
        ask(stack, 3)

    assert refused.value.code == "budget_exceeded"
    assert budget(stack)["spent_usd"] == 0 and budget(stack)["reserved_usd"] == 0


def test_two_answers_are_admitted_with_twice_the_output_cap(stack: Stack, limits: SettledLimits) -> None:
    ask(stack, 2)

    assert [(provider, admitted) for provider, admitted, _ in limits.settled] == [("metered", PROMPT + 2 * MAX_TOKENS)]
    assert 0 < budget(stack)["spent_usd"] < 2 * WORST_CASE and budget(stack)["reserved_usd"] == 0


@pytest.mark.parametrize(("n", "choices"), [(None, 1), (1, 1), (4, 4), (0, 1), ("2", 1), (True, 1)])
def test_the_answers_asked_for_are_n_when_it_is_a_whole_number_above_one(n: object, choices: int) -> None:
    body = {"model": "fast", "messages": []} if n is None else {"model": "fast", "messages": [], "n": n}
    assert ChatRequest(body).choices == choices
