"""Every provider behind one guard: an upstream answer the parsers cannot read is the target's
failure, never an exception out of the attempt loop (issue 11: fuzzing found wrong-typed fields —
`"usage": {"completion_tokens": [1]}`, a list where a chunk's choice belongs, a null candidate —
raising TypeError and AttributeError out of the OpenAI, Gemini and usage parsers).

The parsers check the shapes they know; this guard is what makes the class impossible: whatever
they missed becomes an `UpstreamError` (`server_error`, status 200 for an answer), which fails
over before the first token and ends a committed stream with an in-band error.

The guard also reads a stream request's answer that is one JSON document instead of SSE: real
providers and the proxies in front of them answer 200 with their error object as the whole body
(`{"error": {...}}`, Gemini's `[{"error": {...}}]`). Google's SDK reads such a body as the error
it carries. Here the provider's own answer parser reads it, so the error is classified as the
same error in a unary 200 answer is, by the status it stands for (an auth failure ejects the
target, a bad request is the client's), instead of as a broken stream. A document that is a whole
answer (an OpenAI-compatible server or a buffering proxy that ignores `stream: true`) is the
answer: the client gets it as a stream of one chunk, with its usage, as if the server had streamed it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson

from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
    RateLimits,
    StreamChunk,
    StreamTranslator,
    UpstreamRequest,
    Usage,
    WholeStream,
    choice_index,
)
from llmroute_proxy.dialects.common import body_excerpt
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.base import Provider
from llmroute_proxy.table import Target

_READ_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError,
                UnicodeError)
MAX_DOCUMENT = 8 * 1024 * 1024
"""The most of a stream answer kept while it looks like one JSON document rather than SSE: a whole
answer may be that long (an error body is read up to 64 KiB)."""
_WHITESPACE = b" \t\r\n"


def _unreadable(what: str, exc: BaseException, status: int | None = 200) -> UpstreamError:
    return UpstreamError(FailureKind.SERVER_ERROR,
                         f"The upstream's {what} could not be read ({type(exc).__name__})", status=status)


class GuardedStream:
    """A stream translator whose unexpected failures are `UpstreamError`s, and which reads an
    answer that is one JSON document instead of SSE with `read_whole` (the unary answer parser)."""

    __slots__ = ("_answer", "_document", "_finishes", "_head", "_inner", "_judge", "_read_whole")

    def __init__(self, inner: StreamTranslator, read_whole: Callable[[bytes], object]) -> None:
        self._inner = inner
        self._read_whole = read_whole
        self._judge: Callable[[bytes], WholeStream | None] | None = getattr(inner, "judge_whole", None)
        self._head: bytearray | None = bytearray()  # None once the body is known to be SSE
        self._document = False  # whether the body is a JSON document
        self._answer: list[StreamChunk] | None = None  # the document's answer, as stream chunks
        self._finishes: dict[int, str] | None = None  # the document's choices' finish reasons

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

    @property
    def service_tier(self) -> str | None:
        return self._inner.service_tier

    @property
    def finish_reasons(self) -> Mapping[int, str]:
        return self._inner.finish_reasons if self._finishes is None else self._finishes

    def feed(self, data: bytes) -> list[StreamChunk]:
        try:
            if self._head is not None:
                data = self._sniff(data)
                if not data:
                    return self._answered()
            return self._inner.feed(data)
        except _READ_ERRORS as exc:
            raise _unreadable("stream", exc) from None

    def judge_whole(self, body: bytes) -> WholeStream | None:
        """The inner translator's judgement of a stream that arrived whole, before anything was fed
        (a JSON document is never one: it takes `feed`)."""
        if self._judge is None or self._head is None or self._head:
            return None
        try:
            return self._judge(body)
        except _READ_ERRORS as exc:
            raise _unreadable("stream", exc) from None

    def close(self) -> list[StreamChunk]:
        try:
            if self._answer is not None:
                return self._answered()
            if self._document:
                assert self._head is not None
                body = bytes(self._head)
                try:
                    orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise UpstreamError(FailureKind.SERVER_ERROR, "The upstream answered a stream request with "
                                        f"JSON instead of SSE that is not one whole document: {body_excerpt(body)}", status=200) from None
                self._whole_document(body)
                return self._answered()
            if self._head:  # whitespace only: the translator says how the stream broke
                self._inner.feed(bytes(self._head))
            return self._inner.close()
        except _READ_ERRORS as exc:
            raise _unreadable("stream", exc) from None

    def _sniff(self, data: bytes) -> bytes:
        """The bytes for the SSE translator; b"" while the body is, or may be, a JSON document.

        An SSE body starts with a field (`data:`, `event:`) or a comment (`:`); one that starts
        with `{` or `[` is a JSON document, which is whole when it parses.
        """
        head = self._head
        assert head is not None
        if self._answer is not None:
            if data.strip(_WHITESPACE):
                raise UpstreamError(FailureKind.SERVER_ERROR, "The upstream answered a stream request with a JSON "
                                    f"document followed by more: {body_excerpt(data)}", status=200)
            return b""
        head += data
        if not self._document:
            start = len(head) - len(head.lstrip(_WHITESPACE))
            if start == len(head):
                return b""
            if head[start] not in (0x7B, 0x5B):  # neither "{" nor "["
                self._head = None
                return bytes(head)
            self._document = True
        if len(head) > MAX_DOCUMENT:
            raise UpstreamError(FailureKind.SERVER_ERROR, "The upstream answered a stream request with "
                                f"JSON instead of SSE, over {MAX_DOCUMENT} bytes of it: {body_excerpt(bytes(head))}",
                                status=200)
        if data.rstrip(_WHITESPACE)[-1:] in (b"}", b"]"):  # trailing whitespace never completes one
            try:
                orjson.loads(head)
            except orjson.JSONDecodeError:
                return b""  # not whole yet
            self._whole_document(bytes(head))
        return b""

    def _whole_document(self, body: bytes) -> None:
        """The answer the document is, or the error it carries, classified by the provider's answer parser."""
        result = self._read_whole(body)  # raises the classified UpstreamError for an error document
        if not isinstance(result, ChatResult):
            raise UpstreamError(FailureKind.SERVER_ERROR, "The upstream answered a stream request with one JSON "
                                f"document instead of a stream: {body_excerpt(body)}", status=200)
        self._answer = _as_stream(result)
        self._inner.usage = result.usage
        choices = [c for c in result.data.get("choices") or () if isinstance(c, dict)]
        self._finishes = {choice_index(c, position): r for position, c in enumerate(choices)
                          if isinstance(r := c.get("finish_reason"), str) and r}
        self._inner.finish_reason = next(iter(self._finishes.values()), None)

    def _answered(self) -> list[StreamChunk]:
        """The document's answer, once; nothing before it is whole or after it was given."""
        answer = self._answer
        if not answer:
            return []
        self._answer = []
        return answer


_CHUNK_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")


def _as_stream(result: ChatResult) -> list[StreamChunk]:
    """A whole chat completion as the stream that would have carried it: one chunk with each choice's
    whole message as its delta and its finish reason, then the usage chunk."""
    data = result.data
    head: dict[str, Any] = {name: data[name] for name in _CHUNK_FIELDS if name in data}
    head["object"] = "chat.completion.chunk"
    choices: list[dict[str, Any]] = []
    for index, choice in enumerate(data.get("choices") or ()):
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        delta = {k: v for k, v in message.items() if v is not None and k not in ("tool_calls", "annotations")}
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(calls) if isinstance(call, dict)]
        choices.append({"index": choice.get("index", index), "delta": delta,
                        "logprobs": choice.get("logprobs"), "finish_reason": choice.get("finish_reason")})
    return [StreamChunk({**head, "choices": choices}),
            StreamChunk({**head, "choices": [], "usage": usage if isinstance(usage := data.get("usage"), dict)
                         else result.usage.to_openai()})]


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
        inner = self._inner
        return GuardedStream(inner.chat_stream(request, target),
                             lambda body: inner.chat_response(body, request, target))

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

    def stored_response_request(self, target: Target, response_id: str, method: str,
                                input_items: str | None = None) -> UpstreamRequest | None:
        return self._inner.stored_response_request(target, response_id, method, input_items)
