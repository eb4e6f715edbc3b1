"""Load balancing: priorities, region preference, and each strategy, with fixed seeds."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llmroute_proxy.routing.balance import LATENCY_DECAY_S, LoadBook, order_targets
from llmroute_proxy.table import LoadBalancing, ProviderType, Strategy, Target, TargetId

WEIGHTED = LoadBalancing(Strategy.WEIGHTED)
LEAST_OUTSTANDING = LoadBalancing(Strategy.LEAST_OUTSTANDING)
LEAST_LATENCY = LoadBalancing(Strategy.LEAST_LATENCY)


def target(name: str, *, weight: int = 1, priority: int = 0, region: str = "eu") -> Target:
    return Target(id=TargetId(name), provider=name, provider_type=ProviderType.OPENAI, model="m",
                  url="http://127.0.0.1:1", region=region, weight=weight, priority=priority)


def first_picks(targets: list[Target], policy: LoadBalancing, n: int, *, load: LoadBook | None = None,
                local_region: str = "", seed: int = 7) -> list[str]:
    book = load or LoadBook()
    rng = random.Random(seed)
    return [order_targets(targets, policy=policy, local_region=local_region, load=book, rng=rng,
                          key="tier")[0].id for _ in range(n)]


@pytest.mark.parametrize("policy", [WEIGHTED, LEAST_OUTSTANDING, LEAST_LATENCY])
def test_every_target_is_returned_exactly_once(policy: LoadBalancing) -> None:
    targets = [target("a", priority=1), target("b", weight=0), target("c", region="us"), target("d"),
               target("e", priority=2, region="us")]
    ordered = order_targets(targets, policy=policy, local_region="eu", load=LoadBook(),
                            rng=random.Random(1), key="tier")
    assert sorted(t.id for t in ordered) == ["a", "b", "c", "d", "e"]


def test_a_single_target_is_returned_as_is() -> None:
    only = [target("a")]
    assert order_targets(only, policy=WEIGHTED, local_region="", load=LoadBook(), rng=random.Random(0),
                         key="k") == only


@pytest.mark.parametrize("policy", [WEIGHTED, LEAST_OUTSTANDING, LEAST_LATENCY])
def test_lower_priority_numbers_come_first(policy: LoadBalancing) -> None:
    targets = [target("backup", priority=2), target("second", priority=1), target("primary")]
    ordered = order_targets(targets, policy=policy, local_region="", load=LoadBook(), rng=random.Random(3),
                            key="tier")
    assert [t.id for t in ordered] == ["primary", "second", "backup"]


def test_smooth_weighted_round_robin_follows_nginx_sequence() -> None:
    targets = [target("a", weight=5), target("b", weight=1), target("c", weight=1)]
    assert first_picks(targets, WEIGHTED, 7) == ["a", "a", "b", "a", "c", "a", "a"]


def test_smooth_weighted_round_robin_shares_are_exact_over_10k_picks() -> None:
    targets = [target("a", weight=5), target("b", weight=3), target("c", weight=2)]
    counts = Counter(first_picks(targets, WEIGHTED, 10_000))
    assert counts == {"a": 5000, "b": 3000, "c": 2000}


def test_round_robin_state_is_kept_per_key() -> None:
    targets = [target("a"), target("b")]
    book = LoadBook()
    rng = random.Random(0)
    picks = [order_targets(targets, policy=WEIGHTED, local_region="", load=book, rng=rng, key=key)[0].id
             for key in ("x", "y", "x", "y")]
    assert picks == ["a", "a", "b", "b"]


def test_the_rest_of_a_weighted_group_follows_in_round_robin_order() -> None:
    targets = [target("a", weight=1), target("b", weight=3), target("c", weight=2)]
    ordered = order_targets(targets, policy=WEIGHTED, local_region="", load=LoadBook(),
                            rng=random.Random(0), key="k")
    assert [t.id for t in ordered] == ["b", "c", "a"]


@pytest.mark.parametrize("policy", [WEIGHTED, LEAST_OUTSTANDING, LEAST_LATENCY])
def test_a_zero_weight_target_is_never_first_but_stays_as_a_last_resort(policy: LoadBalancing) -> None:
    targets = [target("drained", weight=0), target("a"), target("backup", priority=1)]
    book = LoadBook()
    rng = random.Random(5)
    for _ in range(50):
        ordered = order_targets(targets, policy=policy, local_region="", load=book, rng=rng, key="k")
        assert [t.id for t in ordered] == ["a", "backup", "drained"]


def test_local_region_targets_come_first_within_a_priority() -> None:
    targets = [target("us-1", region="us"), target("eu-1", region="eu"), target("us-2", region="us"),
               target("eu-2", region="eu")]
    for _ in range(20):
        ordered = order_targets(targets, policy=WEIGHTED, local_region="eu", load=LoadBook(),
                                rng=random.Random(0), key="k")
        assert {t.id for t in ordered[:2]} == {"eu-1", "eu-2"}
        assert {t.id for t in ordered[2:]} == {"us-1", "us-2"}


def test_local_traffic_is_balanced_and_other_regions_are_spill_over_only() -> None:
    targets = [target("us-1", region="us"), target("eu-1"), target("eu-2")]
    counts = Counter(first_picks(targets, WEIGHTED, 1000, local_region="eu"))
    assert counts == {"eu-1": 500, "eu-2": 500}


def test_priority_outranks_region() -> None:
    targets = [target("eu-backup", priority=1), target("us-primary", region="us")]
    ordered = order_targets(targets, policy=WEIGHTED, local_region="eu", load=LoadBook(),
                            rng=random.Random(0), key="k")
    assert [t.id for t in ordered] == ["us-primary", "eu-backup"]


@pytest.mark.parametrize(("prefer", "local_region"), [("none", "eu"), ("local", "")])
def test_without_region_preference_every_region_shares_the_traffic(prefer: str, local_region: str) -> None:
    targets = [target("us-1", region="us"), target("eu-1")]
    counts = Counter(first_picks(targets, LoadBalancing(Strategy.WEIGHTED, prefer), 1000,
                                 local_region=local_region))
    assert counts == {"us-1": 500, "eu-1": 500}


def test_least_outstanding_picks_the_least_busy_target() -> None:
    targets = [target("a"), target("b"), target("c")]
    book = LoadBook()
    for name, busy in (("a", 3), ("b", 1), ("c", 2)):
        for _ in range(busy):
            book.started(TargetId(name))
    ordered = order_targets(targets, policy=LEAST_OUTSTANDING, local_region="", load=book,
                            rng=random.Random(0), key="k")
    assert [t.id for t in ordered] == ["b", "c", "a"]


def test_least_outstanding_breaks_ties_at_random() -> None:
    targets = [target("a"), target("b"), target("c")]
    book = LoadBook()
    book.started(TargetId("c"))
    counts = Counter(first_picks(targets, LEAST_OUTSTANDING, 2000, load=book))
    assert set(counts) == {"a", "b"}
    assert 850 < counts["a"] < 1150


def test_least_latency_prefers_the_faster_target_with_two_random_choices() -> None:
    targets = [target("fast"), target("mid"), target("slow")]
    book = LoadBook()
    for name, ttft in (("fast", 0.2), ("mid", 0.5), ("slow", 2.0)):
        book.started(TargetId(name))
        book.finished(TargetId(name), 0.0, ttft)
    counts = Counter(first_picks(targets, LEAST_LATENCY, 3000, load=book))
    # two distinct random choices of three: fast wins whenever drawn (2/3), mid when paired with slow (1/3)
    assert counts["slow"] == 0
    assert 1900 < counts["fast"] < 2100
    assert 900 < counts["mid"] < 1100


def test_least_latency_weighs_latency_by_outstanding_requests() -> None:
    targets = [target("fast"), target("slow")]
    book = LoadBook()
    for name, ttft in (("fast", 0.2), ("slow", 0.5)):
        book.started(TargetId(name))
        book.finished(TargetId(name), 0.0, ttft)
    for _ in range(3):
        book.started(TargetId("fast"))  # 0.2 × 4 > 0.5 × 1
    assert first_picks(targets, LEAST_LATENCY, 1, load=book) == ["slow"]


def test_a_target_without_latency_samples_is_treated_as_the_best_known() -> None:
    targets = [target("known"), target("new")]
    book = LoadBook()
    book.started(TargetId("known"))
    book.finished(TargetId("known"), 0.0, 1.5)
    book.started(TargetId("known"))  # busy: 1.5 × 2 against the optimistic 1.5 × 1
    assert first_picks(targets, LEAST_LATENCY, 1, load=book) == ["new"]


def test_peak_ewma_jumps_to_a_slower_sample_and_decays_towards_faster_ones() -> None:
    book = LoadBook()
    a = TargetId("a")
    book.finished(a, 0.0, 1.0)
    book.finished(a, 1.0, 4.0)
    assert book.latency(a) == 4.0
    book.finished(a, 1.0 + LATENCY_DECAY_S, 1.0)
    latency = book.latency(a)
    assert latency is not None
    assert latency == pytest.approx(1.0 + 3.0 / 2.718281828459045)


def test_an_idle_estimate_decays_while_other_targets_report() -> None:
    book = LoadBook()
    slow, busy = TargetId("slow"), TargetId("busy")
    book.finished(slow, 0.0, 5.0)
    book.finished(busy, 0.0, 1.0)
    assert book.latency(slow) == 5.0
    book.finished(busy, 3 * LATENCY_DECAY_S, 1.0)
    latency = book.latency(slow)
    assert latency is not None
    assert latency < 0.26


def test_outstanding_counts_started_minus_finished_and_never_goes_negative() -> None:
    book = LoadBook()
    a = TargetId("a")
    book.started(a)
    book.started(a)
    assert book.outstanding(a) == 2
    book.finished(a, 0.0, None)
    assert book.outstanding(a) == 1
    assert book.latency(a) is None
    book.finished(a, 0.0, None)
    book.finished(a, 0.0, None)
    assert book.outstanding(a) == 0
