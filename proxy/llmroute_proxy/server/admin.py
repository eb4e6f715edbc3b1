"""The admin plane (port 15401): probes, Prometheus scrape, the status JSON and its HTML page.

Read-only by design: there is no write endpoint, and `/status` is serialised so that a
`Secret` (a target's credential) can only ever appear as `***`, even when a status source
hands over table objects unfiltered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypedDict

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from llmroute_proxy.server.telemetry import Telemetry
from llmroute_proxy.table import Secret


class TableStatus(TypedDict, total=False):
    version: str
    source: str | None  # file | operator | persisted
    pushed_version: str | None  # the operator's content hash of the pushed table (cluster mode)
    region: str
    loaded_at: float  # epoch seconds
    age_seconds: float
    routes: list[dict[str, Any]]  # {name, tiers: {tier: [target ids]}, default_tier}


class OperatorStatus(TypedDict, total=False):
    url: str
    state: str  # connecting | connected | disconnected
    since: float  # epoch seconds of the last state change
    attempts: int  # failed connects since the last successful one
    last_error: str | None
    lease: str  # none | held | expired


class TargetStatus(TypedDict, total=False):
    id: str  # "{provider}/{model}@{region}"
    provider: str
    type: str  # openai | anthropic | gemini | azure-openai | openai-compatible
    model: str
    region: str
    host: str  # the URL's host, never the URL's credentials or query
    state: str  # healthy | probing | cooling | ejected
    state_seconds_left: float
    consecutive_failures: int
    ejections: int
    last_failure: str | None  # a FailureKind value
    in_flight: int
    latency_ms: float | None
    requests: int
    failures: int
    error_ratio: float  # 0..1
    last_error: str | None


class BudgetStatusDoc(TypedDict, total=False):
    route: str
    period: str  # hour | day | month
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    percent: float  # spent / limit × 100
    on_exceeded: str  # alert | reject | downgrade:TIER
    period_end: float  # epoch seconds


class AttemptStatus(TypedDict, total=False):
    target: str
    status: int | None
    reason: str


class DecisionStatus(TypedDict, total=False):
    at: float  # epoch seconds
    route: str
    model: str  # what the client asked for
    tier: str
    rule: str | None
    reason: str  # why this tier
    experiment: str | None
    target: str | None
    attempts: list[AttemptStatus]
    status: int
    latency_ms: float
    cost_usd: float | None


class StatusDocument(TypedDict, total=False):
    """What `/status` serves and the page renders; every field may be missing or null."""

    version: str  # the sidecar's version
    table: TableStatus | None
    operator: OperatorStatus | None  # cluster mode only
    draining: bool
    in_flight: int
    targets: list[TargetStatus]
    budgets: list[BudgetStatusDoc]
    decisions: list[DecisionStatus]  # newest first


StatusSource = Callable[[], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class _Admin:
    status: StatusSource
    telemetry: Telemetry
    ready: Callable[[], bool]


ADMIN = web.AppKey("admin", _Admin)

# The page is a static file beside this module: it reads /status with fetch() and renders it.
STATUS_PAGE = resources.files(__package__).joinpath("status_page.html").read_bytes()

_NO_STORE = {"Cache-Control": "no-store"}
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
# Probes and the Prometheus scrape arrive with the pod IP as Host and reveal nothing sensitive, so they
# answer any Host; the status JSON and its page do not, so a DNS-rebinding page cannot read them.
_HOST_CHECKED_PATHS = frozenset({"/status", "/"})


def host_name(host_header: str) -> str:
    """The name part of a Host header, lower-cased, without the port (`[::1]:15401` -> `[::1]`)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[:host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _host_guard(allowed: frozenset[str]) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _HOST_CHECKED_PATHS and host_name(request.headers.get("Host", "")) not in allowed:
            return web.Response(status=403, headers=_NO_STORE,
                                text="forbidden: the admin status is served to loopback Host names only\n")
        return await handler(request)
    return guard


def admin_app(status: StatusSource, telemetry: Telemetry, ready: Callable[[], bool],
              extra_hosts: frozenset[str] = frozenset()) -> web.Application:
    allowed = LOOPBACK_HOSTS | {host_name(h) for h in extra_hosts}
    app = web.Application(middlewares=[_host_guard(allowed)])
    app[ADMIN] = _Admin(status, telemetry, ready)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status_json)
    app.router.add_get("/", page)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers=_NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    if request.app[ADMIN].ready():
        return web.Response(text="ready\n", headers=_NO_STORE)
    return web.Response(status=503, text="not ready: no routing table loaded yet, or shutting down\n",
                        headers=_NO_STORE)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[ADMIN].telemetry.prometheus_text()
    return web.Response(body=body, headers={**_NO_STORE, "Content-Type": content_type})


async def status_json(request: web.Request) -> web.Response:
    body = orjson.dumps(request.app[ADMIN].status(), default=_redacted,
                        option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, headers={**_NO_STORE, "Content-Type": "application/json"})


async def page(request: web.Request) -> web.Response:
    return web.Response(body=STATUS_PAGE, headers=_PAGE_HEADERS)


def _redacted(value: object) -> object:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)

