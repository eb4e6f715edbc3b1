"""Answers written back to an Anthropic client; an Anthropic upstream's own events are relayed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from llmroute_proxy.dialects.anthropic.answer_out import AnthropicStreamEncoder, response_from_canonical
from llmroute_proxy.dialects.anthropic.errors import anthropic_error_body
from llmroute_proxy.dialects.base import ChatResult, StreamChunk, Usage
from llmroute_proxy.errors import LLMRouteError


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
