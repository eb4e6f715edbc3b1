"""Load balancing: the order in which a tier's targets are offered to the attempt planner.

`order_targets` ranks every target, best first; the planner walks that order and skips what
is ejected, cooling, saturated or already tried, which is how spill-over to lower priorities
and other regions happens without the balancer knowing about health or limits.

Decisions taken where the design leaves room:

- Weight 0 drains a target: no strategy puts it first while any target with a positive weight
  exists; drained targets come last (by priority, then region) as a last resort.
- Smooth weighted round robin keeps one state per group (same priority and region) of a
  `key`, so that a group's share is exact however often the planner moves past it.
- `least-latency` is peak-EWMA as in Finagle and tower: the estimate jumps up to a slower
  sample at once and decays towards faster ones; a target's cost is its estimate times
  (outstanding + 1). Estimates also decay towards zero while a target gets no samples and
  others do, so a target that was slow once gets traffic again. A target with no sample yet
  is as good as the best known one in its group, so new targets get traffic without being
  flooded before their first answer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from itertools import groupby

from llmroute_proxy.table import LoadBalancing, Strategy, Target, TargetId

LATENCY_DECAY_S = 10.0
_MAX_WRR_STATES = 4096


class LoadBook:
    """Live load per target and the round-robin state per tier, for one sidecar."""

    __slots__ = ("_clock", "_latency", "_outstanding", "_wrr")

    def __init__(self) -> None:
        self._outstanding: dict[TargetId, int] = {}
        self._latency: dict[TargetId, tuple[float, float]] = {}  # peak-EWMA seconds, when sampled
        self._clock = float("-inf")  # the latest `now` reported to `finished`
        self._wrr: dict[tuple[str, tuple[TargetId, ...]], dict[TargetId, int]] = {}

    def started(self, target: TargetId) -> None:
        self._outstanding[target] = self._outstanding.get(target, 0) + 1

    def finished(self, target: TargetId, now: float, ttft_s: float | None) -> None:
        """An attempt ended; `ttft_s` is its time to first token, None when it failed."""
        count = self._outstanding.get(target, 0)
        if count > 1:
            self._outstanding[target] = count - 1
        else:
            self._outstanding.pop(target, None)
        self._clock = max(self._clock, now)
        if ttft_s is not None:
            self._sample(target, now, ttft_s)

    def outstanding(self, target: TargetId) -> int:
        return self._outstanding.get(target, 0)

    def latency(self, target: TargetId) -> float | None:
        """Peak-EWMA time to first token in seconds; None before the first sample."""
        entry = self._latency.get(target)
        if entry is None:
            return None
        estimate, stamp = entry
        idle = self._clock - stamp
        return estimate * math.exp(-idle / LATENCY_DECAY_S) if idle > 0 else estimate

    def wrr_state(self, key: str, group: tuple[TargetId, ...]) -> dict[TargetId, int]:
        """The smooth-WRR current weights of one group of targets under `key`."""
        state = self._wrr.get((key, group))
        if state is None:
            if len(self._wrr) >= _MAX_WRR_STATES:
                self._wrr.clear()  # groups of swapped-out tables; losing the phase is harmless
            state = self._wrr[(key, group)] = {}
        return state

    def _sample(self, target: TargetId, now: float, seconds: float) -> None:
        entry = self._latency.get(target)
        if entry is None or seconds >= entry[0]:
            self._latency[target] = (seconds, now)
            return
        estimate, stamp = entry
        decay = math.exp(-max(now - stamp, 0.0) / LATENCY_DECAY_S)
        self._latency[target] = (estimate * decay + seconds * (1.0 - decay), now)


def order_targets(targets: Sequence[Target], *, policy: LoadBalancing, local_region: str, load: LoadBook,
                  rng: random.Random, key: str, advance: bool = True) -> list[Target]:
    """All `targets`, best first: by priority, then local region, then the strategy. `advance`: the
    order is taken (a request's attempts follow it), which moves the round robin on; without it the
    order is only looked at, and the next request still gets the same one."""
    if len(targets) <= 1:
        return list(targets)
    prefer_local = policy.prefer_region == "local" and bool(local_region)

    def rank(t: Target) -> tuple[int, bool]:
        return t.priority, prefer_local and t.region != local_region

    serving = sorted((t for t in targets if t.weight > 0), key=rank)
    ordered: list[Target] = []
    for _, group in groupby(serving, key=rank):
        ordered.extend(_order_group(list(group), policy.strategy, load, rng, key, advance))
    ordered.extend(sorted((t for t in targets if t.weight <= 0), key=rank))
    return ordered


def _order_group(group: list[Target], strategy: Strategy, load: LoadBook, rng: random.Random,
                 key: str, advance: bool) -> list[Target]:
    if len(group) == 1:
        return group
    if strategy is Strategy.LEAST_OUTSTANDING:
        return sorted(group, key=lambda t: (load.outstanding(t.id), rng.random()))
    if strategy is Strategy.LEAST_LATENCY:
        return _power_of_two_choices(group, load, rng)
    state = load.wrr_state(key, tuple(t.id for t in group))
    return _smooth_weighted_round_robin(group, state if advance else dict(state))


def _smooth_weighted_round_robin(group: list[Target], state: dict[TargetId, int]) -> list[Target]:
    """nginx's algorithm: each pick raises every current weight by its weight and lowers the
    chosen one by the total, which spreads picks evenly and exactly by weight."""
    total = 0
    best = group[0]
    best_weight: int | None = None
    for target in group:
        current = state.get(target.id, 0) + target.weight
        state[target.id] = current
        total += target.weight
        if best_weight is None or current > best_weight:
            best, best_weight = target, current
    state[best.id] -= total
    rest = sorted((t for t in group if t is not best), key=lambda t: -state[t.id])
    return [best, *rest]


def _power_of_two_choices(group: list[Target], load: LoadBook, rng: random.Random) -> list[Target]:
    costs = _latency_costs(group, load)
    ties = {t.id: rng.random() for t in group}

    def rank(t: Target) -> tuple[float, int, float]:
        return costs[t.id], load.outstanding(t.id), ties[t.id]

    first, second = rng.sample(group, 2)
    chosen = min(first, second, key=rank)
    return [chosen, *sorted((t for t in group if t is not chosen), key=rank)]


def _latency_costs(group: Iterable[Target], load: LoadBook) -> dict[TargetId, float]:
    known = {t.id: load.latency(t.id) for t in group}
    optimistic = min((v for v in known.values() if v is not None), default=0.0)
    return {tid: (optimistic if v is None else v) * (load.outstanding(tid) + 1) for tid, v in known.items()}
