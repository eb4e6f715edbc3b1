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

from collections.abc import Iterable
from typing import Any

import orjson

from llmroute_proxy.dialects.base import StreamChunk, Usage
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


_EVENTS: dict[str, bytes] = {}
"""kind → `sse({"type": kind, "sequence_number": %d, …})` up to the sequence number's comma, with `%b`
for the rest of the object: the JSON of the event's other fields without its opening brace."""


def _event_template(kind: str) -> bytes:
    template = _EVENTS.get(kind)
    if template is None:
        name = kind.encode()  # the kinds are ASCII names: nothing to escape, no `%`
        template = _EVENTS[kind] = (b"event: " + name + b'\ndata: {"type":"' + name
                                    + b'","sequence_number":%d,%b\n\n')
    return template


def _whole_response_event(kind: str, sequence: int, response_json: bytes) -> bytes:
    """`sse({"type": kind, "sequence_number": sequence, "response": response})`, from the
    response's JSON encoded once (the same bytes: orjson writes keys in insertion order)."""
    return _event_template(kind) % (sequence, b'"response":' + response_json + b"}")


class _Item:
    """One output item being streamed: its index, the item as `.done` shows it, and its text."""

    __slots__ = ("delta_event", "index", "item", "kind", "text")

    def __init__(self, index: int, item: JSON) -> None:
        self.index = index
        self.item = item
        self.kind: str = item["type"]
        self.text: list[str] = []
        self.delta_event: bytes | None = None
        """While an output_text part takes deltas: its delta event with `%d` for the sequence number
        and `%b` for the JSON of the text (its own `%` escaped), the same bytes as `_emit` writes."""


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
        self.response_json: bytes | None = None
        """`response` as JSON, encoded once for the last event and the store."""

    # ---- the Encoder side ------------------------------------------------------------------

    def encode(self, chunk: JSON) -> bytes:
        return self.encode_chunks((StreamChunk(chunk),))

    def encode_chunks(self, chunks: Iterable[StreamChunk]) -> bytes:
        """The events for the chunks of one upstream read, as one write. The common chunk, one more
        piece of the text being written, is one template filled in: no event dict, no call per event.
        This loop runs for every text delta of every stream, so what it reads of `self` is kept in
        locals, refreshed only after a chunk that is not a plain delta (only `_encode` changes them)."""
        if self._ended:
            return b""
        out: list[bytes] = []
        dumps = orjson.dumps
        item = self._open
        template = item.delta_event if item is not None else None
        sequence = self._sequence
        for chunk in chunks:
            data = chunk.data
            if template is not None:
                # a chunk that carries nothing but the next piece of text of choice 0: one more delta
                choices = data.get("choices")
                if choices and len(choices) == 1 and not data.get("usage"):
                    choice = choices[0]
                    delta = choice.get("delta")
                    if type(delta) is dict and not choice.get("finish_reason") and choice.get("index", 0) == 0:
                        text = delta.get("content")
                        if type(text) is str and text and (len(delta) == 1 or not (
                                delta.get("tool_calls") or delta.get("refusal") or delta.get("reasoning_content"))):
                            item.text.append(text)  # type: ignore[union-attr]
                            out.append(template % (sequence, dumps(text)))
                            sequence += 1
                            continue
            self._sequence = sequence
            self._encode(data, out)
            sequence = self._sequence
            item = self._open
            template = item.delta_event if item is not None else None
        self._sequence = sequence
        return b"".join(out)

    def _encode(self, chunk: JSON, out: list[bytes]) -> None:
        self._start(chunk.get("model"), out)
        if chunk.get("usage"):
            self._usage = Usage.from_openai(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._choice(choice, out)

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
        return self._end(out, "response.incomplete" if incomplete else "response.completed", response)

    def fail(self, message: str, code: str | None) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        self._start(None, out)
        self._cut_short()
        response = self._response("failed", self._usage)
        response["error"] = {"code": code or "server_error", "message": message}
        return self._end(out, "response.failed", response)

    # ---- events ----------------------------------------------------------------------------

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        """`sse({"type": kind, "sequence_number": …, **fields})` (`fields` never empty), encoded now: items
        change later. orjson writes keys in order, so the fields' JSON is the event's after its number."""
        out.append(_event_template(kind) % (self._sequence, orjson.dumps(fields)[1:]))
        self._sequence += 1

    def _start(self, model: Any, out: list[bytes]) -> None:
        if self._shell is not None:
            return
        model = model if isinstance(model, str) and model else str(self._turn.canonical["model"])
        self._shell = response_shell(self._turn, self._id, self._created_at, model)
        shell = orjson.dumps(self._shell)
        out.append(_whole_response_event("response.created", self._sequence, shell))
        out.append(_whole_response_event("response.in_progress", self._sequence + 1, shell))
        self._sequence += 2

    def _end(self, out: list[bytes], kind: str, response: JSON) -> bytes:
        """The last event, carrying the whole response."""
        self._ended = True
        self.response = response
        self.response_json = orjson.dumps(response)
        out.append(_whole_response_event(kind, self._sequence, self.response_json))
        self._sequence += 1
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
        if item is None or item.delta_event is None:
            item = self._message(out)
            if item.item["content"]:  # text after a refusal: a new part
                self._close_part(item, out)
            self._part(item, output_text(""), out)
            head = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
                    b'"sequence_number":%%d,"item_id":%b,"output_index":%d,"content_index":%d,"delta":%%b,'
                    b'"logprobs":[]}\n\n')
            item_id = orjson.dumps(item.item["id"]).replace(b"%", b"%%")
            item.delta_event = head % (item_id, item.index, len(item.item["content"]) - 1)
        item.text.append(text)
        out.append(item.delta_event % (self._sequence, orjson.dumps(text)))
        self._sequence += 1

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
        item.delta_event = None
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
