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

from llmroute_proxy.server.telemetry import Telemetry
from llmroute_proxy.table import Secret


class TableStatus(TypedDict, total=False):
    version: str
    region: str
    loaded_at: float  # epoch seconds
    age_seconds: float
    routes: list[dict[str, Any]]  # {name, tiers: {tier: [target ids]}, default_tier}


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


def admin_app(status: StatusSource, telemetry: Telemetry, ready: Callable[[], bool]) -> web.Application:
    app = web.Application()
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
    return web.Response(status=503, text="no routing table loaded\n", headers=_NO_STORE)


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
:root { --bg:#f6f7f9; --card:#fff; --ink:#1c2330; --mute:#6b7585; --line:#e3e6eb; --ok:#1f9d55;
  --warn:#d98a04; --bad:#d64545; --info:#3b7ddd; --bar:#e9ecf1; --mono:ui-monospace,SFMono-Regular,Menlo,monospace; }
@media (prefers-color-scheme: dark) { :root { --bg:#12151b; --card:#1a1f27; --ink:#e6e9ef; --mute:#8c96a6;
  --line:#2a313c; --bar:#262d38; } }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif; }
header { display:flex; flex-wrap:wrap; align-items:center; gap:10px 18px; padding:14px 24px;
  border-bottom:1px solid var(--line); background:var(--card); position:sticky; top:0; z-index:1; }
header h1 { font-size:17px; margin:0; letter-spacing:.2px; }
header h1 span { color:var(--info); }
.meta { display:flex; flex-wrap:wrap; gap:6px 16px; color:var(--mute); }
.meta b { color:var(--ink); font-weight:600; font-family:var(--mono); font-size:13px; }
#conn { margin-left:auto; }
main { padding:20px 24px 40px; display:grid; gap:20px; max-width:1400px; margin:0 auto; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; overflow:hidden; }
section h2 { font-size:13px; text-transform:uppercase; letter-spacing:.6px; color:var(--mute); margin:0;
  padding:12px 16px; border-bottom:1px solid var(--line); }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:8px 16px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { font-weight:600; color:var(--mute); font-size:12px; }
tr:last-child td { border-bottom:0; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
td.wrap { white-space:normal; max-width:420px; }
.mono { font-family:var(--mono); font-size:12.5px; }
.muted { color:var(--mute); }
.empty { padding:18px 16px; color:var(--mute); }
.pill { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px; font-weight:600;
  color:#fff; background:var(--mute); }
.pill.healthy, .pill.ok { background:var(--ok); } .pill.probing, .pill.cooling, .pill.warn { background:var(--warn); }
.pill.ejected, .pill.bad { background:var(--bad); } .pill.info { background:var(--info); }
.chip { display:inline-block; margin:1px 4px 1px 0; padding:0 7px; border-radius:6px; font-size:12px;
  border:1px solid var(--line); } .chip.ok { border-color:var(--ok); } .chip.bad { border-color:var(--bad); }
.budget { padding:12px 16px; border-bottom:1px solid var(--line); } .budget:last-child { border-bottom:0; }
.budget .row { display:flex; justify-content:space-between; gap:12px; margin-bottom:6px; flex-wrap:wrap; }
.track { position:relative; height:12px; border-radius:6px; background:var(--bar); overflow:hidden; }
.track .spent, .track .reserved { position:absolute; top:0; bottom:0; }
.track .spent { left:0; background:var(--ok); } .track .spent.warn { background:var(--warn); }
.track .spent.bad { background:var(--bad); }
.track .reserved { background:repeating-linear-gradient(45deg,var(--info) 0 4px,transparent 4px 8px); opacity:.7; }
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
  for (const kid of kids) if (kid !== null && kid !== undefined)
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return node;
}
const has = (v) => v !== undefined && v !== null && v !== "";
const num = (v) => typeof v === "number" && isFinite(v);
const dash = (v) => has(v) ? String(v) : "\\u2014";
const usd = (v) => !num(v) ? "\\u2014" : "$" + (v === 0 ? "0" : Math.abs(v) >= 1 ? v.toFixed(2)
  : Math.abs(v) >= 0.01 ? v.toFixed(4) : v.toPrecision(3));
const ms = (v) => num(v) ? (v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(1) + " ms") : "\\u2014";
const pct = (v) => num(v) ? (v * 100).toFixed(v < 0.1 ? 2 : 1) + " %" : "\\u2014";
function ago(seconds) {
  if (!num(seconds)) return "\\u2014";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}
function table(head, rows, empty) {
  if (!rows.length) return el("div", {class: "empty"}, empty);
  return el("table", {}, el("thead", {}, el("tr", {}, ...head.map(([t, c]) => el("th", {class: c}, t)))),
    el("tbody", {}, ...rows));
}
function statePill(state) {
  return el("span", {class: "pill " + (has(state) ? state : "")}, dash(state));
}
function renderTargets(list) {
  const rows = list.map((t) => el("tr", {"data-target": t.id || ""},
    el("td", {class: "mono"}, dash(t.id)),
    el("td", {}, dash(t.provider), has(t.type) ? el("span", {class: "muted"}, " (" + t.type + ")") : null),
    el("td", {class: "mono"}, dash(t.model)),
    el("td", {}, dash(t.region)),
    el("td", {}, statePill(t.state), num(t.state_seconds_left) && t.state_seconds_left > 0
      ? el("span", {class: "muted"}, " " + ago(t.state_seconds_left)) : null),
    el("td", {class: "num"}, dash(t.in_flight)),
    el("td", {class: "num"}, ms(t.latency_ms)),
    el("td", {class: "num"}, pct(t.error_ratio)),
    el("td", {class: "num"}, dash(t.requests)),
    el("td", {class: "wrap muted", title: t.last_error || ""}, has(t.last_error)
      ? String(t.last_error).slice(0, 120) : "")));
  return table([["Target"], ["Provider"], ["Model"], ["Region"], ["Circuit"], ["In flight", "num"],
    ["Latency", "num"], ["Errors", "num"], ["Requests", "num"], ["Last error"]], rows, "No targets: no table loaded yet.");
}
function renderBudgets(list) {
  if (!list.length) return el("div", {class: "empty"}, "No route has a budget.");
  return el("div", {}, ...list.map((b) => {
    const limit = num(b.limit_usd) ? b.limit_usd : 0;
    const spent = num(b.spent_usd) ? b.spent_usd : 0;
    const reserved = num(b.reserved_usd) ? b.reserved_usd : 0;
    const percent = num(b.percent) ? b.percent : (limit > 0 ? spent / limit * 100 : 0);
    const spentW = Math.min(100, limit > 0 ? spent / limit * 100 : (spent > 0 ? 100 : 0));
    const resW = Math.min(100 - spentW, limit > 0 ? reserved / limit * 100 : 0);
    const level = percent >= 100 ? "bad" : percent >= 80 ? "warn" : "";
    const left = num(b.period_end) ? b.period_end - Date.now() / 1000 : null;
    return el("div", {class: "budget", "data-route": b.route || ""},
      el("div", {class: "row"},
        el("div", {}, el("b", {}, dash(b.route)), el("span", {class: "muted"},
          " \\u00b7 " + dash(b.period) + (has(b.on_exceeded) ? " \\u00b7 on exceeded: " + b.on_exceeded : ""))),
        el("div", {class: "mono"}, usd(spent) + " of " + usd(limit) + " (" + percent.toFixed(1) + " %)",
          reserved > 0 ? el("span", {class: "muted"}, " + " + usd(reserved) + " reserved") : null,
          num(left) ? el("span", {class: "muted"}, " \\u00b7 resets in " + ago(left)) : null)),
      el("div", {class: "track", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
                 "aria-valuenow": percent.toFixed(1)},
        el("div", {class: "spent " + level, style: "width:" + spentW + "%"}),
        el("div", {class: "reserved", style: "left:" + spentW + "%;width:" + resW + "%"})));
  }));
}
function attemptChips(attempts) {
  if (!Array.isArray(attempts) || !attempts.length) return el("span", {class: "muted"}, "\\u2014");
  return el("span", {}, ...attempts.map((a) => {
    const ok = a.reason === "ok" || (num(a.status) && a.status < 300);
    return el("span", {class: "chip " + (ok ? "ok" : "bad"), title: dash(a.reason)},
      dash(a.target) + (has(a.status) ? " " + a.status : "") + (ok ? "" : ": " + String(dash(a.reason)).slice(0, 60)));
  }));
}
function renderDecisions(list) {
  const rows = list.map((d) => el("tr", {},
    el("td", {class: "muted"}, num(d.at) ? new Date(d.at * 1000).toLocaleTimeString() : "\\u2014"),
    el("td", {}, dash(d.route)),
    el("td", {class: "mono"}, dash(d.model), " \\u2192 ", el("b", {}, dash(d.tier)),
      has(d.experiment) ? el("span", {class: "pill info"}, d.experiment) : null),
    el("td", {class: "wrap"}, has(d.rule) ? el("span", {class: "mono"}, d.rule + " ") : null,
      el("span", {class: "muted"}, has(d.reason) ? d.reason : "")),
    el("td", {class: "mono"}, dash(d.target)),
    el("td", {class: "wrap"}, attemptChips(d.attempts)),
    el("td", {}, el("span", {class: "pill " + (num(d.status) ? (d.status < 400 ? "ok" : d.status < 500 ? "warn" : "bad") : "")},
      dash(d.status))),
    el("td", {class: "num"}, ms(d.latency_ms)),
    el("td", {class: "num mono"}, usd(d.cost_usd))));
  return table([["Time"], ["Route"], ["Model \\u2192 tier"], ["Why"], ["Target"], ["Attempts"], ["Status"],
    ["Latency", "num"], ["Cost", "num"]], rows, "No requests yet.");
}
function render(s) {
  const t = s.table || {};
  $("version").textContent = dash(t.version);
  $("age").textContent = num(t.age_seconds) ? ago(t.age_seconds)
    : num(t.loaded_at) ? ago(Date.now() / 1000 - t.loaded_at) : "\\u2014";
  $("region").textContent = dash(t.region);
  $("inflight").textContent = dash(s.in_flight);
  $("sidecar").textContent = dash(s.version) + (s.draining ? " (draining)" : "");
  $("targets").replaceChildren(renderTargets(Array.isArray(s.targets) ? s.targets : []));
  $("budgets").replaceChildren(renderBudgets(Array.isArray(s.budgets) ? s.budgets : []));
  $("decisions").replaceChildren(renderDecisions(Array.isArray(s.decisions) ? s.decisions : []));
}
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
tick();
setInterval(tick, 2000);
</script>
</body>
</html>
"""
