"""The sidecar's live state: the current table and everything that outlives one request.

Health, load, limits and budgets are keyed by target/provider/route names, so they survive
a table swap: a target that keeps its id keeps its circuit state and its load.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from llmroute_proxy.aws_access_keys import AwsCredentials
from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.errors import DrainDeadlinePassed
from llmroute_proxy.routing.balance import LoadBook
from llmroute_proxy.routing.budget import BudgetLedger, BudgetStatus
from llmroute_proxy.routing.health import HealthBook
from llmroute_proxy.routing.leases import LeaseGrant, LeaseHolder
from llmroute_proxy.routing.limits import LimitBook, RetryBudget
from llmroute_proxy.routing.ratelimits import SeenRateLimits
from llmroute_proxy.scrubbing import Scrubber, scrubber_of, table_secrets
from llmroute_proxy.server.aws_credentials import (
    AwsCredentialSource,
    AwsEnvironment,
    fetch_aws_credentials,
)
from llmroute_proxy.server.google_tokens import METADATA_HOST, GoogleTokens, fetch_metadata_token
from llmroute_proxy.server.outcome import Outcome
from llmroute_proxy.server.response_store import ResponseStore
from llmroute_proxy.server.telemetry import Telemetry
from llmroute_proxy.server.upstream import UpstreamClient
from llmroute_proxy.table import Table, TargetId

log = logging.getLogger("llmroute.proxy")

RECENT_DECISIONS = 50


@dataclass(slots=True)
class TargetCounters:
    requests: int = 0
    failures: int = 0
    last_error: str | None = None
    errors: dict[str, int] = field(default_factory=dict)  # failure kind → count, for usage reports


@dataclass(slots=True)
class Spend:
    """What one route, tier, target or experiment has cost since the sidecar started."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, usage: Usage, cost_usd: float) -> None:
        self.requests += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += cost_usd

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost_usd": self.cost_usd}


RESPONSES_STORE_BYTES = 32 * 1024 * 1024
"""The Responses store's default cap. Full, it adds ~1.24x its cap to the sidecar's RSS (bench/response_store.py):
~40 MB on a ~46 MB process, which leaves room under 100 MB for 128 concurrent streams."""


@dataclass(slots=True)
class Settings:
    max_body_bytes: int = 16 * 1024 * 1024
    default_max_output_tokens: int = 4096
    allow_origins: frozenset[str] = frozenset()  # browser origins the data plane serves (see server/origins)
    responses_store_bytes: int = RESPONSES_STORE_BYTES  # memory cap of the Responses store (0: keep nothing)
    responses_ttl_s: float = 3600.0  # how long a stored Response can be read or continued
    gcp_metadata_host: str = METADATA_HOST  # host[:port] of the GCP metadata server (`GCE_METADATA_HOST`)
    aws: AwsEnvironment = field(default_factory=AwsEnvironment)  # where the pod's AWS credentials come from (`AWS_*` variables)


@dataclass
class Sidecar:
    """Everything a request handler needs besides the request itself."""

    upstream: UpstreamClient
    telemetry: Telemetry
    settings: Settings = field(default_factory=Settings)
    clock: Callable[[], float] = time.monotonic
    wallclock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    health: HealthBook = field(default_factory=HealthBook)
    load: LoadBook = field(default_factory=LoadBook)
    limits: LimitBook = field(default_factory=LimitBook)
    retry_budget: RetryBudget = field(default_factory=RetryBudget)
    ledger: BudgetLedger = field(default_factory=BudgetLedger)
    leases: LeaseHolder = field(default_factory=LeaseHolder)
    rate_limits_seen: SeenRateLimits = field(default_factory=SeenRateLimits)  # for the usage reports
    table: Table | None = None
    table_loaded_at: float | None = None
    table_source: str | None = None  # file | operator | persisted
    pushed_version: str | None = None  # the operator's version of the table (cluster mode)
    operator_status: Callable[[], dict[str, Any]] | None = None  # the operator link, for /status
    draining: bool = False
    tpm_limited: bool = False  # some provider has a tokens-per-minute limit: requests need a token count
    in_flight: int = 0
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)  # the requests in flight, to cut at the drain deadline
    drain_cut: DrainDeadlinePassed | None = None  # set when the drain time ran out and open requests are cut
    counters: dict[TargetId, TargetCounters] = field(default_factory=dict)
    decisions: deque[Outcome] = field(default_factory=lambda: deque(maxlen=RECENT_DECISIONS))
    spend: dict[tuple[str, str], Spend] = field(default_factory=dict)  # ("route"|"tier"|..., name)
    responses: ResponseStore = field(init=False)  # POST /v1/responses with store (server/response_store)
    google_tokens: GoogleTokens = field(init=False)  # Vertex AI targets' bearer tokens (server/google_tokens)
    aws_credentials: AwsCredentialSource = field(init=False)  # the pod's AWS credentials (server/aws_credentials)
    scrubber: Scrubber = field(default_factory=Scrubber)
    """Every key held, scrubbed from what is relayed, stored or logged; rebuilt when the keys change."""
    held_secrets: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    """Secrets by where they come from: the table's keys, the previous table's, the operator token."""
    refuses_reasoning_hint: set[TargetId] = field(default_factory=set)
    output_limits: dict[TargetId, int] = field(default_factory=dict)  # the most output tokens a target said it gives
    """Targets that refused a reasoning hint the sidecar translated (gpt-4o and `reasoning_effort`): sent
    without it from then on, not refused again on every request. Forgotten with each new table."""

    def __post_init__(self) -> None:
        self.responses = ResponseStore(self.settings.responses_store_bytes, self.settings.responses_ttl_s)
        # a wallclock or settings replaced later are followed
        self.google_tokens = GoogleTokens(lambda: self.wallclock(), self._fetch_metadata_token)
        self.aws_credentials = AwsCredentialSource(lambda: self.wallclock(), lambda: self.settings.aws,
                                                   self._fetch_aws_credentials)
        self.telemetry.register_circuits(self._circuit_states)
        self.telemetry.register_budgets(self._budget_states)

    async def _fetch_metadata_token(self) -> tuple[str, float]:
        host = self.settings.gcp_metadata_host
        token, lifetime = await fetch_metadata_token(lambda request: self.upstream.send(request, f"gcp-metadata@{host}"),
                                                     host)
        self._hold_fetched("gcp metadata token", (token,))
        return token, lifetime

    async def _fetch_aws_credentials(self) -> AwsCredentials:
        credentials = await fetch_aws_credentials(lambda request: self.upstream.send(request, "aws-credentials"),
                                                  self.settings.aws, self.wallclock(), self._hold_aws_token)
        self._hold_fetched("aws credentials", credentials.secrets())
        return credentials

    def _hold_aws_token(self, token: str) -> None:
        """The token read to ask for the pod's AWS credentials (web-identity, container authorization)."""
        self._hold_fetched("aws token read", (token,))

    def _hold_fetched(self, source: str, values: tuple[str, ...]) -> None:
        """Credentials fetched from the pod's platform are scrubbed, and the ones they replace for one more
        fetch (requests in flight still carry them)."""
        previous = self.held_secrets.get(source + " (current)", frozenset())
        self.held_secrets[source + " (previous)"] = previous
        self.hold_secrets(source + " (current)", values)

    def request_started(self) -> asyncio.Task[Any] | None:
        """The current request is in flight: the drain waits for it, and cancels its task at the
        deadline. Hand what this returns to `request_ended`."""
        self.in_flight += 1
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
        return task

    def request_ended(self, task: asyncio.Task[Any] | None) -> None:
        self.in_flight -= 1
        if task is not None:
            self.handlers.discard(task)

    def take_drain_cut(self) -> DrainDeadlinePassed | None:
        """Inside `except CancelledError`: when the drain's cut cancelled this request, withdraw the
        cancellation (so that the handler can still answer) and return the error to answer with."""
        if self.drain_cut is None:
            return None
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return self.drain_cut

    def install(self, table: Table, source: str = "file", pushed_version: str | None = None) -> None:
        """Swap the routing table atomically; requests in flight finish on the old one."""
        self.ledger.configure({route.name: route.budget for route in table.routes if route.budget})
        self._enforce_leases(table)
        self.table_source = source
        self.pushed_version = pushed_version
        self.telemetry.set_table_version(table.version)
        self.tpm_limited = any(limits.tokens_per_minute is not None for limits in table.provider_limits.values())
        previous = self.table.version if self.table else None
        # Requests still in flight on the old table may meet its keys: scrub them for one more table.
        self.held_secrets["previous table"] = self.held_secrets.get("table", frozenset())
        self.held_secrets["table"] = table_secrets(table)
        self._rebuild_scrubber()
        self.table = table
        self.table_loaded_at = self.wallclock()
        self.refuses_reasoning_hint.clear()
        self.output_limits.clear()
        if previous != table.version:
            log.info("routing table %s installed (was %s)", table.version, previous or "none")

    def hold_secrets(self, source: str, values: Iterable[str]) -> None:
        """Secrets held besides the table's keys (the operator token): scrubbed as well."""
        self.held_secrets[source] = frozenset(values)
        self._rebuild_scrubber()

    def _rebuild_scrubber(self) -> None:
        self.scrubber = scrubber_of(frozenset().union(*self.held_secrets.values()))

    def grant_lease(self, lease: LeaseGrant) -> None:
        """New shares from the operator: limits and budgets change, the table stays."""
        self.leases.grant(lease)
        if self.table is not None:
            self._enforce_leases(self.table)

    def expire_lease(self) -> None:
        """Called when the lease's TTL may have passed: enforce the fallback shares."""
        if self.table is not None:
            self._enforce_leases(self.table)

    def _enforce_leases(self, table: Table) -> None:
        now = self.clock()
        self.limits.configure(self.leases.limits(table.provider_limits, now))
        shares = {r.name: self.leases.budget(r.name, r.budget, now).limit_usd for r in table.routes if r.budget}
        self.ledger.lease(shares, self.leases.spent_floors(), self.wallclock())

    def _circuit_states(self) -> list[tuple[str, str]]:
        table, now = self.table, self.clock()
        if table is None:
            return []
        return [(target, self.health.snapshot(target, now).state) for target in table.targets()]

    def _budget_states(self) -> list[tuple[str, BudgetStatus]]:
        table, now = self.table, self.wallclock()
        if table is None:
            return []
        return [(r.name, self.ledger.snapshot(r.name, now, r.budget)) for r in table.routes if r.budget]

    def record_spend(self, usage: Usage, cost_usd: float, route: str, tier: str, target: str,
                     experiment: str | None) -> None:
        keys = [("route", route), ("tier", f"{route}/{tier}"), ("target", target)]
        if experiment is not None:
            keys.append(("experiment", f"{route}/{experiment}"))
        for key in keys:
            spend = self.spend.get(key)
            if spend is None:
                spend = self.spend[key] = Spend()
            spend.add(usage, cost_usd)

    def counters_for(self, target: TargetId) -> TargetCounters:
        counters = self.counters.get(target)
        if counters is None:
            counters = self.counters[target] = TargetCounters()
        return counters
