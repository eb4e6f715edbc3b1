"""The simulators' shared runtime: app state, stats, dialects, the fault middleware and the control API.

Each simulator is a `web.Application` made by `build_app` with a `Dialect`, the part that
differs per API (auth, error shapes, the in-band stream error). The middleware records every
request, applies the scripted fault, checks the key and only then calls the API handler.

Nothing here may import `llmroute_proxy.server`: the simulators stand in for the outside world.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from llmroute_proxy.sim.faults import STREAM_KINDS, Fault, FaultKind, FaultPlan

SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key"})
HANG_POLL_S = 0.05


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
    answer_bytes: int = 0
    """Answers are padded to at least this many UTF-8 bytes (0: short answers)."""
    quirks: bool = False
    """Answer in the real API's untidy but valid shapes (keep-alive pings, null fields, a finish or
    usage on a chunk of its own, parallel tool calls, …; each simulator's docstring lists its own)
    rather than the tidiest form: tests run both, so neither a parser nor a translator may depend
    on the tidy one."""
    service_tier: str | None = None
    """The tier a request that leaves it to the provider is served at: OpenAI's `auto` or none (the
    project's default tier, which its owner may set to `priority`), Anthropic's `auto` (`priority`
    while the organisation's committed Priority Tier capacity lasts). None: each API's ordinary tier
    (`default`, `standard`). A request that names an OpenAI tier is served at it; Anthropic's
    `standard_only` at `standard`."""
    priority_capacity: bool = True
    """Whether a request that asks for Priority capacity gets it (Gemini's `serviceTier: priority`). False:
    it ran out, and the request is served at the ordinary tier, which its answer reports."""
    compatible: str = ""
    """The OpenAI-compatible server whose chat streams the OpenAI simulator answers in (one of
    `COMPATIBLE_SERVERS`; "": OpenAI's own). Each sends its server's shapes always, as the server does."""
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.compatible and self.compatible not in COMPATIBLE_SERVERS:
            raise ValueError(f"compatible must be one of: {', '.join(COMPATIBLE_SERVERS)}")


COMPATIBLE_SERVERS = ("gemini", "openrouter", "vllm")
"""The OpenAI-compatible servers whose stream shapes the OpenAI simulator can send (`sim/openai.py` says
which each sends, and where they were seen)."""


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

    def error_payload(self, body: dict[str, Any], path: str, quirks: bool) -> Any:
        """The error body as it goes on the wire for a request to `path` (some APIs wrap it)."""
        return body

    async def prompt_blocked(self, request: web.Request) -> web.StreamResponse:
        """How this API refuses a prompt its safety filter blocks (`FaultKind.PROMPT_BLOCKED`)."""
        return request[SIM_CALL].state.error(400, path=request.path)

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
        self._tag = f"{zlib.crc32(config.name.encode()):08x}"

    def new_id(self, prefix: str) -> str:
        """Ids unique across simulators (as a real provider's are: an id one account made is unknown to
        another, never another response of its own) and stable from run to run."""
        return f"{prefix}sim{self._tag}{next(self._serial):012d}"

    def headers(self) -> dict[str, str]:
        dialect = self.dialect
        name = dialect.request_id_header
        return {name: self.new_id("req_"), **dialect.static_headers} if name else {**dialect.static_headers}

    def json(self, body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                            headers={**self.headers(), **(headers or {})})

    def error(self, status: int, *, code: str | None = None, message: str | None = None,
              fault: Fault | None = None, path: str = "") -> web.Response:
        headers = self.dialect.error_headers(fault) if fault is not None else None
        body = self.dialect.error_body(status, code, message, fault)
        return self.json(self.dialect.error_payload(body, path, self.config.quirks), status, headers)

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
    raw: bytes = b""  # the body as it came (a signature covers its bytes)


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
    if fault is not None and fault.echo_key:
        fault = fault.echoing(presented_key(request))
    if fault is not None and fault.kind is FaultKind.IGNORE_STREAM and isinstance(body, dict):
        body = {name: value for name, value in body.items() if name not in ("stream", "stream_options")}
    request[SIM_CALL] = SimCall(state, body, fault, raw)
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


def presented_key(request: web.Request) -> str:
    """The credential the request carries, however its API sends it ("" when none)."""
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        if name in request.headers:
            return request.headers[name]
    bearer = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer "):
        return bearer.removeprefix("Bearer ")
    return request.query.get("key", "")


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
        await until_hung_up(request, state)
        reset_connection(request)
        return web.Response()
    elif fault.kind is FaultKind.RESET:
        reset_connection(request)
        return web.Response()
    elif fault.kind in (FaultKind.STATUS, FaultKind.ERROR_AS_200):
        assert fault.status is not None
        error = state.error(fault.status, code=fault.code, message=fault.message, fault=fault, path=request.path)
        if fault.kind is FaultKind.ERROR_AS_200:
            error.set_status(200)
        return error
    elif fault.kind is FaultKind.PROMPT_BLOCKED:
        return await state.dialect.prompt_blocked(request)
    return None


async def until_hung_up(request: web.Request, state: SimState) -> None:
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
                           message=fault.message, fault=fault, path=request.path)
    if fault.kind is FaultKind.SLOW_STREAM or not isinstance(response, web.Response):
        return response
    body = response.body if isinstance(response.body, bytes) else b""
    cut = web.StreamResponse(status=response.status, headers=response.headers)
    cut.content_length = len(body)
    await cut.prepare(request)
    if fault.kind in (FaultKind.BREAK_AFTER_TOKENS, FaultKind.STALL_AFTER_TOKENS):
        await cut.write(body[: len(body) // 2])
    if fault.kind is FaultKind.STALL_AFTER_TOKENS:
        await until_hung_up(request, state)
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


class SimOptions(TypedDict, total=False):
    """What every simulator's factory takes beyond its API key (`SimConfig` says what each means)."""

    name: str
    faults: FaultPlan | None
    chunks: int
    cached_tokens: int
    models: Sequence[str]
    embedding_dims: int
    answer_bytes: int
    quirks: bool
    service_tier: str | None
    priority_capacity: bool
    compatible: str
    clock: Callable[[], float]


_DEFAULTS = SimConfig("")


def sim_app(api_key: str | None, options: SimOptions, dialect: Dialect, *, name: str,
            models: Sequence[str]) -> web.Application:
    """A simulator factory's app: its `SimConfig` from `options` over the factory's own `name` and
    `models`, and the shared plumbing; the caller adds its API's routes."""
    config = SimConfig(options.get("name", name), api_key, options.get("chunks", _DEFAULTS.chunks),
                       options.get("cached_tokens", _DEFAULTS.cached_tokens), tuple(options.get("models", models)),
                       options.get("embedding_dims", _DEFAULTS.embedding_dims),
                       answer_bytes=options.get("answer_bytes", _DEFAULTS.answer_bytes),
                       quirks=options.get("quirks", _DEFAULTS.quirks),
                       service_tier=options.get("service_tier", _DEFAULTS.service_tier),
                       priority_capacity=options.get("priority_capacity", _DEFAULTS.priority_capacity),
                       compatible=options.get("compatible", _DEFAULTS.compatible),
                       clock=options.get("clock", _DEFAULTS.clock))
    return build_app(config, options.get("faults"), dialect)


def sim_state(app: web.Application) -> SimState:
    return app[SIM_STATE]
