from __future__ import annotations

import asyncio
import gzip
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from llmroute_proxy import __version__
from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.routing.budget import BudgetStatus
from llmroute_proxy.server.telemetry import (
    CARDINALITY_LIMIT,
    DURATION_BUCKETS,
    TOKEN_BUCKETS,
    Telemetry,
    TelemetrySettings,
)
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

SECRET = "sk-live-DO-NOT-LEAK-4242"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def target(provider_type: ProviderType = ProviderType.OPENAI, provider: str = "openai-main",
           model: str = "gpt-4o", url: str = "https://api.openai.com/v1", region: str = "eu") -> Target:
    return Target(id=TargetId(f"{provider}/{model}@{region}"), provider=provider, provider_type=provider_type,
                  model=model, url=url, region=region, credential=Secret(SECRET))


PRIMARY = target()
BACKUP = target(ProviderType.ANTHROPIC, "anthropic", "claude-sonnet-4", "https://api.anthropic.com", "us")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter, clock: FakeClock) -> Iterator[Telemetry]:
    t = Telemetry(TelemetrySettings(), span_exporter=exporter, clock=clock)
    yield t
    t.shutdown()


def spans(telemetry: Telemetry, exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    telemetry.flush()
    return {span.name: span for span in exporter.get_finished_spans()}


def samples(telemetry: Telemetry, name: str) -> list[tuple[dict[str, str], float]]:
    body, _ = telemetry.prometheus_text()
    return [(dict(s.labels), s.value) for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == name]


def value(telemetry: Telemetry, name: str, **labels: str) -> float:
    found = [v for lbls, v in samples(telemetry, name) if all(lbls.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples(telemetry, name))
    return found[0]


def serve_one(telemetry: Telemetry, clock: FakeClock, headers: dict[str, str] | None = None,
              stream: bool = False) -> str:
    scope = telemetry.start_request("chat", headers or {})
    scope.routed("default", "smart", "long-prompts", "canary")
    attempt = scope.attempt(PRIMARY, 1, "auto", stream)
    clock.now += 0.05
    if stream:
        attempt.first_chunk()
    clock.now += 0.25
    usage = Usage(input_tokens=1200, output_tokens=300, cached_input_tokens=1000, reasoning_tokens=40)
    attempt.end(usage, 0.0042, ["stop"], "gpt-4o-2024-08-06", None)
    scope.end(200, None, usage, 0.0042)
    return scope.trace_id


def test_a_request_is_a_server_span_with_a_client_span_per_attempt(
        telemetry: Telemetry, exporter: InMemorySpanExporter, clock: FakeClock) -> None:
    serve_one(telemetry, clock)
    found = spans(telemetry, exporter)
    server, client = found["POST /v1/chat/completions"], found["chat gpt-4o"]
    assert server.kind is SpanKind.SERVER and client.kind is SpanKind.CLIENT
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert dict(client.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.reasoning.output_tokens": 40,
        "gen_ai.response.finish_reasons": ("stop",),
        "server.address": "api.openai.com",
        "server.port": 443,
        "llmroute.route": "default",
        "llmroute.tier": "smart",
        "llmroute.rule": "long-prompts",
        "llmroute.experiment": "canary",
        "llmroute.attempt": 1,
        "llmroute.target": "openai-main/gpt-4o@eu",
        "llmroute.region": "eu",
        "llmroute.requested_model": "auto",
        "llmroute.cost_usd": 0.0042,
    }
    server_attributes = dict(server.attributes or {})
    assert server_attributes["http.request.method"] == "POST"
    assert server_attributes["http.route"] == "/v1/chat/completions"
    assert server_attributes["http.response.status_code"] == 200
    assert server_attributes["llmroute.route"] == "default"
    assert server_attributes["llmroute.attempts"] == 1
    assert server_attributes["llmroute.cost_usd"] == 0.0042
    assert server_attributes["gen_ai.usage.input_tokens"] == 1200


def test_an_incoming_traceparent_is_continued(
        telemetry: Telemetry, exporter: InMemorySpanExporter, clock: FakeClock) -> None:
    trace_id = serve_one(telemetry, clock, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    server = spans(telemetry, exporter)["POST /v1/chat/completions"]
    assert trace_id == TRACE_ID
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID


def test_without_a_traceparent_a_new_trace_starts(
        telemetry: Telemetry, exporter: InMemorySpanExporter, clock: FakeClock) -> None:
    trace_id = serve_one(telemetry, clock)
    server = spans(telemetry, exporter)["POST /v1/chat/completions"]
    assert server.parent is None
    assert trace_id == format(server.context.trace_id, "032x") and trace_id != "0" * 32


def test_a_failover_marks_the_failed_attempt_and_names_the_reason_on_the_next(
        telemetry: Telemetry, exporter: InMemorySpanExporter, clock: FakeClock) -> None:
    scope = telemetry.start_request("chat", {})
    scope.routed("default", "smart", None)
    first = scope.attempt(PRIMARY, 1)
    first.end(error=UpstreamError(FailureKind.OVERLOADED, "overloaded", status=529))
    second = scope.attempt(BACKUP, 2)
    second.end(Usage(10, 5), 0.001, ["stop"], "claude-sonnet-4", None)
    scope.end(200, None, Usage(10, 5), 0.001)
    found = spans(telemetry, exporter)
    failed, recovered = found["chat gpt-4o"], found["chat claude-sonnet-4"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "overloaded"
    assert failed.attributes["http.response.status_code"] == 529
    assert recovered.attributes is not None
    assert recovered.attributes["llmroute.failover_reason"] == "overloaded"
    assert recovered.attributes["gen_ai.provider.name"] == "anthropic"
    assert recovered.status.status_code is StatusCode.UNSET
    assert value(telemetry, "llmroute_failovers_total", llmroute_target="openai-main/gpt-4o@eu",
                 llmroute_failover_reason="overloaded") == 1
    assert value(telemetry, "llmroute_attempts_total", llmroute_outcome="overloaded") == 1
    assert value(telemetry, "llmroute_attempts_total", llmroute_outcome="ok") == 1


def test_a_retry_of_the_same_target_is_not_a_failover(telemetry: Telemetry, clock: FakeClock) -> None:
    scope = telemetry.start_request("chat", {})
    scope.routed("default", "smart", None)
    scope.attempt(PRIMARY, 1).end(error=UpstreamError(FailureKind.RATE_LIMITED, "slow down", status=429))
    scope.attempt(PRIMARY, 2).end(Usage(1, 1), None, (), None, None)
    scope.end(200)
    assert samples(telemetry, "llmroute_failovers_total") == []
    assert value(telemetry, "llmroute_attempts_total", llmroute_outcome="rate_limited") == 1


@pytest.mark.parametrize(("provider_type", "provider", "expected"), [
    (ProviderType.OPENAI, "openai-main", "openai"),
    (ProviderType.ANTHROPIC, "claude", "anthropic"),
    (ProviderType.GEMINI, "google", "gcp.gemini"),
    (ProviderType.AZURE_OPENAI, "azure-eu", "azure.ai.openai"),
    (ProviderType.OPENAI_COMPATIBLE, "groq", "groq"),
])
def test_the_provider_name_follows_the_genai_conventions(
        telemetry: Telemetry, exporter: InMemorySpanExporter, provider_type: ProviderType, provider: str,
        expected: str) -> None:
    scope = telemetry.start_request("chat", {})
    scope.attempt(target(provider_type, provider, model="m"), 1).end()
    scope.end(200)
    attributes = spans(telemetry, exporter)["chat m"].attributes
    assert attributes is not None and attributes["gen_ai.provider.name"] == expected


def test_a_server_error_marks_the_server_span_as_failed(
        telemetry: Telemetry, exporter: InMemorySpanExporter) -> None:
    scope = telemetry.start_request("embeddings", {})
    scope.end(502, "502")
    server = spans(telemetry, exporter)["POST /v1/embeddings"]
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes is not None and server.attributes["error.type"] == "502"


def test_a_client_error_leaves_the_server_span_unset(telemetry: Telemetry, exporter: InMemorySpanExporter) -> None:
    scope = telemetry.start_request("chat", {}, path="/v1/messages")
    scope.end(400, "400")
    assert spans(telemetry, exporter)["POST /v1/messages"].status.status_code is StatusCode.UNSET


def test_content_is_not_recorded_unless_capture_is_enabled(
        telemetry: Telemetry, exporter: InMemorySpanExporter) -> None:
    scope = telemetry.start_request("chat", {})
    scope.routed("default", "smart", None, None, [{"role": "user", "content": "my secret prompt"}])
    scope.attempt(PRIMARY, 1).end(Usage(1, 1), None, ["stop"], None, None,
                                  [{"role": "assistant", "content": "the answer"}])
    scope.end(200)
    for span in spans(telemetry, exporter).values():
        assert "gen_ai.input.messages" not in (span.attributes or {})
        assert "gen_ai.output.messages" not in (span.attributes or {})
        assert "my secret prompt" not in str(span.attributes)


def test_captured_content_uses_the_spec_message_shape(exporter: InMemorySpanExporter) -> None:
    telemetry = Telemetry(TelemetrySettings(capture_content=True), span_exporter=exporter)
    scope = telemetry.start_request("chat", {})
    scope.routed("default", "smart", None, None, [{"role": "user", "content": "hello"}])
    scope.attempt(PRIMARY, 1).end(Usage(1, 1), None, ["stop"], None, None,
                                  [{"role": "assistant", "content": "hi there"}])
    scope.end(200)
    attributes = spans(telemetry, exporter)["chat gpt-4o"].attributes
    telemetry.shutdown()
    assert attributes is not None
    assert orjson.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "hello"}]}]
    assert orjson.loads(str(attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hi there"}], "finish_reason": "stop"}]


def test_genai_histograms_use_the_spec_bucket_boundaries_under_prometheus_names(
        telemetry: Telemetry, clock: FakeClock) -> None:
    serve_one(telemetry, clock, stream=True)
    duration = samples(telemetry, "gen_ai_client_operation_duration_seconds_bucket")
    assert [float(lbls["le"]) for lbls, _ in duration][:-1] == list(DURATION_BUCKETS)
    assert value(telemetry, "gen_ai_client_operation_duration_seconds_bucket", le="0.32") == 1
    assert value(telemetry, "gen_ai_client_operation_duration_seconds_bucket", le="0.16") == 0
    ttfc = samples(telemetry, "gen_ai_client_operation_time_to_first_chunk_seconds_bucket")
    assert [float(lbls["le"]) for lbls, _ in ttfc][:-1] == list(DURATION_BUCKETS)
    assert value(telemetry, "gen_ai_client_operation_time_to_first_chunk_seconds_bucket", le="0.08") == 1
    assert value(telemetry, "gen_ai_client_operation_time_to_first_chunk_seconds_bucket", le="0.04") == 0
    tokens = [lbls for lbls, _ in samples(telemetry, "gen_ai_client_token_usage_bucket")
              if lbls["gen_ai_token_type"] == "input"]
    assert [float(lbls["le"]) for lbls in tokens][:-1] == [float(b) for b in TOKEN_BUCKETS]
    assert value(telemetry, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 1200
    assert value(telemetry, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 300


def test_genai_metrics_carry_the_required_attributes(telemetry: Telemetry, clock: FakeClock) -> None:
    serve_one(telemetry, clock)
    labels = samples(telemetry, "gen_ai_client_operation_duration_seconds_count")[0][0]
    assert labels["gen_ai_operation_name"] == "chat"
    assert labels["gen_ai_provider_name"] == "openai"
    assert labels["gen_ai_request_model"] == "gpt-4o"
    assert labels["gen_ai_response_model"] == "gpt-4o-2024-08-06"
    assert labels["server_address"] == "api.openai.com" and labels["server_port"] == "443"


def test_time_to_first_chunk_is_recorded_only_for_streams(telemetry: Telemetry, clock: FakeClock) -> None:
    serve_one(telemetry, clock, stream=False)
    assert samples(telemetry, "gen_ai_client_operation_time_to_first_chunk_seconds_count") == []


def test_cost_requests_and_in_flight_metrics(telemetry: Telemetry, clock: FakeClock) -> None:
    scope = telemetry.start_request("chat", {})
    assert value(telemetry, "llmroute_requests_in_flight") == 1
    scope.routed("default", "smart", None, "canary")
    scope.attempt(PRIMARY, 1).end(Usage(1, 1), 0.25, (), None, None)
    scope.end(200, None, Usage(1, 1), 0.25)
    scope.end(200, None, Usage(1, 1), 0.25)
    assert value(telemetry, "llmroute_requests_in_flight") == 0
    assert value(telemetry, "llmroute_cost_usd_total", llmroute_route="default", llmroute_tier="smart",
                 llmroute_target="openai-main/gpt-4o@eu", llmroute_experiment="canary") == 0.25
    assert value(telemetry, "llmroute_requests_total", http_response_status_code="200") == 1
    assert value(telemetry, "llmroute_request_duration_seconds_count") == 1


def test_a_fallback_tiers_attempt_and_answer_are_that_tiers_with_the_routed_one_kept(
        telemetry: Telemetry, exporter: InMemorySpanExporter) -> None:
    scope = telemetry.start_request("chat", {})
    scope.routed("default", "smart", "long-prompts")
    scope.attempt(PRIMARY, 1).end(error=UpstreamError(FailureKind.OVERLOADED, "overloaded", status=529))
    scope.attempt(BACKUP, 2, tier="cheap").end(Usage(10, 5), 0.001, ["stop"], "claude-sonnet-4", None)
    scope.end(200, None, Usage(10, 5), 0.001, tier="cheap")

    found = spans(telemetry, exporter)
    server = dict(found["POST /v1/chat/completions"].attributes or {})
    assert (server["llmroute.tier"], server["llmroute.fallback_from"]) == ("cheap", "smart")
    assert server["llmroute.rule"] == "long-prompts"
    assert (found["chat gpt-4o"].attributes or {})["llmroute.tier"] == "smart"
    assert (found["chat claude-sonnet-4"].attributes or {})["llmroute.tier"] == "cheap"
    assert value(telemetry, "llmroute_requests_total", llmroute_tier="cheap") == 1
    assert value(telemetry, "llmroute_cost_usd_total", llmroute_tier="cheap") == 0.001


def test_an_unmetered_request_is_traced_but_touches_no_metric(
        telemetry: Telemetry, exporter: InMemorySpanExporter, clock: FakeClock) -> None:
    """A token count: its spans, with the count's attempts, and not a single metric point."""
    scope = telemetry.start_request("count_tokens", {}, path="/v1/messages/count_tokens", metered=False)
    assert value(telemetry, "llmroute_requests_in_flight") == 0
    scope.routed("default", "smart", "long-prompts")
    scope.attempt(BACKUP, 1, "auto").end(error=UpstreamError(FailureKind.OVERLOADED, "overloaded", status=529))
    attempt = scope.attempt(PRIMARY, 2, "auto", stream=True)
    clock.now += 0.05
    attempt.first_chunk()
    attempt.end(Usage(5, 70), 0.5, (), None, None)
    scope.counted("estimated")
    scope.end(200)

    assert shown_by_prometheus(telemetry) == {}
    found = spans(telemetry, exporter)
    server = found["POST /v1/messages/count_tokens"]
    assert dict(server.attributes or {}) == {
        "http.request.method": "POST", "http.route": "/v1/messages/count_tokens",
        "gen_ai.operation.name": "count_tokens", "llmroute.route": "default", "llmroute.tier": "smart",
        "llmroute.rule": "long-prompts", "llmroute.token_count": "estimated", "http.response.status_code": 200,
        "llmroute.attempts": 2}
    failed = found["count_tokens claude-sonnet-4"]
    assert failed.kind is SpanKind.CLIENT and failed.parent is not None
    assert failed.parent.span_id == server.context.span_id
    assert failed.attributes is not None and failed.attributes["error.type"] == "overloaded"


def test_ending_an_attempt_twice_counts_it_once(telemetry: Telemetry) -> None:
    scope = telemetry.start_request("chat", {})
    attempt = scope.attempt(PRIMARY, 1)
    attempt.end(Usage(1, 1), 0.5, (), None, None)
    attempt.end(None, None, (), None, asyncio.CancelledError())
    scope.end(499)
    assert value(telemetry, "llmroute_attempts_total", llmroute_outcome="ok") == 1
    assert value(telemetry, "llmroute_cost_usd_total") == 0.5


def test_an_abandoned_attempt_reports_the_exception_class(telemetry: Telemetry) -> None:
    scope = telemetry.start_request("chat", {})
    scope.attempt(PRIMARY, 1).end(error=asyncio.CancelledError())
    scope.end(499)
    assert value(telemetry, "llmroute_attempts_total", llmroute_outcome="CancelledError") == 1


def test_live_state_gauges_come_from_the_registered_callbacks(telemetry: Telemetry) -> None:
    telemetry.register_circuits(lambda: [("a/m@eu", "ejected"), ("b/m@eu", "healthy")])
    telemetry.register_budgets(lambda: [("default", BudgetStatus(7.5, 1.0, 10.0, 75.0, 0.0, 3600.0))])
    telemetry.set_table_version("v-abc123")
    telemetry.ejected("a/m@eu", "server_error")
    assert value(telemetry, "llmroute_circuit_state", llmroute_target="a/m@eu", state="ejected") == 1
    assert value(telemetry, "llmroute_circuit_state", llmroute_target="a/m@eu", state="healthy") == 0
    assert value(telemetry, "llmroute_circuit_state", llmroute_target="b/m@eu", state="healthy") == 1
    assert value(telemetry, "llmroute_budget_spent_usd", llmroute_route="default") == 7.5
    assert value(telemetry, "llmroute_budget_remaining_usd", llmroute_route="default") == 1.5
    assert value(telemetry, "llmroute_table_info", llmroute_table_version="v-abc123") == 1
    assert value(telemetry, "llmroute_ejections_total", llmroute_target="a/m@eu") == 1


def test_the_prometheus_content_type_is_the_text_format(telemetry: Telemetry) -> None:
    _, content_type = telemetry.prometheus_text()
    assert content_type.startswith("text/plain; version=0.0.4")


def test_without_an_endpoint_no_spans_are_made_but_metrics_are(clock: FakeClock) -> None:
    telemetry = Telemetry(TelemetrySettings(), clock=clock)
    assert not telemetry.tracing
    assert serve_one(telemetry, clock) == ""
    assert serve_one(telemetry, clock, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}) == TRACE_ID
    assert value(telemetry, "gen_ai_client_operation_duration_seconds_count") == 2
    telemetry.shutdown()


def test_the_sdk_disabled_records_nothing(exporter: InMemorySpanExporter, clock: FakeClock) -> None:
    telemetry = Telemetry(TelemetrySettings(disabled=True), span_exporter=exporter, clock=clock)
    serve_one(telemetry, clock)
    telemetry.flush()
    assert exporter.get_finished_spans() == ()
    assert telemetry.prometheus_text()[0] == b""
    telemetry.shutdown()


def test_many_instances_do_not_share_metrics(clock: FakeClock) -> None:
    first, second = Telemetry(clock=clock), Telemetry(clock=clock)
    serve_one(first, clock)
    assert value(first, "gen_ai_client_operation_duration_seconds_count") == 1
    assert samples(second, "gen_ai_client_operation_duration_seconds_count") == []
    first.shutdown()
    second.shutdown()


def test_no_credential_reaches_spans_or_metrics(
        telemetry: Telemetry, exporter: InMemorySpanExporter, clock: FakeClock) -> None:
    serve_one(telemetry, clock)
    assert SECRET not in str([dict(s.attributes or {}) for s in spans(telemetry, exporter).values()])
    assert SECRET.encode() not in telemetry.prometheus_text()[0]


@pytest.mark.parametrize(("env", "expected"), [
    ({}, TelemetrySettings()),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
     TelemetrySettings(traces_endpoint="http://collector:4318/v1/traces",
                       metrics_endpoint="http://collector:4318/v1/metrics")),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9/x"},
     TelemetrySettings(traces_endpoint="http://t:9/x", metrics_endpoint="http://c:4318/v1/metrics")),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4318/v1/metrics"},
     TelemetrySettings(metrics_endpoint="http://m:4318/v1/metrics")),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"},
     TelemetrySettings(metrics_endpoint="http://c:4318/v1/metrics")),
    ({"OTEL_SERVICE_NAME": "checkout"}, TelemetrySettings(service_name="checkout")),
    ({"OTEL_RESOURCE_ATTRIBUTES": "team=ai,service.name=cart"}, TelemetrySettings(service_name="cart")),
    ({"OTEL_SDK_DISABLED": "true"}, TelemetrySettings(disabled=True)),
    ({"OTEL_METRIC_EXPORT_INTERVAL": "5000"}, TelemetrySettings(metric_export_interval_s=5.0)),
    ({"LLMROUTE_CAPTURE_CONTENT": "true"}, TelemetrySettings(capture_content=True)),
    ({"LLMROUTE_CAPTURE_CONTENT": "no"}, TelemetrySettings()),
], ids=["nothing set", "one endpoint for both", "traces endpoint overrides", "metrics only",
        "traces exporter none", "service name", "service name from resource attributes", "sdk disabled",
        "export interval", "content capture on", "content capture off"])
def test_settings_follow_the_standard_otel_variables(env: dict[str, str], expected: TelemetrySettings) -> None:
    assert TelemetrySettings.from_env(env) == expected


class OtlpReceiver:
    """A minimal OTLP/HTTP collector: decodes what the real exporters send."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/traces", self.receive_traces)
        self.app.router.add_post("/v1/metrics", self.receive_metrics)

    @staticmethod
    async def body(request: web.Request) -> bytes:
        assert request.content_type == "application/x-protobuf"
        data = await request.read()
        return gzip.decompress(data) if request.headers.get("Content-Encoding") == "gzip" else data

    async def receive_traces(self, request: web.Request) -> web.Response:
        self.traces.append(ExportTraceServiceRequest.FromString(await self.body(request)))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def receive_metrics(self, request: web.Request) -> web.Response:
        self.metrics.append(ExportMetricsServiceRequest.FromString(await self.body(request)))
        return web.Response(body=ExportMetricsServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


async def test_spans_and_metrics_reach_a_real_otlp_http_receiver(clock: FakeClock) -> None:
    receiver = OtlpReceiver()
    server = TestServer(receiver.app, host="127.0.0.1")
    await server.start_server()
    base = f"http://127.0.0.1:{server.port}"
    telemetry = Telemetry.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": base, "OTEL_SERVICE_NAME": "sidecar-test"},
                                   clock=clock)
    try:
        assert telemetry.tracing
        serve_one(telemetry, clock, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        await asyncio.to_thread(telemetry.shutdown)
    finally:
        await server.close()
    received = {span.name: (span, {a.key: _plain(a.value) for a in span.attributes})
                for request in receiver.traces for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans}
    assert set(received) == {"POST /v1/chat/completions", "chat gpt-4o"}
    server_span, _ = received["POST /v1/chat/completions"]
    assert server_span.trace_id.hex() == TRACE_ID
    _, client_attributes = received["chat gpt-4o"]
    assert client_attributes["gen_ai.provider.name"] == "openai"
    assert client_attributes["gen_ai.usage.input_tokens"] == 1200
    assert client_attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert client_attributes["llmroute.tier"] == "smart"
    resource = {a.key: _plain(a.value) for a in receiver.traces[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "sidecar-test"
    metric_names = {m.name for request in receiver.metrics for rm in request.resource_metrics
                    for sm in rm.scope_metrics for m in sm.metrics}
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage", "llmroute.cost.usd"} <= metric_names


def test_flushing_spans_does_not_duplicate_the_prometheus_exposition(
        telemetry: Telemetry, clock: FakeClock) -> None:
    serve_one(telemetry, clock)
    telemetry.flush()
    telemetry.flush()
    assert len(samples(telemetry, "gen_ai_client_operation_duration_seconds_count")) == 1


SCOPE_LABELS = f'otel_scope_name="llmroute",otel_scope_schema_url="",otel_scope_version="{__version__}"'


def test_the_exposition_keeps_the_opentelemetry_prometheus_exporter_format_byte_for_byte(clock: FakeClock) -> None:
    """Captured from the OpenTelemetry Prometheus exporter (0.66b2) before metrics were aggregated
    locally: dashboards and alerts keep working only if nothing here moves."""
    telemetry = Telemetry(TelemetrySettings(service_name="golden"), clock=clock)
    telemetry.set_table_version("v-1")
    scope = telemetry.start_request("chat", {})
    scope.routed("default", "smart", None)
    clock.now += 0.25
    scope.end(429, "429")
    body = telemetry.prometheus_text()[0].decode()
    telemetry.shutdown()
    series = 'error_type="429",http_response_status_code="429",{}llmroute_route="default",' + SCOPE_LABELS
    buckets = "".join("llmroute_request_duration_seconds_bucket{" + series.format(f'le="{bound}",') + "} " + count + "\n"
                      for bound, count in zip([*DURATION_BUCKETS, "+Inf"], ["0.0"] * 5 + ["1.0"] * 10, strict=True))
    assert re.sub(r'service_instance_id="[0-9a-f-]{36}",', "", body) == (
        "# HELP target_info Target metadata\n"
        "# TYPE target_info gauge\n"
        f'target_info{{service_name="golden",service_version="{__version__}",telemetry_sdk_language="python",'
        f'telemetry_sdk_name="opentelemetry",telemetry_sdk_version="{sdk_version}"}} 1.0\n'
        "# HELP llmroute_request_duration_seconds Whole client request, every attempt included.\n"
        "# TYPE llmroute_request_duration_seconds histogram\n"
        + buckets
        + "llmroute_request_duration_seconds_count{" + series.format("") + "} 1.0\n"
        + "llmroute_request_duration_seconds_sum{" + series.format("") + "} 0.25\n"
        "# HELP llmroute_requests_total Client requests answered.\n"
        "# TYPE llmroute_requests_total counter\n"
        'llmroute_requests_total{error_type="429",http_response_status_code="429",llmroute_route="default",'
        f'llmroute_tier="smart",{SCOPE_LABELS}}} 1.0\n'
        "# HELP llmroute_requests_in_flight Client requests being served.\n"
        "# TYPE llmroute_requests_in_flight gauge\n"
        f"llmroute_requests_in_flight{{{SCOPE_LABELS}}} 0.0\n"
        "# HELP llmroute_table_info 1, with the routing table's version as an attribute.\n"
        "# TYPE llmroute_table_info gauge\n"
        f'llmroute_table_info{{llmroute_table_version="v-1",{SCOPE_LABELS}}} 1.0\n'
    )


def test_an_attribute_some_points_lack_is_an_empty_label_on_them(telemetry: Telemetry) -> None:
    scope = telemetry.start_request("chat", {})
    scope.attempt(PRIMARY, 1).end(error=UpstreamError(FailureKind.OVERLOADED, "overloaded", status=529))
    scope.attempt(PRIMARY, 2).end(Usage(1, 1), None, (), "gpt-4o-2024-08-06", None)
    scope.end(200)
    found = {(lbls["error_type"], lbls["gen_ai_response_model"])
             for lbls, _ in samples(telemetry, "gen_ai_client_operation_duration_seconds_count")}
    assert found == {("overloaded", ""), ("", "gpt-4o-2024-08-06")}


@pytest.mark.parametrize(("seconds", "first_bucket"), [
    (0.0, "0.01"), (0.01, "0.01"), (0.0100001, "0.02"), (0.32, "0.32"), (81.92, "81.92"), (81.93, "+Inf"),
])
def test_a_duration_counts_in_the_first_bucket_whose_bound_it_does_not_exceed(
        telemetry: Telemetry, clock: FakeClock, seconds: float, first_bucket: str) -> None:
    clock.now = 0.0
    scope = telemetry.start_request("chat", {})
    clock.now = seconds
    scope.end(200)
    counts = {lbls["le"]: v for lbls, v in samples(telemetry, "llmroute_request_duration_seconds_bucket")}
    bounds = [f"{b}" for b in DURATION_BUCKETS] + ["+Inf"]
    assert [counts[b] for b in bounds] == [0.0] * bounds.index(first_bucket) + [1.0] * (
        len(bounds) - bounds.index(first_bucket))
    assert value(telemetry, "llmroute_request_duration_seconds_sum") == seconds


def test_beyond_the_cardinality_limit_new_series_fold_into_one_overflow_series(telemetry: Telemetry) -> None:
    for n in range(CARDINALITY_LIMIT + 5):
        telemetry.ejected(f"t{n}", "server_error")
    ejections = samples(telemetry, "llmroute_ejections_total")
    assert len(ejections) == CARDINALITY_LIMIT + 1
    assert value(telemetry, "llmroute_ejections_total", otel_metric_overflow="true") == 5
    assert value(telemetry, "llmroute_ejections_total", llmroute_target="t0") == 1


class CapturingMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


PROMETHEUS_NAMES = {
    "gen_ai.client.operation.duration": "gen_ai_client_operation_duration_seconds",
    "gen_ai.client.token.usage": "gen_ai_client_token_usage",
    "gen_ai.client.operation.time_to_first_chunk": "gen_ai_client_operation_time_to_first_chunk_seconds",
    "llmroute.request.duration": "llmroute_request_duration_seconds",
    "llmroute.requests": "llmroute_requests_total",
    "llmroute.cost.usd": "llmroute_cost_usd_total",
    "llmroute.attempts": "llmroute_attempts_total",
    "llmroute.failovers": "llmroute_failovers_total",
}
SampleKey = tuple[str, frozenset[tuple[str, str]]]


def otlp_as_prometheus(data: MetricsData) -> dict[SampleKey, float]:
    """The SDK's own aggregation of what OTLP sends, as the samples Prometheus would show."""
    found: dict[SampleKey, float] = {}
    for metric in (m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
        name = PROMETHEUS_NAMES.get(metric.name)
        for point in metric.data.data_points if name else ():
            labels = frozenset((k.replace(".", "_"), str(v)) for k, v in (point.attributes or {}).items())
            if isinstance(point, HistogramDataPoint):
                found[(f"{name}_count", labels)] = point.count
                found[(f"{name}_sum", labels)] = point.sum
                bounds = [*(f"{b}" for b in point.explicit_bounds), "+Inf"]
                for bound, cumulative in zip(bounds, itertools.accumulate(point.bucket_counts), strict=True):
                    found[(f"{name}_bucket", labels | {("le", bound)})] = cumulative
            elif isinstance(point, NumberDataPoint):
                found[(f"{name}", labels)] = point.value
    return found


def shown_by_prometheus(telemetry: Telemetry) -> dict[SampleKey, float]:
    body = telemetry.prometheus_text()[0].decode()
    wanted = {s for name in PROMETHEUS_NAMES.values() for s in (name, f"{name}_count", f"{name}_sum", f"{name}_bucket")}
    return {(s.name, frozenset((k, v) for k, v in s.labels.items() if v and not k.startswith("otel_scope"))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples if s.name in wanted}


def test_otlp_exports_the_same_histograms_and_sums_that_metrics_shows(clock: FakeClock) -> None:
    exporter = CapturingMetricExporter()
    telemetry = Telemetry(TelemetrySettings(metric_export_interval_s=3600), metric_exporter=exporter, clock=clock)
    serve_one(telemetry, clock, stream=True)
    scope = telemetry.start_request("chat", {})
    scope.attempt(BACKUP, 1).end(error=UpstreamError(FailureKind.OVERLOADED, "overloaded", status=529))
    clock.now += 0.07
    scope.attempt(PRIMARY, 2).end(Usage(5, 70), 0.5, (), None, None)
    scope.end(200, None, Usage(5, 70), 0.5)
    telemetry.flush()
    shown = shown_by_prometheus(telemetry)
    telemetry.shutdown()
    assert otlp_as_prometheus(exporter.exports[-1]) == shown
    assert {name for name, _ in shown} >= {f"{n}_bucket" for n in list(PROMETHEUS_NAMES.values())[:4]}


def test_without_an_endpoint_no_otlp_exporter_nor_sdk_pipeline_is_imported() -> None:
    probe = ("import sys; from llmroute_proxy.server.telemetry import Telemetry; t = Telemetry(); "
             "t.prometheus_text(); print(sorted(m for m in sys.modules if 'otlp' in m "
             "or m.startswith(('opentelemetry.sdk.metrics', 'opentelemetry.sdk.trace', 'opentelemetry.exporter'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": ""}).stdout
    assert loaded.strip() == "[]"
