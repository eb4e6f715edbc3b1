"""The Bedrock provider: Claude's Messages body addressed to InvokeModel, the AWS event stream read
back into Anthropic's events, and Bedrock's exceptions classified."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import orjson
import pytest

from llmroute_proxy.dialects.base import ChatRequest, NativeBody, NativeDialect, StreamChunk, is_usage_chunk
from llmroute_proxy.dialects.eventstream import EventStreamDecoder
from llmroute_proxy.errors import BadRequest, FailureKind, UpstreamError
from llmroute_proxy.providers.bedrock import BedrockProvider
from llmroute_proxy.sim.bedrock import encode_frame
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

PROVIDER = BedrockProvider()
KEY = "ABSKbedrock-api-key"
URL = "https://bedrock-runtime.us-east-1.amazonaws.com"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
USER_HI = [{"role": "user", "content": "hi"}]


def target(model: str = SONNET) -> Target:
    return Target(id=TargetId(f"bedrock/{model}@us-east-1"), provider="bedrock", provider_type=ProviderType.BEDROCK,
                  model=model, url=URL + "/", region="us-east-1", credential=Secret(KEY))


def sent(request: ChatRequest, model: str = SONNET) -> tuple[str, dict[str, str], dict[str, Any]]:
    upstream = PROVIDER.chat_request(request, target(model))
    assert upstream.method == "POST" and upstream.body is not None
    return upstream.url, upstream.headers, orjson.loads(upstream.body)


def native(body: dict[str, Any], betas: str = "") -> ChatRequest:
    return ChatRequest({"model": "x", "messages": USER_HI}, NativeBody(NativeDialect.ANTHROPIC_MESSAGES, body, betas=betas))


# ---- request ----------------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "operation"), [(False, "invoke"), (True, "invoke-with-response-stream")])
def test_a_canonical_request_becomes_a_messages_body_without_model_or_stream(stream: bool, operation: str) -> None:
    url, headers, body = sent(ChatRequest({"model": "smart", "messages": USER_HI, "stream": stream,
                                           "service_tier": "flex"}))

    assert url == f"{URL}/model/{SONNET}/{operation}"
    assert headers == {"authorization": f"Bearer {KEY}", "content-type": "application/json",
                       "accept": "application/json"}
    assert body == {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 4096,
                    "messages": [{"role": "user", "content": "hi"}]}


def test_a_native_request_keeps_its_body_and_sends_its_betas_in_the_body() -> None:
    url, headers, body = sent(native({"model": "bedrock", "max_tokens": 10, "messages": USER_HI, "stream": True,
                                      "thinking": {"type": "enabled", "budget_tokens": 1024}},
                                     betas="context-1m-2025-08-07, interleaved-thinking-2025-05-14"))

    assert url.endswith("/invoke-with-response-stream")
    assert "anthropic-beta" not in headers
    assert body == {"max_tokens": 10, "messages": USER_HI, "thinking": {"type": "enabled", "budget_tokens": 1024},
                    "anthropic_version": "bedrock-2023-05-31",
                    "anthropic_beta": ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]}


@pytest.mark.parametrize(("model", "path"), [
    ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "us.anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "eu.anthropic.claude-3-7-sonnet-20250219-v1:0"),
])
def test_inference_profiles_are_claude_and_go_in_the_path_with_their_colon(model: str, path: str) -> None:
    url, _, _ = sent(ChatRequest({"model": "m", "messages": USER_HI}), model)
    assert url == f"{URL}/model/{path}/invoke"


def test_embeddings_are_refused_naming_model_for_a_chat_model() -> None:
    with pytest.raises(BadRequest) as refused:
        PROVIDER.embeddings_request({"model": "e", "input": "hi"}, target())
    assert (refused.value.param, refused.value.code) == ("model", "unsupported_operation")


# ---- answers ----------------------------------------------------------------------------

MESSAGE = {"id": "msg_bdrk_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
           "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 4}}


def test_an_answer_is_claudes_message_translated() -> None:
    result = PROVIDER.chat_response(orjson.dumps(MESSAGE), ChatRequest({"model": "m", "messages": USER_HI}), target())
    assert result.data["choices"][0]["message"]["content"] == "Hello"
    assert result.data["choices"][0]["finish_reason"] == "stop"
    assert (result.usage.input_tokens, result.usage.cached_input_tokens, result.usage.output_tokens) == (16, 4, 3)
    assert result.native is None


def chunk(event: dict[str, Any]) -> bytes:
    return encode_frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                        orjson.dumps({"bytes": base64.b64encode(orjson.dumps(event)).decode()}))


def exception(kind: str, message: str) -> bytes:
    return encode_frame({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
                        orjson.dumps({"message": message}))


EVENTS: list[dict[str, Any]] = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                                          "model": "claude-sonnet-4-5-20250929", "stop_reason": None,
                                          "usage": {"input_tokens": 25, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 5}},
    {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 25, "outputTokenCount": 5,
                                                                  "invocationLatency": 300, "firstByteLatency": 90}},
]
STREAM = b"".join(chunk(event) for event in EVENTS)


def translated(pieces: list[bytes], native_client: bool = False) -> tuple[list[StreamChunk], Any]:
    request = native({"model": "m", "max_tokens": 9, "messages": USER_HI}) if native_client \
        else ChatRequest({"model": "m", "messages": USER_HI})
    translator = PROVIDER.chat_stream(request, target())
    chunks = [c for piece in pieces for c in translator.feed(piece)]
    return [*chunks, *translator.close()], translator


def test_a_stream_split_at_every_byte_is_translated_as_a_whole_one() -> None:
    whole, _ = translated([STREAM])
    bytewise, translator = translated([STREAM[i:i + 1] for i in range(len(STREAM))])

    assert [c.data for c in bytewise] == [c.data for c in whole]
    assert "".join(c.data["choices"][0]["delta"].get("content") or "" for c in whole if c.data["choices"]) == "Hello"
    assert is_usage_chunk(whole[-1].data) and translator.finish_reason == "stop"
    assert translator.usage is not None and (translator.usage.input_tokens, translator.usage.output_tokens) == (25, 5)


def test_an_anthropic_client_is_relayed_the_events_as_sse() -> None:
    chunks, _ = translated([STREAM], native_client=True)
    relayed = b"".join(c.native or b"" for c in chunks)

    assert relayed.startswith(b"event: message_start\ndata: {")
    assert relayed.count(b"event: content_block_delta\n") == 2 and relayed.endswith(b"\n\n")
    assert b"event: message_stop\n" in relayed


@pytest.mark.parametrize(("kind", "failure", "status"), [
    ("throttlingException", FailureKind.RATE_LIMITED, 429),
    ("modelStreamErrorException", FailureKind.SERVER_ERROR, 424),
    ("internalServerException", FailureKind.SERVER_ERROR, 500),
    ("serviceUnavailableException", FailureKind.OVERLOADED, 503),
    ("modelTimeoutException", FailureKind.TIMEOUT, 408),
    ("validationException", FailureKind.CLIENT_ERROR, 400),
])
def test_an_exception_frame_is_the_failure_its_type_says(kind: str, failure: FailureKind, status: int) -> None:
    with pytest.raises(UpstreamError) as raised:
        translated([STREAM[:len(chunk(EVENTS[0])) + len(chunk(EVENTS[1]))], exception(kind, "it went wrong")])
    assert (raised.value.kind, raised.value.status) == (failure, status)
    assert "it went wrong" in raised.value.message


def test_a_stream_that_ends_inside_a_frame_is_broken() -> None:
    with pytest.raises(UpstreamError) as raised:
        translated([STREAM[:-3]])
    assert raised.value.kind is FailureKind.STREAM_BROKEN and "ended inside a frame" in raised.value.message


def test_a_chunk_without_base64_bytes_is_broken() -> None:
    bad = encode_frame({":event-type": "chunk", ":message-type": "event"}, b'{"bytes": "not base64!"}')
    with pytest.raises(UpstreamError) as raised:
        translated([bad])
    assert raised.value.kind is FailureKind.STREAM_BROKEN


# ---- the event-stream decoder -----------------------------------------------------------


def test_frames_split_at_every_byte_decode_to_the_same_frames() -> None:
    decoder = EventStreamDecoder()
    frames = [frame for i in range(len(STREAM)) for frame in decoder.feed(STREAM[i:i + 1])]
    decoder.close()

    assert [f.headers[":event-type"] for f in frames] == ["chunk"] * len(EVENTS)
    assert [orjson.loads(base64.b64decode(orjson.loads(f.payload)["bytes"])) for f in frames] == EVENTS


def test_a_frame_with_every_header_type_keeps_its_string_headers() -> None:
    # a bool, a byte, a short, an int, a long, bytes, a timestamp and a uuid before a string header
    others = (b"\x01a\x00" + b"\x01b\x02\x07" + b"\x01c\x03\x00\x07" + b"\x01d\x04\x00\x00\x00\x07"
              + b"\x01e\x05" + bytes(8) + b"\x01f\x06\x00\x02hi" + b"\x01g\x08" + bytes(8) + b"\x01h\x09" + bytes(16))
    plain = encode_frame({":message-type": "event"}, b"{}")
    headers = others + plain[12:-6]
    prelude = struct.pack(">II", 16 + len(headers) + 2, len(headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + b"{}"
    frame = head + struct.pack(">I", zlib.crc32(head))

    (decoded,) = EventStreamDecoder().feed(frame)
    assert decoded.headers == {":message-type": "event"} and decoded.payload == b"{}"


@pytest.mark.parametrize(("at", "why"), [(9, "prelude fails its CRC"), (20, "message CRC"), (-1, "message CRC")])
def test_a_flipped_byte_is_a_broken_stream(at: int, why: str) -> None:
    frame = bytearray(chunk(EVENTS[2]))
    frame[at] ^= 0x01
    with pytest.raises(UpstreamError) as raised:
        EventStreamDecoder().feed(bytes(frame))
    assert raised.value.kind is FailureKind.STREAM_BROKEN and why in raised.value.message


def test_a_length_no_frame_can_have_is_a_broken_stream() -> None:
    prelude = struct.pack(">II", 8, 0)
    with pytest.raises(UpstreamError, match="bytes long"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))


# ---- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "error_type", "message", "kind"), [
    (429, "ThrottlingException", "Too many requests, please wait before trying again.", FailureKind.RATE_LIMITED),
    (429, "ModelNotReadyException", "Model is not ready", FailureKind.OVERLOADED),
    (503, "ServiceUnavailableException", "Bedrock is unable to process your request.", FailureKind.OVERLOADED),
    (500, "InternalServerException", "internal", FailureKind.SERVER_ERROR),
    (424, "ModelErrorException", "The model failed", FailureKind.SERVER_ERROR),
    (408, "ModelTimeoutException", "Model timed out", FailureKind.TIMEOUT),
    (403, "AccessDeniedException", "You don't have access to the model with the specified model ID.", FailureKind.AUTH),
    (403, "UnrecognizedClientException", "The security token included in the request is invalid.", FailureKind.AUTH),
    (404, "ResourceNotFoundException", "Could not resolve the foundation model", FailureKind.TARGET_NOT_FOUND),
    (400, "ServiceQuotaExceededException", "quota", FailureKind.QUOTA_EXHAUSTED),
    (400, "ValidationException", "messages: roles must alternate", FailureKind.CLIENT_ERROR),
    (400, "ValidationException", "Input is too long for requested model.", FailureKind.CONTEXT_LENGTH),
    (400, "ValidationException", "prompt is too long: 210000 tokens > 200000 maximum", FailureKind.CONTEXT_LENGTH),
    (502, "", "Bad Gateway", FailureKind.SERVER_ERROR),
    (401, "", "unauthorized", FailureKind.AUTH),
])
def test_bedrock_errors_are_classified_by_their_error_type(status: int, error_type: str, message: str,
                                                             kind: FailureKind) -> None:
    headers = {"x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"} \
        if error_type else {}
    error = PROVIDER.classify_error(status, headers, orjson.dumps({"message": message}))
    assert error.kind is kind and error.status == status
    assert message in error.message
    if kind is FailureKind.CONTEXT_LENGTH:
        assert error.code == "context_length_exceeded"


def test_an_error_type_in_the_body_is_read_when_the_header_is_missing() -> None:
    error = PROVIDER.classify_error(429, {}, b'{"__type": "com.amazon.coral#ThrottlingException", "message": "slow"}')
    assert error.kind is FailureKind.RATE_LIMITED and "ThrottlingException" in error.message


def test_a_retry_after_header_sets_the_back_off() -> None:
    error = PROVIDER.classify_error(429, {"x-amzn-errortype": "ThrottlingException", "retry-after": "3"},
                                    b'{"message": "slow"}')
    assert error.retry_after == 3
