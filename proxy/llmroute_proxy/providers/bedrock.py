"""Claude on Amazon Bedrock, through InvokeModel (providers.md §2.7, §4.2, §6).

InvokeModel takes Anthropic's own Messages body, so the Anthropic dialect translates (`request_out`,
`answer_in`): this module only addresses it. The model id goes in the path (URL-encoded, `:` kept, as
Anthropic's SDK sends it), `stream` chooses `/invoke` or `/invoke-with-response-stream`, the body loses
`model` and `stream` and gains `anthropic_version: bedrock-2023-05-31`, and the betas a client sent in
`anthropic-beta` go in the body's `anthropic_beta`. The key is an Amazon Bedrock API key, sent as
`Authorization: Bearer`; a target without one (`credentials.workloadIdentity`) is signed with the pod's
AWS credentials where the request is sent (SigV4: `providers/aws_sigv4`, `server/aws_credentials`).

A stream is AWS event-stream frames (`dialects/eventstream.py`): each `chunk` carries one Anthropic
stream event, base64 in its JSON, which the Anthropic stream translator reads as if it came as SSE; an
`exception` frame is the failure its type says, as an HTTP error of that type would be.

Only Claude is built: any other model on a Bedrock provider (Llama, Titan, Nova… which InvokeModel
takes in bodies of their own) is refused with a `BadRequest`, so the request passes over the target.
Token counting is left to the sidecar's estimate.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import orjson

from llmroute_proxy.dialects.anthropic.answer_in import (
    AnthropicStreamTranslator,
    completion_from_message,
    read_message,
)
from llmroute_proxy.dialects.anthropic.request_out import messages_body, native_messages
from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
    NativeDialect,
    RateLimits,
    StreamChunk,
    UpstreamRequest,
    Usage,
)
from llmroute_proxy.dialects.common import body_excerpt, loads_object, retry_after_seconds
from llmroute_proxy.dialects.eventstream import EventStreamDecoder, Frame
from llmroute_proxy.errors import BadRequest, FailureKind, UpstreamError
from llmroute_proxy.providers.base import embeddings_elsewhere
from llmroute_proxy.table import Target

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
_CLAUDE = re.compile(r"(?:[a-z]{2,6}\.)?anthropic\.claude-[A-Za-z0-9._:-]+")
"""A Claude model id (`anthropic.claude-…`) or a cross-region inference profile's
(`us.`, `eu.`, `apac.`, `global.`… before it)."""
_NOT_SENT = frozenset({"model", "stream", "service_tier"})
"""The model is in the path, streaming in the operation; Bedrock's service tiers are not Anthropic's."""
_NO_EMBEDDINGS = "Bedrock embeddings are not built: only Anthropic's Claude models through InvokeModel are"

_KINDS = {
    "ThrottlingException": FailureKind.RATE_LIMITED,
    "ServiceQuotaExceededException": FailureKind.QUOTA_EXHAUSTED,
    "ModelNotReadyException": FailureKind.OVERLOADED,
    "ServiceUnavailableException": FailureKind.OVERLOADED,
    "InternalServerException": FailureKind.SERVER_ERROR,
    "ModelErrorException": FailureKind.SERVER_ERROR,
    "ModelStreamErrorException": FailureKind.SERVER_ERROR,
    "ModelTimeoutException": FailureKind.TIMEOUT,
    "AccessDeniedException": FailureKind.AUTH,
    "UnrecognizedClientException": FailureKind.AUTH,
    "InvalidSignatureException": FailureKind.AUTH,  # a bad signature, or one signed more than 5 min off
    "IncompleteSignatureException": FailureKind.AUTH,
    "MissingAuthenticationTokenException": FailureKind.AUTH,
    "ExpiredTokenException": FailureKind.AUTH,  # temporary credentials used past their expiry
    "ResourceNotFoundException": FailureKind.TARGET_NOT_FOUND,
}
"""Bedrock's exception types (the `x-amzn-ErrorType` header, an exception frame's `:exception-type`)
→ what they mean for failover (providers.md §4.2, §6.2). `ValidationException` is the request's."""
_STATUS_KINDS = {401: FailureKind.AUTH, 403: FailureKind.AUTH, 404: FailureKind.TARGET_NOT_FOUND,
                 408: FailureKind.TIMEOUT, 429: FailureKind.RATE_LIMITED, 503: FailureKind.OVERLOADED}
"""For an answer without a type AWS names (a proxy's, a load balancer's)."""
_CONTEXT_OVERFLOW_MARKERS = ("input is too long", "too many input tokens", "prompt is too long",
                             "exceed context limit", "context window")
_STREAM_STATUS = {"ThrottlingException": 429, "ModelStreamErrorException": 424, "ValidationException": 400,
                  "InternalServerException": 500, "ServiceUnavailableException": 503, "ModelTimeoutException": 408}

JSON = dict[str, Any]


class BedrockProvider:
    type: ClassVar[str] = "bedrock"

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        _require_claude(target)
        native = native_messages(request)
        body = native if native is not None else messages_body(request.body, target.model)
        sent = {name: value for name, value in body.items() if name not in _NOT_SENT}
        sent["anthropic_version"] = BEDROCK_ANTHROPIC_VERSION
        betas = _betas(request)
        if betas:
            sent["anthropic_beta"] = betas
        operation = "invoke-with-response-stream" if body.get("stream") is True else "invoke"
        url = f"{target.url.rstrip('/')}/model/{quote(target.model, safe=':')}/{operation}"
        headers = {"content-type": "application/json", "accept": "application/json"}
        if target.credential:
            headers["authorization"] = "Bearer " + target.credential.reveal()
        return UpstreamRequest("POST", url, headers, orjson.dumps(sent))

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        message = read_message(body, "Bedrock")
        data, usage = completion_from_message(message, target.model)
        return ChatResult(data=data, usage=usage, native=message if native_messages(request) is not None else None)

    def chat_stream(self, request: ChatRequest, target: Target) -> BedrockStreamTranslator:
        return BedrockStreamTranslator(target.model, native=native_messages(request) is not None)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        raise embeddings_elsewhere(_NO_EMBEDDINGS)

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        raise embeddings_elsewhere(_NO_EMBEDDINGS)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        parsed = loads_object(body)
        error_type = _error_type(headers.get("x-amzn-errortype") or headers.get("x-amzn-ErrorType")
                                 or (parsed or {}).get("__type"))
        message = _message(parsed) or body_excerpt(body) or f"HTTP {status}"
        return bedrock_error(status, error_type, message, retry_after_seconds(headers))

    def rate_limits(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        return None  # Claude on Bedrock answers without Anthropic's rate-limit headers

    def stored_response_request(self, target: Target, response_id: str, method: str,
                                input_items: str | None = None) -> UpstreamRequest | None:
        return None


def bedrock_error(status: int, error_type: str, message: str, retry_after: float | None) -> UpstreamError:
    """One classification for HTTP errors and exception frames (providers.md §6.2)."""
    kind = _KINDS.get(error_type)
    if kind is None and (error_type == "ValidationException" or 400 <= status < 500):
        kind = _STATUS_KINDS.get(status, FailureKind.CLIENT_ERROR)
        if kind is FailureKind.CLIENT_ERROR and any(m in message.lower() for m in _CONTEXT_OVERFLOW_MARKERS):
            kind = FailureKind.CONTEXT_LENGTH
    if kind in (FailureKind.CLIENT_ERROR, FailureKind.CONTEXT_LENGTH):
        code = "context_length_exceeded" if kind is FailureKind.CONTEXT_LENGTH else None
        return UpstreamError(kind, message, status=status, error_type="invalid_request_error", code=code)
    return UpstreamError(kind or _STATUS_KINDS.get(status, FailureKind.SERVER_ERROR),
                         f"Bedrock {status} {error_type or 'error'}: {message}", status=status,
                         retry_after=retry_after, error_type=error_type or "api_error")


class BedrockStreamTranslator(AnthropicStreamTranslator):
    """Event-stream frames → the Anthropic events inside them → OpenAI chunks, as the Anthropic
    translator makes them from SSE. An exception frame raises its `UpstreamError`: before the first
    token the request fails over, after it the client gets an in-band error."""

    def __init__(self, model: str, native: bool = False) -> None:
        super().__init__(model, native)
        self._decoder = EventStreamDecoder()

    def feed(self, data: bytes) -> list[StreamChunk]:
        return self._chunks([event for frame in self._decoder.feed(data) if (event := _event(frame)) is not None])

    def close(self) -> list[StreamChunk]:
        self._decoder.close()
        return super().close()


def _event(frame: Frame) -> tuple[str | None, bytes] | None:
    """A chunk frame's Anthropic event (its name, its JSON); an exception frame's error raised; None
    for an event type InvokeModel does not send."""
    headers = frame.headers
    parsed = loads_object(frame.payload)
    if headers.get(":message-type") != "event":
        error_type = _error_type(headers.get(":exception-type") or headers.get(":error-code"))
        message = _message(parsed) or headers.get(":error-message") or body_excerpt(frame.payload) or error_type
        raise bedrock_error(_STREAM_STATUS.get(error_type, 500), error_type, message, None)
    if headers.get(":event-type") != "chunk":
        return None
    encoded = parsed.get("bytes") if parsed else None
    try:
        data = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
    except (binascii.Error, ValueError):
        data = None
    if data is None:
        raise UpstreamError(FailureKind.STREAM_BROKEN,
                            f"Bedrock sent a chunk without its event: {body_excerpt(frame.payload)}")
    event = loads_object(data)
    name = event.get("type") if event is not None else None
    return name if isinstance(name, str) else None, data


def _error_type(value: Any) -> str:
    """`ThrottlingException` from `ThrottlingException:http://internal.amazon.com/…`, from
    `com.amazonaws…#ThrottlingException` and from a stream's `throttlingException`."""
    if not isinstance(value, str) or not value:
        return ""
    name = value.split(":", 1)[0].rsplit("#", 1)[-1]
    return name[:1].upper() + name[1:]


def _message(parsed: JSON | None) -> str:
    message = (parsed or {}).get("message") or (parsed or {}).get("Message")
    return message if isinstance(message, str) else ""


def _betas(request: ChatRequest) -> list[str]:
    native = request.native
    if native is None or native.dialect is not NativeDialect.ANTHROPIC_MESSAGES or not native.betas:
        return []
    return [beta.strip() for beta in native.betas.split(",") if beta.strip()]


def _require_claude(target: Target) -> None:
    if not _CLAUDE.fullmatch(target.model):
        raise BadRequest(f"Bedrock target '{target.model}' is not a Claude model: only Anthropic's Claude models "
                         "through InvokeModel are built for Bedrock providers.",
                         param="model", code="unsupported_operation")
