"""Per-route spending budgets that concurrency cannot overshoot.

Reserve-before-dispatch: each request reserves its priced worst case (prompt + max output)
before it is sent, and is refused when what is spent, what is reserved by requests still in
flight and its own estimate together pass the limit. When it ends, its reservation is
settled to the real cost or released (nothing was spent). So a burst of concurrent requests
sees every other request's reservation and cannot jointly run past the limit, as long as
each request costs no more than its estimate.

Periods are UTC calendar hours, days or months; a new period starts from zero spend, while
reservations still open when it starts are carried into it (their money is spent in it).
In cluster mode the operator leases each sidecar a share of a route's budget: `lease` replaces the
route's limit here (reserve-then-settle then runs against the share) without a table swap.
Time is an epoch-seconds argument; the module does no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from llmroute_proxy.table import Budget, BudgetPeriod


@dataclass(slots=True)  # per request: not frozen, 4× cheaper to build
class Reservation:
    route: str
    id: int
    estimate_usd: float


@dataclass(slots=True)  # per request: not frozen, 4× cheaper to build
class BudgetDecision:
    """What to do with one request. `alert` is true for exactly one reservation per period:
    the one that took spent + reserved across `alertAtPercent`. `exceeded` says the request
    runs past the limit (allowed only under `alert` or `downgrade`)."""

    allowed: bool
    downgrade_to: str | None = None
    retry_after: float = 0.0  # seconds to the period's end
    alert: bool = False
    reservation: Reservation | None = None
    exceeded: bool = False


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    spent_usd: float
    reserved_usd: float
    limit_usd: float
    percent: float  # spent as a percentage of the limit
    period_start: float  # epoch seconds
    period_end: float


@dataclass(slots=True)
class _Account:
    budget: Budget
    period_start: float
    period_end: float
    spent: float = 0.0
    alerted: bool = False
    open: dict[int, float] = field(default_factory=dict)  # reservation id → estimate

    @property
    def reserved(self) -> float:
        return sum(self.open.values())


def period_bounds(period: BudgetPeriod, now: float) -> tuple[float, float]:
    """The UTC calendar period holding `now`, as epoch seconds [start, end)."""
    t = datetime.fromtimestamp(now, UTC)
    if period is BudgetPeriod.HOUR:
        start = t.replace(minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 3600.0
    if period is BudgetPeriod.DAY:
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 86400.0
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.timestamp(), end.timestamp()


class BudgetLedger:
    """Spend and open reservations per route. One per sidecar; outlives table swaps."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self._ids: Iterator[int] = itertools.count(1)
        self._leased: dict[str, float] = {}  # route → this sidecar's share of its limit, USD

    def lease(self, limits_usd: Mapping[str, float], spent_floors: Mapping[str, float], now: float) -> None:
        """Enforce these shares instead of the routes' own limits (routes not named keep theirs).
        `spent_floors` is spend the operator already counted from this sidecar: a sidecar that
        restarted (and so forgot its spend) starts the period from there, not from zero."""
        self._leased = dict(limits_usd)
        for route, floor in spent_floors.items():
            account = self._accounts.get(route)
            if account is not None:
                current = self._current(route, self._leased_budget(route, account.budget), now)
                current.spent = max(current.spent, floor)

    def configure(self, budgets: Mapping[str, Budget]) -> None:
        """Adopt a new table's budgets: spend is kept for routes that stay, others are dropped."""
        for route in list(self._accounts):
            if route not in budgets:
                del self._accounts[route]
        for route, budget in budgets.items():
            account = self._accounts.get(route)
            if account is None:
                self._accounts[route] = _Account(budget, 0.0, 0.0)  # an empty period: rolled on first use
            else:
                account.budget = budget

    def _leased_budget(self, route: str, budget: Budget) -> Budget:
        share = self._leased.get(route)
        return budget if share is None or share == budget.limit_usd else replace(budget, limit_usd=share)

    def reserve(self, route: str, budget: Budget, estimate_usd: float, now: float) -> BudgetDecision:
        budget = self._leased_budget(route, budget)
        account = self._current(route, budget, now)
        estimate = max(estimate_usd, 0.0)
        committed = account.spent + account.reserved + estimate
        exceeded = committed > budget.limit_usd
        retry_after = max(account.period_end - now, 0.0)
        downgrade = budget.downgrade_tier if budget.on_exceeded == "downgrade" else None
        if exceeded and budget.on_exceeded != "alert" and downgrade is None:
            return BudgetDecision(allowed=False, retry_after=retry_after, exceeded=True)
        reservation = Reservation(route, next(self._ids), estimate)
        account.open[reservation.id] = estimate
        alert = not account.alerted and committed >= budget.limit_usd * budget.alert_at_percent / 100.0
        account.alerted = account.alerted or alert
        return BudgetDecision(allowed=True, downgrade_to=downgrade if exceeded else None,
                              retry_after=retry_after if exceeded else 0.0, alert=alert,
                              reservation=reservation, exceeded=exceeded)

    def settle(self, reservation: Reservation, actual_usd: float, now: float) -> None:
        """Replace the estimate by the real cost. Settling twice, or after release, does nothing."""
        account = self._accounts.get(reservation.route)
        if account is None or account.open.pop(reservation.id, None) is None:
            return
        self._current(reservation.route, account.budget, now).spent += max(actual_usd, 0.0)

    def release(self, reservation: Reservation) -> None:
        """The request failed before anything was billed: free its reservation."""
        account = self._accounts.get(reservation.route)
        if account is not None:
            account.open.pop(reservation.id, None)

    def snapshot(self, route: str, now: float, budget: Budget | None = None) -> BudgetStatus:
        """The route's current period. A route never seen (no reservation, not configured)
        is shown with `budget` when given, else as all zeros."""
        if budget is None:
            known = self._accounts.get(route)
            if known is None:
                return BudgetStatus(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
            budget = known.budget
        account = self._current(route, self._leased_budget(route, budget), now)
        limit = account.budget.limit_usd
        percent = account.spent / limit * 100.0 if limit > 0 else (100.0 if account.spent > 0 else 0.0)
        return BudgetStatus(account.spent, account.reserved, limit, percent,
                            account.period_start, account.period_end)

    def routes(self) -> list[str]:
        return list(self._accounts)

    def _current(self, route: str, budget: Budget, now: float) -> _Account:
        account = self._accounts.get(route)
        if account is not None and account.budget.period is budget.period \
                and account.period_start <= now < account.period_end:
            account.budget = budget
            return account
        start, end = period_bounds(budget.period, now)
        carried = account.open if account is not None else {}
        account = self._accounts[route] = _Account(budget, start, end, open=carried)
        return account
