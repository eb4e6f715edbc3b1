"""How many output tokens a request the sidecar translated asks of a model that gives fewer.

A client of `/v1/messages` or `/v1/responses` chose its output limit for the model family it speaks to
(Claude Code asks 32,000 of whatever answers); the target may give fewer (gpt-4o-mini: 16,384) and
refuses more with a 400. The target is asked for its model's `maxOutputTokens` from the first request
when the provider lists it, and otherwise asked again at once for the most its refusal states (OpenAI's,
Anthropic's and Gemini's wording), which is then remembered until the next table. A chat-completions client's
own `max_tokens` is sent as it asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.proxy.documents import model, provider, route, target
from tests.proxy.server.conftest import last_request, sim_requests
from tests.proxy.stack import Stack

CONFIG = [
    provider("oai", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", models=[
        model("gpt-4o-mini", max_output_tokens=16384), "gpt-4o"]),
    provider("claude", "anthropic", "{claude}", key_env="TEST_CLAUDE_KEY", models=[
        "claude-sonnet-4-5", model("claude-3-5-haiku", max_output_tokens=4000)]),
    provider("gem", "gemini", "{gem}", key_env="TEST_GEM_KEY", models=["gemini-2.5-flash"]),
    route("main", {
        "mini": [target("oai", "gpt-4o-mini")],
        "gpt-4o": [target("oai", "gpt-4o")],
        "sonnet": [target("claude", "claude-sonnet-4-5")],
        "haiku": [target("claude", "claude-3-5-haiku")],
        "gemini": [target("gem", "gemini-2.5-flash")],
    }, default_tier="mini"),
]
HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("limits"), config=CONFIG) as running:
        yield running


@pytest.fixture(autouse=True)
def nothing_learnt(stack: Stack) -> None:
    stack.call(stack.sidecar.output_limits.clear)


def anthropic_client(stack: Stack) -> anthropic.Anthropic:
    """(The SDK refuses a non-streamed request for 32,000 tokens unless it is given a `timeout`.)"""
    return anthropic.Anthropic(base_url=stack.url, api_key="sk-app", max_retries=0)


def openai_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-app", max_retries=0)


def test_a_model_whose_most_is_configured_is_asked_no_more_from_the_first_request(stack: Stack) -> None:
    before = sim_requests(stack, "oai")
    answer = anthropic_client(stack).messages.create(model="mini", max_tokens=32000, messages=HI, timeout=30)
    assert answer.content
    assert sim_requests(stack, "oai") == before + 1  # never refused
    assert last_request(stack, "oai").body["max_completion_tokens"] == 16384


def test_a_model_whose_most_is_not_configured_is_asked_again_for_what_openai_states(stack: Stack) -> None:
    client = anthropic_client(stack)
    before = sim_requests(stack, "oai")
    assert client.messages.create(model="gpt-4o", max_tokens=32000, messages=HI, timeout=30).content
    assert sim_requests(stack, "oai") == before + 2  # refused for 32000, answered for 16384
    assert last_request(stack, "oai").body["max_completion_tokens"] == 16384
    assert client.messages.create(model="gpt-4o", max_tokens=32000, messages=HI, timeout=30).content
    assert sim_requests(stack, "oai") == before + 3  # remembered


def test_a_translated_request_over_claudes_most_is_asked_again_for_what_anthropic_states(stack: Stack) -> None:
    client = openai_client(stack)
    before = sim_requests(stack, "claude")
    answer = client.responses.create(model="sonnet", input="hi", max_output_tokens=100_000)
    assert answer.status == "completed" and answer.output_text
    assert sim_requests(stack, "claude") == before + 2  # refused for 100000, answered for 64000
    assert last_request(stack, "claude").body["max_tokens"] == 64000
    client.responses.create(model="sonnet", input="hi", max_output_tokens=100_000)
    assert sim_requests(stack, "claude") == before + 3


def test_a_translated_request_over_geminis_most_is_asked_again_for_what_its_range_states(stack: Stack) -> None:
    client = openai_client(stack)
    before = sim_requests(stack, "gem")
    answer = client.responses.create(model="gemini", input="hi", max_output_tokens=100_000)
    assert answer.status == "completed" and answer.output_text
    assert sim_requests(stack, "gem") == before + 2  # refused for 100000 (range 1 to 65537, exclusive)
    assert last_request(stack, "gem").body["generationConfig"]["maxOutputTokens"] == 65536


def test_a_configured_most_below_what_the_provider_gives_is_what_the_model_is_asked(stack: Stack) -> None:
    before = sim_requests(stack, "claude")
    openai_client(stack).responses.create(model="haiku", input="hi", max_output_tokens=6000)
    assert sim_requests(stack, "claude") == before + 1
    assert last_request(stack, "claude").body["max_tokens"] == 4000


def test_a_request_within_the_most_is_sent_as_it_asked(stack: Stack) -> None:
    anthropic_client(stack).messages.create(model="mini", max_tokens=300, messages=HI)
    assert last_request(stack, "oai").body["max_completion_tokens"] == 300


def test_a_chat_clients_own_max_tokens_is_sent_as_it_asked_and_its_refusal_passed_on(stack: Stack) -> None:
    before = sim_requests(stack, "oai")
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(stack).chat.completions.create(model="mini", max_tokens=32000, messages=HI)
    assert "supports at most 16384 completion tokens" in refused.value.message
    assert sim_requests(stack, "oai") == before + 1
