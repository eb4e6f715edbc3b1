"""Web searches a provider runs as its server-side tool cost what it bills for them.

Claude's `web_search` tool and the Responses API's `web_search` run on the provider's side and are
billed per search (USD 10 per thousand at Anthropic), beside the tokens. A request that used them is
charged its searches at the model's `webSearchPer1K`: in its cost (`x-llmroute-cost-usd`, its
access line, which counts them as `web_searches`) and in the route's budget, streamed or not.
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

INPUT, OUTPUT, PER_SEARCH = 3.0, 15.0, 10.0 / 1000
CLAUDE_PRICES = model("claude-sonnet-4-5", input_per_mtok=INPUT, output_per_mtok=OUTPUT)
GPT_PRICES = model("gpt-5", input_per_mtok=INPUT, output_per_mtok=OUTPUT)
for priced in (CLAUDE_PRICES, GPT_PRICES):
    priced["pricing"]["webSearchPer1K"] = 10.0
CONFIG = [
    provider("claude", "anthropic", "{claude}", key_env="TEST_CLAUDE_KEY", models=[CLAUDE_PRICES]),
    provider("oai", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", models=[GPT_PRICES]),
    route("searching", {"claude": [target("claude", "claude-sonnet-4-5")], "gpt": [target("oai", "gpt-5")]},
          default_tier="claude", budget={"limitUSD": 100, "period": "day", "onExceeded": "reject"}),
]
CLAUDE_SEARCH: Any = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
ASK: Any = [{"role": "user", "content": "What is the weather in Paris today?"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("search-cost"), config=CONFIG, quirks=True) as running:
        yield running


def tokens_cost(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * INPUT + output_tokens * OUTPUT) / 1e6


def budget_spent(stack: Stack) -> float:
    spent: float = next(b for b in status(stack)["budgets"] if b["route"] == "searching")["spent_usd"]
    return spent


def test_claudes_search_is_charged_beside_its_tokens(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)
    before = budget_spent(stack)

    answered = client.messages.with_raw_response.create(model="claude", max_tokens=200, tools=CLAUDE_SEARCH,
                                                        messages=ASK)

    message = answered.parse()
    assert [block.type for block in message.content][:2] == ["server_tool_use", "web_search_tool_result"]
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 1
    expected = tokens_cost(message.usage.input_tokens, message.usage.output_tokens) + PER_SEARCH
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(expected, rel=1e-9)
    assert access_entry(ended(stack))["web_searches"] == 1
    assert budget_spent(stack) - before == pytest.approx(expected, rel=1e-9)


def test_a_streamed_search_is_charged_too(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)

    with client.messages.stream(model="claude", max_tokens=200, tools=CLAUDE_SEARCH, messages=ASK) as stream:
        usage = stream.get_final_message().usage

    assert ended(stack).cost_usd == pytest.approx(tokens_cost(usage.input_tokens, usage.output_tokens) + PER_SEARCH,
                                                  rel=1e-9)


def test_a_responses_web_search_is_charged_per_call(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)

    answered = client.responses.with_raw_response.create(model="gpt", input="What is the weather in Paris today?",
                                                         tools=[{"type": "web_search"}])

    response = answered.parse()
    searches = sum(1 for item in response.output if item.type == "web_search_call")
    assert searches == 1 and response.usage is not None
    expected = tokens_cost(response.usage.input_tokens, response.usage.output_tokens) + searches * PER_SEARCH
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(expected, rel=1e-9)


def test_a_streamed_responses_web_search_is_charged_per_call(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)

    with client.responses.stream(model="gpt", input="What is the weather in Paris today?",
                                 tools=[{"type": "web_search"}]) as stream:
        response = stream.get_final_response()

    assert response.usage is not None
    outcome = ended(stack)
    assert outcome.cost_usd == pytest.approx(
        tokens_cost(response.usage.input_tokens, response.usage.output_tokens) + PER_SEARCH, rel=1e-9)
    assert access_entry(outcome)["web_searches"] == 1


def test_an_answer_that_searched_nothing_has_no_search_cost(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)

    answered = client.messages.with_raw_response.create(model="claude", max_tokens=200, messages=ASK)

    usage = answered.parse().usage
    assert float(answered.headers["x-llmroute-cost-usd"]) == pytest.approx(
        tokens_cost(usage.input_tokens, usage.output_tokens), rel=1e-9)
    assert "web_searches" not in access_entry(ended(stack))
