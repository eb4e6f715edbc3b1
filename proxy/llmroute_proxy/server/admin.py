"""The admin plane (port 15401): probes, Prometheus scrape, the status JSON and its HTML page.

Read-only by design: there is no write endpoint, and `/status` is serialised so that a
`Secret` (a target's credential) can only ever appear as `***`, even when a status source
hands over table objects unfiltered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


STATUS_PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llmroute status</title>
<style>
:root { color-scheme:light dark; --bg:#f6f7f9; --card:#fff; --ink:#1c2330; --mute:#6b7585; --line:#e3e6eb;
  --ok:#1f9d55; --warn:#c27803; --bad:#d64545; --info:#3b7ddd; --bar:#e9ecf1;
  --mono:ui-monospace,SFMono-Regular,Menlo,monospace; }
@media (prefers-color-scheme: dark) { :root { --bg:#12151b; --card:#1a1f27; --ink:#e6e9ef; --mute:#8c96a6;
  --line:#2a313c; --bar:#262d38; } }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif; }
header { display:flex; flex-wrap:wrap; align-items:center; gap:10px 18px; padding:14px 24px;
  border-bottom:1px solid var(--line); background:var(--card); position:sticky; top:0; z-index:1; }
header h1 { font-size:17px; margin:0; letter-spacing:.2px; }
header h1 span { color:var(--info); }
.meta { display:flex; flex-wrap:wrap; gap:4px 16px; color:var(--mute); flex:1 1 0; min-width:0; }
.meta > div { white-space:nowrap; }
.meta b { color:var(--ink); font-weight:600; font-family:var(--mono); font-size:13px; }
.meta b.draining { color:var(--warn); }
#conn { margin-left:auto; flex-shrink:0; }
main { padding:20px 24px 40px; display:grid; gap:20px; max-width:1400px; margin:0 auto; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; overflow:hidden; min-width:0; }
section h2 { font-size:13px; text-transform:uppercase; letter-spacing:.6px; color:var(--mute); margin:0;
  padding:12px 16px; border-bottom:1px solid var(--line); }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:8px 12px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { font-weight:600; color:var(--mute); font-size:12px; }
tbody tr:last-child td { border-bottom:0; }
.num { text-align:right; font-variant-numeric:tabular-nums; }
td.wrap { white-space:normal; min-width:240px; max-width:320px; }
th:first-child, td:first-child { padding-left:16px; } th:last-child, td:last-child { padding-right:16px; }
td.fill { width:100%; max-width:0; min-width:12em; }
td.fill.chips { min-width:15em; }
td.chips { white-space:normal; }
.clip { display:block; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.mono { font-family:var(--mono); font-size:12.5px; }
.muted { color:var(--mute); }
.empty { padding:18px 16px; color:var(--mute); }
.pill { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px; font-weight:600;
  color:#fff; background:var(--mute); }
.pill.healthy, .pill.ok { background:var(--ok); } .pill.probing, .pill.cooling, .pill.warn { background:var(--warn); }
.pill.ejected, .pill.bad { background:var(--bad); } .pill.info { background:var(--info); }
.chip { display:inline-flex; max-width:100%; vertical-align:middle; margin:1px 4px 1px 0; padding:0 7px;
  border-radius:6px; font-size:12px; border:1px solid var(--line); white-space:nowrap; }
.chip.ok { border-color:var(--ok); } .chip.bad { border-color:var(--bad); }
.chip > span { min-width:0; overflow:hidden; text-overflow:ellipsis; }
.chip > :first-child { flex-shrink:0; max-width:100%; } .chip > .detail { color:var(--mute); }
.budget { padding:12px 16px; border-bottom:1px solid var(--line); } .budget:last-child { border-bottom:0; }
.budget .row { display:flex; justify-content:space-between; gap:4px 12px; margin-bottom:6px; flex-wrap:wrap; }
.nowrap { display:inline-block; white-space:nowrap; }
.track { position:relative; height:12px; border-radius:6px; background:var(--bar); overflow:hidden; }
.track .spent, .track .reserved { position:absolute; top:0; bottom:0; }
.track .spent { left:0; background:var(--ok); } .track .spent.some { min-width:3px; }
.track .spent.warn { background:var(--warn); } .track .spent.bad { background:var(--bad); }
.track .reserved { background:repeating-linear-gradient(45deg,var(--info) 0 4px,transparent 4px 8px); opacity:.7; }
[data-fit="lean"] .opt1, [data-fit="leaner"] .opt1, [data-fit="leaner"] .opt2 { display:none; }
[data-fit="cards"] table, [data-fit="cards"] tbody { display:block; }
[data-fit="cards"] thead { display:none; }
[data-fit="cards"] tr { display:flex; flex-wrap:wrap; align-items:baseline; gap:6px 16px; padding:10px 14px;
  border-bottom:1px solid var(--line); }
[data-fit="cards"] tr:last-child { border-bottom:0; }
[data-fit="cards"] tr::before, [data-fit="cards"] tr::after { content:""; flex-basis:100%; height:0; margin-top:-6px; }
[data-fit="cards"] tr::before { order:2; } [data-fit="cards"] tr::after { order:4; }
[data-fit="cards"] td { display:block; order:3; padding:0; border:0; min-width:0; max-width:100%; text-align:left;
  white-space:normal; }
[data-fit="cards"] td[data-label]::before { content:attr(data-label); display:block; white-space:nowrap;
  font:11px/1.5 system-ui,sans-serif; letter-spacing:.3px; text-transform:uppercase; color:var(--mute); }
#targets[data-fit="cards"] .c-id { order:0; flex:1 1 0; font-weight:600; overflow-wrap:anywhere; }
#targets[data-fit="cards"] .c-circuit { order:1; white-space:nowrap; }
#targets[data-fit="cards"] .c-meta { color:var(--mute); font-size:12.5px; }
#targets[data-fit="cards"] .c-meta + .c-meta { margin-left:-8px; }
#targets[data-fit="cards"] .c-meta + .c-meta::before { content:"\\00b7"; margin-right:8px; }
#targets[data-fit="cards"] .c-stat { order:5; flex:1 1 0; }
#targets[data-fit="cards"] .c-error { order:6; flex-basis:100%; }
#targets[data-fit="cards"] .c-error:empty { display:none; }
#targets[data-fit="cards"] .c-error .clip { white-space:normal; display:-webkit-box; -webkit-box-orient:vertical;
  -webkit-line-clamp:2; }
#decisions[data-fit="cards"] .c-time { order:0; }
#decisions[data-fit="cards"] .c-status { order:1; margin-left:auto; }
#decisions[data-fit="cards"] .c-latency, #decisions[data-fit="cards"] .c-cost { order:1; }
#decisions[data-fit="cards"] .c-why { flex:1 1 12em; }
#decisions[data-fit="cards"] .c-target, #decisions[data-fit="cards"] .c-chips { order:5; flex-basis:100%; }
#decisions[data-fit="cards"] tr.served-by-last-attempt .c-target, #decisions[data-fit="cards"] tr.unrouted .c-target,
#decisions[data-fit="cards"] tr.unrouted .c-chips { display:none; }
@media (max-width: 760px) {
  header { position:static; padding:12px 16px; }
  #conn { order:1; }
  .meta { order:2; flex-basis:100%; }
  main { padding:12px 12px 32px; gap:12px; }
}
</style>
</head>
<body>
<header>
  <h1><span>llm</span>route</h1>
  <div class="meta">
    <div>table <b id="version">&mdash;</b></div>
    <div>age <b id="age">&mdash;</b></div>
    <div>region <b id="region">&mdash;</b></div>
    <div>in flight <b id="inflight">&mdash;</b></div>
    <div>sidecar <b id="sidecar">&mdash;</b></div>
  </div>
  <span id="conn" class="pill">connecting</span>
</header>
<main>
  <section><h2>Targets</h2><div class="scroll" id="targets"><div class="empty">Loading&hellip;</div></div></section>
  <section><h2>Spend vs budget</h2><div id="budgets"><div class="empty">Loading&hellip;</div></div></section>
  <section><h2>Recent routing decisions</h2><div class="scroll" id="decisions">
    <div class="empty">Loading&hellip;</div></div></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, props, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v; else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const kid of kids.flat(Infinity)) if (kid !== null && kid !== undefined)
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return node;
}
const DASH = "\\u2014";
const has = (v) => v !== undefined && v !== null && v !== "";
const num = (v) => typeof v === "number" && isFinite(v);
const dash = (v) => has(v) ? String(v) : DASH;
function usd(v) {
  if (!num(v)) return DASH;
  if (v === 0) return "$0";
  const sign = v < 0 ? "-" : "", a = Math.abs(v);
  if (a >= 1) return sign + "$" + a.toFixed(2);
  const decimals = Math.min(20, 2 - Math.floor(Math.log10(a)));
  return sign + "$" + a.toFixed(decimals).replace(/(\\.\\d\\d\\d*?)0+$/, "$1");
}
const ms = (v) => num(v) ? (v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(1) + " ms") : DASH;
function percent(p) {
  if (!num(p)) return DASH;
  if (p === 0) return "0 %";
  if (p < 0.01) return "<0.01 %";
  return p.toFixed(p < 10 ? 2 : 1) + " %";
}
function share(p) {
  if (p === 0) return "0 %";
  return p < 0.1 ? "<0.1 %" : p.toFixed(1) + " %";
}
function ago(seconds) {
  if (!num(seconds)) return DASH;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}
const layout = (c) => (c.num ? " num" : "") + (c.opt ? " opt" + c.opt : "");
function table(columns, items, rowProps, empty) {
  if (!items.length) return el("div", {class: "empty"}, empty);
  const head = el("tr", {}, columns.map((c) => el("th", {class: layout(c)}, c.head)));
  const row = (item) => el("tr", rowProps(item), columns.map((c) =>
    el("td", {class: c.cls + layout(c), "data-label": c.label ? c.head : null}, c.cell(item))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, items.map(row)));
}
const pill = (level, text) => el("span", {class: "pill " + level}, text);
const statusLevel = (s) => !num(s) ? "" : s < 400 ? "ok" : s < 500 ? "warn" : "bad";
const TARGET_COLUMNS = [
  {head: "Target", cls: "c-id mono", cell: (t) => dash(t.id)},
  {head: "Circuit", cls: "c-circuit", cell: (t) => [pill(has(t.state) ? t.state : "", dash(t.state)),
    num(t.state_seconds_left) && t.state_seconds_left > 0 ? el("span", {class: "muted"}, " " + ago(t.state_seconds_left)) : null]},
  {head: "Provider", cls: "c-meta", opt: 2,
    cell: (t) => [dash(t.provider), has(t.type) ? el("span", {class: "muted"}, " (" + t.type + ")") : null]},
  {head: "Model", cls: "c-meta mono", opt: 1, cell: (t) => dash(t.model)},
  {head: "Region", cls: "c-meta", opt: 1, cell: (t) => dash(t.region)},
  {head: "In flight", cls: "c-stat", num: true, label: true, cell: (t) => dash(t.in_flight)},
  {head: "Latency", cls: "c-stat", num: true, label: true, cell: (t) => ms(t.latency_ms)},
  {head: "Errors", cls: "c-stat c-errors", num: true, label: true,
    cell: (t) => t.requests === 0 ? DASH : percent(num(t.error_ratio) ? t.error_ratio * 100 : null)},
  {head: "Requests", cls: "c-stat", num: true, label: true, cell: (t) => dash(t.requests)},
  {head: "Last error", cls: "c-error fill", label: true, cell: (t) => has(t.last_error)
    ? el("span", {class: "clip muted", title: String(t.last_error)}, String(t.last_error)) : null},
];
function renderTargets(list) {
  return table(TARGET_COLUMNS, list, (t) => ({"data-target": t.id || ""}), "No targets: no table loaded yet.");
}
function renderBudget(b) {
  const limit = num(b.limit_usd) ? b.limit_usd : 0;
  const spent = num(b.spent_usd) ? b.spent_usd : 0;
  const reserved = num(b.reserved_usd) ? b.reserved_usd : 0;
  const used = num(b.percent) ? b.percent : (limit > 0 ? spent / limit * 100 : 0);
  const spentW = Math.min(100, limit > 0 ? spent / limit * 100 : (spent > 0 ? 100 : 0));
  const resW = Math.min(100 - spentW, limit > 0 ? reserved / limit * 100 : 0);
  const level = used >= 100 ? "bad" : used >= 80 ? "warn" : "";
  const left = num(b.period_end) ? b.period_end - Date.now() / 1000 : null;
  return el("div", {class: "budget", "data-route": b.route || ""},
    el("div", {class: "row"},
      el("div", {}, el("b", {}, dash(b.route)), el("span", {class: "muted"},
        " \\u00b7 " + dash(b.period) + (has(b.on_exceeded) ? " \\u00b7 on exceeded: " + b.on_exceeded : ""))),
      el("div", {class: "mono"}, el("span", {class: "nowrap"}, usd(spent) + " of " + usd(limit) + " (" + share(used) + ")"),
        reserved > 0 ? [" ", el("span", {class: "muted nowrap"}, "+ " + usd(reserved) + " reserved")] : null,
        num(left) ? [" ", el("span", {class: "muted nowrap"}, "\\u00b7 resets in " + ago(left))] : null)),
    el("div", {class: "track", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
               "aria-valuenow": used.toFixed(1), "aria-valuetext": share(used)},
      el("div", {class: "spent " + level + (spent > 0 ? " some" : ""), style: "width:" + spentW + "%"}),
      el("div", {class: "reserved", style: "left:" + spentW + "%;width:" + resW + "%"})));
}
function renderBudgets(list) {
  if (!list.length) return el("div", {class: "empty"}, "No route has a budget.");
  return el("div", {}, list.map(renderBudget));
}
function attemptChip(a) {
  const ok = a.reason === "ok" || (num(a.status) && a.status < 300);
  const label = dash(a.target) + (has(a.status) ? " " + a.status : "");
  const detail = ok ? null : ": " + dash(a.reason);
  return el("span", {class: "chip " + (ok ? "ok" : "bad"), title: label + (detail || "")},
    el("span", {}, label), detail && el("span", {class: "detail"}, detail));
}
const attempts = (d) => Array.isArray(d.attempts) ? d.attempts : [];
const DECISION_COLUMNS = [
  {head: "Time", cls: "c-time muted", cell: (d) => num(d.at) ? new Date(d.at * 1000).toLocaleTimeString() : DASH},
  {head: "Route", cls: "c-route", cell: (d) => dash(d.route)},
  {head: "Model \\u2192 tier", cls: "c-model mono", cell: (d) => [dash(d.model), " \\u2192 ", el("b", {}, dash(d.tier)),
    has(d.experiment) ? [" ", pill("info", d.experiment)] : null]},
  {head: "Why", cls: "c-why wrap", cell: (d) => [has(d.rule) ? el("span", {class: "mono"}, d.rule + " ") : null,
    el("span", {class: "muted"}, has(d.reason) ? d.reason : "")]},
  {head: "Target", cls: "c-target mono", opt: 2, cell: (d) => dash(d.target)},
  {head: "Attempts", cls: "c-chips chips fill",
    cell: (d) => attempts(d).length ? attempts(d).map(attemptChip) : el("span", {class: "muted"}, DASH)},
  {head: "Status", cls: "c-status", cell: (d) => pill(statusLevel(d.status), dash(d.status))},
  {head: "Latency", cls: "c-latency", num: true, cell: (d) => ms(d.latency_ms)},
  {head: "Cost", cls: "c-cost mono", num: true, cell: (d) => usd(d.cost_usd)},
];
function decisionRow(d) {
  const tried = attempts(d);
  if (!tried.length && !has(d.target)) return {class: "unrouted"};
  const shown = has(d.target) && tried.length > 0 && tried[tried.length - 1].target === d.target;
  return {class: shown ? "served-by-last-attempt" : null};
}
function renderDecisions(list) {
  return table(DECISION_COLUMNS, list, decisionRow, "No requests yet.");
}
function render(s) {
  const t = s.table || {};
  $("version").textContent = dash(t.version);
  $("age").textContent = num(t.age_seconds) ? ago(t.age_seconds)
    : num(t.loaded_at) ? ago(Date.now() / 1000 - t.loaded_at) : DASH;
  $("region").textContent = dash(t.region);
  $("inflight").textContent = dash(s.in_flight);
  $("sidecar").textContent = dash(s.version) + (s.draining ? " (draining)" : "");
  $("sidecar").className = s.draining ? "draining" : "";
  $("targets").replaceChildren(renderTargets(Array.isArray(s.targets) ? s.targets : []));
  $("budgets").replaceChildren(renderBudgets(Array.isArray(s.budgets) ? s.budgets : []));
  $("decisions").replaceChildren(renderDecisions(Array.isArray(s.decisions) ? s.decisions : []));
  fitAll();
}
const FITS = ["full", "lean", "leaner", "cards"];
function fit(box) {
  for (const level of FITS) {
    box.dataset.fit = level;
    if (box.scrollWidth <= box.clientWidth) return;
  }
}
const fitAll = () => document.querySelectorAll(".scroll").forEach(fit);
function setConn(ok) {
  const c = $("conn");
  c.className = "pill " + (ok ? "ok" : "bad");
  c.textContent = ok ? "live" : "disconnected";
}
async function tick() {
  try {
    const r = await fetch("status", {cache: "no-store"});
    if (!r.ok) throw new Error(r.status);
    render(await r.json() || {});
    setConn(true);
  } catch (e) {
    setConn(false);
  }
}
window.addEventListener("resize", fitAll);
tick();
setInterval(tick, 2000);
</script>
</body>
</html>
"""
