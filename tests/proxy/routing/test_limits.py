"""Local limits and the retry budget, on virtual time."""

from __future__ import annotations

import pytest

from llmroute_proxy.routing.limits import BLOCKED_WAIT_S, CONCURRENCY_WAIT_S, LimitBook, RetryBudget
from llmroute_proxy.table import Limits


def book_with(**limits: Limits) -> LimitBook:
    book = LimitBook()
    book.configure(limits)
    return book


def test_a_provider_without_limits_is_always_admitted_and_counted_in_flight() -> None:
    book = LimitBook()
    assert all(book.try_acquire("free", 10_000, 0.0) == 0.0 for _ in range(100))
    assert book.in_flight("free") == 100


def test_requests_per_minute_admit_a_minutes_burst_then_refill_over_time() -> None:
    book = book_with(p=Limits(requests_per_minute=60))
    assert all(book.try_acquire("p", 1, 0.0) == 0.0 for _ in range(60))
    assert book.try_acquire("p", 1, 0.0) == pytest.approx(1.0)
    assert book.try_acquire("p", 1, 0.5) == pytest.approx(0.5)
    assert book.try_acquire("p", 1, 1.0) == 0.0
    assert book.try_acquire("p", 1, 1.0) == pytest.approx(1.0)


def test_tokens_per_minute_wait_for_the_missing_tokens() -> None:
    book = book_with(p=Limits(tokens_per_minute=1000))
    assert book.try_acquire("p", 600, 0.0) == 0.0
    assert book.try_acquire("p", 600, 0.0) == pytest.approx(12.0)  # 200 missing at 1000/min
    assert book.try_acquire("p", 600, 12.0) == 0.0


def test_settling_returns_unused_tokens_to_the_bucket() -> None:
    book = book_with(p=Limits(tokens_per_minute=1000))
    assert book.try_acquire("p", 900, 0.0) == 0.0
    assert book.try_acquire("p", 500, 0.0) > 0
    book.settle_tokens("p", estimated=900, actual=300, now=0.0)
    assert book.try_acquire("p", 500, 0.0) == 0.0


def test_settling_charges_tokens_used_beyond_the_estimate() -> None:
    book = book_with(p=Limits(tokens_per_minute=1000))
    assert book.try_acquire("p", 100, 0.0) == 0.0
    book.settle_tokens("p", estimated=100, actual=900, now=0.0)
    assert book.try_acquire("p", 200, 0.0) == pytest.approx(6.0)


def test_a_request_larger_than_a_minute_of_tokens_waits_for_a_full_bucket_then_leaves_debt() -> None:
    book = book_with(p=Limits(tokens_per_minute=1000))
    assert book.try_acquire("p", 10, 0.0) == 0.0
    assert book.try_acquire("p", 5000, 0.0) == pytest.approx(0.6)
    assert book.try_acquire("p", 5000, 0.6) == 0.0
    assert book.try_acquire("p", 1, 0.6) == pytest.approx(240.06)


def test_a_refusal_takes_nothing() -> None:
    book = book_with(p=Limits(requests_per_minute=2, tokens_per_minute=100))
    assert book.try_acquire("p", 100, 0.0) == 0.0
    assert book.try_acquire("p", 50, 0.0) > 0  # tokens are out; the request is not counted
    book.settle_tokens("p", estimated=100, actual=0, now=0.0)
    assert book.try_acquire("p", 50, 0.0) == 0.0
    assert book.in_flight("p") == 2


def test_max_concurrency_admits_again_after_a_release() -> None:
    book = book_with(p=Limits(max_concurrency=2))
    assert book.try_acquire("p", 1, 0.0) == 0.0
    assert book.try_acquire("p", 1, 0.0) == 0.0
    assert book.try_acquire("p", 1, 0.0) == CONCURRENCY_WAIT_S
    book.release("p")
    assert book.try_acquire("p", 1, 0.0) == 0.0
    assert book.in_flight("p") == 2


def test_the_longest_wait_of_the_limits_is_reported() -> None:
    book = book_with(p=Limits(requests_per_minute=60, tokens_per_minute=60, max_concurrency=10))
    assert book.try_acquire("p", 60, 0.0) == 0.0
    assert book.try_acquire("p", 30, 0.0) == pytest.approx(30.0)


def test_a_zero_limit_blocks() -> None:
    book = book_with(p=Limits(requests_per_minute=0))
    assert book.try_acquire("p", 1, 0.0) == BLOCKED_WAIT_S


def test_releasing_more_than_was_acquired_does_not_go_negative() -> None:
    book = LimitBook()
    book.release("p")
    assert book.in_flight("p") == 0


def test_reconfiguring_with_the_same_limits_keeps_the_buckets() -> None:
    book = book_with(p=Limits(requests_per_minute=2))
    assert book.try_acquire("p", 1, 0.0) == 0.0
    assert book.try_acquire("p", 1, 0.0) == 0.0
    book.configure({"p": Limits(requests_per_minute=2)})
    assert book.try_acquire("p", 1, 0.0) > 0


def test_a_changed_lease_keeps_what_was_spent_and_grants_no_fresh_burst() -> None:
    book = book_with(p=Limits(requests_per_minute=10))
    for _ in range(10):
        assert book.try_acquire("p", 1, 0.0) == 0.0
    book.configure({"p": Limits(requests_per_minute=60)})
    assert book.try_acquire("p", 1, 0.0) == pytest.approx(1.0)  # empty bucket, now refilling at 60/min


def test_a_lowered_lease_caps_the_saved_level() -> None:
    book = book_with(p=Limits(requests_per_minute=100))
    assert book.try_acquire("p", 1, 0.0) == 0.0
    book.configure({"p": Limits(requests_per_minute=3)})
    assert [book.try_acquire("p", 1, 0.0) == 0.0 for _ in range(4)] == [True, True, True, False]


def test_concurrency_in_flight_survives_a_table_swap() -> None:
    book = book_with(p=Limits(max_concurrency=1))
    assert book.try_acquire("p", 1, 0.0) == 0.0
    book.configure({"p": Limits(max_concurrency=1, requests_per_minute=100)})
    assert book.try_acquire("p", 1, 0.0) == CONCURRENCY_WAIT_S


def test_removing_a_providers_limits_lifts_them() -> None:
    book = book_with(p=Limits(requests_per_minute=1))
    assert book.try_acquire("p", 1, 0.0) == 0.0
    book.configure({})
    assert book.try_acquire("p", 1, 0.0) == 0.0


def test_the_retry_budget_always_allows_the_minimum_in_flight() -> None:
    budget = RetryBudget()
    for _ in range(3):
        assert budget.can_retry(0.0)
        budget.on_retry(0.0)
    assert not budget.can_retry(0.0)
    budget.retry_finished()
    assert budget.can_retry(0.0)


def test_sequential_retries_at_low_traffic_are_never_refused() -> None:
    budget = RetryBudget()
    for i in range(50):
        budget.on_request(i * 0.1)
        assert budget.can_retry(i * 0.1)
        budget.on_retry(i * 0.1)
        budget.retry_finished()


def test_the_retry_budget_allows_a_fifth_of_requests_as_retries() -> None:
    budget = RetryBudget()
    for i in range(100):
        budget.on_request(i * 0.05)
    retries = 0
    while budget.can_retry(5.0):
        budget.on_retry(5.0)
        retries += 1
    assert retries == 20


def test_the_retry_budget_window_slides() -> None:
    budget = RetryBudget(min_concurrent=0)
    for _ in range(100):
        budget.on_request(0.0)
    for _ in range(20):
        budget.on_retry(0.0)
    assert not budget.can_retry(9.9)
    for _ in range(10):
        budget.on_request(5.0)
    assert budget.can_retry(9.9)  # 110 requests allow 22 retries
    for _ in range(2):
        budget.on_retry(9.9)
    assert not budget.can_retry(9.9)
    for _ in range(5):
        budget.on_request(10.0)
    assert budget.can_retry(10.0)  # the first second left the window: 15 requests, 2 retries
    budget.on_retry(10.0)
    assert not budget.can_retry(10.0)  # 3 retries is the most 15 requests allow


def test_the_retry_budget_forgets_a_window_it_skipped_entirely() -> None:
    budget = RetryBudget(min_concurrent=0)
    for _ in range(10):
        budget.on_request(0.0)
    budget.on_retry(0.0)
    budget.on_retry(0.0)
    assert not budget.can_retry(0.0)
    for _ in range(10):
        budget.on_request(100.0)
    assert budget.can_retry(100.0)  # the old retries are out of the window
