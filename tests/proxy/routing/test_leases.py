"""The sidecar's side of leases: shares become the local limits and budgets, and lapse to less, never more."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmroute_proxy.routing.budget import BudgetLedger
from llmroute_proxy.routing.leases import BudgetShare, LeaseGrant, LeaseHolder
from llmroute_proxy.routing.limits import LimitBook
from llmroute_proxy.table import Budget, Limits

TABLE = {"openai": Limits(600.0, 100_000.0, 10), "claude": Limits(60.0, None, None)}
figures = st.one_of(st.none(), st.floats(0, 1e9, allow_nan=False))


def test_a_held_lease_replaces_the_tables_figures_and_others_keep_theirs() -> None:
    holder = LeaseHolder()
    assert holder.limits(TABLE, 0) == TABLE and holder.state(0) == "none"
    holder.grant(LeaseGrant(30.0, {"openai": Limits(100.0, 5000.0, 2)}))
    assert holder.limits(TABLE, 29.9) == {"openai": Limits(100.0, 5000.0, 2), "claude": TABLE["claude"]}
    assert holder.state(29.9) == "held"


@given(figures, figures, st.one_of(st.none(), st.integers(0, 10_000)))
def test_after_the_ttl_every_share_falls_and_never_rises(rpm: float | None, tpm: float | None,
                                                        conc: int | None) -> None:
    holder = LeaseHolder()
    last = Limits(rpm, tpm, conc)
    holder.grant(LeaseGrant(30.0, {"openai": last}))
    lapsed = holder.limits(TABLE, 30.0)["openai"]
    assert holder.state(30.0) == "expired"
    for before, after in ((rpm, lapsed.requests_per_minute), (tpm, lapsed.tokens_per_minute),
                          (conc, lapsed.max_concurrency)):
        assert (before is None) == (after is None)
        if before is not None and after is not None:
            assert after <= before


def test_a_lease_changes_the_limiter_without_a_fresh_burst() -> None:
    book = LimitBook()
    book.configure({"openai": Limits(600.0, None, None)})
    for _ in range(500):
        assert book.try_acquire("openai", 0, 0.0) == 0.0
        book.release("openai")
    book.configure({"openai": Limits(120.0, None, None)})  # what a smaller lease does
    admitted = 0
    while book.try_acquire("openai", 0, 0.0) == 0.0:
        admitted += 1
        book.release("openai")
    assert admitted == 100  # the 100 left, not a fresh 120


def test_a_leased_budget_share_is_enforced_with_reserve_then_settle() -> None:
    ledger = BudgetLedger()
    budget = Budget(limit_usd=100.0, on_exceeded="reject")
    ledger.configure({"chat": budget})
    ledger.lease({"chat": 10.0}, {"chat": 0.0}, now=1000.0)
    first = ledger.reserve("chat", budget, 6.0, 1000.0)
    assert first.allowed and first.reservation is not None
    assert not ledger.reserve("chat", budget, 6.0, 1000.0).allowed  # 6 reserved + 6 > 10
    ledger.settle(first.reservation, 2.0, 1000.0)
    assert ledger.reserve("chat", budget, 6.0, 1000.0).allowed  # 2 spent + 6 ≤ 10
    assert ledger.snapshot("chat", 1000.0).limit_usd == 10.0


def test_a_restarted_sidecar_starts_from_the_spend_the_operator_counted() -> None:
    ledger = BudgetLedger()
    budget = Budget(limit_usd=100.0, on_exceeded="reject")
    ledger.configure({"chat": budget})
    ledger.lease({"chat": 10.0}, {"chat": 9.0}, now=1000.0)
    assert ledger.snapshot("chat", 1000.0).spent_usd == 9.0
    assert not ledger.reserve("chat", budget, 2.0, 1000.0).allowed


def test_a_lapsed_budget_share_keeps_the_spent_part_and_halves_the_rest() -> None:
    holder = LeaseHolder()
    holder.grant(LeaseGrant(30.0, budgets={"chat": BudgetShare(10.0, 4.0)}))
    budget = Budget(limit_usd=100.0)
    assert holder.budget("chat", budget, 0).limit_usd == 10.0
    assert holder.budget("chat", budget, 31).limit_usd == 7.0
    assert holder.budget("other", budget, 31) is budget
