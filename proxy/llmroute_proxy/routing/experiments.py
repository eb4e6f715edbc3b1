"""A/B splits: which share of a tier's traffic an experiment's targets serve.

The experiments of one tier take consecutive, disjoint slices of [0, 100) in table
order. A request falls on one point of that range: with a sticky key (the OpenAI `user`
field, or a header) the point is a hash of the route, the tier and the key, so the same
user lands in the same arm on every request, in every sidecar, after every restart
(Python's `hash()` is salted per process, so blake2b). Hashing the tier rather than the
experiment's name gives every experiment of the tier the same point for one key, which
is what keeps the slices disjoint. Without a key the caller's uniform `roll` decides.
"""

from __future__ import annotations

import hashlib

from llmroute_proxy.routing.rules import RequestFacts
from llmroute_proxy.table import Experiment, Route

_HEADER_PREFIX = "header:"
_HASH_BITS = 53  # a float holds 53 bits exactly, so the point stays below 100


def choose_arm(route: Route, tier: str, facts: RequestFacts, roll: float) -> Experiment | None:
    """The experiment whose slice this request falls in, or None for the tier's own targets."""
    start = 0.0
    points: dict[str | None, float] = {}
    for experiment in route.experiments:
        if experiment.tier != tier:
            continue
        end = start + experiment.percent
        point = points.get(experiment.sticky_by)
        if point is None:
            point = points[experiment.sticky_by] = _point(route, tier, experiment.sticky_by, facts, roll)
        if start <= point < end:
            return experiment
        start = end
    return None


def _point(route: Route, tier: str, sticky_by: str | None, facts: RequestFacts, roll: float) -> float:
    key = sticky_key(sticky_by, facts)
    if key is None:
        return roll * 100.0
    return hash_point(f"{route.name}\0{tier}\0{key}")


def sticky_key(sticky_by: str | None, facts: RequestFacts) -> str | None:
    if sticky_by is None:
        return None
    if sticky_by == "user":
        return facts.user or None
    if sticky_by.startswith(_HEADER_PREFIX):
        return facts.headers.get(sticky_by[len(_HEADER_PREFIX):].strip().lower()) or None
    return None


def hash_point(text: str) -> float:
    """A point in [0, 100) that depends only on `text`: stable across processes and releases."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> (64 - _HASH_BITS)) / (1 << _HASH_BITS) * 100.0
