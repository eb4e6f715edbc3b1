"""Answers written back to an OpenAI client: the upstream's own bytes when it spoke OpenAI too.

A translated answer's `created` is 0 (Anthropic and Gemini send no time, and providers read no
clock): the encoder stamps it with when the sidecar received the request, as OpenAI does."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from llmroute_proxy.dialects.base import (
    ChatRequest,
    ChatResult,
    StreamChunk,
    Usage,
    WholeStream,
    is_usage_chunk,
)
from llmroute_proxy.dialects.openai.errors import openai_error_body
from llmroute_proxy.errors import LLMRouteError

DONE = b"data: [DONE]\n\n"


class OpenAIEncoder:
    __slots__ = ("_created", "_include_usage")

    def __init__(self, chat: ChatRequest | None, created: int = 0) -> None:
        self._include_usage = chat is not None and chat.client_wants_usage
        self._created = created

    def error_body(self, error: LLMRouteError, status: int) -> bytes:
        return orjson.dumps(openai_error_body(error))

    def unary(self, result: ChatResult) -> bytes:
        if result.raw is not None:
            return result.raw
        return orjson.dumps(self._stamped(result.data))

    def chunks(self, chunks: Iterable[StreamChunk]) -> bytes:
        hide_usage = not self._include_usage
        out: list[bytes] = []
        for chunk in chunks:
            if hide_usage and is_usage_chunk(chunk.data):
                continue
            raw = chunk.raw
            out.append(raw if raw is not None else orjson.dumps(self._stamped(chunk.data)))
        return b"data: " + b"\n\ndata: ".join(out) + b"\n\n" if out else b""

    def _stamped(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("created") == 0 and self._created:
            data["created"] = self._created
        return data

    def write_whole(self, stream: WholeStream) -> bytes:
        """The upstream's own bytes, without the usage event when the client did not ask for usage."""
        body = stream.body
        if self._include_usage or stream.usage_start == len(body) - len(DONE):
            return body
        return body[:stream.usage_start] + DONE

    def end(self, usage: Usage | None) -> bytes:
        return DONE

    def stream_error(self, error: LLMRouteError) -> bytes:
        # OpenAI's own in-band error shape; the SDK raises on it. Never followed by [DONE].
        return b"data: " + orjson.dumps(openai_error_body(error)) + b"\n\n"
