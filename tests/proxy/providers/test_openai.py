"""OpenAI and OpenAI-compatible providers: golden requests, responses, streams and error classification."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmroute_proxy.dialects.base import ChatRequest, StreamChunk, StreamTranslator, Usage
from llmroute_proxy.dialects.openai.chat import OpenAIStreamTranslator
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.base import Provider
from llmroute_proxy.providers.openai import OpenAICompatibleProvider, OpenAIProvider
from llmroute_proxy.scrubbing import Scrubber
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

GOLDEN = Path(__file__).parent / "golden" / "openai"
KEY = "sk-golden-0123456789abcdef"
# typed as `Provider` so that mypy checks both classes against the protocol
PROVIDERS: dict[str, Provider] = {"openai": OpenAIProvider(), "openai-compatible": OpenAICompatibleProvider()}
OPENAI = OpenAIProvider()
COMPATIBLE = OpenAICompatibleProvider()


def make_target(url: str = "https://api.openai.com/v1", model: str = "gpt-4o", key: str | None = KEY,
                provider_type: ProviderType = ProviderType.OPENAI) -> Target:
    return Target(id=TargetId(f"p/{model}@us"), provider="p", provider_type=provider_type, model=model,
                  url=url, region="us", credential=Secret(key) if key is not None else None)


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def golden_bytes(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def translate(translator: StreamTranslator, pieces: Sequence[bytes]) -> list[StreamChunk]:
    out: list[StreamChunk] = []
    for piece in pieces:
        out.extend(translator.feed(piece))
    out.extend(translator.close())
    return out


def as_pairs(chunks: Sequence[StreamChunk]) -> list[tuple[dict[str, Any], bytes | None]]:
    return [(chunk.data, chunk.raw) for chunk in chunks]


def splits(stream: bytes) -> dict[str, list[bytes]]:
    """The same body cut in awkward places, and with CRLF line ends."""
    middle = len(stream) // 2
    return {
        "whole": [stream],
        "byte by byte": [stream[i:i + 1] for i in range(len(stream))],
        "mid line": [stream[:middle], stream[middle:]],
        "every 7 bytes": [stream[i:i + 7] for i in range(0, len(stream), 7)],
        "crlf byte by byte": [bytes([b]) for b in stream.replace(b"\n", b"\r\n")],
        "crlf every 5 bytes": [stream.replace(b"\n", b"\r\n")[i:i + 5] for i in range(0, len(stream) * 2, 5)],
    }


# --- requests -------------------------------------------------------------------------------------

REQUEST_CASES = sorted(p.name for p in GOLDEN.glob("*_request*.json"))


@pytest.mark.parametrize("name", REQUEST_CASES)
def test_requests_are_built_exactly_as_the_golden_file_says(name: str) -> None:
    case = golden(name)
    provider = PROVIDERS[case["provider"]]
    target = make_target(case["target"]["url"], case["target"]["model"], case["target"]["key"])
    body = case["request"]
    if name.startswith("embeddings"):
        built = provider.embeddings_request(body, target)
    else:
        built = provider.chat_request(ChatRequest(body), target)
    expected = case["expected"]
    assert built.method == expected["method"]
    assert built.url == expected["url"]
    assert built.headers == expected["headers"]
    assert built.body is not None
    assert orjson.loads(built.body) == expected["body"]
    assert list(orjson.loads(built.body)) == list(expected["body"])  # key order kept: model stays in place


@pytest.mark.parametrize("name", REQUEST_CASES)
def test_building_a_request_never_mutates_the_clients_body(name: str) -> None:
    case = golden(name)
    body = case["request"]
    before = copy.deepcopy(body)
    target = make_target(case["target"]["url"], case["target"]["model"], case["target"]["key"])
    PROVIDERS[case["provider"]].chat_request(ChatRequest(body), target)
    assert body == before


def test_the_key_appears_only_in_the_authorization_header() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    built = OPENAI.chat_request(ChatRequest(body), make_target())
    assert KEY not in built.url and KEY not in repr(built.body) and KEY not in repr(built.method)
    assert [name for name, value in built.headers.items() if KEY in value] == ["Authorization"]


def test_an_empty_credential_sends_no_authorization_header() -> None:
    built = COMPATIBLE.chat_request(ChatRequest({"model": "m", "messages": []}), make_target(key=""))
    assert "Authorization" not in built.headers


def test_providers_declare_their_registry_type() -> None:
    assert ProviderType(OpenAIProvider.type) is ProviderType.OPENAI
    assert ProviderType(OpenAICompatibleProvider.type) is ProviderType.OPENAI_COMPATIBLE


# --- responses ------------------------------------------------------------------------------------


def test_a_response_is_parsed_once_and_kept_as_raw_bytes_with_cached_and_reasoning_usage_and_its_tier() -> None:
    body = golden_bytes("chat_response_cached_reasoning.json")
    result = OPENAI.chat_response(body, ChatRequest({}), make_target())
    assert result.raw is body
    assert result.data["choices"][0]["message"]["content"] == "The answer is 42."
    assert result.usage == Usage(input_tokens=1117, output_tokens=946, cached_input_tokens=1024,
                                 reasoning_tokens=768, service_tier="default")


def test_a_tool_call_response_keeps_the_calls_and_counts_usage() -> None:
    body = golden_bytes("chat_response_tool_calls.json")
    result = OPENAI.chat_response(body, ChatRequest({}), make_target())
    assert result.data["choices"][0]["message"]["tool_calls"][0]["id"] == "call_abc"
    assert result.usage == Usage(input_tokens=82, output_tokens=17)


def test_a_compatible_response_without_usage_id_or_created_is_accepted() -> None:
    body = golden_bytes("chat_response_compatible_minimal.json")
    result = COMPATIBLE.chat_response(body, ChatRequest({}), make_target())
    assert result.data["choices"][0]["message"]["content"] == "Hi!"
    assert result.usage == Usage()
    assert result.raw is body


@pytest.mark.parametrize("body", [
    b"<html><body>502 Bad Gateway</body></html>",
    b"",
    b'{"object": "list", "data": []}',
    b'[{"choices": []}]',
    b'{"choices": "none"}',
])
def test_a_200_that_is_not_a_chat_completion_is_a_server_error(body: bytes) -> None:
    with pytest.raises(UpstreamError) as caught:
        OPENAI.chat_response(body, ChatRequest({}), make_target())
    assert caught.value.kind is FailureKind.SERVER_ERROR
    assert caught.value.status == 200
    assert "not a chat completion" in caught.value.message


def test_a_200_carrying_an_error_object_is_classified_by_that_error() -> None:
    body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    with pytest.raises(UpstreamError) as caught:
        COMPATIBLE.chat_response(body, ChatRequest({}), make_target())
    assert caught.value.kind is FailureKind.RATE_LIMITED


def test_embeddings_pass_through_with_prompt_token_usage() -> None:
    data, usage = OPENAI.embeddings_response(golden_bytes("embeddings_response.json"), {}, make_target())
    assert [item["index"] for item in data["data"]] == [0, 1]
    assert usage == Usage(input_tokens=8)


def test_embeddings_that_are_not_a_list_are_a_server_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        OPENAI.embeddings_response(b'{"choices": []}', {}, make_target())
    assert caught.value.kind is FailureKind.SERVER_ERROR


# --- streams --------------------------------------------------------------------------------------


def data_lines(stream: bytes) -> list[bytes]:
    return [line[6:] for line in stream.split(b"\n") if line.startswith(b"data: ") and line != b"data: [DONE]"]


def test_a_text_stream_passes_every_chunk_through_with_its_original_bytes() -> None:
    stream = golden_bytes("stream_text.sse")
    translator = OPENAI.chat_stream(ChatRequest({"stream": True}), make_target())
    chunks = translate(translator, [stream])
    assert [chunk.raw for chunk in chunks] == data_lines(stream)
    assert [chunk.data for chunk in chunks] == [orjson.loads(line) for line in data_lines(stream)]
    assert translator.finish_reason == "stop"
    assert translator.usage == Usage(input_tokens=9, output_tokens=2)


def test_a_tool_stream_keeps_argument_fragments_and_records_cached_and_reasoning_usage() -> None:
    stream = golden_bytes("stream_tools.sse")
    translator = OPENAI.chat_stream(ChatRequest({"stream": True}), make_target())
    chunks = translate(translator, [stream])
    fragments = [call["function"]["arguments"] for chunk in chunks for choice in chunk.data["choices"]
                 for call in choice["delta"].get("tool_calls", [])]
    assert "".join(fragments) == '{"city":"Paris"}'
    assert translator.finish_reason == "tool_calls"
    assert translator.usage == Usage(input_tokens=60, output_tokens=18, cached_input_tokens=32, reasoning_tokens=4)
    assert chunks[-1].data["choices"] == [] and chunks[-1].raw is not None


STREAM_FIXTURES = [("openai", "stream_text.sse"), ("openai", "stream_tools.sse"),
                   ("openai-compatible", "stream_compatible_usage_on_finish.sse")]


@pytest.mark.parametrize(("provider", "name"), STREAM_FIXTURES)
def test_a_stream_translates_identically_however_the_bytes_are_split(provider: str, name: str) -> None:
    stream = golden_bytes(name)
    results = {
        how: as_pairs(translate(PROVIDERS[provider].chat_stream(ChatRequest({"stream": True}), make_target()),
                                pieces))
        for how, pieces in splits(stream).items()
    }
    reference = results.pop("whole")
    assert reference
    for how, result in results.items():
        assert result == reference, how


@pytest.mark.parametrize(("provider", "name"), STREAM_FIXTURES)
def test_a_stream_ends_with_exactly_one_usage_chunk(provider: str, name: str) -> None:
    translator = PROVIDERS[provider].chat_stream(ChatRequest({"stream": True}), make_target())
    chunks = translate(translator, [golden_bytes(name)])
    usage_chunks = [i for i, chunk in enumerate(chunks) if chunk.data.get("usage") is not None]
    assert usage_chunks == [len(chunks) - 1]
    assert chunks[-1].data["choices"] == []


def test_usage_on_a_chunk_with_choices_is_moved_to_a_separate_final_usage_chunk() -> None:
    translator = COMPATIBLE.chat_stream(ChatRequest({"stream": True}), make_target())
    chunks = translate(translator, [golden_bytes("stream_compatible_usage_on_finish.sse")])
    finish, usage = chunks[-2], chunks[-1]
    assert finish.data["choices"][0]["finish_reason"] == "length"
    assert "usage" not in finish.data and finish.raw is None
    assert usage.data == {"object": "chat.completion.chunk", "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
                          "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}
    assert usage.raw is None
    assert translator.usage == Usage(input_tokens=12, output_tokens=2)
    assert translator.finish_reason == "length"


def test_stripped_usage_carries_the_chunk_identity_and_waits_for_done() -> None:
    translator = OpenAIStreamTranslator()
    first = translator.feed(b'data: {"id":"c1","object":"chat.completion.chunk","created":5,"model":"m",'
                            b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
                            b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n')
    assert [chunk.data["choices"][0]["finish_reason"] for chunk in first] == ["stop"]
    rest = translator.feed(b"data: [DONE]\n\n") + translator.close()
    assert [chunk.data for chunk in rest] == [{"id": "c1", "object": "chat.completion.chunk", "created": 5,
                                               "model": "m", "choices": [],
                                               "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                                         "total_tokens": 4}}]


def test_a_later_usage_chunk_replaces_usage_stripped_earlier_so_only_one_is_sent() -> None:
    stream = (b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
              b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n'
              b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}\n\n'
              b"data: [DONE]\n\n")
    translator = OpenAIStreamTranslator()
    chunks = translate(translator, [stream])
    assert [chunk.data.get("usage") is not None for chunk in chunks] == [False, True]
    assert translator.usage == Usage(input_tokens=5, output_tokens=6)


def test_chunks_after_done_are_ignored() -> None:
    translator = OpenAIStreamTranslator()
    chunks = translate(translator, [b"data: [DONE]\n\n",
                                    b'data: {"choices":[{"index":0,"delta":{"content":"late"}}]}\n\n'])
    assert chunks == []


def test_a_stream_without_any_usage_ends_cleanly_with_no_usage() -> None:
    translator = OpenAIStreamTranslator()
    chunks = translate(translator, [b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}'
                                    b"\n\ndata: [DONE]\n\n"])
    assert len(chunks) == 1
    assert translator.usage is None


def test_done_without_a_trailing_blank_line_still_completes_the_stream() -> None:
    translator = OpenAIStreamTranslator()
    chunks = translate(translator, [b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\ndata: [DONE]'])
    assert len(chunks) == 1


IN_BAND_ERRORS = [
    ({"message": "The server had an error while processing your request. Sorry about that!",
      "type": "server_error", "param": None, "code": None}, FailureKind.SERVER_ERROR),
    ({"message": "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM).",
      "type": "tokens", "param": None, "code": "rate_limit_exceeded"}, FailureKind.RATE_LIMITED),
    ({"message": "You exceeded your current quota.", "type": "insufficient_quota", "param": None,
      "code": "insufficient_quota"}, FailureKind.QUOTA_EXHAUSTED),
    ({"message": "Overloaded", "type": "overloaded_error"}, FailureKind.OVERLOADED),
    ({"code": "content_filter", "message": "The response was filtered due to the prompt triggering Azure "
      "OpenAI's content management policy.", "param": "prompt", "status": 400}, FailureKind.CONTENT_FILTER),
    ({"message": "Request timed out", "type": "timeout_error"}, FailureKind.TIMEOUT),
    ({"message": "Requests to the ChatCompletions_Create Operation have exceeded call rate limit.",
      "code": "429"}, FailureKind.RATE_LIMITED),
    ({"message": "something odd", "type": "mystery"}, FailureKind.SERVER_ERROR),
    ("engine crashed", FailureKind.SERVER_ERROR),
]


@pytest.mark.parametrize(("error", "kind"), IN_BAND_ERRORS)
def test_an_in_band_error_raises_classified_like_the_http_error_it_stands_for(error: Any, kind: FailureKind) -> None:
    translator = OpenAIStreamTranslator()
    assert translator.feed(b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
    with pytest.raises(UpstreamError) as caught:
        translator.feed(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
    assert caught.value.kind is kind
    expected = error["message"] if isinstance(error, dict) else error
    assert caught.value.message == expected


def test_an_sse_error_event_is_an_in_band_error() -> None:
    translator = OpenAIStreamTranslator()
    with pytest.raises(UpstreamError) as caught:
        translator.feed(b'event: error\ndata: {"message": "busy", "type": "overloaded_error"}\n\n')
    assert caught.value.kind is FailureKind.OVERLOADED


@pytest.mark.parametrize("data", [b"data: not json\n\n", b"data: [1, 2]\n\n"])
def test_a_stream_event_that_is_not_a_json_object_is_a_server_error(data: bytes) -> None:
    with pytest.raises(UpstreamError) as caught:
        OpenAIStreamTranslator().feed(data)
    assert caught.value.kind is FailureKind.SERVER_ERROR


def cut(stream: bytes, before: bytes) -> bytes:
    return stream[:stream.index(before)]


def cut_line(stream: bytes, inside: bytes) -> bytes:
    """The stream up to the start of the line holding `inside`: a cut between two events."""
    return stream[:stream.rindex(b"\n", 0, stream.index(inside)) + 1]


@pytest.mark.parametrize(("provider", "body"), [
    ("openai", cut(golden_bytes("stream_text.sse"), b"data: [DONE]")),
    ("openai", cut(golden_bytes("stream_text.sse"), b'"lo"')),
    ("openai", cut(golden_bytes("stream_text.sse"), b'{"index":0,"delta":{},')),
    ("openai", b""),
    ("openai-compatible", cut(golden_bytes("stream_compatible_usage_on_finish.sse"), b'{"index":0,"delta":{},')),
    ("openai-compatible", cut(golden_bytes("stream_text.sse"), b'"lo"')),
    ("openai-compatible", cut_line(golden_bytes("stream_text.sse"), b'"finish_reason":"stop"')),
    ("openai-compatible", cut_line(golden_bytes("stream_compatible_usage_on_finish.sse"), b'"length"')),
    ("openai-compatible", b""),
])
def test_a_stream_cut_before_completion_is_broken(provider: str, body: bytes) -> None:
    translator = PROVIDERS[provider].chat_stream(ChatRequest({"stream": True}), make_target())
    translator.feed(body)
    with pytest.raises(UpstreamError) as caught:
        translator.close()
    assert caught.value.kind is FailureKind.STREAM_BROKEN


def test_a_compatible_stream_may_end_without_done_right_after_its_finish_chunk() -> None:
    stream = golden_bytes("stream_compatible_usage_on_finish.sse")
    assert b"[DONE]" not in stream
    translator = COMPATIBLE.chat_stream(ChatRequest({"stream": True}), make_target())
    chunks = translate(translator, [stream])
    assert chunks[-1].data["usage"]["total_tokens"] == 14


def test_an_openai_stream_must_end_with_done_even_after_its_finish_chunk() -> None:
    translator = OPENAI.chat_stream(ChatRequest({"stream": True}), make_target())
    translator.feed(golden_bytes("stream_compatible_usage_on_finish.sse"))
    with pytest.raises(UpstreamError) as caught:
        translator.close()
    assert caught.value.kind is FailureKind.STREAM_BROKEN
    assert "after its finish chunk" in caught.value.message


# --- errors ---------------------------------------------------------------------------------------

CONTEXT_400 = {"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages "
                         "resulted in 130412 tokens. Please reduce the length of the messages.",
                         "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
VLLM_CONTEXT_400 = {"object": "error", "message": "This model's maximum context length is 4096 tokens. However, you "
                    "requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length "
                    "of the messages or completion.", "type": "BadRequestError", "param": None, "code": 400}
POLICY_400 = {"error": {"message": "Your request was rejected as a result of our safety system.",
                        "type": "invalid_request_error", "param": None, "code": "content_policy_violation"}}
AZURE_FILTER_400 = {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                              "management policy.", "type": None, "param": "prompt", "code": "content_filter",
                              "status": 400,
                              "innererror": {"code": "ResponsibleAIPolicyViolation",
                                             "content_filter_result": {"jailbreak": {"filtered": True,
                                                                                     "detected": True}}}}}
AZURE_IMAGE_FILTER_400 = {"error": {"code": "contentFilter", "message": "Your task failed as a result of our safety "
                                    "system.", "innererror": {"code": "ResponsibleAIPolicyViolation"}}}
INVALID_400 = {"error": {"message": "Invalid value for 'temperature': must be between 0 and 2.",
                         "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}}
UNPROCESSABLE_422 = {"detail": [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}]}
AUTH_401 = {"error": {"message": "Incorrect API key provided: sk-proj-********************abcd. You can find your "
                      "API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error",
                      "param": None, "code": "invalid_api_key"}}
REGION_403 = {"error": {"message": "Country, region, or territory not supported", "type": "request_forbidden",
                        "param": None, "code": "unsupported_country_region_territory"}}
NOT_FOUND_404 = {"error": {"message": "The model `gpt-5-turbo` does not exist or you do not have access to it.",
                           "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
ITEM_404 = {"error": {"message": "Item with id 'rs_68c1' not found. Items are not persisted when `store` is set to "
                      "false. Try again with `store` set to true, or remove this item from your input.",
                      "type": "invalid_request_error", "param": "input", "code": None}}
"""The Responses API's answer to an input item it does not hold: the request's fault, not the target's."""
PREVIOUS_404 = {"error": {"message": "Previous response with id 'resp_68c1' not found.",
                          "type": "invalid_request_error", "param": "previous_response_id",
                          "code": "previous_response_not_found"}}
"""Its answer to a conversation it does not hold: another account or endpoint may hold it."""
DEPLOYMENT_404 = {"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not "
                            "exist. If you created the deployment within the last 5 minutes, please wait a moment "
                            "and try again."}}
QUOTA_429 = {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                       "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
RATE_429 = {"error": {"message": "Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): "
                      "Limit 500, Used 500, Requested 1.", "type": "requests", "param": None,
                      "code": "rate_limit_exceeded"}}
AZURE_RATE_429 = {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation under Azure "
                            "OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 "
                            "pricing tier. Please retry after 2 seconds."}}
SERVER_500 = {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                        "type": "server_error", "param": None, "code": None}}
WRAPPED_RATE_500 = {"error": {"code": 429, "message": "Upstream rate limited the request"}}
CONFLICT_409 = {"error": {"message": "Lock timeout", "type": "invalid_request_error", "param": None, "code": None}}
OVERLOADED_503 = {"error": {"message": "The engine is currently overloaded, please try again later",
                            "type": "server_error", "param": None, "code": None}}
HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
            b"</center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n")
HTML_413 = b"<html><head><title>413 Request Entity Too Large</title></head><body>nginx</body></html>"


def encoded(body: Any) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


CLASSIFICATION = [
    # status, headers, body, kind, retry_after
    (400, {}, CONTEXT_400, FailureKind.CONTEXT_LENGTH, None),
    (400, {}, VLLM_CONTEXT_400, FailureKind.CONTEXT_LENGTH, None),
    (400, {}, POLICY_400, FailureKind.CONTENT_FILTER, None),
    (400, {}, AZURE_FILTER_400, FailureKind.CONTENT_FILTER, None),
    (400, {}, AZURE_IMAGE_FILTER_400, FailureKind.CONTENT_FILTER, None),
    (400, {}, INVALID_400, FailureKind.CLIENT_ERROR, None),
    (413, {}, HTML_413, FailureKind.CLIENT_ERROR, None),
    (422, {}, UNPROCESSABLE_422, FailureKind.CLIENT_ERROR, None),
    (401, {}, AUTH_401, FailureKind.AUTH, None),
    (403, {}, REGION_403, FailureKind.AUTH, None),
    (404, {}, NOT_FOUND_404, FailureKind.TARGET_NOT_FOUND, None),
    (404, {}, DEPLOYMENT_404, FailureKind.TARGET_NOT_FOUND, None),
    (404, {}, ITEM_404, FailureKind.CLIENT_ERROR, None),
    (404, {}, PREVIOUS_404, FailureKind.NOT_HELD, None),
    (408, {}, b"", FailureKind.TIMEOUT, None),
    (409, {}, CONFLICT_409, FailureKind.SERVER_ERROR, None),
    (429, {"retry-after": "20"}, QUOTA_429, FailureKind.QUOTA_EXHAUSTED, 20.0),
    (429, {"retry-after": "20", "x-ratelimit-remaining-requests": "0"}, RATE_429, FailureKind.RATE_LIMITED, 20.0),
    (429, {"retry-after-ms": "1500", "retry-after": "2"}, AZURE_RATE_429, FailureKind.RATE_LIMITED, 1.5),
    (429, {}, RATE_429, FailureKind.RATE_LIMITED, None),
    (500, {}, SERVER_500, FailureKind.SERVER_ERROR, None),
    (500, {"retry-after": "3"}, WRAPPED_RATE_500, FailureKind.RATE_LIMITED, 3.0),
    (502, {}, HTML_502, FailureKind.SERVER_ERROR, None),
    (503, {"retry-after": "5"}, OVERLOADED_503, FailureKind.OVERLOADED, 5.0),
    (504, {}, HTML_502.replace(b"502 Bad Gateway", b"504 Gateway Time-out"), FailureKind.TIMEOUT, None),
    (520, {}, b"", FailureKind.SERVER_ERROR, None),
    (529, {}, b'{"error": {"message": "Overloaded", "type": "overloaded_error"}}', FailureKind.OVERLOADED, None),
]


@pytest.mark.parametrize(("status", "headers", "body", "kind", "retry_after"), CLASSIFICATION)
@pytest.mark.parametrize("provider", ["openai", "openai-compatible"])
def test_errors_are_classified_by_status_and_body(provider: str, status: int, headers: dict[str, str], body: Any,
                                                 kind: FailureKind, retry_after: float | None) -> None:
    error = PROVIDERS[provider].classify_error(status, headers, encoded(body))
    assert error.kind is kind
    assert error.status == status
    assert error.retry_after == retry_after
    assert error.message


def test_a_client_error_carries_the_upstreams_message_type_code_and_param_unchanged() -> None:
    error = OPENAI.classify_error(400, {}, orjson.dumps(INVALID_400))
    assert (error.message, error.error_type, error.code, error.param) == (
        "Invalid value for 'temperature': must be between 0 and 2.", "invalid_request_error", "invalid_value",
        "temperature")
    assert error.client_status == 400


def test_an_azure_content_filter_is_returned_with_code_content_filter() -> None:
    error = OPENAI.classify_error(400, {}, orjson.dumps(AZURE_FILTER_400))
    assert (error.kind, error.code, error.param, error.error_type) == (
        FailureKind.CONTENT_FILTER, "content_filter", "prompt", "invalid_request_error")
    assert error.message.startswith("The response was filtered")


@pytest.mark.parametrize(("status", "body", "fragment"), [
    (502, HTML_502, "502 Bad Gateway"),
    (413, HTML_413, "413 Request Entity Too Large"),
    (500, b"upstream connect error or disconnect/reset before headers", "upstream connect error"),
    (503, b"", "empty body"),
])
def test_a_body_that_is_not_json_gives_an_excerpt_as_the_message(status: int, body: bytes, fragment: str) -> None:
    error = OPENAI.classify_error(status, {}, body)
    assert fragment in error.message
    assert str(status) in error.message


def test_a_long_html_body_is_cut_to_an_excerpt() -> None:
    error = OPENAI.classify_error(502, {}, b"<html>" + b"x" * 10_000 + b"</html>")
    assert len(error.message) < 400


@pytest.mark.parametrize(("status", "body"), [
    (401, {"error": {"message": f"Incorrect API key provided: {KEY}.", "code": "invalid_api_key"}}),
    (401, {"error": {"message": "Invalid token: 0123456789abcdef0123456789abcdef", "code": "invalid_api_key"}}),
    (400, {"error": {"message": f"Header 'Authorization: Bearer {KEY}' is malformed", "code": "bad_header"}}),
    (500, {"error": f"backend rejected key {KEY}"}),
])
def test_an_echoed_key_never_appears_in_an_error_message(status: int, body: Any) -> None:
    """Every upstream error passes the sidecar's scrubber; one that holds no key at all still
    masks these by their shape (tests/proxy/test_scrubbing.py: the keys it holds, in any form)."""
    error = Scrubber().error(OPENAI.classify_error(status, {}, orjson.dumps(body)))
    assert KEY not in error.message and KEY not in str(error) and KEY not in repr(error)
    assert "0123456789abcdef0123456789abcdef" not in error.message


def test_an_in_band_error_never_carries_an_echoed_key() -> None:
    with pytest.raises(UpstreamError) as caught:
        OpenAIStreamTranslator().feed(b'data: {"error": {"message": "bad key sk-live-abcdefghijklmnop"}}\n\n')
    assert "sk-live-abcdefghijklmnop" not in Scrubber().error(caught.value).message



@pytest.mark.parametrize("kind", list(PROVIDERS))
def test_claudes_thinking_blocks_are_not_sent_to_openai(kind: str) -> None:
    """Only Claude can read them: an OpenAI client's tool loop that failed over here goes on without them."""
    step = {"role": "assistant", "content": "Looking.", "thinking_blocks": [{"type": "redacted_thinking", "data": "E"}]}
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}, step, {"role": "user", "content": "go"}]}
    sent = orjson.loads(PROVIDERS[kind].chat_request(ChatRequest(body), make_target()).body or b"")
    assert sent["messages"][1] == {"role": "assistant", "content": "Looking."}
