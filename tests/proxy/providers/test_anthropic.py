"""The Anthropic provider: canonical OpenAI ⇄ Messages API, streams and error classification."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from llmroute_proxy.dialects.anthropic.answer_in import AnthropicStreamTranslator
from llmroute_proxy.dialects.base import (
    DEFAULT_SEARCH_ESTIMATE,
    ChatRequest,
    NativeBody,
    NativeDialect,
    StreamChunk,
    Usage,
    is_usage_chunk,
)
from llmroute_proxy.errors import BadRequest, FailureKind, UpstreamError
from llmroute_proxy.providers.anthropic import AnthropicProvider
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

PROVIDER = AnthropicProvider()
KEY = "sk-ant-secret-value"
TARGET = Target(id=TargetId("anthropic/claude-sonnet-4-5@eu"), provider="anthropic",
                provider_type=ProviderType.ANTHROPIC, model="claude-sonnet-4-5",
                url="https://api.anthropic.com/", region="eu", credential=Secret(KEY))


def sent_body(body: dict[str, Any]) -> dict[str, Any]:
    request = PROVIDER.chat_request(ChatRequest(body), TARGET)
    assert request.body is not None
    parsed: dict[str, Any] = orjson.loads(request.body)
    return parsed


def chat(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": "smart", "messages": messages, **fields}


USER_HI = [{"role": "user", "content": "hi"}]

# ---- request ----------------------------------------------------------------------------


def test_request_goes_to_messages_endpoint_with_key_and_version() -> None:
    request = PROVIDER.chat_request(ChatRequest(chat(USER_HI)), TARGET)
    assert (request.method, request.url) == ("POST", "https://api.anthropic.com/v1/messages")
    assert request.headers == {"x-api-key": KEY, "anthropic-version": "2023-06-01",
                               "content-type": "application/json"}


def test_a_full_conversation_is_translated_to_messages_form() -> None:
    body = chat([
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Weather in Paris and Rome?", "name": "ann"},
        {"role": "developer", "content": [{"type": "text", "text": "Use celsius."}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
        {"role": "user", "content": "Which is warmer?"},
    ], max_completion_tokens=300, temperature=0.5, top_p=0.9, stop="END", user="u-1", stream=True,
        stream_options={"include_usage": True}, store=True, service_tier="auto", metadata={"a": "b"},
        tools=[{"type": "function", "function": {"name": "weather", "description": "Current weather",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}],
        tool_choice="required", parallel_tool_calls=False)
    assert sent_body(body) == {
        "model": "claude-sonnet-4-5", "max_tokens": 300, "system": "Be terse.\n\nUse celsius.",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
                {"type": "text", "text": "Which is warmer?"},
            ]},
        ],
        "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"],
        "tools": [{"name": "weather", "description": "Current weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-1"}, "stream": True,
    }


@pytest.mark.parametrize(("asked", "sent"), [
    ("default", "standard_only"), ("flex", "standard_only"), ("priority", None), ("scale", None), ("auto", None),
])
def test_an_openai_service_tier_is_sent_as_anthropics_nearest(asked: str, sent: str | None) -> None:
    """Anthropic has no cheaper tier than standard: `default` and `flex` keep a request off Priority Tier
    capacity; `priority` leaves Anthropic's default, `auto`, which uses it when the organisation has some."""
    assert sent_body(chat([{"role": "user", "content": "hi"}], service_tier=asked)).get("service_tier") == sent


def test_adjacent_user_turns_are_merged_into_one() -> None:
    body = sent_body(chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]))
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                             {"type": "text", "text": "b"}]}]


def test_system_blocks_with_cache_control_stay_blocks() -> None:
    cached = {"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}
    body = sent_body(chat([{"role": "system", "content": [cached]}, *USER_HI]))
    assert body["system"] == [cached]


def test_max_tokens_defaults_to_4096_and_falls_back_to_max_tokens() -> None:
    assert sent_body(chat(USER_HI))["max_tokens"] == 4096
    assert sent_body(chat(USER_HI, max_tokens=77))["max_tokens"] == 77


@pytest.mark.parametrize(("part", "block"), [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}),
    ({"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg", "detail": "high"}},
     {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}}),
    ({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
     {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}),
    ({"type": "text", "text": "see"}, {"type": "text", "text": "see"}),
])
def test_user_content_parts_become_blocks(part: dict[str, Any], block: dict[str, Any]) -> None:
    body = sent_body(chat([{"role": "user", "content": [part]}]))
    assert body["messages"][0]["content"] == [block]


@pytest.mark.parametrize(("effort", "max_tokens", "budget", "expected_max"), [
    ("low", None, 1024, 4096), ("medium", 1000, 4096, 5096), ("high", 20000, 16384, 20000),
    # raised within 32,000 (Opus 4.x refuses more): the budget gives way, not the client's answer
    ("xhigh", None, 32000 - 4096, 32000), ("max", 8000, 24000, 32000),
    ("xhigh", 31500, 15750, 31500),  # the answer nearly fills it: thinking takes half, nothing is raised
    ("xhigh", 40000, 32768, 40000),  # the client's own max_tokens is its own to set
])
def test_reasoning_effort_becomes_a_thinking_budget_below_max_tokens(
        effort: str, max_tokens: int | None, budget: int, expected_max: int) -> None:
    body = sent_body(chat(USER_HI, reasoning_effort=effort, max_completion_tokens=max_tokens))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] == expected_max > budget


def test_reasoning_effort_is_left_off_a_request_whose_last_assistant_turn_called_tools() -> None:
    """Claude refuses manual thinking when the last tool turn does not start with its thinking block."""
    call = {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    loop = [*USER_HI, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "done"}]
    assert "thinking" not in sent_body(chat(loop, reasoning_effort="high"))
    answered = [*loop, {"role": "assistant", "content": "It is done."}, {"role": "user", "content": "thanks"}]
    assert sent_body(chat(answered, reasoning_effort="high"))["thinking"]["type"] == "enabled"


THOUGHT = {"type": "thinking", "thinking": "Paris, then.", "signature": "EqSig"}
REDACTED = {"type": "redacted_thinking", "data": "EmwData"}


def tool_loop(thinking_blocks: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    call = {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    step: dict[str, Any] = {"role": "assistant", "content": "Let me look.", "tool_calls": [call]}
    if thinking_blocks is not None:
        step["thinking_blocks"] = thinking_blocks
    return [*USER_HI, step, {"role": "tool", "tool_call_id": "toolu_1", "content": "done"}]


def test_thinking_blocks_sent_back_open_the_tool_turn_and_keep_thinking_on() -> None:
    body = sent_body(chat(tool_loop([THOUGHT, REDACTED]), reasoning_effort="high"))
    assert body["messages"][1]["content"] == [THOUGHT, REDACTED, {"type": "text", "text": "Let me look."},
                                              {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]
    assert body["thinking"]["type"] == "enabled"


def test_thinking_blocks_are_left_out_of_a_request_that_does_not_think() -> None:
    for fields in ({}, {"reasoning_effort": "high", "temperature": 0.2}):
        body = sent_body(chat(tool_loop([THOUGHT]), **fields))
        assert "thinking" not in body
        assert [block["type"] for block in body["messages"][1]["content"]] == ["text", "tool_use"]


def test_an_assistant_turn_of_thinking_blocks_alone_is_left_out_of_a_request_that_does_not_think() -> None:
    """Claude refuses an empty assistant turn: one that carried only its thinking is not sent at all."""
    thought_only = {"role": "assistant", "content": "", "thinking_blocks": [THOUGHT]}
    body = sent_body(chat([*USER_HI, thought_only, {"role": "user", "content": "and then?"}]))
    assert "thinking" not in body
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                             {"type": "text", "text": "and then?"}]}]


def test_a_chat_request_without_its_thinking_blocks_thinks_no_more_over_the_tool_turn() -> None:
    """What the sidecar sends a Claude that refused another account's signatures."""
    request = ChatRequest(chat(tool_loop([THOUGHT]), reasoning_effort="high"))
    assert request.without_thinking_blocks().body == chat(tool_loop(None), reasoning_effort="high")
    body = orjson.loads(PROVIDER.chat_request(request.without_thinking_blocks(), TARGET).body or b"")
    assert "thinking" not in body and body["messages"][1]["content"][0]["type"] == "text"
    plain = ChatRequest(chat(tool_loop(None)))
    assert plain.without_thinking_blocks() is plain


EARLIER = {"type": "thinking", "thinking": "Sunny, surely.", "signature": "EqEarlier"}
CALL = {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
RESULT = {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}
TEXT_AND_CALL = [{"type": "text", "text": "Let me look."}, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]


def test_two_assistant_messages_make_one_turn_opened_by_the_first_ones_thinking_alone() -> None:
    """Claude refuses a thinking block anywhere in its latest turn but where it wrote it, at the opening of its
    answer; the second answer's blocks would follow the first one's text, so they are left out."""
    answer = {"role": "assistant", "content": "It is sunny.", "thinking_blocks": [EARLIER]}
    step = {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL], "thinking_blocks": [THOUGHT, REDACTED]}
    body = sent_body(chat([*USER_HI, answer, step, RESULT], reasoning_effort="high"))
    assert body["messages"][1] == {"role": "assistant", "content": [
        EARLIER, {"type": "text", "text": "It is sunny."}, *TEXT_AND_CALL]}
    assert body["thinking"]["type"] == "enabled"  # the tool turn still opens with thinking


def test_a_merged_in_message_of_thinking_alone_adds_nothing_to_the_turn() -> None:
    thought_only = {"role": "assistant", "content": None, "thinking_blocks": [THOUGHT]}
    answer = {"role": "assistant", "content": "It is sunny.", "thinking_blocks": [EARLIER]}
    body = sent_body(chat([*USER_HI, answer, thought_only, {"role": "user", "content": "ok"}], reasoning_effort="low"))
    assert body["messages"][1]["content"] == [EARLIER, {"type": "text", "text": "It is sunny."}]


def test_a_tool_call_after_a_message_without_thinking_loses_its_blocks_and_the_turn_thinks_no_more() -> None:
    """Its blocks cannot open the turn without going before the text said before them: the turn has no
    thinking to open with, which Claude refuses over a tool turn, so the request goes without thinking."""
    step = {"role": "assistant", "content": None, "tool_calls": [CALL], "thinking_blocks": [THOUGHT]}
    body = sent_body(chat([*USER_HI, {"role": "assistant", "content": "Let me look."}, step, RESULT],
                          reasoning_effort="high"))
    assert "thinking" not in body and body["messages"][1]["content"] == TEXT_AND_CALL


@pytest.mark.parametrize("fields", [
    {"temperature": 0.2}, {"top_k": 40}, {"top_p": 0.9}, {"tool_choice": "required"},
    {"tool_choice": {"type": "function", "function": {"name": "f"}}},
], ids=["temperature", "top_k", "top_p", "required", "named"])
def test_reasoning_effort_yields_to_what_claude_refuses_thinking_beside(fields: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = sent_body(chat(USER_HI, reasoning_effort="low", tools=tools, **fields))
    assert "thinking" not in body and set(fields) - {"tool_choice"} <= set(body)
    kept = sent_body(chat(USER_HI, reasoning_effort="low", tools=tools, temperature=1, top_p=0.95,
                          tool_choice="auto"))
    assert kept["thinking"]["type"] == "enabled"


def test_tool_ids_claude_would_refuse_are_rewritten_alike_in_call_and_result() -> None:
    def ids(call_id: str) -> tuple[str, str]:
        call = {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
        sent = sent_body(chat([*USER_HI, {"role": "assistant", "content": None, "tool_calls": [call]},
                               {"role": "tool", "tool_call_id": call_id, "content": "done"}]))["messages"]
        return sent[1]["content"][0]["id"], sent[2]["content"][0]["tool_use_id"]

    assert ids("call_Ab-9") == ("call_Ab-9", "call_Ab-9")
    kimi, other = ids("functions.f:0"), ids("functions.f:1")
    assert kimi[0] == kimi[1] and kimi[0].startswith("functions_f_0_") and kimi != other
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", sent) for sent in (*kimi, *other, *ids("")))


def test_json_schema_response_format_becomes_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = sent_body(chat(USER_HI, response_format={"type": "json_schema",
                                                    "json_schema": {"name": "x", "schema": schema}}))
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
])
def test_tool_choice_is_mapped(choice: Any, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = sent_body(chat(USER_HI, tools=tools, tool_choice=choice))
    assert body["tool_choice"] == expected
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"top_logprobs": 2}, "top_logprobs"),
    ({"logit_bias": {"1": 5}}, "logit_bias"), ({"seed": 7}, "seed"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"frequency_penalty": -1}, "frequency_penalty"),
    ({"audio": {"voice": "x"}}, "audio"), ({"modalities": ["text", "audio"]}, "modalities"),
    ({"temperature": 1.5}, "temperature"), ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"max_tokens": 0}, "max_tokens"), ({"stop": ["\n"]}, "stop"), ({"reasoning_effort": "huge"}, "reasoning_effort"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "allowed_tools"}},
     "tool_choice"),
])
def test_fields_anthropic_cannot_honour_are_refused_by_name(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        sent_body(chat(USER_HI, **fields))
    assert caught.value.param == param


def test_temperature_refusal_says_the_range() -> None:
    with pytest.raises(BadRequest, match="0 to 1"):
        sent_body(chat(USER_HI, temperature=2))


def test_json_mode_refusal_says_there_is_none() -> None:
    with pytest.raises(BadRequest, match="no JSON mode"):
        sent_body(chat(USER_HI, response_format={"type": "json_object"}))


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "d", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}],
     "messages[1].tool_calls[1].function.arguments"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}]}],
     "messages[0].content[0].image_url.url"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}],
     "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}], "messages[0].content[0].file"),
    ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
    ([{"role": "function", "content": "x"}], "messages[0].role"),
    ([], "messages"),
])
def test_untranslatable_messages_are_refused_with_their_path(messages: list[Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        sent_body(chat(messages))
    assert caught.value.param == param


def test_safety_identifier_becomes_metadata_user_id() -> None:
    assert sent_body(chat(USER_HI, safety_identifier="h-1"))["metadata"] == {"user_id": "h-1"}


def test_a_native_anthropic_body_is_forwarded_unchanged_but_for_the_model() -> None:
    native = {"model": "smart", "max_tokens": 50, "thinking": {"type": "enabled", "budget_tokens": 1024},
              "messages": [{"role": "user", "content": [
                  {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
              "top_k": 3}
    request = PROVIDER.chat_request(ChatRequest({"model": "smart", "messages": USER_HI}, NativeBody(NativeDialect.ANTHROPIC_MESSAGES, native)), TARGET)
    assert request.body is not None
    assert orjson.loads(request.body) == {**native, "model": "claude-sonnet-4-5"}
    assert native["model"] == "smart"


def test_embeddings_are_refused_because_anthropic_has_none() -> None:
    with pytest.raises(BadRequest, match="no embeddings"):
        PROVIDER.embeddings_request({"model": "m", "input": "x"}, TARGET)


# ---- response ---------------------------------------------------------------------------

MESSAGE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me "}, {"type": "text", "text": "check."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris", "n": 1}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 50, "output_tokens": 40, "cache_creation_input_tokens": 10,
              "cache_read_input_tokens": 1200, "output_tokens_details": {"thinking_tokens": 5}},
}


def test_a_message_becomes_a_chat_completion() -> None:
    result = PROVIDER.chat_response(orjson.dumps(MESSAGE), ChatRequest(chat(USER_HI)), TARGET)
    assert result.data == {
        "id": "msg_01", "object": "chat.completion", "created": 0, "model": "claude-sonnet-4-5-20250929",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "refusal": None, "reasoning_content": "hmm",
            "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}],
            "tool_calls": [{"id": "toolu_1", "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Paris","n":1}'}}]}}],
        "usage": {"prompt_tokens": 1260, "completion_tokens": 40, "total_tokens": 1300,
                  "prompt_tokens_details": {"cached_tokens": 1200, "cache_write_tokens": 10},
                  "completion_tokens_details": {"reasoning_tokens": 5}},
    }
    assert result.usage == Usage(1260, 40, 1200, 10, 5)
    assert result.native is None


def test_a_native_request_keeps_the_native_answer() -> None:
    native_request = ChatRequest(chat(USER_HI), NativeBody(NativeDialect.ANTHROPIC_MESSAGES,
                                                        {"model": "smart", "max_tokens": 5, "messages": USER_HI}))
    result = PROVIDER.chat_response(orjson.dumps(MESSAGE), native_request, TARGET)
    assert result.native == MESSAGE
    assert result.data["choices"][0]["finish_reason"] == "tool_calls"


def test_only_tool_calls_give_null_content() -> None:
    message = {**MESSAGE, "content": [MESSAGE["content"][3]]}  # type: ignore[index]
    result = PROVIDER.chat_response(orjson.dumps(message), ChatRequest(chat(USER_HI)), TARGET)
    assert result.data["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter"),
    ("something_new", "stop"),
])
def test_stop_reasons_map_to_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    message = {**MESSAGE, "stop_reason": stop_reason}
    result = PROVIDER.chat_response(orjson.dumps(message), ChatRequest(chat(USER_HI)), TARGET)
    assert result.data["choices"][0]["finish_reason"] == finish_reason


def test_an_error_body_with_status_200_is_classified() -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    with pytest.raises(UpstreamError) as caught:
        PROVIDER.chat_response(body, ChatRequest(chat(USER_HI)), TARGET)
    assert caught.value.kind is FailureKind.OVERLOADED


def test_an_error_object_without_type_error_is_that_error_not_an_empty_answer() -> None:
    """Proxies in front of Anthropic answer 200 with a bare `{"error": {...}}`: not a message."""
    body = orjson.dumps({"error": {"type": "authentication_error", "message": "invalid x-api-key"}})
    with pytest.raises(UpstreamError) as caught:
        PROVIDER.chat_response(body, ChatRequest(chat(USER_HI)), TARGET)
    assert caught.value.kind is FailureKind.AUTH and caught.value.status == 401


def test_an_unreadable_answer_is_a_server_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        PROVIDER.chat_response(b"<html>", ChatRequest(chat(USER_HI)), TARGET)
    assert caught.value.kind is FailureKind.SERVER_ERROR


# ---- errors -----------------------------------------------------------------------------


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message},
                         "request_id": "req_1"})


@pytest.mark.parametrize(("status", "error_type", "message", "kind"), [
    (400, "invalid_request_error", "messages: roles must alternate", FailureKind.CLIENT_ERROR),
    (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", FailureKind.CONTEXT_LENGTH),
    (400, "invalid_request_error", "input length and `max_tokens` exceed context limit: 1 + 2 > 3",
     FailureKind.CONTEXT_LENGTH),
    (400, "invalid_request_error", "Your credit balance is too low", FailureKind.QUOTA_EXHAUSTED),
    (401, "authentication_error", "invalid x-api-key", FailureKind.AUTH),
    (402, "billing_error", "billing", FailureKind.QUOTA_EXHAUSTED),
    (403, "permission_error", "no access", FailureKind.AUTH),
    (404, "not_found_error", "model: x", FailureKind.TARGET_NOT_FOUND),
    (413, "request_too_large", "too large", FailureKind.CLIENT_ERROR),
    (422, "invalid_request_error", "bad", FailureKind.CLIENT_ERROR),
    (429, "rate_limit_error", "slow down", FailureKind.RATE_LIMITED),
    (500, "api_error", "oops", FailureKind.SERVER_ERROR),
    (502, "api_error", "bad gateway", FailureKind.SERVER_ERROR),
    (503, "api_error", "unavailable", FailureKind.OVERLOADED),
    (504, "timeout_error", "timeout", FailureKind.TIMEOUT),
    (529, "overloaded_error", "Overloaded", FailureKind.OVERLOADED),
])
def test_http_errors_are_classified(status: int, error_type: str, message: str, kind: FailureKind) -> None:
    error = PROVIDER.classify_error(status, {}, error_body(error_type, message))
    assert (error.kind, error.status) == (kind, status)
    assert message in error.message


def test_a_client_error_keeps_the_upstream_message_in_openai_terms() -> None:
    error = PROVIDER.classify_error(400, {}, error_body("invalid_request_error", "temperature: bad"))
    assert (error.message, error.error_type, error.client_status) == ("temperature: bad", "invalid_request_error", 400)


def test_a_context_overflow_carries_openais_code() -> None:
    error = PROVIDER.classify_error(400, {}, error_body("invalid_request_error", "prompt is too long: 9 > 8"))
    assert error.code == "context_length_exceeded"


def test_rate_limit_carries_retry_after() -> None:
    error = PROVIDER.classify_error(429, {"retry-after": "7"}, error_body("rate_limit_error", "slow"))
    assert error.retry_after == 7.0


def test_a_non_json_error_body_is_quoted_without_the_key() -> None:
    error = PROVIDER.classify_error(502, {}, b"<html>Bad Gateway</html>")
    assert error.kind is FailureKind.SERVER_ERROR
    assert "Bad Gateway" in error.message
    assert KEY not in error.message


# ---- stream -----------------------------------------------------------------------------


def sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


TRANSCRIPT = b"".join([
    sse("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-x",
        "stop_reason": None, "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 100,
                                       "cache_creation_input_tokens": 0}}}),
    sse("content_block_start", {"type": "content_block_start", "index": 0,
                                "content_block": {"type": "thinking", "thinking": ""}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "thinking_delta", "thinking": "Paris?"}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "signature_delta", "signature": "abc"}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    sse("content_block_start", {"type": "content_block_start", "index": 1,
                                "content_block": {"type": "text", "text": ""}}),
    sse("ping", {"type": "ping"}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                "delta": {"type": "text_delta", "text": "Hello"}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
    sse("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 2,
                                "delta": {"type": "input_json_delta", "partial_json": ""}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 2,
                                "delta": {"type": "input_json_delta", "partial_json": '{"city": "Par'}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 2,
                                "delta": {"type": "input_json_delta", "partial_json": 'is"}'}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 2}),
    sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"output_tokens": 20}}),
    sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"output_tokens": 42}}),
    sse("message_stop", {"type": "message_stop"}),
])


SEARCHED = b"".join([
    sse("message_start", {"type": "message_start", "message": {
        "id": "msg_2", "type": "message", "role": "assistant", "content": [], "model": "claude-x", "stop_reason": None,
        "usage": {"input_tokens": 30, "output_tokens": 1, "cache_creation_input_tokens": 2000,
                  "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1500}}}}),
    sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
        "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "input_json_delta", "partial_json": '{"query": "weather"}'}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    sse("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
    sse("content_block_start", {"type": "content_block_start", "index": 2,
                                "content_block": {"type": "text", "text": ""}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 2,
                                "delta": {"type": "text_delta", "text": "Sunny"}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 2}),
    sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                          "usage": {"output_tokens": 9, "cache_creation_input_tokens": None,
                                    "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 0}}}),
    sse("message_stop", {"type": "message_stop"}),
])


def test_a_stream_counts_claudes_searches_and_its_hour_long_cache_writes() -> None:
    translator, chunks = run(SEARCHED, 1 << 20)
    assert translator.usage == Usage(input_tokens=2030, output_tokens=9, cache_write_tokens=2000,
                                     cache_write_1h_tokens=1500, web_searches=2)
    assert [delta for delta in deltas(chunks) if delta and "content" in delta] == [
        {"role": "assistant", "content": ""}, {"content": "Sunny"}]  # the server tool is no function call
    assert translator.finish_reason == "stop"


@pytest.mark.parametrize(("tools", "most"), [
    ([], 0),
    ([{"name": "get_weather", "input_schema": {"type": "object"}}], 0),
    ([{"type": "web_search_20250305", "name": "web_search"}], DEFAULT_SEARCH_ESTIMATE),
    ([{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}], 3),
], ids=["no tools", "a function", "unbounded search", "max_uses"])
def test_a_messages_request_allows_as_many_searches_as_its_tools_max_uses(tools: list[Any], most: int) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [], "tools": tools}
    request = ChatRequest({"model": "m", "messages": []}, NativeBody(NativeDialect.ANTHROPIC_MESSAGES, body))
    assert request.web_searches == most


def deltas(chunks: list[StreamChunk]) -> list[Any]:
    return [c.data["choices"][0]["delta"] if c.data["choices"] else c.data.get("usage") for c in chunks]


def run(transcript: bytes, size: int, native: bool = False) -> tuple[AnthropicStreamTranslator, list[StreamChunk]]:
    translator = AnthropicStreamTranslator("claude-sonnet-4-5", native=native)
    chunks: list[StreamChunk] = []
    for start in range(0, len(transcript), size):
        chunks.extend(translator.feed(transcript[start:start + size]))
    chunks.extend(translator.close())
    return translator, chunks


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
def test_a_stream_translates_the_same_under_any_byte_split(size: int) -> None:
    translator, chunks = run(TRANSCRIPT, size)
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Paris?",
         "thinking_blocks": [{"index": 0, "type": "thinking", "thinking": "Paris?"}]},
        {"thinking_blocks": [{"index": 0, "type": "thinking", "signature": "abc"}]},
        {"content": "Hello"},
        {"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function",
                         "function": {"name": "weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Par'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'is"}'}}]},
        {},
        {"prompt_tokens": 125, "completion_tokens": 42, "total_tokens": 167,
         "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 0}},
    ]
    assert chunks[-2].data["choices"][0]["finish_reason"] == "tool_calls"
    assert [is_usage_chunk(c.data) for c in chunks].count(True) == 1
    assert {(c.data["id"], c.data["model"], c.data["object"]) for c in chunks} == {
        ("msg_1", "claude-x", "chat.completion.chunk")}
    assert translator.finish_reason == "tool_calls"
    assert translator.usage == Usage(125, 42, 100, 0, 0)


def test_a_redacted_thinking_block_streams_whole_as_its_own_fragment() -> None:
    transcript = b"".join([
        sse("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
                                                                   "usage": {"input_tokens": 5}}}),
        sse("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "redacted_thinking", "data": "EmwData"}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("content_block_start", {"type": "content_block_start", "index": 1,
                                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                    "delta": {"type": "signature_delta", "signature": "EqSig"}}),
        sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}}),
        sse("message_stop", {"type": "message_stop"}),
    ])
    _, chunks = run(transcript, 7)
    assert [delta for delta in deltas(chunks)[1:3]] == [
        {"thinking_blocks": [{"index": 0, "type": "redacted_thinking", "data": "EmwData"}]},
        {"thinking_blocks": [{"index": 1, "type": "thinking", "signature": "EqSig"}]}]


def test_a_native_stream_carries_every_event_byte_for_byte() -> None:
    _, chunks = run(TRANSCRIPT, 5, native=True)
    assert all(c.native is not None for c in chunks)
    assert b"".join(c.native or b"" for c in chunks) == TRANSCRIPT
    assert [c.data["choices"][0]["finish_reason"] for c in chunks if c.data["choices"]][-1] == "tool_calls"
    assert sum(is_usage_chunk(c.data) for c in chunks) == 1


NO_PARAMETER_CALL = b"".join([
    sse("message_start", {"type": "message_start", "message": {
        "id": "msg_2", "type": "message", "role": "assistant", "content": [], "model": "claude-x",
        "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
    sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
    sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "input_json_delta", "partial_json": ""}}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"output_tokens": 9}}),
    sse("message_stop", {"type": "message_stop"}),
])


@pytest.mark.parametrize("native", [False, True])
def test_a_call_without_parameters_streams_arguments_as_an_empty_object(native: bool) -> None:
    # What Claude really streams for a no-parameter tool: `input: {}` and one empty partial_json.
    _, chunks = run(NO_PARAMETER_CALL, 7, native=native)
    arguments = "".join(call["function"].get("arguments", "")
                        for c in chunks if c.data["choices"]
                        for call in c.data["choices"][0]["delta"].get("tool_calls", []))
    assert arguments == "{}"
    if native:
        assert b"".join(c.native or b"" for c in chunks) == NO_PARAMETER_CALL


def test_tool_indices_count_tool_calls_not_content_blocks() -> None:
    def tool_start(index: int) -> bytes:
        return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": f"toolu_{index}", "name": "f", "input": {}}})
    transcript = b"".join([
        TRANSCRIPT.split(b"\n\n")[0] + b"\n\n",  # message_start
        tool_start(3), tool_start(5),
        sse("content_block_delta", {"type": "content_block_delta", "index": 5,
                                    "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        sse("message_stop", {"type": "message_stop"}),
    ])
    _, chunks = run(transcript, 1 << 20)
    calls = [c.data["choices"][0]["delta"]["tool_calls"][0] for c in chunks
             if c.data["choices"] and "tool_calls" in c.data["choices"][0]["delta"]]
    assert [(call["index"], call.get("id")) for call in calls] == [(0, "toolu_3"), (1, "toolu_5"), (1, None)]


@pytest.mark.parametrize(("error_type", "kind"), [
    ("overloaded_error", FailureKind.OVERLOADED), ("rate_limit_error", FailureKind.RATE_LIMITED),
    ("api_error", FailureKind.SERVER_ERROR), ("timeout_error", FailureKind.TIMEOUT),
    ("invalid_request_error", FailureKind.CLIENT_ERROR), ("billing_error", FailureKind.QUOTA_EXHAUSTED),
])
def test_an_in_band_error_event_raises_by_its_type(error_type: str, kind: FailureKind) -> None:
    head = TRANSCRIPT.split(b"event: content_block_stop")[0]
    translator = AnthropicStreamTranslator("m")
    translator.feed(head)
    with pytest.raises(UpstreamError) as caught:
        translator.feed(sse("error", {"type": "error", "error": {"type": error_type, "message": "boom"}}))
    assert caught.value.kind is kind
    assert "boom" in caught.value.message


def test_a_stream_cut_before_message_stop_is_broken() -> None:
    translator = AnthropicStreamTranslator("m")
    chunks = translator.feed(TRANSCRIPT[:TRANSCRIPT.index(b"event: message_stop")])
    assert chunks and translator.usage == Usage(125, 42, 100, 0, 0)
    with pytest.raises(UpstreamError) as caught:
        translator.close()
    assert caught.value.kind is FailureKind.STREAM_BROKEN


def test_an_unreadable_event_breaks_the_stream() -> None:
    translator = AnthropicStreamTranslator("m")
    with pytest.raises(UpstreamError) as caught:
        translator.feed(b"event: message_start\ndata: {nope\n\n")
    assert caught.value.kind is FailureKind.STREAM_BROKEN


def test_a_last_event_without_a_blank_line_still_completes_the_stream() -> None:
    _, chunks = run(TRANSCRIPT.rstrip(b"\n"), 1 << 20)
    assert is_usage_chunk(chunks[-1].data)


def test_chat_stream_is_native_only_for_native_requests() -> None:
    body = {"model": "m", "max_tokens": 1, "messages": USER_HI}
    native = PROVIDER.chat_stream(ChatRequest(chat(USER_HI), NativeBody(NativeDialect.ANTHROPIC_MESSAGES, body)), TARGET)
    assert all(c.native is not None for c in native.feed(TRANSCRIPT))
    plain = PROVIDER.chat_stream(ChatRequest(chat(USER_HI)), TARGET)
    assert all(c.native is None for c in plain.feed(TRANSCRIPT))


# ---- token counting -----------------------------------------------------------------------


def test_a_count_sends_the_clients_own_body_to_count_tokens_with_the_targets_model() -> None:
    native = {"model": "smart", "system": "Be brief.", "messages": USER_HI, "thinking": {"type": "adaptive"}}
    request = PROVIDER.count_tokens_request(
        ChatRequest(chat(USER_HI), NativeBody(NativeDialect.ANTHROPIC_MESSAGES, native)), TARGET)

    assert (request.method, request.url) == ("POST", "https://api.anthropic.com/v1/messages/count_tokens")
    assert request.headers["x-api-key"] == KEY
    assert request.body is not None and orjson.loads(request.body) == {**native, "model": "claude-sonnet-4-5"}


def test_a_canonical_request_is_counted_without_what_only_generating_takes() -> None:
    request = PROVIDER.count_tokens_request(ChatRequest(chat(USER_HI, max_tokens=50, temperature=0.5)), TARGET)

    assert request.body is not None
    assert orjson.loads(request.body) == {"model": "claude-sonnet-4-5", "messages": USER_HI}


@pytest.mark.parametrize(("body", "tokens"), [
    (b'{"input_tokens": 42}', 42), (b'{"input_tokens": 0}', None), (b'{"input_tokens": true}', None),
    (b'{"input_tokens": "42"}', None), (b'{}', None), (b'[42]', None), (b'not json', None),
])
def test_only_a_positive_count_is_a_count(body: bytes, tokens: int | None) -> None:
    assert PROVIDER.counted_tokens(body) == tokens
