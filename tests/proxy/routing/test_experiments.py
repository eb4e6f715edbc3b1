from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter

import pytest

from llmroute_proxy.routing.experiments import choose_arm, hash_point
from llmroute_proxy.routing.rules import RequestFacts
from llmroute_proxy.table import Experiment, ProviderType, Route, Target, TargetId, Tier


def target(model: str) -> Target:
    return Target(id=TargetId(f"openai/{model}@eu"), provider="openai", provider_type=ProviderType.OPENAI,
                  model=model, url="https://api.openai.com/v1", region="eu")


def experiment(name: str, percent: float, sticky_by: str | None = None, tier: str = "chat") -> Experiment:
    return Experiment(name=name, tier=tier, percent=percent, targets=(target(f"{name}-model"),), sticky_by=sticky_by)


def route(*experiments: Experiment) -> Route:
    tiers = {"chat": Tier("chat", (target("gpt-4o"),)), "code": Tier("code", (target("coder"),))}
    return Route(name="default", tiers=tiers, rules=(), default_tier="chat", experiments=experiments)


def facts(user: str | None = None, headers: dict[str, str] | None = None) -> RequestFacts:
    return RequestFacts("auto", [], headers or {}, False, user)


def arm_name(chosen: Experiment | None) -> str:
    return chosen.name if chosen is not None else "control"


def test_a_tier_without_experiments_has_no_arm() -> None:
    assert choose_arm(route(experiment("new", 50, tier="code")), "chat", facts(), 0.1) is None


@pytest.mark.parametrize(("roll", "expected"), [(0.0, "a"), (0.0999, "a"), (0.10, "b"), (0.2999, "b"),
                                                (0.30, "control"), (0.9999, "control")])
def test_without_a_sticky_key_the_roll_picks_a_slice(roll: float, expected: str) -> None:
    split = route(experiment("a", 10), experiment("b", 20))
    assert arm_name(choose_arm(split, "chat", facts(), roll)) == expected


def test_the_same_user_always_lands_in_the_same_arm_whatever_the_roll() -> None:
    split = route(experiment("a", 30, "user"), experiment("b", 30, "user"))
    rng = random.Random(7)
    for user in (f"user-{i}" for i in range(200)):
        arms = {arm_name(choose_arm(split, "chat", facts(user=user), rng.random())) for _ in range(5)}
        assert len(arms) == 1


def test_a_header_can_be_the_sticky_key() -> None:
    split = route(experiment("a", 50, "header:X-Session"))
    rng = random.Random(11)
    for session in (f"s{i}" for i in range(100)):
        request = facts(headers={"x-session": session})
        assert len({arm_name(choose_arm(split, "chat", request, rng.random())) for _ in range(5)}) == 1


@pytest.mark.parametrize("sticky_by", ["user", "header:x-session"])
def test_ten_thousand_keys_split_as_configured(sticky_by: str) -> None:
    split = route(experiment("a", 10, sticky_by), experiment("b", 25, sticky_by))

    def request(i: int) -> RequestFacts:
        return facts(user=f"user-{i}") if sticky_by == "user" else facts(headers={"x-session": f"user-{i}"})

    counts = Counter(arm_name(choose_arm(split, "chat", request(i), 0.0)) for i in range(10_000))
    assert counts["a"] == pytest.approx(1000, abs=120)
    assert counts["b"] == pytest.approx(2500, abs=150)
    assert counts["control"] == pytest.approx(6500, abs=150)


def test_ten_thousand_rolls_from_a_seeded_rng_split_as_configured() -> None:
    split = route(experiment("a", 20))
    rng = random.Random(42)
    counts = Counter(arm_name(choose_arm(split, "chat", facts(), rng.random())) for _ in range(10_000))
    assert counts["a"] == pytest.approx(2000, abs=150)


def test_a_missing_sticky_key_falls_back_to_the_roll() -> None:
    split = route(experiment("a", 50, "user"))
    assert arm_name(choose_arm(split, "chat", facts(user=None), 0.1)) == "a"
    assert arm_name(choose_arm(split, "chat", facts(user=None), 0.9)) == "control"
    assert arm_name(choose_arm(route(experiment("a", 50, "header:x-s")), "chat", facts(), 0.9)) == "control"


def test_one_key_lands_in_at_most_one_of_several_experiments() -> None:
    split = route(experiment("a", 50, "user"), experiment("b", 50, "user"))
    counts = Counter(arm_name(choose_arm(split, "chat", facts(user=f"u{i}"), 0.0)) for i in range(2000))
    assert counts["control"] == 0
    assert counts["a"] == pytest.approx(1000, abs=120)


def test_experiments_of_other_tiers_take_no_slice_of_this_one() -> None:
    split = route(experiment("elsewhere", 50, tier="code"), experiment("here", 10))
    assert arm_name(choose_arm(split, "chat", facts(), 0.05)) == "here"
    assert arm_name(choose_arm(split, "chat", facts(), 0.55)) == "control"


def test_a_hundred_percent_experiment_takes_every_request() -> None:
    split = route(experiment("all", 100, "user"))
    assert all(choose_arm(split, "chat", facts(user=f"u{i}"), 0.0) is not None for i in range(1000))
    assert choose_arm(split, "chat", facts(), 0.999999) is not None


def test_the_hash_point_is_the_same_in_another_process() -> None:
    here = hash_point("default\0chat\0user-42")
    code = "from llmroute_proxy.routing.experiments import hash_point; print(repr(hash_point('default\\0chat\\0user-42')))"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345"}).stdout.strip()
    assert float(there) == here
    assert 0.0 <= here < 100.0
