"""How answers are written back in the client's own dialect (OpenAI or Anthropic)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from llmroute_proxy.errors import LLMRouteError, anthropic_error_body, openai_error_body
from llmroute_proxy.frontends.anthropic import AnthropicStreamEncoder, response_from_canonical
from llmroute_proxy.providers.base import ChatRequest, ChatResult, StreamChunk, Usage, is_usage_chunk

DONE = b"data: [DONE]\n\n"


class Encoder(Protocol):
    """One response's encoding: a fresh encoder per request (streams keep state)."""

    def error_body(self, error: LLMRouteError, status: int) -> bytes: ...

    def unary(self, result: ChatResult) -> bytes: ...

    def chunks(self, chunks: Iterable[StreamChunk]) -> bytes: ...

    def end(self, usage: Usage | None) -> bytes: ...

    def stream_error(self, error: LLMRouteError) -> bytes: ...


class OpenAIEncoder:
    __slots__ = ("_include_usage",)

    def __init__(self, chat: ChatRequest | None) -> None:
        self._include_usage = chat is not None and chat.client_wants_usage

    def error_body(self, error: LLMRouteError, status: int) -> bytes:
        return orjson.dumps(openai_error_body(error))

    def unary(self, result: ChatResult) -> bytes:
        return result.raw if result.raw is not None else orjson.dumps(result.data)

    def chunks(self, chunks: Iterable[StreamChunk]) -> bytes:
        hide_usage = not self._include_usage
        out: list[bytes] = []
        for chunk in chunks:
            if hide_usage and is_usage_chunk(chunk.data):
                continue
            raw = chunk.raw
            out.append(b"data: " + (raw if raw is not None else orjson.dumps(chunk.data)) + b"\n\n")
        return b"".join(out)

    def end(self, usage: Usage | None) -> bytes:
        return DONE

    def stream_error(self, error: LLMRouteError) -> bytes:
        # OpenAI's own in-band error shape; the SDK raises on it. Never followed by [DONE].
        return b"data: " + orjson.dumps(openai_error_body(error)) + b"\n\n"


class AnthropicEncoder:
    """Anthropic Messages out; relays the upstream's own events when it was Anthropic too."""

    __slots__ = ("_model", "_stream")

    def __init__(self, requested_model: str) -> None:
        self._model = requested_model
        self._stream = AnthropicStreamEncoder(requested_model)

    def error_body(self, error: LLMRouteError, status: int) -> bytes:
        return orjson.dumps(anthropic_error_body(error, status))

    def unary(self, result: ChatResult) -> bytes:
        native: dict[str, Any] | None = result.native
        if native is not None:
            return orjson.dumps(native)
        return orjson.dumps(response_from_canonical(result.data, self._model))

    def chunks(self, chunks: Iterable[StreamChunk]) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            if chunk.native is not None:
                out.append(self._stream.relay(chunk.native))
            else:
                out.append(self._stream.encode(chunk.data))
        return b"".join(out)

    def end(self, usage: Usage | None) -> bytes:
        return self._stream.finish(usage)

    def stream_error(self, error: LLMRouteError) -> bytes:
        body = anthropic_error_body(error, error.status)
        return self._stream.error(body["error"]["message"], body["error"]["type"])
