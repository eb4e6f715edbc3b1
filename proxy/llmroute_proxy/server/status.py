"""The `/status` document: what the sidecar is doing, for people and for the operator.

Built on demand from live state; holds no credential (targets are shown by id, provider,
model, region and URL host only), and every string in it passes the sidecar's scrubber, so an
upstream text kept in it (a last error, an attempt's reason) cannot show a key either.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from llmroute_proxy import __version__
from llmroute_proxy.server.outcome import Outcome
from llmroute_proxy.server.state import Sidecar


def status_document(sidecar: Sidecar) -> dict[str, Any]:
    document: dict[str, Any] = sidecar.scrubber.json(_document(sidecar))
    return document


def _document(sidecar: Sidecar) -> dict[str, Any]:
    table = sidecar.table
    now = sidecar.clock()
    wall = sidecar.wallclock()
    targets = []
    if table is not None:
        for target in table.targets().values():
            health = sidecar.health.snapshot(target.id, now)
            counters = sidecar.counters_for(target.id)
            latency = sidecar.load.latency(target.id)
            targets.append({
                "id": target.id,
                "provider": target.provider,
                "type": target.provider_type.value,
                "model": target.model,
                "region": target.region,
                "host": urlsplit(target.url).netloc,
                "state": health.state,
                "consecutive_failures": health.consecutive_failures,
                "ejections": health.ejections,
                "state_seconds_left": round(health.until, 3) if health.until else 0,
                "last_failure": health.last_failure.value if health.last_failure else None,
                "in_flight": sidecar.load.outstanding(target.id),
                "latency_ms": round(latency * 1000, 2) if latency is not None else None,
                "requests": counters.requests,
                "failures": counters.failures,
                "error_ratio": round(counters.failures / counters.requests, 4) if counters.requests else 0.0,
                "last_error": counters.last_error,
            })
    budgets = []
    if table is not None:
        for route in table.routes:
            if route.budget is None:
                continue
            snap = sidecar.ledger.snapshot(route.name, wall)
            budgets.append({
                "route": route.name,
                "period": route.budget.period.value,
                "limit_usd": route.budget.limit_usd,
                "spent_usd": snap.spent_usd,
                "reserved_usd": snap.reserved_usd,
                "percent": snap.percent,
                "on_exceeded": route.budget.on_exceeded if route.budget.downgrade_tier is None
                else f"downgrade:{route.budget.downgrade_tier}",
                "period_end": snap.period_end,
            })
    return {
        "version": __version__,
        "table": None if table is None else {
            "version": table.version,
            "source": sidecar.table_source,
            "pushed_version": sidecar.pushed_version,
            "region": table.region,
            "loaded_at": sidecar.table_loaded_at,
            "age_seconds": round(wall - sidecar.table_loaded_at, 1) if sidecar.table_loaded_at else None,
            "routes": [{"name": r.name, "tiers": {n: [t.id for t in tier.targets] for n, tier in r.tiers.items()},
                        "default_tier": r.default_tier} for r in table.routes],
        },
        "operator": sidecar.operator_status() if sidecar.operator_status else None,
        "draining": sidecar.draining,
        "in_flight": sidecar.in_flight,
        "targets": targets,
        "budgets": budgets,
        "spend": _spend(sidecar),
        "responses_store": sidecar.responses.status(now),
        "decisions": [_decision(outcome) for outcome in reversed(sidecar.decisions)],
    }


def _decision(outcome: Outcome) -> dict[str, Any]:
    """One recent request: where it went and why, each attempt, and what it cost."""
    decision = {
        "at": outcome.at, "route": outcome.route, "model": outcome.model, "tier": outcome.tier,
        "rule": outcome.rule, "reason": outcome.reason, "experiment": outcome.experiment,
        "target": outcome.target.id if outcome.target is not None else None,
        "attempts": [{"target": a.target, "status": a.status, "reason": a.reason} for a in outcome.attempts],
        "status": outcome.status, "latency_ms": round(outcome.latency_s * 1000, 2), "cost_usd": outcome.cost_usd,
    }
    if outcome.usage_estimated:
        decision["usage_estimated"] = True
    if outcome.error is not None:
        decision["error"] = outcome.error
    if outcome.fallback_from is not None:
        decision["fallback_from"] = outcome.fallback_from
    if outcome.passed_over:
        decision["passed_over"] = outcome.passed_over_shown()
    return decision


def _spend(sidecar: Sidecar) -> dict[str, dict[str, Any]]:
    """Tokens and USD since start, per route, tier ("route/tier"), target and experiment."""
    out: dict[str, dict[str, Any]] = {"routes": {}, "tiers": {}, "targets": {}, "experiments": {}}
    for (kind, name), spend in sidecar.spend.items():
        out[kind + "s"][name] = spend.to_json()
    return out
