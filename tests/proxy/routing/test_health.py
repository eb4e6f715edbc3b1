"""Passive health: every breaker transition, on virtual time."""

from __future__ import annotations

import pytest

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.routing.health import PROBE_LEASE_S, HealthBook
from llmroute_proxy.table import OutlierDetection, TargetId

A, B, C, D = (TargetId(name) for name in ("a", "b", "c", "d"))
PEERS = (A, B, C, D)
POLICY = OutlierDetection()  # 5 failures, 30 s base, 300 s max, 50 %


def fail(book: HealthBook, target: TargetId, now: float, kind: FailureKind = FailureKind.SERVER_ERROR,
         retry_after: float | None = None, peers: tuple[TargetId, ...] = PEERS,
         policy: OutlierDetection = POLICY, times: int = 1) -> None:
    for _ in range(times):
        book.on_failure(target, kind, now, retry_after, policy, peers)


def eject(book: HealthBook, target: TargetId, now: float, peers: tuple[TargetId, ...] = PEERS) -> None:
    fail(book, target, now, times=POLICY.consecutive_failures, peers=peers)


def test_unknown_target_is_available_and_healthy() -> None:
    book = HealthBook()
    assert book.is_available(A, 0.0)
    assert book.snapshot(A, 0.0).state == "healthy"
    assert book.unavailable_since(A, 0.0) is None


def test_failures_below_the_threshold_keep_the_target_available() -> None:
    book = HealthBook()
    fail(book, A, 0.0, times=4)
    snap = book.snapshot(A, 0.0)
    assert book.is_available(A, 0.0)
    assert (snap.state, snap.consecutive_failures) == ("healthy", 4)
    assert snap.last_failure is FailureKind.SERVER_ERROR


def test_the_fifth_consecutive_failure_ejects_for_the_base_time() -> None:
    book = HealthBook()
    fail(book, A, 10.0, times=5)
    snap = book.snapshot(A, 10.0)
    assert not book.is_available(A, 10.0)
    assert (snap.state, snap.ejections, snap.until) == ("ejected", 1, 30.0)
    assert book.unavailable_since(A, 20.0) == 10.0


def test_a_success_resets_the_consecutive_count() -> None:
    book = HealthBook()
    fail(book, A, 0.0, times=4)
    book.on_success(A, 1.0, POLICY)
    fail(book, A, 2.0, times=4)
    assert book.is_available(A, 2.0)
    assert book.snapshot(A, 2.0).consecutive_failures == 4


@pytest.mark.parametrize("kind", [FailureKind.CLIENT_ERROR, FailureKind.CONTENT_FILTER,
                                  FailureKind.CONTEXT_LENGTH])
def test_the_requests_own_errors_never_count_against_the_target(kind: FailureKind) -> None:
    book = HealthBook()
    fail(book, A, 0.0, kind=kind, times=20)
    snap = book.snapshot(A, 0.0)
    assert book.is_available(A, 0.0)
    assert (snap.consecutive_failures, snap.last_failure) == (0, None)


@pytest.mark.parametrize("kind", [FailureKind.RATE_LIMITED, FailureKind.OVERLOADED, FailureKind.TIMEOUT,
                                  FailureKind.CONNECTION, FailureKind.STREAM_BROKEN])
def test_recoverable_upstream_failures_count_towards_ejection(kind: FailureKind) -> None:
    book = HealthBook()
    fail(book, A, 0.0, kind=kind, times=5)
    assert book.snapshot(A, 0.0).state == "ejected"


def test_after_the_ejection_the_target_waits_for_one_probe() -> None:
    book = HealthBook()
    eject(book, A, 0.0)
    assert not book.begin_probe(A, 29.9)  # still ejected
    assert book.snapshot(A, 30.0).state == "probing"
    assert not book.is_available(A, 30.0)
    assert book.begin_probe(A, 30.0)
    assert not book.begin_probe(A, 30.5)  # only one live request probes
    assert not book.is_available(A, 30.5)


def test_a_successful_probe_restores_the_target() -> None:
    book = HealthBook()
    eject(book, A, 0.0)
    assert book.begin_probe(A, 31.0)
    book.on_success(A, 32.0, POLICY)
    assert book.is_available(A, 32.0)
    assert book.snapshot(A, 32.0).state == "healthy"
    assert not book.begin_probe(A, 33.0)


def test_a_failed_probe_ejects_again_for_twice_as_long() -> None:
    book = HealthBook()
    eject(book, A, 0.0)
    assert book.begin_probe(A, 30.0)
    fail(book, A, 31.0)
    snap = book.snapshot(A, 31.0)
    assert (snap.state, snap.ejections, snap.until) == ("ejected", 2, 60.0)


def test_repeated_ejections_double_up_to_the_cap() -> None:
    book = HealthBook()
    now = 0.0
    eject(book, A, now)
    durations = [book.snapshot(A, now).until]
    for _ in range(6):
        now += durations[-1]
        assert book.begin_probe(A, now)
        fail(book, A, now)
        durations.append(book.snapshot(A, now).until)
    assert durations == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0, 300.0]


@pytest.mark.parametrize(("healthy_for", "expected"), [(299.0, 60.0), (300.0, 30.0)])
def test_the_doubling_decays_after_serving_for_the_max_ejection(healthy_for: float, expected: float) -> None:
    book = HealthBook()
    eject(book, A, 0.0)
    book.begin_probe(A, 30.0)
    book.on_success(A, 30.0, POLICY)
    eject(book, A, 30.0 + healthy_for)
    assert book.snapshot(A, 30.0 + healthy_for).until == expected


def test_an_unanswered_probe_expires_so_another_request_may_probe() -> None:
    book = HealthBook()
    eject(book, A, 0.0)
    assert book.begin_probe(A, 30.0)
    assert not book.begin_probe(A, 30.0 + PROBE_LEASE_S - 0.1)
    assert book.begin_probe(A, 30.0 + PROBE_LEASE_S)


def test_an_abandoned_probe_frees_the_probe_at_once() -> None:
    book = HealthBook()
    eject(book, A, 0.0)
    assert book.begin_probe(A, 30.0)
    book.abandon_probe(A)
    assert book.begin_probe(A, 30.1)


def test_a_client_error_on_the_probe_neither_restores_nor_ejects() -> None:
    book = HealthBook()
    eject(book, A, 0.0)
    assert book.begin_probe(A, 30.0)
    fail(book, A, 30.5, kind=FailureKind.CLIENT_ERROR)
    assert book.snapshot(A, 30.5).state == "probing"
    assert book.begin_probe(A, 30.6)


def test_failures_reported_while_ejected_do_not_extend_the_ejection() -> None:
    book = HealthBook()
    eject(book, A, 0.0)
    fail(book, A, 10.0, times=10)
    assert book.snapshot(A, 10.0).until == 20.0


@pytest.mark.parametrize(("tier_size", "percent", "may_be_ejected"), [
    (1, 50, 1),  # one target may always be ejected; panic routing keeps it reachable
    (2, 50, 1),  # inclusive: one of two
    (3, 50, 1),
    (4, 50, 2),
    (4, 75, 3),
    (4, 100, 4),
    (4, 0, 0),  # 0 % turns ejection off
])
def test_max_ejection_percent_blocks_further_ejections(tier_size: int, percent: int,
                                                        may_be_ejected: int) -> None:
    book = HealthBook()
    peers = PEERS[:tier_size]
    policy = OutlierDetection(max_ejection_percent=percent)
    for target in peers:
        fail(book, target, 0.0, peers=peers, policy=policy, times=5)
    ejected = [t for t in peers if book.snapshot(t, 0.0).state == "ejected"]
    assert len(ejected) == may_be_ejected


def test_a_blocked_target_is_ejected_once_a_peer_is_back() -> None:
    book = HealthBook()
    peers = (A, B)
    eject(book, A, 0.0, peers=peers)
    fail(book, B, 1.0, peers=peers, times=5)
    assert book.is_available(B, 1.0)
    book.begin_probe(A, 30.0)
    book.on_success(A, 30.0, POLICY)
    fail(book, B, 31.0, peers=peers)
    assert book.snapshot(B, 31.0).state == "ejected"


@pytest.mark.parametrize("kind", [FailureKind.AUTH, FailureKind.QUOTA_EXHAUSTED,
                                  FailureKind.TARGET_NOT_FOUND])
def test_credential_quota_and_missing_target_failures_eject_at_once_for_the_max(kind: FailureKind) -> None:
    book = HealthBook()
    eject(book, B, 0.0)  # a peer already out: the percent cap does not protect a broken target
    fail(book, A, 1.0, kind=kind)
    snap = book.snapshot(A, 1.0)
    assert (snap.state, snap.until, snap.last_failure) == ("ejected", 300.0, kind)


@pytest.mark.parametrize(("kind", "retry_after", "cooled_for"), [
    (FailureKind.RATE_LIMITED, 12.0, 12.0),
    (FailureKind.RATE_LIMITED, 600.0, 60.0),  # capped
    (FailureKind.RATE_LIMITED, None, 1.0),  # a 429 without a hint
    (FailureKind.OVERLOADED, 5.0, 5.0),  # a 503 with Retry-After
])
def test_retry_after_cools_the_target_for_everyone(kind: FailureKind, retry_after: float | None,
                                                   cooled_for: float) -> None:
    book = HealthBook()
    fail(book, A, 100.0, kind=kind, retry_after=retry_after)
    snap = book.snapshot(A, 100.0)
    assert (snap.state, snap.until, snap.ejections) == ("cooling", cooled_for, 0)
    assert not book.is_available(A, 100.0 + cooled_for - 0.01)
    assert book.is_available(A, 100.0 + cooled_for)
    assert book.unavailable_since(A, 100.0) == 100.0


def test_a_server_error_without_a_hint_does_not_cool() -> None:
    book = HealthBook()
    fail(book, A, 0.0, kind=FailureKind.SERVER_ERROR)
    assert book.is_available(A, 0.0)


def test_a_shorter_hint_does_not_shorten_a_cooldown() -> None:
    book = HealthBook()
    fail(book, A, 0.0, kind=FailureKind.RATE_LIMITED, retry_after=20.0)
    fail(book, A, 1.0, kind=FailureKind.RATE_LIMITED, retry_after=2.0)
    assert book.snapshot(A, 1.0).until == 19.0


def test_a_probe_waits_for_a_cooldown_to_end() -> None:
    book = HealthBook()
    eject(book, A, 0.0)
    fail(book, A, 25.0, kind=FailureKind.RATE_LIMITED, retry_after=10.0)  # a late answer, while ejected
    assert not book.begin_probe(A, 30.0)
    assert book.begin_probe(A, 35.0)
