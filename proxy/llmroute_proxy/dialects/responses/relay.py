"""A Responses answer that came from a provider speaking the Responses API itself, relayed.

The client gets the provider's own Response object or events, byte for byte as the OpenAI
dialect re-framed them (ids, reasoning with its encrypted content, built-in tool calls: all of
it). Reading it back costs a parse of the few events that say what the store keeps: the
Response as created, each finished output item, and the Response as it ended. When the stream
fails after its first output, the relay ends it itself with `response.failed`, numbered after
the last event it relayed.
"""

from __future__ import annotations

from typing import Any

import orjson

JSON = dict[str, Any]

_CREATED = b"event: response.created\n"
_ITEM_DONE = b"event: response.output_item.done\n"
_ENDED = (b"event: response.completed\n", b"event: response.incomplete\n")


class NativeRelay:
    """One relayed event stream; `response` is the Response it ended with, once it has."""

    __slots__ = ("_created", "_items", "events", "response")

    def __init__(self) -> None:
        self.events = 0
        self.response: JSON | None = None
        self._created: JSON | None = None
        self._items: list[JSON] = []

    def relay(self, event: bytes) -> bytes:
        if not event:
            return event
        self.events += 1
        if event.startswith(_CREATED):
            self._created = _response_of(event)
        elif event.startswith(_ITEM_DONE):
            item = _payload(event).get("item")
            if isinstance(item, dict):
                self._items.append(item)
        elif event.startswith(_ENDED):
            self.response = _response_of(event)
        return event

    def failed(self, message: str, code: str | None) -> bytes:
        """The `response.failed` event that ends a stream cut after its first output; `response`
        is then the failed Response, with the items finished before the cut."""
        base = self._created or {"object": "response"}
        self.response = {**base, "status": "failed", "error": {"code": code or "server_error", "message": message},
                         "output": self._items}
        event = {"type": "response.failed", "sequence_number": self.events, "response": self.response}
        self.events += 1
        return b"event: response.failed\ndata: " + orjson.dumps(event) + b"\n\n"


def _payload(event: bytes) -> JSON:
    start = event.find(b"\ndata: ") + 7
    data = event[start:].rstrip(b"\n").replace(b"\ndata: ", b"\n")
    payload = orjson.loads(data)
    return payload if isinstance(payload, dict) else {}


def _response_of(event: bytes) -> JSON | None:
    response = _payload(event).get("response")
    return response if isinstance(response, dict) else None
