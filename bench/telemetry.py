"""What telemetry and the access log add to one request: the calls the server makes, timed in a tight loop.

Measured in the same run against a baseline that does the same dictionary work without
telemetry (so the numbers are comparable on any machine):

- baseline: build the attribute dicts a request carries, nothing recorded;
- metrics only: no OTLP endpoint (the default) — no tracer, metrics aggregated for `/metrics`;
- metrics over OTLP too: a metrics exporter is configured, so the SDK histograms are recorded
  as well (an exporter that drops what it gets: the export itself runs in the SDK's thread);
- in-memory spans: a real SDK tracer with a BatchSpanProcessor and an in-memory exporter,
  which is what an OTLP traces endpoint costs on the request path (export runs in its own thread);
- access log: the JSON line of a request with a failover, with the logger off (WARNING), through
  `logging` as the CLI configures it (a StreamHandler with its format, to a file, one write and
  flush per line), and through `BufferedAccessLog` (same line, written every 64 KiB here: the
  tight loop never yields to the event loop, so the 100 ms timer does not fire).

Run: `.venv/bin/python bench/telemetry.py [--requests N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import tempfile
import time
from collections.abc import Callable
from typing import IO

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.errors import AttemptRecord, FailureKind, UpstreamError
from llmroute_proxy.server import accesslog
from llmroute_proxy.server.outcome import Outcome
from llmroute_proxy.server.telemetry import Telemetry, TelemetrySettings
from llmroute_proxy.table import ProviderType, Target, TargetId

PRIMARY = Target(id=TargetId("openai/gpt-4o@eu"), provider="openai", provider_type=ProviderType.OPENAI,
                 model="gpt-4o", url="https://api.openai.com/v1", region="eu")
BACKUP = Target(id=TargetId("anthropic/claude-sonnet-4@eu"), provider="anthropic",
                provider_type=ProviderType.ANTHROPIC, model="claude-sonnet-4", url="https://api.anthropic.com",
                region="eu")
HEADERS = {"content-type": "application/json", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
USAGE = Usage(input_tokens=1200, output_tokens=300, cached_input_tokens=1000)
FAILURE = UpstreamError(FailureKind.OVERLOADED, "overloaded", status=529)


def baseline_request(i: int) -> object:
    """The same dicts a request's telemetry builds, so the ratio shows what recording adds."""
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                  "server.address": "api.openai.com", "server.port": 443, "llmroute.route": "default",
                  "llmroute.target": PRIMARY.id}
    response = {**attributes, "gen_ai.response.model": "gpt-4o"}
    tokens = ({**response, "gen_ai.token.type": "input"}, {**response, "gen_ai.token.type": "output"})
    return (HEADERS.get("traceparent"), tokens, {"llmroute.route": "default", "llmroute.tier": "smart",
                                                 "http.response.status_code": 200}, i)


def telemetry_request(telemetry: Telemetry, failover: bool) -> Callable[[int], object]:
    def run(i: int) -> object:
        scope = telemetry.start_request("chat", HEADERS)
        scope.routed("default", "smart", "long-prompts", None)
        if failover:
            scope.attempt(BACKUP, 1, "auto", True).end(error=FAILURE)
        attempt = scope.attempt(PRIMARY, 2 if failover else 1, "auto", True)
        attempt.first_chunk()
        attempt.end(USAGE, 0.0042, ("stop",), "gpt-4o", None)
        scope.end(200, None, USAGE, 0.0042)
        return scope.trace_id
    return run


class DroppingMetricExporter(MetricExporter):
    """An OTLP stand-in: takes every export and throws it away."""

    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass


OUTCOME = Outcome(
    at=1764000000.0, route="default", model="auto", tier="smart", rule="long-prompts", reason="rule matched",
    experiment=None, stream=True, target=PRIMARY,
    attempts=(AttemptRecord(BACKUP.id, 529, FailureKind.OVERLOADED, "overloaded", 0.12),
              AttemptRecord(PRIMARY.id, 200, None, "ok", 0.8)),
    status=200, latency_s=0.93456, usage=USAGE, cost_usd=0.0042, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
"""A streamed request with a failover, as the access line reads it."""


def access_request(i: int) -> object:
    accesslog.log_access(OUTCOME)
    return i


def measure(work: Callable[[int], object], requests: int, between: Callable[[], None] | None = None) -> float:
    """Best of five runs, in µs per request (the minimum is the least disturbed by the machine)."""
    best = float("inf")
    for _ in range(5):
        gc.collect()
        started = time.perf_counter()
        for i in range(requests):
            work(i)
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
        if between is not None:
            between()
    return best


def access_log_rows(n: int, sink: IO[bytes]) -> list[tuple[str, float]]:
    """The access line: off, through `logging` as the CLI sets it up, and buffered."""
    root = logging.getLogger()
    handler = logging.StreamHandler(open(sink.fileno(), "w", closefd=False))  # noqa: SIM115
    handler.setFormatter(logging.Formatter(accesslog.LINE_FORMAT))
    root.addHandler(handler)
    access = logging.getLogger("llmroute.access")
    try:
        access.setLevel(logging.WARNING)
        rows = [("access log: logger off (WARNING)", measure(access_request, n))]
        access.setLevel(logging.INFO)
        rows.append(("access log: through logging", measure(access_request, n)))

        async def buffered() -> float:
            writer = accesslog.buffer_access_log(sink)
            try:
                return measure(access_request, n, writer.flush)
            finally:
                writer.close()
        rows.append(("access log: BufferedAccessLog", asyncio.run(buffered())))
        return rows
    finally:
        root.removeHandler(handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000)
    args = parser.parse_args()
    n = args.requests

    metrics_only = Telemetry(TelemetrySettings())
    otlp_metrics = Telemetry(TelemetrySettings(metric_export_interval_s=3600.0),
                             metric_exporter=DroppingMetricExporter())
    exporter = InMemorySpanExporter()
    traced = Telemetry(TelemetrySettings(), span_exporter=exporter)

    def drain() -> None:
        traced.flush()
        exporter.clear()

    base = measure(baseline_request, n)
    rows = [
        ("baseline (dict work only)", base),
        ("metrics only, no exporter", measure(telemetry_request(metrics_only, False), n)),
        ("metrics only, with a failover", measure(telemetry_request(metrics_only, True), n)),
        ("metrics over OTLP too", measure(telemetry_request(otlp_metrics, False), n)),
        ("in-memory span exporter", measure(telemetry_request(traced, False), n, drain)),
        ("in-memory spans, with a failover", measure(telemetry_request(traced, True), n, drain)),
    ]
    with tempfile.TemporaryFile() as sink:
        rows += access_log_rows(n, sink)
    print(f"telemetry and access log per request, {n} requests, best of 5")
    print(f"{'configuration':<36}{'µs/request':>12}{'× baseline':>12}{'added µs':>11}")
    for name, micros in rows:
        print(f"{name:<36}{micros:>12.2f}{micros / base:>12.1f}{micros - base:>11.2f}")
    for telemetry in (metrics_only, otlp_metrics, traced):
        telemetry.shutdown()


if __name__ == "__main__":
    main()
