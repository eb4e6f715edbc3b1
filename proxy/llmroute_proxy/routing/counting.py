"""Which target counts a request's tokens (`POST /v1/messages/count_tokens`).

A count is asked where the request itself would go, since each provider tokenizes its own way: the
target a Messages request with the same body would try first. The decision is `decide`'s (route,
rules, tier, arm, the narrowing of an Anthropic-only request), without a budget; the order is the
attempt planner's (`attempt_tiers`, then `order_targets`), only looked at, so that counting leaves
the round robin where it is; a target whose circuit is open is passed over. Nothing is acquired:
counting takes no local limit, no retry budget and no probe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmroute_proxy.routing.balance import LoadBook, order_targets
from llmroute_proxy.routing.decide import RouteDecision
from llmroute_proxy.routing.failover import attempt_tiers, balance_key
from llmroute_proxy.routing.health import HealthBook
from llmroute_proxy.table import Target


@dataclass(frozen=True, slots=True)
class Counter:
    """The target a count is for, and whether to ask it (no: every target's circuit is open, and the
    first in the order is only named, its count estimated)."""

    tier: str
    target: Target
    ask: bool


def counting_target(decision: RouteDecision, *, health: HealthBook, load: LoadBook, rng: random.Random,
                    local_region: str, now: float) -> Counter | None:
    """The first target in the decision's attempt order whose circuit is not open; None when the
    order holds no target at all."""
    route = decision.route
    first: Counter | None = None
    for tier, targets in attempt_tiers(route, decision.choice.tier, decision.target_override):
        for target in order_targets(targets, policy=route.load_balancing, local_region=local_region, load=load,
                                    rng=rng, key=balance_key(route, tier), advance=False):
            if health.is_available(target.id, now):
                return Counter(tier, target, ask=True)
            first = first or Counter(tier, target, ask=False)
    return first
