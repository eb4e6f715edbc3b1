"""Google Gemini (Developer API, `generativelanguage`) behind the OpenAI-shaped interface.

This module is the provider the registry uses: endpoint URLs and auth headers here; the Gemini
dialect (`dialects/gemini`) translates: `request_out` (OpenAI → Gemini), `answer_in` (Gemini →
OpenAI), `errors` (classification).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from llmroute_proxy.dialects.base import ChatRequest, ChatResult, RateLimits, UpstreamRequest, Usage
from llmroute_proxy.dialects.common import counted_field, retry_after_seconds
from llmroute_proxy.dialects.gemini.answer_in import (
    GeminiStream,
    _decode,
    translate_embeddings,
    translate_response,
)
from llmroute_proxy.dialects.gemini.errors import classify_payload
from llmroute_proxy.dialects.gemini.request_out import build_embeddings_body, build_generate_body
from llmroute_proxy.dialects.service_tiers import gemini_request_tier
from llmroute_proxy.errors import UpstreamError
from llmroute_proxy.table import Target

DEFAULT_API_VERSION = "v1beta"


def model_url(target: Target, method: str) -> str:
    version = target.options.get("api_version", DEFAULT_API_VERSION)
    model = target.model.removeprefix("models/")
    return f"{target.url.rstrip('/')}/{version}/models/{model}:{method}"


def request_headers(target: Target) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if target.credential:
        headers["x-goog-api-key"] = target.credential.reveal()
    return headers


class GeminiProvider:
    type: ClassVar[str] = "gemini"

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        generate = build_generate_body(request, target.model)
        tier = gemini_request_tier(target, request.service_tier)
        if tier is not None:
            generate["serviceTier"] = tier
        body = orjson.dumps(generate)
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        return UpstreamRequest("POST", model_url(target, method), request_headers(target), body)

    def count_tokens_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        """`countTokens` of the whole GenerateContentRequest the sidecar would send: its system
        instruction and tools count too, which `contents` alone would leave out."""
        whole = {"model": "models/" + target.model.removeprefix("models/"), **build_generate_body(request, target.model)}
        body = orjson.dumps({"generateContentRequest": whole})
        return UpstreamRequest("POST", model_url(target, "countTokens"), request_headers(target), body)

    def counted_tokens(self, body: bytes) -> int | None:
        return counted_field(body, "totalTokens")

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        return translate_response(body, target.model)

    def chat_stream(self, request: ChatRequest, target: Target) -> GeminiStream:
        return GeminiStream(target.model)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        payload = orjson.dumps(build_embeddings_body(body, target))
        return UpstreamRequest("POST", model_url(target, "batchEmbedContents"), request_headers(target), payload)

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        return translate_embeddings(body, request_body, target.model)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return classify_payload(status, headers, _decode(body), body)

    def rate_limits(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        """Gemini sends no rate-limit headers; its back-off hint is in the error body (`RetryInfo`)."""
        retry_after = retry_after_seconds(headers, seen_wall)
        return None if retry_after is None else RateLimits(retry_after_s=retry_after)

    def stored_response_request(self, target: Target, response_id: str, method: str,
                                input_items: str | None = None) -> UpstreamRequest | None:
        return None  # Gemini keeps no Responses: the sidecar made those it answered
