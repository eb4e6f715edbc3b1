"""The guard every provider runs behind: a stream request answered with one JSON document instead
of SSE, as providers and the proxies in front of them answer 200 with an error object as the body,
is classified as that error, per provider type, never as a broken stream; one that is a whole answer
is that answer, as a stream."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from llmroute_proxy.dialects.base import ChatRequest, StreamTranslator, in_choice_order
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.guarded import MAX_DOCUMENT
from llmroute_proxy.providers.registry import provider_for
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId
from tests.proxy.providers.test_openai import translate

KEY = "sk-guarded-0123456789abcdef"
MODELS = {ProviderType.OPENAI: "gpt-4o", ProviderType.OPENAI_COMPATIBLE: "llama-3",
          ProviderType.AZURE_OPENAI: "gpt-4o-prod", ProviderType.ANTHROPIC: "claude-sonnet-4-5",
          ProviderType.GEMINI: "gemini-2.5-flash"}
STREAM_REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def target(kind: ProviderType) -> Target:
    return Target(id=TargetId(f"p/{MODELS[kind]}@us"), provider="p", provider_type=kind, model=MODELS[kind],
                  url="https://upstream.test", region="us", credential=Secret(KEY))


def stream_for(kind: ProviderType) -> StreamTranslator:
    return provider_for(kind).chat_stream(ChatRequest(dict(STREAM_REQUEST)), target(kind))


def deliveries(body: bytes) -> dict[str, list[bytes]]:
    """The document as one piece, byte by byte, pretty-printed over lines, after blank lines."""
    pretty = json.dumps(orjson.loads(body), indent=2).encode()
    return {
        "whole": [body],
        "byte by byte": [body[i:i + 1] for i in range(len(body))],
        "pretty, every 5 bytes": [pretty[i:i + 5] for i in range(0, len(pretty), 5)],
        "after blank lines, crlf": [b"\r\n", b"\r\n  ", pretty.replace(b"\n", b"\r\n"), b"\r\n"],
    }


OPENAI_SHAPES: list[tuple[Any, FailureKind, int]] = [
    ({"error": {"message": "Incorrect API key provided: sk-abc*****wxyz.", "type": "invalid_request_error",
                "param": None, "code": "invalid_api_key"}}, FailureKind.AUTH, 401),
    ({"error": {"message": "Country, region, or territory not supported", "type": "invalid_request_error",
                "param": None, "code": "unsupported_country_region_territory"}}, FailureKind.AUTH, 403),
    ({"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "param": None,
                "code": "insufficient_quota"}}, FailureKind.QUOTA_EXHAUSTED, 429),
    ({"error": {"message": "The model does not exist.", "type": "invalid_request_error", "param": None,
                "code": "model_not_found"}}, FailureKind.TARGET_NOT_FOUND, 404),
    ({"error": {"message": "temperature must be at most 2", "type": "invalid_request_error",
                "param": "temperature", "code": "invalid_value"}}, FailureKind.CLIENT_ERROR, 400),
    ({"error": {"message": "The engine is overloaded.", "type": "server_error", "param": None, "code": None}},
     FailureKind.SERVER_ERROR, 500),
]
AZURE_SHAPES: list[tuple[Any, FailureKind, int]] = [
    ({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}},
     FailureKind.AUTH, 401),
    ({"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}},
     FailureKind.TARGET_NOT_FOUND, 404),
    ({"error": {"code": "ServiceUnavailable", "message": "The service is temporarily unable to process."}},
     FailureKind.OVERLOADED, 503),
    ({"error": {"message": "The response was filtered", "type": None, "param": "prompt", "code": "content_filter",
                "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation"}}},
     FailureKind.CONTENT_FILTER, 400),
]
ANTHROPIC_SHAPES: list[tuple[Any, FailureKind, int]] = [
    ({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
     FailureKind.AUTH, 401),
    ({"error": {"type": "authentication_error", "message": "invalid x-api-key"}}, FailureKind.AUTH, 401),
    ({"type": "error", "error": {"type": "billing_error", "message": "Your credit balance is too low."}},
     FailureKind.QUOTA_EXHAUSTED, 402),
    ({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
      "request_id": "req_011"}, FailureKind.CLIENT_ERROR, 400),
    ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, FailureKind.OVERLOADED, 529),
]
GEMINI_SHAPES: list[tuple[Any, FailureKind, int]] = [
    ([{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                 "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                            "reason": "API_KEY_INVALID"}]}}], FailureKind.AUTH, 400),
    ({"error": {"code": 403, "message": "Permission denied.", "status": "PERMISSION_DENIED"}}, FailureKind.AUTH, 403),
    ({"error": {"message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}},
     FailureKind.AUTH, 401),
    ([{"error": {"code": 400, "message": "Invalid value at 'contents[0].role'", "status": "INVALID_ARGUMENT"}}],
     FailureKind.CLIENT_ERROR, 400),
    ([{"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}}],
     FailureKind.RATE_LIMITED, 429),
]
CASES = [(kind, body, failure, status)
         for kinds, shapes in (((ProviderType.OPENAI, ProviderType.OPENAI_COMPATIBLE), OPENAI_SHAPES),
                               ((ProviderType.AZURE_OPENAI,), AZURE_SHAPES),
                               ((ProviderType.ANTHROPIC,), ANTHROPIC_SHAPES),
                               ((ProviderType.GEMINI,), GEMINI_SHAPES))
         for kind in kinds for body, failure, status in shapes]


def _case_id(case: tuple[ProviderType, Any, FailureKind, int]) -> str:
    kind, _, failure, status = case
    return f"{kind.value}-{status}-{failure.value}"


@pytest.mark.parametrize(("kind", "document", "failure", "status"), CASES, ids=[_case_id(c) for c in CASES])
@pytest.mark.parametrize("delivery", ["whole", "byte by byte", "pretty, every 5 bytes", "after blank lines, crlf"])
def test_a_stream_answered_with_an_error_document_is_that_error(
        kind: ProviderType, document: Any, failure: FailureKind, status: int, delivery: str) -> None:
    pieces = deliveries(orjson.dumps(document))[delivery]
    with pytest.raises(UpstreamError) as caught:
        translate(stream_for(kind), pieces)
    assert caught.value.kind is failure
    assert caught.value.status == status


@pytest.mark.parametrize("kind", list(MODELS))
def test_the_error_is_raised_by_the_read_that_completes_the_document_without_waiting_for_the_end(
        kind: ProviderType) -> None:
    """A proxy may keep the connection open after its error body: nothing waits for the end."""
    translator = stream_for(kind)
    body = orjson.dumps({"error": {"code": 401, "type": "authentication_error", "status": "UNAUTHENTICATED",
                                   "message": "bad key"}})
    assert translator.feed(body[:-1]) == []
    with pytest.raises(UpstreamError) as caught:
        translator.feed(body[-1:])
    assert caught.value.kind is FailureKind.AUTH


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_client_error_in_a_document_keeps_the_upstreams_message_for_the_client(kind: ProviderType) -> None:
    bodies = {ProviderType.ANTHROPIC: {"type": "error", "error": {"type": "invalid_request_error",
                                                                   "message": "messages: at least one message"}},
              ProviderType.GEMINI: {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                              "message": "messages: at least one message"}}}
    body = bodies.get(kind, {"error": {"message": "messages: at least one message",
                                       "type": "invalid_request_error", "param": "messages", "code": None}})
    with pytest.raises(UpstreamError) as caught:
        translate(stream_for(kind), [orjson.dumps(body)])
    assert caught.value.kind is FailureKind.CLIENT_ERROR
    assert caught.value.client_status == 400
    assert caught.value.message == "messages: at least one message"


WHOLE_ANSWERS = {
    ProviderType.OPENAI: {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi", "refusal": None},
                                       "logprobs": None, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
    ProviderType.ANTHROPIC: {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                             "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
                             "usage": {"input_tokens": 3, "output_tokens": 1}},
    ProviderType.GEMINI: {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]},
                                          "finishReason": "STOP"}],
                          "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}},
}


@pytest.mark.parametrize("kind", list(WHOLE_ANSWERS))
@pytest.mark.parametrize("delivery", ["whole", "byte by byte", "pretty, every 5 bytes", "after blank lines, crlf"])
def test_a_stream_answered_with_a_whole_answer_is_that_answer_as_a_stream(kind: ProviderType, delivery: str) -> None:
    """An OpenAI-compatible server or a buffering proxy that ignores `stream: true`: the answer is not lost."""
    translator = stream_for(kind)
    chunks = translate(translator, deliveries(orjson.dumps(WHOLE_ANSWERS[kind]))[delivery])
    content = [chunk.data for chunk in chunks if chunk.data["choices"]]
    assert [c["choices"][0]["delta"].get("content") for c in content] == ["Hi"]
    assert content[0]["object"] == "chat.completion.chunk" and content[0]["choices"][0]["finish_reason"] == "stop"
    usage = [chunk.data["usage"] for chunk in chunks if not chunk.data["choices"]]
    assert len(usage) == 1 and (usage[0]["prompt_tokens"], usage[0]["completion_tokens"]) == (3, 1)
    if kind is ProviderType.OPENAI:
        assert usage == [WHOLE_ANSWERS[kind]["usage"]]  # the upstream's own usage object, as it sent it
    assert translator.usage is not None and (translator.usage.input_tokens, translator.usage.output_tokens) == (3, 1)
    assert translator.finish_reason == "stop"


def test_a_whole_answer_of_several_choices_keeps_each_choices_finish_in_choice_order() -> None:
    answer = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}},
        {"index": 1, "finish_reason": "length", "message": {"role": "assistant", "content": "Hel"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    translator = stream_for(ProviderType.OPENAI_COMPATIBLE)
    translate(translator, [orjson.dumps(answer)])
    assert in_choice_order(translator.finish_reasons) == ("stop", "length")
    assert translator.finish_reason == "stop"


def test_a_whole_answer_with_tool_calls_streams_them_with_their_indexes() -> None:
    answer = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}}]}}]}
    chunks = translate(stream_for(ProviderType.OPENAI_COMPATIBLE), [orjson.dumps(answer)])
    delta = chunks[0].data["choices"][0]["delta"]
    assert delta == {"role": "assistant", "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}}]}


def test_a_whole_answer_followed_by_more_bytes_is_the_targets_failure() -> None:
    with pytest.raises(UpstreamError) as caught:
        translate(stream_for(ProviderType.OPENAI), [orjson.dumps(WHOLE_ANSWERS[ProviderType.OPENAI]), b"data: x"])
    assert caught.value.kind is FailureKind.SERVER_ERROR and "followed by more" in caught.value.message


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("body", [b'{"error": {"message": "cut', b"[", b"  {\n", b'{"error": 1}}'],
                         ids=["cut", "bracket", "brace", "extra brace"])
def test_a_document_that_never_completes_is_the_targets_failure_at_the_end(kind: ProviderType, body: bytes) -> None:
    with pytest.raises(UpstreamError) as caught:
        translate(stream_for(kind), [body])
    assert caught.value.kind is FailureKind.SERVER_ERROR
    assert caught.value.status == 200


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_document_larger_than_an_error_body_is_refused_before_it_is_whole(kind: ProviderType) -> None:
    translator = stream_for(kind)
    translator.feed(b'{"error": {"message": "')
    with pytest.raises(UpstreamError) as caught:
        for _ in range(MAX_DOCUMENT // 1024 + 1):
            translator.feed(b"x" * 1024)
    assert caught.value.kind is FailureKind.SERVER_ERROR
    assert len(caught.value.message) < 1000


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("body", [b"", b"\n\n", b": keep-alive\n\n"], ids=["empty", "blank lines", "comment"])
def test_a_stream_with_no_events_is_still_broken(kind: ProviderType, body: bytes) -> None:
    with pytest.raises(UpstreamError) as caught:
        translate(stream_for(kind), [body[i:i + 1] for i in range(len(body))])
    assert caught.value.kind is FailureKind.STREAM_BROKEN


def test_an_sse_stream_after_blank_lines_is_translated_as_before() -> None:
    body = (b'\n\ndata: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
            b'"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
    chunks = translate(stream_for(ProviderType.OPENAI), [body[i:i + 3] for i in range(0, len(body), 3)])
    assert [c.data["choices"][0]["delta"] for c in chunks] == [{"content": "Hi"}]
