"""Claude's prompt-cache writes cost what Anthropic bills for them.

A prompt prefix marked with `cache_control` is written to Claude's cache on first use (billed at
1.25x the input price, 2x for `"ttl": "1h"`) and read while it lives (a tenth of the input price).
The request's cost (`x-llmroute-cost-usd`, its access record) and the route's budget take each
part at its own price, whether the client speaks Anthropic Messages (relayed natively) or OpenAI
chat completions (translated), streamed or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from llmroute_proxy.server.accesslog import access_entry
from tests.proxy.documents import model, provider, route, target
from tests.proxy.server.spending import ended, status
from tests.proxy.stack import Stack

INPUT, CACHED, WRITE, WRITE_1H, OUTPUT = 3.0, 0.30, 3.75, 6.0, 15.0
CONFIG = [
    provider("claude", "anthropic", "{claude}", key_env="TEST_CLAUDE_KEY", models=[
        model("claude-sonnet-4-5", input_per_mtok=INPUT, output_per_mtok=OUTPUT, cached_input_per_mtok=CACHED,
              cache_write_per_mtok=WRITE, cache_write_1h_per_mtok=WRITE_1H)]),
    route("claude-ui", {"claude": [target("claude", "claude-sonnet-4-5")]}, default_tier="claude",
          budget={"limitUSD": 100, "period": "day", "onExceeded": "reject"}),
]
SYSTEM_TEXT = "You answer questions about the weather. " * 200  # 1,560 tokens to the simulator: cacheable
ASK: Any = [{"role": "user", "content": "Will it rain?"}]


def system(key: str, ttl: str | None = None) -> list[Any]:
    """A long system prompt made unique by `key` (each test writes its own prefix), cached."""
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return [{"type": "text", "text": f"{key}. {SYSTEM_TEXT}", "cache_control": control}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("prompt-cache"), config=CONFIG, quirks=True) as running:
        yield running


def claude_client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)


def billed(usage: Any) -> float:
    """What Anthropic bills for a Messages `usage`, computed here from its own fields."""
    written_1h = usage.cache_creation.ephemeral_1h_input_tokens if usage.cache_creation else 0
    return (usage.input_tokens * INPUT + usage.cache_read_input_tokens * CACHED
            + (usage.cache_creation_input_tokens - written_1h) * WRITE + written_1h * WRITE_1H
            + usage.output_tokens * OUTPUT) / 1e6


def budget_spent(stack: Stack) -> float:
    spent: float = next(b for b in status(stack)["budgets"] if b["route"] == "claude-ui")["spent_usd"]
    return spent


def test_a_write_then_a_read_are_each_charged_at_their_own_price(stack: Stack) -> None:
    client, before = claude_client(stack), budget_spent(stack)

    written = client.messages.with_raw_response.create(
        model="auto", max_tokens=100, system=system("write-then-read"), messages=ASK)
    read = client.messages.with_raw_response.create(
        model="auto", max_tokens=100, system=system("write-then-read"), messages=ASK)

    first, second = written.parse().usage, read.parse().usage
    assert (first.cache_creation_input_tokens, second.cache_read_input_tokens) == (1561, 1561)
    assert float(written.headers["x-llmroute-cost-usd"]) == pytest.approx(billed(first), rel=1e-9)
    assert float(read.headers["x-llmroute-cost-usd"]) == pytest.approx(billed(second), rel=1e-9)
    # the write is dearer than the same prompt uncached, the read far cheaper
    assert billed(first) > (first.cache_creation_input_tokens + first.input_tokens) * INPUT / 1e6 > billed(second)
    assert budget_spent(stack) - before == pytest.approx(billed(first) + billed(second), rel=1e-9)
    assert "cache_write_tokens" not in access_entry(ended(stack))  # the read wrote nothing


def test_a_streamed_hour_long_write_is_charged_at_the_hour_price(stack: Stack) -> None:
    before = budget_spent(stack)

    with claude_client(stack).messages.stream(model="auto", max_tokens=100, system=system("hour", "1h"),
                                              messages=ASK) as stream:
        usage = stream.get_final_message().usage

    assert usage.cache_creation is not None and usage.cache_creation.ephemeral_1h_input_tokens == 1561
    outcome = ended(stack)
    assert outcome.cost_usd == pytest.approx(billed(usage), rel=1e-9)
    line = access_entry(outcome)
    assert (line["cache_write_tokens"], line["cache_write_1h_tokens"]) == (1561, 1561)
    assert budget_spent(stack) - before == pytest.approx(billed(usage), rel=1e-9)


def test_an_openai_client_translated_to_claude_is_charged_for_the_write(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    messages: Any = [{"role": "system", "content": system("openai-client")}, *ASK]

    answered = client.chat.completions.with_raw_response.create(model="auto", messages=messages, max_tokens=100)

    usage = answered.http_response.json()["usage"]
    written = usage["prompt_tokens_details"]["cache_write_tokens"]
    assert written == 1561
    fresh = usage["prompt_tokens"] - written
    expected = (fresh * INPUT + written * WRITE + usage["completion_tokens"] * OUTPUT) / 1e6
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(expected, rel=1e-9)
