"""Local admission: this sidecar's share of each provider's RPM, TPM and concurrency, and the
retry budget that keeps failover from multiplying load during an outage.

The operator leases each sidecar a share of a provider's global limits (`Table.provider_limits`);
enforcing the share here, before sending, turns a provider's 429 storm into a local, instant
decision to use another target or to answer 429 with an honest Retry-After.

Buckets hold one minute's worth (a full minute may be spent in a burst, as providers allow) and
refill continuously. A request larger than a whole minute's tokens is admitted once the bucket is
full and leaves it in debt, rather than never. Nothing here reads a clock: `now` is monotonic
seconds from the caller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from llmroute_proxy.table import Limits

CONCURRENCY_WAIT_S = 1.0  # nominal: when a slot frees depends on responses, not on time
BLOCKED_WAIT_S = 60.0  # a limit of zero per minute never refills


@dataclass(slots=True)
class _Bucket:
    per_minute: float
    level: float
    stamp: float = float("-inf")

    def refill(self, now: float) -> None:
        if now <= self.stamp:
            return
        if self.stamp == float("-inf"):
            self.level = self.per_minute
        else:
            self.level = min(self.per_minute, self.level + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` may be taken (at most a full bucket is ever waited for)."""
        if self.per_minute <= 0:
            return BLOCKED_WAIT_S
        self.refill(now)
        missing = min(amount, self.per_minute) - self.level
        return missing * 60.0 / self.per_minute if missing > 0 else 0.0


def _bucket(per_minute: float | None, previous: _Bucket | None) -> _Bucket | None:
    if per_minute is None:
        return None
    if previous is None:
        return _Bucket(per_minute, per_minute)
    return _Bucket(per_minute, min(previous.level, per_minute), previous.stamp)


@dataclass(slots=True)
class _ProviderLimits:
    limits: Limits
    requests: _Bucket | None
    tokens: _Bucket | None

    @classmethod
    def build(cls, limits: Limits, previous: _ProviderLimits | None) -> _ProviderLimits:
        """Carry levels over a changed lease, so a re-lease cannot grant a fresh burst."""
        return cls(limits,
                   _bucket(limits.requests_per_minute, previous.requests if previous else None),
                   _bucket(limits.tokens_per_minute, previous.tokens if previous else None))


class LimitBook:
    """Token buckets (RPM, TPM) and in-flight counts per provider."""

    __slots__ = ("_in_flight", "_providers")

    def __init__(self) -> None:
        self._providers: dict[str, _ProviderLimits] = {}
        self._in_flight: dict[str, int] = {}  # survives `configure`: those requests are still running

    def configure(self, limits: Mapping[str, Limits]) -> None:
        old = self._providers
        self._providers = {
            name: kept if (kept := old.get(name)) is not None and kept.limits == new
            else _ProviderLimits.build(new, kept)
            for name, new in limits.items()
        }

    def try_acquire(self, provider: str, tokens: int, now: float) -> float:
        """0.0 when admitted (one request, `tokens` tokens and a concurrency slot are taken);
        otherwise the seconds until it could be, and nothing is taken."""
        state = self._providers.get(provider)
        in_flight = self._in_flight.get(provider, 0)
        if state is not None:
            wait = self._wait(state, in_flight, tokens, now)
            if wait > 0:
                return wait
            if state.requests is not None:
                state.requests.level -= 1
            if state.tokens is not None:
                state.tokens.level -= tokens
        self._in_flight[provider] = in_flight + 1
        return 0.0

    def release(self, provider: str) -> None:
        count = self._in_flight.get(provider, 0)
        if count > 1:
            self._in_flight[provider] = count - 1
        else:
            self._in_flight.pop(provider, None)

    def settle_tokens(self, provider: str, estimated: int, actual: int, now: float) -> None:
        """Give back (or charge) the difference once the real usage is known."""
        state = self._providers.get(provider)
        if state is None or state.tokens is None:
            return
        bucket = state.tokens
        bucket.refill(now)
        bucket.level = min(bucket.per_minute, bucket.level + estimated - actual)

    def in_flight(self, provider: str) -> int:
        return self._in_flight.get(provider, 0)

    @staticmethod
    def _wait(state: _ProviderLimits, in_flight: int, tokens: int, now: float) -> float:
        wait = 0.0
        limit = state.limits.max_concurrency
        if limit is not None and in_flight >= limit:
            wait = CONCURRENCY_WAIT_S
        if state.requests is not None:
            wait = max(wait, state.requests.wait_for(1, now))
        if state.tokens is not None:
            wait = max(wait, state.tokens.wait_for(tokens, now))
        return wait


class RetryBudget:
    """Envoy's retry budget: an attempt beyond a request's first is allowed while fewer than
    `min_concurrent` such attempts are in flight, or while the retries of the last `window_s`
    seconds stay within `ratio` of its requests. So failover at low traffic is always possible,
    and an outage under load adds at most `ratio` more attempts. Counts live in `buckets` slices."""

    __slots__ = ("_active", "_epochs", "_min_concurrent", "_ratio", "_requests", "_retries", "_slice")

    def __init__(self, ratio: float = 0.2, window_s: float = 10.0, min_concurrent: int = 3,
                 buckets: int = 10) -> None:
        self._ratio = ratio
        self._min_concurrent = min_concurrent
        self._slice = window_s / buckets
        self._epochs = [-1] * buckets
        self._requests = [0] * buckets
        self._retries = [0] * buckets
        self._active = 0

    @property
    def ratio(self) -> float:
        return self._ratio

    def on_request(self, now: float) -> None:
        self._requests[self._slot(now)] += 1

    def on_retry(self, now: float) -> None:
        self._retries[self._slot(now)] += 1
        self._active += 1

    def retry_finished(self) -> None:
        self._active = max(0, self._active - 1)

    @property
    def in_flight(self) -> int:
        return self._active

    def can_retry(self, now: float) -> bool:
        if self._active < self._min_concurrent:
            return True
        epoch = self._epoch(now)
        oldest = epoch - len(self._epochs)
        requests = retries = 0
        for i, slot_epoch in enumerate(self._epochs):
            if oldest < slot_epoch <= epoch:
                requests += self._requests[i]
                retries += self._retries[i]
        return retries + 1 <= self._ratio * requests + 1e-9

    def _epoch(self, now: float) -> int:
        return math.floor(now / self._slice)

    def _slot(self, now: float) -> int:
        epoch = self._epoch(now)
        index = epoch % len(self._epochs)
        if self._epochs[index] != epoch:
            self._epochs[index] = epoch
            self._requests[index] = 0
            self._retries[index] = 0
        return index
