"""The Anthropic front door: Messages requests → canonical, canonical answers → Messages, SDK-checked."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmroute_proxy.dialects.anthropic.answer_out import AnthropicStreamEncoder, response_from_canonical
from llmroute_proxy.dialects.anthropic.request_in import request_to_canonical
from llmroute_proxy.dialects.anthropic.request_out import messages_body
from llmroute_proxy.dialects.anthropic.wire import message_id
from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.errors import BadRequest

ServerFactory = Callable[..., Awaitable[TestServer]]

WEATHER_TOOL = {"name": "weather", "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}

# ---- request ----------------------------------------------------------------------------


def test_a_messages_request_becomes_a_canonical_request() -> None:
    body = {
        "model": "smart", "max_tokens": 512,
        "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "need a tool", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                    {"type": "text", "text": "25C"},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/map.png"}}]},
                {"type": "text", "text": "Warmer?"},
            ]},
        ],
        "tools": [WEATHER_TOOL], "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"], "temperature": 0.2, "top_p": 0.9, "top_k": 40,
        "metadata": {"user_id": "u-1"}, "stream": True, "thinking": {"type": "enabled", "budget_tokens": 4000},
        "service_tier": "auto",
    }
    assert request_to_canonical(body) == {
        "model": "smart", "max_completion_tokens": 512,
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "25C"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/map.png"}},
                                         {"type": "text", "text": "Warmer?"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Current weather",
                                                    "parameters": WEATHER_TOOL["input_schema"]}}],
        "tool_choice": "required", "parallel_tool_calls": False, "stop": ["END"],
        "temperature": 0.2, "top_p": 0.9, "top_k": 40, "user": "u-1", "reasoning_effort": "medium",
        "stream": True, "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(("asked", "canonical"), [("standard_only", "default"), ("auto", None)])
def test_an_anthropic_service_tier_is_openais_nearest(asked: str, canonical: str | None) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "service_tier": asked}
    assert request_to_canonical(body).get("service_tier") == canonical


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "weather"}, {"type": "function", "function": {"name": "weather"}}),
])
def test_tool_choice_is_mapped(choice: dict[str, Any], expected: Any) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL], "tool_choice": choice}
    assert request_to_canonical(body)["tool_choice"] == expected


@pytest.mark.parametrize(("budget", "effort"), [(1024, "low"), (8000, "medium"), (30000, "high")])
def test_a_thinking_budget_maps_roughly_to_an_effort(budget: int, effort: str) -> None:
    body = {"model": "m", "max_tokens": 40000, "messages": [{"role": "user", "content": "x"}],
            "thinking": {"type": "enabled", "budget_tokens": budget}}
    assert request_to_canonical(body)["reasoning_effort"] == effort


def test_a_structured_output_request_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object"}
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    assert request_to_canonical(body)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_a_translated_request_comes_back_the_same_through_the_anthropic_provider() -> None:
    original = {
        "model": "claude", "max_tokens": 100, "system": "Be terse.",
        "messages": [
            {"role": "user", "content": "Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]},
        ],
        "tools": [WEATHER_TOOL], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"], "temperature": 0.3, "top_k": 5, "metadata": {"user_id": "u"}, "stream": True,
    }
    assert messages_body(request_to_canonical(original), "claude") == original


BASE = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize(("body", "param"), [
    ([], None),
    ({**BASE, "model": 3}, "model"),
    ({**BASE, "max_tokens": None}, "max_tokens"),
    ({**BASE, "max_tokens": 0}, "max_tokens"),
    ({**BASE, "max_tokens": True}, "max_tokens"),
    ({**BASE, "messages": []}, "messages"),
    ({**BASE, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({**BASE, "messages": [{"role": "user", "content": "x"}, {"role": "system", "content": [{"type": "image"}]}]},
     "messages[1].content[0].type"),
    ({**BASE, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({**BASE, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": [{"text": "b"}]}]},
     "messages[1].content[0].type"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
     "messages[0].content[0].text"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
     "messages[0].content[0].source.type"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
     "messages[0].content[0].tool_use_id"),
    ({**BASE, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}]},
     "messages[0].content[0].input"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
     "messages[0].content[0].type"),
    ({**BASE, "system": [{"type": "image"}]}, "system[0].type"),
    ({**BASE, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({**BASE, "mcp_servers": [{"type": "url", "url": "https://mcp.example.test", "name": "docs"}]}, "mcp_servers"),
    ({**BASE, "container": "container_011"}, "container"),
    ({**BASE, "tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({**BASE, "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({**BASE, "stop_sequences": "END"}, "stop_sequences"),
])
def test_invalid_requests_are_refused_with_their_path(body: Any, param: str | None) -> None:
    with pytest.raises(BadRequest) as caught:
        request_to_canonical(body)
    assert caught.value.param == param


def test_a_system_message_mid_conversation_stays_where_it_was_said() -> None:
    """Claude's beta `mid-conversation-system-2026-04-07`, which Claude Code uses in every request."""
    body = {**BASE, "messages": [{"role": "user", "content": "hi"},
                                 {"role": "system", "content": [{"type": "text", "text": "Agents: a, b."}]},
                                 {"role": "assistant", "content": "Hello."}]}
    assert request_to_canonical(body)["messages"] == [
        {"role": "user", "content": "hi"}, {"role": "system", "content": "Agents: a, b."},
        {"role": "assistant", "content": "Hello."}]


def test_a_count_request_needs_no_max_tokens_but_a_message_does() -> None:
    body = {"model": "claude", "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]}

    assert request_to_canonical(body, counting=True) == {
        "model": "claude", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}
    with pytest.raises(BadRequest) as caught:
        request_to_canonical(body)
    assert caught.value.param == "max_tokens"
    with pytest.raises(BadRequest) as counted:
        request_to_canonical({**body, "max_tokens": 0}, counting=True)
    assert counted.value.param == "max_tokens"


# ---- response ---------------------------------------------------------------------------

USAGE = {"prompt_tokens": 1260, "completion_tokens": 40, "total_tokens": 1300,
         "prompt_tokens_details": {"cached_tokens": 1200, "cache_write_tokens": 10}}
ANTHROPIC_USAGE = {"input_tokens": 50, "output_tokens": 40, "cache_read_input_tokens": 1200,
                   "cache_creation_input_tokens": 10}

TOOL_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
        ]}}],
    "usage": USAGE,
}
TEXT_ANSWER = {
    "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Hello there"}}],
    "usage": USAGE,
}


def test_a_chat_completion_becomes_a_message() -> None:
    assert response_from_canonical(TOOL_ANSWER, "smart") == {
        "id": "msg_chatcmpl1", "type": "message", "role": "assistant", "model": "gpt-4o-2024-08-06",
        "content": [{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}}],
        "stop_reason": "tool_use", "stop_sequence": None, "usage": ANTHROPIC_USAGE,
    }


@pytest.mark.parametrize(("finish_reason", "stop_reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("content_filter", "refusal"), (None, "end_turn"), ("odd", "end_turn"),
])
def test_finish_reasons_map_back_to_stop_reasons(finish_reason: str | None, stop_reason: str) -> None:
    answer = {**TEXT_ANSWER, "choices": [{**TEXT_ANSWER["choices"][0], "finish_reason": finish_reason}]}  # type: ignore[index]
    assert response_from_canonical(answer, "m")["stop_reason"] == stop_reason


def test_unparseable_tool_arguments_are_kept_not_lost() -> None:
    answer = {"choices": [{"message": {"tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}}]}
    message = response_from_canonical(answer, "m")
    assert message["content"][0]["input"] == {"_unparsed_arguments": "{oops"}
    assert message["model"] == "m"


# ---- stream encoder ---------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    out: dict[str, Any] = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1,
                           "model": "gpt-4o", "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out


TOOL_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}), chunk({"content": "check."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                           "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]}),
    chunk({}, "tool_calls"),
    chunk(usage=USAGE),
]
TEXT_CHUNKS = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}),
               chunk({"content": " there"}), chunk({}, "length"), chunk(usage=USAGE)]


def events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in stream.split(b"\n\n"):
        if block:
            name, data = block.split(b"\n")
            out.append((name.removeprefix(b"event: ").decode(), orjson.loads(data.removeprefix(b"data: "))))
    return out


def encode(chunks: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
    encoder = AnthropicStreamEncoder("smart")
    return b"".join(encoder.encode(c) for c in chunks) + encoder.finish(usage)


def test_a_chunk_stream_becomes_anthropic_events_one_block_at_a_time() -> None:
    got = events(encode(TOOL_CHUNKS))
    assert [(name, data.get("index")) for name, data in got] == [
        ("message_start", None),
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_delta", 2), ("content_block_stop", 2),
        ("message_delta", None), ("message_stop", None),
    ]
    assert all(data["type"] == name for name, data in got)
    assert got[0][1]["message"]["id"] == "msg_chatcmpl9"
    assert got[5][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "weather", "input": {}}
    assert got[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":'}
    assert got[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": ANTHROPIC_USAGE}


def test_usage_given_to_finish_wins_over_the_streamed_usage_chunk() -> None:
    got = events(encode(TEXT_CHUNKS, Usage(input_tokens=7, output_tokens=3)))
    assert got[-2][1]["usage"] == {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 0,
                                   "cache_creation_input_tokens": 0}


def test_finish_alone_still_makes_a_complete_empty_message() -> None:
    got = events(AnthropicStreamEncoder("smart", message_id="msg_x").finish(None))
    assert [name for name, _ in got] == ["message_start", "message_delta", "message_stop"]
    assert got[0][1]["message"]["id"] == "msg_x"


def test_a_relayed_native_stream_is_not_finished_twice() -> None:
    encoder = AnthropicStreamEncoder("smart")
    assert encoder.relay(b"event: ping\ndata: {}\n\n") == b"event: ping\ndata: {}\n\n"
    assert encoder.finish(None) == b""


def test_an_error_is_an_anthropic_error_event() -> None:
    assert events(AnthropicStreamEncoder("m").error("upstream died", "overloaded_error")) == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "upstream died"}})]


# ---- the official SDK accepts what we produce ----------------------------------------------

SEEN = web.AppKey("seen", list)
ANSWERS = web.AppKey("answers", dict)


async def messages_handler(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    request.app[SEEN].append(request_to_canonical(body))
    answer, chunks, broken = request.app[ANSWERS]["answer"]
    if not body.get("stream"):
        return web.json_response(response_from_canonical(answer, body["model"]))
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    encoder = AnthropicStreamEncoder(body["model"])
    for item in chunks:
        await response.write(encoder.encode(item))
    await response.write(encoder.error("upstream died", "overloaded_error") if broken else encoder.finish(None))
    await response.write_eof()
    return response


async def start(aiohttp_server: ServerFactory, answer: Any, chunks: list[dict[str, Any]],
                broken: bool = False) -> tuple[TestServer, list[dict[str, Any]]]:
    app = web.Application()
    seen: list[dict[str, Any]] = []
    app[SEEN] = seen
    app[ANSWERS] = {"answer": (answer, chunks, broken)}
    app.router.add_post("/v1/messages", messages_handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    return server, seen


REQUEST: dict[str, Any] = {"model": "smart", "max_tokens": 200, "tools": [WEATHER_TOOL],
                           "messages": [{"role": "user", "content": "Weather in Paris and Rome?"}]}


def check_tool_message(message: anthropic.types.Message) -> None:
    text, first, second = message.content
    assert text.type == "text" and text.text == "Let me check."
    assert first.type == "tool_use" and (first.id, first.name, first.input) == ("call_1", "weather", {"city": "Paris"})
    assert second.type == "tool_use" and second.input == {"city": "Rome"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (50, 40)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (1200, 10)


def check_text_message(message: anthropic.types.Message) -> None:
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "Hello there")]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 40


@pytest.mark.parametrize(("answer", "chunks", "check"), [
    (TOOL_ANSWER, TOOL_CHUNKS, check_tool_message), (TEXT_ANSWER, TEXT_CHUNKS, check_text_message),
])
async def test_the_async_sdk_reads_our_messages_and_streams(
        aiohttp_server: ServerFactory, answer: dict[str, Any], chunks: list[dict[str, Any]],
        check: Callable[[anthropic.types.Message], None]) -> None:
    server, seen = await start(aiohttp_server, answer, chunks)
    client = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{server.port}", api_key="k", max_retries=0)
    async with client:
        created = await client.messages.create(**REQUEST)
        async with client.messages.stream(**REQUEST) as stream:
            streamed_text = "".join([text async for text in stream.text_stream])
            streamed = await stream.get_final_message()
    check(created)
    check(streamed)
    assert streamed_text == "".join(b.text for b in created.content if b.type == "text")
    assert seen[0]["tools"][0]["function"]["name"] == "weather"
    assert seen[1]["stream"] is True


async def test_the_sync_sdk_reads_our_messages_and_streams(aiohttp_server: ServerFactory) -> None:
    server, _ = await start(aiohttp_server, TOOL_ANSWER, TOOL_CHUNKS)

    def call() -> tuple[anthropic.types.Message, anthropic.types.Message]:
        with anthropic.Anthropic(base_url=f"http://127.0.0.1:{server.port}", api_key="k", max_retries=0) as client:
            created = client.messages.create(**REQUEST)
            with client.messages.stream(**REQUEST) as stream:
                return created, stream.get_final_message()

    created, streamed = await asyncio.to_thread(call)
    check_tool_message(created)
    check_tool_message(streamed)


async def test_the_sdk_raises_on_our_in_band_error_event(aiohttp_server: ServerFactory) -> None:
    server, _ = await start(aiohttp_server, TEXT_ANSWER, TEXT_CHUNKS[:2], broken=True)
    client = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{server.port}", api_key="k", max_retries=0)
    async with client:
        with pytest.raises(anthropic.APIStatusError, match="upstream died"):
            async with client.messages.stream(**REQUEST) as stream:
                await stream.get_final_message()


def test_a_request_only_anthropic_can_serve_is_marked_and_summarised_for_routing() -> None:
    from llmroute_proxy.dialects.anthropic.request_in import (
        AnthropicOnly,
        request_to_canonical,
        routing_summary,
    )

    body = {"model": "smart", "max_tokens": 50, "system": "Be brief.", "stream": True,
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "find"},
                                                      {"type": "text", "text": "news"}]}]}
    with pytest.raises(AnthropicOnly) as caught:
        request_to_canonical(body)
    assert caught.value.param == "tools[0].type"
    summary = routing_summary(body)
    assert summary["messages"] == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "find\nnews"}]
    assert summary["model"] == "smart" and summary["stream"] is True and summary["tools"]


@pytest.mark.parametrize(("upstream", "expected"), [
    ("msg_01XFDUDYJgAACzvnptvVoYEL", "msg_01XFDUDYJgAACzvnptvVoYEL"),  # Anthropic's own, untouched
    ("chatcmpl-AB12cd", "msg_chatcmplAB12cd"),  # OpenAI, Azure
    ("resp_9z", "msg_resp9z"),
    ("", "msg_llmroute"),  # Gemini answers carry no id
    (None, "msg_llmroute"),
    ("--", "msg_llmroute"),
])
def test_every_messages_answer_carries_a_msg_id_whoever_answered(upstream: Any, expected: str) -> None:
    assert message_id(upstream) == expected
