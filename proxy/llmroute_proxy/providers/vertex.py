"""Google Cloud Vertex AI: Gemini and Claude behind Google's front end (providers.md §3.1).

A Vertex target is an endpoint URL that carries project and location (`…/v1/projects/P/locations/L`)
and a model whose publisher its name tells (`table.vertex_publisher`: `claude-*` is Anthropic's,
any other Google's). Each publisher's API is the one the sidecar already speaks, at another address:

- Google: `{url}/publishers/google/models/{model}:generateContent` (`:streamGenerateContent?alt=sse`,
  `:countTokens`), the Gemini API's bodies, answers and errors. Vertex's `countTokens` takes
  `contents`, `systemInstruction` and `tools` directly, not the Developer API's
  `generateContentRequest`. Embeddings are another API on Vertex (`:predict`): refused, so a tier's
  other targets serve them.
- Anthropic: `{url}/publishers/anthropic/models/{model}:rawPredict` (`:streamRawPredict`), the
  Messages body without `model`, with `anthropic_version`; the client's betas stay in the
  `anthropic-beta` header, as Anthropic's own Vertex client sends them; answers, streams and errors
  are Anthropic's, but Google's front end refuses in Google's shape (401, 403, 404, 429
  `RESOURCE_EXHAUSTED`): both shapes are classified.

This module builds only the addresses and the Vertex differences: the bodies are the Gemini and
Anthropic dialects' (a message's built once, as Vertex takes it), and the Gemini and Anthropic
providers (handed in by the registry, so that no provider module imports another) read the answers
and build the count requests.
No credential goes in a request built here: the service-account key signs a token in the I/O shell
(`server/google_tokens.py`), which adds the `Authorization` header when the request is sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import orjson

from llmroute_proxy.dialects.anthropic.request_out import messages_body, native_messages
from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
    NativeDialect,
    RateLimits,
    StreamTranslator,
    UpstreamRequest,
    Usage,
)
from llmroute_proxy.dialects.common import loads_object
from llmroute_proxy.dialects.gemini.request_out import build_generate_body
from llmroute_proxy.dialects.service_tiers import vertex_request_tier
from llmroute_proxy.errors import UpstreamError
from llmroute_proxy.providers.base import Provider, TokenCounter, embeddings_elsewhere
from llmroute_proxy.table import Target, vertex_publisher

ANTHROPIC_VERSION = "vertex-2023-10-16"
"""What Claude on Vertex takes as `anthropic_version`, in the body (Anthropic's "Claude on Vertex AI")."""

_COUNTED = ("contents", "systemInstruction", "tools")
"""What Vertex's `countTokens` takes of a GenerateContentRequest."""

_JSON = {"content-type": "application/json"}
SHARED_REQUEST_TYPE = "x-vertex-ai-llm-shared-request-type"
"""Flex or Priority PayGo, for Gemini on the global endpoint (`dialects/service_tiers.py`)."""
_NO_EMBEDDINGS = "Vertex AI serves embeddings through another API (:predict), which the sidecar does not speak"


class Publisher(Provider, TokenCounter, Protocol):
    """A publisher's own provider (Gemini's, Anthropic's): it builds and reads the bodies."""


class VertexProvider:
    type: ClassVar[str] = "vertex"

    def __init__(self, google: Publisher, anthropic: Publisher) -> None:
        self._google = google
        self._anthropic = anthropic

    def _publisher(self, target: Target) -> Publisher:
        return self._anthropic if vertex_publisher(target.model) == "anthropic" else self._google

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        if vertex_publisher(target.model) == "anthropic":
            native = native_messages(request)
            message = {**native} if native is not None else messages_body(request.body, target.model)
            message.pop("model", None)  # in the URL
            message["anthropic_version"] = ANTHROPIC_VERSION
            method = "streamRawPredict" if request.stream else "rawPredict"
            return UpstreamRequest("POST", model_url(target, method), _claude_headers(request), orjson.dumps(message))
        body = orjson.dumps(build_generate_body(request, target.model))
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        headers = dict(_JSON)
        tier = vertex_request_tier(target, request.service_tier)
        if tier is not None:
            headers[SHARED_REQUEST_TYPE] = tier
        return UpstreamRequest("POST", model_url(target, method), headers, body)

    def count_tokens_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        """Gemini: `countTokens` of what the sidecar would send. Claude: the Messages count body (with
        `model`) at `count-tokens:rawPredict`, as Anthropic's own Vertex client sends it."""
        if vertex_publisher(target.model) == "anthropic":
            inner = self._anthropic.count_tokens_request(request, _keyless(target))
            url = f"{publisher_url(target)}/count-tokens:rawPredict"
            return UpstreamRequest("POST", url, _claude_headers(request), _versioned(inner.body))
        whole = build_generate_body(request, target.model)
        body = orjson.dumps({name: whole[name] for name in _COUNTED if name in whole})
        return UpstreamRequest("POST", model_url(target, "countTokens"), dict(_JSON), body)

    def counted_tokens(self, body: bytes) -> int | None:
        counted = self._anthropic.counted_tokens(body)
        return counted if counted is not None else self._google.counted_tokens(body)

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        return self._publisher(target).chat_response(body, request, target)

    def chat_stream(self, request: ChatRequest, target: Target) -> StreamTranslator:
        return self._publisher(target).chat_stream(request, target)

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        raise embeddings_elsewhere(_NO_EMBEDDINGS)

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        raise embeddings_elsewhere(_NO_EMBEDDINGS)

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`) from Claude itself;
        Google's (`{"error": {"code", "message", "status"}}`) from Gemini and from Google's front end."""
        parsed = loads_object(body)
        error = parsed.get("error") if parsed else None
        if isinstance(error, dict) and "type" in error and "status" not in error:
            return self._anthropic.classify_error(status, headers, body)
        classified = self._google.classify_error(status, headers, body)
        if classified.message.startswith("Gemini "):  # Google's front end answers for Claude as well
            return dataclasses.replace(classified, message="Vertex AI " + classified.message.removeprefix("Gemini "))
        return classified

    def rate_limits(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        limits = self._anthropic.rate_limits(headers, seen_wall)
        return limits if limits is not None else self._google.rate_limits(headers, seen_wall)

    def stored_response_request(self, target: Target, response_id: str, method: str,
                                input_items: str | None = None) -> UpstreamRequest | None:
        return None  # Vertex keeps no Responses: the sidecar made those it answered


def publisher_url(target: Target) -> str:
    return f"{target.url.rstrip('/')}/publishers/{vertex_publisher(target.model)}/models"


def model_url(target: Target, method: str) -> str:
    return f"{publisher_url(target)}/{target.model}:{method}"


def _keyless(target: Target) -> Target:
    """The target as the publisher's provider is asked to build for: no key (Vertex takes a token)."""
    return dataclasses.replace(target, credential=None) if target.credential is not None else target


def _versioned(count_body: bytes | None) -> bytes:
    """The Anthropic provider's count body (`model` kept: the count endpoint names none in its URL), with
    the `anthropic_version` Vertex wants in every body."""
    body = orjson.loads(count_body or b"{}")
    body["anthropic_version"] = ANTHROPIC_VERSION
    return orjson.dumps(body)


def _claude_headers(request: ChatRequest) -> dict[str, str]:
    """JSON, and the betas of a client's own Messages request in `anthropic-beta`, where Anthropic's Vertex
    client keeps them (`anthropic/lib/vertex/_client.py` moves only `model` and the version; its Bedrock
    client moves betas)."""
    native = request.native
    if native is not None and native.betas and native.dialect is NativeDialect.ANTHROPIC_MESSAGES:
        return {**_JSON, "anthropic-beta": native.betas}
    return dict(_JSON)
