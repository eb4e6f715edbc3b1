"""The operator ↔ sidecar wire protocol: message types, encoding, validation, table payloads.

Pure (no I/O) and imported by both sides, so the hub and the sidecar cannot drift apart. Every
decoding problem raises `ProtocolError` naming the message type and the field path; a table
payload that is well-formed JSON but not a valid table raises `TableRejected` with every problem
(field paths included), which the sidecar sends back in its NACK. docs/protocol.md is the prose.

The operator and its sidecars are upgraded apart (a pod keeps its sidecar's image until it is
replaced), so each must read what a newer peer writes: a field it does not know, at any level, is
ignored, and a message of a type it does not know raises `UnknownMessage`, which the receiver
skips. What it knows it checks strictly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmroute_proxy.compiler import compile_table
from llmroute_proxy.dialects.base import Quota, RateLimits
from llmroute_proxy.spec import ROUTE_KIND as ROUTE_KIND
from llmroute_proxy.spec import ProviderSpec, credential_problem, holds_key, parse_documents
from llmroute_proxy.table import Limits, Secret, Table

SYNC_PATH = "/v1/sync"
AUDIENCE = "llmroute.dev"
LIMIT_FIELDS = ("requestsPerMinute", "tokensPerMinute", "maxConcurrency")
QUOTA_FIELDS = ("limit", "remaining", "reset_s")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 254
"""The deepest a message may nest: as deep as orjson encodes. A table nested deeper decoded, then
raised TypeError from `payload_version` (fuzzing found it) and could not have been persisted."""


class ProtocolError(ValueError):
    """A message that is not what the protocol says; `where` is the field path inside it."""

    def __init__(self, where: str, what: str) -> None:
        self.where = where
        self.what = what
        super().__init__(f"{where}: {what}" if where else what)


class UnknownMessage(ProtocolError):
    """A message whose `type` this side does not know: a newer peer's, to be skipped."""

    def __init__(self, kind: str, kinds: tuple[str, ...]) -> None:
        self.kind = kind
        super().__init__("type", f"{kind!r} is not one of {', '.join(repr(k) for k in kinds)}: a newer peer's message")


UNKNOWN_KINDS_TOLD = 16


def tell_of(told: set[str], newer: UnknownMessage) -> bool:
    """Whether a newer peer's message type is worth a log line: the first of its type on a stream, for
    the first `UNKNOWN_KINDS_TOLD` types (`told` holds those already told of); later ones are skipped quietly."""
    if newer.kind in told or len(told) >= UNKNOWN_KINDS_TOLD:
        return False
    told.add(newer.kind)
    return True


class TableRejected(ValueError):
    """A table payload the sidecar cannot run; the message lists every reason."""


# ---- messages -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PeriodSpend:
    """What a sidecar has spent on a route in the budget period that starts at `period_start` (epoch
    seconds), less what its next usage report will carry: its spend the operator may not have counted."""

    period_start: float
    spent_usd: float


@dataclass(frozen=True, slots=True)
class Hello:
    """Up, first: what the sidecar runs now (None: nothing yet), its package version, and per route what it
    has spent this period (None: a sidecar that does not say, older than the field)."""

    version: str | None
    sidecar: str
    budgets: Mapping[str, PeriodSpend] | None = None


@dataclass(frozen=True, slots=True)
class TablePush:
    """Down: the pod's table document; `version` is `payload_version(table)`."""

    version: str
    table: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LeaseBudget:
    """This sidecar may spend up to `limit_usd` in the route's current period; `spent_usd` is what the
    operator has already counted from this sidecar's reports (a floor for a restarted sidecar)."""

    limit_usd: float
    spent_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Lease:
    """Down: this sidecar's shares, keyed by provider and route name, valid for `ttl` seconds."""

    ttl: float
    limits: Mapping[str, Limits] = field(default_factory=dict)
    budgets: Mapping[str, LeaseBudget] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ack:
    version: str


@dataclass(frozen=True, slots=True)
class Nack:
    version: str
    error: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Up, periodic: counts since the previous report (deltas), per route, target and provider.

    routes:    {route: {"requests", "input_tokens", "output_tokens", "cost_usd"}}
    targets:   {target id: {"requests", "failures", "errors": {kind: n}, "input_tokens", "output_tokens", "cost_usd"}}
    providers: {provider: {"requests", "tokens"}} — the demand the operator divides limits by
    rate_limits: {provider: {"age_s", "requests"?: {"limit"?, "remaining"?, "reset_s"?}, "tokens"?: {…},
                  "retry_after_s"?}} — what the provider's last answer since the previous report said
    """

    interval: float
    routes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    targets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    final: bool = False
    rate_limits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.routes or self.targets or self.providers or self.rate_limits)


Up = Hello | Ack | Nack | UsageReport
Down = TablePush | Lease


# ---- encoding -------------------------------------------------------------------------------------

def encode(message: Up | Down) -> str:
    return orjson.dumps(_to_json(message)).decode()


def _to_json(message: Up | Down) -> dict[str, Any]:
    match message:
        case Hello(version, sidecar, budgets):
            hello: dict[str, Any] = {"type": "hello", "version": version, "sidecar": sidecar}
            if budgets is not None:
                hello["budgets"] = {name: {"periodStart": b.period_start, "spentUSD": b.spent_usd}
                                    for name, b in budgets.items()}
            return hello
        case TablePush(version, table):
            return {"type": "table", "version": version, "table": table}
        case Lease(ttl, limits, budgets):
            return {"type": "lease", "ttl": ttl,
                    "limits": {name: _limits_json(lim) for name, lim in limits.items()},
                    "budgets": {name: {"limitUSD": b.limit_usd, "spentUSD": b.spent_usd}
                                for name, b in budgets.items()}}
        case Ack(version):
            return {"type": "ack", "version": version}
        case Nack(version, error):
            return {"type": "nack", "version": version, "error": error}
        case UsageReport():
            out = {"type": "usage", "interval": message.interval, "final": message.final,
                   "routes": message.routes, "targets": message.targets, "providers": message.providers}
            if message.rate_limits:
                out["rate_limits"] = message.rate_limits
            return out
    raise TypeError(f"not a protocol message: {type(message).__name__}")


def rate_limits_json(limits: RateLimits, age_s: float) -> dict[str, Any]:
    """A provider's `rate_limits` entry of a usage report: what its answer said, `age_s` seconds ago."""
    out: dict[str, Any] = {"age_s": round(age_s, 3)}
    for name, quota in (("requests", limits.requests), ("tokens", limits.tokens)):
        if quota is not None:
            out[name] = {key: value for key, value in zip(QUOTA_FIELDS, (quota.limit, quota.remaining, quota.reset_s),
                                                         strict=True) if value is not None}
    if limits.retry_after_s is not None:
        out["retry_after_s"] = limits.retry_after_s
    return out


def read_rate_limits(entry: Mapping[str, Any]) -> tuple[RateLimits, float]:
    """A decoded `rate_limits` entry back: (what the answer said, its age in seconds)."""
    def quota(name: str) -> Quota | None:
        value = entry.get(name)
        return None if value is None else Quota(*(value.get(key) for key in QUOTA_FIELDS))

    return RateLimits(quota("requests"), quota("tokens"), entry.get("retry_after_s")), float(entry["age_s"])


def _limits_json(limits: Limits) -> dict[str, float | int]:
    values = (limits.requests_per_minute, limits.tokens_per_minute, limits.max_concurrency)
    return {name: value for name, value in zip(LIMIT_FIELDS, values, strict=True) if value is not None}


# ---- decoding -------------------------------------------------------------------------------------

def decode_up(text: str | bytes) -> Up:
    """A message from a sidecar; raises ProtocolError."""
    body, kind = _open(text, ("hello", "ack", "nack", "usage"))
    if kind == "hello":
        version = body.get("version")
        if version is not None:
            version = _string(body, "version", kind)
        return Hello(version, _string(body, "sidecar", kind), _hello_budgets(body))
    if kind == "ack":
        return Ack(_string(body, "version", kind))
    if kind == "nack":
        return Nack(_string(body, "version", kind), _string(body, "error", kind, allow_empty=False))
    return _usage(body)


def decode_down(text: str | bytes) -> Down:
    """A message from the operator; raises ProtocolError."""
    body, kind = _open(text, ("table", "lease"))
    if kind == "table":
        table = body.get("table")
        if not isinstance(table, Mapping):
            raise ProtocolError("table.table", f"must be an object, got {_kind_of(table)}")
        return TablePush(_string(body, "version", kind), table)
    return _lease(body)


def _open(text: str | bytes, kinds: tuple[str, ...]) -> tuple[Mapping[str, Any], str]:
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError("", f"message of {len(text)} bytes is larger than {MAX_MESSAGE_BYTES}")
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("", f"a message must be a JSON object, got {_kind_of(body)}")
    kind = body.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("type", f"must be a non-empty string, got {_kind_of(kind)}")
    if kind not in kinds:
        raise UnknownMessage(kind, kinds)
    deep = _too_deep(body, MAX_DEPTH)
    if deep is not None:
        raise ProtocolError(f"{kind}.{deep}", f"nests deeper than {MAX_DEPTH} levels")
    return body, kind


_Trail = tuple[Any, str | int] | None
"""(the parent's trail, the key): a path, spelled out only when it is needed."""


def _too_deep(body: Mapping[str, Any], limit: int) -> str | None:
    """The path at which `body` nests deeper than `limit` levels (abridged), None when it does not."""
    stack: list[tuple[Any, int, _Trail]] = [(body, 1, None)]
    while stack:
        node, depth, trail = stack.pop()
        if depth > limit:
            keys: list[str | int] = []
            while trail is not None:
                trail, key = trail
                keys.append(key)
            path = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in reversed(keys))
            return path[1:61] + ("…" if len(path) > 61 else "")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        stack.extend((child, depth + 1, (trail, key)) for key, child in items if isinstance(child, dict | list))
    return None


def _lease(body: Mapping[str, Any]) -> Lease:
    ttl = _number(body, "ttl", "lease")
    if ttl <= 0:
        raise ProtocolError("lease.ttl", f"must be positive, got {ttl}")
    limits: dict[str, Limits] = {}
    for name, value, where in _entries(body, "limits", "lease"):
        rpm, tpm, conc = (_optional_number(value, key, where) for key in LIMIT_FIELDS)
        if conc is not None and conc != int(conc):
            raise ProtocolError(f"{where}.maxConcurrency", f"must be a whole number, got {conc}")
        limits[name] = Limits(rpm, tpm, None if conc is None else int(conc))
    budgets: dict[str, LeaseBudget] = {}
    for name, value, where in _entries(body, "budgets", "lease"):
        limit = _optional_number(value, "limitUSD", where)
        if limit is None:
            raise ProtocolError(f"{where}.limitUSD", "is required")
        budgets[name] = LeaseBudget(limit, _optional_number(value, "spentUSD", where) or 0.0)
    return Lease(ttl, limits, budgets)


PERIOD_SPEND_FIELDS = ("periodStart", "spentUSD")


def _hello_budgets(body: Mapping[str, Any]) -> dict[str, PeriodSpend] | None:
    if body.get("budgets") is None:
        return None
    budgets: dict[str, PeriodSpend] = {}
    for name, value, where in _entries(body, "budgets", "hello"):
        start, spent = (_optional_number(value, key, where) for key in PERIOD_SPEND_FIELDS)
        if start is None or spent is None:
            raise ProtocolError(f"{where}.{'periodStart' if start is None else 'spentUSD'}", "is required")
        budgets[name] = PeriodSpend(start, spent)
    return budgets


def _entries(body: Mapping[str, Any], key: str, kind: str) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """(name, entry, its path) for each entry of the object `body[key]`, which must be objects."""
    for name, value in _object(body, key, kind).items():
        where = f"{kind}.{key}.{name}"
        if not isinstance(value, Mapping):
            raise ProtocolError(where, f"must be an object, got {_kind_of(value)}")
        yield name, value, where


_ROUTE_COUNTS = ("requests", "input_tokens", "output_tokens", "cost_usd")
_TARGET_COUNTS = (*_ROUTE_COUNTS, "failures")
_PROVIDER_COUNTS = ("requests", "tokens")


def _usage(body: Mapping[str, Any]) -> UsageReport:
    interval = _number(body, "interval", "usage")
    final = body.get("final", False)
    if not isinstance(final, bool):
        raise ProtocolError("usage.final", f"must be true or false, got {_kind_of(final)}")
    routes = _counts(body, "routes", _ROUTE_COUNTS)
    targets = _counts(body, "targets", _TARGET_COUNTS)
    for name, counts in _object(body, "targets", "usage").items():
        errors = counts.get("errors", {})
        where = f"usage.targets.{name}.errors"
        if not isinstance(errors, Mapping):
            raise ProtocolError(where, f"must be an object, got {_kind_of(errors)}")
        for kind, n in errors.items():
            _count(n, f"{where}.{kind}")
        targets[name] = {**targets[name], "errors": dict(errors)}
    providers = _counts(body, "providers", _PROVIDER_COUNTS)
    return UsageReport(interval, routes, targets, providers, final, _rate_limits(body))


def _rate_limits(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value, where in _entries(body, "rate_limits", "usage"):
        if "age_s" not in value:
            raise ProtocolError(f"{where}.age_s", "is required")
        entry: dict[str, Any] = {"age_s": _count(value["age_s"], f"{where}.age_s")}
        if value.get("retry_after_s") is not None:
            entry["retry_after_s"] = _count(value["retry_after_s"], f"{where}.retry_after_s")
        for window in ("requests", "tokens"):
            figures = value.get(window)
            if figures is None:
                continue
            if not isinstance(figures, Mapping):
                raise ProtocolError(f"{where}.{window}", f"must be an object, got {_kind_of(figures)}")
            entry[window] = {key: _count(figures[key], f"{where}.{window}.{key}")
                             for key in QUOTA_FIELDS if figures.get(key) is not None}
        out[name] = entry
    return out


def _counts(body: Mapping[str, Any], key: str, fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value, where in _entries(body, key, "usage"):
        out[name] = {f: _count(value.get(f, 0), f"{where}.{f}") for f in fields}
    return out


def _count(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ProtocolError(where, f"must be a non-negative number, got {value!r}")
    return value


def _string(body: Mapping[str, Any], key: str, kind: str, *, allow_empty: bool = False) -> str:
    value = body.get(key)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ProtocolError(f"{kind}.{key}", f"must be a non-empty string, got {_kind_of(value)}")
    return value


def _number(body: Mapping[str, Any], key: str, kind: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"{kind}.{key}", f"must be a number, got {_kind_of(value)}")
    return float(value)


def _optional_number(body: Mapping[str, Any], key: str, where: str) -> float | None:
    if body.get(key) is None:
        return None
    value = _number(body, key, where)
    if value < 0:
        raise ProtocolError(f"{where}.{key}", f"must not be negative, got {value}")
    return value


def _object(body: Mapping[str, Any], key: str, kind: str) -> Mapping[str, Any]:
    value = body.get(key, {})
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{kind}.{key}", f"must be an object, got {_kind_of(value)}")
    return value


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


# ---- table payloads -------------------------------------------------------------------------------

def table_payload(region: str, documents: list[Mapping[str, Any]], credentials: Mapping[str, str]) -> dict[str, Any]:
    """What the operator sends as `table`: the documents as applied plus resolved credentials."""
    return {"region": region, "documents": list(documents), "credentials": dict(credentials)}


def payload_version(payload: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces): one version per distinct table."""
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def compile_payload(payload: Mapping[str, Any]) -> Table:
    """The sidecar's own spec parser and compiler on a pushed table; raises TableRejected naming
    every problem by document and field path. Credentials never appear in an error."""
    region = payload.get("region", "")
    if not isinstance(region, str):
        raise TableRejected(f"table.region: must be a string, got {_kind_of(region)}")
    documents = payload.get("documents")
    if not isinstance(documents, list):
        raise TableRejected(f"table.documents: must be an array, got {_kind_of(documents)}")
    credentials = payload.get("credentials", {})
    if not isinstance(credentials, Mapping) or not all(isinstance(v, str) for v in credentials.values()):
        raise TableRejected("table.credentials: must be an object of provider name → key string")
    specs = parse_documents(documents)
    problems = [f"table.documents: {error}" for error in specs.errors]
    if documents and not any(isinstance(d, Mapping) and d.get("kind") == ROUTE_KIND for d in documents):
        problems.append("table.documents: holds no LLMRoute document")  # none at all: no LLMRoute selects the pod
    for provider in specs.providers:
        key = credentials.get(provider.name)
        if holds_key(provider.credentials) and not key:
            problems.append(f"table.credentials.{provider.name}: missing for provider {provider.name}")
        elif key and (unusable := credential_problem(provider.type, key)) is not None:
            problems.append(f"table.credentials.{provider.name}: {unusable}")
    if problems:
        raise TableRejected("; ".join(problems))

    def resolve(provider: ProviderSpec) -> Secret | None:
        key = credentials.get(provider.name)
        return Secret(key) if key else None

    return compile_table(specs.providers, specs.routes, region=region, credentials=resolve)
