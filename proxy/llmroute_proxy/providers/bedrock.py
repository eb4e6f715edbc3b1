"""Amazon Bedrock: Claude through InvokeModel, every other chat model through Converse (providers.md §2.7,
§4.2, §6).

InvokeModel takes Anthropic's own Messages body, so the Anthropic dialect translates Claude's requests
(`request_out`, `answer_in`): this module only addresses them. The body loses `model` and `stream` and gains
`anthropic_version: bedrock-2023-05-31`, and the betas a client sent in `anthropic-beta` go in the body's
`anthropic_beta`. Any other model (Llama, Mistral, Nova, DeepSeek, Cohere, gpt-oss, Qwen…) speaks Converse,
one request shape for all of them, which the Bedrock dialect translates (`dialects/bedrock`); an Anthropic
client's request to one goes through the canonical form, as to any provider that does not speak it.

The model id goes in the path, URL-encoded with its `:` kept (as Anthropic's SDK sends it), and `stream`
chooses the operation: `/invoke` or `/invoke-with-response-stream`, `/converse` or `/converse-stream`. The
key is an Amazon Bedrock API key, sent as `Authorization: Bearer`, or an IAM access key (JSON:
`aws_access_keys`); a request with the latter, or with none (`credentials.workloadIdentity`: the pod's AWS
credentials), is signed where it is sent (SigV4: `providers/aws_sigv4`, `server/aws_credentials`).

Streams are AWS event-stream frames (`dialects/eventstream.py`). InvokeModel's `chunk` frames carry one
Anthropic stream event each, base64 in their JSON, which the Anthropic stream translator reads as if it
came as SSE; Converse's frames carry its own events. An `exception` frame is the failure its type says,
as an HTTP error of that type would be (`dialects/bedrock/errors.py`, for both).

Embeddings go through InvokeModel too, to Titan Text Embeddings (v2, v1) and Cohere Embed v3, each in its
own body (`dialects/bedrock/embeddings.py`); any other model passes the target over. Token counting is left
to the sidecar's estimate.
"""

from __future__ import annotations

import base64
import binascii
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
    StreamTranslator,
    UpstreamRequest,
    Usage,
)
from llmroute_proxy.dialects.bedrock import errors
from llmroute_proxy.dialects.bedrock.answer_in import ConverseStream, translate_response
from llmroute_proxy.dialects.bedrock.embeddings import embedding_family, embeddings_body, translate_embeddings
from llmroute_proxy.dialects.bedrock.request_out import converse_body
from llmroute_proxy.dialects.common import body_excerpt, loads_object
from llmroute_proxy.dialects.eventstream import EventStreamDecoder, Frame
from llmroute_proxy.dialects.service_tiers import BEDROCK_TIER_HEADER, bedrock_request_tier
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.base import embeddings_elsewhere
from llmroute_proxy.table import ACCESS_KEY_AUTH, Target, bedrock_claude

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
_NOT_SENT = frozenset({"model", "stream", "service_tier"})
"""The model is in the path, streaming in the operation, the service tier in a header (Bedrock's, not
Anthropic's)."""
_NO_EMBEDDINGS = ("Bedrock embeddings are built for Titan Text Embeddings (amazon.titan-embed-text-v2:0, "
                  "amazon.titan-embed-text-v1) and Cohere Embed v3 (cohere.embed-english-v3, "
                  "cohere.embed-multilingual-v3) only")


class BedrockProvider:
    type: ClassVar[str] = "bedrock"

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        if not bedrock_claude(target.model):
            operation = "converse-stream" if request.stream else "converse"
            tier = bedrock_request_tier(target, request.service_tier)
            return _request(target, operation, orjson.dumps(converse_body(request, target.model, tier)))
        native = native_messages(request)
        body = native if native is not None else messages_body(request.body, target.model)
        sent = {name: value for name, value in body.items() if name not in _NOT_SENT}
        sent["anthropic_version"] = BEDROCK_ANTHROPIC_VERSION
        betas = _betas(request)
        if betas:
            sent["anthropic_beta"] = betas
        operation = "invoke-with-response-stream" if body.get("stream") is True else "invoke"
        upstream = _request(target, operation, orjson.dumps(sent))
        tier = bedrock_request_tier(target, request.service_tier)
        if tier is not None:  # InvokeModel's tier is a header (the body is Anthropic's)
            upstream.headers[BEDROCK_TIER_HEADER] = tier
        return upstream

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        if not bedrock_claude(target.model):
            return translate_response(body, target.model)
        message = read_message(body, "Bedrock")
        data, usage = completion_from_message(message, target.model)
        return ChatResult(data=data, usage=usage, native=message if native_messages(request) is not None else None)

    def chat_stream(self, request: ChatRequest, target: Target) -> StreamTranslator:
        if not bedrock_claude(target.model):
            return ConverseStream(target.model)
        return BedrockStreamTranslator(target.model, native=native_messages(request) is not None)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        family = embedding_family(target.model)
        if family is None:
            raise embeddings_elsewhere(_NO_EMBEDDINGS)
        return _request(target, "invoke", orjson.dumps(embeddings_body(body, family)))

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        family = embedding_family(target.model)
        if family is None:
            raise embeddings_elsewhere(_NO_EMBEDDINGS)
        return translate_embeddings(body, request_body, family, target.model)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return errors.classify_error(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        return None  # Bedrock answers without rate-limit headers

    def stored_response_request(self, target: Target, response_id: str, method: str,
                                input_items: str | None = None) -> UpstreamRequest | None:
        return None


def _request(target: Target, operation: str, body: bytes) -> UpstreamRequest:
    url = f"{target.url.rstrip('/')}/model/{quote(target.model, safe=':')}/{operation}"
    headers = {"content-type": "application/json", "accept": "application/json"}
    if target.credential and target.options.get("auth") != ACCESS_KEY_AUTH:  # an access key signs instead
        headers["authorization"] = "Bearer " + target.credential.reveal()
    return UpstreamRequest("POST", url, headers, body)


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
    parsed = errors.event_payload(frame)
    if frame.headers.get(":event-type") != "chunk":
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


def _betas(request: ChatRequest) -> list[str]:
    native = request.native
    if native is None or native.dialect is not NativeDialect.ANTHROPIC_MESSAGES or not native.betas:
        return []
    return [beta.strip() for beta in native.betas.split(",") if beta.strip()]
