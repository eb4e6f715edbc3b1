"""Passive health of targets: outlier ejection, half-open probing and Retry-After cooldowns.

Active health checks against LLM providers are billed, so the only evidence is live traffic:
the dispatch loop reports each attempt's outcome here and asks, before choosing a target,
whether it may be used. One book lives for the whole sidecar, keyed by `TargetId`, so a
table swap keeps what was learnt about targets that survive it.

Decisions taken where the design leaves room:

- Doubling decays: the n-th ejection lasts `base_ejection × 2^(n-1)` (capped at
  `max_ejection`), but a target that has served again for at least `max_ejection` since its
  last ejection ended starts over at the base.
- `max_ejection_percent` counts targets that are out (ejected or waiting for their probe)
  among the tier's peers, this one included, and is inclusive (1 of 2 at 50 %). As in Envoy,
  one target may always be ejected when no peer is out (a one-target tier can still be
  ejected; panic routing keeps it reachable); 0 % turns consecutive-failure ejection off.
- Credential, quota and not-found failures (`ejects_for_long`) eject for `max_ejection` at
  once and ignore `max_ejection_percent`: they are facts about the target, not a statistical
  guess that a shared blip could make for every target at the same time.
- Any hint from a failure that counts against the target (429, 503 with Retry-After) cools
  it for everyone for min(hint, 60 s); a 429 without a hint cools it for 1 s. A cooldown is
  not an ejection and does not double.
- A half-open probe whose request ends without a verdict would keep the target out forever,
  so a probe lease expires after `PROBE_LEASE_S`; the caller should also `abandon_probe`.
- A failure that is not the target's fault (client error, context length) during a probe
  proves nothing either way: it frees the probe for the next request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.table import OutlierDetection, TargetId

PROBE_LEASE_S = 60.0
COOLDOWN_CAP_S = 60.0
RATE_LIMIT_COOLDOWN_S = 1.0

HealthState = Literal["healthy", "ejected", "probing", "cooling"]

_NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """A target's breaker as the status page and metrics show it."""

    state: HealthState
    consecutive_failures: int
    ejections: int  # the doubling exponent: ejections since the count last decayed
    until: float  # seconds left in the ejection or cooldown; 0 otherwise
    last_failure: FailureKind | None


_HEALTHY = TargetHealth("healthy", 0, 0, 0.0, None)


@dataclass(slots=True)
class _Circuit:
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_at: float | None = None
    ejected_until: float = _NEVER
    half_open: bool = False  # the last ejection has not yet been ended by a success
    probe_started: float | None = None
    restored_at: float | None = None
    cooled_at: float | None = None
    cooled_until: float = _NEVER
    last_failure: FailureKind | None = None

    def is_out(self, now: float) -> bool:
        """Ejected, or past the ejection but not yet proven by a probe."""
        return self.half_open or now < self.ejected_until

    def eject(self, now: float, duration: float) -> None:
        self.ejected_at = now
        self.ejected_until = max(self.ejected_until, now + duration)
        self.half_open = True
        self.probe_started = None
        self.consecutive_failures = 0


class HealthBook:
    """Breaker state of every target this sidecar has sent traffic to."""

    __slots__ = ("_circuits",)

    def __init__(self) -> None:
        self._circuits: dict[TargetId, _Circuit] = {}

    def is_available(self, target: TargetId, now: float) -> bool:
        circuit = self._circuits.get(target)
        if circuit is None:
            return True
        return not circuit.is_out(now) and now >= circuit.cooled_until

    def can_probe(self, target: TargetId, now: float) -> bool:
        """Whether a live request may probe the target now (see `begin_probe`)."""
        circuit = self._circuits.get(target)
        if circuit is None or not circuit.half_open:
            return False
        if now < circuit.ejected_until or now < circuit.cooled_until:
            return False
        return circuit.probe_started is None or now - circuit.probe_started >= PROBE_LEASE_S

    def begin_probe(self, target: TargetId, now: float) -> bool:
        """Claim the single half-open probe; every other request keeps skipping the target."""
        if not self.can_probe(target, now):
            return False
        self._circuits[target].probe_started = now
        return True

    def abandon_probe(self, target: TargetId) -> None:
        """The probe's request ended without a verdict (cancelled): let another one probe."""
        circuit = self._circuits.get(target)
        if circuit is not None:
            circuit.probe_started = None

    def on_success(self, target: TargetId, now: float, policy: OutlierDetection) -> None:
        circuit = self._circuits.get(target)
        if circuit is None:
            return
        circuit.consecutive_failures = 0
        if circuit.half_open and now >= circuit.ejected_until:
            circuit.half_open = False
            circuit.probe_started = None
            circuit.restored_at = now

    def on_failure(self, target: TargetId, kind: FailureKind, now: float, retry_after: float | None,
                   policy: OutlierDetection, peers: Sequence[TargetId]) -> bool:
        """Count a failure; True when it ejected the target (which was not ejected before)."""
        circuit = self._circuits.setdefault(target, _Circuit())
        if not kind.counts_against_target:
            circuit.probe_started = None
            return False
        was_ejected = now < circuit.ejected_until
        circuit.last_failure = kind
        self._cool(circuit, kind, now, retry_after)
        if kind.ejects_for_long:
            circuit.eject(now, policy.max_ejection)
        elif was_ejected:
            return False  # a request sent before the ejection (or in panic) changes nothing
        elif circuit.half_open:
            self._eject_again(circuit, now, policy)
        else:
            circuit.consecutive_failures += 1
            if (circuit.consecutive_failures >= policy.consecutive_failures
                    and self._may_eject(target, now, policy, peers)):
                self._eject_again(circuit, now, policy)
        return not was_ejected and now < circuit.ejected_until

    def snapshot(self, target: TargetId, now: float) -> TargetHealth:
        circuit = self._circuits.get(target)
        if circuit is None:
            return _HEALTHY
        state: HealthState = "healthy"
        until = 0.0
        if now < circuit.ejected_until:
            state, until = "ejected", circuit.ejected_until - now
        elif now < circuit.cooled_until:
            state, until = "cooling", circuit.cooled_until - now
        elif circuit.half_open:
            state = "probing"
        return TargetHealth(state, circuit.consecutive_failures, circuit.ejections, until,
                            circuit.last_failure)

    def unavailable_since(self, target: TargetId, now: float) -> float | None:
        """When the target's current ejection (or else cooldown) started; None if available.

        Panic routing tries the target that has been out the longest first.
        """
        circuit = self._circuits.get(target)
        if circuit is None:
            return None
        if circuit.is_out(now):
            return circuit.ejected_at
        if now < circuit.cooled_until:
            return circuit.cooled_at
        return None

    @staticmethod
    def _cool(circuit: _Circuit, kind: FailureKind, now: float, retry_after: float | None) -> None:
        if retry_after is not None:
            seconds = min(max(retry_after, 0.0), COOLDOWN_CAP_S)
        elif kind is FailureKind.RATE_LIMITED:
            seconds = RATE_LIMIT_COOLDOWN_S
        else:
            return
        if now + seconds > circuit.cooled_until:
            circuit.cooled_at = now
            circuit.cooled_until = now + seconds

    @staticmethod
    def _eject_again(circuit: _Circuit, now: float, policy: OutlierDetection) -> None:
        rested = circuit.restored_at is not None and now - circuit.restored_at >= policy.max_ejection
        circuit.ejections = 1 if rested else circuit.ejections + 1
        duration = policy.base_ejection * 2.0 ** (circuit.ejections - 1)
        circuit.eject(now, min(duration, policy.max_ejection))

    def _may_eject(self, target: TargetId, now: float, policy: OutlierDetection,
                   peers: Sequence[TargetId]) -> bool:
        if policy.max_ejection_percent <= 0:
            return False
        members = set(peers)
        members.add(target)
        out = sum(1 for peer in members
                  if peer != target and (c := self._circuits.get(peer)) is not None and c.is_out(now))
        return out == 0 or (out + 1) * 100 <= policy.max_ejection_percent * len(members)
