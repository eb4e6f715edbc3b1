"""OpenTelemetry traces and metrics for every request, following the GenAI conventions (v1.41).

The server calls this module at six points of a request, and nowhere else:

    scope = telemetry.start_request("chat", request.headers, path=request.path)  # request start
    scope.routed(route, tier, rule, experiment)                                   # routing decided
    attempt = scope.attempt(target, number, requested_model, stream, tier)        # attempt start
    attempt.first_chunk()                                                         # first streamed chunk
    attempt.end(usage, cost_usd, finish_reasons, response_model, error)           # attempt end
    scope.end(status, error_type, usage, cost_usd, tier)                          # request end

A request is a SERVER span (`POST /v1/chat/completions`) continuing the caller's W3C
`traceparent`; each upstream attempt is a CLIENT span `{operation} {model}` under it.
Each names a tier (`llmroute.tier`): an attempt's is the tier its target was taken from; the
request's is the routed tier until it ends, then the tier it ended in, the one whose target
answered (or, when none did, the last one tried), as its response header, access line and spend
say. When a fallback tier answered, the SERVER span keeps the routed tier as `llmroute.fallback_from`.
A token count (`POST /v1/messages/count_tokens`) is no request in the metrics: its scope is
started with `metered=False`, makes the same spans, records no metric point, and says how the
count was answered with `scope.counted("exact" | "estimated" | "none")`. A request refused
before routing is never `routed`: it ends with its refusal's status, no tier, and as its route
the one the table knows it by (`scope.route`), or none.
Spans exist only when an exporter does (an OTLP endpoint is configured, or a test injects
one): otherwise no tracer is built and the hot path pays for metrics alone.

Metrics are aggregated here, not in the OpenTelemetry SDK. The SDK's synchronous instruments
validate and hash their attribute dict on every call: ~12 µs a `Histogram.record` with 7–8
attributes, 60–110 µs a request, a quarter of the sidecar's CPU. A request instead adds to
plain dicts keyed by a tuple of attribute values (`Tally` for sums, `Histogram` for bucket
counts, sum and count): ~1 µs in all. Everything is read at collection time:

- `/metrics` renders those aggregates with `PrometheusCollector`, on a private
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

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from llmroute_proxy import __version__
from llmroute_proxy.routing.budget import BudgetStatus
from llmroute_proxy.server.metrics_local import CARDINALITY_LIMIT as CARDINALITY_LIMIT
from llmroute_proxy.server.metrics_local import SCOPE_NAME, Gauge, Histogram, PrometheusCollector, Tally
from llmroute_proxy.server.metrics_local import Attributes as Attributes
from llmroute_proxy.server.metrics_local import Key as Key
from llmroute_proxy.server.metrics_local import Point as Point
from llmroute_proxy.server.telemetry_scopes import (
    ATTEMPT_ATTRIBUTES,
    ATTEMPT_END_ATTRIBUTES,
    TOKEN_ATTRIBUTES,
)
from llmroute_proxy.server.telemetry_scopes import PROVIDER_NAMES as PROVIDER_NAMES
from llmroute_proxy.server.telemetry_scopes import AttemptScope as AttemptScope
from llmroute_proxy.server.telemetry_scopes import RequestScope as RequestScope
from llmroute_proxy.server.telemetry_scopes import error_type as error_type
from llmroute_proxy.server.telemetry_scopes import provider_name as provider_name

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SERVICE_NAME_DEFAULT = "llmroute-proxy"
CAPTURE_CONTENT_ENV = "LLMROUTE_CAPTURE_CONTENT"

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

CIRCUIT_STATES = ("healthy", "probing", "cooling", "ejected")
"""The states `llmroute.circuit.state` reports, one series each (1 for the current one)."""

_ENDPOINT_PATHS = {"chat": "/v1/chat/completions", "embeddings": "/v1/embeddings"}
_TRUE = frozenset({"1", "true", "yes", "on"})

CircuitSource = Callable[[], Iterable[tuple[str, str]]]
"""(target id, circuit state) for every target of the current table."""
BudgetSource = Callable[[], Iterable[tuple[str, BudgetStatus]]]
ConnectionSource = Callable[[], Iterable[tuple[str, int]]]  # (plane, connections open)
"""(route name, budget status) for every route with a budget."""


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
        self._connections: ConnectionSource | None = None
        self._closed = False
        self.propagator: TextMapPropagator = TraceContextTextMapPropagator()
        self._tracer_provider: TracerProvider | None = None
        self.tracer: Tracer | None = None
        self._meter_provider: MeterProvider | None = None
        self._otlp_metrics: PeriodicExportingMetricReader | None = None
        self._prometheus: PrometheusCollector | None = None
        self._instruments()
        if settings.disabled:
            return
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        self._prometheus = PrometheusCollector(self.histograms, self.tallies, self.gauges, resource)
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
        return self.tracer is not None

    def _instruments(self) -> None:
        self.token_usage = Histogram(
            "gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.", TOKEN_ATTRIBUTES,
            TOKEN_BUCKETS)
        self.operation_duration = Histogram(
            "gen_ai.client.operation.duration", "s", "GenAI operation duration (one upstream attempt).",
            ATTEMPT_END_ATTRIBUTES, DURATION_BUCKETS)
        self.time_to_first_chunk = Histogram(
            "gen_ai.client.operation.time_to_first_chunk", "s",
            "Time from sending a streamed request upstream to its first chunk with output.", ATTEMPT_ATTRIBUTES,
            DURATION_BUCKETS)
        self.request_duration = Histogram(
            "llmroute.request.duration", "s", "Whole client request, every attempt included.",
            ("llmroute.route", "http.response.status_code", "error.type"), DURATION_BUCKETS)
        self.requests = Tally("llmroute.requests", "{request}", "Client requests answered.",
                               ("llmroute.route", "llmroute.tier", "http.response.status_code", "error.type"))
        self.cost = Tally("llmroute.cost.usd", "{USD}", "Money spent upstream, in USD.",
                           ("llmroute.route", "llmroute.tier", "llmroute.target", "llmroute.experiment"))
        self.attempts = Tally("llmroute.attempts", "{attempt}", "Upstream attempts by outcome.",
                               ("llmroute.route", "llmroute.target", "llmroute.outcome"))
        self.failovers = Tally("llmroute.failovers", "{failover}",
                                "Requests moved away from a target, by the reason.",
                                ("llmroute.route", "llmroute.target", "llmroute.failover_reason"))
        self.ejections = Tally("llmroute.ejections", "{ejection}", "Targets ejected by the breaker.",
                                ("llmroute.target", "llmroute.ejection_reason"))
        self.connections_closed = Tally(
            "llmroute.connections.closed", "{connection}",
            "Client connections the sidecar refused or cut to protect itself, by the reason.",
            ("llmroute.plane", "llmroute.reason"))
        self.in_flight = 0
        self.histograms = (self.operation_duration, self.time_to_first_chunk, self.token_usage,
                           self.request_duration)
        self.tallies = (self.requests, self.cost, self.attempts, self.failovers, self.ejections,
                        self.connections_closed)
        self.gauges = (
            Gauge("llmroute.requests.in_flight", "{request}", "Client requests being served.",
                   self._in_flight_points, up_down=True),
            Gauge("llmroute.circuit.state", "", "1 for each target's current breaker state, 0 for the others.",
                   self._circuit_points),
            Gauge("llmroute.budget.spent.usd", "{USD}", "Spent in the current budget period, per route.",
                   self._spent_points),
            Gauge("llmroute.budget.remaining.usd", "{USD}",
                   "Left in the current budget period (limit - spent - reserved).", self._remaining_points),
            Gauge("llmroute.table.info", "", "1, with the routing table's version as an attribute.",
                   self._table_points),
            Gauge("llmroute.connections.open", "{connection}", "Client connections open, per plane.",
                   self._connection_points, up_down=True),
        )

    def _start_tracing(self, exporter: SpanExporter, resource: Resource) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._tracer_provider = TracerProvider(resource=resource)
        self._tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self._tracer_provider.get_tracer(SCOPE_NAME, __version__)

    def _start_otlp_metrics(self, exporter: MetricExporter, resource: Resource) -> None:
        """The SDK pipeline for OTLP: its histograms recorded beside ours, the rest observed from ours."""
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        self._otlp_metrics = PeriodicExportingMetricReader(
            exporter, export_interval_millis=self.settings.metric_export_interval_s * 1000.0)
        self._meter_provider = MeterProvider(resource=resource, metric_readers=[self._otlp_metrics])
        meter = self._meter_provider.get_meter(SCOPE_NAME, __version__)
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

    def register_connections(self, source: ConnectionSource) -> None:
        self._connections = source

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

    def _connection_points(self) -> Iterable[Point]:
        for plane, count in self._connections() if self._connections else ():
            yield {"llmroute.plane": plane}, count

    def _table_points(self) -> Iterable[Point]:
        if self._table_version is not None:
            yield {"llmroute.table.version": self._table_version}, 1

    # --- per request ---------------------------------------------------------------

    def start_request(self, operation: str, headers: Mapping[str, str], *, method: str = "POST",
                      path: str | None = None, metered: bool = True) -> RequestScope:
        return RequestScope(self, operation, headers, method, path or _ENDPOINT_PATHS.get(operation, "/"),
                            metered)

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
