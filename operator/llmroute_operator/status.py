"""What `kubectl get llmroutes` says: status documents and Events from the index and the sidecars' reports.

Pure: time is an argument (`clock` for the report book, `now` for the computation). `StatusBook` is the
hub's `ReportSink`: it remembers which pods are connected, which version each ACKed or NACKed, the
spend each route's sidecars reported in the current budget period, and a sliding window of per-target
failures. `compute` turns that and the index's verdicts into the `status` of every LLMRoute and
LLMProvider (the shape of crds/*.yaml) and the Events that go with changes: a NACK, a budget crossing
`alertAtPercent` or its limit, a provider turning degraded, a sidecar connection refused in the name of
an existing pod (on that Pod, at most one per pod every `REFUSAL_EVENT_INTERVAL_S`, counting the
refusals in between, so a sidecar retrying with an expired token makes no Event storm). The status writer patches only what differs
from what it wrote last; conditions keep their `lastTransitionTime` until their status changes.

Nothing here ever holds a credential in a message. Problems quote what was applied (a key pasted into a
url, say) and NACK reasons come from the sidecars: both pass the sidecar's scrubber, which knows every key
the operator holds and the shapes of keys it does not, before they reach a status or an Event.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from llmroute_operator.contracts import PodRef
from llmroute_operator.index import ClusterIndex
from llmroute_operator.judging import Problem, Verdict
from llmroute_proxy.routing.budget import period_bounds
from llmroute_proxy.scrubbing import Scrubber, scrubber_of
from llmroute_proxy.spec import ROUTE_KIND, unpriced_message
from llmroute_proxy.table import BudgetPeriod

HEALTH_WINDOW_S = 120.0
DEGRADED_RATIO = 0.5
DEGRADED_MIN_FAILURES = 5
MAX_MESSAGE = 2000
NAMED_PODS = 5  # pods a condition names before "and N more" (sidecars.nacked lists them all)
REFUSAL_EVENT_INTERVAL_S = 300.0
MAX_REFUSED_PODS = 1000  # refusals waiting for their Event; beyond this they are only counted
ACK_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ObjectRef = tuple[str, str, str]  # (kind, namespace, name)


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event to post about `involved` (kind, namespace, name)."""

    involved: ObjectRef
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(slots=True)
class _Spend:
    period_start: float
    by_pod: dict[PodRef, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Health:
    at: float
    target: str
    requests: float
    failures: float
    errors: Mapping[str, float]


class Histogram:
    """Cumulative bucket counts, a sum and a count: what a Prometheus histogram exposes."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class StatusBook:
    """The `ReportSink`: what the sidecars told the hub, kept until the status writer reads it."""

    def __init__(self, clock: Callable[[], float], health_window_s: float = HEALTH_WINDOW_S) -> None:
        self.clock = clock
        self.health_window_s = health_window_s
        self.connected_pods: set[PodRef] = set()
        self.acks: dict[PodRef, str] = {}
        self.nacks: dict[PodRef, tuple[str, str]] = {}  # pod → (version, error)
        self.refusals = 0
        self.ack_count = 0
        self.nack_count = 0
        self.push_count = 0
        self.ack_latency = Histogram(ACK_LATENCY_BUCKETS)
        self._pushed_at: dict[PodRef, tuple[str, float]] = {}  # pod → (version, when) until ACKed
        self.pending_events: list[tuple[PodRef, str, str]] = []  # NACKs not yet posted: (pod, version, error)
        self.pending_refusals: dict[PodRef, tuple[str, int]] = {}  # pod → (last reason, refusals) not posted
        self.refusal_posted: dict[PodRef, float] = {}  # pod → when its last SidecarRefused Event was made
        # (namespace, route, period) → spend in the current hour, day and month alike, so reports that come
        # before the route's period is known count in it
        self._spend: dict[tuple[str, str, BudgetPeriod], _Spend] = {}
        self._seeded: dict[tuple[str, str], tuple[float, float]] = {}  # → (period start, USD) from status
        self._periods: dict[tuple[str, str], BudgetPeriod] = {}
        self._health: dict[str, deque[_Health]] = {}  # namespace/provider → recent target reports
        self.listeners: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    # ---- ReportSink --------------------------------------------------------------------------------

    def connected(self, pod: PodRef) -> None:
        self.connected_pods.add(pod)
        self._changed()

    def disconnected(self, pod: PodRef) -> None:
        """What the pod's sidecar said counts only while it is connected (it says it again when it
        returns): forgotten, so pods coming and going do not grow the book."""
        self.connected_pods.discard(pod)
        self._pushed_at.pop(pod, None)
        self.acks.pop(pod, None)
        self.nacks.pop(pod, None)
        self._changed()

    def pushed(self, pod: PodRef, version: str) -> None:
        self.push_count += 1
        self._pushed_at[pod] = (version, self.clock())

    def acked(self, pod: PodRef, version: str) -> None:
        self.acks[pod] = version
        self.ack_count += 1
        sent = self._pushed_at.get(pod)
        if sent is not None and sent[0] == version:
            self.ack_latency.observe(max(self.clock() - sent[1], 0.0))
            del self._pushed_at[pod]
        if pod in self.nacks and self.nacks[pod][0] == version:
            del self.nacks[pod]
        self._changed()

    def nacked(self, pod: PodRef, version: str, error: str) -> None:
        self.nacks[pod] = (version, error)
        self.nack_count += 1
        self.pending_events.append((pod, version, error))
        self._changed()

    def usage(self, pod: PodRef, report: Mapping[str, Any]) -> None:
        now = self.clock()
        for route, counts in (report.get("routes") or {}).items():
            cost = float(counts.get("cost_usd", 0) or 0)
            if cost > 0:
                for period in BudgetPeriod:  # the route's own period may not be known yet (operator restart)
                    spend = self._period(pod.namespace, str(route), period, now)
                    spend.by_pod[pod] = spend.by_pod.get(pod, 0.0) + cost
        for target, counts in (report.get("targets") or {}).items():
            provider = f"{pod.namespace}/{str(target).split('/', 1)[0]}"
            window = self._health.setdefault(provider, deque())
            window.append(_Health(now, str(target), float(counts.get("requests", 0) or 0),
                                  float(counts.get("failures", 0) or 0), dict(counts.get("errors") or {})))
        self._changed()

    def refused(self, reason: str, pod: PodRef | None) -> None:
        self.refusals += 1
        if pod is None or (pod not in self.pending_refusals and len(self.pending_refusals) >= MAX_REFUSED_PODS):
            return
        self.pending_refusals[pod] = (reason, self.pending_refusals.get(pod, ("", 0))[1] + 1)
        self._changed()

    # ---- what compute reads ---------------------------------------------------------------------------

    def set_period(self, namespace: str, route: str, period: BudgetPeriod) -> None:
        self._periods[(namespace, route)] = period

    def seed_spend(self, namespace: str, route: str, period_start: float, usd: float) -> None:
        """Spend read back from the route's own status after an operator restart: counted on top of the
        reports, whichever came first, while the route's period is the one that starts at `period_start`."""
        if usd > 0:
            self._seeded[(namespace, route)] = (period_start, usd)

    def spend(self, namespace: str, route: str, now: float) -> tuple[float, float]:
        """(period start, USD spent in it by every sidecar)."""
        period = self._periods.get((namespace, route), BudgetPeriod.DAY)
        spend = self._period(namespace, route, period, now)
        seeded_start, seeded = self._seeded.get((namespace, route), (None, 0.0))
        before = seeded if seeded_start == spend.period_start else 0.0
        return spend.period_start, math.fsum((before, *spend.by_pod.values()))

    def _period(self, namespace: str, route: str, period: BudgetPeriod, now: float) -> _Spend:
        key = (namespace, route, period)
        start, _ = period_bounds(period, now)
        spend = self._spend.get(key)
        if spend is None or spend.period_start != start:
            spend = self._spend[key] = _Spend(start)
        return spend

    def failing_targets(self, namespace: str, provider: str, now: float) -> list[str]:
        """The provider's targets failing across sidecars in the window, each with its counts; [] if healthy."""
        window = self._health.get(f"{namespace}/{provider}")
        if not window:
            return []
        while window and window[0].at < now - self.health_window_s:
            window.popleft()
        requests: dict[str, float] = {}
        failures: dict[str, float] = {}
        errors: dict[str, dict[str, float]] = {}
        for h in window:
            requests[h.target] = requests.get(h.target, 0.0) + h.requests
            failures[h.target] = failures.get(h.target, 0.0) + h.failures
            for kind, n in h.errors.items():
                errors.setdefault(h.target, {})[kind] = errors.get(h.target, {}).get(kind, 0.0) + n
        total_requests, total_failures = math.fsum(requests.values()), math.fsum(failures.values())
        if total_failures < DEGRADED_MIN_FAILURES or total_failures < DEGRADED_RATIO * total_requests:
            return []
        out = []
        for target in sorted(requests):
            if failures[target] > 0:
                kinds = ", ".join(f"{k} {int(n)}" for k, n in sorted(errors.get(target, {}).items()))
                out.append(f"{target}: {int(failures[target])} of {int(requests[target])} failed"
                           + (f" ({kinds})" if kinds else ""))
        return out


# ---- computing status ---------------------------------------------------------------------------------

def compute(index: ClusterIndex, book: StatusBook, previous: Mapping[ObjectRef, Mapping[str, Any]],
            now: float) -> tuple[dict[ObjectRef, dict[str, Any]], list[Event]]:
    """Every resource's status, and the Events its changes (and the NACKs since last time) call for."""
    statuses: dict[ObjectRef, dict[str, Any]] = {}
    events: list[Event] = []
    scrubber = scrubber_of(index.credentials())
    for verdict in (scrubbed(v, scrubber) for v in index.verdicts()):
        ref = (verdict.kind, verdict.namespace, verdict.name)
        old = previous.get(ref) or {}
        if verdict.kind == ROUTE_KIND:
            status = route_status(index, book, verdict, old, now, scrubber)
        else:
            status = provider_status(index, book, verdict, old, now)
        events += transition_events(ref, old, status)
        statuses[ref] = status
    events += nack_events(index, book, scrubber)
    book.pending_events.clear()
    events += refusal_events(index, book, now)
    return statuses, events


def nack_events(index: ClusterIndex, book: StatusBook, scrubber: Scrubber) -> list[Event]:
    """One Warning per route for the pods that refused one table for one reason since the last pass: a
    rollout of sidecars too old for a new table is one Event naming its pods, not one per pod."""
    refused: dict[tuple[str, str, str, str], list[str]] = {}  # (namespace, route, version, error) → pods
    for pod, version, error in book.pending_events:
        for route in routes_of(index, pod):
            refused.setdefault((pod.namespace, route, version, error), []).append(pod.name)
    events = []
    for (namespace, route, version, error), pods in refused.items():
        names = sorted(set(pods))
        who = f"pod {names[0]}" if len(names) == 1 else f"{len(names)} pods ({named(names)})"
        events.append(Event((ROUTE_KIND, namespace, route), "Warning", "TableRejected",
                            scrubber(f"{who} refused table {version[:16]}: {error}")))
    return events


def named(pods: list[str]) -> str:
    """The first NAMED_PODS of them, and how many more."""
    more = f" and {len(pods) - NAMED_PODS} more" if len(pods) > NAMED_PODS else ""
    return f"{', '.join(pods[:NAMED_PODS])}{more}"


def refusal_events(index: ClusterIndex, book: StatusBook, now: float) -> list[Event]:
    """A Warning on each existing Pod that a refused token named, at most one per pod per interval; the
    refusals of pods that do not exist are only counted (`book.refusals`, on /metrics)."""
    book.refusal_posted = {p: t for p, t in book.refusal_posted.items() if t > now - REFUSAL_EVENT_INTERVAL_S}
    events = []
    for pod, (reason, count) in list(book.pending_refusals.items()):
        if index.pod(pod) is None:
            del book.pending_refusals[pod]
        elif pod not in book.refusal_posted:
            times = f" ({count} times since the last such Event)" if count > 1 else ""
            events.append(Event(("Pod", pod.namespace, pod.name), "Warning", "SidecarRefused",
                                f"llmroute operator refused a sidecar connection with a token for this pod{times}: "
                                f"{reason}"))
            book.refusal_posted[pod] = now
            del book.pending_refusals[pod]
    return events


def route_status(index: ClusterIndex, book: StatusBook, verdict: Verdict, old: Mapping[str, Any],
                 now: float, scrubber: Scrubber) -> dict[str, Any]:
    ns, name = verdict.namespace, verdict.name
    spec = index.route_spec(ns, name)
    conditions = [accepted(verdict), resolved_refs(verdict)]
    selected = [pod for pod in index.selected_pods(ns, name) if pod in book.connected_pods]
    wanted = {pod: table.version for pod in selected if (table := index.table_for(pod)) is not None}
    stuck = {pod: problem for pod in selected if (problem := index.table_problem(pod)) is not None}
    synced = [pod for pod in selected if pod in wanted and book.acks.get(pod) == wanted[pod] and pod not in stuck]
    refusals = sorted((pod.name, book.nacks[pod][1]) for pod in selected
                      if pod in book.nacks and book.nacks[pod][0] == wanted.get(pod))
    nacked = [pod for pod, _ in refusals]
    first_reason = scrubber(refusals[0][1]) if refusals else ""
    conditions.append(synced_condition(len(synced), len(selected), nacked, first_reason) if not stuck else
                      condition("Synced", False, "TableInvalid", scrubber(
                          f"{len(stuck)} of {len(selected)} sidecars keep their previous table: the table of "
                          f"their routes and providers does not compile: {min(stuck.values())}")))
    status: dict[str, Any] = {
        "sidecars": {"selected": len(selected), "synced": len(synced), "summary": f"{len(synced)}/{len(selected)}",
                     "nacked": nacked},
    }
    versions = sorted(set(wanted.values()))
    if len(versions) == 1:
        status["tableVersion"] = versions[0][:16]
    elif versions:
        status["tableVersion"] = f"{len(versions)} tables"
    providers = sorted({t.provider for tier in spec.tiers.values() for t in tier.targets} |
                       {t.provider for arm in spec.experiments for t in arm.targets}) if spec else []
    if spec is not None:
        unpriced = index.unpriced_targets(ns, name)
        conditions.append(condition("Priced", not unpriced, "PricingMissing" if unpriced else "AllPriced",
                                    unpriced_message(spec, unpriced) if unpriced else ""))
    degraded = [p for p in providers if book.failing_targets(ns, p, now)]
    status["degradedProviders"] = degraded
    conditions.append(condition("Degraded", bool(degraded), "ProviderFailing" if degraded else "Healthy",
                                f"failing across sidecars: {', '.join(degraded)}" if degraded else ""))
    if spec is not None and spec.budget is not None:
        budget = spec.budget
        book.set_period(ns, name, budget.period)
        start, spent = book.spend(ns, name, now)
        exact = 100 * spent / budget.limit_usd if budget.limit_usd > 0 else 0.0
        percent = round(exact, 1)  # shown; the thresholds compare what was spent (79.96 % is not 80 %)
        warning, exceeded = exact >= budget.alert_at_percent, exact >= 100
        status["spend"] = {"periodUSD": round(spent, 6), "percentOfBudget": percent, "periodStart": _iso(start)}
        usage = f"{spent:.2f} of {budget.limit_usd:.2f} USD this {budget.period.value} ({percent}%)"
        conditions.append(condition("BudgetWarning", warning, "AlertThresholdReached" if warning else "WithinBudget",
                                    f"{usage}; alert at {budget.alert_at_percent:g}%"))
        conditions.append(condition("BudgetExceeded", exceeded, "LimitReached" if exceeded else "WithinBudget",
                                    f"{usage}; on exceeded: {budget.on_exceeded}"))
    status["observedGeneration"] = verdict.generation
    status["conditions"] = merge_conditions(old.get("conditions") or [], conditions, verdict.generation, now)
    return _without_none(status)


def provider_status(index: ClusterIndex, book: StatusBook, verdict: Verdict, old: Mapping[str, Any],
                    now: float) -> dict[str, Any]:
    failing = book.failing_targets(verdict.namespace, verdict.name, now)
    conditions = [accepted(verdict),
                  condition("Degraded", bool(failing), "TargetsFailing" if failing else "Healthy", "; ".join(failing))]
    regions = index.provider_regions(verdict.namespace, verdict.name)
    status = {"observedGeneration": verdict.generation, "regions": ",".join(regions),
              "routes": index.routes_using(verdict.namespace, verdict.name),
              "conditions": merge_conditions(old.get("conditions") or [], conditions, verdict.generation, now)}
    return _without_none(status)


def accepted(verdict: Verdict) -> dict[str, Any]:
    if verdict.accepted:
        return condition("Accepted", True, "Accepted", "")
    problems = "; ".join(str(p) for p in (*verdict.problems, *verdict.unresolved))
    kept = " (the previous accepted version keeps serving)" if verdict.serving else ""
    reason = "Invalid" if verdict.problems else "UnresolvedRefs"
    return condition("Accepted", False, reason, problems + kept)


def resolved_refs(verdict: Verdict) -> dict[str, Any]:
    if not verdict.unresolved:
        return condition("ResolvedRefs", True, "ResolvedRefs", "")
    return condition("ResolvedRefs", False, "UnresolvedRefs", "; ".join(str(p) for p in verdict.unresolved))


def synced_condition(synced: int, selected: int, nacked: list[str], reason: str = "") -> dict[str, Any]:
    """`reason`: why the first of the `nacked` pods refused the table (scrubbed)."""
    if selected == 0:
        return condition("Synced", False, "NoSidecars", "no connected sidecar of a selected pod")
    message = f"{synced}/{selected} sidecars run the current table"
    if nacked:
        message += f"; refused by {named(nacked)}: {reason} (see Events)"
    if synced == selected:
        return condition("Synced", True, "AllSynced", message)
    return condition("Synced", False, "Rejected" if nacked else "Syncing", message)


def condition(kind: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    """An empty message is left out: the API server (1.20) takes "" for null and refuses it."""
    text = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"
    return {"type": kind, "status": "True" if status else "False", "reason": reason,
            **({"message": text} if text else {})}


def merge_conditions(old: Iterable[Mapping[str, Any]], new: list[dict[str, Any]], generation: int | None,
                     now: float) -> list[dict[str, Any]]:
    """A condition keeps its lastTransitionTime while its status stays the same."""
    before = {c.get("type"): c for c in old if isinstance(c, Mapping)}
    out = []
    for c in new:
        prior = before.get(c["type"])
        same = prior is not None and prior.get("status") == c["status"] and prior.get("lastTransitionTime")
        out.append({**c, "lastTransitionTime": prior["lastTransitionTime"] if same and prior else _iso(now),
                    **({"observedGeneration": generation} if generation is not None else {})})
    return out


def transition_events(ref: ObjectRef, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Event]:
    """Warnings when a budget alert, a budget limit, degradation, a rejection or missing pricing begins."""
    before = {c.get("type"): c.get("status") for c in old.get("conditions") or []}
    out = []
    for c in new.get("conditions") or []:
        kind, status = c["type"], c["status"]
        if before.get(kind) == status:
            continue
        bad = (status == "True") if kind in ("BudgetWarning", "BudgetExceeded", "Degraded") else \
            (status == "False" and kind in ("Accepted", "Priced"))
        if bad:
            out.append(Event(ref, "Warning", c["reason"] if kind in ("Accepted", "Priced") else kind, c["message"]))
    return out


def routes_of(index: ClusterIndex, pod: PodRef) -> list[str]:
    table = index.table_for(pod)
    documents = table.payload.get("documents") or [] if table is not None else []
    return [d["metadata"]["name"] for d in documents if d.get("kind") == ROUTE_KIND]


def scrubbed(verdict: Verdict, scrubber: Scrubber) -> Verdict:
    """The verdict with no key in its problems: they quote what was applied."""
    def clean(problems: tuple[Problem, ...]) -> tuple[Problem, ...]:
        return tuple(Problem(scrubber(p.path), scrubber(p.message)) for p in problems)

    if not verdict.problems and not verdict.unresolved:
        return verdict
    return replace(verdict, problems=clean(verdict.problems), unresolved=clean(verdict.unresolved))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_none(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if v is not None}

