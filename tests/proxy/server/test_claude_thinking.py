"""A tool loop with Claude's extended thinking, through every front door that is not Claude's own.

Claude answers a tool call after a signed thinking block and refuses the next step unless the
assistant turn sends that block back first, signature and all. Chat completions clients get the
blocks as `thinking_blocks` on the assistant message (LiteLLM's name) and send them back there;
Responses clients get them inside a reasoning item's `encrypted_content`. Only the Claude account
that signed a block takes it back: after a failover to another one the turn is answered without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from llmroute_proxy.sim import Fault, FaultKind, anthropic_app
from llmroute_proxy.sim.anthropic import THINKING, signature
from tests.proxy.documents import provider, target, with_tier
from tests.proxy.server.conftest import last_request, sim_requests
from tests.proxy.stack import CLAUDE, DOCUMENTS, KEYS, Stack

WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK: Any = [{"role": "user", "content": "Weather in Paris?"}]
CLAUDE_B = provider("claude-b", "anthropic", "{claude_b}", key_env="TEST_CLAUDE_KEY",
                    models=CLAUDE["spec"]["models"])
CONFIG = with_tier([*DOCUMENTS, CLAUDE_B], "main", "claude-ha", [
    target("claude", "claude-sonnet-4-5"), target("claude-b", "claude-sonnet-4-5", priority=1)])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack's Claude (`sim-anthropic`) and a second account of it (`sim-anthropic-b`), which signs
    its thinking otherwise and so refuses the first one's blocks."""
    claude_b = {"claude-b": lambda faults: anthropic_app(KEYS["claude"], name="sim-anthropic-b", faults=faults)}
    with Stack(tmp_path_factory.mktemp("thinking"), config=CONFIG, extra_sims=claude_b) as running:
        yield running


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)


def first_step(stack: Stack, tier: str, stream: bool) -> dict[str, Any]:
    """The assistant message that calls the tool, as the client sends it back: whole, or put together
    from the stream's deltas (`thinking_blocks` fragments joined by index, as tool calls are)."""
    sdk = client(stack)
    if not stream:
        answer = sdk.chat.completions.create(model=tier, messages=ASK, tools=[WEATHER], reasoning_effort="low")
        return answer.choices[0].message.model_dump(exclude_none=True)
    blocks: dict[int, dict[str, Any]] = {}
    calls: dict[int, dict[str, Any]] = {}
    for chunk in sdk.chat.completions.create(model=tier, messages=ASK, tools=[WEATHER], reasoning_effort="low",
                                             stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        for piece in (delta.model_extra or {}).get("thinking_blocks") or () if delta else ():
            block = blocks.setdefault(piece["index"], {"type": piece["type"]})
            block["thinking"] = block.get("thinking", "") + piece.get("thinking", "")
            block.update({name: piece[name] for name in ("signature",) if name in piece})
        for call in (delta.tool_calls or []) if delta else []:
            entry = calls.setdefault(call.index, {"id": call.id, "type": "function",
                                                  "function": {"name": call.function.name, "arguments": ""}})  # type: ignore[union-attr]
            entry["function"]["arguments"] += call.function.arguments or ""  # type: ignore[union-attr]
    return {"role": "assistant", "content": None, "tool_calls": list(calls.values()),
            "thinking_blocks": [blocks[i] for i in sorted(blocks)]}


def next_step(stack: Stack, tier: str, step: dict[str, Any], stream: bool = False, **fields: Any) -> str:
    """The loop's next step: the tool's result after the assistant message, and the answer's text."""
    replay: Any = [*ASK, step, {"role": "tool", "tool_call_id": step["tool_calls"][0]["id"], "content": "18C, cloudy"}]
    sdk = client(stack)
    fields = fields or {"reasoning_effort": "low"}
    if not stream:
        answer = sdk.chat.completions.create(model=tier, messages=replay, tools=[WEATHER], **fields)
        return answer.choices[0].message.content or ""
    chunks = sdk.chat.completions.create(model=tier, messages=replay, tools=[WEATHER], stream=True, **fields)
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_chat_tool_loop_sends_claudes_signed_thinking_back_first(stack: Stack, stream: bool) -> None:
    step = first_step(stack, "anthropic", stream)
    assert step["thinking_blocks"] == [{"type": "thinking", "thinking": THINKING,
                                        "signature": signature("sim-anthropic", THINKING)}]
    assert "18C, cloudy" in next_step(stack, "anthropic", step, stream)
    sent = last_request(stack, "claude").body
    assert sent["thinking"]["type"] == "enabled"  # the tool turn thinks on, as it began
    assert [block["type"] for block in sent["messages"][1]["content"]] == ["thinking", "tool_use"]
    assert sent["messages"][1]["content"][0] == step["thinking_blocks"][0]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_two_answers_with_their_thinking_in_a_row_are_one_turn_claude_takes(stack: Stack, stream: bool) -> None:
    """An answer and then a tool call, each with Claude's blocks and no user turn between, are one turn to
    Claude, which refuses a block behind the other answer's text: the turn opens with the first one's alone."""
    said = client(stack).chat.completions.create(model="anthropic", messages=ASK, reasoning_effort="low")
    answer = said.choices[0].message.model_dump(exclude_none=True)
    step = first_step(stack, "anthropic", stream)
    assert answer["thinking_blocks"] and step["thinking_blocks"]
    loop: Any = [*ASK, answer, step, {"role": "tool", "tool_call_id": step["tool_calls"][0]["id"],
                                      "content": "18C, cloudy"}]
    after = client(stack).chat.completions.create(model="anthropic", messages=loop, tools=[WEATHER],
                                                  reasoning_effort="low")
    assert "18C, cloudy" in (after.choices[0].message.content or "")
    sent = last_request(stack, "claude").body
    assert sent["thinking"]["type"] == "enabled"
    assert [block["type"] for block in sent["messages"][1]["content"]] == ["thinking", "text", "tool_use"]
    assert sent["messages"][1]["content"][0] == answer["thinking_blocks"][0]


@pytest.mark.parametrize(("tier", "sim"), [("openai", "oai"), ("gemini", "gem")])
def test_other_providers_are_sent_no_thinking_blocks(stack: Stack, tier: str, sim: str) -> None:
    step = first_step(stack, "anthropic", stream=False)
    assert "18C, cloudy" in next_step(stack, tier, step, temperature=1)  # gpt-4o-mini does not reason
    assert "thinking_blocks" not in str(last_request(stack, sim).body)


@pytest.mark.parametrize(("blocks", "param"), [
    ([{"type": "thinking", "thinking": "hm"}], "messages[1].thinking_blocks[0].signature"),
    ([{"type": "secret"}], "messages[1].thinking_blocks[0].type"),
    ("thinking", "messages[1].thinking_blocks"),
])
def test_a_malformed_thinking_block_is_a_400_naming_its_member(stack: Stack, blocks: Any, param: str) -> None:
    before = sim_requests(stack, "claude")
    step = {"role": "assistant", "content": "Let me look.", "thinking_blocks": blocks}
    with pytest.raises(openai.BadRequestError) as refused:
        client(stack).chat.completions.create(model="anthropic", messages=[*ASK, step, *ASK])
    assert refused.value.param == param and param in refused.value.message  # type: ignore[attr-defined]
    assert sim_requests(stack, "claude") == before


TOOLS: Any = [{"type": "function", **WEATHER["function"]}]
QUESTION: Any = [{"role": "user", "content": "Weather in Paris?"}]


def respond(stack: Stack, stream: bool, **fields: Any) -> Any:
    """A Responses answer (`responses.create`, or `responses.stream`'s final response) about the weather."""
    sdk = client(stack)
    fields = {"model": "anthropic", "tools": TOOLS, "reasoning": {"effort": "low"}, **fields}
    if not stream:
        return sdk.responses.create(**fields)
    with sdk.responses.stream(**fields) as events:
        return events.get_final_response()


def tool_output(answer: Any) -> dict[str, Any]:
    call = next(item for item in answer.output if item.type == "function_call")
    return {"type": "function_call_output", "call_id": call.call_id, "output": "18C, cloudy"}


def claude_was_sent_its_thinking(stack: Stack) -> bool:
    sent = last_request(stack, "claude").body
    first = sent["messages"][1]["content"][0]
    return sent["thinking"]["type"] == "enabled" and first["signature"] == signature("sim-anthropic", THINKING)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_responses_client_that_includes_encrypted_reasoning_passes_claudes_thinking_back(
        stack: Stack, stream: bool) -> None:
    answer = respond(stack, stream, input=QUESTION, include=["reasoning.encrypted_content"])
    reasoning = answer.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content.startswith("llmroute.thinking.v1:")
    items = [item.model_dump(exclude_none=True) for item in answer.output]
    after = respond(stack, stream, input=[*QUESTION, *items, tool_output(answer)])
    assert "18C, cloudy" in after.output_text and claude_was_sent_its_thinking(stack)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_previous_response_id_carries_claudes_thinking_the_client_was_not_shown(stack: Stack, stream: bool) -> None:
    answer = respond(stack, stream, input=QUESTION)
    assert answer.output[0].type == "reasoning" and answer.output[0].encrypted_content is None
    after = respond(stack, stream, previous_response_id=answer.id, input=[tool_output(answer)])
    assert "18C, cloudy" in after.output_text and claude_was_sent_its_thinking(stack)


def test_a_malformed_encrypted_content_of_ours_is_a_400_in_the_responses_shape(stack: Stack) -> None:
    reasoning = {"type": "reasoning", "summary": [], "encrypted_content": "llmroute.thinking.v1:bm90IGpzb24"}
    with pytest.raises(openai.BadRequestError) as refused:
        client(stack).responses.create(model="anthropic", input=[*QUESTION, reasoning])
    assert refused.value.param == "input[1].encrypted_content"  # type: ignore[attr-defined]
    assert refused.value.code == "invalid_encrypted_content"  # type: ignore[attr-defined]


OVERLOADED = Fault(FaultKind.STATUS, status=529)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_after_a_failover_to_another_claude_account_the_turn_is_answered_without_the_blocks(
        stack: Stack, stream: bool) -> None:
    """Claude B refuses blocks Claude A signed (400 "Invalid `signature`"): failing over on that would fail
    every other account alike, so B is asked again at once without them, thinking off for the turn."""
    step = first_step(stack, "claude-ha", stream)
    assert step["thinking_blocks"][0]["signature"] == signature("sim-anthropic", THINKING)
    stack.faults["claude"].next(OVERLOADED)
    before = sim_requests(stack, "claude-b")
    assert "18C, cloudy" in next_step(stack, "claude-ha", step, stream)
    assert sim_requests(stack, "claude-b") == before + 2  # refused with A's blocks, answered without them
    sent = last_request(stack, "claude-b").body
    assert "thinking" not in sent and [block["type"] for block in sent["messages"][1]["content"]] == ["tool_use"]


def test_a_responses_turn_that_fails_over_to_another_claude_account_is_answered(stack: Stack) -> None:
    answer = respond(stack, False, model="claude-ha", input=QUESTION)
    stack.faults["claude"].next(OVERLOADED)
    after = respond(stack, True, model="claude-ha", previous_response_id=answer.id, input=[tool_output(answer)])
    assert "18C, cloudy" in after.output_text and "thinking" not in last_request(stack, "claude-b").body


def test_an_anthropic_clients_own_blocks_are_relayed_as_they_are_and_the_refusal_too(stack: Stack) -> None:
    """On `/v1/messages` the blocks are the client's, sent as it sent them: the sidecar does not drop them."""
    claude = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
    tools: Any = [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    first = claude.messages.create(model="claude-ha", max_tokens=2000, tools=tools, thinking=thinking, messages=ASK)
    use = next(block for block in first.content if block.type == "tool_use")
    loop: Any = [*ASK, {"role": "assistant", "content": [block.model_dump() for block in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}]}]
    stack.faults["claude"].next(OVERLOADED)
    before = sim_requests(stack, "claude-b")
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature`"):
        claude.messages.create(model="claude-ha", max_tokens=2000, tools=tools, thinking=thinking, messages=loop)
    assert sim_requests(stack, "claude-b") == before + 1
