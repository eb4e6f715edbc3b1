"""Bedrock Converse answers (whole, or a ConverseStream of AWS event-stream frames) → OpenAI shapes.

A whole answer is `output.message.content` (text, `toolUse`, `reasoningContent` blocks), a `stopReason`
and `usage`. A stream is event-stream frames whose `:event-type` names the event and whose payload is
its JSON (not base64 inside a `chunk`, as InvokeModel's): `messageStart`, `contentBlockStart` (only for a
tool call: its id and name), `contentBlockDelta` (text, a fragment of a tool call's input as JSON text,
reasoning text), `contentBlockStop` (a tool call with no input streamed gets `{}`, as a whole answer's
`input` is), `messageStop` (the stop reason) and then `metadata` (usage). An
exception frame is the failure its type says (`errors.event_payload`).

Choices documented here because neither API forces them:

- Converse answers carry no id: a whole answer's is a hash of its body; a stream's is the first frame's.
- `malformed_model_output` and `malformed_tool_use` are the provider failing (502, billed: fails over)
  while nothing was shown; once a stream has shown output they end it as `stop`.
  `model_context_window_exceeded` (the answer filled the context window) is `length`.
- Usage follows OpenAI's semantics: cache reads and writes are part of the input (Converse counts them
  apart from `inputTokens`, as Anthropic does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from llmroute_proxy.dialects.base import (
    BilledFailure,
    ChatResult,
    OneChoiceFinish,
    StreamChunk,
    Usage,
    carries_output,
)
from llmroute_proxy.dialects.bedrock.errors import event_payload
from llmroute_proxy.dialects.common import body_excerpt, loads_object
from llmroute_proxy.dialects.eventstream import EventStreamDecoder
from llmroute_proxy.dialects.service_tiers import bedrock_reported_tier
from llmroute_proxy.errors import FailureKind, UpstreamError

JSON = dict[str, Any]
CREATED_UNKNOWN = 0  # Converse sends no timestamp and providers read no clock; the encoder stamps it

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                  "guardrail_intervened": "content_filter", "content_filtered": "content_filter"}
"""Converse's `stopReason` → OpenAI's `finish_reason`; anything unknown is `stop` (enums grow)."""
MALFORMED = frozenset({"malformed_model_output", "malformed_tool_use"})


def usage_from(usage: Any, service_tier: Any = None) -> Usage:
    """A Converse answer's (or `metadata` event's) `usage`, at the `serviceTier` it reports."""
    tier = bedrock_reported_tier(service_tier)
    if not isinstance(usage, dict):
        return Usage(service_tier=tier)
    read = int(usage.get("cacheReadInputTokens") or 0)
    written = int(usage.get("cacheWriteInputTokens") or 0)
    return Usage(input_tokens=int(usage.get("inputTokens") or 0) + read + written,
                 output_tokens=int(usage.get("outputTokens") or 0),
                 cached_input_tokens=read, cache_write_tokens=written, service_tier=tier)


def malformed(reason: str, billed: Usage | None) -> BilledFailure:
    return BilledFailure(kind=FailureKind.SERVER_ERROR, status=502, billed=billed,
                         message=f"Bedrock finished with stopReason {reason}")


def _tool_call(block: Mapping[str, Any]) -> JSON:
    return {"id": block.get("toolUseId") or "", "type": "function",
            "function": {"name": block.get("name") or "", "arguments": orjson.dumps(block.get("input") or {}).decode()}}


def translate_response(body: bytes, model: str) -> ChatResult:
    answer = loads_object(body)
    message = ((answer or {}).get("output") or {}).get("message")
    if answer is None or not isinstance(message, dict):
        raise UpstreamError(FailureKind.SERVER_ERROR, f"Bedrock answered without output.message: {body_excerpt(body)}",
                            status=502)
    usage = usage_from(answer.get("usage"), answer.get("serviceTier"))
    reason = str(answer.get("stopReason") or "end_turn")
    if reason in MALFORMED:
        raise malformed(reason, usage)
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[JSON] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            calls.append(_tool_call(block["toolUse"]))
        elif isinstance(block.get("reasoningContent"), dict):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
    out: JSON = {"role": "assistant", "content": "".join(texts) if texts or not calls else None, "refusal": None}
    if reasoning:
        out["reasoning_content"] = "".join(reasoning)
    if calls:
        out["tool_calls"] = calls
    data = {"id": "chatcmpl-" + hashlib.blake2b(body, digest_size=12).hexdigest(), "object": "chat.completion",
            "created": CREATED_UNKNOWN, "model": model,
            "choices": [{"index": 0, "message": out, "logprobs": None,
                         "finish_reason": FINISH_REASONS.get(reason, "stop")}],
            "usage": usage.to_openai()}
    return ChatResult(data=data, usage=usage)


class ConverseStream(OneChoiceFinish):
    """ConverseStream's event-stream frames → OpenAI chunks (one choice)."""

    __slots__ = ("_argued", "_decoder", "_failed", "_id", "_model", "_shown", "_started", "_tools", "finish_reason",
                 "usage")

    def __init__(self, model: str) -> None:
        self._decoder = EventStreamDecoder()
        self._model = model
        self._id = ""
        self._started = False
        self._shown = False
        self._tools: dict[int, int] = {}  # content block index → its tool call's index among the answer's
        self._argued: set[int] = set()  # the tool calls whose input came (a tool without parameters gets none)
        self._failed: UpstreamError | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def feed(self, data: bytes) -> list[StreamChunk]:
        """The chunks of the frames that came; an exception frame's failure raised, but after the chunks
        of the frames before it in the same bytes (at the next `feed` or `close`): what the model said
        before it failed reaches the client however the bytes were split."""
        self._raise_failure()
        out: list[StreamChunk] = []
        for frame in self._decoder.feed(data):
            try:
                event = event_payload(frame)
            except UpstreamError as failure:
                if not any(carries_output(chunk.data) for chunk in out):
                    raise
                self._failed = failure
                return out
            if not self._id:
                self._id = "chatcmpl-" + hashlib.blake2b(frame.payload, digest_size=12).hexdigest()
            if event is not None:
                self._event(frame.headers.get(":event-type", ""), event, out)
        return out

    def close(self) -> list[StreamChunk]:
        self._raise_failure()
        self._decoder.close()
        if self.finish_reason is None:
            raise UpstreamError(FailureKind.STREAM_BROKEN, "Bedrock's Converse stream ended before messageStop.")
        if self.usage is None:
            return []
        return [StreamChunk({"id": self._id, "object": "chat.completion.chunk", "created": CREATED_UNKNOWN,
                             "model": self._model, "choices": [], "usage": self.usage.to_openai()})]

    def _raise_failure(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _event(self, name: str, event: JSON, out: list[StreamChunk]) -> None:
        if name == "messageStart" or (not self._started and name in ("contentBlockStart", "contentBlockDelta")):
            if not self._started:
                self._started = True
                out.append(self._chunk({"role": "assistant", "content": ""}))
            if name == "messageStart":
                return
        index = event.get("contentBlockIndex")
        if name == "contentBlockStart":
            tool = (event.get("start") or {}).get("toolUse")
            if isinstance(tool, dict) and isinstance(index, int):
                position = self._tools[index] = len(self._tools)
                self._shown = True
                out.append(self._chunk({"tool_calls": [{"index": position, "id": tool.get("toolUseId") or "",
                                                        "type": "function",
                                                        "function": {"name": tool.get("name") or "",
                                                                     "arguments": ""}}]}))
        elif name == "contentBlockDelta":
            self._delta(index, event.get("delta") or {}, out)
        elif name == "contentBlockStop" and index in self._tools and self._tools[index] not in self._argued:
            out.append(self._chunk({"tool_calls": [{"index": self._tools[index], "function": {"arguments": "{}"}}]}))
        elif name == "messageStop":
            reason = str(event.get("stopReason") or "end_turn")
            if reason in MALFORMED and not self._shown:
                raise malformed(reason, self.usage)
            self.finish_reason = FINISH_REASONS.get(reason, "stop")
            out.append(self._chunk({}, self.finish_reason))
        elif name == "metadata":
            self.usage = usage_from(event.get("usage"), event.get("serviceTier"))

    def _delta(self, index: Any, delta: Mapping[str, Any], out: list[StreamChunk]) -> None:
        if isinstance(delta.get("text"), str) and delta["text"]:
            self._shown = True
            out.append(self._chunk({"content": delta["text"]}))
        elif isinstance(delta.get("toolUse"), dict):
            position = self._tools.get(index) if isinstance(index, int) else None
            if position is None:
                raise UpstreamError(FailureKind.STREAM_BROKEN,
                                    f"Bedrock streamed tool input for block {index!r}, which started no tool call.")
            fragment = delta["toolUse"].get("input")
            if isinstance(fragment, str) and fragment:
                self._argued.add(position)
                out.append(self._chunk({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]}))
        elif isinstance(delta.get("reasoningContent"), dict):
            text = delta["reasoningContent"].get("text")
            if isinstance(text, str) and text:
                out.append(self._chunk({"reasoning_content": text}))

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> StreamChunk:
        return StreamChunk({"id": self._id, "object": "chat.completion.chunk", "created": CREATED_UNKNOWN,
                            "model": self._model,
                            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish_reason}]})
