"""Fuzz: any upstream body gets through every provider's unary response parser, error classifier
and stream translator as a result or a clean `UpstreamError` — never another exception, nor a hang.

Bodies are built near each API's real shapes (an answer, an error, a stream of events), then
mutated, truncated, given huge numbers, or made not UTF-8; a stream is also cut at arbitrary
byte boundaries. What comes out must be what the sidecar can relay: JSON-encodable dicts.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from llmroute_proxy.dialects.base import ChatRequest, ChatResult, StreamChunk
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.sim.bedrock import chunk_frame
from llmroute_proxy.table import ProviderType
from tests.proxy.fuzz.strategies import FUZZ, mutated, splits
from tests.proxy.fuzz.targets import PROVIDERS

CHAT = ChatRequest({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                    "stream_options": {"include_usage": True}})
EMBED_REQUEST: dict[str, Any] = {"model": "m", "input": ["a", "b"]}

OPENAI_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                 "message": {"role": "assistant", "content": "hi", "refusal": None,
                             "tool_calls": [{"id": "c", "type": "function",
                                             "function": {"name": "f", "arguments": "{}"}}]}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
              "prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": {"reasoning_tokens": 0}},
}
OPENAI_CHUNKS = [
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
     "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                                        "function": {"name": "f", "arguments": "{"}}]},
                  "finish_reason": "stop"}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
     "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
]
OPENAI_ERROR = {"error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
OPENAI_EMBEDDINGS = {"object": "list", "model": "m", "data": [{"object": "embedding", "index": 0,
                                                               "embedding": [0.1, -0.2]}],
                     "usage": {"prompt_tokens": 2, "total_tokens": 2}}

ANTHROPIC_ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "tool_use",
    "stop_sequence": None,
    "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "text", "text": "hi"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
    "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 1,
              "cache_creation_input_tokens": 0},
}
ANTHROPIC_EVENTS = [
    ("message_start", {"type": "message_start", "message": {**ANTHROPIC_ANSWER, "content": [],
                                                            "stop_reason": None}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "Hi"}}),
    ("content_block_start", {"type": "content_block_start", "index": 1,
                             "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": 2}}),
    ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ("message_stop", {"type": "message_stop"}),
]
ANTHROPIC_ERROR = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}

GEMINI_ANSWER = {
    "candidates": [{"index": 0, "finishReason": "STOP",
                    "content": {"role": "model", "parts": [{"text": "hi"}, {"thought": True, "text": "hm"},
                                                           {"functionCall": {"name": "f", "args": {"a": 1}}}]}}],
    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5,
                      "cachedContentTokenCount": 1, "thoughtsTokenCount": 0},
    "promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "m", "responseId": "r1",
}
GEMINI_ERROR = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
                          "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"},
                                      {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                                       "violations": [{"quotaId": "PerDay"}]}]}}
GEMINI_EMBEDDINGS = {"embeddings": [{"values": [0.1, -0.2]}, {"values": [0.3]}]}

BEDROCK_ERROR = {"message": "Too many requests, please wait before trying again."}
ANSWERS = {ProviderType.ANTHROPIC: ANTHROPIC_ANSWER, ProviderType.GEMINI: GEMINI_ANSWER,
           ProviderType.BEDROCK: ANTHROPIC_ANSWER}
ERRORS = {ProviderType.ANTHROPIC: ANTHROPIC_ERROR, ProviderType.GEMINI: GEMINI_ERROR,
          ProviderType.BEDROCK: BEDROCK_ERROR}
EMBEDDINGS = {ProviderType.GEMINI: GEMINI_EMBEDDINGS}
HEADERS = st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms", "x-should-retry", "content-type",
                                           "anthropic-ratelimit-requests-reset", "x-ratelimit-reset-requests"]),
                          st.one_of(st.sampled_from(["1", "0.5", "-1", "nan", "inf", "1e309", "99999999999999999999",
                                                     "Wed, 21 Oct 2015 07:28:00 GMT", "", "\u00e9"]),
                                    st.text(max_size=10)), max_size=3)
STATUSES = st.one_of(st.sampled_from([400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529]),
                     st.integers(100, 599))


def encode(value: Any) -> bytes:
    """JSON as a provider might write it; numbers beyond 64 bits too (orjson refuses them)."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, allow_nan=True).encode()


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` as sent, truncated, with bytes that are not UTF-8, or with a huge number inside."""
    how = draw(st.integers(0, 5))
    if how == 1:
        return data[:draw(st.integers(0, len(data)))]
    if how == 2:
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xf0\x9f"])) + data[at:]
    if how == 3:
        return data.replace(b"2", b"1" * draw(st.sampled_from([20, 400, 5000])), 1)
    if how == 4:
        return data.replace(b"0", b"1e999", 1)
    return data


def bodies(base: Any) -> st.SearchStrategy[bytes]:
    return mutated(base).map(encode).flatmap(damaged)


def provider_bodies(by_type: dict[ProviderType, Any], default: Any) -> st.SearchStrategy[tuple[int, bytes]]:
    """(index into PROVIDERS, a body near that provider's shape)."""
    return st.integers(0, len(PROVIDERS) - 1).flatmap(
        lambda i: st.tuples(st.just(i), bodies(by_type.get(PROVIDERS[i][1].provider_type, default))))


def assert_relayable(data: Any) -> None:
    assert isinstance(data, dict)
    orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


def assert_clean(error: UpstreamError) -> None:
    assert isinstance(error.kind, FailureKind)
    assert isinstance(error.message, str)
    assert error.retry_after is None or (error.retry_after >= 0 and error.retry_after != float("inf"))


@FUZZ
@given(provider_bodies(ANSWERS, OPENAI_ANSWER))
def test_any_answer_is_parsed_or_refused_cleanly(case: tuple[int, bytes]) -> None:
    index, body = case
    provider, target = PROVIDERS[index]
    try:
        result = provider.chat_response(body, CHAT, target)
    except UpstreamError as error:
        assert_clean(error)
        return
    assert isinstance(result, ChatResult)
    assert_relayable(result.data)
    assert isinstance(result.data.get("choices"), list)


@FUZZ
@given(provider_bodies(EMBEDDINGS, OPENAI_EMBEDDINGS))
def test_any_embeddings_answer_is_parsed_or_refused_cleanly(case: tuple[int, bytes]) -> None:
    index, body = case
    provider, target = PROVIDERS[index]
    if target.provider_type in (ProviderType.ANTHROPIC, ProviderType.VERTEX, ProviderType.BEDROCK):
        return  # no embeddings API (Vertex: not the one the sidecar speaks; Bedrock: not built)
    try:
        data, usage = provider.embeddings_response(body, EMBED_REQUEST, target)
    except UpstreamError as error:
        assert_clean(error)
        return
    assert_relayable(data)
    assert usage.total_tokens >= 0


@FUZZ
@given(provider_bodies(ERRORS, OPENAI_ERROR), STATUSES, HEADERS)
def test_any_error_answer_is_classified(case: tuple[int, bytes], status: int, headers: dict[str, str]) -> None:
    index, body = case
    provider, _ = PROVIDERS[index]
    error = provider.classify_error(status, headers, body)
    assert isinstance(error, UpstreamError)
    assert_clean(error)


def stream_wire(provider_type: ProviderType, events: list[tuple[str | None, Any]]) -> bytes:
    if provider_type is ProviderType.ANTHROPIC:
        return b"".join((f"event: {name}\n".encode() if name else b"") + b"data: " + encode(data) + b"\n\n"
                        for name, data in events)
    if provider_type is ProviderType.BEDROCK:
        return b"".join(chunk_frame(b"data: " + encode(data)) for _, data in events)
    wire = b"".join(b"data: " + encode(data) + b"\n\n" for _, data in events)
    return wire + (b"data: [DONE]\n\n" if provider_type is not ProviderType.GEMINI else b"")


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, list[bytes]]:
    index = draw(st.integers(0, len(PROVIDERS) - 1))
    kind = PROVIDERS[index][1].provider_type
    if kind in (ProviderType.ANTHROPIC, ProviderType.BEDROCK):
        base: list[tuple[str | None, Any]] = list(ANTHROPIC_EVENTS)
    elif kind is ProviderType.GEMINI:
        base = [(None, GEMINI_ANSWER), (None, GEMINI_ANSWER)]
    else:
        base = [(None, chunk) for chunk in OPENAI_CHUNKS]
    events = draw(st.lists(st.sampled_from(base), max_size=8)) if draw(st.booleans()) else base
    events = [(name, draw(mutated(data))) for name, data in events]
    wire = draw(damaged(stream_wire(kind, events)))
    return index, draw(splits(wire))


@FUZZ
@given(streams())
def test_any_stream_is_translated_or_ends_in_a_clean_error(case: tuple[int, list[bytes]]) -> None:
    index, pieces = case
    provider, target = PROVIDERS[index]
    translator = provider.chat_stream(CHAT, target)
    out: list[StreamChunk] = []
    try:
        for piece in pieces:
            out.extend(translator.feed(piece))
        out.extend(translator.close())
    except UpstreamError as error:
        assert_clean(error)
    for chunk in out:
        assert_relayable(chunk.data)


def test_wrong_typed_fields_found_by_the_fuzzer_are_the_upstreams_failure() -> None:
    """Found by the fuzzer: these raised TypeError/AttributeError out of the parsers (a 500)."""
    by_type = {target.provider_type: (provider, target) for provider, target in PROVIDERS}
    provider, target = by_type[ProviderType.OPENAI]
    answer = {**OPENAI_ANSWER, "usage": {"prompt_tokens": 3, "completion_tokens": [1]}}
    for call in (lambda: provider.chat_response(encode(answer), CHAT, target),
                 lambda: provider.chat_stream(CHAT, target).feed(b'data: {"choices": [[false]]}\n\n')):
        try:
            call()
        except UpstreamError as error:
            assert error.kind is FailureKind.SERVER_ERROR
    provider, target = by_type[ProviderType.GEMINI]
    try:
        provider.chat_response(b'{"candidates": [null]}', CHAT, target)
    except UpstreamError as error:
        assert error.kind is FailureKind.SERVER_ERROR


def test_a_retry_after_of_nan_is_no_hint() -> None:
    """Found by the fuzzer: `retry-after: nan` gave a NaN cooldown."""
    for provider, _ in PROVIDERS:
        assert provider.classify_error(429, {"retry-after": "nan"}, b"").retry_after is None
