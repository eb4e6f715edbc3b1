"""Anthropic Messages API behind the canonical OpenAI interface (providers.md §2, §5, §6).

This module is the provider the registry uses: endpoint URL and headers here; the Anthropic
dialect (`dialects/anthropic`) translates: `request_out` (OpenAI → Messages), `answer_in`
(Messages → OpenAI), `errors` (classification).

Two ways in. A canonical OpenAI request is translated field by field. A request that arrived
on `/v1/messages` (`ChatRequest.native`) is forwarded as the client sent it with only
`model` replaced, and the native answer rides along in `ChatResult.native` / `StreamChunk.native`
so the front door can relay it unchanged (thinking signatures, cache counts, everything).
Either way the canonical answer is filled in: usage, cost and finish reasons come from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from llmroute_proxy.dialects.anthropic.answer_in import (
    AnthropicStreamTranslator,
    completion_from_message,
    read_message,
)
from llmroute_proxy.dialects.anthropic.errors import upstream_error
from llmroute_proxy.dialects.anthropic.ratelimits import rate_limits as anthropic_rate_limits
from llmroute_proxy.dialects.anthropic.request_out import messages_body, native_messages
from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
    NativeDialect,
    RateLimits,
    UpstreamRequest,
    Usage,
)
from llmroute_proxy.dialects.common import body_excerpt, counted_field, loads_object, retry_after_seconds
from llmroute_proxy.errors import UpstreamError
from llmroute_proxy.providers.base import embeddings_elsewhere
from llmroute_proxy.table import Target

ANTHROPIC_VERSION = "2023-06-01"
_GENERATION_ONLY = frozenset({"max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata",
                              "service_tier"})
"""What a Messages request may set that a count request may not: it generates nothing."""

JSON = dict[str, Any]


class AnthropicProvider:
    type: ClassVar[str] = "anthropic"

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        native = native_messages(request)
        if native is not None:
            body = {**native, "model": target.model}
        else:
            body = messages_body(request.body, target.model)
        return UpstreamRequest("POST", target.url.rstrip("/") + "/v1/messages", _headers(target, request),
                               orjson.dumps(body))

    def count_tokens_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        """The client's own body with `model` replaced, as for a message; a canonical request is
        translated, less what only generating takes (the count endpoint refuses it)."""
        native = native_messages(request)
        if native is not None:
            body = {**native, "model": target.model}
        else:
            body = {name: value for name, value in messages_body(request.body, target.model).items()
                    if name not in _GENERATION_ONLY}
        return UpstreamRequest("POST", target.url.rstrip("/") + "/v1/messages/count_tokens", _headers(target, request),
                               orjson.dumps(body))

    def counted_tokens(self, body: bytes) -> int | None:
        return counted_field(body, "input_tokens")

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        message = read_message(body)
        data, usage = completion_from_message(message, target.model)
        return ChatResult(data=data, usage=usage, native=message if native_messages(request) is not None else None)

    def chat_stream(self, request: ChatRequest, target: Target) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(target.model, native=native_messages(request) is not None)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        raise embeddings_elsewhere("Anthropic has no embeddings API")

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        raise embeddings_elsewhere("Anthropic has no embeddings API")

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        parsed = loads_object(body)
        error = parsed.get("error") if parsed else None
        if isinstance(error, dict):
            error_type = str(error.get("type") or "api_error")
            message = str(error.get("message") or error_type)
        else:
            error_type, message = "api_error", body_excerpt(body) or f"HTTP {status}"
        return upstream_error(status, error_type, message, retry_after_seconds(headers))

    def rate_limits(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        return anthropic_rate_limits(headers, seen_wall)

    def stored_response_request(self, target: Target, response_id: str, method: str,
                                input_items: str | None = None) -> UpstreamRequest | None:
        return None  # Anthropic keeps no Responses: the sidecar made those it answered


def _headers(target: Target, request: ChatRequest | None = None) -> dict[str, str]:
    """The provider's own key, and the beta features of the client's own Messages request (its
    `anthropic-beta`: what its body may use), the one client header sent on."""
    headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
    if target.credential:
        headers["x-api-key"] = target.credential.reveal()
    native = request.native if request is not None else None
    if native is not None and native.betas and native.dialect is NativeDialect.ANTHROPIC_MESSAGES:
        headers["anthropic-beta"] = native.betas
    return headers


