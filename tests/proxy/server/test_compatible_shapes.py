"""The official SDKs through the sidecar to OpenAI-compatible servers that stream in their own shapes
(`compatible`, see `sim/openai.py`): Gemini's OpenAI endpoint (each tool call whole in one delta without
its `index`, and streamed tool calls that finish with `stop`), OpenRouter (keep-alive comments before the
first chunk) and vLLM (a choice's finish on its last delta). Each client must get what it would from
OpenAI: the same text, the same calls, one finish, whole or streamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from llmroute_proxy.sim import openai_app
from tests.proxy.documents import model, provider, route, target
from tests.proxy.server.conftest import (
    anthropic_client,
    calls_streamed_as_whole,
    openai_client,
    text_streamed_as_whole,
)
from tests.proxy.stack import Stack

SERVERS = ("gemini", "openrouter", "vllm")
CONFIG = [*(provider(server, "openai-compatible", "{%s}/v1" % server, key_env="TEST_COMPATIBLE_KEY",
                     models=[model("gpt-4o-mini")]) for server in SERVERS),
          route("main", {server: [target(server, "gpt-4o-mini")] for server in SERVERS}, default_tier="vllm")]
WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}}
CLOCK: Any = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {}}}}
EXPECTED_ARGUMENTS = {"get_weather": {"city": "sim"}, "get_time": {}}
ASK: Any = [{"role": "user", "content": "tell me a story"}]
BOTH: Any = [{"role": "user", "content": "Weather and time?"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sims = {server: (lambda faults, server=server: openai_app(None, name=f"sim-{server}", faults=faults,
                                                              compatible=server, quirks=True))
            for server in SERVERS}
    with Stack(tmp_path_factory.mktemp("compatible"), config=CONFIG, extra_sims=sims,
               environ={"TEST_COMPATIBLE_KEY": "sk-compatible"}) as running:
        yield running


@pytest.mark.parametrize("server", SERVERS)
def test_text_reaches_the_openai_sdk_whole_and_streamed(stack: Stack, server: str) -> None:
    text_streamed_as_whole(stack, server, ASK)


@pytest.mark.parametrize("server", SERVERS)
def test_text_reaches_the_anthropic_and_responses_sdks(stack: Stack, server: str) -> None:
    with anthropic_client(stack).messages.stream(model=server, max_tokens=200, messages=ASK) as stream:
        message = stream.get_final_message()
    assert "".join(b.text for b in message.content if b.type == "text").endswith("You said: tell me a story")
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    with openai_client(stack).responses.stream(model=server, input="tell me a story") as rstream:
        response = rstream.get_final_response()
    assert response.output_text.endswith("You said: tell me a story") and response.status == "completed"


@pytest.mark.parametrize("server", SERVERS)
def test_parallel_tool_calls_reach_the_openai_sdk_whole(stack: Stack, server: str) -> None:
    """The SDK's stream helper files each fragment under its `index`: a delta without one crashed it
    (TypeError, openai/openai-python#2806); and a tool call ends with `tool_calls`, streamed or not."""
    calls_streamed_as_whole(stack, server, [WEATHER, CLOCK], EXPECTED_ARGUMENTS)


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("streamed", [False, True])
def test_parallel_tool_calls_reach_the_anthropic_sdk_as_tool_use(stack: Stack, server: str, streamed: bool) -> None:
    tools: Any = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in (WEATHER, CLOCK)]
    client = anthropic_client(stack)
    if streamed:
        with client.messages.stream(model=server, max_tokens=200, tools=tools, messages=BOTH) as stream:
            message = stream.get_final_message()
    else:
        message = client.messages.create(model=server, max_tokens=200, tools=tools, messages=BOTH)
    uses = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use"
    assert {use.name: use.input for use in uses} == EXPECTED_ARGUMENTS and len({use.id for use in uses}) == 2


@pytest.mark.parametrize("server", SERVERS)
def test_parallel_tool_calls_reach_the_responses_sdk(stack: Stack, server: str) -> None:
    tools: Any = [{"type": "function", **t["function"]} for t in (WEATHER, CLOCK)]
    with openai_client(stack).responses.stream(model=server, input="Weather and time?", tools=tools) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert final.status == "completed"
    assert {call.name: json.loads(call.arguments) for call in calls} == EXPECTED_ARGUMENTS
