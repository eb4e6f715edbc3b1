"""The attempt planner, driven the way the server's dispatch loop drives it, on virtual time."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pytest

from llmroute_proxy.errors import AttemptsExhausted, FailureKind, UpstreamError
from llmroute_proxy.routing.balance import LoadBook
from llmroute_proxy.routing.failover import BACKOFF_CAP_S, Attempt, AttemptPlanner, Stop, StopReason
from llmroute_proxy.routing.health import HealthBook
from llmroute_proxy.routing.limits import LimitBook, RetryBudget
from llmroute_proxy.table import (
    FallbackPolicy,
    Limits,
    OutlierDetection,
    ProviderType,
    Route,
    Target,
    TargetId,
    Tier,
)


def target(name: str, *, priority: int = 0, window: int | None = None, provider: str | None = None) -> Target:
    return Target(id=TargetId(name), provider=provider or name, provider_type=ProviderType.OPENAI, model=name,
                  url="http://127.0.0.1:1", region="eu", priority=priority, context_window=window)


def route(*tiers: Tier, fallback: FallbackPolicy | None = None) -> Route:
    return Route(name="r", tiers={t.name: t for t in tiers}, rules=(), default_tier=tiers[0].name,
                 fallback=fallback or FallbackPolicy())


def ordered_tier(*names: str, name: str = "fast") -> Tier:
    """Targets at rising priorities, so the planner's order is the order given."""
    return Tier(name, tuple(target(n, priority=i) for i, n in enumerate(names)))


def error(kind: FailureKind, retry_after: float | None = None) -> UpstreamError:
    return UpstreamError(kind, f"upstream said {kind.value}", retry_after=retry_after)


@dataclass
class Books:
    health: HealthBook = field(default_factory=HealthBook)
    load: LoadBook = field(default_factory=LoadBook)
    limits: LimitBook = field(default_factory=LimitBook)
    retry_budget: RetryBudget = field(default_factory=RetryBudget)

    def planner(self, r: Route, tier: str | None = None, *, targets: Sequence[Target] | None = None,
                now: float = 0.0, seed: int = 1, deadline: float = float("inf"),
                takes: Callable[[Target], bool] | None = None) -> AttemptPlanner:
        return AttemptPlanner(r, tier or r.default_tier, targets=targets, health=self.health, load=self.load,
                              limits=self.limits, retry_budget=self.retry_budget, rng=random.Random(seed),
                              local_region="eu", tokens=100, now=now, deadline=deadline, takes=takes)

    def eject(self, r: Route, name: str, now: float) -> None:
        peers = [t.id for tier in r.tiers.values() for t in tier.targets]
        self.health.on_failure(TargetId(name), FailureKind.AUTH, now, None, OutlierDetection(), peers)


def run(planner: AttemptPlanner, failures: Sequence[UpstreamError], now: float = 0.0) -> list[Attempt]:
    """Fail each attempt with the next failure until the plan or the failures end."""
    attempts: list[Attempt] = []
    for failure in failures:
        attempt = planner.next_attempt(now)
        if isinstance(attempt, Stop):
            break
        attempts.append(attempt)
        planner.record_failure(attempt, failure, now)
    return attempts


def ids(attempts: Sequence[Attempt]) -> list[str]:
    return [a.target.id for a in attempts]


SERVER_ERROR = error(FailureKind.SERVER_ERROR)


def test_the_first_attempt_is_the_primary() -> None:
    attempt = Books().planner(route(ordered_tier("a", "b"))).next_attempt(0.0)
    assert isinstance(attempt, Attempt)
    assert (attempt.target.id, attempt.number, attempt.delay_s, attempt.reason, attempt.tier) == (
        "a", 1, 0.0, "primary", "fast")


def test_a_recoverable_failure_moves_to_the_next_target_at_once() -> None:
    planner = Books().planner(route(ordered_tier("a", "b", "c")))
    attempts = run(planner, [error(FailureKind.RATE_LIMITED), SERVER_ERROR, SERVER_ERROR])
    assert ids(attempts) == ["a", "b", "c"]
    assert [a.delay_s for a in attempts] == [0.0, 0.0, 0.0]
    assert [a.number for a in attempts] == [1, 2, 3]
    assert attempts[1].reason == "failover after rate_limited on a"
    assert attempts[2].reason == "failover after server_error on b"
    assert planner.next_attempt(0.0) == Stop(StopReason.EXHAUSTED)  # max_attempts 3


@pytest.mark.parametrize("kind", [FailureKind.CLIENT_ERROR, FailureKind.CONTENT_FILTER])
def test_a_request_error_is_never_failed_over(kind: FailureKind) -> None:
    planner = Books().planner(route(ordered_tier("a", "b")))
    assert ids(run(planner, [error(kind), SERVER_ERROR])) == ["a"]
    assert planner.next_attempt(0.0) == Stop(StopReason.NOT_RECOVERABLE)


def test_on_errors_limits_which_failures_fail_over() -> None:
    r = route(ordered_tier("a", "b", "c"), fallback=FallbackPolicy(on_errors=frozenset({"rate_limited"})))
    planner = Books().planner(r)
    assert ids(run(planner, [error(FailureKind.RATE_LIMITED), SERVER_ERROR, SERVER_ERROR])) == ["a", "b"]


def test_context_length_fails_over_only_to_strictly_larger_windows() -> None:
    tier = Tier("fast", (target("small", window=8000), target("same", window=8000, priority=1),
                         target("unknown", priority=2), target("large", window=32000, priority=3)))
    planner = Books().planner(route(tier, fallback=FallbackPolicy(max_attempts=5)))
    overflow = error(FailureKind.CONTEXT_LENGTH)
    assert ids(run(planner, [overflow, overflow, overflow])) == ["small", "large"]
    assert planner.next_attempt(0.0) == Stop(StopReason.NO_LARGER_WINDOW)  # never the same target again either


def test_context_length_on_a_target_of_unknown_window_stops_the_plan() -> None:
    tier = Tier("fast", (target("unknown"), target("large", window=32000, priority=1)))
    planner = Books().planner(route(tier))
    assert ids(run(planner, [error(FailureKind.CONTEXT_LENGTH), SERVER_ERROR])) == ["unknown"]


def test_context_length_does_not_eject_the_target() -> None:
    books = Books()
    r = route(Tier("fast", (target("a", window=10),)))
    for _ in range(10):
        run(books.planner(r), [error(FailureKind.CONTEXT_LENGTH)])
    assert books.health.is_available(TargetId("a"), 0.0)


def store_target(name: str, provider: str, host: str, priority: int) -> Target:
    return Target(id=TargetId(name), provider=provider, provider_type=ProviderType.OPENAI, model="m",
                  url=f"https://{host}/v1", region="eu", priority=priority)


NOT_HELD = UpstreamError(FailureKind.NOT_HELD, "Previous response with id 'resp_1' not found.", status=404,
                         param="previous_response_id")


def test_a_conversation_not_held_is_looked_for_at_the_next_store_never_at_the_same_one_again() -> None:
    tier = Tier("fast", (store_target("a-gpt", "a", "api.a", 0), store_target("a-mini", "a", "api.a", 1),
                         store_target("a-west", "a", "west.a", 2), store_target("b", "b", "api.a", 3)))
    books = Books()
    planner = books.planner(route(tier, fallback=FallbackPolicy(max_attempts=5)))
    # a-mini shares a-gpt's store; a-west is the same provider at another endpoint; b another account
    assert ids(run(planner, [NOT_HELD, NOT_HELD, NOT_HELD])) == ["a-gpt", "a-west", "b"]
    assert planner.next_attempt(0.0) == Stop(StopReason.NOT_HELD_ANYWHERE)
    assert planner.next_attempt(0.0).error([], NOT_HELD) is NOT_HELD  # the client gets the last store's 404
    assert all(books.health.is_available(t.id, 0.0) for t in tier.targets)  # no target's fault


def test_a_conversation_not_held_fails_over_whatever_on_errors_names() -> None:
    tier = Tier("fast", (store_target("a", "a", "api.a", 0), store_target("b", "b", "api.b", 1)))
    r = route(tier, fallback=FallbackPolicy(on_errors=frozenset({"rate_limited"})))
    assert ids(run(Books().planner(r), [NOT_HELD, SERVER_ERROR])) == ["a", "b"]


def test_a_conversation_not_held_by_the_only_store_stops_without_a_retry() -> None:
    planner = Books().planner(route(Tier("fast", (store_target("a", "a", "api.a", 0),))))
    assert ids(run(planner, [NOT_HELD, NOT_HELD])) == ["a"]
    assert planner.next_attempt(0.0) == Stop(StopReason.NOT_HELD_ANYWHERE)


def test_an_exhausted_tier_continues_with_each_fallback_tier_in_order() -> None:
    r = route(ordered_tier("a"), ordered_tier("x", name="cheap"), ordered_tier("y", name="local"),
              fallback=FallbackPolicy(max_attempts=3, fallback_tiers=("cheap", "local")))
    planner = Books().planner(r)
    attempts = run(planner, [SERVER_ERROR] * 5)
    assert ids(attempts) == ["a", "x", "y"]
    assert attempts[1].reason == "fallback tier 'cheap' after server_error on a"
    assert attempts[2].tier == "local"
    assert planner.tiers_tried == ["fast", "cheap", "local"]


def test_a_fallback_tier_does_not_repeat_a_target_already_tried() -> None:
    r = route(ordered_tier("a", "b"), ordered_tier("b", "c", name="cheap"),
              fallback=FallbackPolicy(max_attempts=4, fallback_tiers=("cheap",)))
    attempts = run(Books().planner(r), [SERVER_ERROR] * 5)
    assert ids(attempts) == ["a", "b", "c", "c"]
    assert attempts[3].reason == "retry same target (only one left)"


def test_the_same_target_is_retried_with_growing_jittered_back_off_only_when_alone() -> None:
    planner = Books().planner(route(ordered_tier("a"), fallback=FallbackPolicy(max_attempts=4)))
    attempts = run(planner, [SERVER_ERROR] * 4)
    assert ids(attempts) == ["a", "a", "a", "a"]
    assert attempts[1].reason == "retry same target (only one left)"
    assert 0.0 <= attempts[1].delay_s <= 0.5
    assert 0.0 <= attempts[2].delay_s <= 1.0
    assert 0.0 <= attempts[3].delay_s <= 2.0
    assert len({a.delay_s for a in attempts[1:]}) == 3  # jittered


def test_back_off_is_full_jitter_up_to_the_ceiling() -> None:
    delays = []
    for seed in range(300):
        planner = Books().planner(route(ordered_tier("a")), seed=seed)
        attempts = run(planner, [SERVER_ERROR] * 2)
        delays.append(attempts[1].delay_s)
    assert max(delays) <= 0.5
    assert min(delays) < 0.05 and max(delays) > 0.45


def test_no_same_target_retry_while_another_target_is_left() -> None:
    planner = Books().planner(route(ordered_tier("a", "b"), fallback=FallbackPolicy(max_attempts=3)))
    attempts = run(planner, [SERVER_ERROR] * 3)
    assert ids(attempts) == ["a", "b", "b"]
    assert [a.delay_s > 0 or a.reason.startswith("retry") for a in attempts] == [False, False, True]


def test_a_retry_after_hint_is_the_retry_delay_and_cools_the_target() -> None:
    books = Books()
    planner = books.planner(route(ordered_tier("a")))
    attempts = run(planner, [error(FailureKind.RATE_LIMITED, retry_after=2.5)] * 2)
    assert [a.delay_s for a in attempts] == [0.0, 2.5]
    assert books.health.snapshot(TargetId("a"), 0.0).state == "cooling"


def test_a_retry_after_beyond_the_cap_stops_instead_of_waiting() -> None:
    planner = Books().planner(route(ordered_tier("a")))
    assert ids(run(planner, [error(FailureKind.RATE_LIMITED, retry_after=BACKOFF_CAP_S + 1)] * 2)) == ["a"]


def test_a_429_without_a_hint_waits_at_least_for_the_cooldown() -> None:
    planner = Books().planner(route(ordered_tier("a")))
    attempts = run(planner, [error(FailureKind.RATE_LIMITED)] * 2)
    assert attempts[1].delay_s >= 1.0


def test_a_target_ejected_for_its_credentials_is_not_retried() -> None:
    planner = Books().planner(route(ordered_tier("a")))
    assert ids(run(planner, [error(FailureKind.AUTH)] * 2)) == ["a"]


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_max_attempts_bounds_every_attempt(max_attempts: int) -> None:
    r = route(ordered_tier("a", "b", "c", "d", "e"), fallback=FallbackPolicy(max_attempts=max_attempts))
    planner = Books().planner(r)
    assert len(run(planner, [SERVER_ERROR] * 10)) == max_attempts


def test_a_same_target_retry_needs_the_retry_budget() -> None:
    books = Books(retry_budget=RetryBudget(min_concurrent=0))
    planner = books.planner(route(ordered_tier("a")))
    assert ids(run(planner, [SERVER_ERROR] * 2)) == ["a"]
    stop = planner.next_attempt(0.0)
    assert isinstance(stop, Stop) and stop.reason is StopReason.RETRY_BUDGET
    assert "at most 20% of requests may be retries" in str(stop.error([], None))


def test_failover_to_an_untried_target_is_never_charged_to_the_budget() -> None:
    books = Books(retry_budget=RetryBudget(min_concurrent=0))
    attempts = run(books.planner(route(ordered_tier("a", "b", "c"))), [SERVER_ERROR] * 3)
    assert ids(attempts) == ["a", "b", "c"]
    assert not any(a.retry for a in attempts)


def test_failover_at_low_traffic_is_never_refused_by_the_budget() -> None:
    books = Books()
    r = replace(route(ordered_tier("a")), outlier_detection=OutlierDetection(max_ejection_percent=0))  # never ejected
    for _ in range(10):  # each request finishes before the next: no retry is ever in flight twice
        assert len(run(books.planner(r), [SERVER_ERROR, SERVER_ERROR])) == 2


def test_retries_beyond_the_minimum_in_flight_need_the_ratio() -> None:
    books = Books()
    r = route(ordered_tier("a"))
    held = []
    for _ in range(3):  # three requests whose same-target retry is still running
        planner = books.planner(r)
        first = planner.next_attempt(0.0)
        assert isinstance(first, Attempt)
        planner.record_failure(first, SERVER_ERROR, 0.0)
        held.append(planner.next_attempt(0.0))
    assert all(isinstance(a, Attempt) and a.number == 2 and a.retry for a in held)
    assert ids(run(books.planner(r), [SERVER_ERROR, SERVER_ERROR])) == ["a"]  # 4 requests allow no 4th



def test_ejected_and_cooling_targets_are_skipped() -> None:
    books = Books()
    r = route(ordered_tier("a", "b", "c"))
    books.eject(r, "a", 0.0)
    books.health.on_failure(TargetId("b"), FailureKind.RATE_LIMITED, 0.0, 10.0, OutlierDetection(),
                            [TargetId("b")])
    attempt = books.planner(r).next_attempt(1.0)
    assert isinstance(attempt, Attempt)
    assert (attempt.target.id, attempt.reason) == ("c", "primary")


def test_failures_recorded_by_the_planner_eject_the_target() -> None:
    books = Books()
    r = route(ordered_tier("a", "b"))
    for _ in range(5):
        run(books.planner(r), [SERVER_ERROR])
    assert books.health.snapshot(TargetId("a"), 0.0).state == "ejected"
    attempt = books.planner(r).next_attempt(0.0)
    assert isinstance(attempt, Attempt) and attempt.target.id == "b"


def test_one_request_probes_a_target_whose_ejection_ended_and_the_others_skip_it() -> None:
    books = Books()
    r = route(ordered_tier("a", "b"))
    books.eject(r, "a", 0.0)
    now = 301.0
    probe = books.planner(r, now=now).next_attempt(now)
    other = books.planner(r, now=now).next_attempt(now)
    assert isinstance(probe, Attempt) and isinstance(other, Attempt)
    assert (probe.target.id, probe.probe, probe.reason) == ("a", True, "primary (half-open probe)")
    assert (other.target.id, other.probe) == ("b", False)


def test_a_successful_probe_brings_the_target_back() -> None:
    books = Books()
    r = route(ordered_tier("a", "b"))
    books.eject(r, "a", 0.0)
    planner = books.planner(r, now=301.0)
    probe = planner.next_attempt(301.0)
    assert isinstance(probe, Attempt)
    planner.record_success(probe, 302.0)
    assert planner.next_attempt(302.0) == Stop(StopReason.ANSWERED)
    assert books.health.is_available(TargetId("a"), 302.0)


def test_panic_tries_the_target_ejected_longest_ago_when_the_whole_tier_is_out() -> None:
    books = Books()
    r = route(ordered_tier("a", "b", "c"))
    for name, when in (("b", 0.0), ("a", 5.0), ("c", 10.0)):
        books.eject(r, name, when)
    planner = books.planner(r, now=20.0)
    attempt = planner.next_attempt(20.0)
    assert isinstance(attempt, Attempt)
    assert (attempt.target.id, attempt.reason) == ("b", "panic: all ejected")
    planner.record_failure(attempt, SERVER_ERROR, 20.0)
    assert planner.next_attempt(20.0) == Stop(StopReason.EXHAUSTED)  # one panic attempt per tier


def test_a_healthy_fallback_tier_is_preferred_to_panic() -> None:
    books = Books()
    r = route(ordered_tier("a"), ordered_tier("x", name="cheap"),
              fallback=FallbackPolicy(fallback_tiers=("cheap",)))
    books.eject(r, "a", 0.0)
    attempt = books.planner(r).next_attempt(1.0)
    assert isinstance(attempt, Attempt)
    assert (attempt.target.id, attempt.reason) == ("x", "fallback tier 'cheap'")


def test_no_panic_while_one_target_of_the_tier_is_available() -> None:
    books = Books()
    r = route(ordered_tier("a", "b"))
    books.eject(r, "b", 0.0)
    planner = books.planner(r)
    attempts = run(planner, [SERVER_ERROR] * 3)
    assert ids(attempts) == ["a", "a", "a"]
    assert not any(a.reason.startswith("panic") for a in attempts)


def test_a_saturated_provider_is_skipped_for_another_one() -> None:
    books = Books()
    books.limits.configure({"a": Limits(max_concurrency=1)})
    r = route(ordered_tier("a", "b"))
    first = books.planner(r).next_attempt(0.0)
    second = books.planner(r).next_attempt(0.0)
    assert isinstance(first, Attempt) and isinstance(second, Attempt)
    assert (first.target.id, second.target.id) == ("a", "b")
    assert books.limits.in_flight("a") == 1 and books.limits.in_flight("b") == 1


def test_when_every_target_is_saturated_the_plan_stops_with_the_soonest_retry_after() -> None:
    books = Books()
    books.limits.configure({"a": Limits(requests_per_minute=1), "b": Limits(requests_per_minute=2)})
    r = route(ordered_tier("a", "b"))
    assert books.limits.try_acquire("a", 1, 0.0) == 0.0
    assert books.limits.try_acquire("b", 1, 0.0) == 0.0
    assert books.limits.try_acquire("b", 1, 0.0) == 0.0
    planner = books.planner(r)
    stop = planner.next_attempt(0.0)
    assert isinstance(stop, Stop) and stop.reason is StopReason.SATURATED
    assert stop.retry_after == pytest.approx(30.0)  # b refills one request in 30 s
    assert planner.tiers_tried == []


def test_a_plan_that_ends_for_another_reason_reports_no_saturation() -> None:
    planner = Books().planner(route(ordered_tier("a")))
    run(planner, [error(FailureKind.AUTH)] * 2)
    assert planner.next_attempt(0.0) == Stop(StopReason.EXHAUSTED)


def test_an_override_replaces_the_tiers_targets() -> None:
    r = route(ordered_tier("a", "b"))
    planner = Books().planner(r, targets=[target("arm-1"), target("arm-2", priority=1)])
    assert ids(run(planner, [SERVER_ERROR] * 2)) == ["arm-1", "arm-2"]
    assert planner.tiers_tried == ["fast"]


def test_an_unknown_tier_plans_nothing() -> None:
    planner = Books().planner(route(ordered_tier("a")), "missing")
    assert planner.next_attempt(0.0) == Stop(StopReason.EXHAUSTED)


def test_targets_of_equal_priority_are_balanced_across_requests() -> None:
    books = Books()
    r = route(Tier("fast", (target("a"), target("b"))))
    firsts = []
    for _ in range(4):
        attempt = books.planner(r).next_attempt(0.0)
        assert isinstance(attempt, Attempt)
        firsts.append(attempt.target.id)
    assert firsts == ["a", "b", "a", "b"]


def test_a_failure_that_takes_out_the_last_available_target_lets_panic_try_the_rest() -> None:
    books = Books()
    r = route(ordered_tier("a", "b"))
    books.eject(r, "b", 0.0)
    attempts = run(books.planner(r), [error(FailureKind.AUTH)] * 3)
    assert ids(attempts) == ["a", "b"]
    assert attempts[1].reason == "panic: all ejected"


def test_a_same_target_retry_acquires_the_providers_limits_again() -> None:
    books = Books()
    planner = books.planner(route(ordered_tier("a")))
    first = planner.next_attempt(0.0)
    assert isinstance(first, Attempt) and books.limits.in_flight("a") == 1
    planner.record_failure(first, SERVER_ERROR, 0.0)
    assert books.limits.in_flight("a") == 0  # the planner gives back what an attempt took when it ends
    retry = planner.next_attempt(0.0)
    assert isinstance(retry, Attempt) and retry.target.id == "a" and books.limits.in_flight("a") == 1
    planner.record_abandoned(retry, 0.0)
    planner.record_abandoned(retry, 0.0)  # an end reported twice gives back once
    assert books.limits.in_flight("a") == 0


def tpm_planner(books: Books, *, deadline: float = float("inf")) -> AttemptPlanner:
    """One target whose provider allows 1,000 tokens a minute; each attempt is charged 600 (a 100-token
    prompt and a 500-token output cap), and an attempt that brings no answer is settled to the prompt."""
    books.limits.configure({"a": Limits(tokens_per_minute=1000)})
    return AttemptPlanner(route(ordered_tier("a")), "fast", health=books.health, load=books.load,
                          limits=books.limits, retry_budget=books.retry_budget, rng=random.Random(1),
                          local_region="eu", tokens=600, unanswered_tokens=100, now=0.0, deadline=deadline)


def tokens_left(books: Books) -> float:
    """What a new request could take at once: the largest charge admitted now, found by halving."""
    low, high = 0, 1000
    while low < high:
        mid = (low + high + 1) // 2
        if books.limits.try_acquire("a", mid, 0.0) == 0.0:
            books.limits.settle_tokens("a", mid, 0, 0.0)  # give the probe back
            books.limits.release("a")
            low = mid
        else:
            high = mid - 1
    return low


@pytest.mark.parametrize("end", ["failure", "abandoned"])
def test_an_attempt_that_brought_no_answer_gives_its_output_cap_back(end: str) -> None:
    books = Books()
    planner = tpm_planner(books)
    attempt = planner.next_attempt(0.0)
    assert isinstance(attempt, Attempt) and tokens_left(books) == 400
    if end == "failure":
        planner.record_failure(attempt, SERVER_ERROR, 0.0)
    else:
        planner.record_abandoned(attempt, 0.0)  # the client went away
    assert tokens_left(books) == 900  # the prompt stays charged; the 500-token cap comes back


def test_a_stream_cut_after_its_first_tokens_is_charged_what_it_used() -> None:
    books = Books()
    planner = tpm_planner(books)
    attempt = planner.next_attempt(0.0)
    assert isinstance(attempt, Attempt)
    planner.record_abandoned(attempt, 0.0, used_tokens=250)  # the drain's deadline cut it, usage known
    planner.record_abandoned(attempt, 0.0, used_tokens=250)  # reported twice: settled once
    assert tokens_left(books) == 750


def test_an_answer_is_charged_its_real_usage_or_the_admission_when_it_had_none() -> None:
    books = Books()
    answered = tpm_planner(books)
    attempt = answered.next_attempt(0.0)
    assert isinstance(attempt, Attempt)
    answered.record_success(attempt, 0.0, used_tokens=130)
    assert tokens_left(books) == 870
    unmetered = tpm_planner(books)
    attempt = unmetered.next_attempt(0.0)
    assert isinstance(attempt, Attempt)
    unmetered.record_success(attempt, 0.0)  # no usage reported: the 600 charged stand
    assert tokens_left(books) == 270


def test_an_attempt_whose_back_off_would_outlast_the_deadline_gives_back_all_it_was_charged() -> None:
    books = Books()
    planner = tpm_planner(books, deadline=1e-6)
    first = planner.next_attempt(0.0)
    assert isinstance(first, Attempt)
    planner.record_failure(first, SERVER_ERROR, 0.0)  # only the same target is left: a back-off follows
    assert tokens_left(books) == 900
    stop = planner.next_attempt(0.0)  # its back-off would end past the deadline: it is never sent
    assert isinstance(stop, Stop) and stop.reason is StopReason.DEADLINE
    assert tokens_left(books) == 900 and books.limits.in_flight("a") == 0


def test_no_attempt_starts_after_the_deadline() -> None:
    planner = Books().planner(route(ordered_tier("a", "b")), deadline=10.0)
    first = planner.next_attempt(9.0)
    assert isinstance(first, Attempt)
    planner.record_failure(first, SERVER_ERROR, 10.0)
    stop = planner.next_attempt(10.0)
    assert stop == Stop(StopReason.DEADLINE)
    failure = stop.error([], None)
    assert isinstance(failure, AttemptsExhausted) and failure.status == 504


def test_a_back_off_that_would_outlast_the_deadline_stops_and_gives_back_what_it_took() -> None:
    books = Books(retry_budget=RetryBudget(min_concurrent=1))
    planner = books.planner(route(ordered_tier("a")), deadline=2.0)
    first = planner.next_attempt(0.0)
    assert isinstance(first, Attempt)
    planner.record_failure(first, error(FailureKind.RATE_LIMITED, retry_after=5.0), 0.0)
    assert planner.next_attempt(0.0) == Stop(StopReason.DEADLINE)
    assert books.limits.in_flight("a") == 0
    assert books.retry_budget.can_retry(0.0)  # the retry it counted is over


def test_record_failure_says_when_it_ejected_the_target() -> None:
    books = Books()
    r = replace(route(ordered_tier("a", "b")), outlier_detection=OutlierDetection(consecutive_failures=2))
    verdicts = []
    for _ in range(3):
        planner = books.planner(r)
        attempt = planner.next_attempt(0.0)
        assert isinstance(attempt, Attempt) and attempt.target.id == "a"
        verdicts.append(planner.record_failure(attempt, SERVER_ERROR, 0.0))
        if verdicts[-1]:
            break
    assert verdicts == [False, True]


def test_an_exhausted_plan_carries_the_soonest_retry_after_a_target_gave() -> None:
    planner = Books().planner(route(ordered_tier("a", "b"), fallback=FallbackPolicy(max_attempts=2)))
    run(planner, [error(FailureKind.RATE_LIMITED, retry_after=30.0), error(FailureKind.RATE_LIMITED, retry_after=7.0)])
    stop = planner.next_attempt(0.0)
    assert stop == Stop(StopReason.EXHAUSTED, retry_after=7.0)


def test_a_failure_left_out_by_on_errors_stops_with_every_attempt_named() -> None:
    r = route(ordered_tier("a", "b"), fallback=FallbackPolicy(on_errors=frozenset({"rate_limited"})))
    planner = Books().planner(r)
    run(planner, [error(FailureKind.SERVER_ERROR, retry_after=3.0)])
    stop = planner.next_attempt(0.0)
    assert stop == Stop(StopReason.NOT_IN_ON_ERRORS, retry_after=3.0)
    failure = stop.error([], error(FailureKind.SERVER_ERROR, retry_after=3.0))
    assert isinstance(failure, AttemptsExhausted) and failure.retry_after == 3.0


def test_the_requests_own_fault_goes_back_to_the_client_as_it_is() -> None:
    planner = Books().planner(route(ordered_tier("a", "b")))
    client_fault = error(FailureKind.CLIENT_ERROR)
    run(planner, [client_fault])
    stop = planner.next_attempt(0.0)
    assert stop == Stop(StopReason.NOT_RECOVERABLE)
    assert stop.error([], client_fault) is client_fault


def cannot_take(*names: str) -> tuple[Callable[[Target], bool], list[str]]:
    """A `takes` that refuses the named targets, and the targets it was asked about, in order."""
    asked: list[str] = []

    def takes(t: Target) -> bool:
        asked.append(t.id)
        return t.id not in names
    return takes, asked


def test_a_target_that_cannot_take_the_request_is_passed_over_without_an_attempt() -> None:
    books = Books()
    books.limits.configure({"a": Limits(max_concurrency=1, requests_per_minute=1)})
    takes, asked = cannot_take("a")
    planner = books.planner(route(ordered_tier("a", "b")), takes=takes)

    attempt = planner.next_attempt(0.0)
    assert isinstance(attempt, Attempt)
    assert (attempt.target.id, attempt.number, attempt.reason) == ("b", 1, "primary")
    assert asked == ["a", "b"]
    assert books.limits.in_flight("a") == 0 and books.limits.try_acquire("a", 1, 0.0) == 0.0  # a's limits untouched


def test_a_passed_over_target_is_never_tried_later_nor_counted_as_tried() -> None:
    takes, _ = cannot_take("b")
    planner = Books().planner(route(ordered_tier("a", "b", "c")), takes=takes)
    attempts = run(planner, [SERVER_ERROR, SERVER_ERROR, SERVER_ERROR])
    assert ids(attempts) == ["a", "c", "c"]  # after a and c, the same-target retry goes to c, never b
    assert [a.number for a in attempts] == [1, 2, 3]


def test_a_tier_that_cannot_take_the_request_continues_with_its_fallback_tiers() -> None:
    takes, _ = cannot_take("a", "b")
    r = route(ordered_tier("a", "b"), ordered_tier("c", name="spare"),
              fallback=FallbackPolicy(fallback_tiers=("spare",)))
    attempt = Books().planner(r, takes=takes).next_attempt(0.0)
    assert isinstance(attempt, Attempt) and (attempt.target.id, attempt.tier) == ("c", "spare")


def test_no_target_that_can_take_the_request_exhausts_the_plan_before_any_attempt() -> None:
    takes, asked = cannot_take("a", "b")
    planner = Books().planner(route(ordered_tier("a", "b")), takes=takes)
    assert planner.next_attempt(0.0) == Stop(StopReason.EXHAUSTED)
    assert planner.attempts == [] and asked == ["a", "b"]


def test_a_panic_attempt_goes_only_to_a_target_that_can_take_the_request() -> None:
    books = Books()
    r = route(ordered_tier("a", "b"))
    books.eject(r, "a", 0.0)
    books.eject(r, "b", 0.0)
    takes, _ = cannot_take("a")
    attempt = books.planner(r, takes=takes, now=1.0).next_attempt(1.0)
    assert isinstance(attempt, Attempt) and attempt.target.id == "b"
