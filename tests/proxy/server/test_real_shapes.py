"""The official SDKs through the sidecar to simulators that answer in their real APIs' untidy shapes
(`quirks`: pings, null fields, obfuscation, parallel tool calls, a text block before tool use, a finish
or usage on a chunk of its own, candidates without an index, errors wrapped in arrays…), and the
answers real models give that the tidy simulators never do: refusals and blocked prompts.

The same requests pass against the tidy simulators in test_sdk_clients.py: together they show that no
parser or translator depends on the tidiest form (issue 9).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from llmroute_proxy.sim import Fault, FaultKind, sim_state
from llmroute_proxy.sim.anthropic import REDACT, THINKING, redacted_data, signature
from llmroute_proxy.sim.gemini import THOUGHTS_TOKENS
from llmroute_proxy.sim.openai import REFUSAL_TEXT
from tests.proxy.documents import model, provider, route, target
from tests.proxy.server.conftest import (
    anthropic_client,
    calls_streamed_as_whole,
    last_request,
    openai_client,
    text_streamed_as_whole,
)
from tests.proxy.stack import Stack

TIERS = {"openai": "oai", "anthropic": "claude", "gemini": "gem"}
WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
CLOCK: Any = {"type": "function", "function": {
    "name": "get_time", "description": "The time now", "strict": True,
    "parameters": {"type": "object", "properties": {}, "required": [], "additionalProperties": False}}}
EXPECTED_ARGUMENTS = {"get_weather": {"city": "sim"}, "get_time": {}}
ASK = [{"role": "user", "content": "tell me a story"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("quirks"), quirks=True) as running:
        yield running


@pytest.mark.parametrize("tier", TIERS)
def test_text_streamed_counts_what_the_whole_answer_counts(stack: Stack, tier: str) -> None:
    text_streamed_as_whole(stack, tier, ASK)


@pytest.mark.parametrize("tier", TIERS)
def test_parallel_tool_calls_reach_the_openai_sdk_whole(stack: Stack, tier: str) -> None:
    calls_streamed_as_whole(stack, tier, [WEATHER, CLOCK], EXPECTED_ARGUMENTS)


@pytest.mark.parametrize("tier", TIERS)
def test_parallel_tool_use_reaches_the_anthropic_sdk_whole(stack: Stack, tier: str) -> None:
    tools: Any = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in (WEATHER, CLOCK)]
    with anthropic_client(stack).messages.stream(model=tier, max_tokens=200, tools=tools,
                                                 messages=[{"role": "user", "content": "Weather and time?"}]) as stream:
        final = stream.get_final_message()
    uses = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use"
    assert {use.name: use.input for use in uses} == EXPECTED_ARGUMENTS
    assert all(use.id.startswith("toolu_") or use.id.startswith("call_") for use in uses)


@pytest.mark.parametrize("tier", TIERS)
def test_parallel_function_calls_reach_the_responses_sdk_whole(stack: Stack, tier: str) -> None:
    """A call without parameters (Claude streams it as one empty `input_json_delta`) reaches the
    Responses client with `arguments: "{}"`, in its `.done` event as in the final response."""
    tools: Any = [{"type": "function", **t["function"]} for t in (WEATHER, CLOCK)]
    with openai_client(stack).responses.stream(model=tier, input="Weather and time?", tools=tools) as stream:
        done = {event.name: event.arguments for event in stream
                if event.type == "response.function_call_arguments.done"}
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert final.status == "completed"
    assert {call.name: json.loads(call.arguments) for call in calls} == EXPECTED_ARGUMENTS
    assert done == {call.name: call.arguments for call in calls} and done["get_time"] == "{}"


@pytest.mark.parametrize("tier", TIERS)
def test_text_reaches_the_anthropic_and_responses_sdks(stack: Stack, tier: str) -> None:
    with anthropic_client(stack).messages.stream(model=tier, max_tokens=200, messages=ASK) as stream:  # type: ignore[arg-type]
        message = stream.get_final_message()
    assert "You said: tell me a story" in "".join(b.text for b in message.content if b.type == "text")
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    with openai_client(stack).responses.stream(model=tier, input="tell me a story") as stream:
        response = stream.get_final_response()
    assert "You said: tell me a story" in response.output_text
    assert response.status == "completed" and response.usage is not None and response.usage.output_tokens > 0


FILTERED = {"openai": "stop", "anthropic": "content_filter", "gemini": "content_filter"}


@pytest.mark.parametrize("tier", TIERS)
def test_a_refusal_reaches_the_openai_sdk_as_the_provider_meant_it(stack: Stack, tier: str) -> None:
    client = openai_client(stack)
    stack.faults[TIERS[tier]].next(Fault(FaultKind.REFUSAL), count=2)
    whole = client.chat.completions.create(model=tier, messages=ASK)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model=tier, messages=ASK, stream=True))  # type: ignore[arg-type]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert whole.choices[0].finish_reason == FILTERED[tier] and finishes == [FILTERED[tier]]
    assert not whole.choices[0].message.content
    if tier == "openai":
        assert whole.choices[0].message.refusal == REFUSAL_TEXT
        assert "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices) == REFUSAL_TEXT


@pytest.mark.parametrize("tier", TIERS)
def test_a_refusal_reaches_the_responses_and_anthropic_sdks(stack: Stack, tier: str) -> None:
    stack.faults[TIERS[tier]].next(Fault(FaultKind.REFUSAL), count=2)
    with openai_client(stack).responses.stream(model=tier, input="tell me a story") as stream:
        events = list(stream)  # the SDK's get_final_response() takes only a `response.completed`
    last = events[-1]
    assert last.type in ("response.completed", "response.incomplete")
    response = last.response
    if tier == "openai":
        parts = [part for item in response.output if item.type == "message" for part in item.content]
        assert response.status == "completed" and [p.type for p in parts] == ["refusal"]
    else:
        assert response.status == "incomplete" and response.incomplete_details is not None
        assert response.incomplete_details.reason == "content_filter"
    with anthropic_client(stack).messages.stream(model=tier, max_tokens=200, messages=ASK) as astream:  # type: ignore[arg-type]
        message = astream.get_final_message()
    assert message.stop_reason == ("end_turn" if tier == "openai" else "refusal")


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("stream", [False, True])
def test_a_blocked_prompt_is_a_400_for_the_client(stack: Stack, tier: str, stream: bool) -> None:
    stack.faults[TIERS[tier]].next(Fault(FaultKind.PROMPT_BLOCKED))
    with pytest.raises(openai.BadRequestError) as caught:
        created = openai_client(stack).chat.completions.create(model=tier, messages=ASK, stream=stream)  # type: ignore[call-overload]
        if stream:
            list(created)
    assert caught.value.status_code == 400
    assert caught.value.code in ("content_filter", "invalid_prompt", None)


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_errors_in_a_json_array_are_classified_like_plain_ones(stack: Stack, stream: bool) -> None:
    stack.call(lambda: stack.faults["gem"].always(Fault(FaultKind.STATUS, status=429, retry_after=30)))
    with pytest.raises(openai.RateLimitError) as limited:  # not a 502 over an unreadable body
        created = openai_client(stack).chat.completions.create(model="gemini", messages=ASK, stream=stream)  # type: ignore[call-overload]
        if stream:
            list(created)
    assert 25 <= int(limited.value.response.headers["retry-after"]) <= 30  # RetryInfo, read inside the array
    stack.call(lambda: stack.faults["gem"].always(
        Fault(FaultKind.STATUS, status=400, message="* contents: parts is empty")))
    with pytest.raises(openai.BadRequestError) as refused:
        created = openai_client(stack).chat.completions.create(model="gemini", messages=ASK, stream=stream)  # type: ignore[call-overload]
        if stream:
            list(created)
    assert "parts is empty" in refused.value.message


@pytest.mark.parametrize("tier", TIERS)
def test_usage_adds_up_and_gemini_thinking_counts_as_reasoning(stack: Stack, tier: str) -> None:
    whole = openai_client(stack).chat.completions.create(model=tier, messages=ASK)  # type: ignore[arg-type]
    usage = whole.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    reasoning = usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details else 0
    assert reasoning == (THOUGHTS_TOKENS if tier == "gemini" else 0)
    assert usage.completion_tokens > (reasoning or 0)


def test_claudes_thinking_block_reaches_each_sdk_in_its_own_place(stack: Stack) -> None:
    with anthropic_client(stack).messages.stream(model="anthropic", max_tokens=4000, messages=ASK,  # type: ignore[arg-type]
                                                 thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].signature == signature("sim-anthropic", THINKING) and message.content[0].thinking == THINKING  # type: ignore[union-attr]
    chat = openai_client(stack).chat.completions.create(model="anthropic", messages=ASK,  # type: ignore[arg-type]
                                                        reasoning_effort="low")
    assert chat.choices[0].message.content and THINKING not in chat.choices[0].message.content
    with openai_client(stack).responses.stream(model="anthropic", input="tell me a story",
                                               reasoning={"effort": "low"}) as rstream:
        response = rstream.get_final_response()
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert "You said: tell me a story" in response.output_text and THINKING not in response.output_text


def test_a_tool_loop_with_reasoning_effort_goes_on_with_claude(stack: Stack) -> None:
    """Claude refuses manual thinking over a last tool turn that does not start with its thinking block,
    which OpenAI clients cannot send back: the second step of the loop must still be answered."""
    client = openai_client(stack)
    ask: Any = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="anthropic", messages=ask, tools=[WEATHER], reasoning_effort="low")
    calls = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    replay: Any = [*ask, first.choices[0].message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": calls[0].id, "content": "18C and cloudy"}]
    second = client.chat.completions.create(model="anthropic", messages=replay, tools=[WEATHER], reasoning_effort="low")
    assert "18C and cloudy" in (second.choices[0].message.content or "")
    tools: Any = [{"type": "function", **WEATHER["function"]}]
    sdk = openai_client(stack)
    answer = sdk.responses.create(model="anthropic", input="Weather in Paris?", tools=tools, reasoning={"effort": "low"})
    call = next(item for item in answer.output if item.type == "function_call")
    after = sdk.responses.create(model="anthropic", tools=tools, reasoning={"effort": "low"}, input=[
        {"role": "user", "content": "Weather in Paris?"}, *[item.model_dump(exclude_none=True) for item in answer.output],  # type: ignore[misc]
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C and cloudy"}])
    assert "18C and cloudy" in after.output_text


@pytest.mark.parametrize("fields", [{"tool_choice": "required", "tools": [WEATHER]}, {"temperature": 0.2},
                                    {"top_p": 0.5}], ids=["forced-tool", "temperature", "top_p"])
def test_reasoning_effort_beside_what_claude_thinks_without_is_answered(stack: Stack, fields: dict[str, Any]) -> None:
    """Claude refuses thinking with a forced tool call or non-default sampling: the OpenAI client, whose
    request OpenAI's models take, still gets its answer."""
    answer = openai_client(stack).chat.completions.create(model="anthropic", messages=ASK,  # type: ignore[arg-type]
                                                          reasoning_effort="low", **fields)
    if "tools" in fields:
        assert [call.function.name for call in answer.choices[0].message.tool_calls or []] == ["get_weather"]
    else:
        assert "You said: tell me a story" in (answer.choices[0].message.content or "")


def test_gemini_thinking_that_uses_up_the_tokens_is_a_cut_answer_for_each_sdk(stack: Stack) -> None:
    """Gemini 2.5 counts its thinking in maxOutputTokens: a small limit is answered by a candidate whose
    content has no parts, finishReason MAX_TOKENS, and only thoughts in the usage."""
    client = openai_client(stack)
    whole = client.chat.completions.create(model="gemini", messages=ASK, max_completion_tokens=5)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="gemini", messages=ASK, max_completion_tokens=5, stream=True,  # type: ignore[arg-type]
                                                 stream_options={"include_usage": True}))
    assert whole.choices[0].finish_reason == "length" and not whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    for usage in (whole.usage, chunks[-1].usage):
        assert usage is not None and usage.completion_tokens == 5
        assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 5
    with anthropic_client(stack).messages.stream(model="gemini", max_tokens=5, messages=ASK) as stream:  # type: ignore[arg-type]
        message = stream.get_final_message()
    assert message.stop_reason == "max_tokens" and message.content == [] and message.usage.output_tokens == 5


@pytest.mark.parametrize("call_id", ["functions.get_weather:0", "call_8f3a|fc_68e2b1c9", "call_ok-1"])
def test_a_history_with_another_providers_tool_call_ids_goes_on_with_claude(stack: Stack, call_id: str) -> None:
    """Claude takes only `^[a-zA-Z0-9_-]+$` tool ids (Kimi writes `functions.name:0`, Responses items carry
    `|`): a conversation begun on such a provider goes on after a failover to Claude."""
    history: Any = [{"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": call_id, "type": "function", "function": {"name": "get_weather",
                                                                       "arguments": '{"city": "Paris"}'}}]},
                    {"role": "tool", "tool_call_id": call_id, "content": "18C and cloudy"}]
    answer = openai_client(stack).chat.completions.create(model="anthropic", messages=history, tools=[WEATHER])
    assert "18C and cloudy" in (answer.choices[0].message.content or "")
    sent = last_request(stack, "claude").body["messages"]
    assert sent[1]["content"][0]["id"] == sent[2]["content"][0]["tool_use_id"]
    assert (sent[1]["content"][0]["id"] == call_id) is (call_id == "call_ok-1")


def test_redacted_thinking_reaches_the_anthropic_sdk_and_hides_from_the_others(stack: Stack) -> None:
    """Claude's `redacted_thinking` block (opaque `data`, no deltas when streamed), triggered by the string
    Anthropic documents for testing it: relayed to Anthropic clients, left out of the others' answers."""
    ask: Any = [{"role": "user", "content": REDACT}]
    with anthropic_client(stack).messages.stream(model="anthropic", max_tokens=4000, messages=ask,
                                                 thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["redacted_thinking", "text"]
    assert message.content[0].data == redacted_data("sim-anthropic")  # type: ignore[union-attr]
    client = openai_client(stack)
    whole = client.chat.completions.create(model="anthropic", messages=ask, reasoning_effort="low")
    chunks = list(client.chat.completions.create(model="anthropic", messages=ask, reasoning_effort="low", stream=True))
    for text in (whole.choices[0].message.content or "", "".join(c.choices[0].delta.content or "" for c in chunks
                                                                if c.choices)):
        assert text.startswith("[sim-anthropic") and redacted_data("sim-anthropic") not in text
    with client.responses.stream(model="anthropic", input=REDACT, reasoning={"effort": "low"}) as rstream:
        response = rstream.get_final_response()
    assert [item.type for item in response.output] == ["reasoning", "message"] and response.status == "completed"
    assert response.output[0].summary == [] and response.output[0].encrypted_content is None  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def gemini_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    gem = provider("gem", "gemini", "{gem}", key_env="TEST_GEM_KEY", models=[
        model(name) for name in ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite")])
    tiers = {name: [target("gem", name)] for name in ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite")}
    with Stack(tmp_path_factory.mktemp("gemini-models"), config=[gem, route("main", tiers, default_tier="gemini-2.5-pro")],
               quirks=True) as running:
        yield running


@pytest.mark.parametrize("tier", ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"])
@pytest.mark.parametrize("effort", ["none", "minimal", "high", "max"])
def test_every_reasoning_effort_is_a_budget_the_gemini_model_takes(gemini_models: Stack, tier: str,
                                                                     effort: str) -> None:
    """Gemini 2.5 Pro cannot stop thinking (budget 0 is a 400) and Flash-Lite thinks at least 512 tokens
    when it thinks at all: each effort must still be answered."""
    answer = openai_client(gemini_models).chat.completions.create(model=tier, messages=ASK,  # type: ignore[arg-type]
                                                                  reasoning_effort=effort)  # type: ignore[arg-type]
    assert "You said: tell me a story" in (answer.choices[0].message.content or "")


@pytest.mark.parametrize("spoken", ["\n\n", " "])
def test_blank_text_beside_tool_calls_goes_on_with_claude(stack: Stack, spoken: str) -> None:
    """Models often write "\\n\\n" before their tool calls, and clients send it back; Claude refuses a text
    block of whitespace (400 "text content blocks must contain non-whitespace text")."""
    history: Any = [{"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": spoken, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                        "arguments": '{"city": "Paris"}'}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "18C and cloudy"},
                    {"role": "assistant", "content": spoken},
                    {"role": "user", "content": [{"type": "text", "text": spoken}, {"type": "text", "text": "Thanks!"}]}]
    answer = openai_client(stack).chat.completions.create(model="anthropic", messages=history, tools=[WEATHER])
    assert "18C and cloudy" in (answer.choices[0].message.content or "")
    sent = last_request(stack, "claude").body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent[1]["content"]] == ["tool_use"]
    assert [b.get("text") for b in sent[2]["content"]] == [None, "Thanks!"]  # the tool result, then the text


@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_function_call_from_gemini_is_asked_again_unseen(stack: Stack, stream: bool) -> None:
    """Gemini 2.5 now and then writes code instead of a call (finishReason MALFORMED_FUNCTION_CALL, no
    content): an upstream failure before any output, so the client gets the next attempt's call."""
    before = stack.call(lambda: sim_state(stack.sims["gem"].app).stats.total)
    stack.faults["gem"].next(Fault(FaultKind.MALFORMED_CALL))
    ask: Any = [{"role": "user", "content": "Weather in Paris?"}]
    client = openai_client(stack)
    if stream:
        with client.chat.completions.stream(model="gemini", messages=ask, tools=[WEATHER]) as streamed:
            completion = streamed.get_final_completion()
    else:
        completion = client.chat.completions.create(model="gemini", messages=ask, tools=[WEATHER])
    calls = completion.choices[0].message.tool_calls or []
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "sim"})]
    assert stack.call(lambda: sim_state(stack.sims["gem"].app).stats.total) == before + 2


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_answer_from_gemini_is_asked_again_unseen(stack: Stack, stream: bool) -> None:
    """Gemini 2.5 now and then ends with STOP and nothing said (its content has no parts): a failure
    of the provider before any output, so the client gets the next attempt's answer."""
    before = stack.call(lambda: sim_state(stack.sims["gem"].app).stats.total)
    stack.faults["gem"].next(Fault(FaultKind.EMPTY_ANSWER))
    ask: Any = [{"role": "user", "content": "Say hello, gemini"}]
    client = openai_client(stack)
    if stream:
        with client.chat.completions.stream(model="gemini", messages=ask) as streamed:
            completion = streamed.get_final_completion()
    else:
        completion = client.chat.completions.create(model="gemini", messages=ask)
    assert "Say hello, gemini" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert stack.call(lambda: sim_state(stack.sims["gem"].app).stats.total) == before + 2


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("streamed", [False, True])
def test_a_named_tool_call_is_tool_use_for_the_anthropic_sdk(stack: Stack, tier: str, streamed: bool) -> None:
    """OpenAI finishes a call the request named with `stop`, not `tool_calls` (vllm-project/vllm#25054); Claude
    says `tool_use` for every answer that calls a tool, and agent loops run the calls only then."""
    tools: Any = [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]
    ask: Any = {"model": tier, "max_tokens": 200, "tools": tools, "tool_choice": {"type": "tool", "name": "get_weather"},
                "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    client = anthropic_client(stack)
    if streamed:
        with client.messages.stream(**ask) as stream:
            message = stream.get_final_message()
    else:
        message = client.messages.create(**ask)
    assert message.stop_reason == "tool_use"
    assert [block.input for block in message.content if block.type == "tool_use"] == [{"city": "sim"}]


@pytest.mark.parametrize("tier", ["anthropic", "gemini"])
@pytest.mark.parametrize("streamed", [False, True])
def test_a_safety_stop_mid_answer_reaches_each_sdk_as_a_filtered_answer(stack: Stack, tier: str,
                                                                         streamed: bool) -> None:
    """Claude 4's classifiers and Gemini's safety filter stop an answer after part of it was sent (Claude:
    `stop_reason: refusal` after text deltas; Gemini: `finishReason: SAFETY` on a chunk with text): the part
    said stays, and every client is told the answer was stopped by a filter."""
    stack.faults[TIERS[tier]].next(Fault(FaultKind.REFUSAL, tokens=2), count=3)
    client = openai_client(stack)
    if streamed:  # the SDK's stream helper raises on a content_filter finish: the chunks, as they come
        chunks = list(client.chat.completions.create(model=tier, messages=ASK, stream=True,  # type: ignore[arg-type]
                                                     stream_options={"include_usage": True}))
        said = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = chunks[-1].usage
    else:
        completion = client.chat.completions.create(model=tier, messages=ASK)  # type: ignore[arg-type]
        said, finishes, usage = completion.choices[0].message.content or "", [completion.choices[0].finish_reason], \
            completion.usage
    assert finishes == ["content_filter"] and said and "tell me a story" not in said
    assert usage is not None and usage.completion_tokens > 0
    if streamed:
        with client.responses.stream(model=tier, input="tell me a story") as rstream:
            response = list(rstream)[-1].response  # type: ignore[union-attr]
    else:
        response = client.responses.create(model=tier, input="tell me a story")
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "content_filter" and response.output_text == said
    claude = anthropic_client(stack)
    if streamed:
        with claude.messages.stream(model=tier, max_tokens=200, messages=ASK) as astream:  # type: ignore[arg-type]
            message = astream.get_final_message()
    else:
        message = claude.messages.create(model=tier, max_tokens=200, messages=ASK)  # type: ignore[arg-type]
    assert message.stop_reason == "refusal" and [b.text for b in message.content if b.type == "text"] == [said]
