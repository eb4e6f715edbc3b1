"""A fault drill: the primary provider breaks in every way under concurrent load, and no client notices.

Eight async OpenAI SDK clients (half their requests streamed) keep a two-target tier busy
while the primary goes through phases: healthy, then refused connections, 503s, 429 with
Retry-After, hangs, resets and streams cut before their first token, each healed in turn,
then healthy for good. Each outage starts from a healthy primary, so every kind of failure
is met by the breaker's consecutive-failure path under load, not only by a lone probe.

The drill runs once per module in real time and records every
client request and, every few milliseconds, the primary's breaker state, its in-flight
attempts and its simulator's request count, read atomically on the sidecar's own loop. The
tests below are the drill's verdicts, one behaviour each.

Windows are told apart by when they end (`closed_until`), not by polling for an open gap: a
half-open probe that fails re-ejects the target a few milliseconds after the ejection ended,
far faster than any poll.

Its margins are for a loaded 2-core machine: every deadline is seconds, many times a healthy
answer's time (a hang is caught by the first-byte deadline on streams, by the per-try one on plain
requests), ejections last 2.5 s, and answers cross loopback whole (fragmented delivery has its own
tests), so a slow machine lengthens the drill but does not turn a healthy answer into a failure.

At the end, a quiet sidecar (no traffic before the outage) meets a failing primary one request
at a time and in a burst: the retry budget must not turn a healthy fallback into client errors.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import openai
import pytest

from llmroute_proxy.sim import Fault, FaultKind, sim_state
from llmroute_proxy.table import TargetId
from tests.proxy.documents import Document, model, provider, route, target
from tests.proxy.stack import Stack

T = TypeVar("T")

CLIENTS = 8
PAUSE_S = 0.1  # between one client's requests, jittered ±50 %: about 75 requests per second in all
POLL_S = 0.01
STINT_S = 0.5  # healthy traffic between outages
HEALTHY_REQUESTS = 10  # answered before the first outage and after the last
WAIT_S = 10.0  # the longest any drill step may take before the drill gives up
SAME_WINDOW_S = 1e-6

def drill_config(**outlier: Any) -> list[Document]:
    """Two OpenAI-style providers, the primary first, in one tier; `outlier` overrides the outlier detection."""
    priced = [model("gpt-4o-mini", input_per_mtok=1.0, output_per_mtok=2.0)]
    detection = {"consecutiveFailures": 3, "baseEjection": "2500ms", "maxEjection": "2500ms", **outlier}
    return [
        provider("oai", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", models=priced),
        provider("oai-b", "openai-compatible", "{oai_b}/v1", key_env="TEST_OAI_B_KEY", region="there", models=priced),
        route("drill", {"ha": [target("oai", "gpt-4o-mini"), target("oai-b", "gpt-4o-mini", priority=1)]},
              default_tier="ha",
              fallback={"maxAttempts": 3, "perTryTimeout": "2s", "firstByteTimeout": "1s", "idleTimeout": "2s",
                        "overallTimeout": "20s"},
              outlierDetection={key: value for key, value in detection.items() if value is not None}),
    ]


DRILL_CONFIG = drill_config()


# --- what the drill does to the primary ---------------------------------------------------------

StackStep = Callable[[Stack], Coroutine[Any, Any, None]]


async def _refuse(stack: Stack) -> None:
    # Requests already in flight end normally: a stream the primary cut after its first token is an
    # error no router can hide (tests/proxy/server cover that path), not the refused connections drilled here.
    await stack.sims["oai"].stop_listening(finish_in_flight=True)


async def _listen(stack: Stack) -> None:
    await stack.sims["oai"].resume()


def _always(fault: Fault) -> StackStep:
    async def inject(stack: Stack) -> None:
        stack.faults["oai"].always(fault)

    return inject


async def _clear(stack: Stack) -> None:
    stack.faults["oai"].clear()


@dataclass(frozen=True)
class Outage:
    name: str
    inject: StackStep
    heal: StackStep
    probe_calls: int | None
    """Requests that reach the primary's simulator between two closed windows while the outage
    lasts: the one half-open probe (0 when connections are refused); None after a Retry-After
    cooldown, which ends for every request at once rather than through a probe."""
    failure_kinds: frozenset[str]
    """What `/status` may name as the primary's last failure."""


OUTAGES = (
    Outage("refused", _refuse, _listen, 0, frozenset({"connection"})),
    Outage("503", _always(Fault(FaultKind.STATUS, status=503)), _clear, 1, frozenset({"overloaded"})),
    Outage("429-retry-after", _always(Fault(FaultKind.STATUS, status=429, retry_after=2.0)), _clear, None,
           frozenset({"rate_limited"})),
    Outage("hang", _always(Fault(FaultKind.HANG)), _clear, 1, frozenset({"timeout"})),
    Outage("reset", _always(Fault(FaultKind.RESET)), _clear, 1, frozenset({"connection"})),
    Outage("break-before-first-token", _always(Fault(FaultKind.BREAK_BEFORE_FIRST_TOKEN)), _clear, 1,
           frozenset({"connection", "stream_broken"})),
)


# --- what the drill records --------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One client request as the application saw it (times on the sidecar's monotonic clock)."""

    start: float
    end: float
    stream: bool
    provider: str | None = None
    attempts: str | None = None
    text: str = ""
    error: str | None = None

    @property
    def served_by_named_provider(self) -> bool:
        return self.provider is not None and self.text.startswith(f"[sim-{self.provider} gpt-4o-mini]")


@dataclass(frozen=True)
class Reading:
    """The primary as the sidecar and its simulator saw it at one instant."""

    at: float
    state: str
    seconds_left: float
    outstanding: int
    calls: int
    failures: int  # attempts on it that failed by its fault, as the sidecar counts them

    @property
    def closed(self) -> bool:
        """Ejected or cooling: no request may be sent to it."""
        return self.state in ("ejected", "cooling")

    @property
    def closed_until(self) -> float:
        return self.at + self.seconds_left

    def same_window(self, other: Reading) -> bool:
        return other.closed and abs(other.closed_until - self.closed_until) < SAME_WINDOW_S


@dataclass(frozen=True)
class Window:
    """The primary closed to traffic: from the first reading with no attempt left in flight on it
    to the last reading before the closure ended."""

    opened: Reading
    last: Reading


@dataclass(frozen=True)
class Interval:
    start: float
    end: float


@dataclass
class PhaseLog:
    outage: Outage
    before: Reading | None = None
    injected: float = 0.0
    first: Window | None = None
    second: Window | None = None
    healed: float = 0.0
    recovered: Reading | None = None
    stint: Interval | None = None
    status_target: dict[str, Any] = field(default_factory=dict)


@dataclass
class DrillResult:
    records: list[Record]
    baseline: Interval
    phases: dict[str, PhaseLog]
    final: Interval

    def between(self, start: float, end: float) -> list[Record]:
        return [r for r in self.records if start <= r.start and r.end <= end]

    def during(self, window: Window) -> list[Record]:
        return self.between(window.opened.at, window.last.at)


# --- the drill ---------------------------------------------------------------------------------

class Drill:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        table = stack.sidecar.table
        assert table is not None
        primary, fallback = table.routes[0].tiers["ha"].targets
        self.primary: TargetId = primary.id
        assert fallback.provider == "oai-b"
        self.records: list[Record] = []
        self.readings: list[Reading] = []
        self._stop = asyncio.Event()

    async def run(self) -> DrillResult:
        clients = [openai.AsyncOpenAI(base_url=self.stack.url + "/v1", api_key="drill", max_retries=0,
                                      timeout=10) for _ in range(CLIENTS)]
        workers = [asyncio.create_task(self._client(i, c)) for i, c in enumerate(clients)]
        try:
            baseline = await self._healthy_stint(time.monotonic(), HEALTHY_REQUESTS)
            phases = {}
            async with aiohttp.ClientSession() as admin:
                for outage in OUTAGES:
                    phases[outage.name] = await self._phase(outage, admin)
            final = await self._healthy_stint(time.monotonic(), HEALTHY_REQUESTS)
        finally:
            self._stop.set()
            await asyncio.gather(*workers)
            for client in clients:
                await client.close()
        return DrillResult(self.records, baseline, phases, final)

    async def _phase(self, outage: Outage, admin: aiohttp.ClientSession) -> PhaseLog:
        log = PhaseLog(outage, await self._read())
        log.injected = time.monotonic()
        await self._on_stack(outage.inject(self.stack))
        opened = await self._wait(lambda r: r.closed and r.outstanding == 0, f"{outage.name}: primary never left")
        log.status_target = await self._status_of_primary(admin)
        log.first = first = await self._ride(opened)
        opened = await self._wait(lambda r: r.closed and r.outstanding == 0 and not first.last.same_window(r),
                                  f"{outage.name}: the primary was not closed again while the outage lasted")
        log.healed = time.monotonic()
        await self._on_stack(outage.heal(self.stack))
        log.second = await self._ride(opened)
        calls = log.second.last.calls
        log.recovered = await self._wait(lambda r: r.state == "healthy" and r.calls > calls,
                                         f"{outage.name}: the primary never served again after healing")
        log.stint = await self._healthy_stint(log.recovered.at, 1)
        return log

    async def _healthy_stint(self, start: float, requests: int) -> Interval:
        """At least STINT_S of traffic, and long enough for `requests` answers however slow the machine."""
        await asyncio.sleep(STINT_S)
        deadline = start + WAIT_S
        while len([r for r in self.records if r.start >= start]) < requests and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        return Interval(start, time.monotonic())

    async def _ride(self, opened: Reading) -> Window:
        last = opened
        while True:
            reading = await self._read()
            if not opened.same_window(reading):
                return Window(opened, last)
            last = reading
            await asyncio.sleep(POLL_S)

    async def _wait(self, condition: Callable[[Reading], bool], failure: str) -> Reading:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            reading = await self._read()
            if condition(reading):
                return reading
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"{failure} within {WAIT_S}s; last reading {self.readings[-1]}")

    async def _read(self) -> Reading:
        def read() -> Reading:
            sidecar = self.stack.sidecar
            now = sidecar.clock()
            health = sidecar.health.snapshot(self.primary, now)
            calls = sim_state(self.stack.sims["oai"].app).stats.total
            return Reading(now, health.state, health.until, sidecar.load.outstanding(self.primary), calls,
                           sidecar.counters_for(self.primary).failures)

        reading = await self._on_stack_call(read)
        self.readings.append(reading)
        return reading

    async def _status_of_primary(self, admin: aiohttp.ClientSession) -> dict[str, Any]:
        async with admin.get(self.stack.admin_url + "/status") as response:
            document = await response.json()
        return next(t for t in document["targets"] if t["id"] == self.primary)

    async def _client(self, index: int, client: openai.AsyncOpenAI) -> None:
        rng = random.Random(index)
        sent = 0
        while not self._stop.is_set():
            self.records.append(await _one_request(client, stream=(index + sent) % 2 == 0, number=sent))
            sent += 1
            await asyncio.sleep(PAUSE_S * rng.uniform(0.5, 1.5))

    async def _on_stack(self, coro: Coroutine[Any, Any, None]) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.stack.loop))

    async def _on_stack_call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), self.stack.loop))


async def _one_request(client: openai.AsyncOpenAI, *, stream: bool, number: int) -> Record:
    messages: Any = [{"role": "user", "content": f"drill request {number}"}]
    start = time.monotonic()
    try:
        if stream:
            streamed = await client.chat.completions.with_raw_response.create(
                model="ha", messages=messages, stream=True)
            headers = streamed.headers
            text = "".join([c.choices[0].delta.content or "" async for c in streamed.parse() if c.choices])
        else:
            plain = await client.chat.completions.with_raw_response.create(model="ha", messages=messages)
            headers = plain.headers
            text = plain.parse().choices[0].message.content or ""
    except openai.OpenAIError as error:
        return Record(start, time.monotonic(), stream, error=f"{type(error).__name__}: {error}")
    return Record(start, time.monotonic(), stream, headers.get("x-llmroute-provider"),
                  headers.get("x-llmroute-attempts"), text)


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drill_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("drill"), config=DRILL_CONFIG, delivery=None) as running:
        yield running


@pytest.fixture(scope="module")
def drill(drill_stack: Stack) -> DrillResult:
    return asyncio.run(Drill(drill_stack).run())


def phase(drill: DrillResult, name: str) -> PhaseLog:
    log = drill.phases[name]
    assert log.first and log.second and log.recovered and log.stint
    return log


NAMES = [outage.name for outage in OUTAGES]


# --- verdicts ------------------------------------------------------------------------------------

def test_no_client_sees_an_error_while_one_target_is_healthy(drill: DrillResult) -> None:
    errors = [r.error for r in drill.records if r.error is not None]
    assert errors == []
    misattributed = [r for r in drill.records if not r.served_by_named_provider]
    assert misattributed == []
    seconds = max(r.end for r in drill.records) - min(r.start for r in drill.records)
    fastest = CLIENTS * seconds / (PAUSE_S * 0.5) + CLIENTS  # each client pauses at least PAUSE_S / 2
    assert 200 <= len(drill.records) <= fastest  # the load is bounded, however fast the machine


@pytest.mark.parametrize("name", NAMES)
def test_every_outage_fails_live_streamed_and_plain_requests_over_unseen(drill: DrillResult, name: str) -> None:
    log = phase(drill, name)
    assert log.before is not None and log.first is not None and log.second is not None
    met_the_outage = log.first.opened.failures - log.before.failures
    assert met_the_outage >= (1 if log.outage.probe_calls is None else 3)  # consecutiveFailures: 3
    during = drill.between(log.injected, log.second.last.at)
    assert {r.stream for r in during} == {True, False}
    assert all(r.error is None and r.served_by_named_provider for r in during)


def test_requests_that_fail_over_report_two_attempts_streamed_or_not(drill: DrillResult) -> None:
    failed_over = [r for r in drill.records if r.attempts == "2"]
    assert len(failed_over) >= 3 * len(OUTAGES)
    assert {r.provider for r in failed_over} == {"oai-b"}
    assert {r.stream for r in failed_over} == {True, False}
    assert {r.attempts for r in drill.records} == {"1", "2"}


@pytest.mark.parametrize("name", NAMES)
def test_a_closed_primary_receives_no_request_until_its_window_ends(drill: DrillResult, name: str) -> None:
    log = phase(drill, name)
    for window in (log.first, log.second):
        assert window is not None
        assert window.last.calls == window.opened.calls, f"{name}: the simulator was called while closed"
        assert window.last.at - window.opened.at > 0.1, f"{name}: the window is too short to prove anything"


@pytest.mark.parametrize("name", NAMES)
def test_requests_while_the_primary_is_closed_take_one_attempt_on_the_fallback(
        drill: DrillResult, name: str) -> None:
    log = phase(drill, name)
    for window in (log.first, log.second):
        assert window is not None
        served = drill.during(window)
        assert len(served) >= 5
        assert {(r.provider, r.attempts) for r in served} == {("oai-b", "1")}


@pytest.mark.parametrize("name", NAMES)
def test_while_the_outage_lasts_only_the_half_open_probe_reaches_the_primary(
        drill: DrillResult, name: str) -> None:
    log = phase(drill, name)
    assert log.first is not None and log.second is not None
    reached = log.second.opened.calls - log.first.last.calls
    if log.outage.probe_calls is None:
        assert reached >= 1  # the cooldown ended for everyone; the next requests met the 429 again
    else:
        assert reached == log.outage.probe_calls


@pytest.mark.parametrize("name", NAMES)
def test_the_status_page_shows_the_primary_out_and_why(drill: DrillResult, name: str) -> None:
    target = phase(drill, name).status_target
    assert target["state"] in ("ejected", "cooling")
    assert target["last_failure"] in drill.phases[name].outage.failure_kinds
    assert target["state_seconds_left"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_after_healing_the_probe_lets_traffic_back_to_the_primary(drill: DrillResult, name: str) -> None:
    log = phase(drill, name)
    assert log.second is not None and log.recovered is not None and log.stint is not None
    assert log.recovered.at <= log.second.last.closed_until + 1.0, "recovery took longer than the ejection"
    served = drill.between(log.stint.start, log.stint.end)
    assert served
    assert {(r.provider, r.attempts) for r in served} == {("oai", "1")}


@pytest.mark.parametrize("interval", ["baseline", "final"])
def test_a_healthy_primary_serves_everything_before_and_after_the_drill(drill: DrillResult, interval: str) -> None:
    span: Interval = getattr(drill, interval)
    served = drill.between(span.start, span.end)
    assert len(served) >= HEALTHY_REQUESTS
    assert {(r.provider, r.attempts) for r in served} == {("oai", "1")}


# --- a quiet sidecar: the retry budget against the failover target -----------------------------

DEFAULT_OUTLIER_CONFIG = drill_config(consecutiveFailures=None)  # the default: 5


@pytest.fixture
def quiet_stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path, config=DEFAULT_OUTLIER_CONFIG, delivery=None) as running:
        yield running


async def _send_plain(stack: Stack, count: int, *, concurrently: bool) -> list[Record]:
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="drill", max_retries=0, timeout=10)
    try:
        if concurrently:
            return list(await asyncio.gather(*(_one_request(client, stream=False, number=n) for n in range(count))))
        return [await _one_request(client, stream=False, number=n) for n in range(count)]
    finally:
        await client.close()


def test_an_app_sending_one_request_at_a_time_never_sees_the_primarys_outage(quiet_stack: Stack) -> None:
    quiet_stack.call(lambda: quiet_stack.faults["oai"].always(Fault(FaultKind.STATUS, status=503)))
    records = asyncio.run(_send_plain(quiet_stack, 8, concurrently=False))
    assert [r.error for r in records if r.error] == []
    assert [r.attempts for r in records] == ["2"] * 5 + ["1"] * 3  # consecutiveFailures: 5, then ejected


@pytest.mark.parametrize("fault", [Fault(FaultKind.STATUS, status=503), Fault(FaultKind.HANG)],
                         ids=lambda f: f.kind.value)
def test_a_burst_on_a_quiet_sidecar_never_sees_the_primarys_outage(quiet_stack: Stack, fault: Fault) -> None:
    quiet_stack.call(lambda: quiet_stack.faults["oai"].always(fault))
    slow = Fault(FaultKind.LATENCY, seconds=0.1)  # the failovers of the burst overlap, however fast the machine
    quiet_stack.call(lambda: quiet_stack.faults["oai-b"].always(slow))
    records = asyncio.run(_send_plain(quiet_stack, 8, concurrently=True))
    assert [r.error for r in records if r.error] == []
    assert {r.provider for r in records} == {"oai-b"}
