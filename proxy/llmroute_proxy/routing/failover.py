"""The attempt planner: which target each upstream attempt of one request goes to, and when to stop.

The server's dispatch loop owns the I/O and follows this plan: `next_attempt` gives an `Attempt`
to send (after `delay_s`) or a `Stop`, whose `error` is what the client gets; each attempt ends
with `record_failure`, `record_success` or `record_abandoned`. The planner decides everything
else, from the tier's targets, the health and load books, the local limits, the retry budget and
the request's deadline, so that every rule below is tested without a network:

1. Candidates are the tier's targets (or an override) ranked by `order_targets`; ejected,
   cooling, saturated and already tried targets are skipped, and so are those that cannot take the
   request (`takes`: its translation for their provider was refused), which costs them nothing. A
   half-open target is taken as the probe when this request wins it.
2. A recoverable failure moves to the next candidate at once; a failure that does not fail over
   (or is not in `onErrors`) stops. Context-length failures only go to strictly larger windows.
3. An exhausted tier continues with each of `fallbackTiers` in order.
4. Panic: when every target of a tier is unavailable in the health book (ejected, awaiting its
   probe, or cooling) and no other candidate is left anywhere, the one out longest is tried
   anyway (one per tier), so the sidecar never makes a total outage by itself.
5. Only when no other target is left is the same target retried, after full-jitter back-off
   (0.5 s × 2^k, at most 8 s) or its Retry-After; a longer hint stops the plan instead.
6. `max_attempts` bounds every attempt; each after the first needs the retry budget. No attempt
   starts, or waits out a back-off, past the request's deadline.

The planner owns what it takes: choosing a target acquires its provider's local limits, which
the attempt's end gives back (once, whichever way it ends); it counts the request in the retry
budget when it is created and each later attempt as a retry. `record_failure` says whether the
failure ejected the target. It leaves the load book's counters to the caller
(`started`/`finished`), who knows the time to first token.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from llmroute_proxy.errors import (
    AttemptRecord,
    AttemptsExhausted,
    FailureKind,
    LLMRouteError,
    LocalLimitExceeded,
    UpstreamError,
)
from llmroute_proxy.routing.balance import LoadBook, order_targets
from llmroute_proxy.routing.health import HealthBook
from llmroute_proxy.routing.limits import LimitBook, RetryBudget
from llmroute_proxy.table import Route, Target, TargetId

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0


@dataclass(slots=True)  # per request: not frozen, 4× cheaper to build
class Attempt:
    target: Target
    number: int  # 1-based
    delay_s: float  # wait before sending; > 0 only when retrying the same target
    reason: str  # why this target, for headers, traces and the status page
    tier: str = ""  # the tier the target was taken from
    probe: bool = False  # this attempt is the half-open probe of an ejected target
    retry: bool = False  # charged to the retry budget: a same-target retry or a panic attempt


class StopReason(StrEnum):
    ANSWERED = "answered"
    """An attempt succeeded, or was abandoned: nothing more to try."""
    NOT_RECOVERABLE = "not_recoverable"
    """The last failure is the request's own: the client gets it as the provider said it."""
    NOT_IN_ON_ERRORS = "not_in_on_errors"
    """The last failure would fail over, but the route's `onErrors` leaves its kind out."""
    NO_LARGER_WINDOW = "no_larger_window"
    """The prompt is too long for every target with a larger context window that is left."""
    NOT_HELD_ANYWHERE = "not_held_anywhere"
    """No target is left whose store may hold the conversation `previous_response_id` names."""
    SATURATED = "saturated"
    """Every candidate is at its local rate or concurrency limit, before any attempt."""
    RETRY_BUDGET = "retry_budget"
    """The sidecar-wide retry budget allows no more retries now."""
    EXHAUSTED = "exhausted"
    """`maxAttempts` reached, or no candidate left."""
    DEADLINE = "deadline"
    """The request's overall deadline passed, or would pass during a back-off."""


@dataclass(slots=True)  # per request: not frozen, 4× cheaper to build
class Stop:
    """The plan is over: why, when the client may try again, and what to say."""

    reason: StopReason
    retry_after: float | None = None
    message: str | None = None
    """For `saturated`: the refusal; for `retry_budget`: the note on the exhausted attempts."""

    def error(self, attempts: Sequence[AttemptRecord], last: UpstreamError | None) -> LLMRouteError:
        """The error the client gets; `last` is the last attempt's (scrubbed) failure, which a
        failure that is not recoverable, or a prompt too long everywhere, returns as it is."""
        reason = self.reason
        if reason in _LAST_FAILURE_ANSWERS and last is not None:
            return last
        if reason is StopReason.SATURATED:
            return LocalLimitExceeded(self.message or "Every target is at its local limit.", self.retry_after or 0.0)
        if reason is StopReason.DEADLINE:
            return AttemptsExhausted(attempts, deadline_passed=True)
        note = self.message if reason is StopReason.RETRY_BUDGET else None
        return AttemptsExhausted(attempts, retry_after=self.retry_after, note=note)


_LAST_FAILURE_ANSWERS = frozenset({StopReason.NOT_RECOVERABLE, StopReason.NO_LARGER_WINDOW,
                                   StopReason.NOT_HELD_ANYWHERE})
_NARROWING: dict[FailureKind | None, StopReason] = {
    FailureKind.CONTEXT_LENGTH: StopReason.NO_LARGER_WINDOW, FailureKind.NOT_HELD: StopReason.NOT_HELD_ANYWHERE}
"""Failures that leave only some other targets worth trying, and the stop when none of those is left."""


@dataclass(slots=True)
class _TierPlan:
    name: str
    targets: tuple[Target, ...]
    peers: tuple[TargetId, ...]
    ordered: list[Target] | None = None
    panicked: bool = False


@dataclass(slots=True)
class _Search:
    """What one look for a candidate found in the way."""

    limit_waits: list[float] = field(default_factory=list)


class AttemptPlanner:
    """The plan of one request; create one per request, with the books shared by the sidecar."""

    def __init__(self, route: Route, tier: str, *, targets: Sequence[Target] | None = None,
                 health: HealthBook, load: LoadBook, limits: LimitBook, retry_budget: RetryBudget,
                 rng: random.Random, local_region: str, tokens: int, now: float,
                 unanswered_tokens: int | None = None, deadline: float = float("inf"),
                 takes: Callable[[Target], bool] | None = None) -> None:
        """`takes`: whether a target can be sent the request at all (its provider can translate it);
        asked once a target is otherwise next, before its limits are taken. None: every target can."""
        self.route = route
        self.tiers_tried: list[str] = []
        self.attempts: list[Attempt] = []
        self._tier = tier
        self._health = health
        self._load = load
        self._limits = limits
        self._retry_budget = retry_budget
        self._rng = rng
        self._local_region = local_region
        self._tokens = tokens  # what the TPM admission charges an attempt
        # what an attempt that brought no answer is settled to (the prompt's estimate: its output cap goes back)
        self._unanswered_tokens = tokens if unanswered_tokens is None else unanswered_tokens
        self._deadline = deadline
        self._takes = takes
        self._tiers = self._tier_plans(route, tier, targets)
        self._tried: set[TargetId] = set()
        self._holding: set[int] = set()  # attempts whose limits are still held, by number
        # What the last failure said, not the exception: an exception holds its traceback, whose
        # frames hold their locals — a request's whole connection state (issue 11, defect 2).
        self._last_kind: FailureKind | None = None
        self._last_retry_after: float | None = None
        self._soonest_retry_at: float | None = None  # when the first target that said so takes requests again
        self._same_target_retries = 0
        self._min_context_window: float | None = None  # set by a context-length failure
        self._not_held_at: set[str] = set()  # response stores that answered `previous_response_id` 404
        self._stop: Stop | None = None
        retry_budget.on_request(now)

    def next_attempt(self, now: float) -> Attempt | Stop:
        if self._stop is not None:
            return self._stop
        if now >= self._deadline:
            return self._stopping(StopReason.DEADLINE)
        number = len(self.attempts) + 1
        if number > max(1, self.route.fallback.max_attempts):
            return self._exhausted(None, now)
        search = _Search()
        # A first attempt on a target this request has not tried adds no load to a failing one
        # and is bounded by the tier and maxAttempts: only attempts that do go to the budget.
        attempt = self._fresh_target(number, now, search)
        if attempt is None and number > 1 and not self._retry_budget.can_retry(now):
            if (narrowed := _NARROWING.get(self._last_kind)) is not None:
                return self._stopping(narrowed)
            return self._stopping(StopReason.RETRY_BUDGET, self._retry_after(None, now), (
                f"the retry budget stopped further retries (at most {self._retry_budget.ratio:.0%} of "
                "requests may be retries during an outage)"))
        if attempt is None:
            attempt = self._panic_target(number, now, search) or self._same_target(number, now, search)
            if attempt is not None and number > 1:
                attempt = replace(attempt, retry=True)
                self._retry_budget.on_retry(now)
        if attempt is None:
            return self._exhausted(min(search.limit_waits) if search.limit_waits else None, now)
        self._holding.add(attempt.number)
        if now + attempt.delay_s >= self._deadline:  # a back-off that would outlast the request
            self._attempt_over(attempt, now, used_tokens=0)  # never sent
            return self._stopping(StopReason.DEADLINE)
        self.attempts.append(attempt)
        self._tried.add(attempt.target.id)
        if attempt.tier not in self.tiers_tried:
            self.tiers_tried.append(attempt.tier)
        return attempt

    def record_failure(self, attempt: Attempt, error: UpstreamError, now: float,
                       used_tokens: int | None = None) -> bool:
        """Record a failed attempt; True when this failure ejected its target. `used_tokens`: what a
        stream that failed after its first token used, when known."""
        self._attempt_over(attempt, now, used_tokens)
        kind = error.kind
        ejected = self._health.on_failure(attempt.target.id, kind, now, error.retry_after,
                                          self.route.outlier_detection, self._peers(attempt.tier))
        self._last_kind, self._last_retry_after = kind, error.retry_after
        if error.retry_after is not None:
            retry_at = now + error.retry_after
            if self._soonest_retry_at is None or retry_at < self._soonest_retry_at:
                self._soonest_retry_at = retry_at
        on_errors = self.route.fallback.on_errors
        if not kind.fails_over:
            self._stopping(StopReason.NOT_RECOVERABLE, error.retry_after)
        elif kind is FailureKind.NOT_HELD:  # no failure of the provider's: the next store is asked anyway
            self._not_held_at.add(attempt.target.response_store)
        elif on_errors is not None and kind.value not in on_errors:
            self._stopping(StopReason.NOT_IN_ON_ERRORS, error.retry_after)
        elif kind is FailureKind.CONTEXT_LENGTH:
            window = attempt.target.context_window
            floor = float("inf") if window is None else float(window)
            self._min_context_window = max(self._min_context_window or 0.0, floor)
        return ejected

    def record_success(self, attempt: Attempt, now: float, used_tokens: int | None = None) -> None:
        """`used_tokens`: the answer's real usage; unknown, the admission's charge stands."""
        self._attempt_over(attempt, now, self._tokens if used_tokens is None else used_tokens)
        self._health.on_success(attempt.target.id, now, self.route.outlier_detection)
        self._stopping(StopReason.ANSWERED)

    def record_abandoned(self, attempt: Attempt, now: float, used_tokens: int | None = None) -> None:
        """The attempt ended without a verdict (the client went away, the drain's deadline cut its
        stream): free what it held. `used_tokens`: what its stream used so far, when known."""
        if attempt.number in self._holding and attempt.probe:
            self._health.abandon_probe(attempt.target.id)
        self._attempt_over(attempt, now, used_tokens)
        self._stopping(StopReason.ANSWERED)

    def _attempt_over(self, attempt: Attempt, now: float, used_tokens: int | None) -> None:
        """Give back what the attempt held, once, however many ways its end is reported, and settle its
        tokens-per-minute charge with what it used (the prompt alone when it brought no answer)."""
        if attempt.number not in self._holding:
            return
        self._holding.discard(attempt.number)
        provider = attempt.target.provider
        self._limits.release(provider)
        used = self._unanswered_tokens if used_tokens is None else used_tokens
        if used != self._tokens:
            self._limits.settle_tokens(provider, self._tokens, used, now)
        if attempt.retry:
            self._retry_budget.retry_finished()

    def _stopping(self, reason: StopReason, retry_after: float | None = None, message: str | None = None) -> Stop:
        """End the plan: every later `next_attempt` answers the same `Stop`."""
        if self._stop is None:
            self._stop = Stop(reason, retry_after, message)
        return self._stop

    def _exhausted(self, limit_wait: float | None, now: float) -> Stop:
        if (narrowed := _NARROWING.get(self._last_kind)) is not None:
            return self._stopping(narrowed)
        if not self.attempts and limit_wait is not None:
            return self._stopping(StopReason.SATURATED, limit_wait, (
                f"Every target of tier '{self._tier}' is at its local rate or concurrency limit."))
        return self._stopping(StopReason.EXHAUSTED, self._retry_after(limit_wait, now))

    def _retry_after(self, limit_wait: float | None, now: float) -> float | None:
        """The soonest a local limit frees up or a rate-limited target said it takes requests."""
        waits = [w for w in (limit_wait, None if self._soonest_retry_at is None else self._soonest_retry_at - now)
                 if w is not None]
        return max(0.0, min(waits)) if waits else None

    @staticmethod
    def _tier_plans(route: Route, tier: str, override: Sequence[Target] | None) -> list[_TierPlan]:
        return [_TierPlan(name, targets, tuple(t.id for t in targets))
                for name, targets in attempt_tiers(route, tier, override)]

    def _peers(self, tier: str) -> tuple[TargetId, ...]:
        return next((p.peers for p in self._tiers if p.name == tier), ())

    def _ordered(self, plan: _TierPlan) -> list[Target]:
        if plan.ordered is None:
            plan.ordered = order_targets(plan.targets, policy=self.route.load_balancing,
                                         local_region=self._local_region, load=self._load, rng=self._rng,
                                         key=balance_key(self.route, plan.name))
        return plan.ordered

    def _may_serve(self, target: Target) -> bool:
        """Whether what earlier attempts said leaves the target worth trying: a context window larger
        than every one the prompt was too long for, a store that did not say it lacks the conversation."""
        floor = self._min_context_window
        if floor is not None and (target.context_window is None or target.context_window <= floor):
            return False
        return not self._not_held_at or target.response_store not in self._not_held_at

    def _fresh_target(self, number: int, now: float, search: _Search) -> Attempt | None:
        for plan in self._tiers:
            for target in self._ordered(plan):
                if target.id in self._tried or not self._may_serve(target):
                    continue
                probe = not self._health.is_available(target.id, now)
                if probe and not self._health.can_probe(target.id, now):
                    continue
                if self._takes is not None and not self._takes(target):
                    continue
                if not self._acquire(target, now, search):
                    continue
                if probe:
                    self._health.begin_probe(target.id, now)
                return Attempt(target, number, 0.0, self._reason(plan, number, probe), plan.name, probe)
        return None

    def _panic_target(self, number: int, now: float, search: _Search) -> Attempt | None:
        for plan in self._tiers:
            if plan.panicked or any(self._health.is_available(t.id, now) for t in plan.targets):
                continue
            left = [t for t in plan.targets if t.id not in self._tried and self._may_serve(t)
                    and (self._takes is None or self._takes(t))]
            left.sort(key=lambda t: self._out_since(t.id, now))
            for target in left:
                if self._acquire(target, now, search):
                    plan.panicked = True
                    return Attempt(target, number, 0.0, "panic: all ejected", plan.name)
        return None

    def _same_target(self, number: int, now: float, search: _Search) -> Attempt | None:
        kind = self._last_kind
        if kind is None or not self.attempts or kind in _NARROWING:
            return None
        last = self.attempts[-1]
        state = self._health.snapshot(last.target.id, now)
        if kind.ejects_for_long or state.state in ("ejected", "probing"):
            return None
        if self._last_retry_after is not None:
            delay = self._last_retry_after
        else:
            ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** self._same_target_retries)
            delay = self._rng.uniform(0.0, ceiling)
        if state.state == "cooling":
            delay = max(delay, state.until)
        if delay > BACKOFF_CAP_S or not self._acquire(last.target, now, search):
            return None
        self._same_target_retries += 1
        return Attempt(last.target, number, delay, "retry same target (only one left)", last.tier)

    def _acquire(self, target: Target, now: float, search: _Search) -> bool:
        wait = self._limits.try_acquire(target.provider, self._tokens, now)
        if wait > 0:
            search.limit_waits.append(wait)
            return False
        return True

    def _out_since(self, target: TargetId, now: float) -> float:
        since = self._health.unavailable_since(target, now)
        return float("-inf") if since is None else since

    def _reason(self, plan: _TierPlan, number: int, probe: bool) -> str:
        kind = self._last_kind
        previous = self.attempts[-1].target.id if self.attempts else None
        after = f" after {kind.value} on {previous}" if kind is not None and previous else ""
        if plan is not self._tiers[0]:
            reason = f"fallback tier '{plan.name}'{after}"
        elif number == 1:
            reason = "primary"
        else:
            reason = f"failover{after}"
        return f"{reason} (half-open probe)" if probe else reason


def attempt_tiers(route: Route, tier: str,
                  override: Sequence[Target] | None = None) -> list[tuple[str, tuple[Target, ...]]]:
    """The tiers a request's attempts go through, in order, each with its candidates: the chosen tier
    (with `override`'s candidates when the decision narrowed them), then each of `fallbackTiers`."""
    primary = tuple(override) if override is not None else _tier_targets(route, tier)
    tiers = [(tier, primary)]
    for name in route.fallback.fallback_tiers:
        if name != tier and name in route.tiers and all(taken != name for taken, _ in tiers):
            tiers.append((name, route.tiers[name].targets))
    return tiers


def balance_key(route: Route, tier: str) -> str:
    """The key of a tier's round-robin state in the load book."""
    return f"{route.name}/{tier}"


def _tier_targets(route: Route, tier: str) -> tuple[Target, ...]:
    found = route.tiers.get(tier)
    return found.targets if found is not None else ()
