"""Global limits and budgets divided among sidecars: never above the global figure, by demand, with a floor."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from llmroute_operator.contracts import DesiredTable, GlobalLimits, PodRef
from llmroute_operator.leases import (
    LeaseBook,
    divide,
    divide_whole,
    stated_total,
    throttled_total,
    usefulness,
)
from llmroute_proxy.dialects.base import Quota
from llmroute_proxy.sync.protocol import Lease, LeaseBudget, PeriodSpend
from llmroute_proxy.table import BudgetPeriod

PODS = [PodRef("ns", f"p{i}") for i in range(6)]
demands = st.dictionaries(st.integers(0, 50), st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=50)
totals = st.floats(0, 1e12, allow_nan=False, allow_infinity=False)


@given(totals, demands, st.floats(0, 1))
@example(1.1125369292536007e-308, {0: 0.0, 1: 0.0, 2: 0.0}, 0.5)  # subnormal: once found over by an ulp
def test_shares_never_sum_above_the_total(total: float, demand: dict[int, float], floor: float) -> None:
    shares = divide(total, demand, floor)
    assert set(shares) == set(demand)
    assert math.fsum(shares.values()) <= total
    assert all(s >= 0 for s in shares.values())


@given(st.integers(0, 10_000), demands, st.floats(0, 1))
def test_whole_shares_sum_exactly_to_the_total(total: int, demand: dict[int, float], floor: float) -> None:
    shares = divide_whole(total, demand, floor)
    assert sum(shares.values()) == total and all(s >= 0 for s in shares.values())


@given(st.floats(1, 1e9), demands)
def test_every_sidecar_gets_at_least_its_floor(total: float, demand: dict[int, float]) -> None:
    shares = divide(total, demand, 0.2)
    assert min(shares.values()) >= total * 0.2 / len(demand) * (1 - 1e-9)


def test_shares_follow_demand_above_the_floor() -> None:
    shares = divide(1000.0, {"busy": 90.0, "idle": 0.0, "some": 10.0}, 0.3)
    assert math.isclose(shares["idle"], 100.0)
    assert math.isclose(shares["busy"], 100.0 + 700.0 * 0.9) and math.isclose(shares["some"], 100.0 + 70.0)


def table(rpm: float | None = 600, conc: int | None = 10, budget: float | None = None) -> DesiredTable:
    return DesiredTable("v", {}, {"ns/openai": GlobalLimits(rpm, None, conc)},
                        {} if budget is None else {"ns/chat": budget})


def report(requests: int = 0, cost: float = 0.0) -> dict[str, object]:
    return {"interval": 10, "providers": {"openai": {"requests": requests, "tokens": 0}},
            "routes": {"chat": {"requests": requests, "cost_usd": cost}}}


def rpm_of(leases: dict[PodRef, object], pod: PodRef) -> float:
    return leases[pod].limits["openai"].requests_per_minute  # type: ignore[attr-defined, no-any-return]


def test_leases_rebalance_as_sidecars_come_change_load_and_go() -> None:
    book = LeaseBook(ttl_s=30, floor_fraction=0.2, half_life_s=10)
    a, b, c = PODS[:3]
    one = book.leases({a: table()}, now=0, now_wall=0)
    assert rpm_of(one, a) == 600 and one[a].ttl == 30 and one[a].limits["openai"].max_concurrency == 10
    two = book.leases({a: table(), b: table()}, now=1, now_wall=1)
    assert rpm_of(two, a) == rpm_of(two, b) == 300  # no demand yet: equal
    for _ in range(5):
        book.observe(a, report(requests=100), now=2, now_wall=2)
    busy = book.leases({a: table(), b: table()}, now=2, now_wall=2)
    assert rpm_of(busy, a) > 500 and rpm_of(busy, b) >= 60  # the floor: 20 % in equal parts
    assert rpm_of(busy, a) + rpm_of(busy, b) <= 600
    three = book.leases({a: table(), b: table(), c: table()}, now=3, now_wall=3)
    assert sum(rpm_of(three, p) for p in (a, b, c)) <= 600 and rpm_of(three, c) >= 40
    assert sum(three[p].limits["openai"].max_concurrency for p in (a, b, c)) == 10  # type: ignore[misc]


def test_a_departed_sidecars_share_stays_counted_until_its_lease_would_expire() -> None:
    book = LeaseBook(ttl_s=30)
    a, b = PODS[:2]
    before = book.leases({a: table(), b: table()}, now=0, now_wall=0)
    book.depart(b)
    during = book.leases({a: table()}, now=10, now_wall=10)
    assert rpm_of(during, a) + rpm_of(before, b) <= 600
    after = book.leases({a: table()}, now=31, now_wall=31)
    assert rpm_of(after, a) == 600


def test_budget_shares_are_spend_plus_a_part_of_what_is_left_and_sum_to_the_limit() -> None:
    book = LeaseBook(ttl_s=30, floor_fraction=0.2)
    a, b = PODS[:2]
    book.observe(a, report(requests=1, cost=30.0), now=100, now_wall=100)
    leases = book.leases({a: table(budget=100), b: table(budget=100)}, now=0, now_wall=100)
    share_a, share_b = leases[a].budgets["chat"], leases[b].budgets["chat"]
    assert share_a.spent_usd == 30.0 and share_b.spent_usd == 0.0
    assert share_a.limit_usd > 30.0 and share_b.limit_usd >= 70.0 * 0.1
    assert math.isclose(share_a.limit_usd + share_b.limit_usd, 100.0)


def test_a_new_budget_period_starts_from_zero_spend() -> None:
    book = LeaseBook()
    a = PODS[0]
    book.observe(a, report(cost=80.0), now=3600, now_wall=3600)
    next_day = book.leases({a: table(budget=100)}, now=0, now_wall=86400 * 2)
    assert next_day[a].budgets["chat"].limit_usd == 100.0 and next_day[a].budgets["chat"].spent_usd == 0.0


@pytest.mark.parametrize("period", [BudgetPeriod.HOUR, BudgetPeriod.MONTH])
def test_spend_reported_before_the_routes_period_was_known_counts_in_that_period(period: BudgetPeriod) -> None:
    """After an operator restart, reports come before the pod's table (and so the route's period) is
    known; a route whose period is not a day must not start again from zero once it is."""
    book = LeaseBook()
    a = PODS[0]
    book.observe(a, report(cost=30.0), now=0, now_wall=NOON)  # no periods given: not known yet
    leases = book.leases({a: table(budget=100)}, now=0, now_wall=NOON + 60, periods={"ns/chat": period})
    assert leases[a].budgets["chat"].spent_usd == 30.0
    book.observe(a, report(cost=5.0), now=10, now_wall=NOON + 70, periods={"ns/chat": period})
    again = book.leases({a: table(budget=100)}, now=10, now_wall=NOON + 80, periods={"ns/chat": period})
    assert again[a].budgets["chat"].spent_usd == 35.0


# ---- spend across an operator restart --------------------------------------------------------------

DAY = 1_779_926_400.0  # 2026-05-28T00:00:00Z, the start of the route's budget period
NOON = DAY + 43_200


def hello(book: LeaseBook, pod: PodRef, usd: float, start: float = DAY) -> None:
    """The pod's hello: it spent `usd` on chat in the period starting at `start`, beyond what it reported."""
    book.announce(pod, {"ns/chat": PeriodSpend(start, usd)})


def budgets(leases: dict[PodRef, Lease], *pods: PodRef) -> list[LeaseBudget]:
    return [leases[pod].budgets["chat"] for pod in pods]


@pytest.mark.parametrize("status_says, a_says, b_says, left", [
    # a, b and c spent 20 each this morning; c went in a rollout: its 20 is spent by a sidecar gone,
    # not leased again (the shares sum to 100 − 20)
    pytest.param(60.0, 20.0, 20.0, 100 - 60, id="the spend of sidecars gone before it stays spent"),
    # all of the 90 is a's and b's, which count it themselves: the 10 left is theirs to spend, not blocked
    # by counting the 90 once as the status's and again as theirs
    pytest.param(90.0, 60.0, 30.0, 100 - 90, id="connected sidecars' spend is not counted twice"),
])
def test_after_an_operator_restart_what_is_left_of_the_budget_is_what_all_sidecars_left(
        status_says: float, a_says: float, b_says: float, left: float) -> None:
    """The operator restarted; the route's status says what was spent, a's and b's hellos what of it is theirs."""
    book = LeaseBook(ttl_s=30)
    a, b = PODS[:2]
    book.seed_spend("ns", "chat", DAY, status_says)
    hello(book, a, a_says)
    hello(book, b, b_says)
    shares = budgets(book.leases({a: table(budget=100), b: table(budget=100)}, now=0, now_wall=NOON), a, b)
    assert [share.spent_usd for share in shares] == [a_says, b_says]  # their floors: a restarted sidecar resumes there
    assert math.isclose(sum(share.limit_usd - share.spent_usd for share in shares), left)


def test_until_a_sidecar_of_before_the_restart_is_back_its_spend_counts_as_gone() -> None:
    """On the safe side for a moment, never counted twice: b's 30 moves from the gone to b when it says hello."""
    book = LeaseBook(ttl_s=30)
    a, b = PODS[:2]
    book.seed_spend("ns", "chat", DAY, 60.0)
    hello(book, a, 30.0)
    [alone] = budgets(book.leases({a: table(budget=100)}, now=0, now_wall=NOON), a)
    assert math.isclose(alone.limit_usd, 100 - 30)  # b's 30 is counted as gone meanwhile
    hello(book, b, 30.0)
    shares = budgets(book.leases({a: table(budget=100), b: table(budget=100)}, now=1, now_wall=NOON + 1), a, b)
    assert math.isclose(sum(share.limit_usd for share in shares), 100)


@pytest.mark.parametrize("again", [
    30.0,  # its stream broke: its hello says the 20 and the 10 it reported since
    0.0,  # it restarted and forgot its spend
])
def test_a_sidecar_back_after_the_operator_restarted_resumes_from_what_it_said_and_the_gone_stay_gone(
        again: float) -> None:
    """a said 20 after the restart and reported 10 since, then came back: its floor is 30 (not 40, not 10),
    and c's 40 (gone) is still 60 − 20."""
    book = LeaseBook(ttl_s=30)
    a = PODS[0]
    book.seed_spend("ns", "chat", DAY, 60.0)
    hello(book, a, 20.0)
    book.leases({a: table(budget=100)}, now=0, now_wall=NOON)
    book.observe(a, report(requests=1, cost=10.0), now=1, now_wall=NOON + 1)
    book.depart(a)
    hello(book, a, again)
    [share] = budgets(book.leases({a: table(budget=100)}, now=2, now_wall=NOON + 2), a)
    assert share.spent_usd == 30.0 and math.isclose(share.limit_usd, 100 - 40)


def test_a_hello_without_a_restart_counts_nothing_twice() -> None:
    """The stream broke, the operator did not restart: a's hello says the 30 it reported; it is 30, not 60."""
    book = LeaseBook(ttl_s=30)
    a, b = PODS[:2]
    book.observe(a, report(requests=1, cost=30.0), now=0, now_wall=NOON)
    book.leases({a: table(budget=100), b: table(budget=100)}, now=0, now_wall=NOON)
    book.depart(a)
    hello(book, a, 30.0)
    shares = budgets(book.leases({a: table(budget=100), b: table(budget=100)}, now=1, now_wall=NOON + 1), a, b)
    assert shares[0].spent_usd == 30.0 and math.isclose(sum(share.limit_usd for share in shares), 100)


def test_spend_said_or_read_back_for_an_earlier_period_counts_for_nothing() -> None:
    book = LeaseBook(ttl_s=30)
    a = PODS[0]
    yesterday = DAY - 86_400
    book.seed_spend("ns", "chat", yesterday, 80.0)
    hello(book, a, 50.0, start=yesterday)
    [share] = budgets(book.leases({a: table(budget=100)}, now=0, now_wall=NOON), a)
    assert share == LeaseBudget(100.0, 0.0)


def test_while_an_older_sidecar_that_says_no_spend_is_connected_the_route_is_divided_as_before() -> None:
    """An older sidecar's hello says nothing of its spend: the gone's cannot be told from its own (which it
    counts itself), so none is counted as gone rather than blocking a route with budget left."""
    book = LeaseBook(ttl_s=30)
    a, old = PODS[:2]
    book.seed_spend("ns", "chat", DAY, 60.0)
    hello(book, a, 30.0)
    book.announce(old, None)
    shares = budgets(book.leases({a: table(budget=100), old: table(budget=100)}, now=0, now_wall=NOON), a, old)
    assert math.isclose(sum(share.limit_usd for share in shares), 100)
    book.depart(old)  # gone, its last lease run out: the 30 it spent before the restart is the gone's
    [share] = budgets(book.leases({a: table(budget=100)}, now=31, now_wall=NOON + 31), a)
    assert math.isclose(share.limit_usd, 100 - 30)


@given(st.floats(1, 1e4), st.lists(st.floats(0, 1e3), min_size=1, max_size=6),
       st.lists(st.floats(0, 1e3), max_size=6))
def test_after_a_restart_the_route_never_stands_to_spend_more_than_its_limit(
        limit: float, connected: list[float], gone: list[float]) -> None:
    """What the connected may spend up to (their limits) plus what the gone spent is the limit, or what is
    already spent when that is more: never more, and no budget left is withheld."""
    book = LeaseBook(ttl_s=30)
    pods = PODS[:len(connected)]
    book.seed_spend("ns", "chat", DAY, math.fsum(connected) + math.fsum(gone))
    for pod, usd in zip(pods, connected, strict=False):
        hello(book, pod, usd)
    leases = book.leases({pod: table(budget=limit) for pod in pods}, now=0, now_wall=NOON)
    exposed = math.fsum(share.limit_usd for share in budgets(leases, *pods)) + math.fsum(gone)
    assert math.isclose(exposed, max(limit, math.fsum(connected) + math.fsum(gone)), rel_tol=1e-9, abs_tol=1e-9)


def test_unlimited_figures_stay_unlimited() -> None:
    leases = LeaseBook().leases({PODS[0]: table(rpm=None, conc=None)}, now=0, now_wall=0)
    limits = leases[PODS[0]].limits["openai"]
    assert limits.requests_per_minute is None and limits.max_concurrency is None


@pytest.mark.parametrize("attempts, failures, useful", [
    (0, 0, 1.0), (10, 0, 1.0), (10, 5, 0.5), (10, 10, 0.0), (10, 12, 0.0),
])
def test_usefulness_is_the_part_of_attempts_that_did_not_fail(attempts: float, failures: float, useful: float) -> None:
    assert usefulness(attempts, failures) == useful


@pytest.mark.parametrize("total, sent, accepted, leased", [
    (600, 0, 1.0, 600),  # nothing sent: nothing known
    (600, 300, 0.9, 600),  # 10 % answered 429: below THROTTLED_RATIO
    (600, 1000, 0.5, 550),  # it took 500 of 1000 a minute: lease that, with headroom
    (600, 300, 0.5, 165),
    (600, 2000, 0.5, 600),  # it took more than the figure: never above the figure
    (600, 100, 0.1, 60),  # never below MIN_TOTAL_FRACTION
])
def test_a_throttled_provider_is_leased_what_it_accepted(total: float, sent: float, accepted: float,
                                                          leased: float) -> None:
    assert math.isclose(throttled_total(total, sent, accepted), leased)


def health(requests: int, failures: int = 0, throttled: int = 0, interval: float = 10) -> dict[str, object]:
    """A report whose sidecar sent `requests` to openai's one target, of which `failures` failed."""
    errors = {"rate_limited": throttled, "server_error": failures - throttled} if failures else {}
    return {"interval": interval, "providers": {"openai": {"requests": requests, "tokens": 0}},
            "targets": {"openai/gpt-4o-mini": {"requests": requests, "failures": failures, "errors": errors}}}


def test_a_provider_failing_for_one_sidecar_is_leased_to_the_sidecars_it_works_for() -> None:
    book = LeaseBook(ttl_s=30, floor_fraction=0.2, half_life_s=10)
    broken, working = PODS[:2]
    for _ in range(10):  # same demand; for `broken` the provider's endpoint fails (its region is down)
        book.observe(broken, health(100, failures=95), now=0, now_wall=0)
        book.observe(working, health(100), now=0, now_wall=0)
    leases = book.leases({broken: table(), working: table()}, now=0, now_wall=0)
    assert rpm_of(leases, broken) < 90 and rpm_of(leases, working) > 510  # the floor is 60 each
    assert rpm_of(leases, broken) >= 60 and rpm_of(leases, broken) + rpm_of(leases, working) <= 600
    conc = [leases[p].limits["openai"].max_concurrency for p in (broken, working)]
    assert conc[0] < conc[1] and sum(conc) == 10  # type: ignore[operator, arg-type]


def test_a_provider_throttling_across_sidecars_is_leased_less_and_more_again_as_it_recovers() -> None:
    book = LeaseBook(ttl_s=30, floor_fraction=0.2, half_life_s=10)
    a, b = PODS[:2]
    for _ in range(20):  # each sends 40 a minute (wanting more), the provider answers half with 429
        for pod in (a, b):
            book.observe(pod, health(40 // 6, failures=20 // 6, throttled=20 // 6), now=0, now_wall=0)
    shrunk = book.leases({a: table(), b: table()}, now=0, now_wall=0)
    total = rpm_of(shrunk, a) + rpm_of(shrunk, b)
    assert total < 100 and math.isclose(book.leased_requests_per_minute()["ns/openai"], total)
    for _ in range(40):  # the 429s stop
        for pod in (a, b):
            book.observe(pod, health(6), now=0, now_wall=0)
    recovered = book.leases({a: table(), b: table()}, now=1, now_wall=1)
    assert math.isclose(rpm_of(recovered, a) + rpm_of(recovered, b), 600)


def test_a_few_429s_shrink_nothing() -> None:
    book = LeaseBook(ttl_s=30, half_life_s=10)
    for _ in range(20):
        book.observe(PODS[0], health(1, failures=1, throttled=1, interval=30), now=0, now_wall=0)  # 2 a minute, all 429
    assert rpm_of(book.leases({PODS[0]: table()}, now=0, now_wall=0), PODS[0]) == 600


def test_demand_halves_with_each_half_life_of_reports_saying_nothing_of_it() -> None:
    book = LeaseBook(half_life_s=60)
    a = PODS[0]
    for t in range(0, 600, 10):  # 60 a minute for ten minutes: the rate settles at 60
        book.observe(a, report(requests=10), now=t, now_wall=t)
    assert math.isclose(book.demand(a, "ns/openai", "requests", now=590), 60, rel_tol=0.01)
    for t in range(600, 660, 10):  # a minute of reports that name only the route, not the provider
        book.observe(a, {"interval": 10, "routes": {"chat": {"requests": 0, "cost_usd": 0.001}}}, now=t, now_wall=t)
    assert math.isclose(book.demand(a, "ns/openai", "requests", now=650), 30, rel_tol=0.01)


def test_a_connected_sidecar_that_stops_reporting_decays_after_its_reporting_interval() -> None:
    book = LeaseBook(half_life_s=60)
    a = PODS[0]
    for t in range(0, 600, 10):
        book.observe(a, report(requests=10), now=t, now_wall=t)
    settled = book.demand(a, "ns/openai", "requests", now=590)
    assert book.demand(a, "ns/openai", "requests", now=604) == settled  # the next report is late, not missing
    assert math.isclose(book.demand(a, "ns/openai", "requests", now=665), settled / 2)
    assert math.isclose(book.demand(a, "ns/openai", "requests", now=785), settled / 8)
    # a report after the silence counts the silence as time without use, then adds its own interval
    book.observe(a, report(requests=10), now=780, now_wall=780)
    assert math.isclose(book.demand(a, "ns/openai", "requests", now=780),
                        settled / 8 * 0.5 ** (10 / 60) + 60 * (1 - 0.5 ** (10 / 60)))


def test_an_idle_sidecars_share_decays_toward_the_floor_and_the_active_one_gets_the_rest() -> None:
    book = LeaseBook(ttl_s=30, floor_fraction=0.2, half_life_s=60)
    idle, busy = PODS[:2]
    tables = {idle: table(), busy: table()}
    for t in range(0, 600, 10):  # both busy alike: equal shares
        for pod in (idle, busy):
            book.observe(pod, report(requests=50), now=t, now_wall=t)
    even = book.leases(tables, now=600, now_wall=600)
    assert math.isclose(rpm_of(even, idle), 300) and math.isclose(rpm_of(even, busy), 300)
    shares = []
    for t in range(600, 1200, 10):  # `idle` stops sending and reporting; it stays connected
        book.observe(busy, report(requests=50), now=t, now_wall=t)
        if t % 60 == 0:
            shares.append(rpm_of(book.leases(tables, now=t, now_wall=t), idle))
    assert shares == sorted(shares, reverse=True)  # it only falls
    floor = 600 * 0.2 / 2
    # after ~9 half-lives beyond its reporting interval, the idle one's demand is ~1/500 of the busy one's
    assert floor <= shares[-1] < floor + 2, shares
    last = book.leases(tables, now=1200, now_wall=1200)
    assert rpm_of(last, busy) > 600 - floor - 2 and rpm_of(last, idle) + rpm_of(last, busy) <= 600


def test_a_report_interval_of_silence_is_not_idleness() -> None:
    """Reports come every interval; between two of them the demand must not sag (nor the shares wobble)."""
    book = LeaseBook(half_life_s=60)
    a, b = PODS[:2]
    for t in range(0, 300, 10):
        book.observe(a, report(requests=10), now=t, now_wall=t)
        book.observe(b, report(requests=30), now=t + 5, now_wall=t + 5)
    for now in (295, 298, 300, 304):
        leases = book.leases({a: table(), b: table()}, now=now, now_wall=now)
        assert math.isclose(rpm_of(leases, a), 60 + 480 * 0.25, rel_tol=0.02), (now, rpm_of(leases, a))


def test_the_demand_of_a_sidecar_gone_past_its_lease_is_forgotten() -> None:
    book = LeaseBook(ttl_s=30)
    a, b = PODS[:2]
    book.observe(a, report(requests=100), now=0, now_wall=0)
    book.leases({a: table(), b: table()}, now=0, now_wall=0)
    book.depart(a)
    book.leases({b: table()}, now=10, now_wall=10)
    assert book.demand(a, "ns/openai", "requests", now=10) > 0  # its lease still runs: it may come back
    book.leases({b: table()}, now=31, now_wall=31)
    assert book.demand(a, "ns/openai", "requests", now=31) == 0


# ---- what providers say of their limits ------------------------------------------------------------

@pytest.mark.parametrize("quota, retry_after, age, sent, total", [
    (None, None, 0, 0, 600),  # nothing said
    (Quota(10000, 9999, 0.006), None, 0, 100, 600),  # a larger limit, nearly full: nothing to shrink
    (Quota(300, 299, 0.2), None, 0, 100, 300),  # its limit is lower than configured: the limit
    (Quota(300, 299, 0.2), None, 61, 100, 600),  # ... said over a minute ago: says nothing now
    (Quota(300, 299, 3600), None, 0, 100, 409),  # a limit whose reset is an hour off is not a minute's
    # figure, but what remains of it still bounds the next minute: 110 + 299
    (Quota(1000, 50, 30), None, 0, 100, 160),  # 50 remain, it sends 100 a minute: 110 + 50
    (Quota(1000, 50, 30), None, 15, 0, 525),  # half way to the reset: 525 remain
    (Quota(1000, 50, 30), None, 30, 100, 600),  # reset passed: full again
    (Quota(None, 50, 30), None, 10, 100, 160),  # no limit said: what remains stays until the reset
    (Quota(None, 50, None), None, 0, 100, 600),  # no reset said (Azure): not used
    (Quota(1000, 0, 30), None, 0, 0, 60),  # nothing remains and nothing is sent: the floor, 10 %
    (None, 20, 5, 200, 220),  # a retry-after running: nothing remains until it ends
    (None, 20, 25, 200, 600),  # ... ended
])
def test_a_providers_own_figures_bound_the_total(quota: Quota | None, retry_after: float | None, age: float,
                                                  sent: float, total: float) -> None:
    assert math.isclose(stated_total(600, quota, retry_after, age, sent), total)


def said(remaining: float, limit: float = 600, reset_s: float = 30, age_s: float = 0.0,
         requests: int = 10) -> dict[str, object]:
    """A report whose sidecar sent `requests` to openai, the last answer saying `remaining` of `limit`."""
    return {"interval": 10, "providers": {"openai": {"requests": requests, "tokens": 0}},
            "targets": {"openai/gpt-4o-mini": {"requests": requests}},
            "rate_limits": {"openai": {"age_s": age_s,
                                       "requests": {"limit": limit, "remaining": remaining, "reset_s": reset_s}}}}


def test_a_provider_saying_its_limit_is_lower_shrinks_every_share_until_it_says_otherwise() -> None:
    book = LeaseBook(ttl_s=30)
    a, b = PODS[:2]
    book.observe(a, said(remaining=199, limit=200, reset_s=0.3), now=100, now_wall=100)
    shrunk = book.leases({a: table(), b: table()}, now=101, now_wall=101)
    assert math.isclose(rpm_of(shrunk, a) + rpm_of(shrunk, b), 200)
    later = book.leases({a: table(), b: table()}, now=170, now_wall=170)  # said over a minute ago
    assert math.isclose(rpm_of(later, a) + rpm_of(later, b), 600)


def test_what_remains_across_sidecars_bounds_the_total_and_the_freshest_report_counts() -> None:
    """Something else drains the provider's key: the sidecars' last answers say little remains."""
    book = LeaseBook(ttl_s=30, half_life_s=60)
    a, b = PODS[:2]
    for t in range(0, 300, 10):  # each sends 60 a minute; the provider says it is nearly full
        book.observe(a, said(remaining=590, requests=10), now=t, now_wall=t)
        book.observe(b, said(remaining=590, requests=10), now=t + 5, now_wall=t + 5)
    full = book.leases({a: table(), b: table()}, now=300, now_wall=300)
    assert math.isclose(rpm_of(full, a) + rpm_of(full, b), 600)
    # b's answer came 2 s before the report, a's report is later but its answer older (age 8 s)
    book.observe(b, said(remaining=10, reset_s=50, age_s=2, requests=10), now=305, now_wall=305)
    book.observe(a, said(remaining=400, reset_s=50, age_s=8, requests=10), now=306, now_wall=306)
    drained = book.leases({a: table(), b: table()}, now=306, now_wall=306)
    sent = book.demand(a, "ns/openai", "attempts", now=306) + book.demand(b, "ns/openai", "attempts", now=306)
    remaining = 10 + (600 - 10) * 3 / 50  # b's figure, 3 s of refill toward the limit by its reset
    assert math.isclose(rpm_of(drained, a) + rpm_of(drained, b), sent * 1.1 + remaining)
    assert rpm_of(drained, a) + rpm_of(drained, b) < 200
    refilled = book.leases({a: table(), b: table()}, now=356, now_wall=356)  # b's reset has passed
    assert math.isclose(rpm_of(refilled, a) + rpm_of(refilled, b), 600)


def test_a_tokens_window_bounds_tokens_per_minute_and_a_retry_after_bounds_both() -> None:
    book = LeaseBook(ttl_s=30)
    a = PODS[0]
    tpm_table = DesiredTable("v", {}, {"ns/openai": GlobalLimits(600, 100_000, None)})
    book.observe(a, {"interval": 10, "rate_limits": {"openai": {
        "age_s": 0, "tokens": {"limit": 40_000, "remaining": 40_000, "reset_s": 0}}}}, now=0, now_wall=0)
    lease = book.leases({a: tpm_table}, now=0, now_wall=0)[a].limits["openai"]
    assert lease.requests_per_minute == 600 and math.isclose(lease.tokens_per_minute or 0, 40_000)
    book.observe(a, {"interval": 10, "rate_limits": {"openai": {"age_s": 0, "retry_after_s": 20}}},
                 now=1, now_wall=1)
    lease = book.leases({a: tpm_table}, now=2, now_wall=2)[a].limits["openai"]
    assert lease.requests_per_minute == 60 and lease.tokens_per_minute == 10_000  # the floors: nothing sent
    lease = book.leases({a: tpm_table}, now=22, now_wall=22)[a].limits["openai"]
    assert lease.requests_per_minute == 600 and lease.tokens_per_minute == 100_000


def test_the_book_says_which_bound_set_each_total() -> None:
    book = LeaseBook(ttl_s=30)
    a = PODS[0]
    tpm_table = DesiredTable("v", {}, {"ns/openai": GlobalLimits(600, 100_000, None)})
    book.leases({a: tpm_table}, now=0, now_wall=0)
    assert book.totals() == {("ns/openai", "requests"): (600, "configured"),
                             ("ns/openai", "tokens"): (100_000, "configured")}
    book.observe(a, {"interval": 10, "rate_limits": {"openai": {
        "age_s": 0, "requests": {"limit": 200, "remaining": 200, "reset_s": 0},
        "tokens": {"limit": 400_000, "remaining": 1_000, "reset_s": 50}}}}, now=1, now_wall=1)
    book.leases({a: tpm_table}, now=1, now_wall=1)
    assert book.totals() == {("ns/openai", "requests"): (200, "provider_limit"),
                             ("ns/openai", "tokens"): (10_000, "provider_remaining")}  # 1,000 left: the floor
