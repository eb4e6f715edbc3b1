"""A credential fetched from the pod's platform (a token, temporary keys), kept until near its end and
fetched again one fetch at a time.

The GCP metadata server's tokens and the pod's AWS credentials are both held like this: the first
request that needs one starts the fetch and every request that needs one meanwhile awaits the same
fetch; they all fail with it when it fails (the attempt's failure, so the request fails over), and a
failure is not remembered (the next request fetches again).

A fetch answers the value and two times (epoch seconds): `refresh_at`, from which a new one is fetched
in the background while the held one still serves (botocore's advisory refresh), and `renew_at`, from
which no request is sent with the held one: they wait for the new one (botocore's mandatory refresh).
A background fetch that fails leaves the held value in place until `renew_at`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("llmroute.proxy")


@dataclass(frozen=True, slots=True)
class Fetched(Generic[T]):
    value: T
    refresh_at: float
    renew_at: float


class Renewing(Generic[T]):
    """The value `fetch` gives, held until its times pass; `wallclock` gives epoch seconds (injected: tests
    move it); `what` names the value in a failed background fetch's log line."""

    def __init__(self, wallclock: Callable[[], float], fetch: Callable[[], Awaitable[Fetched[T]]], what: str) -> None:
        self._wallclock = wallclock
        self._fetch = fetch
        self._what = what
        self._held: Fetched[T] | None = None
        self._fetching: asyncio.Task[T] | None = None

    async def get(self) -> T:
        held, now = self._held, self._wallclock()
        if held is not None and now < held.refresh_at:
            return held.value
        fetching = self._fetching
        if fetching is None or fetching.done():
            fetching = self._fetching = asyncio.get_running_loop().create_task(self._fetched())
            if held is not None and now < held.renew_at:
                fetching.add_done_callback(self._background_done)
        if held is not None and now < held.renew_at:
            return held.value
        return await asyncio.shield(fetching)

    async def _fetched(self) -> T:
        fetched = await self._fetch()
        self._held = fetched
        return fetched.value

    def _background_done(self, task: asyncio.Task[T]) -> None:
        if not task.cancelled() and (problem := task.exception()) is not None:
            log.warning("%s: refreshing ahead of time failed, the one held still serves: %s", self._what, problem)
