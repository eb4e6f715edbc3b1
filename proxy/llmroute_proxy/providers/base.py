"""The interface every provider module implements (see `dialects/base.py` for the types that cross it).

A provider is a dialect plus an address: it builds the native request for a target (URL, headers,
credential) in its dialect, and reads the answer, the stream and the error body back with that
dialect's parsers. Providers are pure: no network I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
    RateLimits,
    StreamTranslator,
    UpstreamRequest,
    Usage,
)
from llmroute_proxy.errors import BadRequest, UpstreamError
from llmroute_proxy.table import Target


class Provider(Protocol):
    type: ClassVar[str]

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        """Build the native request; raise `BadRequest` naming the field it cannot translate."""
        ...

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult: ...

    def chat_stream(self, request: ChatRequest, target: Target) -> StreamTranslator: ...

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        """Raise `BadRequest` when the provider has no embeddings API."""
        ...

    def embeddings_response(self, body: bytes, request_body: dict[str, Any], target: Target) -> tuple[dict[str, Any], Usage]: ...

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """Classify a non-2xx answer (providers.md §6)."""
        ...

    def rate_limits(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        """What an answer's headers say of the provider's limits (`seen_wall`: epoch seconds it came);
        None when they say nothing."""
        ...

    def stored_response_request(self, target: Target, response_id: str, method: str,
                                input_items: str | None = None) -> UpstreamRequest | None:
        """The request (`method` GET or DELETE) that reads or deletes a Response the provider keeps (one
        it answered natively, with the client's `store`), or with `input_items` (a query string, maybe
        empty) GETs a page of its input items; None for a provider that keeps none."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """An optional ability: a provider with an endpoint that counts a request's input tokens."""

    def count_tokens_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        """The request that counts `request`'s input tokens as the target would take them."""
        ...

    def counted_tokens(self, body: bytes) -> int | None:
        """The count in a 2xx answer to `count_tokens_request`; None when it holds none."""
        ...

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError: ...


def embeddings_elsewhere(why: str) -> BadRequest:
    """An embeddings request refused by a provider that has none to offer (`why`): the dispatch passes the
    target over for the tier's next one, and a client whose tier has none gets this 400 naming `model`."""
    return BadRequest(f"{why}; route embeddings to an OpenAI, Azure OpenAI or Gemini target, or a Bedrock embedding model.",
                      param="model", code="unsupported_operation")
