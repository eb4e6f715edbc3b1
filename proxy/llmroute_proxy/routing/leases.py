"""This sidecar's leased shares of global limits and budgets, and what is left when a lease lapses.

The operator divides every provider's global RPM/TPM/concurrency and every route's budget among the
sidecars that use them and leases each its share for a TTL. While a lease is held its shares are the
local limits; once the TTL passes without renewal (the operator is gone) each share falls to
`fallback_fraction` of the last one held — never more — because other sidecars may meanwhile have
been given more. Figures the lease does not name keep the table's own. Pure: `now` is an argument.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from llmroute_proxy.table import Budget, Limits

FALLBACK_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class BudgetShare:
    limit_usd: float
    spent_usd: float = 0.0  # this sidecar's spend the operator has already counted


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    expires_at: float  # monotonic seconds
    limits: Mapping[str, Limits] = field(default_factory=dict)
    budgets: Mapping[str, BudgetShare] = field(default_factory=dict)


class LeaseHolder:
    __slots__ = ("_fraction", "_grant")

    def __init__(self, fallback_fraction: float = FALLBACK_FRACTION) -> None:
        if not 0 <= fallback_fraction <= 1:
            raise ValueError(f"fallback_fraction must be within [0, 1], got {fallback_fraction}")
        self._fraction = fallback_fraction
        self._grant: LeaseGrant | None = None

    def grant(self, lease: LeaseGrant) -> None:
        self._grant = lease

    def state(self, now: float) -> str:
        """none | held | expired"""
        if self._grant is None:
            return "none"
        return "held" if now < self._grant.expires_at else "expired"

    def expires_at(self) -> float | None:
        return None if self._grant is None else self._grant.expires_at

    def limits(self, table_limits: Mapping[str, Limits], now: float) -> dict[str, Limits]:
        """The limits to enforce for each provider of the table."""
        grant = self._grant
        if grant is None:
            return dict(table_limits)
        expired = now >= grant.expires_at
        out: dict[str, Limits] = {}
        for provider, own in table_limits.items():
            share = grant.limits.get(provider)
            out[provider] = own if share is None else self._fallback_limits(share) if expired else share
        return out

    def budget(self, route: str, budget: Budget, now: float) -> Budget:
        share = None if self._grant is None else self._grant.budgets.get(route)
        if share is None:
            return budget
        return replace(budget, limit_usd=self._budget_limit(share, now))

    def spent_floors(self) -> dict[str, float]:
        return {} if self._grant is None else {r: s.spent_usd for r, s in self._grant.budgets.items()}

    def _budget_limit(self, share: BudgetShare, now: float) -> float:
        assert self._grant is not None
        if now < self._grant.expires_at:
            return share.limit_usd
        unspent = max(share.limit_usd - share.spent_usd, 0.0)
        return min(share.limit_usd, share.spent_usd + unspent * self._fraction)

    def _fallback_limits(self, last: Limits) -> Limits:
        def scaled(value: float | None) -> float | None:
            return None if value is None else value * self._fraction

        concurrency = last.max_concurrency
        if concurrency is not None:
            concurrency = min(concurrency, max(1, math.floor(concurrency * self._fraction)))
        return Limits(scaled(last.requests_per_minute), scaled(last.tokens_per_minute), concurrency)
