"""A Responses answer that came from a provider speaking the Responses API itself, relayed.

The client gets the provider's own Response object or events, byte for byte as the OpenAI
dialect re-framed them (ids, reasoning with its encrypted content, built-in tool calls: all of
it). Reading it back costs a parse of the few events that say what the store keeps: the
Response as created, each output item as it opens and as it is done, and the Response as it
ended; the text and arguments of items still open come from the canonical deltas the dialect
read anyway. When the stream fails after its first output, the relay ends it itself with
`response.failed`, numbered after the last event it relayed, whose output is what was said so
far (items still open marked `incomplete`), as for a translated stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmroute_proxy.dialects.base import StreamChunk

JSON = dict[str, Any]

_CREATED = b"event: response.created\n"
_ITEM_ADDED = b"event: response.output_item.added\n"
_ITEM_DONE = b"event: response.output_item.done\n"
_ENDED = (b"event: response.completed\n", b"event: response.incomplete\n")


class NativeRelay:
    """One relayed event stream; `response` is the Response it ended with, once it has."""

    __slots__ = ("_calls", "_created", "_items", "_message", "_open", "_texts", "events", "response")

    def __init__(self) -> None:
        self.events = 0
        self.response: JSON | None = None
        self._created: JSON | None = None
        self._items: dict[int, JSON] = {}  # by output_index: done, or open (then also in `_open`)
        self._open: set[int] = set()
        self._texts: dict[int, list[str]] = {}  # what open items said, by output_index
        self._calls: list[int] = []  # output_index of each function call, in canonical tool-call order
        self._message: int | None = None  # output_index of the message being said, if one is open

    def relay(self, chunk: StreamChunk) -> bytes:
        event = chunk.native or b""
        if event:
            self.events += 1
            if event.startswith(_ITEM_ADDED):
                self._opened(_payload(event))
            elif event.startswith(_ITEM_DONE):
                self._done(_payload(event))
            elif event.startswith(_CREATED):
                self._created = _response_of(event)
            elif event.startswith(_ENDED):
                self.response = self._ended(_response_of(event))
        choices = chunk.data.get("choices")
        if choices and self._open:
            self._said(choices[0].get("delta") or {})
        return event

    def failed(self, message: str, code: str | None) -> bytes:
        """The `response.failed` event that ends a stream cut after its first output; `response`
        is then the failed Response, with what its output said before the cut."""
        base = self._created or {"object": "response"}
        output = [self._cut(index, item) if index in self._open else item for index, item in sorted(self._items.items())]
        self.response = {**base, "status": "failed", "error": {"code": code or "server_error", "message": message},
                         "output": output}
        event = {"type": "response.failed", "sequence_number": self.events, "response": self.response}
        self.events += 1
        return b"event: response.failed\ndata: " + orjson.dumps(event) + b"\n\n"

    def _ended(self, response: JSON | None) -> JSON | None:
        """Some OpenAI backends end with `output: []` after streaming every item: the store keeps
        the items the stream showed."""
        if response is not None and not response.get("output") and self._items:
            return {**response, "output": [item for _, item in sorted(self._items.items())]}
        return response

    def _opened(self, payload: JSON) -> None:
        item, index = payload.get("item"), payload.get("output_index")
        if isinstance(item, dict) and isinstance(index, int):
            self._items[index] = item
            self._open.add(index)
            self._texts[index] = []
            if item.get("type") == "function_call":
                self._calls.append(index)
            elif item.get("type") == "message":
                self._message = index

    def _done(self, payload: JSON) -> None:
        item, index = payload.get("item"), payload.get("output_index")
        if isinstance(item, dict) and isinstance(index, int):
            self._items[index] = item
            self._open.discard(index)
            if index == self._message:
                self._message = None

    def _said(self, delta: JSON) -> None:
        text = delta.get("content") or delta.get("refusal")
        if isinstance(text, str) and text and self._message is not None:
            self._texts[self._message].append(text)
        for call in delta.get("tool_calls") or ():
            number, arguments = call.get("index"), (call.get("function") or {}).get("arguments")
            if isinstance(number, int) and number < len(self._calls) and isinstance(arguments, str):
                self._texts[self._calls[number]].append(arguments)

    def _cut(self, index: int, item: JSON) -> JSON:
        said = "".join(self._texts.get(index) or ())
        if item.get("type") == "message":
            return {**item, "status": "incomplete",
                    "content": [{"type": "output_text", "text": said, "annotations": [], "logprobs": []}]}
        if item.get("type") == "function_call":
            return {**item, "status": "incomplete", "arguments": said}
        return {**item, "status": "incomplete"}


def _payload(event: bytes) -> JSON:
    start = event.find(b"\ndata: ") + 7
    data = event[start:].rstrip(b"\n").replace(b"\ndata: ", b"\n")
    payload = orjson.loads(data)
    return payload if isinstance(payload, dict) else {}


def _response_of(event: bytes) -> JSON | None:
    response = _payload(event).get("response")
    return response if isinstance(response, dict) else None
