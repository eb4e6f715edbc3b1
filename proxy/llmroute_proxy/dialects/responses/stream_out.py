"""Canonical chunk streams → the Responses API's semantic events.

The events come in the order OpenAI's own streams use and the SDK's stream accumulator checks:
`response.created`, `response.in_progress`, then per output item `output_item.added`, its
parts and deltas, their `.done` events and `output_item.done`, and at the end
`response.completed` (or `response.incomplete` when the answer was cut by the token limit or a
filter). Every event carries `sequence_number`, counting from 0.

A reasoning or text item is closed as soon as anything else starts; function calls stay open
until the end of the stream, because OpenAI-style upstreams may interleave fragments of
parallel calls. A failure after the stream started ends it with `response.failed`, carrying
the output so far: never a clean `response.completed` over a truncated answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.dialects.responses.answer_out import (
    NewId,
    function_call_item,
    incomplete_reason,
    output_text,
    reasoning_item,
    response_shell,
    response_usage,
)
from llmroute_proxy.dialects.responses.request_in import ResponsesTurn

JSON = dict[str, Any]


def sse(event: JSON) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


_DELTA_EVENT = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
                b'"sequence_number":')


class _Item:
    """One output item being streamed: its index, the item as `.done` shows it, and its text."""

    __slots__ = ("delta_head", "index", "item", "kind", "text")

    def __init__(self, index: int, item: JSON) -> None:
        self.index = index
        self.item = item
        self.kind: str = item["type"]
        self.text: list[str] = []
        self.delta_head: bytes | None = None  # set while an output_text part takes deltas


class ResponsesStreamEncoder:
    """Canonical `chat.completion.chunk`s → Responses events, for one response."""

    def __init__(self, turn: ResponsesTurn, response_id: str, created_at: int, new_id: NewId) -> None:
        self._turn = turn
        self._id = response_id
        self._created_at = created_at
        self._new_id = new_id
        self._sequence = 0
        self._shell: JSON | None = None
        self._items: list[_Item] = []
        self._open: _Item | None = None  # the reasoning or message item receiving deltas
        self._calls: dict[int, _Item] = {}  # canonical tool-call index → open function_call item
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self._ended = False
        self.response: JSON | None = None
        """The final Response object, once the stream has ended (completed, incomplete or failed)."""

    # ---- the Encoder side ------------------------------------------------------------------

    def encode(self, chunk: JSON) -> bytes:
        if self._ended:
            return b""
        fast = self._text_only(chunk)
        if fast is not None:
            return fast
        out: list[bytes] = []
        self._start(chunk.get("model"), out)
        if chunk.get("usage"):
            self._usage = Usage.from_openai(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._choice(choice, out)
        return b"".join(out)

    def _text_only(self, chunk: JSON) -> bytes | None:
        """The common chunk — one more piece of the text being written — in a few lookups."""
        item = self._open
        choices = chunk.get("choices")
        if item is None or item.delta_head is None or not choices or len(choices) != 1 or chunk.get("usage"):
            return None
        choice = choices[0]
        delta = choice.get("delta")
        if choice.get("finish_reason") or choice.get("index", 0) != 0 or not isinstance(delta, dict):
            return None
        text = delta.get("content")
        if not isinstance(text, str) or not text or delta.get("tool_calls") or delta.get("refusal") \
                or delta.get("reasoning_content"):
            return None
        return self._delta(item, item.delta_head, text)

    def _delta(self, item: _Item, head: bytes, text: str) -> bytes:
        """An output_text delta, written without building its event dict (the same bytes as `_emit`)."""
        item.text.append(text)
        sequence = self._sequence
        self._sequence = sequence + 1
        return _DELTA_EVENT + b"%d," % sequence + head + orjson.dumps(text) + b',"logprobs":[]}\n\n'

    def finish(self, usage: Usage | None = None) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        self._start(None, out)
        self._close_all(out)
        incomplete = incomplete_reason(self._finish_reason)
        status = "incomplete" if incomplete else "completed"
        response = self._response(status, usage or self._usage)
        response["incomplete_details"] = {"reason": incomplete} if incomplete else None
        self._emit(out, "response.incomplete" if incomplete else "response.completed", response=response)
        return self._end(out, response)

    def fail(self, message: str, code: str | None) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        self._start(None, out)
        self._cut_short()
        response = self._response("failed", self._usage)
        response["error"] = {"code": code or "server_error", "message": message}
        self._emit(out, "response.failed", response=response)
        return self._end(out, response)

    # ---- events ----------------------------------------------------------------------------

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        out.append(sse({"type": kind, "sequence_number": self._sequence, **fields}))  # now: items change later
        self._sequence += 1

    def _start(self, model: Any, out: list[bytes]) -> None:
        if self._shell is not None:
            return
        model = model if isinstance(model, str) and model else str(self._turn.canonical["model"])
        self._shell = response_shell(self._turn, self._id, self._created_at, model)
        self._emit(out, "response.created", response=self._shell)
        self._emit(out, "response.in_progress", response=self._shell)

    def _end(self, out: list[bytes], response: JSON) -> bytes:
        self._ended = True
        self.response = response
        return b"".join(out)

    def _response(self, status: str, usage: Usage | None) -> JSON:
        assert self._shell is not None
        return {**self._shell, "status": status, "output": [item.item for item in self._items],
                "usage": response_usage(usage)}

    def _cut_short(self) -> None:
        """What the open items hold so far, marked incomplete: the output of a failed response."""
        if self._open is not None:
            item = self._open
            text = "".join(item.text)
            if item.kind == "reasoning":
                item.item["summary"] = [{"type": "summary_text", "text": text}]
            else:
                part = item.item["content"][-1]
                part["refusal" if part["type"] == "refusal" else "text"] = text
                item.item["status"] = "incomplete"
        for call in self._calls.values():
            call.item["arguments"] = "".join(call.text)
            call.item["status"] = "incomplete"

    def _choice(self, choice: JSON, out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            self._reasoning(reasoning, out)
        text = delta.get("content")
        if isinstance(text, str) and text:
            self._text(text, out)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._refusal(refusal, out)
        for call in delta.get("tool_calls") or ():
            self._tool_call(call, out)
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]

    def _add(self, item: JSON, out: list[bytes]) -> _Item:
        added = _Item(len(self._items), item)
        self._items.append(added)
        self._emit(out, "response.output_item.added", output_index=added.index, item=item)
        return added

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        item = self._open
        if item is None or item.kind != "reasoning":
            self._close_open(out)
            self._close_calls(out)
            item = self._open = self._add({**reasoning_item(self._new_id("rs"), ""), "summary": []}, out)
            self._emit(out, "response.reasoning_summary_part.added", item_id=item.item["id"],
                       output_index=item.index, summary_index=0, part={"type": "summary_text", "text": ""})
        item.text.append(text)
        self._emit(out, "response.reasoning_summary_text.delta", item_id=item.item["id"], output_index=item.index,
                   summary_index=0, delta=text)

    def _message(self, out: list[bytes]) -> _Item:
        item = self._open
        if item is None or item.kind != "message":
            self._close_open(out)
            self._close_calls(out)
            item = self._open = self._add({"type": "message", "id": self._new_id("msg"), "status": "in_progress",
                                           "role": "assistant", "content": []}, out)
        return item

    def _text(self, text: str, out: list[bytes]) -> None:
        item = self._open
        if item is None or item.delta_head is None:
            item = self._message(out)
            if item.item["content"]:  # text after a refusal: a new part
                self._close_part(item, out)
            self._part(item, output_text(""), out)
            item.delta_head = (b'"item_id":' + orjson.dumps(item.item["id"]) + b',"output_index":%d'
                               b',"content_index":%d,"delta":' % (item.index, len(item.item["content"]) - 1))
        out.append(self._delta(item, item.delta_head, text))

    def _refusal(self, text: str, out: list[bytes]) -> None:
        item = self._message(out)
        if not item.item["content"] or item.item["content"][-1]["type"] != "refusal":
            if item.item["content"]:
                self._close_part(item, out)
            self._part(item, {"type": "refusal", "refusal": ""}, out)
        item.text.append(text)
        self._emit(out, "response.refusal.delta", item_id=item.item["id"], output_index=item.index,
                   content_index=len(item.item["content"]) - 1, delta=text)

    def _part(self, item: _Item, part: JSON, out: list[bytes]) -> None:
        item.item["content"].append(part)
        item.text = []
        self._emit(out, "response.content_part.added", item_id=item.item["id"], output_index=item.index,
                   content_index=len(item.item["content"]) - 1, part=part)

    def _close_part(self, item: _Item, out: list[bytes]) -> None:
        item.delta_head = None
        index = len(item.item["content"]) - 1
        part = item.item["content"][index]
        text = "".join(item.text)
        common = {"item_id": item.item["id"], "output_index": item.index, "content_index": index}
        if part["type"] == "refusal":
            part["refusal"] = text
            self._emit(out, "response.refusal.done", **common, refusal=text)
        else:
            part["text"] = text
            self._emit(out, "response.output_text.done", **common, text=text, logprobs=[])
        self._emit(out, "response.content_part.done", **common, part=part)

    def _tool_call(self, call: JSON, out: list[bytes]) -> None:
        index = call.get("index", 0)
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            self._close_open(out)
            upstream_id = call.get("id")
            call_id = upstream_id if isinstance(upstream_id, str) and upstream_id else self._new_id("call")
            item = self._add(function_call_item(self._new_id("fc"), call_id, function.get("name") or "", "",
                                                status="in_progress"), out)
            self._calls[index] = item
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.text.append(arguments)
            self._emit(out, "response.function_call_arguments.delta", item_id=item.item["id"],
                       output_index=item.index, delta=arguments)

    def _close_open(self, out: list[bytes]) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        status = "incomplete" if incomplete_reason(self._finish_reason) else "completed"
        if item.kind == "reasoning":
            text = "".join(item.text)
            item.item["summary"] = [{"type": "summary_text", "text": text}]
            common = {"item_id": item.item["id"], "output_index": item.index, "summary_index": 0}
            self._emit(out, "response.reasoning_summary_text.done", **common, text=text)
            self._emit(out, "response.reasoning_summary_part.done", **common, part=item.item["summary"][0])
        else:
            self._close_part(item, out)
            item.item["status"] = status
        self._emit(out, "response.output_item.done", output_index=item.index, item=item.item)

    def _close_calls(self, out: list[bytes]) -> None:
        for item in self._calls.values():
            arguments = "".join(item.text)
            if not arguments:  # a call without parameters: "{}", as OpenAI sends it
                arguments = "{}"
                self._emit(out, "response.function_call_arguments.delta", item_id=item.item["id"],
                           output_index=item.index, delta=arguments)
            item.item["arguments"] = arguments
            item.item["status"] = "completed"
            self._emit(out, "response.function_call_arguments.done", item_id=item.item["id"],
                       output_index=item.index, name=item.item["name"], arguments=arguments)
            self._emit(out, "response.output_item.done", output_index=item.index, item=item.item)
        self._calls = {}

    def _close_all(self, out: list[bytes]) -> None:
        self._close_open(out)
        self._close_calls(out)
