"""A pod's table compiled from the routes that select it and the providers they name. Pure.

The table is what the sidecar's own `compile_payload` accepts, so the operator never pushes a table a
sidecar would NACK: one it refuses is a `Compiled` with a problem and no table (the pod keeps its last).
The provider endpoints of the pod's region come first. The global figures the hub divides into leases
(provider limits, route budgets) ride along, keyed `namespace/name`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmroute_operator.contracts import DesiredTable, GlobalLimits
from llmroute_operator.judging import ServingProvider, ServingRoute
from llmroute_proxy.sync.protocol import TableRejected, compile_payload, payload_version, table_payload
from llmroute_proxy.table import Limits


@dataclass(slots=True)
class Compiled:
    table: DesiredTable | None
    problem: str | None = None


def compile_table(namespace: str, region: str, routes: list[ServingRoute],
                  providers: list[ServingProvider]) -> Compiled:
    documents: list[Mapping[str, Any]] = [regional(p.document, region) for p in providers]
    documents += [r.document for r in routes]
    credentials = {p.name: p.credential for p in providers if p.credential is not None}
    payload = table_payload(region, documents, credentials)
    try:
        compile_payload(payload)
    except TableRejected as rejected:
        return Compiled(None, f"{namespace} (region {region or 'none'}): {rejected}")
    limits = {f"{namespace}/{p.name}": GlobalLimits(p.spec.limits.requests_per_minute,
                                                     p.spec.limits.tokens_per_minute,
                                                     p.spec.limits.max_concurrency)
              for p in providers if p.spec.limits != Limits()}
    budgets = {f"{namespace}/{r.name}": r.spec.budget.limit_usd for r in routes if r.spec.budget is not None}
    return Compiled(DesiredTable(payload_version(payload), payload, limits, budgets))


def regional(document: Mapping[str, Any], region: str) -> dict[str, Any]:
    """The provider with the endpoints of `region` first (stable otherwise)."""
    spec = dict(document["spec"])
    endpoints = spec.get("endpoints")
    if isinstance(endpoints, list) and region:
        spec["endpoints"] = sorted(endpoints, key=lambda e: not (isinstance(e, Mapping) and e.get("region") == region))
    return {**document, "spec": spec}
