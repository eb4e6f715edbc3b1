"""The seam between the operator's view of the cluster and the hub that talks to sidecars.

The kopf side keeps an index of resources, pods, nodes and Secrets and knows, for every pod, the table
it should run (`TableSource`). The hub authenticates sidecars, pushes those tables, hands out limit
leases and passes everything the sidecars report to a `ReportSink`, which the status writer reads.
Neither side imports the other: both meet here, so each is tested with a fake of the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True, order=True)
class PodRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class GlobalLimits:
    """A provider's limits across every sidecar that uses it; None means unlimited."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class DesiredTable:
    """What one pod should run.

    `payload` is the table document sent down as `{"type": "table", "version", "table": payload}`;
    `version` is its content hash, so pods with the same inputs share one table and an unchanged table
    is never sent again. `provider_limits` (keyed `namespace/provider`) and `route_budgets` (keyed
    `namespace/route`, USD per period) are the global figures the hub divides into leases.
    """

    version: str
    payload: Mapping[str, Any]
    provider_limits: Mapping[str, GlobalLimits] = field(default_factory=dict)
    route_budgets: Mapping[str, float] = field(default_factory=dict)


class TableSource(Protocol):
    def table_for(self, pod: PodRef) -> DesiredTable | None:
        """None when the pod is unknown or no accepted route selects it."""
        ...

    def generation(self) -> int:
        """Grows by one on every change that may alter some pod's table."""
        ...

    async def changed(self, since: int) -> int:
        """Wait until `generation()` is past `since`; return the new generation."""
        ...


class ReportSink(Protocol):
    def connected(self, pod: PodRef) -> None: ...

    def disconnected(self, pod: PodRef) -> None: ...

    def pushed(self, pod: PodRef, version: str) -> None:
        """The hub sent the pod this table version (the clock for ACK latency starts)."""
        ...

    def acked(self, pod: PodRef, version: str) -> None: ...

    def nacked(self, pod: PodRef, version: str, error: str) -> None: ...

    def usage(self, pod: PodRef, report: Mapping[str, Any]) -> None:
        """A validated `{"type": "usage", ...}` message, as the sidecar sent it."""
        ...

    def refused(self, reason: str, pod: PodRef | None) -> None:
        """A sidecar's handshake was refused; `reason` never contains the token. `pod` is the pod the
        token names, if any (unverified when the token itself was refused)."""
        ...


class Generation:
    """An awaitable change counter: the `generation()` / `changed()` half of a TableSource.

    `advance` is synchronous so that pure code (the cluster index) can move it without awaiting."""

    def __init__(self) -> None:
        self.value = 0
        self._moved = asyncio.Event()

    async def changed(self, since: int) -> int:
        while self.value <= since:
            await self._moved.wait()
        return self.value

    def advance(self) -> None:
        self.value += 1
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def bump(self) -> None:
        self.advance()
