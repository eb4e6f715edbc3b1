"""The simulated Responses API's streams: `event: <type>` and `data: {...}` with `type` and a
`sequence_number` from 0, in the order OpenAI sends them, and no `[DONE]` at the end.

`response.created` and `response.in_progress`, then per output item `output_item.added` (in its
in-progress form: a message with no content, a function call with `arguments: ""`, a web search
whose action has no query yet), its own events (reasoning summary parts, `web_search_call.*`,
content parts with text or refusal deltas and a citation's `annotation.added`, argument deltas),
`output_item.done` with the finished item, and last `response.completed` or
`response.incomplete`. Deltas carry `logprobs: []` (text) and an `obfuscation` string unless
`stream_options.include_obfuscation` is false, as the real API pads them.

The stream faults are the chat streams' (`SimStream`): the content events are the text, refusal
and argument deltas; the in-band error is an `error` event, or with `quirks` a `response.failed`
whose `error` carries the code and message.

Nothing here may import `llmroute_proxy.server`: the simulators stand in for the outside world.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmroute_proxy.sim.answers import split_even, split_words
from llmroute_proxy.sim.runtime import SIM_CALL
from llmroute_proxy.sim.streaming import SimStream, sse_event

if TYPE_CHECKING:
    from llmroute_proxy.sim.responses import Answer, Frame

JSON = dict[str, Any]
_OBFUSCATION_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def obfuscation(sequence_number: int, delta: str) -> str:
    """Padding that evens out the sizes of delta events (deterministic here, random on the real API)."""
    digest = hashlib.sha256(sequence_number.to_bytes(8, "little")).digest()
    size = max(1, 16 - len(delta.encode()) % 16)
    return "".join(_OBFUSCATION_CHARS[byte % len(_OBFUSCATION_CHARS)] for byte in digest[:size])


class _Events:
    """Numbers the events of one stream and frames them as SSE."""

    def __init__(self, stream: SimStream, frame: Frame, obfuscate: bool, quirks: bool) -> None:
        self._stream = stream
        self._frame = frame
        self._obfuscate = obfuscate
        self._quirks = quirks
        self.sequence = 0
        stream.in_band_error = self._in_band_error

    def _frame_event(self, kind: str, members: JSON) -> bytes:
        """The event numbered next; the number is used up once the event is sent (a fault that
        strikes instead sends its own event with that number)."""
        return sse_event(kind, {"type": kind, "sequence_number": self.sequence, **members})

    async def send(self, kind: str, members: JSON, *, content: bool = False) -> None:
        await self._stream.send(self._frame_event(kind, members), content=content)
        self.sequence += 1

    async def delta(self, kind: str, members: JSON, delta: str, *, logprobs: bool = False,
                    content: bool = True) -> None:
        """A delta event (`content` for the stream faults), padded unless the request turned that off."""
        event: JSON = {**members, "delta": delta}
        if logprobs:
            event["logprobs"] = []
        if self._obfuscate:
            event["obfuscation"] = obfuscation(self.sequence, delta)
        await self.send(kind, event, content=content)

    def _in_band_error(self, body: JSON) -> bytes:
        error = body.get("error") or {}
        code = error.get("code") or error.get("type")
        message = error.get("message") or "An error occurred while processing your request."
        if self._quirks:
            failed = self._frame.response("failed", error={"code": code, "message": message})
            return self._frame_event("response.failed", {"response": failed})
        return self._frame_event("error", {"code": code, "message": message, "param": error.get("param")})


async def stream_response(request: web.Request, frame: Frame, output: list[JSON], result: Answer,
                          keep: Callable[[JSON], None]) -> web.StreamResponse:
    """Stream the Response to `frame`'s turn, whose answer is `result` with these output items."""
    call = request[SIM_CALL]
    state = call.state
    options = frame.turn.body.get("stream_options") or {}
    stream = await SimStream.open(request)
    events = _Events(stream, frame, options.get("include_obfuscation") is not False, state.config.quirks)
    pending = frame.response("in_progress")
    await events.send("response.created", {"response": pending})
    await events.send("response.in_progress", {"response": pending})
    chunks = state.config.chunks
    for index, item in enumerate(output):
        where = {"item_id": item["id"], "output_index": index}
        await events.send("response.output_item.added", {"output_index": index, "item": _in_progress(item)})
        if item["type"] == "reasoning":
            await _summary(events, where, item, chunks)
        elif item["type"] == "web_search_call":
            for stage in ("in_progress", "searching", "completed"):
                await events.send(f"response.web_search_call.{stage}", where)
        elif item["type"] == "message":
            await _content(events, where, item["content"][0], chunks)
        elif item["type"] == "function_call":
            for fragment in split_even(item["arguments"], chunks):
                await events.delta("response.function_call_arguments.delta", where, fragment)
            await events.send("response.function_call_arguments.done",
                              {**where, "name": item["name"], "arguments": item["arguments"]})
        await events.send("response.output_item.done", {"output_index": index, "item": item})
    final = frame.final(state, output, result)
    keep(final)
    await events.send(f"response.{final['status']}", {"response": final})
    return await stream.finish()


def _in_progress(item: JSON) -> JSON:
    kind = item["type"]
    if kind == "reasoning":
        return {"id": item["id"], "type": "reasoning", "summary": []}
    if kind == "web_search_call":
        return {"id": item["id"], "type": kind, "status": "in_progress", "action": {"type": "search"}}
    if kind == "message":
        return {**item, "status": "in_progress", "content": []}
    return {**item, "status": "in_progress", "arguments": ""}


async def _summary(events: _Events, where: JSON, item: JSON, chunks: int) -> None:
    for summary_index, part in enumerate(item["summary"]):
        at = {**where, "summary_index": summary_index}
        await events.send("response.reasoning_summary_part.added", {**at, "part": {"type": "summary_text", "text": ""}})
        for piece in split_words(part["text"], chunks):
            await events.delta("response.reasoning_summary_text.delta", at, piece, content=False)
        await events.send("response.reasoning_summary_text.done", {**at, "text": part["text"]})
        await events.send("response.reasoning_summary_part.done", {**at, "part": part})


async def _content(events: _Events, where: JSON, part: JSON, chunks: int) -> None:
    at = {**where, "content_index": 0}
    if part["type"] == "refusal":
        await events.send("response.content_part.added", {**at, "part": {"type": "refusal", "refusal": ""}})
        for piece in split_words(part["refusal"], chunks):
            await events.delta("response.refusal.delta", at, piece)
        await events.send("response.refusal.done", {**at, "refusal": part["refusal"]})
    else:
        await events.send("response.content_part.added", {
            **at, "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}})
        for piece in split_words(part["text"], chunks):
            await events.delta("response.output_text.delta", at, piece, logprobs=True)
        for annotation_index, annotation in enumerate(part["annotations"]):
            await events.send("response.output_text.annotation.added",
                              {**at, "annotation_index": annotation_index, "annotation": annotation})
        await events.send("response.output_text.done", {**at, "text": part["text"], "logprobs": []})
    await events.send("response.content_part.done", {**at, "part": part})

