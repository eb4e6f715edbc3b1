from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_proxy.routing.budget import BudgetLedger, BudgetStatus, Reservation, period_bounds
from llmroute_proxy.table import Budget, BudgetPeriod


def epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


NOON = epoch(2026, 3, 14, 12, 30, 15)
REJECT = Budget(limit_usd=10.0, period=BudgetPeriod.DAY, on_exceeded="reject")


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    (BudgetPeriod.HOUR, NOON, epoch(2026, 3, 14, 12), epoch(2026, 3, 14, 13)),
    (BudgetPeriod.DAY, NOON, epoch(2026, 3, 14), epoch(2026, 3, 15)),
    (BudgetPeriod.MONTH, NOON, epoch(2026, 3, 1), epoch(2026, 4, 1)),
    (BudgetPeriod.MONTH, epoch(2026, 12, 31, 23, 59), epoch(2026, 12, 1), epoch(2027, 1, 1)),
    (BudgetPeriod.MONTH, epoch(2028, 2, 29, 10), epoch(2028, 2, 1), epoch(2028, 3, 1)),
    (BudgetPeriod.DAY, epoch(2026, 3, 15), epoch(2026, 3, 15), epoch(2026, 3, 16)),
], ids=["hour", "day", "month", "december rolls into the next year", "leap february", "at a boundary"])
def test_periods_are_utc_calendar_periods(period: BudgetPeriod, now: float, start: float, end: float) -> None:
    assert period_bounds(period, now) == (start, end)


def test_a_reservation_within_the_limit_is_allowed_and_counted_as_reserved() -> None:
    ledger = BudgetLedger()
    decision = ledger.reserve("r", REJECT, 4.0, NOON)
    assert decision.allowed and decision.reservation is not None and not decision.exceeded
    status = ledger.snapshot("r", NOON)
    assert (status.spent_usd, status.reserved_usd, status.limit_usd) == (0.0, 4.0, 10.0)


def test_settling_replaces_the_estimate_by_the_real_cost() -> None:
    ledger = BudgetLedger()
    reservation = ledger.reserve("r", REJECT, 4.0, NOON).reservation
    assert reservation is not None
    ledger.settle(reservation, 1.5, NOON + 1)
    status = ledger.snapshot("r", NOON + 1)
    assert (status.spent_usd, status.reserved_usd, status.percent) == (1.5, 0.0, 15.0)


def test_releasing_a_failed_request_spends_nothing() -> None:
    ledger = BudgetLedger()
    reservation = ledger.reserve("r", REJECT, 4.0, NOON).reservation
    assert reservation is not None
    ledger.release(reservation)
    assert ledger.snapshot("r", NOON) == BudgetStatus(0.0, 0.0, 10.0, 0.0, epoch(2026, 3, 14), epoch(2026, 3, 15))


def test_settling_twice_or_after_release_counts_nothing_more() -> None:
    ledger = BudgetLedger()
    first = ledger.reserve("r", REJECT, 2.0, NOON).reservation
    second = ledger.reserve("r", REJECT, 2.0, NOON).reservation
    assert first is not None and second is not None
    ledger.settle(first, 1.0, NOON)
    ledger.settle(first, 1.0, NOON)
    ledger.release(second)
    ledger.settle(second, 1.0, NOON)
    status = ledger.snapshot("r", NOON)
    assert (status.spent_usd, status.reserved_usd) == (1.0, 0.0)


def test_reject_refuses_a_reservation_that_would_pass_the_limit_until_the_period_ends() -> None:
    ledger = BudgetLedger()
    reservation = ledger.reserve("r", REJECT, 8.0, NOON).reservation
    assert reservation is not None
    ledger.settle(reservation, 8.0, NOON)
    decision = ledger.reserve("r", REJECT, 2.5, NOON)
    assert not decision.allowed and decision.reservation is None and decision.exceeded
    assert decision.retry_after == pytest.approx(epoch(2026, 3, 15) - NOON)
    assert ledger.reserve("r", REJECT, 2.0, NOON).allowed  # exactly reaching the limit is fine


def test_reservations_still_in_flight_count_against_the_limit() -> None:
    ledger = BudgetLedger()
    assert ledger.reserve("r", REJECT, 6.0, NOON).allowed
    assert not ledger.reserve("r", REJECT, 6.0, NOON).allowed


def test_downgrade_allows_the_request_on_the_downgrade_tier() -> None:
    budget = Budget(limit_usd=1.0, on_exceeded="downgrade", downgrade_tier="cheap")
    ledger = BudgetLedger()
    assert ledger.reserve("r", budget, 0.5, NOON).downgrade_to is None
    decision = ledger.reserve("r", budget, 0.8, NOON)
    assert decision.allowed and decision.exceeded and decision.downgrade_to == "cheap"
    assert decision.reservation is not None


def test_downgrade_without_a_tier_rejects() -> None:
    budget = Budget(limit_usd=1.0, on_exceeded="downgrade")
    assert not BudgetLedger().reserve("r", budget, 2.0, NOON).allowed


def test_alert_mode_lets_every_request_through_and_says_it_exceeded() -> None:
    budget = Budget(limit_usd=1.0, on_exceeded="alert")
    decision = BudgetLedger().reserve("r", budget, 5.0, NOON)
    assert decision.allowed and decision.exceeded and decision.downgrade_to is None


def test_the_alert_fires_exactly_once_per_period_when_alert_at_percent_is_crossed() -> None:
    budget = Budget(limit_usd=10.0, alert_at_percent=50.0, on_exceeded="alert")
    ledger = BudgetLedger()
    alerts = [ledger.reserve("r", budget, 2.0, NOON + i).alert for i in range(8)]
    assert alerts == [False, False, True, False, False, False, False, False]
    assert ledger.reserve("r", budget, 6.0, epoch(2026, 3, 15, 1)).alert


def test_a_refused_reservation_does_not_raise_the_alert() -> None:
    budget = Budget(limit_usd=10.0, alert_at_percent=80.0, on_exceeded="reject")
    ledger = BudgetLedger()
    assert not ledger.reserve("r", budget, 11.0, NOON).alert
    assert ledger.reserve("r", budget, 9.0, NOON).alert


def test_a_new_period_starts_from_zero_spend() -> None:
    ledger = BudgetLedger()
    reservation = ledger.reserve("r", REJECT, 10.0, NOON).reservation
    assert reservation is not None
    ledger.settle(reservation, 10.0, NOON)
    assert not ledger.reserve("r", REJECT, 1.0, NOON).allowed
    tomorrow = epoch(2026, 3, 15, 0, 0, 1)
    assert ledger.reserve("r", REJECT, 1.0, tomorrow).allowed
    status = ledger.snapshot("r", tomorrow)
    assert status.spent_usd == 0.0 and status.period_start == epoch(2026, 3, 15)


def test_a_request_in_flight_across_the_period_boundary_is_billed_to_the_new_period() -> None:
    ledger = BudgetLedger()
    reservation = ledger.reserve("r", REJECT, 3.0, epoch(2026, 3, 14, 23, 59, 59))
    assert reservation.reservation is not None
    tomorrow = epoch(2026, 3, 15, 0, 0, 5)
    status = ledger.snapshot("r", tomorrow)
    assert status.reserved_usd == 3.0
    ledger.settle(reservation.reservation, 2.0, tomorrow)
    status = ledger.snapshot("r", tomorrow)
    assert (status.spent_usd, status.reserved_usd) == (2.0, 0.0)


def test_a_route_never_seen_is_shown_with_the_budget_given() -> None:
    status = BudgetLedger().snapshot("r", NOON, REJECT)
    assert status == BudgetStatus(0.0, 0.0, 10.0, 0.0, epoch(2026, 3, 14), epoch(2026, 3, 15))


def test_routes_have_separate_accounts() -> None:
    ledger = BudgetLedger()
    assert ledger.reserve("a", REJECT, 10.0, NOON).allowed
    assert ledger.reserve("b", REJECT, 10.0, NOON).allowed
    assert not ledger.reserve("a", REJECT, 0.01, NOON).allowed


def test_configure_shows_configured_routes_before_any_request_and_drops_removed_ones() -> None:
    ledger = BudgetLedger()
    assert ledger.reserve("old", REJECT, 1.0, NOON).allowed
    ledger.configure({"new": REJECT})
    assert ledger.snapshot("old", NOON) == BudgetStatus(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    status = ledger.snapshot("new", NOON)
    assert (status.spent_usd, status.limit_usd, status.period_end) == (
        0.0, 10.0, epoch(2026, 3, 15))


def test_configure_keeps_spend_and_applies_a_changed_limit() -> None:
    ledger = BudgetLedger()
    reservation = ledger.reserve("r", REJECT, 4.0, NOON).reservation
    assert reservation is not None
    ledger.settle(reservation, 4.0, NOON)
    ledger.configure({"r": Budget(limit_usd=5.0, on_exceeded="reject")})
    status = ledger.snapshot("r", NOON)
    assert (status.spent_usd, status.limit_usd, status.percent) == (4.0, 5.0, 80.0)


def test_many_reservations_before_any_settles_never_overshoot_the_limit() -> None:
    ledger = BudgetLedger()
    granted = [d.reservation for d in (ledger.reserve("r", REJECT, 0.75, NOON) for _ in range(100))
               if d.reservation is not None]
    assert len(granted) == 13  # 13 × 0.75 = 9.75; a 14th would make 10.5
    for reservation in granted:
        ledger.settle(reservation, 0.75, NOON + 1)
    status = ledger.snapshot("r", NOON + 1)
    assert status.spent_usd <= REJECT.limit_usd


_operation = st.one_of(
    st.tuples(st.just("reserve"), st.floats(0.0, 3.0)),
    st.tuples(st.just("settle"), st.floats(0.0, 1.0)),  # the fraction of the estimate really spent
    st.tuples(st.just("release"), st.just(0.0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_operation, max_size=80), st.floats(0.5, 20.0))
def test_no_interleaving_of_reserve_settle_and_release_spends_past_the_limit(
        operations: list[tuple[str, float]], limit: float) -> None:
    budget = Budget(limit_usd=limit, on_exceeded="reject")
    ledger = BudgetLedger()
    ledger.configure({"r": budget})
    open_: list[Reservation] = []
    spent = 0.0
    largest_estimate = 0.0
    for kind, value in operations:
        if kind == "reserve":
            largest_estimate = max(largest_estimate, value)
            decision = ledger.reserve("r", budget, value, NOON)
            if decision.reservation is not None:
                open_.append(decision.reservation)
        elif open_:
            reservation = open_.pop(0)
            if kind == "settle":
                actual = reservation.estimate_usd * value
                ledger.settle(reservation, actual, NOON)
                spent += actual
            else:
                ledger.release(reservation)
        status = ledger.snapshot("r", NOON)
        assert status is not None
        assert status.spent_usd + status.reserved_usd <= limit + 1e-9
        assert status.spent_usd <= limit + largest_estimate
    for reservation in open_:
        ledger.settle(reservation, reservation.estimate_usd, NOON)
        spent += reservation.estimate_usd
    assert spent <= limit + 1e-9
