"""The Responses API's encoder: canonical answers written as Response objects and events.

The server's route handler translates the request (`request_in`) and hands this encoder to the
same `_serve` as chat completions, so the attempt loop never knows which dialect it serves. Errors
keep OpenAI's shape, which is the Responses API's too. An answer from a provider that was sent the
request natively (OpenAI, Azure OpenAI) is relayed as it came (`relay`), under the provider's own
ids. A finished response is handed to a `ResponseKeeper` (the server's store) with the
conversation it ends, as Responses items, for `previous_response_id`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson

from llmroute_proxy.dialects.base import (
    ANSWERED_BY,
    ChatResult,
    StreamChunk,
    Usage,
    WholeRelayedStream,
    WholeStream,
)
from llmroute_proxy.dialects.responses.answer_out import response_from_canonical
from llmroute_proxy.dialects.responses.items import input_items
from llmroute_proxy.dialects.responses.relay import NativeRelay
from llmroute_proxy.dialects.responses.request_in import ResponsesTurn, responses_field
from llmroute_proxy.dialects.responses.stream_out import ResponsesStreamEncoder
from llmroute_proxy.dialects.responses.whole_in import chunks as whole_chunks
from llmroute_proxy.dialects.responses.whole_in import read_texts
from llmroute_proxy.errors import LLMRouteError
from llmroute_proxy.table import Target


class ResponseKeeper(Protocol):
    """Where finished responses are kept (the server's `ResponseStore`)."""

    def put(self, response_id: str, response: bytes, conversation: Sequence[dict[str, Any]], now: float,
            input_span: tuple[int, int] = (0, 0), held_by: str = "", remote: bool = False) -> bool: ...


class IdSource:
    """Ids of 24 random bytes (`resp_` + 48 hex digits), unguessable because a stored response can
    be read by its id alone. The bytes come from the OS's CSPRNG 4 KiB at a time: one `getrandom`
    for ~170 ids, not one for each of the three or four ids a response needs; each batch is turned
    into hex digits at once, and an id is a slice of them."""

    __slots__ = ("_at", "_digits", "_read")

    def __init__(self, read: Callable[[int], bytes] = os.urandom) -> None:
        self._read = read
        self._digits = ""
        self._at = 0

    def new(self, prefix: str) -> str:
        at = self._at
        if at + 48 > len(self._digits):
            self._digits, at = self._read(4096).hex(), 0
        self._at = at + 48
        return prefix + "_" + self._digits[at:at + 48]


new_id = IdSource().new


def error_body(error: LLMRouteError) -> dict[str, Any]:
    """The Responses API's error shape (OpenAI's), with the canonical field names a translator used
    turned back into the Responses names the client sent (`response_format` → `text.format`)."""
    param = responses_field(error.param) if isinstance(error.param, str) else error.param
    return {"error": {"message": responses_field(error.message), "type": error.error_type, "param": param,
                      "code": error.code}}


class ResponsesEncoder:
    """One Responses answer; `response` is the Response object once it has been written."""

    __slots__ = ("_clock", "_relay", "_store", "_stream", "_target", "_turn", "created_at", "response_id",
                 "response_json")

    def __init__(self, turn: ResponsesTurn | None, created_at: int = 0, store: ResponseKeeper | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        """`store` keeps the finished response (unless the request said `store: false`)."""
        self._turn = turn
        self._store = store if turn is not None and turn.store else None
        self._clock = clock
        self.created_at = created_at
        self.response_id = new_id("resp")
        self.response_json: bytes | None = None
        self._relay: NativeRelay | None = None
        self._target: Target | None = None
        self._stream = ResponsesStreamEncoder(turn, self.response_id, created_at, new_id) if turn else None

    def attempting(self, target: Target) -> None:
        """The target the current attempt goes to: the reasoning of its answer is kept as its provider's,
        and a native answer as held by its store too (`Target.response_store`)."""
        self._target = target
        if self._stream is not None:
            self._stream.provider = target.provider

    def error_body(self, error: LLMRouteError, status: int) -> bytes:
        unheld = self._turn.unheld if self._turn is not None else None
        if unheld is not None and status == 404 and error.param == "previous_response_id":
            # the provider does not hold it either: say first why the sidecar sent it there
            said = error_body(error)
            said["error"]["message"] = (f"{unheld.message} It was looked for at a provider that keeps its "
                                        f"responses, which said: {said['error']['message']}")
            return orjson.dumps(said)
        return orjson.dumps(error_body(error))

    @property
    def response(self) -> dict[str, Any] | None:
        """The Response object once it has been written (decoded: answering never needs it)."""
        response: dict[str, Any] | None = orjson.loads(self.response_json) if self.response_json else None
        return response

    def unary(self, result: ChatResult) -> bytes:
        assert self._turn is not None
        native = result.native
        if native is not None:  # the provider's own Response
            body = result.raw if result.raw is not None else orjson.dumps(native)
            self._keep_native(native, body)
            return body
        body, output = response_from_canonical(result.data, result.usage, self._turn, self.response_id,
                                               self.created_at, new_id, self._target.provider if self._target else "")
        self._keep(body, output)
        return body

    def chunks(self, chunks: Iterable[StreamChunk]) -> bytes:
        assert self._stream is not None
        batch = chunks if isinstance(chunks, list) else list(chunks)
        if self._relay is None and (not batch or batch[0].native is None):
            return self._stream.encode_chunks(batch)
        relay = self._relay = self._relay or NativeRelay()
        out = b"".join([relay.relay(chunk) for chunk in batch])
        if relay.response is not None and self.response_json is None:
            self._keep_native(relay.response)  # with the batch that ends it: before the client reads its end
        return out

    def end(self, usage: Usage | None) -> bytes:
        assert self._stream is not None
        if self._relay is not None:  # the provider's stream ended itself, and was kept as it did
            return b""
        out = self._stream.finish(usage)
        self._keep(self._stream.response_json, self._stream.output)
        return out

    def write_whole(self, stream: WholeStream) -> bytes:
        """A chat stream that arrived whole and was judged by its bytes, as the whole Responses stream,
        kept as `end` keeps it: read by byte searches when it is a text answer (`whole_in`), else parsed
        event by event as `feed` would (a failure then fails the attempt before anything is written)."""
        assert self._stream is not None
        texts = read_texts(stream)
        if texts is not None:
            out = self._stream.encode_whole(texts)
        else:
            chunks = whole_chunks(stream.body)
            out = self._stream.encode_chunks(chunks) + self._stream.finish(stream.usage)
        self._keep(self._stream.response_json, self._stream.output)
        return out

    def stream_error(self, error: LLMRouteError) -> bytes:
        assert self._stream is not None
        if self._relay is not None:
            out = self._relay.failed(responses_field(error.message), error.code)
            if self._relay.response is not None:
                self._keep_native(self._relay.response)
            return out
        out = self._stream.fail(responses_field(error.message), error.code)
        self._keep(self._stream.response_json, self._stream.output)
        return out

    def relay_whole(self, stream: WholeRelayedStream) -> bytes:
        """A provider's own Responses stream that arrived whole and was judged by its bytes: as it came."""
        self._keep_native(stream.final)
        return stream.body

    def _keep_native(self, response: dict[str, Any], body: bytes | None = None) -> None:
        """The provider's own Response (`body`: its bytes, when they are at hand), under its own id."""
        self.response_id = str(response.get("id") or self.response_id)
        provider, store = ("", "") if self._target is None else (self._target.provider, self._target.response_store)
        output = [{**item, ANSWERED_BY: provider} if item.get("type") == "reasoning" else item
                  for item in response.get("output") or () if isinstance(item, dict)]
        self._keep(orjson.dumps(response) if body is None else body, output, store)

    def _keep(self, body: bytes | None, output: list[dict[str, Any]], held_by: str = "") -> None:
        """Stored before the last byte is written: a client that continues at once finds it. `held_by`:
        the store of the provider that answered natively and keeps it too (the client's `store` went to it as well)."""
        self.response_json = body
        if body is None or self._store is None or self._turn is None or self._clock is None:
            return
        history = self._turn.history
        inputs = input_items(self._turn.body.get("input"), new_id)
        self._store.put(self.response_id, body, [*history, *inputs, *output], self._clock(),
                        (len(history), len(history) + len(inputs)), held_by, self._turn.unheld is not None)
