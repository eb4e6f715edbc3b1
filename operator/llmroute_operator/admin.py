"""The operator's own admin plane: `/healthz`, `/readyz` and Prometheus `/metrics`.

Metrics are read from the live objects at scrape time (a custom collector), so nothing on the hot paths
updates a metric. No label value is ever a credential: only resource kinds, verdicts and counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from llmroute_operator.hub import Hub
from llmroute_operator.index import ClusterIndex
from llmroute_operator.status import StatusBook
from llmroute_operator.writer import SecretReader, StatusWriter


@dataclass(slots=True)
class Live:
    index: ClusterIndex
    book: StatusBook
    hub: Hub
    writer: StatusWriter
    secrets: SecretReader
    events_posted: Callable[[], int]


class _Collector:
    def __init__(self, live: Live) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        live = self.live
        yield _gauge("llmroute_operator_sidecars_connected", "Sidecar streams open to the hub.",
                     len(live.hub.connections))
        yield _gauge("llmroute_operator_pods", "Pods in the index.", len(live.index.pods()))
        resources = GaugeMetricFamily("llmroute_operator_resources", "LLMProviders and LLMRoutes by verdict.",
                                      labels=["kind", "accepted"])
        counts: dict[tuple[str, str], int] = {}
        for verdict in live.index.verdicts():
            key = (verdict.kind, str(verdict.accepted).lower())
            counts[key] = counts.get(key, 0) + 1
        for (kind, accepted), n in sorted(counts.items()):
            resources.add_metric([kind, accepted], n)
        yield resources
        yield _gauge("llmroute_operator_table_generation", "Changes that may have altered some pod's table.",
                     live.index.generation())
        yield _counter("llmroute_operator_table_compilations", "Distinct tables compiled.", live.index.compilations)
        yield _counter("llmroute_operator_table_cache_hits", "Tables answered from the compile cache.",
                       live.index.cache_hits)
        yield _counter("llmroute_operator_table_pushes", "Tables sent to sidecars.", live.book.push_count)
        latency = live.book.ack_latency
        buckets = [(f"{bound:g}", n) for bound, n in zip(latency.bounds, latency.counts, strict=True)]
        yield HistogramMetricFamily("llmroute_operator_ack_latency_seconds",
                                    "From a table sent to its ACK by the sidecar.",
                                    buckets=[*buckets, ("+Inf", latency.count)], sum_value=latency.total)
        yield _counter("llmroute_operator_acks", "Tables the sidecars ACKed.", live.book.ack_count)
        yield _counter("llmroute_operator_nacks", "Tables the sidecars NACKed.", live.book.nack_count)
        yield _counter("llmroute_operator_refused_connections", "Sidecar handshakes refused.", live.book.refusals)
        yield _counter("llmroute_operator_status_passes", "Status computations.", live.writer.passes)
        yield _counter("llmroute_operator_status_write_failures", "Status patches that failed.",
                       live.writer.failures)
        yield _counter("llmroute_operator_events_posted", "Kubernetes Events posted.", live.events_posted())
        yield _counter("llmroute_operator_secret_reads", "Secrets read.", live.secrets.reads)
        budget = GaugeMetricFamily("llmroute_operator_budget_spent_percent",
                                   "Spend of the route's current budget period, in percent of its limit.",
                                   labels=["namespace", "route"])
        degraded = GaugeMetricFamily("llmroute_operator_provider_degraded",
                                     "1 while the sidecars report the provider failing.",
                                     labels=["namespace", "provider"])
        for (kind, namespace, name), status in sorted(live.writer.written.items()):
            spend = status.get("spend") or {}
            if kind == "LLMRoute" and isinstance(spend.get("percentOfBudget"), int | float):
                budget.add_metric([namespace, name], float(spend["percentOfBudget"]))
            if kind == "LLMProvider":
                flags = [c for c in status.get("conditions") or [] if c.get("type") == "Degraded"]
                degraded.add_metric([namespace, name], 1.0 if flags and flags[0].get("status") == "True" else 0.0)
        yield budget
        yield degraded
        if live.hub.leases is not None:
            shares = GaugeMetricFamily("llmroute_operator_leased_requests_per_minute",
                                       "Sum of the requestsPerMinute shares leased for a provider "
                                       "(never above its global limit).", labels=["provider"])
            for provider, total in sorted(live.hub.leases.leased_requests_per_minute().items()):
                shares.add_metric([provider], total)
            yield shares
            totals = GaugeMetricFamily("llmroute_operator_lease_total_per_minute",
                                       "The total of a provider's requests or tokens per minute divided among its "
                                       "sidecars, and the bound that set it: configured, throttled (its 429s), "
                                       "provider_limit or provider_remaining (its rate-limit headers).",
                                       labels=["provider", "window", "bound"])
            for (provider, window), (total, bound) in sorted(live.hub.leases.totals().items()):
                totals.add_metric([provider, window, bound], total)
            yield totals


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def admin_app(live: Live, ready: Callable[[], bool]) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(live))  # type: ignore[arg-type]

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        return web.Response(text="ready\n") if ready() else web.Response(status=503, text="starting\n")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
