"""Canonical chunk streams → the Responses API's semantic events.

The events come in the order OpenAI's own streams use and the SDK's stream accumulator checks:
`response.created`, `response.in_progress`, then per output item `output_item.added`, its
parts and deltas, their `.done` events and `output_item.done`, and at the end
`response.completed` (or `response.incomplete` when the answer was cut by the token limit or a
filter). Every event carries `sequence_number`, counting from 0.

The text deltas of one upstream read are one `response.output_text.delta`: they reach the client in
the same write anyway, and the Responses API allows any split of a text into deltas (the SDK joins
them). A stream paced by the model (a chunk per read) still gets a delta per chunk; one that arrived
whole (the unpaced case, or a fast model behind a buffering proxy) gets its text in one delta, with
no event to build and encode per upstream chunk.

A reasoning or text item is closed as soon as anything else starts; function calls stay open
until the end of the stream, because OpenAI-style upstreams may interleave fragments of
parallel calls. A failure after the stream started ends it with `response.failed`, carrying
the output so far: never a clean `response.completed` over a truncated answer.

Claude's signed thinking (`thinking_blocks` fragments in the deltas) is gathered on the reasoning item
it came with (one without summary text for a redacted block) and sealed into its `encrypted_content`
when the item closes: shown when the request's `include` asks for it, always in `output`, which the
store keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from llmroute_proxy.dialects.base import StreamChunk, Usage
from llmroute_proxy.dialects.responses.answer_out import (
    IN_PROGRESS,
    NewId,
    ResponseFrame,
    function_call_item,
    incomplete_reason,
    output_text,
    reasoning_item,
    response_frame,
    response_usage,
)
from llmroute_proxy.dialects.responses.request_in import ResponsesTurn
from llmroute_proxy.dialects.responses.whole_in import WholeTexts
from llmroute_proxy.dialects.thinking import FIELD as THINKING_BLOCKS
from llmroute_proxy.dialects.thinking import BlockCollector, token

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


_WHOLE_RESPONSE_EVENTS = {kind: _event_template(kind).replace(b"%b", b'"response":%b}') for kind in (
    "response.created", "response.in_progress", "response.completed", "response.incomplete", "response.failed")}


def _whole_response_event(kind: str, sequence: int, response_json: bytes) -> bytes:
    """`sse({"type": kind, "sequence_number": sequence, "response": response})`, from the
    response's JSON encoded once (the same bytes: orjson writes keys in insertion order)."""
    return _WHOLE_RESPONSE_EVENTS[kind] % (sequence, response_json)


# The events of a message's text, the most common item, as templates: what `_emit` writes for them
# (the byte-identity test checks each against `sse`), without a dict of fields to encode.
_MESSAGE_ADDED = (b'event: response.output_item.added\ndata: {"type":"response.output_item.added","sequence_number":%d,'
                  b'"output_index":%d,"item":{"type":"message","id":%b,"status":"in_progress","role":"assistant",'
                  b'"content":[]}}\n\n')
_TEXT_PART_ADDED = (b'event: response.content_part.added\ndata: {"type":"response.content_part.added",'
                    b'"sequence_number":%d,"item_id":%b,"output_index":%d,"content_index":%d,'
                    b'"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]}}\n\n')
_TEXT_DELTA = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
               b'"sequence_number":%%d,"item_id":%b,"output_index":%d,"content_index":%d,"delta":%%b,'
               b'"logprobs":[]}\n\n')
_TEXT_DONE = (b'event: response.output_text.done\ndata: {"type":"response.output_text.done","sequence_number":%d,'
              b'"item_id":%b,"output_index":%d,"content_index":%d,"text":%b,"logprobs":[]}\n\n')
_TEXT_PART_DONE = (b'event: response.content_part.done\ndata: {"type":"response.content_part.done",'
                   b'"sequence_number":%d,"item_id":%b,"output_index":%d,"content_index":%d,'
                   b'"part":{"type":"output_text","text":%b,"annotations":[],"logprobs":[]}}\n\n')
_ITEM_DONE = (b'event: response.output_item.done\ndata: {"type":"response.output_item.done","sequence_number":%d,'
              b'"output_index":%d,"item":%b}\n\n')


def _text_answer_template(kind: str) -> bytes:
    """The nine events of a response whose output is one message of one output_text part, its text
    one delta, ending with `kind`: the templates above, numbered from 0, chained into one, with `%b` for
    the frame's JSON (twice), the item's id (five times) and the text (three times), the done item
    and the final Response, in the order they come."""
    return b"".join([
        _WHOLE_RESPONSE_EVENTS["response.created"] % (0, b"%b"),
        _WHOLE_RESPONSE_EVENTS["response.in_progress"] % (1, b"%b"),
        _MESSAGE_ADDED % (2, 0, b"%b"),
        _TEXT_PART_ADDED % (3, b"%b", 0, 0),
        _TEXT_DELTA % (b"%b", 0, 0) % (4, b"%b", b"%b"),
        _TEXT_DONE % (5, b"%b", 0, 0, b"%b"),
        _TEXT_PART_DONE % (6, b"%b", 0, 0, b"%b"),
        _ITEM_DONE % (7, 0, b"%b"),
        _WHOLE_RESPONSE_EVENTS[kind] % (8, b"%b")])


_TEXT_ANSWERS = {kind: _text_answer_template(kind) for kind in ("response.completed", "response.incomplete")}
_TEXT_ANSWER_EVENTS = 9


_NO_TEXT = ("", None)


def _plain_text(chunk: JSON) -> tuple[str, Any] | None:
    """The text and finish reason of a chunk that shows nothing else (no usage, one choice, index 0,
    its delta a role, a text and a null refusal at most), or None. `_encode` would write nothing for it
    but the start of the response and that text, and keep its finish reason."""
    try:
        (choice,) = chunk["choices"]
        delta = choice["delta"]
        text = delta.get("content")
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if (chunk.get("usage") or choice.get("index", 0) != 0 or not delta.keys() <= _PLAIN_DELTA
            or delta.get("refusal") is not None or (text is not None and type(text) is not str)):
        return None
    return text or "", choice.get("finish_reason") or None


_PLAIN_DELTA = frozenset({"role", "content", "refusal"})


class _Item:
    """One output item being streamed: its index, the item as `.done` shows it, and its text."""

    __slots__ = ("delta_event", "id_json", "index", "item", "json", "kind", "sealed", "sent", "text", "thinking")

    def __init__(self, index: int, item: JSON) -> None:
        self.index = index
        self.item = item
        self.kind: str = item["type"]
        self.text: list[str] = []
        self.sent = 0
        """How many of `text`'s pieces a delta event carried (an output_text part's): the rest came in
        the current read and go out as one delta when it has been read (`_send_text`)."""
        self.id_json = b""
        """The item's id as JSON, for the templates (a message's; others' events are encoded whole)."""
        self.delta_event: bytes | None = None
        """While an output_text part takes deltas: its delta event with `%d` for the sequence number
        and `%b` for the JSON of the text (its own `%` escaped), the same bytes as `_emit` writes."""
        self.json: bytes | None = None
        """The item as JSON once `output_item.done` wrote it: final, and reused for the whole response."""
        self.thinking: BlockCollector | None = None
        """A reasoning item's signed thinking blocks, as their fragments come."""
        self.sealed: str | None = None
        """A reasoning item's `encrypted_content` once it closed, shown or not."""


class ResponsesStreamEncoder:
    """Canonical `chat.completion.chunk`s → Responses events, for one response."""

    def __init__(self, turn: ResponsesTurn, response_id: str, created_at: int, new_id: NewId) -> None:
        self._turn = turn
        self._id = response_id
        self._created_at = created_at
        self._new_id = new_id
        self._sequence = 0
        self._frame: ResponseFrame | None = None
        self._items: list[_Item] = []
        self._open: _Item | None = None  # the reasoning or message item receiving deltas
        self._calls: dict[int, _Item] = {}  # canonical tool-call index → open function_call item
        self._finish_reason: str | None = None
        self._usage: Any = None  # the last usage object a chunk carried, read only if `finish` is given none
        self._ended = False
        self.provider = ""
        """The provider answering (the current attempt's), named in the reasoning items' `encrypted_content`."""
        self.output: list[JSON] = []
        """The output items, final once the stream has ended, as the store keeps them (`encrypted_content`
        included)."""
        self.response_json: bytes | None = None
        """The final Response as JSON, once the stream has ended (completed, incomplete or failed):
        the last event's and the store's."""

    @property
    def response(self) -> JSON | None:
        """The final Response object (decoded: the stream itself never needs it)."""
        response: JSON | None = orjson.loads(self.response_json) if self.response_json is not None else None
        return response

    # ---- the Encoder side ------------------------------------------------------------------

    def encode(self, chunk: JSON) -> bytes:
        return self.encode_chunks((StreamChunk(chunk),))

    def encode_chunks(self, chunks: Iterable[StreamChunk]) -> bytes:
        """The events for the chunks of one upstream read, as one write: the texts they add to the open
        output_text part are one delta, written once the read has been read (`_send_text`)."""
        if self._ended:
            return b""
        out: list[bytes] = []
        self._read(chunks, out)
        if self._open is not None:
            self._send_text(self._open, out)
        return b"".join(out)

    def _read(self, chunks: Iterable[StreamChunk], out: list[bytes]) -> None:
        """The events of `chunks` but the last delta of the open text part, which is left to send. The
        common chunk, one more piece of the text being written, only adds its text to the part's: no
        event, no call. This loop runs for every text chunk of every stream, so what it reads of `self`
        is kept in locals, refreshed only after a chunk that is not a plain delta (only `_encode`
        changes them)."""
        texts = self._open_texts()
        for chunk in chunks:
            data = chunk.data
            if texts is not None and ("usage" not in data or not data["usage"]):
                # a chunk that carries nothing but the next piece of text of choice 0: one more piece
                # (usage first: the usage chunk's empty choices would raise below, and raising is dear)
                try:
                    (choice,) = data["choices"]
                    delta = choice["delta"]
                    text = delta["content"]
                    index = choice["index"]
                    reason = choice["finish_reason"]
                except (KeyError, TypeError, ValueError):  # not the common shape: `_encode` sorts it out
                    text = None
                if type(text) is str and text and index == 0 and (len(delta) == 1 or not (
                        delta.get("tool_calls") or delta.get("refusal") or delta.get("reasoning_content"))):
                    texts.append(text)
                    if reason:  # the last piece of text often comes with it (as `_choice` takes it)
                        self._finish_reason = reason
                    continue
            self._encode(data, out)
            texts = self._open_texts()

    def _open_texts(self) -> list[str] | None:
        """The pieces of text of the output_text part taking deltas, if one is open."""
        item = self._open
        return item.text if item is not None and item.delta_event is not None else None

    def _send_text(self, item: _Item, out: list[bytes]) -> None:
        """The pieces of `item`'s open output_text part that no delta carried yet, as one delta. Every
        public method that writes ends with it (or closes the part, which calls it), so between two of
        them no text is left unsent."""
        texts, sent = item.text, item.sent
        if item.delta_event is None or sent == len(texts):
            return
        text = texts[sent] if sent + 1 == len(texts) else "".join(texts[sent:])
        out.append(item.delta_event % (self._sequence, orjson.dumps(text)))
        self._sequence += 1
        item.sent = len(texts)

    def encode_whole(self, read: WholeTexts) -> bytes:
        """A whole text answer (`whole_in.read_texts`) to its end: what `encode_chunks` and `finish`
        write for its chunks read at once. Its text between its first and last chunks is the text of
        one delta, whose JSON is the upstream's own (orjson's bytes for it), with no chunk and no event
        built for each piece. When its first and last chunks carry nothing but text too (the common
        answer: `_plain_text`), it is one message of one output_text part, written without reading
        them as chunks (`_text_answer`); otherwise they are encoded as any."""
        if self._ended:
            return b""
        first = _plain_text(read.first)
        last = _plain_text(read.last) if read.last is not None else _NO_TEXT
        if first is not None and last is not None and self._frame is None and (first[0] or read.text or last[0]):
            return self._text_answer(read, first, last)
        out: list[bytes] = []
        self._read((StreamChunk(read.first),), out)
        if read.text:
            self._text(read.text, out)  # opens the message and its text part, unless the first chunk did
        if read.last is not None:
            self._read((StreamChunk(read.last),), out)
        return self._finish(out, read.usage)

    def _text_answer(self, read: WholeTexts, first: tuple[str, Any], last: tuple[str, Any]) -> bytes:
        """A whole answer whose every chunk carries text only (`first`, `last`: its first and last
        chunks' text and finish reason), its text one delta: the events `encode_whole` writes for it,
        filled into one template (`_TEXT_ANSWERS`) with no item, part or event built on the way. This is
        most streams that arrive whole, so it is written in one go; what it leaves of the encoder is
        what `_finish` leaves (the Response, its output), as nothing is written after it."""
        text, text_json = read.text, read.text_json
        if first[0]:
            text, text_json = first[0] + text, orjson.dumps(first[0])[1:-1] + text_json
        if last[0]:
            text, text_json = text + last[0], text_json + orjson.dumps(last[0])[1:-1]
        text_json = b'"' + text_json + b'"'
        self._finish_reason = last[1] or first[1]
        incomplete = incomplete_reason(self._finish_reason)
        model = read.first.get("model")
        frame = self._frame = response_frame(self._turn, self._id, self._created_at, model if isinstance(
            model, str) and model else str(self._turn.canonical["model"]))
        item_id = self._new_id("msg")
        item = {"type": "message", "id": item_id, "status": "incomplete" if incomplete else "completed",
                "role": "assistant", "content": [output_text(text)]}
        item_json = orjson.dumps(item)
        usage = orjson.dumps(response_usage(read.usage))
        if incomplete:
            self.response_json = frame.json(b'"incomplete"', b"[" + item_json + b"]", usage,
                                            incomplete_details=orjson.dumps({"reason": incomplete}))
        else:
            self.response_json = frame.json(b'"completed"', b"[" + item_json + b"]", usage)
        self.output = [item]
        self._ended = True
        self._sequence = _TEXT_ANSWER_EVENTS
        shell, id_json = frame.json(IN_PROGRESS), orjson.dumps(item_id)
        return _TEXT_ANSWERS["response.incomplete" if incomplete else "response.completed"] % (
            shell, shell, id_json, id_json, id_json, text_json, id_json, text_json, id_json, text_json, item_json,
            self.response_json)

    def _encode(self, chunk: JSON, out: list[bytes]) -> None:
        if self._frame is None:
            self._start(chunk.get("model"), out)
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._choice(choice, out)

    def finish(self, usage: Usage | None = None) -> bytes:
        if self._ended:
            return b""
        return self._finish([], usage)

    def _finish(self, out: list[bytes], usage: Usage | None) -> bytes:
        """`out` and the events that end the response, joined."""
        if self._frame is None:
            self._start(None, out)
        self._close_all(out)
        incomplete = incomplete_reason(self._finish_reason)
        if incomplete:
            return self._end(out, "response.incomplete", b'"incomplete"', usage or self._usage_seen(),
                             incomplete_details=orjson.dumps({"reason": incomplete}))
        return self._end(out, "response.completed", b'"completed"', usage or self._usage_seen())

    def fail(self, message: str, code: str | None) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        if self._frame is None:
            self._start(None, out)
        if self._open is not None:
            self._send_text(self._open, out)
        self._cut_short()
        return self._end(out, "response.failed", b'"failed"', self._usage_seen(),
                         error=orjson.dumps({"code": code or "server_error", "message": message}))

    # ---- events ----------------------------------------------------------------------------

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        """`sse({"type": kind, "sequence_number": …, **fields})` (`fields` never empty), encoded now: items
        change later. orjson writes keys in order, so the fields' JSON is the event's after its number."""
        out.append(_event_template(kind) % (self._sequence, orjson.dumps(fields)[1:]))
        self._sequence += 1

    def _usage_seen(self) -> Usage | None:
        return Usage.from_openai(self._usage) if self._usage else None

    def _start(self, model: Any, out: list[bytes]) -> None:
        if self._frame is not None:
            return
        model = model if isinstance(model, str) and model else str(self._turn.canonical["model"])
        self._frame = response_frame(self._turn, self._id, self._created_at, model)
        shell = self._frame.json(IN_PROGRESS)
        out.append(_whole_response_event("response.created", self._sequence, shell))
        out.append(_whole_response_event("response.in_progress", self._sequence + 1, shell))
        self._sequence += 2

    def _end(self, out: list[bytes], kind: str, status: bytes, usage: Usage | None, error: bytes = b"null",
             incomplete_details: bytes = b"null") -> bytes:
        """The last event, carrying the whole response."""
        assert self._frame is not None
        self._ended = True
        self.output = [{**item.item, "encrypted_content": item.sealed} if item.sealed else item.item
                       for item in self._items]
        output = b"[" + b",".join([item.json or orjson.dumps(item.item) for item in self._items]) + b"]"
        self.response_json = self._frame.json(status, output, orjson.dumps(response_usage(usage)), error,
                                              incomplete_details)
        out.append(_whole_response_event(kind, self._sequence, self.response_json))
        self._sequence += 1
        return b"".join(out)

    def _cut_short(self) -> None:
        """What the open items hold so far, marked incomplete: the output of a failed response."""
        if self._open is not None:
            item = self._open
            text = "".join(item.text)
            if item.kind == "reasoning":
                item.item["summary"] = [{"type": "summary_text", "text": text}] if text else []
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
        signed = delta.get(THINKING_BLOCKS)
        if signed:
            self._thinking(signed, out)
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

    def _reasoning_item(self, out: list[bytes]) -> _Item:
        item = self._open
        if item is None or item.kind != "reasoning":
            self._close_open(out)
            self._close_calls(out)
            item = self._open = self._add(reasoning_item(self._new_id("rs"), ""), out)
        return item

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        item = self._reasoning_item(out)
        if not item.text:
            self._emit(out, "response.reasoning_summary_part.added", item_id=item.item["id"],
                       output_index=item.index, summary_index=0, part={"type": "summary_text", "text": ""})
        item.text.append(text)
        self._emit(out, "response.reasoning_summary_text.delta", item_id=item.item["id"], output_index=item.index,
                   summary_index=0, delta=text)

    def _thinking(self, fragments: Any, out: list[bytes]) -> None:
        item = self._reasoning_item(out)
        if item.thinking is None:
            item.thinking = BlockCollector()
        item.thinking.add(fragments)

    def _message(self, out: list[bytes]) -> _Item:
        item = self._open
        if item is None or item.kind != "message":
            self._close_open(out)
            self._close_calls(out)
            item_id = self._new_id("msg")
            item = self._open = _Item(len(self._items), {"type": "message", "id": item_id, "status": "in_progress",
                                                         "role": "assistant", "content": []})
            self._items.append(item)
            item.id_json = orjson.dumps(item_id)
            out.append(_MESSAGE_ADDED % (self._sequence, item.index, item.id_json))
            self._sequence += 1
        return item

    def _text(self, text: str, out: list[bytes]) -> None:
        item = self._open
        if item is None or item.delta_event is None:
            item = self._message(out)
            if item.item["content"]:  # text after a refusal: a new part
                self._close_part(item, out)
            self._open_text_part(item, out)
        item.text.append(text)  # sent with the read's other pieces (`_send_text`)

    def _open_text_part(self, item: _Item, out: list[bytes]) -> None:
        content = item.item["content"]
        content.append(output_text(""))
        item.text = []
        item.sent = 0
        out.append(_TEXT_PART_ADDED % (self._sequence, item.id_json, item.index, len(content) - 1))
        self._sequence += 1
        item.delta_event = _TEXT_DELTA % (item.id_json.replace(b"%", b"%%"), item.index, len(content) - 1)

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
        self._send_text(item, out)
        item.delta_event = None
        index = len(item.item["content"]) - 1
        part = item.item["content"][index]
        text = "".join(item.text)
        if part["type"] == "refusal":
            part["refusal"] = text
            common = {"item_id": item.item["id"], "output_index": item.index, "content_index": index}
            self._emit(out, "response.refusal.done", **common, refusal=text)
            self._emit(out, "response.content_part.done", **common, part=part)
            return
        part["text"] = text
        text_json = orjson.dumps(text)
        sequence = self._sequence
        out.append(_TEXT_DONE % (sequence, item.id_json, item.index, index, text_json))
        out.append(_TEXT_PART_DONE % (sequence + 1, item.id_json, item.index, index, text_json))
        self._sequence = sequence + 2

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
            self._close_reasoning(item, out)
        else:
            self._close_part(item, out)
            item.item["status"] = status
        self._item_done(item, out)

    def _close_reasoning(self, item: _Item, out: list[bytes]) -> None:
        if item.text:
            text = "".join(item.text)
            item.item["summary"] = [{"type": "summary_text", "text": text}]
            common = {"item_id": item.item["id"], "output_index": item.index, "summary_index": 0}
            self._emit(out, "response.reasoning_summary_text.done", **common, text=text)
            self._emit(out, "response.reasoning_summary_part.done", **common, part=item.item["summary"][0])
        blocks = item.thinking.blocks() if item.thinking is not None else None
        if blocks:
            item.sealed = token(self.provider, blocks)
            if self._turn.shows_encrypted_reasoning:
                item.item["encrypted_content"] = item.sealed

    def _item_done(self, item: _Item, out: list[bytes]) -> None:
        item.json = orjson.dumps(item.item)
        out.append(_ITEM_DONE % (self._sequence, item.index, item.json))
        self._sequence += 1

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
            self._item_done(item, out)
        if self._calls:
            self._calls = {}

    def _close_all(self, out: list[bytes]) -> None:
        self._close_open(out)
        self._close_calls(out)
