"""Every provider behind one guard: an upstream answer the parsers cannot read is the target's
failure, never an exception out of the attempt loop (issue 11: fuzzing found wrong-typed fields —
`"usage": {"completion_tokens": [1]}`, a list where a chunk's choice belongs, a null candidate —
raising TypeError and AttributeError out of the OpenAI, Gemini and usage parsers).

The parsers check the shapes they know; this guard is what makes the class impossible: whatever
they missed becomes an `UpstreamError` (`server_error`, status 200 for an answer), which fails
over before the first token and ends a committed stream with an in-band error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
    RateLimits,
    StreamChunk,
    StreamTranslator,
    UpstreamRequest,
    Usage,
)
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.base import Provider
from llmroute_proxy.table import Target

_READ_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError,
                UnicodeError)


def _unreadable(what: str, exc: BaseException, status: int | None = 200) -> UpstreamError:
    return UpstreamError(FailureKind.SERVER_ERROR,
                         f"The upstream's {what} could not be read ({type(exc).__name__})", status=status)


class GuardedStream:
    """A stream translator whose unexpected failures are `UpstreamError`s."""

    __slots__ = ("_inner",)

    def __init__(self, inner: StreamTranslator) -> None:
        self._inner = inner

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage

    @usage.setter
    def usage(self, value: Usage | None) -> None:
        self._inner.usage = value

    @property
    def finish_reason(self) -> str | None:
        return self._inner.finish_reason

    @finish_reason.setter
    def finish_reason(self, value: str | None) -> None:
        self._inner.finish_reason = value

    def feed(self, data: bytes) -> list[StreamChunk]:
        try:
            return self._inner.feed(data)
        except _READ_ERRORS as exc:
            raise _unreadable("stream", exc) from None

    def close(self) -> list[StreamChunk]:
        try:
            return self._inner.close()
        except _READ_ERRORS as exc:
            raise _unreadable("stream", exc) from None


class GuardedProvider:
    """`inner`, with its answer, stream and error parsers guarded."""

    __slots__ = ("_inner", "type")

    type: ClassVar[str]  # type: ignore[misc]

    def __init__(self, inner: Provider) -> None:
        self._inner = inner
        self.type = inner.type  # type: ignore[misc]

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        return self._inner.chat_request(request, target)

    def chat_response(self, body: bytes, request: ChatRequest, target: Target) -> ChatResult:
        try:
            return self._inner.chat_response(body, request, target)
        except _READ_ERRORS as exc:
            raise _unreadable("answer", exc) from None

    def chat_stream(self, request: ChatRequest, target: Target) -> StreamTranslator:
        return GuardedStream(self._inner.chat_stream(request, target))

    def embeddings_request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return self._inner.embeddings_request(body, target)

    def embeddings_response(self, body: bytes, request_body: dict[str, Any],
                            target: Target) -> tuple[dict[str, Any], Usage]:
        try:
            return self._inner.embeddings_response(body, request_body, target)
        except _READ_ERRORS as exc:
            raise _unreadable("answer", exc) from None

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        try:
            return self._inner.classify_error(status, headers, body)
        except _READ_ERRORS as exc:
            return _unreadable(f"error answer (HTTP {status})", exc, status)

    def rate_limits(self, headers: Mapping[str, str], seen_wall: float) -> RateLimits | None:
        """Headers no parser can read say nothing: they never fail a request or a report."""
        try:
            return self._inner.rate_limits(headers, seen_wall)
        except _READ_ERRORS:
            return None
