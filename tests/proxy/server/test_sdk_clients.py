"""The official OpenAI and Anthropic SDKs call the sidecar, which calls every provider type."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import openai
import pytest

from tests.proxy.server.conftest import last_request
from tests.proxy.stack import KEYS, Stack

TIERS = {"openai": "oai", "anthropic": "claude", "gemini": "gem"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def openai_client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key-never-forwarded", max_retries=0)


@pytest.mark.parametrize("tier", TIERS)
def test_openai_sdk_gets_a_completion_from_every_provider(stack: Stack, tier: str) -> None:
    raw = openai_client(stack).chat.completions.with_raw_response.create(
        model=tier, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
    completion = raw.parse()
    assert "You said: hello there" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert raw.headers["x-llmroute-route"] == "main"
    assert raw.headers["x-llmroute-tier"] == tier
    assert raw.headers["x-llmroute-provider"] == TIERS[tier]
    assert raw.headers["x-llmroute-attempts"] == "1"
    assert float(raw.headers["x-llmroute-cost-usd"]) > 0


@pytest.mark.parametrize("tier", TIERS)
async def test_async_openai_sdk_streams_from_every_provider_with_usage_last(stack: Stack, tier: str) -> None:
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model=tier, messages=[{"role": "user", "content": "tell me a story"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "You said: tell me a story" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    await client.close()


@pytest.mark.parametrize("tier", TIERS)
def test_every_answer_is_stamped_with_when_it_was_asked_for(stack: Stack, tier: str) -> None:
    """Anthropic and Gemini send no time: their translated answers say when the sidecar got the request."""
    client, hi = openai_client(stack), [{"role": "user", "content": "hi"}]
    asked = int(time.time())
    completion = client.chat.completions.create(model=tier, messages=hi)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model=tier, messages=hi, stream=True))  # type: ignore[arg-type]
    answered = int(time.time())
    assert asked <= completion.created <= answered
    assert chunks and all(asked <= chunk.created <= answered for chunk in chunks)


def test_stream_usage_is_asked_upstream_but_hidden_from_a_client_that_did_not_ask(stack: Stack) -> None:
    chunks = list(openai_client(stack).chat.completions.create(
        model="openai", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert chunks and all(not (c.choices == [] and c.usage) for c in chunks)
    sent = last_request(stack, "oai").body
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("tier", TIERS)
def test_tool_calls_round_trip_through_every_provider(stack: Stack, tier: str) -> None:
    client = openai_client(stack)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=tier, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "sim"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18C and cloudy"}]
    second = client.chat.completions.create(model=tier, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type]
    assert "18C and cloudy" in (second.choices[0].message.content or "")


@pytest.mark.parametrize("tier", TIERS)
def test_streamed_tool_call_arguments_accumulate_in_the_sdk(stack: Stack, tier: str) -> None:
    with openai_client(stack).chat.completions.stream(
        model=tier, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "sim"}
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("tier", TIERS)
def test_anthropic_sdk_speaks_messages_to_every_provider(stack: Stack, tier: str) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)
    message = client.messages.create(model=tier, max_tokens=200, system="Be brief.",
                                     messages=[{"role": "user", "content": "hi there"}])
    assert message.content[0].type == "text" and "You said: hi there" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.id.startswith("msg_")  # whichever provider answered
    with client.messages.stream(model=tier, max_tokens=200,
                                messages=[{"role": "user", "content": "hi there"}]) as stream:
        final = stream.get_final_message()
    assert "You said: hi there" in "".join(b.text for b in final.content if b.type == "text")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert final.id.startswith("msg_")


@pytest.mark.parametrize("tier", TIERS)
async def test_async_anthropic_sdk_gets_tool_use_from_every_provider(stack: Stack, tier: str) -> None:
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key="x", max_retries=0)
    tool = {"name": "get_weather", "description": "weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    async with client.messages.stream(model=tier, max_tokens=200, tools=[tool],  # type: ignore[list-item]
                                      messages=[{"role": "user", "content": "Weather?"}]) as stream:
        final = await stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use"
    assert uses and uses[0].name == "get_weather" and uses[0].input == {"city": "sim"}
    await client.close()


def test_embeddings_and_models(stack: Stack) -> None:
    client = openai_client(stack)
    result = client.embeddings.create(model="embed", input=["one", "two"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) > 0 and result.data[0].embedding != result.data[1].embedding
    ids = {m.id for m in client.models.list()}
    assert {"openai", "anthropic", "gemini", "ha", "auto", "gpt-4o-mini", "claude-sonnet-4-5"} <= ids


def test_a_model_the_list_names_can_be_retrieved_and_one_it_does_not_is_a_404(stack: Stack) -> None:
    client = openai_client(stack)
    listed = [m.id for m in client.models.list()]
    for name in ("anthropic", "auto", "claude-sonnet-4-5"):
        model = client.models.retrieve(name)
        assert (model.id, model.object, model.owned_by) == (name, "model", "llmroute") and name in listed
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.code == "model_not_found" and "'gpt-9' does not exist here" in missing.value.message


def test_the_anthropic_sdk_lists_and_retrieves_models_in_anthropics_shape(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
    page = client.models.list()
    ids = [model.id for model in page]
    assert {"anthropic", "auto", "claude-sonnet-4-5"} <= set(ids) and page.has_more is False
    assert (page.first_id, page.last_id) == (ids[0], ids[-1])
    model = client.models.retrieve("claude-sonnet-4-5")
    assert (model.type, model.id, model.display_name) == ("model", "claude-sonnet-4-5", "claude-sonnet-4-5")
    assert model.created_at.tzinfo is not None and model.created_at.year >= 2024
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.models.retrieve("claude-9")
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


BETAS = ["interleaved-thinking-2025-05-14", "context-management-2025-06-27"]


def test_an_anthropic_clients_beta_features_reach_anthropic_and_only_anthropic(stack: Stack) -> None:
    """Claude refuses a body that uses a beta feature without its `anthropic-beta`: the one client
    header sent on, and only with the client's own Messages body."""
    client = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
    hi: Any = [{"role": "user", "content": "hi"}]
    client.beta.messages.create(model="anthropic", max_tokens=50, messages=hi, betas=BETAS)
    assert last_request(stack, "claude").headers["anthropic-beta"] == ",".join(BETAS)
    client.beta.messages.count_tokens(model="anthropic", messages=hi, betas=BETAS)  # the SDK adds its own
    assert set(BETAS) < set(last_request(stack, "claude").headers["anthropic-beta"].split(","))
    client.beta.messages.create(model="openai", max_tokens=50, messages=hi, betas=BETAS)
    assert "anthropic-beta" not in last_request(stack, "oai").headers
    openai_client(stack).chat.completions.create(model="anthropic", messages=hi)
    assert "anthropic-beta" not in last_request(stack, "claude").headers
    edits = {"edits": [{"type": "clear_tool_uses_20250919"}]}  # as Claude Code sends it, with its beta
    client.beta.messages.create(model="anthropic", max_tokens=50, messages=hi, betas=BETAS,
                                extra_body={"context_management": edits})
    assert last_request(stack, "claude").body["context_management"] == edits
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="anthropic", max_tokens=50, messages=hi,
                               extra_headers={"anthropic-beta": "a;b=c"})
    assert "anthropic-beta" in refused.value.message


def test_the_apps_authorization_is_never_forwarded_upstream(stack: Stack) -> None:
    openai_client(stack).chat.completions.create(model="openai", messages=[{"role": "user", "content": "hi"}])
    headers = last_request(stack, "oai").headers
    assert headers["Authorization"] == f"Bearer {KEYS['oai']}"
    anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0).messages.create(
        model="anthropic", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    sent = last_request(stack, "claude").headers
    assert sent["x-api-key"] == KEYS["claude"] and "app-key" not in str(dict(sent))


def test_rules_choose_the_tier_for_auto(stack: Stack) -> None:
    client = openai_client(stack)
    code = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "```python\ndef f(x):\n    return x\n```"}])
    assert code.headers["x-llmroute-tier"] == "anthropic"
    word = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "ask gemini please"}])
    assert word.headers["x-llmroute-tier"] == "gemini"
    plain = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello"}])
    assert plain.headers["x-llmroute-tier"] == "openai"


def test_a_concrete_model_name_picks_the_targets_serving_it(stack: Stack) -> None:
    raw = openai_client(stack).chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-llmroute-provider"] == "claude"
    assert raw.headers["x-llmroute-model"] == "claude-sonnet-4-5"


def test_status_totals_spend_per_route_tier_and_target(stack: Stack) -> None:
    import json as _json
    import urllib.request

    client = openai_client(stack)
    raw = client.chat.completions.with_raw_response.create(model="anthropic", messages=[{"role": "user", "content": "hi"}])
    cost = float(raw.headers["x-llmroute-cost-usd"])
    with urllib.request.urlopen(stack.admin_url + "/status") as response:
        spend = _json.loads(response.read())["spend"]
    target = spend["targets"]["claude/claude-sonnet-4-5@here"]
    assert target["cost_usd"] >= cost > 0 and target["requests"] >= 1 and target["output_tokens"] > 0
    assert spend["tiers"]["main/anthropic"]["cost_usd"] >= cost
    assert spend["routes"]["main"]["cost_usd"] >= spend["tiers"]["main/anthropic"]["cost_usd"]


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}


def test_an_anthropic_only_messages_request_goes_natively_to_anthropic_targets(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="anthropic", max_tokens=100, tools=[WEB_SEARCH],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "search the news"}])
    assert raw.headers["x-llmroute-provider"] == "claude"
    assert raw.parse().content
    sent = last_request(stack, "claude").body
    assert sent["tools"] == [WEB_SEARCH]  # forwarded as the client wrote it


MCP = [{"type": "url", "url": "https://mcp.example.test/sse", "name": "docs"}]


def test_mcp_servers_are_served_only_by_anthropic_and_context_management_is_left_out_elsewhere(
        stack: Stack) -> None:
    """Claude calls the MCP servers itself: another provider would answer without their tools."""
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)
    ask: Any = [{"role": "user", "content": "what do the docs say?"}]
    client.beta.messages.create(model="anthropic", max_tokens=100, messages=ask, betas=["mcp-client-2025-04-04"],
                                extra_body={"mcp_servers": MCP})
    assert last_request(stack, "claude").body["mcp_servers"] == MCP
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.messages.create(model="openai", max_tokens=100, messages=ask, betas=["mcp-client-2025-04-04"],
                                    extra_body={"mcp_servers": MCP})
    assert caught.value.body["error"]["message"].startswith("Claude itself calls the MCP servers")  # type: ignore[index]
    edits = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    answer = client.beta.messages.create(model="gemini", max_tokens=100, messages=ask,
                                         betas=["context-management-2025-06-27"],
                                         extra_body={"context_management": edits})
    assert answer.content and "context_management" not in last_request(stack, "gem").body


def test_an_anthropic_only_messages_request_is_refused_where_no_anthropic_target_exists(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="openai", max_tokens=100, tools=[WEB_SEARCH],  # type: ignore[list-item]
                               messages=[{"role": "user", "content": "search the news"}])
    assert "web_search" in caught.value.message and "no Anthropic target" in caught.value.message
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
