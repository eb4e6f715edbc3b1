"""The Anthropic simulator, as the official `anthropic` SDK (and the raw wire) sees it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import anthropic
import pytest

from llmroute_proxy.sim import SimServer, anthropic_app, sim_state
from llmroute_proxy.sim.anthropic import REDACT, signature
from tests.proxy.sim import SimPool

KEY = "sk-ant-sim-test-key"
MODEL = "claude-sonnet-4-6"
QUESTION = "What is the weather like in Paris today?"
ANSWER = f"[sim-anthropic {MODEL}] You said: {QUESTION}"
MESSAGES: list[Any] = [{"role": "user", "content": QUESTION}]
INPUT_TOKENS = 10  # 8 words × 1.3
OUTPUT_TOKENS = 16  # 12 words × 1.3
WEATHER_TOOL: Any = {
    "name": "get_weather", "description": "Current weather",
    "input_schema": {"type": "object", "required": ["city", "days"], "properties": {
        "city": {"type": "string"}, "days": {"type": "number"}, "unit": {"type": "string"}}}}
TIME_TOOL: Any = {
    "name": "get_time", "input_schema": {"type": "object", "required": ["utc"],
                                         "properties": {"utc": {"type": "boolean"}}}}
WEATHER_INPUT = {"city": "sim", "days": 1}
HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": KEY}

Client = Callable[..., anthropic.AsyncAnthropic]


@pytest.fixture
async def sim(sims: SimPool) -> SimServer:
    return await sims.start(anthropic_app(KEY, chunks=4))


@pytest.fixture
def client(sims: SimPool) -> Client:
    """An async SDK client for a simulator, closed after the test."""
    def connect(server: SimServer, key: str = KEY) -> anthropic.AsyncAnthropic:
        api = anthropic.AsyncAnthropic(api_key=key, base_url=server.url, max_retries=0, timeout=5)
        sims.on_close(api.close)
        return api
    return connect


async def raw_post(server: SimServer, body: Any, headers: dict[str, str] = HEADERS) -> tuple[int, str]:
    async with aiohttp.ClientSession(headers=headers) as session, session.post(
            server.url + "/v1/messages", json=body) as response:
        return response.status, await response.text()


async def test_a_message_answers_deterministically_with_counted_usage(sim: SimServer, client: Client) -> None:
    message = await client(sim).messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)

    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL and message.stop_reason == "end_turn"
    assert len(message.content) == 1 and message.content[0].type == "text"
    assert message.content[0].text == ANSWER
    assert (message.usage.input_tokens, message.usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    assert message.usage.cache_read_input_tokens == 0


async def test_the_sdk_authenticates_with_bearer_and_raw_callers_with_x_api_key(
        sim: SimServer, client: Client) -> None:
    await client(sim).messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    sent = sim_state(sim.app).stats.last
    status, _ = await raw_post(sim, {"model": MODEL, "max_tokens": 100, "messages": MESSAGES})

    assert sent is not None and sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["anthropic-version"]
    assert status == 200


async def test_the_sync_client_gets_the_same_answer(sim: SimServer) -> None:
    with anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0, timeout=5) as sync:
        message = await asyncio.to_thread(sync.messages.create, model=MODEL, max_tokens=100, messages=MESSAGES)

    assert message.content[0].type == "text" and message.content[0].text == ANSWER


async def test_system_and_block_content_count_toward_the_input(sim: SimServer, client: Client) -> None:
    message = await client(sim).messages.create(
        model=MODEL, max_tokens=100, system=[{"type": "text", "text": "Be very brief."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}])

    assert message.content[0].type == "text" and message.content[0].text == ANSWER
    assert message.usage.input_tokens == 14  # 11 words × 1.3


async def test_cached_tokens_are_reported_as_cache_reads_outside_input_tokens(
        sims: SimPool, client: Client) -> None:
    sim = await sims.start(anthropic_app(KEY, cached_tokens=64))

    message = await client(sim).messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    async with client(sim).messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        streamed = await stream.get_final_message()

    for usage in (message.usage, streamed.usage):
        assert (usage.input_tokens, usage.cache_read_input_tokens) == (INPUT_TOKENS, 64)


LONG_SYSTEM = "You answer questions about the weather. " * 200  # 1,200 words: 1,560 tokens


def cached_system(ttl: str | None = None) -> list[Any]:
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return [{"type": "text", "text": LONG_SYSTEM, "cache_control": control}]


async def test_a_cache_breakpoint_writes_its_prefix_once_then_reads_it_until_it_expires(
        sims: SimPool, client: Client) -> None:
    now = [1000.0]
    sim = await sims.start(anthropic_app(KEY, clock=lambda: now[0]))
    api = client(sim)

    async def usage() -> Any:
        message = await api.messages.create(model=MODEL, max_tokens=100, system=cached_system(),
                                            messages=MESSAGES)
        return message.usage

    first = await usage()
    now[0] += 299
    second = await usage()
    now[0] += 301  # 5 minutes after the read, which restarted its lifetime
    third = await usage()

    assert (first.cache_creation_input_tokens, first.cache_read_input_tokens, first.input_tokens) == (1560, 0, 10)
    assert first.cache_creation is not None and first.cache_creation.ephemeral_5m_input_tokens == 1560
    assert (second.cache_creation_input_tokens, second.cache_read_input_tokens, second.input_tokens) == (0, 1560, 10)
    assert (third.cache_creation_input_tokens, third.cache_read_input_tokens) == (1560, 0)


async def test_an_hour_long_write_is_reported_apart_in_a_stream_too(sim: SimServer, client: Client) -> None:
    async with client(sim).messages.stream(model=MODEL, max_tokens=100, system=cached_system("1h"),
                                           messages=MESSAGES) as stream:
        message = await stream.get_final_message()

    assert message.usage.cache_creation_input_tokens == 1560
    assert message.usage.cache_creation is not None
    assert (message.usage.cache_creation.ephemeral_1h_input_tokens,
            message.usage.cache_creation.ephemeral_5m_input_tokens) == (1560, 0)


async def test_a_prefix_shorter_than_the_models_minimum_is_not_cached(sim: SimServer, client: Client) -> None:
    short = [{"type": "text", "text": "Be brief. " * 300, "cache_control": {"type": "ephemeral"}}]  # 780 tokens

    message = await client(sim).messages.create(model=MODEL, max_tokens=100, system=short, messages=MESSAGES)

    assert (message.usage.cache_creation_input_tokens, message.usage.cache_read_input_tokens) == (0, 0)
    assert message.usage.input_tokens == 790


async def test_a_later_breakpoint_reads_the_cached_prefix_and_writes_only_what_follows(
        sim: SimServer, client: Client) -> None:
    api = client(sim)
    await api.messages.create(model=MODEL, max_tokens=100, system=cached_system(), messages=MESSAGES)
    turn = [{"role": "user", "content": [{"type": "text", "text": "Tell me more about clouds. " * 200,
                                          "cache_control": {"type": "ephemeral"}}]}]

    message = await api.messages.create(model=MODEL, max_tokens=100, system=cached_system(), messages=turn)

    # the prompt is 2,200 words (2,860 tokens), all of it before the second breakpoint
    assert message.usage.cache_read_input_tokens == 1560
    assert message.usage.cache_creation_input_tokens == 2860 - 1560
    assert message.usage.input_tokens == 0


async def test_more_than_four_breakpoints_are_refused_as_claude_refuses_them(sim: SimServer, client: Client) -> None:
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]

    with pytest.raises(anthropic.BadRequestError) as refused:
        await client(sim).messages.create(model=MODEL, max_tokens=100, system=blocks, messages=MESSAGES)

    assert "A maximum of 4 blocks with cache_control may be provided. Found 5." in str(refused.value)


WEB_SEARCH: Any = {"type": "web_search_20250305", "name": "web_search"}


async def test_a_web_search_runs_on_claudes_side_and_is_counted_in_the_usage(sim: SimServer, client: Client) -> None:
    message = await client(sim).messages.create(model=MODEL, max_tokens=100, tools=[WEB_SEARCH], messages=MESSAGES)
    async with client(sim).messages.stream(model=MODEL, max_tokens=100, tools=[WEB_SEARCH],
                                           messages=MESSAGES) as stream:
        streamed = await stream.get_final_message()

    for answer in (message, streamed):
        call, result, text = answer.content
        assert call.type == "server_tool_use" and call.name == "web_search" and call.input == {"query": QUESTION}
        assert result.type == "web_search_tool_result" and result.tool_use_id == call.id
        assert text.type == "text" and answer.stop_reason == "end_turn"
        assert answer.usage.server_tool_use is not None and answer.usage.server_tool_use.web_search_requests == 1
        assert answer.usage.input_tokens > INPUT_TOKENS  # the results are read as input


async def test_a_server_tool_is_never_called_like_a_function(sim: SimServer, client: Client) -> None:
    message = await client(sim).messages.create(model=MODEL, max_tokens=100, tools=[WEB_SEARCH, WEATHER_TOOL],
                                                messages=MESSAGES)

    assert [block.type for block in message.content] == ["server_tool_use", "web_search_tool_result", "tool_use"]
    assert message.content[2].type == "tool_use" and message.content[2].name == "get_weather"


async def test_no_search_runs_when_max_uses_is_zero_or_tool_choice_is_none(sim: SimServer, client: Client) -> None:
    none = await client(sim).messages.create(model=MODEL, max_tokens=100, tools=[WEB_SEARCH],
                                             tool_choice={"type": "none"}, messages=MESSAGES)
    unused = await client(sim).messages.create(model=MODEL, max_tokens=100, tools=[{**WEB_SEARCH, "max_uses": 0}],
                                               messages=MESSAGES)

    for message in (none, unused):
        assert [block.type for block in message.content] == ["text"]
        assert message.usage.server_tool_use is None


async def test_max_tokens_cuts_the_answer_with_stop_reason_max_tokens(sim: SimServer, client: Client) -> None:
    message = await client(sim).messages.create(model=MODEL, max_tokens=4, messages=MESSAGES)

    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text" and ANSWER.startswith(message.content[0].text)
    assert 1 <= message.usage.output_tokens <= 4


async def test_a_stream_gives_the_same_message_in_the_configured_number_of_deltas(
        sim: SimServer, client: Client) -> None:
    async with client(sim).messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()

    assert len(pieces) == 4 and "".join(pieces) == ANSWER
    assert final.content[0].type == "text" and final.content[0].text == ANSWER
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)


async def test_the_stream_wire_is_named_events_in_the_documented_order(sim: SimServer) -> None:
    status, text = await raw_post(sim, {"model": MODEL, "max_tokens": 100, "messages": MESSAGES, "stream": True})

    events = [event.split("\n") for event in text.strip("\n").split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    payloads = [json.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert status == 200
    assert names == ["message_start", "content_block_start", "ping", *["content_block_delta"] * 4,
                     "content_block_stop", "message_delta", "message_stop"]
    assert [p["type"] for p in payloads] == names
    assert payloads[0]["message"]["stop_reason"] is None and payloads[0]["message"]["content"] == []
    assert payloads[-2]["usage"]["output_tokens"] == OUTPUT_TOKENS


async def test_offered_tools_are_used_with_input_from_required_properties(sim: SimServer, client: Client) -> None:
    message = await client(sim).messages.create(
        model=MODEL, max_tokens=100, messages=MESSAGES, tools=[WEATHER_TOOL, TIME_TOOL])

    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert (block.name, block.input) == ("get_weather", WEATHER_INPUT)


@pytest.mark.parametrize(("tool_choice", "expected"), [
    ({"type": "any"}, ("get_weather", WEATHER_INPUT)),
    ({"type": "tool", "name": "get_time"}, ("get_time", {"utc": True})),
    ({"type": "none"}, None),
])
async def test_tool_choice_picks_the_tool_or_none(
        sim: SimServer, client: Client, tool_choice: Any, expected: tuple[str, Any] | None) -> None:
    message = await client(sim).messages.create(
        model=MODEL, max_tokens=100, messages=MESSAGES, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice)

    block = message.content[0]
    if expected is None:
        assert block.type == "text" and block.text == ANSWER
    else:
        assert block.type == "tool_use" and (block.name, block.input) == expected


async def test_streamed_tool_input_comes_in_json_fragments_the_sdk_accumulates(
        sim: SimServer, client: Client) -> None:
    fragments: list[str] = []
    async with client(sim).messages.stream(
            model=MODEL, max_tokens=100, messages=MESSAGES, tools=[WEATHER_TOOL]) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                fragments.append(event.delta.partial_json)
        final = await stream.get_final_message()

    assert len([f for f in fragments if f]) == 4 and json.loads("".join(fragments)) == WEATHER_INPUT
    block = final.content[0]
    assert block.type == "tool_use" and (block.name, block.input) == ("get_weather", WEATHER_INPUT)
    assert final.stop_reason == "tool_use"


async def test_a_tool_result_is_quoted_in_a_text_answer(sim: SimServer, client: Client) -> None:
    messages: list[Any] = [
        *MESSAGES,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": WEATHER_INPUT}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "18C and cloudy"}]}]},
    ]

    message = await client(sim).messages.create(model=MODEL, max_tokens=100, messages=messages,
                                                tools=[WEATHER_TOOL])

    assert message.content[0].type == "text"
    assert message.content[0].text == f"[sim-anthropic {MODEL}] Tool said: 18C and cloudy"
    assert message.stop_reason == "end_turn"


async def test_models_are_listed(sim: SimServer, client: Client) -> None:
    models = [model async for model in client(sim).models.list()]

    assert [(m.id, m.type) for m in models] == [("claude-sonnet-4-6", "model"), ("claude-haiku-4-5", "model")]


@pytest.mark.parametrize("headers", [
    {"anthropic-version": "2023-06-01", "x-api-key": "sk-wrong-secret"},
    {"anthropic-version": "2023-06-01", "Authorization": "Bearer sk-wrong-secret"},
    {"anthropic-version": "2023-06-01"},
])
async def test_a_wrong_or_missing_key_is_a_401_authentication_error(sim: SimServer, headers: dict[str, str]) -> None:
    status, text = await raw_post(sim, {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}, headers)

    assert status == 401
    assert json.loads(text)["error"]["type"] == "authentication_error" and "sk-wrong-secret" not in text


async def test_the_sdk_sees_a_wrong_key_as_an_authentication_error(sim: SimServer, client: Client) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await client(sim, key="sk-wrong").messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)

    assert caught.value.status_code == 401


@pytest.mark.parametrize(("body", "headers", "message"), [
    ({"model": MODEL, "max_tokens": 10, "messages": MESSAGES}, {"x-api-key": KEY}, "anthropic-version"),
    ({"model": MODEL, "messages": MESSAGES}, HEADERS, "max_tokens"),
    ({"max_tokens": 10, "messages": MESSAGES}, HEADERS, "model"),
    ({"model": MODEL, "max_tokens": 10}, HEADERS, "messages"),
    ({"model": MODEL, "max_tokens": 10, "messages": []}, HEADERS, "messages"),
])
async def test_invalid_requests_are_400s_in_anthropic_shape(
        sim: SimServer, body: Any, headers: dict[str, str], message: str) -> None:
    status, text = await raw_post(sim, body, headers)

    parsed = json.loads(text)
    assert status == 400 and parsed["type"] == "error"
    assert parsed["error"]["type"] == "invalid_request_error" and message in parsed["error"]["message"]


THINK: Any = {"type": "enabled", "budget_tokens": 1024}


async def test_a_thinking_tool_loop_goes_on_only_with_its_thinking_block(sim: SimServer, client: Client) -> None:
    """As Claude: the tool call comes after a signed thinking block, which the next request must send back."""
    api = client(sim)
    first = await api.messages.create(model=MODEL, max_tokens=2000, messages=MESSAGES, tools=[WEATHER_TOOL],
                                      thinking=THINK)
    assert [block.type for block in first.content] == ["thinking", "tool_use"]
    use = first.content[1]
    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}]}  # type: ignore[union-attr]
    replayed = [block.model_dump() for block in first.content]
    second = await api.messages.create(model=MODEL, max_tokens=2000, tools=[WEATHER_TOOL], thinking=THINK,
                                       messages=[*MESSAGES, {"role": "assistant", "content": replayed}, result])
    assert "18C" in "".join(block.text for block in second.content if block.type == "text")
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.1\.content\.0\.type: Expected `thinking`"):
        await api.messages.create(model=MODEL, max_tokens=2000, tools=[WEATHER_TOOL], thinking=THINK,
                                  messages=[*MESSAGES, {"role": "assistant", "content": replayed[1:]}, result])


async def test_thinking_streams_empty_then_its_deltas_then_its_signature(sim: SimServer, client: Client) -> None:
    """As Claude streams it: the block starts with empty `thinking` and `signature`, the signature comes in
    one `signature_delta` after the thinking deltas, and the SDK's final message carries it whole."""
    async with client(sim).messages.stream(model=MODEL, max_tokens=2000, messages=MESSAGES, thinking=THINK) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_message()
    start = next(e for e in events if e.type == "content_block_start")
    deltas = [e.delta.type for e in events if e.type == "content_block_delta" and e.index == 0]  # type: ignore[union-attr]
    assert start.content_block.model_dump() == {"type": "thinking", "thinking": "", "signature": ""}  # type: ignore[union-attr]
    assert deltas[-1] == "signature_delta" and set(deltas[:-1]) == {"thinking_delta"}
    thought = final.content[0]
    assert thought.type == "thinking" and thought.signature == signature("sim-anthropic", thought.thinking)


def _tool_loop(first: Any, replayed: list[Any]) -> list[Any]:
    use = next(block for block in first.content if block.type == "tool_use")
    return [*MESSAGES, {"role": "assistant", "content": replayed},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}]}]


@pytest.mark.parametrize(("redact", "tamper", "refusal"), [
    (False, lambda block: {**block, "signature": "Eqforged"},
     r"messages\.1\.content\.0: Invalid `signature` in `thinking` block"),
    (False, lambda block: {key: value for key, value in block.items() if key != "signature"},
     r"messages\.1\.content\.0\.thinking\.signature: Field required"),
    (False, lambda block: {**block, "thinking": block["thinking"] + " (edited)"}, r"Invalid `signature`"),
    (True, lambda block: {**block, "data": "Eqforged"},
     r"messages\.1\.content\.0: Invalid `data` in `redacted_thinking` block"),
], ids=["forged", "unsigned", "edited", "redacted-forged"])
async def test_thinking_sent_back_must_be_signed_by_the_same_account(
        sims: SimPool, sim: SimServer, client: Client, redact: bool, tamper: Callable[[Any], Any],
        refusal: str) -> None:
    """A block signed by another account (another simulator: a failover) is refused as a forged one is,
    with thinking enabled or not; the account that signed it takes it back."""
    other = await sims.start(anthropic_app(KEY, name="sim-anthropic-b"))
    ask: Any = [{"role": "user", "content": REDACT}] if redact else MESSAGES
    first = await client(sim).messages.create(model=MODEL, max_tokens=2000, messages=ask, tools=[WEATHER_TOOL],
                                              thinking=THINK)
    replayed = [block.model_dump() for block in first.content]
    for thinking in (THINK, {"type": "disabled"}):
        with pytest.raises(anthropic.BadRequestError, match=refusal):
            await client(sim).messages.create(model=MODEL, max_tokens=2000, tools=[WEATHER_TOOL], thinking=thinking,
                                              messages=_tool_loop(first, [tamper(replayed[0]), *replayed[1:]]))
    with pytest.raises(anthropic.BadRequestError, match=r"Invalid `(signature|data)`"):
        await client(other).messages.create(model=MODEL, max_tokens=2000, tools=[WEATHER_TOOL], thinking=THINK,
                                            messages=_tool_loop(first, replayed))
    await client(sim).messages.create(model=MODEL, max_tokens=2000, tools=[WEATHER_TOOL], thinking=THINK,
                                      messages=_tool_loop(first, replayed))


MODIFIED = (r"`thinking` or `redacted_thinking` blocks in the latest assistant message cannot be modified\. "
            r"These blocks must remain as they were in the original response\.")


@pytest.mark.parametrize("thinking", [THINK, {"type": "disabled"}], ids=["thinking", "not-thinking"])
async def test_a_thinking_block_the_latest_turn_holds_anywhere_but_where_claude_wrote_it_is_refused(
        sim: SimServer, client: Client, thinking: Any) -> None:
    """Claude checks the latest assistant turn's blocks against the answer that made them: one merged in
    after another answer's blocks sits behind them (the 400 real clients hit when two turns are merged),
    whether in the same message or in the next one, which Claude combines with it."""
    api = client(sim)
    said = await api.messages.create(model=MODEL, max_tokens=2000, messages=MESSAGES, thinking=THINK)
    step = await api.messages.create(model=MODEL, max_tokens=2000, messages=MESSAGES, tools=[WEATHER_TOOL],
                                     thinking=THINK)
    answer, call = [b.model_dump() for b in said.content], [b.model_dump() for b in step.content]
    merged = _tool_loop(step, [*answer, *call])
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.1\.content\.2: " + MODIFIED):
        await api.messages.create(model=MODEL, max_tokens=2000, tools=[WEATHER_TOOL], thinking=thinking,
                                  messages=merged)
    apart = [*MESSAGES, {"role": "assistant", "content": answer}, *_tool_loop(step, call)[1:]]
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.2\.content\.0: " + MODIFIED):
        await api.messages.create(model=MODEL, max_tokens=2000, tools=[WEATHER_TOOL], thinking=thinking,
                                  messages=apart)
    kept = _tool_loop(step, [*answer, *call[1:]])  # the first answer's block opens the turn, the second's left out
    await api.messages.create(model=MODEL, max_tokens=2000, tools=[WEATHER_TOOL], thinking=thinking, messages=kept)


@pytest.mark.parametrize(("fields", "refusal"), [
    ({"temperature": 0.5}, "`temperature` may only be set to 1"), ({"top_k": 5}, "`top_k` must be unset"),
    ({"top_p": 0.5}, "`top_p` must be greater than or equal to 0.95"),
    ({"tool_choice": {"type": "any"}}, "tool_choice forces tool use"),
])
async def test_thinking_is_refused_beside_what_claude_does_not_think_with(
        sim: SimServer, client: Client, fields: dict[str, Any], refusal: str) -> None:
    with pytest.raises(anthropic.BadRequestError, match=refusal):
        await client(sim).messages.create(model=MODEL, max_tokens=2000, messages=MESSAGES, tools=[WEATHER_TOOL],
                                          thinking=THINK, extra_body=fields)
    await client(sim).messages.create(model=MODEL, max_tokens=2000, messages=MESSAGES, tools=[WEATHER_TOOL],
                                      extra_body=fields)


async def test_count_tokens_counts_what_a_message_with_the_same_prompt_is_billed(
        sim: SimServer, client: Client) -> None:
    api = client(sim)
    counted = await api.messages.count_tokens(model=MODEL, system="Be brief.", messages=MESSAGES)
    beta = await api.beta.messages.count_tokens(model=MODEL, system="Be brief.", messages=MESSAGES)
    message = await api.messages.create(model=MODEL, max_tokens=100, system="Be brief.", messages=MESSAGES)

    assert counted.input_tokens == beta.input_tokens == message.usage.input_tokens == 13  # 10 words × 1.3
    assert sim_state(sim.app).stats.by_path["/v1/messages/count_tokens"] == 2


@pytest.mark.parametrize(("body", "problem"), [
    ({"messages": MESSAGES}, "model: Field required"),
    ({"model": MODEL}, "messages: Field required"),
    ({"model": MODEL, "messages": []}, "messages: at least one message is required"),
    ({"model": MODEL, "messages": MESSAGES, "max_tokens": 100}, "max_tokens: Extra inputs are not permitted"),
    ({"model": MODEL, "messages": MESSAGES, "stream": True}, "stream: Extra inputs are not permitted"),
    ({"model": MODEL, "messages": [{"role": "user", "content": " "}]},
     "messages: text content blocks must contain non-whitespace text"),
])
async def test_count_tokens_refuses_what_the_api_refuses(sim: SimServer, body: Any, problem: str) -> None:
    async with aiohttp.ClientSession(headers=HEADERS) as session, session.post(
            sim.url + "/v1/messages/count_tokens", json=body) as response:
        status, answer = response.status, await response.json()

    assert status == 400
    assert answer == {"type": "error", "error": {"type": "invalid_request_error", "message": problem}}


async def test_count_tokens_checks_the_key(sim: SimServer, client: Client) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        await client(sim, key="sk-ant-wrong").messages.count_tokens(model=MODEL, messages=MESSAGES)
    assert (await client(sim).messages.count_tokens(model=MODEL, messages=MESSAGES)).input_tokens == INPUT_TOKENS


async def test_a_beta_field_is_refused_without_its_beta_feature_as_claude_refuses_it(
        sim: SimServer, client: Client) -> None:
    api = client(sim)
    edits = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    with pytest.raises(anthropic.BadRequestError, match="context_management: Extra inputs are not permitted"):
        await api.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES, extra_body={"context_management": edits})
    message = await api.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES,
                                        extra_body={"context_management": edits},
                                        extra_headers={"anthropic-beta": "context-management-2025-06-27"})
    assert message.stop_reason == "end_turn"


async def test_a_system_message_mid_conversation_needs_its_beta_as_claude_wants(sim: SimServer, client: Client) -> None:
    api = client(sim)
    messages: Any = [*MESSAGES, {"role": "system", "content": "Be brief."}]
    with pytest.raises(anthropic.BadRequestError, match=r"messages\.1\.role: Input should be 'user' or 'assistant'"):
        await api.messages.create(model=MODEL, max_tokens=50, messages=messages)
    message = await api.messages.create(model=MODEL, max_tokens=50, messages=messages,
                                        extra_headers={"anthropic-beta": "mid-conversation-system-2026-04-07"})
    assert message.stop_reason == "end_turn"
