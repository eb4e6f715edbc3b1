"""Which target counts a request's tokens: the first of its attempt order whose circuit is not open,
found without moving the round robin."""

from __future__ import annotations

import random
from dataclasses import replace

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.routing.balance import LoadBook, order_targets
from llmroute_proxy.routing.counting import Counter, counting_target
from llmroute_proxy.routing.decide import decide
from llmroute_proxy.routing.health import HealthBook
from llmroute_proxy.table import FallbackPolicy, LoadBalancing, OutlierDetection, Route, Target, Tier
from tests.proxy.routing.test_decide import NOW, facts, target

BLUE, GREEN = target("blue"), target("green")
SPARE = target("spare")


def route() -> Route:
    tiers = {"main": Tier("main", (BLUE, GREEN)), "spare": Tier("spare", (SPARE,))}
    return Route(name="r", tiers=tiers, rules=(), default_tier="main",
                 fallback=FallbackPolicy(fallback_tiers=("spare",)))


def counter(health: HealthBook, load: LoadBook) -> Counter | None:
    decision = decide(route(), facts(), roll=0.5)
    return counting_target(decision, health=health, load=load, rng=random.Random(0), local_region="eu", now=NOW)


def eject(health: HealthBook, *targets: Target) -> None:
    for t in targets:
        health.on_failure(t.id, FailureKind.AUTH, NOW, None, OutlierDetection(), (t.id,))


def test_the_count_goes_where_the_next_request_will_and_leaves_the_round_robin_there() -> None:
    health, load = HealthBook(), LoadBook()
    counted = [counter(health, load) for _ in range(3)]
    taken = order_targets((BLUE, GREEN), policy=LoadBalancing(), local_region="eu", load=load,
                          rng=random.Random(0), key="r/main")[0]

    assert [c.target if c else None for c in counted] == [taken] * 3
    assert counted[0] == Counter("main", taken, ask=True)


def test_an_open_circuit_is_passed_over_to_the_next_target_then_to_the_fallback_tier() -> None:
    health, load = HealthBook(), LoadBook()
    first = order_targets((BLUE, GREEN), policy=LoadBalancing(), local_region="eu", load=LoadBook(),
                          rng=random.Random(0), key="r/main")
    eject(health, first[0])
    assert counter(health, load) == Counter("main", first[1], ask=True)
    eject(health, first[1])
    assert counter(health, load) == Counter("spare", SPARE, ask=True)


def test_with_every_circuit_open_the_first_target_is_named_but_not_asked() -> None:
    health, load = HealthBook(), LoadBook()
    eject(health, BLUE, GREEN, SPARE)
    found = counter(health, load)

    assert found is not None and found.tier == "main" and not found.ask


def test_an_order_only_looked_at_is_the_same_order_a_request_then_takes() -> None:
    weighted = (replace(BLUE, weight=3), replace(GREEN, weight=1))
    load = LoadBook()

    def order(advance: bool) -> list[Target]:
        return order_targets(weighted, policy=LoadBalancing(), local_region="eu", load=load, rng=random.Random(0),
                             key="k", advance=advance)

    looked = [order(advance=False) for _ in range(4)]
    taken = [order(advance=True) for _ in range(4)]

    assert all(o == taken[0] for o in looked)
    assert [o[0].model for o in taken] == ["blue", "blue", "green", "blue"]
