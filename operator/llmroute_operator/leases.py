"""Dividing global limits and budgets among the sidecars that use them. Pure: time is an argument.

Every provider's global requestsPerMinute, tokensPerMinute and maxConcurrency, and every route's
budget, is split among the sidecars whose tables use it: a floor (`floor_fraction` of the total,
in equal parts, so a new sidecar is never starved) plus the rest in proportion to recent demand
(an exponentially weighted rate from the usage reports). The shares never sum to more than the
global figure: a sidecar that left keeps its last share counted until its lease would have run
out, because it may still be using it. A route's budget share is what a sidecar has already
spent this period plus its part of what is left, so the shares add up to the limit.

Spend outlives an operator restart. A sidecar's hello says what it spent this period before its
reports to this operator (`announce`): that is its spend from before, on top of what its reports
add. The route's status says what all sidecars spent before the restart (`seed_spend`); less what
the pods said in their hellos, that is the spend of sidecars gone since, counted as spent. So a
rollout earlier in the period is not forgotten, and a connected sidecar's spend is not counted twice.

A provider that fails is leased where it is useful. The demand a sidecar's share follows is weighted by
the fraction of its attempts on that provider that did not fail (the targets' failures in its reports),
so a sidecar whose endpoint of the provider is down keeps only its floor and the rest goes to sidecars
for which the provider works. A provider that answers 429 to a `THROTTLED_RATIO` of the requests sent
across sidecars takes less than its configured figures: the total leased shrinks to what it accepted
(plus `PROBE_HEADROOM`, so more is tried as it recovers; never below `MIN_TOTAL_FRACTION`), so the
sidecars fail over at once instead of sending what will be refused; it grows back as the 429s stop.

Providers say what they take. Sidecars report the rate-limit headers of each provider's last answer
(limit, remaining and reset of its requests and tokens windows, and a retry-after), with their age; the
freshest report across sidecars counts, for `STATED_FRESH_S`. A stated limit below the configured figure
is the total (when it is a minute's figure: its reset is within a minute). What the provider says
remains — refilled toward its limit by its reset, nothing while a retry-after runs — bounds the total
to what the sidecars send now (with `PROBE_HEADROOM`) plus that remainder, never below
`MIN_TOTAL_FRACTION`: so others using the same key, or a burst that drained it, shrink the shares before
429s come, not after, and the total grows back as the provider refills.

Demand fades when it stops. A report is deltas of what changed, and a sidecar with nothing new sends none:
so every rate of a sidecar decays with each report by its interval (a provider or route the report leaves
out was not used in it), and the time a connected sidecar stays silent beyond its reporting interval counts
as time without use. An idle sidecar's share thus falls toward the floor with the half-life, and the
active sidecars get the rest.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llmroute_operator.contracts import DesiredTable, GlobalLimits, PodRef
from llmroute_proxy.dialects.base import Quota, RateLimits
from llmroute_proxy.routing.budget import period_bounds
from llmroute_proxy.sync.protocol import Lease, LeaseBudget, PeriodSpend, read_rate_limits
from llmroute_proxy.table import BudgetPeriod, Limits

K = TypeVar("K", bound=Hashable)

DEFAULT_TTL_S = 30.0
FLOOR_FRACTION = 0.2
HALF_LIFE_S = 60.0
THROTTLED_RATIO = 0.2  # of the requests sent to a provider, answered 429: it takes less than it is leased
PROBE_HEADROOM = 1.1  # a throttled provider is leased this much more than it accepted
MIN_TOTAL_FRACTION = 0.1  # a throttled provider's total never shrinks below this part of its figure
THROTTLED_MIN_PER_MINUTE = 5.0  # fewer 429s than this a minute, across sidecars, shrink nothing
STATED_FRESH_S = 60.0  # a provider's stated figures older than this say nothing of now
MINUTE_S = 60.0  # a stated limit whose reset is further off than this is not a minute's figure
LATE_REPORT_SLACK = 1.5  # of a reporting interval: a report this late is not yet silence
RATE_LIMITED = "rate_limited"  # the sidecar's failure kind for a provider's 429


def divide(total: float, demands: Mapping[K, float], floor_fraction: float = FLOOR_FRACTION) -> dict[K, float]:
    """`total` split over the keys of `demands`: equal floors plus the rest by demand; sum ≤ total."""
    if not demands or total <= 0:
        return {key: 0.0 for key in demands}
    floor = total * floor_fraction / len(demands)
    rest = total - floor * len(demands)
    weight = math.fsum(max(d, 0.0) for d in demands.values())
    shares = {key: floor + rest * (max(d, 0.0) / weight if weight > 0 else 1 / len(demands))
              for key, d in demands.items()}
    while (excess := math.fsum(shares.values()) - total) > 0:  # rounding: an ulp or two above the total
        largest = max(shares, key=lambda key: shares[key])
        shares[largest] = max(shares[largest] - max(excess, math.ulp(shares[largest])), 0.0)
    return shares


def usefulness(attempts: float, failures: float) -> float:
    """The fraction of attempts on a provider that did not fail (1 without attempts: nothing known)."""
    if attempts <= 0:
        return 1.0
    return min(max(1.0 - failures / attempts, 0.0), 1.0)


def throttled_total(total: float, sent: float, accepted: float) -> float:
    """`total` (per minute), or less when the provider answered 429 to at least THROTTLED_RATIO of the
    requests sent to it: what it accepted (`sent`, a rate in the figure's units, × `accepted`, the part of
    the requests not answered 429) with headroom, within [MIN_TOTAL_FRACTION × total, total]."""
    if sent <= 0 or accepted > 1 - THROTTLED_RATIO:
        return total
    return min(total, max(total * MIN_TOTAL_FRACTION, sent * accepted * PROBE_HEADROOM))


def stated_total(total: float, quota: Quota | None, retry_after_s: float | None, age_s: float,
                 sent: float) -> float:
    """`total` (per minute), or less when the provider's own headers, seen `age_s` ago, say so."""
    return min(stated_limit(total, quota, age_s), stated_remaining(total, quota, retry_after_s, age_s, sent))


def stated_limit(total: float, quota: Quota | None, age_s: float) -> float:
    """The provider's stated limit when lower than `total` and a minute's figure (its reset is within a
    minute), said at most STATED_FRESH_S ago; else `total`."""
    if age_s > STATED_FRESH_S or quota is None or quota.limit is None:
        return total
    return min(total, quota.limit) if quota.reset_s is None or quota.reset_s <= MINUTE_S else total


def stated_remaining(total: float, quota: Quota | None, retry_after_s: float | None, age_s: float,
                     sent: float) -> float:
    """What the provider says remains — refilled linearly toward its limit until the reset, nothing while a
    retry-after runs — plus what the sidecars send now (`sent` per minute, with PROBE_HEADROOM), within
    [MIN_TOTAL_FRACTION × total, total]; `total` when it said nothing of it at most STATED_FRESH_S ago."""
    if age_s > STATED_FRESH_S:
        return total
    remaining: float | None = None
    if retry_after_s is not None and age_s < retry_after_s:
        remaining = 0.0
    elif quota is not None and quota.remaining is not None and quota.reset_s is not None and age_s < quota.reset_s:
        refill = 0.0 if quota.limit is None else max(quota.limit - quota.remaining, 0.0) * age_s / quota.reset_s
        remaining = quota.remaining + refill
    if remaining is None:
        return total
    return min(total, max(sent * PROBE_HEADROOM + remaining, total * MIN_TOTAL_FRACTION))


def divide_whole(total: int, demands: Mapping[K, float], floor_fraction: float = FLOOR_FRACTION) -> dict[K, int]:
    """The same for counts (concurrency): whole numbers by largest remainder, summing to `total`."""
    exact = divide(float(total), demands, floor_fraction)
    whole = {key: math.floor(share) for key, share in exact.items()}
    left = max(total - sum(whole.values()), 0)
    for key in sorted(exact, key=lambda k: exact[k] - whole[k], reverse=True)[:left]:
        whole[key] += 1
    return whole


@dataclass(slots=True)
class _Held:
    expires_at: float
    limits: dict[str, Limits] = field(default_factory=dict)  # provider key → share
    budgets: dict[str, float] = field(default_factory=dict)  # route key → limit USD


@dataclass(frozen=True, slots=True)
class _Stated:
    seen_at: float  # monotonic, the operator's clock
    limits: RateLimits


@dataclass(slots=True)
class _Demand:
    """A sidecar's demand: exponentially weighted rates per minute, as of `at` (monotonic seconds)."""

    at: float
    interval: float  # the sidecar's reporting interval: silence beyond it is time without use
    rates: dict[tuple[str, str], float] = field(default_factory=dict)  # (provider|route key, metric) → rate

    def fade(self, seconds: float, half_life_s: float) -> None:
        if seconds > 0:
            factor = 0.5 ** (seconds / half_life_s)
            self.rates = {key: rate * factor for key, rate in self.rates.items()}

    def now(self, now: float, half_life_s: float) -> dict[tuple[str, str], float]:
        """The rates at `now`: a silence past the next report's due time (with half an interval of slack
        for a late timer) is time without use; the next report counts it from the due time."""
        silent = now - self.at - self.interval * LATE_REPORT_SLACK
        if silent <= 0:
            return self.rates
        factor = 0.5 ** (silent / half_life_s)
        return {key: rate * factor for key, rate in self.rates.items()}


@dataclass(slots=True)
class _Spend:
    period_start: float
    reported: dict[PodRef, float] = field(default_factory=dict)  # summed from the pod's usage reports
    before: dict[PodRef, float] = field(default_factory=dict)  # spent before that, as its hello said

    def of(self, pod: PodRef) -> float:
        return self.reported.get(pod, 0.0) + self.before.get(pod, 0.0)

    def total(self) -> float:
        return math.fsum((*self.reported.values(), *self.before.values()))


class LeaseBook:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S, floor_fraction: float = FLOOR_FRACTION,
                 half_life_s: float = HALF_LIFE_S) -> None:
        self.ttl_s = ttl_s
        self.floor_fraction = floor_fraction
        self.half_life_s = half_life_s
        self._demand: dict[PodRef, _Demand] = {}
        # (route key, period) → that period's spend by pod: every report counts in all three, because a
        # route's period is not known before its table is (after an operator restart) and may change
        self._spend: dict[tuple[str, BudgetPeriod], _Spend] = {}
        self._announced: dict[str, dict[PodRef, tuple[float, float]]] = {}  # route key → pod → (period start,
        # USD its hello said it had spent beyond what it had reported here), until the route's period is known
        self._silent: set[PodRef] = set()  # connected pods whose hello says nothing of spend (older sidecars)
        self._seeded: dict[str, tuple[float, float]] = {}  # route key → (period start, USD) read back from status
        self._held: dict[PodRef, _Held] = {}
        self._departed: dict[PodRef, _Held] = {}
        self._stated: dict[str, _Stated] = {}  # provider key → the freshest rate-limit headers reported
        self._totals: dict[tuple[str, str], tuple[float, str]] = {}  # (provider key, window) → (total, bound)
        self._now: dict[PodRef, Mapping[tuple[str, str], float]] = {}  # rates as of the `leases` call

    def observe(self, pod: PodRef, report: Mapping[str, Any], now: float, now_wall: float,
                periods: Mapping[str, BudgetPeriod] | None = None) -> None:
        """A usage report (decoded JSON) received at `now` (monotonic): demand rates per provider and
        route, and spend. Every rate of the sidecar decays by the report's interval, and by the silence
        before it beyond one interval; what the report names is added at its rate."""
        interval = max(float(report.get("interval", 0) or 0), 1e-3)
        demand = self._demand.get(pod)
        if demand is None:
            demand = self._demand[pod] = _Demand(now, interval)
        demand.fade(now - demand.at - demand.interval, self.half_life_s)
        demand.at, demand.interval = now, interval
        kept = 0.5 ** (interval / self.half_life_s)
        demand.fade(interval, self.half_life_s)
        rates = demand.rates

        def add(key: str, metric: str, count: float) -> None:
            if count:
                rates[key, metric] = rates.get((key, metric), 0.0) + count * 60 / interval * (1 - kept)

        for provider, counts in (report.get("providers") or {}).items():
            for metric in ("requests", "tokens"):
                add(_key(pod, provider), metric, float(counts.get(metric, 0) or 0))
        attempts: dict[str, dict[str, float]] = {}
        for target, counts in (report.get("targets") or {}).items():
            seen = attempts.setdefault(str(target).split("/", 1)[0], {"attempts": 0.0, "failures": 0.0,
                                                                     "throttled": 0.0})
            seen["attempts"] += float(counts.get("requests", 0) or 0)
            seen["failures"] += float(counts.get("failures", 0) or 0)
            seen["throttled"] += float((counts.get("errors") or {}).get(RATE_LIMITED, 0) or 0)
        for provider, seen in attempts.items():
            for metric, count in seen.items():
                add(_key(pod, provider), metric, count)
        for provider, entry in (report.get("rate_limits") or {}).items():
            limits, age = read_rate_limits(entry)
            key, seen_at = _key(pod, provider), now - age
            if (known := self._stated.get(key)) is None or known.seen_at <= seen_at:
                self._stated[key] = _Stated(seen_at, limits)
        for route, counts in (report.get("routes") or {}).items():
            key = _key(pod, route)
            cost = float(counts.get("cost_usd", 0) or 0)
            add(key, "cost", cost)
            for period in BudgetPeriod:
                spend = self._period(key, period, now_wall)
                spend.reported[pod] = spend.reported.get(pod, 0.0) + cost

    def announce(self, pod: PodRef, budgets: Mapping[str, PeriodSpend] | None) -> None:
        """The pod's hello: what it has spent per route (`namespace/name`) in the period starting at each
        `period_start`, less what its next report carries; None when its sidecar does not say. Its part
        beyond what this book counted from the pod's reports is the pod's spend from before: after an
        operator restart, all of it. It counts once the route's period is known (at the next `leases`)."""
        if budgets is None:
            self._silent.add(pod)
            return
        self._silent.discard(pod)
        for route, said in budgets.items():
            counted = next((spend.reported.get(pod, 0.0) for period in BudgetPeriod
                            if (spend := self._spend.get((route, period))) is not None
                            and spend.period_start == said.period_start), 0.0)
            said_before = self._announced.setdefault(route, {})
            earlier = said_before.get(pod)
            beyond = said.spent_usd - counted
            if earlier is not None and earlier[0] == said.period_start:  # two hellos before the route's period is known
                beyond = max(beyond, earlier[1])
            said_before[pod] = (said.period_start, beyond)

    def seed_spend(self, namespace: str, route: str, period_start: float, usd: float) -> None:
        """The route's spend read back from its status after an operator restart: every sidecar's, those
        still connected (which say theirs in their hello) and those gone since (which never will)."""
        self._seeded[f"{namespace}/{route}"] = (period_start, usd)

    def depart(self, pod: PodRef) -> None:
        """The pod's stream closed: its share stays counted until its lease runs out."""
        self._silent.discard(pod)
        held = self._held.pop(pod, None)
        if held is not None:
            self._departed[pod] = held

    def leases(self, tables: Mapping[PodRef, DesiredTable], now: float, now_wall: float,
               periods: Mapping[str, BudgetPeriod] | None = None) -> dict[PodRef, Lease]:
        """New leases for every pod in `tables` (the connected ones), valid until now + ttl."""
        self._departed = {p: h for p, h in self._departed.items() if h.expires_at > now and p not in tables}
        self._held = {p: h for p, h in self._held.items() if p in tables}
        self._demand = {p: d for p, d in self._demand.items() if p in tables or p in self._departed}
        self._stated = {k: v for k, v in self._stated.items() if now - v.seen_at <= STATED_FRESH_S}
        self._now = {pod: d.now(now, self.half_life_s) for pod, d in self._demand.items() if pod in tables}
        granted = {pod: _Held(now + self.ttl_s) for pod in tables}
        self._totals = {}
        for provider, (limits, users) in _users(tables, "provider_limits").items():
            self._divide_limits(provider, limits, users, granted, now)
        budgets = _users(tables, "route_budgets")
        spends: dict[str, _Spend] = {}  # route key → the spend of its own period
        for route, (limit_usd, users) in budgets.items():
            period = (periods or {}).get(route, BudgetPeriod.DAY)
            spends[route] = self._divide_budget(route, limit_usd, period, users, granted, now_wall)
        self._announced = {route: said for route, said in self._announced.items() if route in budgets}
        self._held.update(granted)
        return {pod: _lease(held, self.ttl_s, spends, pod) for pod, held in granted.items()}

    def _divide_limits(self, provider: str, limits: GlobalLimits, users: list[PodRef],
                       granted: dict[PodRef, _Held], now: float) -> None:
        away = [h.limits[provider] for h in self._departed.values() if provider in h.limits]
        def rate(pod: PodRef, metric: str) -> float:
            return self._rate(pod, provider, metric)

        sent = math.fsum(rate(pod, "attempts") for pod in users)
        throttled = math.fsum(rate(pod, "throttled") for pod in users)
        # of the requests sent, the part not answered 429 (a few 429s are noise, not a smaller provider)
        accepted = usefulness(sent, throttled) if throttled >= THROTTLED_MIN_PER_MINUTE else 1.0
        useful = {pod: usefulness(rate(pod, "attempts"), rate(pod, "failures"))
                  for pod in users}
        requests = {pod: rate(pod, "requests") * useful[pod] for pod in users}
        tokens = {pod: rate(pod, "tokens") * useful[pod] for pod in users}
        sent_tokens = math.fsum(rate(pod, "tokens") for pod in users)

        stated = self._stated.get(provider)

        def left(total: float | None, taken: list[float | None], sent_units: float, window: str) -> float | None:
            if total is None:
                return None
            bounds = [(total, "configured"), (throttled_total(total, sent_units, accepted), "throttled")]
            if stated is not None:
                said, age = stated.limits, now - stated.seen_at
                quota = said.requests if window == "requests" else said.tokens
                bounds += [(stated_limit(total, quota, age), "provider_limit"),
                           (stated_remaining(total, quota, said.retry_after_s, age, sent_units), "provider_remaining")]
            effective, bound = min(bounds, key=lambda b: b[0])  # the first of equals: configured wins ties
            self._totals[provider, window] = (effective, bound)
            return max(effective - math.fsum(t or 0 for t in taken), 0.0)

        rpm = left(limits.requests_per_minute, [a.requests_per_minute for a in away], sent, "requests")
        tpm = left(limits.tokens_per_minute, [a.tokens_per_minute for a in away], sent_tokens, "tokens")
        conc = None if limits.max_concurrency is None else \
            max(limits.max_concurrency - sum(a.max_concurrency or 0 for a in away), 0)
        rpm_shares = None if rpm is None else divide(rpm, requests, self.floor_fraction)
        tpm_shares = None if tpm is None else divide(tpm, tokens, self.floor_fraction)
        conc_shares = None if conc is None else divide_whole(conc, requests, self.floor_fraction)
        for pod in users:
            granted[pod].limits[provider] = Limits(
                None if rpm_shares is None else rpm_shares[pod],
                None if tpm_shares is None else tpm_shares[pod],
                None if conc_shares is None else conc_shares[pod])

    def _divide_budget(self, route: str, limit_usd: float, period: BudgetPeriod, users: list[PodRef],
                       granted: dict[PodRef, _Held], now_wall: float) -> _Spend:
        spend = self._period(route, period, now_wall)
        for pod, (start, usd) in self._announced.pop(route, {}).items():
            if start == spend.period_start:  # said of an earlier period: it counts for nothing
                spend.before[pod] = max(spend.before.get(pod, 0.0), usd)
        away = math.fsum(max(h.budgets[route] - spend.of(p), 0.0)
                         for p, h in self._departed.items() if route in h.budgets)
        remaining = max(limit_usd - spend.total() - away - self._spent_by_the_gone(route, spend, users), 0.0)
        demand = {pod: self._rate(pod, route, "cost") for pod in users}
        for pod, share in divide(remaining, demand, self.floor_fraction).items():
            granted[pod].budgets[route] = spend.of(pod) + share
        return spend

    def _spent_by_the_gone(self, route: str, spend: _Spend, users: list[PodRef]) -> float:
        """What the route's status says was spent this period before the operator restarted, less what the
        pods said of theirs in their hellos: the spend of sidecars gone before it (a rollout earlier in the
        period). Until every pod of before the restart is back this counts theirs too: on the safe side.
        0 while a connected user's sidecar does not say its spend: it cannot be told from the gone's."""
        seeded = self._seeded.get(route)
        if seeded is not None and seeded[0] < spend.period_start:
            del self._seeded[route]
        if seeded is None or seeded[0] != spend.period_start or any(pod in self._silent for pod in users):
            return 0.0
        return max(seeded[1] - math.fsum(spend.before.values()), 0.0)

    def _period(self, route: str, period: BudgetPeriod, now_wall: float) -> _Spend:
        start, _ = period_bounds(period, now_wall)
        spend = self._spend.get((route, period))
        if spend is None or spend.period_start != start:
            spend = self._spend[route, period] = _Spend(start)
        return spend

    def _rate(self, pod: PodRef, key: str, metric: str) -> float:
        """The pod's rate per minute as of the `leases` call under way."""
        rates = self._now.get(pod)
        return 0.0 if rates is None else rates.get((key, metric), 0.0)

    def leased_requests_per_minute(self) -> dict[str, float]:
        """`namespace/provider` → the RPM shares held now, connected and departed sidecars together."""
        out: dict[str, float] = {}
        for held in (*self._held.values(), *self._departed.values()):
            for provider, limits in held.limits.items():
                if limits.requests_per_minute is not None:
                    out[provider] = out.get(provider, 0.0) + limits.requests_per_minute
        return out

    def totals(self) -> dict[tuple[str, str], tuple[float, str]]:
        """(`namespace/provider`, "requests" | "tokens") → (the total divided at the last `leases` call,
        which bound set it: configured | throttled | provider_limit | provider_remaining)."""
        return dict(self._totals)

    def demand(self, pod: PodRef, key: str, metric: str, now: float) -> float:
        """`namespace/name` → the pod's demand rate per minute at `now` (for tests and metrics)."""
        demand = self._demand.get(pod)
        return 0.0 if demand is None else demand.now(now, self.half_life_s).get((key, metric), 0.0)


def _key(pod: PodRef, name: str) -> str:
    return f"{pod.namespace}/{name}"


def _users(tables: Mapping[PodRef, DesiredTable], attribute: str) -> dict[str, tuple[Any, list[PodRef]]]:
    """Global figure key → (the figure, the pods whose tables use it)."""
    out: dict[str, tuple[Any, list[PodRef]]] = {}
    for pod, table in tables.items():
        for key, figure in getattr(table, attribute).items():
            out.setdefault(key, (figure, []))[1].append(pod)
    return out


def _lease(held: _Held, ttl_s: float, spend: Mapping[str, _Spend], pod: PodRef) -> Lease:
    return Lease(ttl_s, {_local(k): v for k, v in held.limits.items()},
                 {_local(k): LeaseBudget(v, spend[k].of(pod) if k in spend else 0.0)
                  for k, v in held.budgets.items()})


def _local(key: str) -> str:
    """`namespace/name` → `name`: the sidecar knows its providers and routes by name only."""
    return key.split("/", 1)[-1]
