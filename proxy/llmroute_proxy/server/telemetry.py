"""OpenTelemetry traces and metrics for every request, following the GenAI conventions (v1.41).

The server calls this module at six points of a request, and nowhere else:

    scope = telemetry.start_request("chat", request.headers, path=request.path)  # request start
    scope.routed(route, tier, rule, experiment)                                   # routing decided
    attempt = scope.attempt(target, number, requested_model, stream)              # attempt start
    attempt.first_chunk()                                                         # first streamed chunk
    attempt.end(usage, cost_usd, finish_reasons, response_model, error)           # attempt end
    scope.end(status, error_type, usage, cost_usd)                                # request end

A request is a SERVER span (`POST /v1/chat/completions`) continuing the caller's W3C
`traceparent`; each upstream attempt is a CLIENT span `{operation} {model}` under it.
Spans exist only when an exporter does (an OTLP endpoint is configured, or a test injects
one): otherwise no tracer is built and the hot path pays for metrics alone.

Metrics are aggregated here, not in the OpenTelemetry SDK. The SDK's synchronous instruments
validate and hash their attribute dict on every call: ~12 µs a `Histogram.record` with 7–8
attributes, 60–110 µs a request, a quarter of the sidecar's CPU. A request instead adds to
plain dicts keyed by a tuple of attribute values (`_Tally` for sums, `_Histogram` for bucket
counts, sum and count): ~1 µs in all. Everything is read at collection time:

- `/metrics` renders those aggregates with `_PrometheusCollector`, on a private
  `CollectorRegistry`, exactly as the OpenTelemetry Prometheus exporter rendered them before:
  same names and unit suffixes, sorted and sanitised labels with the instrumentation-scope
  labels, absent attributes as "", the spec's bucket boundaries, `target_info` from the
  resource, no `_created`, and beyond 2000 series a metric folds new ones into one
  `otel_metric_overflow="true"` series, as the SDK's cardinality limit did.
- OTLP (only when a metrics endpoint is configured) keeps the SDK, which owns temporality,
  timestamps and the wire format: the SDK histograms are recorded as well (the old cost, paid
  only by who exports over OTLP), the sums and gauges are observable instruments that read
  the same aggregates. Prometheus never reads the SDK, so nothing is exposed twice.

The OTLP exporters and the SDK's tracing and metrics modules are imported only when an
endpoint is configured: without one, that saves ~70 ms, 6 MB and 150 modules at start. The
gauges that describe live state (circuits, budgets, table version) are read at collection
time from callbacks the server registers, so nothing is stored twice.

Content (prompts, completions) is recorded only with `LLMROUTE_CAPTURE_CONTENT=true`, as the
spec's opt-in `gen_ai.input.messages` / `gen_ai.output.messages` attributes. Credentials never
reach this module: targets are described by id, provider, model, region and URL host.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric

from llmroute_proxy import __version__
from llmroute_proxy.errors import UpstreamError
from llmroute_proxy.providers.base import Usage
from llmroute_proxy.routing.budget import BudgetStatus
from llmroute_proxy.table import ProviderType, Target

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Histogram, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE_NAME_DEFAULT = "llmroute-proxy"
CAPTURE_CONTENT_ENV = "LLMROUTE_CAPTURE_CONTENT"

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

CARDINALITY_LIMIT = 2000
"""Series per metric before new attribute sets fold into one overflow series (the SDK's default)."""

PROVIDER_NAMES = {
    ProviderType.OPENAI: "openai",
    ProviderType.ANTHROPIC: "anthropic",
    ProviderType.GEMINI: "gcp.gemini",
    ProviderType.AZURE_OPENAI: "azure.ai.openai",
}
"""`gen_ai.provider.name` per provider type; openai-compatible targets use their LLMProvider's name."""

CIRCUIT_STATES = ("healthy", "probing", "cooling", "ejected")
"""The states `llmroute.circuit.state` reports, one series each (1 for the current one)."""

_ENDPOINT_PATHS = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings"}
_TRUE = frozenset({"1", "true", "yes", "on"})
_SCOPE = "llmroute"

_ATTEMPT = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "server.address",
            "server.port", "llmroute.target")
"""The attributes of every GenAI client metric point, in the order of an attempt's key."""
_ATTEMPT_END = (*_ATTEMPT, "gen_ai.response.model", "error.type")
_TOKENS = (*_ATTEMPT_END, "gen_ai.token.type")

CircuitSource = Callable[[], Iterable[tuple[str, str]]]
"""(target id, circuit state) for every target of the current table."""
BudgetSource = Callable[[], Iterable[tuple[str, BudgetStatus]]]
"""(route name, budget status) for every route with a budget."""

Key = tuple[str | int, ...]
"""Attribute values in the order of a metric's attribute names; "" means the attribute is absent."""
Attributes = dict[str, str | int | bool]
Point = tuple[Attributes, float]


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    service_name: str = SERVICE_NAME_DEFAULT
    traces_endpoint: str | None = None  # full OTLP/HTTP URL, e.g. http://collector:4318/v1/traces
    metrics_endpoint: str | None = None
    metric_export_interval_s: float = 60.0
    disabled: bool = False  # OTEL_SDK_DISABLED: no spans, no metrics (an empty /metrics)
    capture_content: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TelemetrySettings:
        """The standard OTEL_* variables; exporters read headers, timeout and TLS from them too."""
        interval_ms = env.get("OTEL_METRIC_EXPORT_INTERVAL", "")
        return cls(
            service_name=_service_name(env),
            traces_endpoint=_otlp_endpoint(env, "traces"),
            metrics_endpoint=_otlp_endpoint(env, "metrics"),
            metric_export_interval_s=float(interval_ms) / 1000.0 if interval_ms.isdigit() else 60.0,
            disabled=env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true",
            capture_content=env.get(CAPTURE_CONTENT_ENV, "").strip().lower() in _TRUE,
        )


def _service_name(env: Mapping[str, str]) -> str:
    if env.get("OTEL_SERVICE_NAME"):
        return env["OTEL_SERVICE_NAME"]
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    return SERVICE_NAME_DEFAULT


def _otlp_endpoint(env: Mapping[str, str], signal: str) -> str | None:
    if "none" in env.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").lower().split(","):
        return None
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if specific:
        return specific
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/{signal}" if base else None


@functools.lru_cache(maxsize=1024)
def _server(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def provider_name(target: Target) -> str:
    return PROVIDER_NAMES.get(target.provider_type, target.provider)


def error_type(error: BaseException) -> str:
    """Low-cardinality `error.type`: the failure kind for upstream errors, else the class name."""
    return error.kind.value if isinstance(error, UpstreamError) else type(error).__qualname__


# --- local aggregation ---------------------------------------------------------------

_OVERFLOW: Key = ("\x00overflow",)
_OVERFLOW_ATTRIBUTES: Attributes = {"otel.metric.overflow": True}


class _Metric:
    """What a metric is called and how its key's values map to attribute names."""

    __slots__ = ("description", "name", "names", "unit")

    def __init__(self, name: str, unit: str, description: str, names: tuple[str, ...] = ()) -> None:
        self.name, self.unit, self.description, self.names = name, unit, description, names

    def attributes(self, key: Key) -> Attributes:
        if key is _OVERFLOW:
            return dict(_OVERFLOW_ATTRIBUTES)
        return {name: value for name, value in zip(self.names, key, strict=True) if value != ""}


class _Tally(_Metric):
    """A monotonic sum per attribute set: a dict update on the request path (~0.3 µs)."""

    __slots__ = ("_values",)

    def __init__(self, name: str, unit: str, description: str, names: tuple[str, ...]) -> None:
        super().__init__(name, unit, description, names)
        self._values: dict[Key, float] = {}

    def add(self, amount: float, *key: str | int) -> None:
        try:
            self._values[key] += amount
        except KeyError:
            values = self._values
            if len(values) >= CARDINALITY_LIMIT:
                key = _OVERFLOW
            values[key] = values.get(key, 0.0) + amount

    def points(self) -> list[Point]:
        """A snapshot; safe while the event loop adds (the OTLP reader calls it from its thread)."""
        return [(self.attributes(key), value) for key, value in list(self._values.items())]


class _Buckets:
    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


class _Histogram(_Metric):
    """Explicit-bucket counts, sum and count per attribute set (~0.5 µs a record).

    Bucket i counts the values in (boundaries[i-1], boundaries[i]], as OpenTelemetry and
    Prometheus (`le`) define them. `sdk` is the OTLP twin, recorded too when OTLP is on.
    """

    __slots__ = ("_series", "boundaries", "sdk")

    def __init__(self, name: str, unit: str, description: str, names: tuple[str, ...],
                 boundaries: Sequence[float]) -> None:
        super().__init__(name, unit, description, names)
        self.boundaries = tuple(boundaries)
        self.sdk: Histogram | None = None
        self._series: dict[Key, _Buckets] = {}

    def record(self, value: float, key: Key) -> None:
        series = self._series.get(key) or self._open(key)
        series.counts[bisect_left(self.boundaries, value)] += 1
        series.total += value
        if self.sdk is not None:
            self.sdk.record(value, self.attributes(key))

    def _open(self, key: Key) -> _Buckets:
        series = self._series
        if len(series) >= CARDINALITY_LIMIT:
            key = _OVERFLOW
        return series.get(key) or series.setdefault(key, _Buckets(len(self.boundaries) + 1))

    def series(self) -> list[tuple[Attributes, list[int], float]]:
        return [(self.attributes(key), list(b.counts), b.total) for key, b in list(self._series.items())]


class _Gauge(_Metric):
    """A value read at collection time. `up_down`: an up-down counter in OTLP, a gauge everywhere."""

    __slots__ = ("points", "up_down")

    def __init__(self, name: str, unit: str, description: str, points: Callable[[], Iterable[Point]],
                 up_down: bool = False) -> None:
        super().__init__(name, unit, description)
        self.points, self.up_down = points, up_down


# --- Prometheus exposition -----------------------------------------------------------

_UNIT_ANNOTATION = re.compile(r"\{.*\}")
_PROMETHEUS_UNITS = {"": "", "s": "seconds"}
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9:]+")
_NOT_IN_LABEL = re.compile(r"[^a-zA-Z0-9]+")


def _prometheus_name(metric: _Metric) -> tuple[str, str]:
    """(name, unit) as the OpenTelemetry exporter maps them; prometheus_client appends the unit."""
    return _NOT_IN_NAME.sub("_", metric.name), _PROMETHEUS_UNITS[_UNIT_ANNOTATION.sub("", metric.unit)]


@functools.cache
def _label(attribute: str) -> str:
    return _NOT_IN_LABEL.sub("_", attribute)


def _label_value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class _PrometheusCollector:
    """A prometheus_client collector rendering the aggregates as the OpenTelemetry exporter did.

    Metrics without a point are left out; label names are the union over a metric's points,
    sorted, with "" where a point lacks one, plus the instrumentation-scope labels.
    """

    def __init__(self, telemetry: Telemetry, resource: Resource) -> None:
        self._telemetry = telemetry
        self._scope = {"otel_scope_name": _SCOPE, "otel_scope_schema_url": "", "otel_scope_version": __version__}
        labels = {_label(key): _label_value(value) for key, value in resource.attributes.items()}
        self._target_info = InfoMetricFamily("target", "Target metadata", labels=list(labels))
        self._target_info.add_metric(list(labels), labels)

    def collect(self) -> Iterator[Metric]:
        yield self._target_info
        t = self._telemetry
        for histogram in t.histograms:
            if series := histogram.series():
                yield self._histogram(histogram, series)
        for tally in t.tallies:
            if points := tally.points():
                yield self._family(CounterMetricFamily, tally, points)
        for gauge in t.gauges:
            if points := list(gauge.points()):
                yield self._family(GaugeMetricFamily, gauge, points)

    def _rows(self, points: Iterable[Attributes]) -> tuple[list[str], list[list[str]]]:
        rows = [{**self._scope, **{_label(k): _label_value(v) for k, v in attributes.items()}}
                for attributes in points]
        names = sorted(set().union(*rows))
        return names, [[row.get(name, "") for name in names] for row in rows]

    def _family(self, kind: type[CounterMetricFamily | GaugeMetricFamily], metric: _Metric,
                points: list[Point]) -> Metric:
        name, unit = _prometheus_name(metric)
        names, rows = self._rows(attributes for attributes, _ in points)
        family = kind(name, metric.description, labels=names, unit=unit)
        for row, (_, value) in zip(rows, points, strict=True):
            family.add_metric(row, value)
        return family

    def _histogram(self, histogram: _Histogram, series: list[tuple[Attributes, list[int], float]]) -> Metric:
        name, unit = _prometheus_name(histogram)
        names, rows = self._rows(attributes for attributes, _, _ in series)
        family = HistogramMetricFamily(name, histogram.description, labels=names, unit=unit)
        bounds = [f"{b}" for b in histogram.boundaries] + ["+Inf"]
        for row, (_, counts, total) in zip(rows, series, strict=True):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            family.add_metric(row, buckets, total)
        return family


# --- the sidecar's telemetry ---------------------------------------------------------

class Telemetry:
    """One per sidecar. Build it with `from_env()`; tests pass settings and an exporter."""

    def __init__(self, settings: TelemetrySettings | None = None, *, span_exporter: SpanExporter | None = None,
                 metric_exporter: MetricExporter | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.settings = settings = settings or TelemetrySettings()
        self.capture_content = settings.capture_content and not settings.disabled
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self._circuits: CircuitSource | None = None
        self._budgets: BudgetSource | None = None
        self._table_version: str | None = None
        self._closed = False
        self._propagator = TraceContextTextMapPropagator()
        self._tracer_provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        self._meter_provider: MeterProvider | None = None
        self._otlp_metrics: PeriodicExportingMetricReader | None = None
        self._prometheus: _PrometheusCollector | None = None
        self._instruments()
        if settings.disabled:
            return
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        self._prometheus = _PrometheusCollector(self, resource)
        self.registry.register(self._prometheus)
        if span_exporter is None and settings.traces_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter(endpoint=settings.traces_endpoint)
        if span_exporter is not None:
            self._start_tracing(span_exporter, resource)
        if metric_exporter is None and settings.metrics_endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            metric_exporter = OTLPMetricExporter(endpoint=settings.metrics_endpoint)
        if metric_exporter is not None:
            self._start_otlp_metrics(metric_exporter, resource)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> Telemetry:
        return cls(TelemetrySettings.from_env(os.environ if env is None else env), **kwargs)

    @property
    def tracing(self) -> bool:
        """Whether spans are recorded at all (an exporter exists)."""
        return self._tracer is not None

    def _instruments(self) -> None:
        self.token_usage = _Histogram(
            "gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.", _TOKENS,
            TOKEN_BUCKETS)
        self.operation_duration = _Histogram(
            "gen_ai.client.operation.duration", "s", "GenAI operation duration (one upstream attempt).",
            _ATTEMPT_END, DURATION_BUCKETS)
        self.time_to_first_chunk = _Histogram(
            "gen_ai.client.operation.time_to_first_chunk", "s",
            "Time from sending a streamed request upstream to its first chunk with output.", _ATTEMPT,
            DURATION_BUCKETS)
        self.request_duration = _Histogram(
            "llmroute.request.duration", "s", "Whole client request, every attempt included.",
            ("llmroute.route", "http.response.status_code", "error.type"), DURATION_BUCKETS)
        self.requests = _Tally("llmroute.requests", "{request}", "Client requests answered.",
                               ("llmroute.route", "llmroute.tier", "http.response.status_code", "error.type"))
        self.cost = _Tally("llmroute.cost.usd", "{USD}", "Money spent upstream, in USD.",
                           ("llmroute.route", "llmroute.tier", "llmroute.target", "llmroute.experiment"))
        self.attempts = _Tally("llmroute.attempts", "{attempt}", "Upstream attempts by outcome.",
                               ("llmroute.route", "llmroute.target", "llmroute.outcome"))
        self.failovers = _Tally("llmroute.failovers", "{failover}",
                                "Requests moved away from a target, by the reason.",
                                ("llmroute.route", "llmroute.target", "llmroute.failover_reason"))
        self.ejections = _Tally("llmroute.ejections", "{ejection}", "Targets ejected by the breaker.",
                                ("llmroute.target", "llmroute.ejection_reason"))
        self.in_flight = 0
        self.histograms = (self.operation_duration, self.time_to_first_chunk, self.token_usage,
                           self.request_duration)
        self.tallies = (self.requests, self.cost, self.attempts, self.failovers, self.ejections)
        self.gauges = (
            _Gauge("llmroute.requests.in_flight", "{request}", "Client requests being served.",
                   self._in_flight_points, up_down=True),
            _Gauge("llmroute.circuit.state", "", "1 for each target's current breaker state, 0 for the others.",
                   self._circuit_points),
            _Gauge("llmroute.budget.spent.usd", "{USD}", "Spent in the current budget period, per route.",
                   self._spent_points),
            _Gauge("llmroute.budget.remaining.usd", "{USD}",
                   "Left in the current budget period (limit - spent - reserved).", self._remaining_points),
            _Gauge("llmroute.table.info", "", "1, with the routing table's version as an attribute.",
                   self._table_points),
        )

    def _start_tracing(self, exporter: SpanExporter, resource: Resource) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._tracer_provider = TracerProvider(resource=resource)
        self._tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._tracer_provider.get_tracer(_SCOPE, __version__)

    def _start_otlp_metrics(self, exporter: MetricExporter, resource: Resource) -> None:
        """The SDK pipeline for OTLP: its histograms recorded beside ours, the rest observed from ours."""
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        self._otlp_metrics = PeriodicExportingMetricReader(
            exporter, export_interval_millis=self.settings.metric_export_interval_s * 1000.0)
        self._meter_provider = MeterProvider(resource=resource, metric_readers=[self._otlp_metrics])
        meter = self._meter_provider.get_meter(_SCOPE, __version__)
        for histogram in self.histograms:
            histogram.sdk = meter.create_histogram(histogram.name, histogram.unit, histogram.description,
                                                   explicit_bucket_boundaries_advisory=histogram.boundaries)
        for tally in self.tallies:
            meter.create_observable_counter(tally.name, [_observer(tally.points)], tally.unit, tally.description)
        for gauge in self.gauges:
            create = meter.create_observable_up_down_counter if gauge.up_down else meter.create_observable_gauge
            create(gauge.name, [_observer(gauge.points)], gauge.unit, gauge.description)

    # --- what the server registers -------------------------------------------------

    def register_circuits(self, source: CircuitSource) -> None:
        self._circuits = source

    def register_budgets(self, source: BudgetSource) -> None:
        self._budgets = source

    def set_table_version(self, version: str | None) -> None:
        self._table_version = version

    def ejected(self, target: str, reason: str) -> None:
        self.ejections.add(1.0, target, reason)

    def _in_flight_points(self) -> Iterable[Point]:
        yield {}, self.in_flight

    def _circuit_points(self) -> Iterable[Point]:
        for target, state in self._circuits() if self._circuits else ():
            for known in CIRCUIT_STATES:
                yield {"llmroute.target": target, "state": known}, 1 if known == state else 0
            if state not in CIRCUIT_STATES:
                yield {"llmroute.target": target, "state": state}, 1

    def _spent_points(self) -> Iterable[Point]:
        for route, status in self._budgets() if self._budgets else ():
            yield {"llmroute.route": route}, status.spent_usd

    def _remaining_points(self) -> Iterable[Point]:
        for route, status in self._budgets() if self._budgets else ():
            yield {"llmroute.route": route}, status.limit_usd - status.spent_usd - status.reserved_usd

    def _table_points(self) -> Iterable[Point]:
        if self._table_version is not None:
            yield {"llmroute.table.version": self._table_version}, 1

    # --- per request ---------------------------------------------------------------

    def start_request(self, operation: str, headers: Mapping[str, str], *, method: str = "POST",
                      path: str | None = None) -> RequestScope:
        return RequestScope(self, operation, headers, method, path or _ENDPOINT_PATHS.get(operation, "/"))

    # --- exposition and lifecycle --------------------------------------------------

    def prometheus_text(self) -> tuple[bytes, str]:
        """The body and content type for `/metrics` (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4

    def flush(self, timeout_millis: int = 10_000) -> None:
        """Export every finished span and a metrics snapshot now. Blocking: call it off the event loop."""
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush(timeout_millis)
        if self._otlp_metrics is not None:
            self._otlp_metrics.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and stop the exporters. Blocking (OTLP sends): call it off the event loop."""
        if self._closed:
            return
        self._closed = True
        if self._prometheus is not None:
            self.registry.unregister(self._prometheus)
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()


def _observer(points: Callable[[], Iterable[Point]]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    from opentelemetry.metrics import Observation

    def observe(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, attributes) for attributes, value in points()]
    return observe


def _incoming_trace_id(headers: Mapping[str, str]) -> str:
    parent = headers.get("traceparent")
    if not parent:
        return ""
    parts = parent.strip().split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1].lower()
    return ""


class RequestScope:
    """One client request: the SERVER span, the in-flight gauge and the request's metrics."""

    __slots__ = ("_attempt_context", "_ended", "_failure", "_input", "_last_target", "_span", "_started",
                 "_telemetry", "attempts", "experiment", "operation", "route", "rule", "tier", "trace_id")

    def __init__(self, telemetry: Telemetry, operation: str, headers: Mapping[str, str], method: str,
                 path: str) -> None:
        self._telemetry = telemetry
        self.operation = operation
        self.route = ""
        self.tier = ""
        self.rule: str | None = None
        self.experiment: str | None = None
        self.attempts = 0
        self._input: str | None = None
        self._failure: str | None = None
        self._last_target: str | None = None
        self._ended = False
        self._started = telemetry.clock()
        self._span: Span | None = None
        self._attempt_context: Context | None = None
        tracer = telemetry._tracer
        if tracer is None:
            self.trace_id = _incoming_trace_id(headers)
        else:
            parent = telemetry._propagator.extract(headers) if "traceparent" in headers else None
            self._span = tracer.start_span(f"{method} {path}", parent, SpanKind.SERVER, {
                "http.request.method": method, "http.route": path, "gen_ai.operation.name": operation})
            self._attempt_context = trace.set_span_in_context(self._span)
            self.trace_id = format(self._span.get_span_context().trace_id, "032x")
        telemetry.in_flight += 1

    def routed(self, route: str, tier: str, rule: str | None, experiment: str | None = None,
               input_messages: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Routing decided. `input_messages` (OpenAI form) is kept only when content capture is on."""
        self.route, self.tier, self.rule, self.experiment = route, tier, rule, experiment
        if input_messages is not None and self._telemetry.capture_content:
            self._input = orjson.dumps([_message_parts(m) for m in input_messages]).decode()
        if self._span is not None:
            self._span.set_attributes(_routing_attributes(self))

    def attempt(self, target: Target, number: int, requested_model: str = "", stream: bool = False) -> AttemptScope:
        """An upstream attempt starts. `requested_model` is what the client asked for (an alias);
        the span's `gen_ai.request.model` is the model actually sent upstream. An attempt after a
        failure carries that failure as `llmroute.failover_reason`; `llmroute.failovers` counts
        only moves to another target (a retry of the same target is an attempt, not a failover)."""
        self.attempts += 1
        reason, previous = self._failure, self._last_target
        if reason is not None and previous is not None and previous != target.id:
            self._telemetry.failovers.add(1.0, self.route, previous, reason)
        self._last_target = target.id
        return AttemptScope(self, target, number, requested_model, stream, reason)

    def end(self, status: int, error_type: str | None = None, usage: Usage | None = None,
            cost_usd: float | None = None) -> None:
        """The response is complete (streams: after the last byte). Calling it again does nothing."""
        if self._ended:
            return
        self._ended = True
        telemetry = self._telemetry
        telemetry.in_flight -= 1
        telemetry.requests.add(1.0, self.route, self.tier, status, error_type or "")
        telemetry.request_duration.record(telemetry.clock() - self._started, (self.route, status, error_type or ""))
        span = self._span
        if span is None:
            return
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("llmroute.attempts", self.attempts)
        if error_type:
            span.set_attribute("error.type", error_type)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, error_type))
        if usage is not None:
            span.set_attributes(_usage_attributes(usage))
        if cost_usd is not None:
            span.set_attribute("llmroute.cost_usd", cost_usd)
        span.end()


class AttemptScope:
    """One upstream attempt: the CLIENT span and the GenAI client metrics."""

    __slots__ = ("_ended", "_first_chunk", "_key", "_scope", "_span", "_started", "stream", "target")

    def __init__(self, scope: RequestScope, target: Target, number: int, requested_model: str, stream: bool,
                 failover_reason: str | None) -> None:
        self._scope = scope
        self.target = target
        self.stream = stream
        self._ended = False
        self._first_chunk: float | None = None
        address, port = _server(target.url)
        self._key: Key = (scope.operation, provider_name(target), target.model, address, port, target.id)
        self._span: Span | None = None
        telemetry = scope._telemetry
        if telemetry._tracer is not None:
            attributes: dict[str, Any] = {**dict(zip(_ATTEMPT, self._key, strict=True)), **_routing_attributes(scope),
                                          "llmroute.attempt": number, "llmroute.region": target.region}
            if requested_model:
                attributes["llmroute.requested_model"] = requested_model
            if failover_reason is not None:
                attributes["llmroute.failover_reason"] = failover_reason
            if scope._input is not None:
                attributes["gen_ai.input.messages"] = scope._input
            self._span = telemetry._tracer.start_span(f"{scope.operation} {target.model}",
                                                      scope._attempt_context, SpanKind.CLIENT, attributes)
        self._started = telemetry.clock()

    def first_chunk(self) -> None:
        """The first streamed chunk with output arrived (time to first chunk; streams only)."""
        if self._first_chunk is not None or self._ended:
            return
        telemetry = self._scope._telemetry
        self._first_chunk = telemetry.clock()
        telemetry.time_to_first_chunk.record(self._first_chunk - self._started, self._key)

    def end(self, usage: Usage | None = None, cost_usd: float | None = None, finish_reasons: Sequence[str] = (),
            response_model: str | None = None, error: BaseException | None = None,
            output_messages: Sequence[Mapping[str, Any]] | None = None) -> None:
        """The attempt is over: success when `error` is None. Calling it again does nothing."""
        if self._ended:
            return
        self._ended = True
        scope = self._scope
        telemetry = scope._telemetry
        kind = error_type(error) if error is not None else None
        if kind is not None:
            scope._failure = kind
        key = (*self._key, response_model or "", kind or "")
        telemetry.operation_duration.record(telemetry.clock() - self._started, key)
        telemetry.attempts.add(1.0, scope.route, self.target.id, kind or "ok")
        if usage is not None:
            telemetry.token_usage.record(usage.input_tokens, (*key, "input"))
            telemetry.token_usage.record(usage.output_tokens, (*key, "output"))
        if cost_usd:
            telemetry.cost.add(cost_usd, scope.route, scope.tier, self.target.id, scope.experiment or "")
        if self._span is not None:
            self._end_span(self._span, usage, cost_usd, finish_reasons, response_model, error, kind,
                           output_messages)
    def _end_span(self, span: Span, usage: Usage | None, cost_usd: float | None, finish_reasons: Sequence[str],
                  response_model: str | None, error: BaseException | None, kind: str | None,
                  output_messages: Sequence[Mapping[str, Any]] | None) -> None:
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)
        if usage is not None:
            span.set_attributes(_usage_attributes(usage))
        if finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
        if cost_usd is not None:
            span.set_attribute("llmroute.cost_usd", cost_usd)
        if kind is not None:
            span.set_attribute("error.type", kind)
            if isinstance(error, UpstreamError) and error.status is not None:
                span.set_attribute("http.response.status_code", error.status)
            span.set_status(Status(StatusCode.ERROR, kind))
        if output_messages is not None and self._scope._telemetry.capture_content:
            outputs = [_message_parts(m, finish_reasons[i] if i < len(finish_reasons) else "")
                       for i, m in enumerate(output_messages)]
            span.set_attribute("gen_ai.output.messages", orjson.dumps(outputs).decode())
        span.end()


def _routing_attributes(scope: RequestScope) -> dict[str, str]:
    attributes = {"llmroute.route": scope.route, "llmroute.tier": scope.tier}
    if scope.rule:
        attributes["llmroute.rule"] = scope.rule
    if scope.experiment:
        attributes["llmroute.experiment"] = scope.experiment
    return attributes


def _usage_attributes(usage: Usage) -> dict[str, int]:
    attributes = {"gen_ai.usage.input_tokens": usage.input_tokens,
                  "gen_ai.usage.output_tokens": usage.output_tokens}
    if usage.cached_input_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
    if usage.cache_write_tokens:
        attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
    return attributes


def _message_parts(message: Mapping[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """An OpenAI chat message in the spec's `{role, parts}` shape (text, tool calls, tool results)."""
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        parts.extend({"type": "text", "content": item.get("text", "")} for item in content
                     if isinstance(item, Mapping) and item.get("type") == "text")
    if message.get("role") == "tool":
        parts = [{"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content}]
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                      "arguments": function.get("arguments")})
    out: dict[str, Any] = {"role": message.get("role", "user"), "parts": parts}
    if finish_reason is not None:
        out["finish_reason"] = finish_reason
    return out
