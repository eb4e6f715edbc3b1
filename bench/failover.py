"""What a failing primary provider costs the application behind an llmroute sidecar, phase by phase.

Starts on 127.0.0.1 (free ports), each its own process: two simulated OpenAI providers
(`llmroute_proxy.sim.server.main`), `primary` and `fallback`, and `llmroute-proxy
serve` with one tier of two targets, the fallback at priority 1. An open-loop load (a fixed rate,
half the requests streamed) runs through the sidecar while the primary goes through phases:

    healthy (baseline) -> refuses connections -> 503 -> 429 with Retry-After -> hangs -> resets
    -> streams cut before the first token -> recovered

Each outage starts from a healthy primary: it is applied for `--phase-seconds`, healed, and the
load goes on until the primary serves a request again (that stretch is not in the table). Per
phase the table gives the requests sent and served, client-visible errors (any non-200, a stream
without `[DONE]` or with an in-band error, a timeout), p50/p99 latency of every request and of the
requests sent after the primary was ejected (`+p50`/`+p99`: minus the baseline phase of the same
run, the added latency once the breaker is open; target ≈ 0), the requests sent before the
ejection and their latency (the price of passive detection), the requests that reached the
primary, how long until the sidecar closed it (`/status` polled every 20 ms), and the time to
recover: from the primary healing (for `refused`, its process listening again) to the start of the
first request it served again. A stream's latency runs to its last byte.

`--provider-latency` makes every healthy answer take that long, as a real model would: failovers
then overlap, which is what the sidecar's retry budget (at least 3 concurrent, else 20 % of the
last 10 s of requests) is sized against.

Run: `.venv/bin/python bench/failover.py [--rate 100] [--phase-seconds 3] [--base-ejection 1s]
      [--per-try-timeout 1s] [--provider-latency 0] [--quick] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from _processes import Harness, free_port, harness, llmroute_command

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LOAD_CORE, PROXY_CORE = 0, 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STATUS_POLL_S = 0.02
RECOVERY_LIMIT_S = 20.0
SETTLE_S = 0.5
CLOSED_STATES = frozenset({"ejected", "cooling"})
SIM_MAIN = "from llmroute_proxy.sim.server import main; main()"

SIDECAR_CONFIG = """\
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {{name: primary}}
spec:
  type: openai
  endpoints: [{{region: local, url: "{primary}/v1"}}]
  credentials: {{env: BENCH_API_KEY}}
  models: [{{name: gpt-4o-mini, pricing: {{inputPerMTok: 0.15, outputPerMTok: 0.6}}}}]
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {{name: fallback}}
spec:
  type: openai-compatible
  endpoints: [{{region: local, url: "{fallback}/v1"}}]
  credentials: {{env: BENCH_API_KEY}}
  models: [{{name: gpt-4o-mini, pricing: {{inputPerMTok: 0.15, outputPerMTok: 0.6}}}}]
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {{name: bench}}
spec:
  tiers:
    ha:
      targets:
        - {{provider: primary, model: gpt-4o-mini}}
        - {{provider: fallback, model: gpt-4o-mini, priority: 1}}
  defaultTier: ha
  fallback: {{maxAttempts: 3, perTryTimeout: {per_try}, firstByteTimeout: {per_try}, idleTimeout: {per_try},
             overallTimeout: 30s}}
  outlierDetection: {{consecutiveFailures: {consecutive}, baseEjection: {base_ejection},
                      maxEjection: {max_ejection}}}
"""


# --- processes ------------------------------------------------------------------------------------

@contextlib.contextmanager
def processes() -> Iterator[Harness]:
    with harness(prefix="llmroute-failover-") as procs:
        yield procs


async def wait_ready(procs: Harness, name: str, proc: subprocess.Popen[bytes],
                     ready: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited ({proc.returncode})\n{procs.log_tail(name)}")
        if await ready():
            return
        await asyncio.sleep(0.02)
    raise SystemExit(f"{name} not ready within {timeout_s:g}s\n{procs.log_tail(name)}")


async def answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


class Simulator:
    """One simulated provider process, restartable on its own port."""

    def __init__(self, procs: Harness, session: aiohttp.ClientSession, name: str,
                 latency_s: float = 0.0) -> None:
        self.procs = procs
        self.session = session
        self.name = name
        self.normal = {"kind": "latency", "seconds": latency_s} if latency_s > 0 else None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = self.procs.spawn(self.name, LOAD_CORE, [PYTHON, "-c", SIM_MAIN, "openai",
                                                            "--port", str(self.port)])
        await wait_ready(self.procs, self.name, self.proc, lambda: answers(self.session, self.url + "/_sim/stats"))
        await self.heal()

    def kill(self) -> None:
        """Down hard: the port refuses connections and open ones are reset."""
        if self.proc is not None:
            self.procs.stop(self.proc, signal.SIGKILL)
            self.proc = None

    async def fault(self, fault: dict[str, Any]) -> None:
        async with self.session.post(self.url + "/_sim/faults", json={"mode": "always", "fault": fault}) as response:
            response.raise_for_status()

    async def heal(self) -> None:
        """Back to normal: no fault, or just the provider's usual latency."""
        if self.normal is not None:
            await self.fault(self.normal)
            return
        async with self.session.delete(self.url + "/_sim/faults") as response:
            response.raise_for_status()

    async def calls(self) -> int | None:
        if self.proc is None:
            return None
        async with self.session.get(self.url + "/_sim/stats") as response:
            total: int = (await response.json())["total"]
            return total


class CpuMeter:
    """CPU the machine spent outside this bench's processes: a shared machine makes latencies suspect."""

    def __init__(self, procs: Harness) -> None:
        self.procs = procs

    def reading(self) -> tuple[float, float, float]:
        """(monotonic time, machine busy ticks, ticks of this bench's processes)."""
        ours = sum(_process_ticks(pid) for pid in (os.getpid(), *self.procs.pids()))
        return time.monotonic(), _machine_busy_ticks(), ours

    @staticmethod
    def others_percent(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
        elapsed = end[0] - start[0]
        foreign = (end[1] - start[1]) - (end[2] - start[2])
        return max(0.0, foreign / CLOCK_TICKS / elapsed * 100) if elapsed > 0 else 0.0


def _machine_busy_ticks() -> float:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return float(sum(fields[:8]) - idle)


def _process_ticks(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return float(int(fields[11]) + int(fields[12]))


# --- the load ---------------------------------------------------------------------------------------

@dataclass(slots=True)
class Sample:
    start: float
    end: float
    stream: bool
    ok: bool
    provider: str | None
    attempts: int = 0
    error: str | None = None

    @property
    def latency_ms(self) -> float:
        return (self.end - self.start) * 1000


async def one_request(session: aiohttp.ClientSession, url: str, number: int, stream: bool) -> Sample:
    body: dict[str, Any] = {"model": "ha", "messages": [{"role": "user", "content": f"failover bench {number}"}]}
    if stream:
        body["stream"] = True
    start = time.monotonic()
    try:
        async with session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as response:
            data = await response.read()
            provider = response.headers.get("x-llmroute-provider")
            attempts = int(response.headers.get("x-llmroute-attempts") or 0)
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        return Sample(start, time.monotonic(), stream, False, None, error=f"{type(error).__name__}: {error}"[:200])
    end = time.monotonic()
    problem = _problem(status, data, stream)
    return Sample(start, end, stream, problem is None, provider, attempts, problem)


def _problem(status: int, data: bytes, stream: bool) -> str | None:
    if status != 200:
        return f"HTTP {status}: {data[:200]!r}"
    if not stream:
        return None if b'"choices"' in data else f"no choices: {data[:200]!r}"
    if b"data: [DONE]" not in data:
        return f"stream without [DONE]: {data[-200:]!r}"
    return None


class Load:
    """An open-loop load: one request every 1/rate s whatever the answers do (no coordinated omission)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, rate: float, stream_share: float) -> None:
        self.session = session
        self.url = url
        self.interval = 1.0 / rate
        self.stream_every = round(1 / stream_share) if stream_share > 0 else 0
        self.samples: list[Sample] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        number = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            stream = self.stream_every > 0 and number % self.stream_every == 0
            task = asyncio.create_task(self._record(number, stream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            number += 1
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _record(self, number: int, stream: bool) -> None:
        self.samples.append(await one_request(self.session, self.url, number, stream))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*list(self._tasks))

    def served_by(self, provider: str, since: float) -> Sample | None:
        return next((s for s in self.samples if s.ok and s.provider == provider and s.start >= since), None)


class StatusWatch:
    """The primary's circuit state over time, from the sidecar's `/status`."""

    def __init__(self, session: aiohttp.ClientSession, admin: str) -> None:
        self.session = session
        self.url = admin + "/status"
        self.seen: list[tuple[float, str]] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session.get(self.url) as response:
                    document = await response.json()
                state = next(t["state"] for t in document["targets"] if t["provider"] == "primary")
                self.seen.append((time.monotonic(), state))
            await asyncio.sleep(STATUS_POLL_S)

    def stop(self) -> None:
        self._stop.set()

    def first_closed(self, start: float, end: float) -> float | None:
        return next((t for t, state in self.seen if start <= t < end and state in CLOSED_STATES), None)


# --- phases -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outage:
    name: str
    fault: dict[str, Any] | None  # None: the process is killed (refused connections)


OUTAGES = (
    Outage("refused", None),
    Outage("503", {"kind": "status", "status": 503}),
    Outage("429+Retry-After", {"kind": "status", "status": 429, "retry_after": 1}),
    Outage("hang", {"kind": "hang"}),
    Outage("reset", {"kind": "reset"}),
    Outage("break-before-token", {"kind": "break_before_first_token"}),
)


@dataclass
class Phase:
    name: str
    start: float
    end: float
    closed_at: float | None = None
    healed_at: float | None = None
    recovered_at: float | None = None
    primary_calls: int | None = None
    others_cpu_percent: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    load: Load
    watch: StatusWatch
    primary: Simulator
    cpu: CpuMeter
    phase_s: float
    phases: list[Phase] = field(default_factory=list)

    async def healthy(self, name: str) -> None:
        cpu = self.cpu.reading()
        await asyncio.sleep(self.phase_s)
        self.phases.append(Phase(name, cpu[0], time.monotonic(),
                                 others_cpu_percent=self.cpu.others_percent(cpu, self.cpu.reading())))

    async def outage(self, outage: Outage) -> None:
        calls_before = await self.primary.calls()
        cpu = self.cpu.reading()
        start = cpu[0]
        if outage.fault is None:
            self.primary.kill()
        else:
            await self.primary.fault(outage.fault)
        await asyncio.sleep(self.phase_s)
        cpu_end = self.cpu.reading()
        end = cpu_end[0]
        calls_after = await self.primary.calls()
        if outage.fault is None:
            await self.primary.start()
        else:
            await self.primary.heal()
        healed = time.monotonic()
        phase = Phase(outage.name, start, end, healed_at=healed,
                      primary_calls=None if calls_after is None or calls_before is None
                      else calls_after - calls_before,
                      others_cpu_percent=self.cpu.others_percent(cpu, cpu_end))
        phase.closed_at = self.watch.first_closed(start, end)
        self.phases.append(phase)
        phase.recovered_at = await self._first_served_by_primary(healed)
        await asyncio.sleep(SETTLE_S)

    async def _first_served_by_primary(self, since: float) -> float | None:
        deadline = time.monotonic() + RECOVERY_LIMIT_S
        while time.monotonic() < deadline:
            sample = self.load.served_by("primary", since)
            if sample is not None:
                return sample.start
            await asyncio.sleep(0.01)
        return None


# --- figures ------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def assign(phases: Sequence[Phase], samples: Sequence[Sample]) -> tuple[list[list[Sample]], list[Sample]]:
    """Each request goes to the phase it was sent in, except that one sent while the primary was healthy
    but still in flight when the next outage began met that outage, and counts there. The rest (warm-up,
    recovery stretches) is returned apart."""
    members: list[list[Sample]] = [[] for _ in phases]
    outside: list[Sample] = []
    for sample in samples:
        index = next((i for i, p in enumerate(phases) if p.start <= sample.start < p.end), None)
        if index is None:
            outside.append(sample)
            continue
        follows = index + 1 < len(phases) and phases[index].healed_at is None and sample.end >= phases[index].end
        members[index + 1 if follows else index].append(sample)
    return members, outside


def summarise(phase: Phase, mine: Sequence[Sample], baseline: dict[str, Any] | None) -> dict[str, Any]:
    ok = [s.latency_ms for s in mine if s.ok]
    closed = phase.closed_at
    before = [s.latency_ms for s in mine if closed is None or s.start < closed] if phase.healed_at else []
    after = [s.latency_ms for s in mine if s.ok and closed is not None and s.start >= closed]
    steady = after if phase.healed_at else ok
    figures: dict[str, Any] = {
        "sent": len(mine),
        "served": len(ok),
        "errors": len(mine) - len(ok),
        "failed_over": sum(1 for s in mine if s.attempts > 1),
        "error_examples": sorted({s.error or "" for s in mine if not s.ok})[:3],
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
        "steady_p50_ms": percentile(steady, 50),
        "steady_p99_ms": percentile(steady, 99),
        "to_close_ms": None if closed is None else (closed - phase.start) * 1000,
        "before_close": len(before) if phase.healed_at else None,
        "before_close_p50_ms": percentile(before, 50),
        "before_close_max_ms": max(before) if before else None,
        "reached_primary": phase.primary_calls,
        "recover_ms": None if phase.recovered_at is None or phase.healed_at is None
        else (phase.recovered_at - phase.healed_at) * 1000,
        "others_cpu_pct": phase.others_cpu_percent,
    }
    if baseline is not None:
        for key in ("p50_ms", "p99_ms"):
            value, base = figures[f"steady_{key}"], baseline[key]
            figures[f"added_{key}"] = None if value is None or base is None else value - base
    return figures


def fmt(value: float | int | None, digits: int = 1, sign: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


COLUMNS: tuple[tuple[str, str, int, bool], ...] = (  # key, header, digits, signed
    ("sent", "sent", 0, False),
    ("served", "served", 0, False),
    ("errors", "errors", 0, False),
    ("failed_over", "failed over", 0, False),
    ("p50_ms", "p50 ms", 1, False),
    ("p99_ms", "p99 ms", 1, False),
    ("steady_p50_ms", "ejected p50", 1, False),
    ("steady_p99_ms", "ejected p99", 1, False),
    ("added_p50_ms", "+p50 ms", 1, True),
    ("added_p99_ms", "+p99 ms", 1, True),
    ("to_close_ms", "to eject ms", 0, False),
    ("before_close", "pre-eject n", 0, False),
    ("before_close_p50_ms", "pre p50 ms", 1, False),
    ("before_close_max_ms", "pre max ms", 1, False),
    ("reached_primary", "hit primary", 0, False),
    ("recover_ms", "recover ms", 0, False),
    ("others_cpu_pct", "others %", 0, False),
)


def table(phases: Sequence[Phase]) -> str:
    width = max(len(p.name) for p in phases) + 2
    lines = [f"{'phase':<{width}}" + "".join(f"{header:>13}" for _, header, _, _ in COLUMNS)]
    for phase in phases:
        row = f"{phase.name:<{width}}"
        for key, _, digits, signed in COLUMNS:
            row += f"{fmt(phase.figures.get(key), digits, signed):>13}"
        lines.append(row)
    return "\n".join(lines)


LEGEND = """
A request counts in the phase it was sent in; one sent while the primary was healthy but still in flight when
the next outage began met that outage, and counts there. failed over: answered after more than one attempt
(x-llmroute-attempts). p50/p99: every request of the phase that was served. ejected p50/p99: those sent after
/status first showed the primary ejected or cooling (healthy phases: all of them); +p50/+p99: that minus the
baseline phase, the latency the dead target still adds once the breaker is open (target: ~0). pre-eject:
requests sent before that moment, and their latency (each paid for meeting the failing primary). hit primary:
requests that reached the primary's simulator during the outage (the detection ones, then one half-open probe
per ejection). recover: from the primary healed to the start of the first request it served again (mostly
the rest of its ejection). Stream latency runs to the last byte. others %: CPU used during the phase by
processes outside this bench (100 = one core); above ~10 the machine was shared and its latencies are suspect."""


# --- main ---------------------------------------------------------------------------------------------

async def run(args: argparse.Namespace, procs: Harness) -> tuple[list[Phase], list[Sample]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        primary, fallback = (Simulator(procs, session, name, args.provider_latency) for name in ("primary", "fallback"))
        await asyncio.gather(primary.start(), fallback.start())
        base, admin = await start_sidecar(procs, session, args, primary.url, fallback.url)
        load = Load(session, base + "/v1/chat/completions", args.rate, args.stream_share)
        watch = StatusWatch(session, admin)
        bench = Bench(load, watch, primary, CpuMeter(procs), args.phase_seconds)
        workers = [asyncio.create_task(load.run()), asyncio.create_task(watch.run())]
        try:
            await asyncio.sleep(1.0 + 2 * args.provider_latency)  # warm-up (connection pools), not measured
            await bench.healthy("healthy (baseline)")
            for outage in OUTAGES:
                await bench.outage(outage)
            await bench.healthy("recovered")
        finally:
            watch.stop()
            await load.stop()
            await asyncio.gather(*workers)
    members, outside = assign(bench.phases, load.samples)
    baseline = summarise(bench.phases[0], members[0], None)
    for phase, mine in zip(bench.phases, members, strict=True):
        phase.figures = summarise(phase, mine, baseline)
    return bench.phases, outside


async def start_sidecar(procs: Harness, session: aiohttp.ClientSession, args: argparse.Namespace,
                        primary: str, fallback: str) -> tuple[str, str]:
    config = procs.workdir / "llmroute.yaml"
    config.write_text(SIDECAR_CONFIG.format(
        primary=primary, fallback=fallback, per_try=args.per_try_timeout, consecutive=args.consecutive_failures,
        base_ejection=args.base_ejection, max_ejection=args.max_ejection))
    port, admin_port = free_port(), free_port()
    proc = procs.spawn("llmroute", PROXY_CORE, [
        *llmroute_command(), "serve", "--config", str(config), "--port", str(port),
        "--admin-port", str(admin_port), "--log-level", "WARNING"], env={"BENCH_API_KEY": "sk-bench"})
    base, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    await wait_ready(procs, "llmroute", proc, lambda: answers(session, admin + "/readyz"))
    return base, admin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (open loop)")
    parser.add_argument("--stream-share", type=float, default=0.5, help="share of streamed requests")
    parser.add_argument("--phase-seconds", type=float, default=3.0, help="length of each phase")
    parser.add_argument("--per-try-timeout", default="1s", help="perTryTimeout, firstByteTimeout and idleTimeout")
    parser.add_argument("--consecutive-failures", type=int, default=5, help="outlierDetection.consecutiveFailures")
    parser.add_argument("--base-ejection", default="1s", help="outlierDetection.baseEjection (default 30s in a "
                                                              "cluster; short here to keep the run short)")
    parser.add_argument("--max-ejection", default="2s", help="outlierDetection.maxEjection")
    parser.add_argument("--provider-latency", type=float, default=0.0,
                        help="seconds every healthy answer takes (0: as fast as the simulators go)")
    parser.add_argument("--quick", action="store_true", help="1.5 s phases at 50 req/s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.phase_seconds, args.rate = 1.5, 50.0
    with processes() as procs:
        phases, outside = asyncio.run(run(args, procs))
        pinned = "sidecar pinned to core 1, load and simulators to core 0" if procs.pin else "no CPU pinning"
    print(f"failover drill: {args.rate:g} req/s open loop, {args.stream_share:.0%} streamed, "
          f"{args.phase_seconds:g} s phases, providers answer in {args.provider_latency * 1000:g} ms + their own time; "
          f"consecutiveFailures {args.consecutive_failures}, baseEjection "
          f"{args.base_ejection}, maxEjection {args.max_ejection}, perTryTimeout {args.per_try_timeout}; {pinned}\n")
    print(table(phases))
    print(LEGEND)
    failed = [s for s in outside if not s.ok]
    print(f"\noutside the phases (warm-up, recovery stretches): {len(outside)} sent, {len(failed)} errors")
    for phase in phases:
        for example in phase.figures["error_examples"]:
            print(f"  {phase.name}: error: {example}")
    for example in sorted({s.error or "" for s in failed})[:3]:
        print(f"  outside the phases: error: {example}")
    if args.json:
        args.json.write_bytes(orjson.dumps([asdict(p) for p in phases], option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
