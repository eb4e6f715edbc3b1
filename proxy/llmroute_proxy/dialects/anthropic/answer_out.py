"""Canonical answers → Messages answers for a client that spoke Anthropic: a `chat.completion`
becomes a Messages response, and a canonical chunk stream becomes Anthropic's named SSE events, in
the order the official SDK's stream accumulator expects (one block open at a time, usage totals in
`message_delta`). An Anthropic upstream's own answer is relayed instead (`AnthropicStreamEncoder.relay`).
"""

from __future__ import annotations

from typing import Any

import orjson

from llmroute_proxy.dialects.anthropic.wire import anthropic_usage, arguments_object, message_id, stop_reason
from llmroute_proxy.dialects.base import Usage

JSON = dict[str, Any]


# ---- response: canonical → Messages ------------------------------------------------------


def response_from_canonical(result: JSON, requested_model: str) -> JSON:
    """A Messages response for a canonical `chat.completion`.

    `model` is the model that answered when the canonical answer names one, as Anthropic does.
    """
    choices = result.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content = _content_blocks(message)
    called = any(block["type"] == "tool_use" for block in content)
    return {"id": message_id(result.get("id")), "type": "message", "role": "assistant",
            "model": result.get("model") or requested_model, "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason"), called), "stop_sequence": None,
            "usage": anthropic_usage(Usage.from_openai(result.get("usage")))}


def _content_blocks(message: JSON) -> list[JSON]:
    blocks: list[JSON] = []
    text = _message_text(message.get("content")) or message.get("refusal")
    if isinstance(text, str) and text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "",
                       "input": tool_input(function.get("arguments"))})
    return blocks


def _message_text(content: Any) -> str | None:
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else None


def tool_input(arguments: Any) -> JSON:
    """Tool `input` from OpenAI `arguments`; text that is not a JSON object is kept, not lost."""
    if not arguments:
        return {}
    value = arguments_object(arguments) if isinstance(arguments, (str, bytes)) else None
    return value if value is not None else {"_unparsed_arguments": str(arguments)}


# ---- stream: canonical chunks → Messages events -------------------------------------------


def sse_event(name: str, payload: JSON) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class AnthropicStreamEncoder:
    """Canonical `chat.completion.chunk`s → Anthropic SSE events, one content block open at a time.

    `message_start` goes out with the first chunk (or `finish`); the stop reason and usage
    wait for `finish`, because OpenAI streams send usage after the finish chunk.
    OpenAI tool-call fragments for a call whose block is already closed (interleaved
    parallel calls, rare) still go to that call's block index, which the SDK accepts.
    """

    def __init__(self, model: str, message_id: str | None = None, input_tokens: int = 0) -> None:
        self._model = model
        self._id = message_id
        self._input_tokens = input_tokens
        self._started = False
        self._finished = False
        self._blocks = 0
        self._open: int | None = None
        self._open_is_text = False
        self._tool_blocks: dict[int, int] = {}
        self._stop_reason: Any = None  # the last finish reason, OpenAI's word
        self._usage: Usage | None = None

    def encode(self, chunk: JSON) -> bytes:
        if self._finished:
            return b""
        out: list[bytes] = []
        if not self._started:
            self._start(chunk.get("id"), chunk.get("model"), out)
        if chunk.get("usage"):
            self._usage = Usage.from_openai(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._choice(choice, out)
        return b"".join(out)

    def finish(self, usage: Usage | None = None) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        out: list[bytes] = []
        if not self._started:
            self._start(None, None, out)
        self._close_block(out)
        totals = anthropic_usage(usage or self._usage or Usage())
        out.append(sse_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self._stop_reason, bool(self._tool_blocks)), "stop_sequence": None},
            "usage": totals}))
        out.append(sse_event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def relay(self, native: bytes) -> bytes:
        """Pass an Anthropic upstream's own event bytes through; that stream then ends itself,
        so `finish` adds nothing."""
        self._started = self._finished = True
        return native

    def error(self, message: str, error_type: str) -> bytes:
        self._finished = True
        return sse_event("error", {"type": "error", "error": {"type": error_type, "message": message}})

    def _start(self, chunk_id: Any, chunk_model: Any, out: list[bytes]) -> None:
        self._started = True
        self._id = self._id or message_id(chunk_id)
        model = chunk_model if isinstance(chunk_model, str) and chunk_model else self._model
        out.append(sse_event("message_start", {"type": "message_start", "message": {
            "id": self._id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0}}}))

    def _choice(self, choice: JSON, out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        text = delta.get("content") or delta.get("refusal")
        if isinstance(text, str) and text:
            self._text(text, out)
        for call in delta.get("tool_calls") or ():
            self._tool_call(call, out)
        if choice.get("finish_reason"):
            self._stop_reason = choice["finish_reason"]

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open is None or not self._open_is_text:
            self._open_block({"type": "text", "text": ""}, out)
            self._open_is_text = True
        out.append(sse_event("content_block_delta", {"type": "content_block_delta", "index": self._open,
                                                     "delta": {"type": "text_delta", "text": text}}))

    def _tool_call(self, call: JSON, out: list[bytes]) -> None:
        tool_index = call.get("index", 0)
        function = call.get("function") or {}
        block = self._tool_blocks.get(tool_index)
        if block is None:
            block = self._open_block({"type": "tool_use", "id": call.get("id") or f"toolu_{tool_index}",
                                      "name": function.get("name") or "", "input": {}}, out)
            self._tool_blocks[tool_index] = block
        arguments = function.get("arguments")
        if arguments:
            out.append(sse_event("content_block_delta", {
                "type": "content_block_delta", "index": block,
                "delta": {"type": "input_json_delta", "partial_json": arguments}}))

    def _open_block(self, content_block: JSON, out: list[bytes]) -> int:
        self._close_block(out)
        index = self._open = self._blocks
        self._blocks += 1
        self._open_is_text = False
        out.append(sse_event("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": content_block}))
        return index

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": self._open}))
            self._open = None
