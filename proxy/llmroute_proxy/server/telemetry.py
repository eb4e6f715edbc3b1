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
one): otherwise no tracer is touched and the hot path pays for metrics alone.

Metrics always go to a private Prometheus registry (read by `/metrics`) and, when an OTLP
endpoint is configured, are also pushed over OTLP/HTTP. The gauges that describe live state
(circuits, budgets, table version) are read at collection time from callbacks the server
registers, so nothing is stored twice.

Content (prompts, completions) is recorded only with `LLMROUTE_CAPTURE_CONTENT=true`, as the
spec's opt-in `gen_ai.input.messages` / `gen_ai.output.messages` attributes. Credentials never
reach this module: targets are described by id, provider, model, region and URL host.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeterProvider, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from llmroute_proxy import __version__
from llmroute_proxy.errors import UpstreamError
from llmroute_proxy.providers.base import Usage
from llmroute_proxy.routing.budget import BudgetStatus
from llmroute_proxy.table import ProviderType, Target

SERVICE_NAME_DEFAULT = "llmroute-proxy"
CAPTURE_CONTENT_ENV = "LLMROUTE_CAPTURE_CONTENT"

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

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

CircuitSource = Callable[[], Iterable[tuple[str, str]]]
"""(target id, circuit state) for every target of the current table."""
BudgetSource = Callable[[], Iterable[tuple[str, BudgetStatus]]]
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


@functools.lru_cache(maxsize=1024)
def _server(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def provider_name(target: Target) -> str:
    return PROVIDER_NAMES.get(target.provider_type, target.provider)


def error_type(error: BaseException) -> str:
    """Low-cardinality `error.type`: the failure kind for upstream errors, else the class name."""
    return error.kind.value if isinstance(error, UpstreamError) else type(error).__qualname__


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
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        self._tracer_provider = self._tracing(settings, span_exporter, resource)
        self._tracer = self._tracer_provider.get_tracer("llmroute", __version__) if self._tracer_provider else None
        self._propagator = TraceContextTextMapPropagator()
        self._meter_provider: MeterProvider | None = None
        self._otlp_metrics: PeriodicExportingMetricReader | None = None
        if settings.disabled:
            meter = NoOpMeterProvider().get_meter("llmroute")
        else:
            self._meter_provider = MeterProvider(resource=resource,
                                                 metric_readers=self._readers(settings, metric_exporter))
            meter = self._meter_provider.get_meter("llmroute", __version__)
        self._instruments(meter)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> Telemetry:
        return cls(TelemetrySettings.from_env(os.environ if env is None else env), **kwargs)

    @property
    def tracing(self) -> bool:
        """Whether spans are recorded at all (an exporter exists)."""
        return self._tracer is not None

    @staticmethod
    def _tracing(settings: TelemetrySettings, exporter: SpanExporter | None,
                 resource: Resource) -> TracerProvider | None:
        if settings.disabled:
            return None
        if exporter is None and settings.traces_endpoint:
            exporter = OTLPSpanExporter(endpoint=settings.traces_endpoint)
        if exporter is None:
            return None
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return provider

    def _readers(self, settings: TelemetrySettings, exporter: MetricExporter | None) -> list[MetricReader]:
        readers: list[MetricReader] = [PrometheusMetricReader(registry=self.registry)]
        if exporter is None and settings.metrics_endpoint:
            exporter = OTLPMetricExporter(endpoint=settings.metrics_endpoint)
        if exporter is not None:
            self._otlp_metrics = PeriodicExportingMetricReader(
                exporter, export_interval_millis=settings.metric_export_interval_s * 1000.0)
            readers.append(self._otlp_metrics)
        return readers

    def _instruments(self, meter: Meter) -> None:
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration", "s", "GenAI operation duration (one upstream attempt).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk", "s",
            "Time from sending a streamed request upstream to its first chunk with output.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.request_duration = meter.create_histogram(
            "llmroute.request.duration", "s", "Whole client request, every attempt included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.requests = _Tally(meter, "llmroute.requests", "{request}", "Client requests answered.",
                               ("llmroute.route", "llmroute.tier", "http.response.status_code", "error.type"))
        self.cost = _Tally(meter, "llmroute.cost.usd", "{USD}", "Money spent upstream, in USD.",
                           ("llmroute.route", "llmroute.tier", "llmroute.target", "llmroute.experiment"))
        self.attempts = _Tally(meter, "llmroute.attempts", "{attempt}", "Upstream attempts by outcome.",
                               ("llmroute.route", "llmroute.target", "llmroute.outcome"))
        self.failovers = _Tally(meter, "llmroute.failovers", "{failover}",
                                "Requests moved away from a target, by the reason.",
                                ("llmroute.route", "llmroute.target", "llmroute.failover_reason"))
        self.ejections = _Tally(meter, "llmroute.ejections", "{ejection}", "Targets ejected by the breaker.",
                                ("llmroute.target", "llmroute.ejection_reason"))
        self.in_flight = 0
        meter.create_observable_up_down_counter("llmroute.requests.in_flight", [self._observe_in_flight],
                                                "{request}", "Client requests being served.")
        meter.create_observable_gauge("llmroute.circuit.state", [self._observe_circuits], "",
                                      "1 for each target's current breaker state, 0 for the others.")
        meter.create_observable_gauge("llmroute.budget.spent.usd", [self._observe_spent], "{USD}",
                                      "Spent in the current budget period, per route.")
        meter.create_observable_gauge("llmroute.budget.remaining.usd", [self._observe_remaining], "{USD}",
                                      "Left in the current budget period (limit - spent - reserved).")
        meter.create_observable_gauge("llmroute.table.info", [self._observe_table], "",
                                      "1, with the routing table's version as an attribute.")

    # --- what the server registers -------------------------------------------------

    def register_circuits(self, source: CircuitSource) -> None:
        self._circuits = source

    def register_budgets(self, source: BudgetSource) -> None:
        self._budgets = source

    def set_table_version(self, version: str | None) -> None:
        self._table_version = version

    def ejected(self, target: str, reason: str) -> None:
        self.ejections.add(1.0, target, reason)

    def _observe_in_flight(self, _: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.in_flight)

    def _observe_circuits(self, _: CallbackOptions) -> Iterable[Observation]:
        for target, state in self._circuits() if self._circuits else ():
            for known in CIRCUIT_STATES:
                yield Observation(1 if known == state else 0, {"llmroute.target": target, "state": known})
            if state not in CIRCUIT_STATES:
                yield Observation(1, {"llmroute.target": target, "state": state})

    def _observe_spent(self, _: CallbackOptions) -> Iterable[Observation]:
        for route, status in self._budgets() if self._budgets else ():
            yield Observation(status.spent_usd, {"llmroute.route": route})

    def _observe_remaining(self, _: CallbackOptions) -> Iterable[Observation]:
        for route, status in self._budgets() if self._budgets else ():
            yield Observation(status.limit_usd - status.spent_usd - status.reserved_usd, {"llmroute.route": route})

    def _observe_table(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._table_version is not None:
            yield Observation(1, {"llmroute.table.version": self._table_version})

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
        if self._otlp_metrics is not None:  # not the provider: a pull reader would queue a duplicate scrape
            self._otlp_metrics.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and stop the exporters. Blocking (OTLP sends): call it off the event loop."""
        if self._closed:
            return
        self._closed = True
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()


class _Tally:
    """A counter summed in a dict on the request path and handed to the SDK only at collection.

    The SDK's synchronous `add` costs ~10 µs with a handful of attributes; a dict update is
    ~0.3 µs, and an observable counter reports the same cumulative sums. Empty values are
    left out of the attributes (an optional dimension such as the experiment).
    """

    __slots__ = ("_names", "_values")

    def __init__(self, meter: Meter, name: str, unit: str, description: str, names: tuple[str, ...]) -> None:
        self._names = names
        self._values: dict[tuple[str | int, ...], float] = {}
        meter.create_observable_counter(name, [self._observe], unit, description)

    def add(self, amount: float, *key: str | int) -> None:
        self._values[key] = self._values.get(key, 0.0) + amount

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        for key, value in list(self._values.items()):
            yield Observation(value, {n: v for n, v in zip(self._names, key, strict=True) if v != ""})


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
        attributes: dict[str, str | int] = {"llmroute.route": self.route, "http.response.status_code": status}
        if error_type:
            attributes["error.type"] = error_type
        telemetry.request_duration.record(telemetry.clock() - self._started, attributes)
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

    __slots__ = ("_ended", "_first_chunk", "_metric_attributes", "_scope", "_span", "_started", "stream",
                 "target")

    def __init__(self, scope: RequestScope, target: Target, number: int, requested_model: str, stream: bool,
                 failover_reason: str | None) -> None:
        self._scope = scope
        self.target = target
        self.stream = stream
        self._ended = False
        self._first_chunk: float | None = None
        address, port = _server(target.url)
        self._metric_attributes: dict[str, str | int] = {
            "gen_ai.operation.name": scope.operation,
            "gen_ai.provider.name": provider_name(target),
            "gen_ai.request.model": target.model,
            "server.address": address,
            "server.port": port,
            "llmroute.target": target.id,
        }
        self._span: Span | None = None
        telemetry = scope._telemetry
        if telemetry._tracer is not None:
            attributes: dict[str, Any] = {**self._metric_attributes, **_routing_attributes(scope),
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
        telemetry.time_to_first_chunk.record(self._first_chunk - self._started, self._metric_attributes)

    def end(self, usage: Usage | None = None, cost_usd: float | None = None, finish_reasons: Sequence[str] = (),
            response_model: str | None = None, error: BaseException | None = None,
            output_messages: Sequence[Mapping[str, Any]] | None = None) -> None:
        """The attempt is over: success when `error` is None. Calling it again does nothing."""
        if self._ended:
            return
        self._ended = True
        scope = self._scope
        telemetry = scope._telemetry
        attributes = self._metric_attributes
        if response_model:
            attributes = {**attributes, "gen_ai.response.model": response_model}
        kind = error_type(error) if error is not None else None
        if kind is not None:
            attributes = {**attributes, "error.type": kind}
            scope._failure = kind
        telemetry.operation_duration.record(telemetry.clock() - self._started, attributes)
        telemetry.attempts.add(1.0, scope.route, self.target.id, kind or "ok")
        if usage is not None:
            telemetry.token_usage.record(usage.input_tokens, {**attributes, "gen_ai.token.type": "input"})
            telemetry.token_usage.record(usage.output_tokens, {**attributes, "gen_ai.token.type": "output"})
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
