"""The simulators' shared runtime: app state, the fault middleware, streaming, and a runner.

Each simulator is a `web.Application` made by `build_app` with a `Dialect`, the part that
differs per API (auth, error shapes, the in-band stream error). The middleware records every
request, applies the scripted fault, checks the key and only then calls the API handler;
`SimStream` applies the faults that strike inside a stream. `SimServer` runs an app on a real
loopback port and can stop listening and resume on the same port, so callers see refused and
dropped connections exactly as they would from a provider that is down.

Nothing here may import `llmroute_proxy.server`: the simulators stand in for the outside world.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from llmroute_proxy.sim.faults import STREAM_KINDS, Fault, FaultKind, FaultPlan

SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key"})
HANG_POLL_S = 0.05


# --- deterministic answers (pure) -------------------------------------------------------------

def count_tokens(text: str) -> int:
    """The simulators' tokenizer: words × 1.3, rounded, at least 1."""
    return max(1, round(len(text.split()) * 1.3))


def reply_text(name: str, model: str, said: str) -> str:
    return f"[{name} {model}] You said: {said[:60]}"


def tool_reply_text(name: str, model: str, result: str) -> str:
    return f"[{name} {model}] Tool said: {result[:60]}"


def fit_tokens(text: str, limit: int | None) -> tuple[str, bool]:
    """Cut `text` on a word boundary to at most `limit` tokens; True when it was cut."""
    if limit is None or count_tokens(text) <= limit:
        return text, False
    words = text.split(" ")
    keep = len(words)
    while keep > 1 and count_tokens(" ".join(words[:keep])) > limit:
        keep -= 1
    return " ".join(words[:keep]), True


def split_words(text: str, count: int) -> list[str]:
    """Split on spaces into at most `count` pieces that concatenate back to `text`."""
    words = text.split(" ")
    count = max(1, min(count, len(words)))
    base, extra = divmod(len(words), count)
    pieces: list[str] = []
    start = 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        pieces.append(" ".join(words[start:end]) + (" " if end < len(words) else ""))
        start = end
    return pieces


def split_even(text: str, count: int) -> list[str]:
    """Split into at most `count` contiguous pieces of near-equal length (tool-argument fragments)."""
    count = max(1, min(count, len(text)))
    size = -(-len(text) // count)
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def tool_arguments(schema: Any) -> dict[str, Any]:
    """Arguments for a tool call: every required property, strings "sim", numbers 1, booleans true."""
    if not isinstance(schema, Mapping):
        return {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    if not isinstance(required, list):
        return {}
    return {name: _sample_value(properties.get(name)) for name in required if isinstance(name, str)}


def _sample_value(schema: Any) -> Any:
    if not isinstance(schema, Mapping):
        return "sim"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), "string")
    kind = kind.lower() if isinstance(kind, str) else "string"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return tool_arguments(schema)
    return "sim"


def embedding_vector(model: str, text: str, dims: int) -> list[float]:
    """A unit vector derived from a hash of (model, text): equal inputs, equal vectors."""
    seed = hashlib.sha256(f"{model}\0{text}".encode()).digest()
    raw: list[float] = []
    block = 0
    while len(raw) < dims:
        digest = hashlib.sha256(seed + block.to_bytes(4, "little")).digest()
        raw.extend((byte - 127.5) / 127.5 for byte in digest)
        block += 1
    raw = raw[:dims]
    norm = sum(value * value for value in raw) ** 0.5 or 1.0
    return [value / norm for value in raw]


# --- state, stats, dialects --------------------------------------------------------------------

@dataclass(frozen=True)
class SimConfig:
    name: str
    api_key: str | None = field(default=None, repr=False)
    chunks: int = 8
    """How many content chunks a streamed answer is split into (at most one per word)."""
    cached_tokens: int = 0
    """A cached prompt prefix reported on every answer (on top of the counted prompt)."""
    models: tuple[str, ...] = ()
    embedding_dims: int = 16
    clock: Callable[[], float] = time.time


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with credentials replaced by a short fingerprint: comparable, never shown."""
    return {str(name): (_fingerprint(value) if name.lower() in SECRET_HEADERS else value)
            for name, value in headers.items()}


def _fingerprint(value: str) -> str:
    return f"<redacted sha256:{hashlib.sha256(value.encode()).hexdigest()[:8]}>"


@dataclass(frozen=True, repr=False)
class RecordedRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: Any
    """The parsed JSON body, None when the body was empty or not JSON."""
    raw: bytes

    def __repr__(self) -> str:
        return f"RecordedRequest({self.method} {self.path}, {len(self.raw)} bytes)"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": redact(self.query) | ({"key": _fingerprint(self.query["key"])} if "key" in self.query else {}),
            "headers": redact(self.headers),
            "body": self.body,
        }


class SimStats:
    """What the simulator was asked: counts per path and the last request (per path too)."""

    def __init__(self) -> None:
        self.by_path: Counter[str] = Counter()
        self.last: RecordedRequest | None = None
        self.last_by_path: dict[str, RecordedRequest] = {}

    @property
    def total(self) -> int:
        return self.by_path.total()

    def record(self, request: RecordedRequest) -> None:
        self.by_path[request.path] += 1
        self.last = request
        self.last_by_path[request.path] = request

    def reset(self) -> None:
        self.by_path.clear()
        self.last = None
        self.last_by_path.clear()

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_path": dict(self.by_path),
            "last": None if self.last is None else self.last.to_json(),
        }


class Dialect:
    """What differs per provider API in the shared plumbing."""

    overloaded_status: ClassVar[int] = 503
    request_id_header: ClassVar[str | None] = None
    static_headers: ClassVar[Mapping[str, str]] = {}
    """Sent on every answer, e.g. rate-limit headers."""

    def authorized(self, request: web.Request, api_key: str) -> bool:
        raise NotImplementedError

    def unauthorized(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    def error_body(self, status: int, code: str | None, message: str | None,
                   fault: Fault | None) -> dict[str, Any]:
        raise NotImplementedError

    def in_band_error(self, body: dict[str, Any]) -> bytes:
        """The error event of a stream that already answered 200."""
        raise NotImplementedError

    def error_headers(self, fault: Fault) -> dict[str, str]:
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["retry-after"] = _seconds_text(fault.retry_after)
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        return headers


def _seconds_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class SimState:
    def __init__(self, config: SimConfig, faults: FaultPlan, dialect: Dialect) -> None:
        self.config = config
        self.faults = faults
        self.dialect = dialect
        self.stats = SimStats()
        self.closing = asyncio.Event()
        self._serial = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        """Ids unique within this simulator and stable from run to run."""
        return f"{prefix}sim{next(self._serial):012d}"

    def headers(self) -> dict[str, str]:
        dialect = self.dialect
        name = dialect.request_id_header
        return {name: self.new_id("req_"), **dialect.static_headers} if name else {**dialect.static_headers}

    def json(self, body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                            headers={**self.headers(), **(headers or {})})

    def error(self, status: int, *, code: str | None = None, message: str | None = None,
              fault: Fault | None = None) -> web.Response:
        headers = self.dialect.error_headers(fault) if fault is not None else None
        return self.json(self.dialect.error_body(status, code, message, fault), status, headers)

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the app shuts down."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self.closing.wait(), seconds)
        except TimeoutError:
            pass


SIM_STATE = web.AppKey("llmroute_sim_state", SimState)


@dataclass(frozen=True, slots=True)
class SimCall:
    """One request as the handlers see it: its parsed body and the fault it drew."""

    state: SimState
    body: Any
    fault: Fault | None


SIM_CALL = web.RequestKey("llmroute_sim_call", SimCall)


# --- the middleware and the control API --------------------------------------------------------

class StreamStopped(Exception):
    """Raised inside a handler when its response ended early (fault or client gone)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("stream stopped")
        self.response = response


@web.middleware
async def _sim_middleware(
    request: web.Request, handler: Callable[[web.Request], Any],
) -> web.StreamResponse:
    if request.path.startswith("/_sim/"):
        response: web.StreamResponse = await handler(request)
        return response
    state = request.app[SIM_STATE]
    raw = await request.read()
    body = _parse_json(raw)
    state.stats.record(RecordedRequest(request.method, request.path, dict(request.query),
                                       request.headers, body, raw))
    fault = state.faults.take(request.path)
    request[SIM_CALL] = SimCall(state, body, fault)
    try:
        early = await _before_handler(request, state, fault)
        if early is not None:
            return early
        key = state.config.api_key
        if key is not None and not state.dialect.authorized(request, key):
            return state.dialect.unauthorized(request)
        response = await handler(request)
        if fault is not None and fault.kind in STREAM_KINDS and not response.prepared:
            return await _fault_plain_response(request, state, fault, response)
        return response
    except StreamStopped as stopped:
        return stopped.response


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


async def _before_handler(request: web.Request, state: SimState,
                          fault: Fault | None) -> web.StreamResponse | None:
    if fault is None:
        return None
    if fault.kind is FaultKind.LATENCY:
        await state.pause(fault.seconds)
    elif fault.kind is FaultKind.HANG:
        await _hang(request, state)
        reset_connection(request)
        return web.Response()
    elif fault.kind is FaultKind.RESET:
        reset_connection(request)
        return web.Response()
    elif fault.kind is FaultKind.STATUS:
        assert fault.status is not None
        return state.error(fault.status, code=fault.code, message=fault.message, fault=fault)
    return None


async def _hang(request: web.Request, state: SimState) -> None:
    """Wait until the client hangs up or the app shuts down (aiohttp does not cancel handlers)."""
    while not state.closing.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await state.pause(HANG_POLL_S)


async def _fault_plain_response(request: web.Request, state: SimState, fault: Fault,
                                response: web.StreamResponse) -> web.StreamResponse:
    """Stream faults on a non-streamed answer: an error for the error event, a cut body for breaks."""
    if fault.kind is FaultKind.ANTHROPIC_ERROR_EVENT:
        return state.error(fault.status or state.dialect.overloaded_status, code=fault.code,
                           message=fault.message, fault=fault)
    if fault.kind is FaultKind.SLOW_STREAM or not isinstance(response, web.Response):
        return response
    body = response.body if isinstance(response.body, bytes) else b""
    cut = web.StreamResponse(status=response.status, headers=response.headers)
    cut.content_length = len(body)
    await cut.prepare(request)
    if fault.kind is FaultKind.BREAK_AFTER_TOKENS:
        await cut.write(body[: len(body) // 2])
    close_connection(request)
    return cut


def close_connection(request: web.Request) -> None:
    """End the connection after what was written (FIN): a body cut short."""
    transport = request.transport
    if transport is not None:
        transport.close()


def reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP RST: no response at all."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def _post_faults(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    try:
        state.faults.apply_json(_parse_json(await request.read()))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"faults": state.faults.describe()})


async def _delete_faults(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    state.faults.clear()
    return web.json_response({"faults": state.faults.describe()})


async def _get_stats(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    return web.json_response({**state.stats.to_json(), "faults": state.faults.describe()},
                             dumps=lambda value: orjson.dumps(value).decode())


async def _delete_stats(request: web.Request) -> web.Response:
    request.app[SIM_STATE].stats.reset()
    return web.json_response({"total": 0})


async def _on_shutdown(app: web.Application) -> None:
    app[SIM_STATE].closing.set()


def build_app(config: SimConfig, faults: FaultPlan | None, dialect: Dialect) -> web.Application:
    """An app with the shared plumbing; the caller adds its API's routes."""
    app = web.Application(middlewares=[_sim_middleware])
    app[SIM_STATE] = SimState(config, faults if faults is not None else FaultPlan(), dialect)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_post("/_sim/faults", _post_faults)
    app.router.add_delete("/_sim/faults", _delete_faults)
    app.router.add_get("/_sim/stats", _get_stats)
    app.router.add_delete("/_sim/stats", _delete_stats)
    return app


def sim_state(app: web.Application) -> SimState:
    return app[SIM_STATE]


# --- streaming ---------------------------------------------------------------------------------

def sse_data(payload: Any, end: bytes = b"\n\n") -> bytes:
    return b"data: " + orjson.dumps(payload) + end


def sse_event(name: str, payload: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


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

    @classmethod
    async def open(cls, request: web.Request, content_type: str = "text/event-stream") -> SimStream:
        call = request[SIM_CALL]
        response = web.StreamResponse(status=200, headers={
            "Content-Type": content_type, "Cache-Control": "no-cache", **call.state.headers()})
        await response.prepare(request)
        stream = cls(request, response, call)
        if call.fault is not None and call.fault.kind is FaultKind.BREAK_BEFORE_FIRST_TOKEN:
            stream._cut()
        return stream

    async def send(self, event: bytes, *, content: bool = False) -> None:
        fault = self._call.fault
        if fault is not None:
            await self._apply(fault, content)
        await self._write(event)
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
        if fault.kind is FaultKind.ANTHROPIC_ERROR_EVENT:
            dialect = state.dialect
            body = dialect.error_body(fault.status or dialect.overloaded_status, fault.code, fault.message, fault)
            await self._write(dialect.in_band_error(body))
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


# --- the runner --------------------------------------------------------------------------------

class SimServer:
    """A simulator on a real loopback port that can refuse connections and come back."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self._site: web.TCPSite | None = None
        self.host = host
        self.port = port

    @classmethod
    async def start(cls, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> SimServer:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        server = cls(runner, host, port)
        try:
            await server.resume()
        except BaseException:
            await runner.cleanup()
            raise
        return server

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def app(self) -> web.Application:
        return self._runner.app

    @property
    def listening(self) -> bool:
        return self._site is not None

    async def stop_listening(self) -> None:
        """The provider goes down: the port refuses connections and open ones are dropped,
        keep-alive connections in a client's pool and requests in flight alike."""
        if self._site is None:
            return
        await self._site.stop()
        self._site = None
        if self._runner.server is not None:
            for connection in self._runner.server.connections:
                connection.force_close()

    async def resume(self) -> None:
        """Listen again, on the same port."""
        if self._site is not None:
            return
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._site = site
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._site = None
        await self._runner.cleanup()

    async def __aenter__(self) -> SimServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def main(argv: list[str] | None = None) -> None:
    """Run one simulator until interrupted (for benchmarks and manual runs), e.g. arguments
    `openai --port 9001 --api-key-env SIM_KEY`; a CLI subcommand or `sim/__main__.py` can call this."""
    from llmroute_proxy import sim

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kind", choices=("openai", "azure-openai", "anthropic", "gemini"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key-env", help="environment variable holding the expected API key")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--cached-tokens", type=int, default=0)
    args = parser.parse_args(argv)
    factories: dict[str, Callable[..., web.Application]] = {
        "openai": sim.openai_app, "azure-openai": sim.azure_openai_app, "anthropic": sim.anthropic_app,
        "gemini": sim.gemini_app}
    factory = factories[args.kind]
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    app = factory(api_key, chunks=args.chunks, cached_tokens=args.cached_tokens)

    async def serve() -> None:
        server = await SimServer.start(app, args.host, args.port)
        print(f"sim-{args.kind} listening on {server.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass

