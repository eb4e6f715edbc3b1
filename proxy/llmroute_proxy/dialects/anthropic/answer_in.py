"""Anthropic Messages answers and stream events → canonical OpenAI ones (providers.md §5.5–5.7).

Usage, cost and finish reasons of every Anthropic answer come from the canonical answer built
here, whether or not the client also gets the native one.

Thinking is shown as `reasoning_content`, and its blocks, signatures included, ride along as
`thinking_blocks` (`dialects/thinking.py`): the client sends them back to go on with a tool loop.

`created` in canonical answers is 0: providers get no clock, and Anthropic sends no time (the
OpenAI encoder stamps it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmroute_proxy.dialects.anthropic.errors import _STATUS_BY_ERROR_TYPE, upstream_error
from llmroute_proxy.dialects.anthropic.wire import finish_reason, tool_call, usage_from_anthropic
from llmroute_proxy.dialects.base import OneChoiceFinish, StreamChunk, Usage, relayed_chunks
from llmroute_proxy.dialects.common import body_excerpt, loads_object
from llmroute_proxy.dialects.sse import SSEParser, event_bytes
from llmroute_proxy.dialects.thinking import FIELD as THINKING_BLOCKS
from llmroute_proxy.dialects.thinking import fragment, well_formed
from llmroute_proxy.errors import FailureKind, UpstreamError

JSON = dict[str, Any]


def read_message(body: bytes, where: str = "Anthropic") -> JSON:
    """A 2xx Messages answer's message; the `UpstreamError` it carries instead, classified, or a
    `server_error` for one that cannot be read (`where`: who sent it, for the message)."""
    message = loads_object(body)
    if message is not None and message.get("type") != "error" and "error" not in message:
        return message
    error = message.get("error") if message else None
    if isinstance(error, dict):
        error_type = str(error.get("type") or "api_error")
        raise upstream_error(_STATUS_BY_ERROR_TYPE.get(error_type, 500), error_type,
                             str(error.get("message") or error_type), None)
    raise UpstreamError(FailureKind.SERVER_ERROR, f"{where} sent an unreadable answer: {body_excerpt(body)}")


def completion_from_message(message: JSON, model: str) -> tuple[JSON, Usage]:
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[JSON] = []
    signed: list[JSON] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block))
        elif kind in ("thinking", "redacted_thinking"):
            signed.append(block)
            if kind == "thinking":
                thinking.append(block.get("thinking") or "")
    reply: JSON = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None,
                   "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if signed:
        reply[THINKING_BLOCKS] = well_formed(signed)
    usage = usage_from_anthropic(message.get("usage"))
    data = {"id": message.get("id") or "", "object": "chat.completion", "created": 0,
            "model": message.get("model") or model,
            "choices": [{"index": 0, "message": reply, "logprobs": None,
                         "finish_reason": finish_reason(message.get("stop_reason"))}],
            "usage": usage.to_openai()}
    return data, usage


def _tool_call(block: JSON) -> JSON:
    return tool_call(block.get("id") or "", block.get("name") or "", block.get("input") or {})


# ---- stream ------------------------------------------------------------------------------


class AnthropicStreamTranslator(OneChoiceFinish):
    """Anthropic's named SSE events → OpenAI chunks (providers.md §5.7).

    Anthropic numbers every content block; OpenAI numbers only tool calls, hence a separate
    tool counter, and another for thinking blocks (their `thinking_blocks` fragments). Usage in `message_delta` is cumulative, so it overwrites.

    With `native` set, every chunk has `native` bytes, so a relay never needs to re-encode:
    an Anthropic event's bytes ride on the first chunk it produced and later ones carry
    b""; an event producing none (ping, block stop, message_delta) gets a carrier chunk
    with `choices: []` and no usage, which shows no output and exists only to carry them.
    """

    def __init__(self, model: str, native: bool = False) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._parser = SSEParser()
        self._native = native
        self._id = ""
        self._model = model
        self._counts: JSON = {}
        self._stop_reason: str | None = None
        self._tool_for_block: dict[int, int] = {}
        self._thinking_for_block: dict[int, int] = {}
        self._tools_with_arguments: set[int] = set()
        self._finished = False

    def feed(self, data: bytes) -> list[StreamChunk]:
        return self._chunks(self._parser.feed(data))

    def close(self) -> list[StreamChunk]:
        chunks = self._chunks(self._parser.close())
        if not self._finished:
            raise UpstreamError(FailureKind.STREAM_BROKEN, "The Anthropic stream ended before message_stop.")
        return chunks

    def _chunks(self, events: list[tuple[str | None, bytes]]) -> list[StreamChunk]:
        chunks: list[StreamChunk] = []
        for name, data in events:
            if self._finished:
                break
            produced = self._translate(name, data)
            if not self._native:
                chunks.extend(StreamChunk(chunk) for chunk in produced)
                continue
            chunks.extend(relayed_chunks(produced, self._chunk(None), event_bytes(name, data)))
        return chunks

    def _translate(self, name: str | None, data: bytes) -> list[JSON]:
        event = loads_object(data)
        if event is None:
            raise UpstreamError(FailureKind.STREAM_BROKEN,
                                f"Anthropic sent an unreadable stream event: {body_excerpt(data)}")
        handler = _EVENT_HANDLERS.get(event.get("type") or name or "")
        return handler(self, event) if handler is not None else []

    def _chunk(self, delta: JSON | None, finish: str | None = None) -> JSON:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {"id": self._id, "object": "chat.completion.chunk", "created": 0, "model": self._model,
                "choices": choices}

    def _absorb_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._counts.update((k, v) for k, v in usage.items() if v is not None)
            self.usage = usage_from_anthropic(self._counts)

    def _message_start(self, event: JSON) -> list[JSON]:
        message = event.get("message") or {}
        self._id = message.get("id") or self._id
        self._model = message.get("model") or self._model
        self._absorb_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, event: JSON) -> list[JSON]:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            tool_index = len(self._tool_for_block)
            self._tool_for_block[event.get("index", -1)] = tool_index
            call = {"index": tool_index, "id": block.get("id") or "", "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": ""}}
            return [self._chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind not in ("thinking", "redacted_thinking"):
            return []
        thinking_index = self._thinking_for_block[event.get("index", -1)] = len(self._thinking_for_block)
        if kind == "redacted_thinking":  # whole in its start
            return [self._chunk({THINKING_BLOCKS: [fragment(thinking_index, kind, data=block.get("data") or "")]})]
        if block.get("thinking"):
            return [self._thinking(thinking_index, block["thinking"])]
        return []

    def _thinking(self, thinking_index: int, text: str) -> JSON:
        return self._chunk({"reasoning_content": text,
                            THINKING_BLOCKS: [fragment(thinking_index, "thinking", thinking=text)]})

    def _block_delta(self, event: JSON) -> list[JSON]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            tool_index = self._tool_for_block.get(event.get("index", -1))
            if tool_index is not None:
                self._tools_with_arguments.add(tool_index)
                call = {"index": tool_index, "function": {"arguments": delta["partial_json"]}}
                return [self._chunk({"tool_calls": [call]})]
        thinking_index = self._thinking_for_block.get(event.get("index", -1))
        if thinking_index is None:
            return []
        if kind == "thinking_delta" and delta.get("thinking"):
            return [self._thinking(thinking_index, delta["thinking"])]
        if kind == "signature_delta" and delta.get("signature"):
            return [self._chunk({THINKING_BLOCKS: [fragment(thinking_index, "thinking",
                                                            signature=delta["signature"])]})]
        return []

    def _block_stop(self, event: JSON) -> list[JSON]:
        # Claude streams a call without parameters as `input: {}` plus one empty input_json_delta;
        # OpenAI clients json-parse `arguments`, so an empty string must become "{}".
        tool_index = self._tool_for_block.get(event.get("index", -1))
        if tool_index is None or tool_index in self._tools_with_arguments:
            return []
        self._tools_with_arguments.add(tool_index)
        return [self._chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": "{}"}}]})]

    def _message_delta(self, event: JSON) -> list[JSON]:
        stop_reason = (event.get("delta") or {}).get("stop_reason")
        if stop_reason is not None:
            self._stop_reason = stop_reason
        self._absorb_usage(event.get("usage"))
        return []

    def _message_stop(self, event: JSON) -> list[JSON]:
        self._finished = True
        self.finish_reason = finish_reason(self._stop_reason)
        usage = self.usage or Usage()
        usage_chunk = {**self._chunk(None), "usage": usage.to_openai()}
        return [self._chunk({}, self.finish_reason), usage_chunk]

    def _error(self, event: JSON) -> list[JSON]:
        error = event.get("error") or {}
        error_type = str(error.get("type") or "api_error")
        message = str(error.get("message") or error_type)
        raise upstream_error(_STATUS_BY_ERROR_TYPE.get(error_type, 500), error_type, message, None)


def _ignored(translator: AnthropicStreamTranslator, event: JSON) -> list[JSON]:
    return []


_EVENT_HANDLERS: dict[str, Callable[[AnthropicStreamTranslator, JSON], list[JSON]]] = {
    "message_start": AnthropicStreamTranslator._message_start,
    "content_block_start": AnthropicStreamTranslator._block_start,
    "content_block_delta": AnthropicStreamTranslator._block_delta,
    "content_block_stop": AnthropicStreamTranslator._block_stop,
    "message_delta": AnthropicStreamTranslator._message_delta,
    "message_stop": AnthropicStreamTranslator._message_stop,
    "ping": _ignored,
    "error": AnthropicStreamTranslator._error,
}
