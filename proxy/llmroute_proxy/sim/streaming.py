"""The simulators' streamed answers: SSE framing and `SimStream`, which applies the faults
that strike inside a stream.

Nothing here may import `llmroute_proxy.server`: the simulators stand in for the outside world.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from llmroute_proxy.sim.faults import Fault, FaultKind
from llmroute_proxy.sim.runtime import SIM_CALL, SimCall, StreamStopped, close_connection, until_hung_up

# --- streaming ---------------------------------------------------------------------------------

def sse_data(payload: Any, end: bytes = b"\n\n") -> bytes:
    return b"data: " + orjson.dumps(payload) + end


def sse_event(name: str, payload: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


@dataclass(frozen=True, slots=True)
class StreamFraming:
    """How an API that carries another's stream events frames them (Bedrock: Anthropic's events in AWS
    event-stream frames). A handler sets it on its request (`STREAM_FRAMING`) before a dialect's stream
    handler runs: `frame` turns each SSE event it sends into the wire's bytes."""

    content_type: str
    frame: Callable[[bytes], bytes]
    in_band_error: Callable[[dict[str, Any]], bytes]


STREAM_FRAMING = web.RequestKey("llmroute_sim_stream_framing", StreamFraming)


class SimStream:
    """A streamed 200 answer that applies the request's stream fault as events are sent.

    `send(..., content=True)` marks an event that carries answer content (a text or argument
    fragment); break and error-event faults strike before the content event number `tokens + 1`.
    """

    def __init__(self, request: web.Request, response: web.StreamResponse, call: SimCall) -> None:
        self._request = request
        self._response = response
        self._call = call
        self._events = 0
        self._content = 0
        self.in_band_error: Callable[[dict[str, Any]], bytes] | None = None
        """How this stream's API frames an in-band error body (default: the dialect's way)."""
        self._frame: Callable[[bytes], bytes] | None = None

    @classmethod
    async def open(cls, request: web.Request, content_type: str = "text/event-stream") -> SimStream:
        call = request[SIM_CALL]
        framing = request.get(STREAM_FRAMING)
        if framing is not None:
            content_type = framing.content_type
        response = web.StreamResponse(status=200, headers={
            "Content-Type": content_type, "Cache-Control": "no-cache", **call.state.headers()})
        await response.prepare(request)
        stream = cls(request, response, call)
        if framing is not None:
            stream._frame, stream.in_band_error = framing.frame, framing.in_band_error
        if call.fault is not None and call.fault.kind is FaultKind.BREAK_BEFORE_FIRST_TOKEN:
            stream._cut()
        return stream

    async def send(self, event: bytes, *, content: bool = False) -> None:
        fault = self._call.fault
        if fault is not None:
            await self._apply(fault, content)
        await self._write(event if self._frame is None else self._frame(event))
        self._events += 1
        self._content += content

    async def _apply(self, fault: Fault, content: bool) -> None:
        state = self._call.state
        if fault.kind is FaultKind.SLOW_STREAM and self._events:
            await state.pause(fault.seconds)
            if state.closing.is_set():
                self._cut()
        if not content or self._content != fault.tokens:
            return
        if fault.kind is FaultKind.BREAK_AFTER_TOKENS:
            self._cut()
        if fault.kind is FaultKind.STALL_AFTER_TOKENS:
            await until_hung_up(self._request, state)
            self._cut()
        if fault.kind is FaultKind.ANTHROPIC_ERROR_EVENT:
            dialect = state.dialect
            body = dialect.error_body(fault.status or dialect.overloaded_status, fault.code, fault.message, fault)
            await self._write((self.in_band_error or dialect.in_band_error)(body))
            await self.finish()
            raise StreamStopped(self._response)

    async def _write(self, data: bytes) -> None:
        try:
            await self._response.write(data)
        except ConnectionError:
            raise StreamStopped(self._response) from None

    def _cut(self) -> None:
        close_connection(self._request)
        raise StreamStopped(self._response)

    async def finish(self) -> web.StreamResponse:
        try:
            await self._response.write_eof()
        except ConnectionError:
            pass
        return self._response
