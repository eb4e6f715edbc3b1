"""A bounded soak: mixed load for minutes while the primary provider cycles through every fault kind.

Starts on 127.0.0.1 (free ports), each its own process, what `failover.py` starts: two simulated
OpenAI providers, `primary` and `fallback` (priority 1), and `llmroute-proxy serve` with one tier
of both. An open-loop load (`--rate` requests a second, `--stream-share` of them streamed; OpenAI
SDK-shaped chat completions) runs through the sidecar for `--minutes` while the primary goes,
cycle after cycle, through

    refused -> healthy -> 503 -> healthy -> 429 with Retry-After -> healthy -> hang -> healthy
    -> reset -> healthy -> stream cut before the first token -> healthy
    -> stream cut after 3 tokens -> healthy

Every cycle is the same, so what a cycle leaves behind shows as growth from one to the next.
Per phase: requests sent, client-visible errors (any non-200, a stream without `[DONE]` or with an
error, a timeout), the sidecar's RSS and open fds at the phase's end and the RSS peak (sampled every
0.5 s), and the CPU other processes used. Per cycle: requests, errors, RSS and fds at its end.
A stream cut after tokens were relayed cannot fail over, so its errors are the fault's; a request
counts in the phase it was sent in, except one sent while the primary was healthy and still in
flight when the next fault began (that one met the fault).

Targets (issue 11): no client-visible error in a healthy phase; RSS at the end of the second cycle
at most 2 MB above the end of the first; after the load, once the clients hung up, the sidecar's
fds back to idle plus the pooled keep-alive connections to the providers within 10 s, and to
idle once those expire (aiohttp sweeps idle connections every keep-alive period, 60 s: ≤ 130 s).

Run: `.venv/bin/python bench/soak.py [--minutes 5] [--rate 50] [--stream-share 0.5] [--cycles N]
      [--json out.json]`. Warm-up and the final fd wait add up to
      2.5 minutes to `--minutes`.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from _processes import Harness, harness
from attempts import fds, rss_kb
from failover import (
    OUTAGES,
    CpuMeter,
    Load,
    Outage,
    Phase,
    Sample,
    Simulator,
    assign,
    fmt,
    percentile,
    start_sidecar,
)

SOAK_OUTAGES = (*OUTAGES, Outage("break-mid-stream", {"kind": "break_after_tokens", "tokens": 3}))
PHASES_PER_CYCLE = 2 * len(SOAK_OUTAGES)
SAMPLE_S = 0.5
POOL_KEEPALIVE_S = 60.0  # server/upstream.py: the upstream connector's keepalive_timeout
FD_GRACE_S = 10.0
POOL_WAIT_S = 2 * POOL_KEEPALIVE_S + FD_GRACE_S  # aiohttp sweeps idle connections every keepalive_timeout
RSS_GROWTH_KB = 2 * 1024


@dataclass
class Reading:
    at: float
    rss_kb: int
    fds: int
    pooled: int = 0
    """Of `fds`, keep-alive connections to the providers (counted only while settling)."""


@dataclass
class Meter:
    """The sidecar's RSS and fds, sampled in the background."""

    pid: int
    readings: list[Reading] = field(default_factory=list)

    def now(self) -> Reading:
        reading = Reading(time.monotonic(), rss_kb(self.pid), fds(self.pid))
        self.readings.append(reading)
        return reading

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.now()
            await asyncio.sleep(SAMPLE_S)

    def peak_kb(self, start: float, end: float) -> int | None:
        return max((r.rss_kb for r in self.readings if start <= r.at <= end), default=None)


@dataclass
class SoakPhase:
    cycle: int
    phase: Phase
    end_reading: Reading
    peak_kb: int | None = None
    samples: list[Sample] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.phase.healed_at is None


async def run_cycle(cycle: int, primary: Simulator, meter: Meter, cpu: CpuMeter, phase_s: float,
                    phases: list[SoakPhase]) -> None:
    for outage in SOAK_OUTAGES:
        start = cpu.reading()
        if outage.fault is None:
            primary.kill()
        else:
            await primary.fault(outage.fault)
        await asyncio.sleep(phase_s)
        end = cpu.reading()
        ended = meter.now()
        if outage.fault is None:
            await primary.start()
        else:
            await primary.heal()
        phases.append(SoakPhase(cycle, Phase(outage.name, start[0], end[0], healed_at=time.monotonic(),
                                             others_cpu_percent=cpu.others_percent(start, end)), ended))
        start = cpu.reading()
        await asyncio.sleep(phase_s)
        end = cpu.reading()
        phases.append(SoakPhase(cycle, Phase("healthy", start[0], end[0],
                                             others_cpu_percent=cpu.others_percent(start, end)), meter.now()))
        print(f"  cycle {cycle}: {outage.name} + healthy done, RSS {ended.rss_kb / 1024:.1f} MB", flush=True)


def pooled_connections(pid: int, ports: Sequence[int]) -> int:
    """The process's established TCP connections to `ports` (`ss`; 0 without it)."""
    try:
        listing = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True,
                                 timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    peers = {f"127.0.0.1:{port}" for port in ports}
    return sum(1 for line in listing.splitlines()
               if f"pid={pid}," in line and len(line.split()) >= 4 and line.split()[3] in peers)


@dataclass
class Settling:
    """The sidecar's fds once the clients hung up: first all but the pool, then the pool too."""

    pool_only: Reading | None = None
    pool_only_in_s: float | None = None
    idle_in_s: float | None = None
    last: Reading | None = None


async def settle_fds(meter: Meter, idle: int, ports: Sequence[int]) -> Settling:
    settling, start = Settling(), time.monotonic()
    while True:
        reading = meter.now()
        reading.pooled = pooled_connections(meter.pid, ports)
        settling.last = reading
        elapsed = reading.at - start
        if settling.pool_only is None and reading.fds - reading.pooled <= idle:
            settling.pool_only, settling.pool_only_in_s = reading, elapsed
        if reading.fds <= idle:
            settling.idle_in_s = elapsed
            return settling
        if elapsed >= POOL_WAIT_S:
            return settling
        await asyncio.sleep(1.0)


@dataclass
class Outcome:
    phases: list[SoakPhase]
    outside: list[Sample]
    idle: Reading
    after_load: Reading
    settling: Settling
    phase_s: float
    log_problems: int


async def run(args: argparse.Namespace, procs: Harness, cycles: int, phase_s: float) -> Outcome:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as control:
        primary, fallback = (Simulator(procs, control, name) for name in ("primary", "fallback"))
        await asyncio.gather(primary.start(), fallback.start())
        async with aiohttp.ClientSession(timeout=timeout) as ready:  # closed: its connection is not idle state
            base, _ = await start_sidecar(procs, ready, args, primary.url, fallback.url)
        pid = procs.pids()[-1]
        meter, cpu = Meter(pid), CpuMeter(procs)
        await asyncio.sleep(1.0)
        idle = meter.now()
        print(f"sidecar pid {pid}: idle RSS {idle.rss_kb / 1024:.1f} MB, {idle.fds} fds; "
              f"{cycles} cycles of {PHASES_PER_CYCLE} phases of {phase_s:.1f} s", flush=True)
        phases: list[SoakPhase] = []
        stop = asyncio.Event()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            load = Load(session, base + "/v1/chat/completions", args.rate, args.stream_share)
            workers = [asyncio.create_task(load.run()), asyncio.create_task(meter.run(stop))]
            try:
                await asyncio.sleep(3.0)  # warm-up: pools, arenas; not in any phase
                for cycle in range(1, cycles + 1):
                    await run_cycle(cycle, primary, meter, cpu, phase_s, phases)
            finally:
                stop.set()
                await load.stop()
                await asyncio.gather(*workers)
            after_load = meter.now()
        settling = await settle_fds(meter, idle.fds, (primary.port, fallback.port))
    members, outside = assign([p.phase for p in phases], load.samples)
    for soak_phase, mine in zip(phases, members, strict=True):
        soak_phase.samples = mine
        soak_phase.peak_kb = meter.peak_kb(soak_phase.phase.start, soak_phase.end_reading.at)
    log = procs.workdir / "llmroute.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    problems = text.count("Traceback") + text.count(" ERROR ")
    return Outcome(phases, outside, idle, after_load, settling, phase_s, problems)


# --- report -------------------------------------------------------------------------------------------

def errors(samples: Sequence[Sample]) -> int:
    return sum(1 for s in samples if not s.ok)


def phase_table(phases: Sequence[SoakPhase]) -> str:
    head = (f"{'cycle':>5}  {'phase':<20}{'sent':>7}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'RSS MB':>9}{'peak MB':>9}{'fds':>6}{'others %':>10}")
    lines = [head]
    for p in phases:
        ok = [s.latency_ms for s in p.samples if s.ok]
        lines.append(f"{p.cycle:>5}  {p.phase.name:<20}{len(p.samples):>7}{errors(p.samples):>8}"
                     f"{fmt(percentile(ok, 50)):>9}{fmt(percentile(ok, 99)):>9}"
                     f"{p.end_reading.rss_kb / 1024:>9.1f}{fmt(None if p.peak_kb is None else p.peak_kb / 1024):>9}"
                     f"{p.end_reading.fds:>6}{fmt(p.phase.others_cpu_percent, 0):>10}")
    return "\n".join(lines)


def cycle_rows(phases: Sequence[SoakPhase]) -> list[dict[str, Any]]:
    rows = []
    for cycle in sorted({p.cycle for p in phases}):
        mine = [p for p in phases if p.cycle == cycle]
        samples = [s for p in mine for s in p.samples]
        rows.append({
            "cycle": cycle, "sent": len(samples), "errors": errors(samples),
            "healthy_errors": sum(errors(p.samples) for p in mine if p.healthy),
            "rss_end_kb": mine[-1].end_reading.rss_kb, "fds_end": mine[-1].end_reading.fds,
            "peak_kb": max((p.peak_kb or 0) for p in mine),
            "others_pct": sum(p.phase.others_cpu_percent or 0.0 for p in mine) / len(mine),
        })
    return rows


def cycle_table(rows: Sequence[dict[str, Any]], idle: Reading) -> str:
    lines = [f"{'cycle':>5}{'sent':>8}{'errors':>8}{'healthy errors':>16}{'RSS end MB':>12}{'Δ kB':>8}"
             f"{'peak MB':>9}{'fds end':>9}{'others %':>10}"]
    previous = idle.rss_kb
    for row in rows:
        lines.append(f"{row['cycle']:>5}{row['sent']:>8}{row['errors']:>8}{row['healthy_errors']:>16}"
                     f"{row['rss_end_kb'] / 1024:>12.1f}{row['rss_end_kb'] - previous:>8}{row['peak_kb'] / 1024:>9.1f}"
                     f"{row['fds_end']:>9}{row['others_pct']:>10.0f}")
        previous = row["rss_end_kb"]
    return "\n".join(lines)


def verdicts(outcome: Outcome, rows: Sequence[dict[str, Any]]) -> str:
    healthy = sum(errors(p.samples) for p in outcome.phases if p.healthy)
    lines = ["Targets (issue 11):",
             f"  client-visible errors while the primary was healthy: {healthy} (goal 0) "
             f"{'met' if healthy == 0 else 'MISSED'}"]
    if len(rows) >= 2:
        growth = rows[1]["rss_end_kb"] - rows[0]["rss_end_kb"]
        lines.append(f"  RSS growth over cycle 2 vs cycle 1: {growth} kB (goal ≤ {RSS_GROWTH_KB} kB) "
                     f"{'met' if growth <= RSS_GROWTH_KB else 'MISSED'}")
        if len(rows) > 2:
            span = rows[-1]["rss_end_kb"] - rows[0]["rss_end_kb"]
            lines.append(f"  (cycle {len(rows)} vs cycle 1: {span} kB over {len(rows) - 1} cycles, "
                         f"{span / (len(rows) - 1):.0f} kB per cycle)")
    s = outcome.settling
    lines.append(f"  fds: idle {outcome.idle.fds}, {outcome.after_load.fds} at the end of the load; "
                 + (f"idle + {s.pool_only.pooled} pooled provider connections {s.pool_only_in_s:.0f} s after the "
                    f"clients hung up (goal ≤ {FD_GRACE_S:g} s) "
                    f"{'met' if (s.pool_only_in_s or 0) <= FD_GRACE_S else 'MISSED'}"
                    if s.pool_only is not None and s.pool_only_in_s is not None
                    else "never down to idle + the pool MISSED"))
    lines.append("  fds back to idle once the pool's keep-alive expired: "
                 + (f"after {s.idle_in_s:.0f} s (goal ≤ {POOL_WAIT_S:g} s) met" if s.idle_in_s is not None
                    else f"not within {POOL_WAIT_S:g} s ({s.last.fds if s.last else '?'} fds) MISSED"))
    return "\n".join(lines)


def report(args: argparse.Namespace, outcome: Outcome, pinned: str) -> str:
    rows = cycle_rows(outcome.phases)
    total = sum(len(p.samples) for p in outcome.phases) + len(outcome.outside)
    fault_errors = sum(errors(p.samples) for p in outcome.phases if not p.healthy)
    examples = sorted({s.error or "" for p in outcome.phases for s in p.samples if not s.ok})[:4]
    return "\n".join([
        f"\nsoak: {args.rate:g} req/s open loop, {args.stream_share:.0%} streamed, {len(rows)} cycles of "
        f"{PHASES_PER_CYCLE} phases of {outcome.phase_s:.1f} s; {pinned}\n",
        phase_table(outcome.phases), "",
        cycle_table(rows, outcome.idle), "",
        f"requests: {total} ({len(outcome.outside)} outside the phases: warm-up, heals, with "
        f"{errors(outcome.outside)} errors); client-visible errors during faults: {fault_errors}",
        *(f"  error: {e}" for e in examples),
        f"sidecar log: {outcome.log_problems} ERROR lines or tracebacks",
        f"RSS: idle {outcome.idle.rss_kb / 1024:.1f} MB, after {outcome.after_load.rss_kb / 1024:.1f} MB, peak "
        f"{max((r.rss_kb for r in [outcome.idle, *(p.end_reading for p in outcome.phases)]), default=0) / 1024:.1f}"
        f" MB at phase ends, {max((p.peak_kb or 0) for p in outcome.phases) / 1024:.1f} MB sampled",
        "others %: CPU used by processes outside this bench (100 = one core); above ~10 the machine was shared.",
        "", verdicts(outcome, rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the faulted load (default 5)")
    parser.add_argument("--cycles", type=int, help="cycles (default: phases of ~20 s, at least 2 cycles)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (open loop, default 50)")
    parser.add_argument("--stream-share", type=float, default=0.5, help="share of streamed requests")
    parser.add_argument("--per-try-timeout", default="1s", help="perTryTimeout, firstByteTimeout and idleTimeout")
    parser.add_argument("--consecutive-failures", type=int, default=5, help="outlierDetection.consecutiveFailures")
    parser.add_argument("--base-ejection", default="1s", help="outlierDetection.baseEjection")
    parser.add_argument("--max-ejection", default="2s", help="outlierDetection.maxEjection")
    parser.add_argument("--json", type=Path, help="also write the per-phase and per-cycle figures here")
    args = parser.parse_args()
    seconds = args.minutes * 60
    cycles = args.cycles or max(2, int(seconds // (PHASES_PER_CYCLE * 20)))
    phase_s = seconds / (cycles * PHASES_PER_CYCLE)
    with harness(prefix="llmroute-soak-") as procs:
        outcome = asyncio.run(run(args, procs, cycles, phase_s))
        pinned = "sidecar pinned to core 1, load and simulators to core 0" if procs.pin else "no CPU pinning"
    print(report(args, outcome, pinned))
    if args.json:
        args.json.write_bytes(orjson.dumps({
            "cycles": cycle_rows(outcome.phases),
            "phases": [{"cycle": p.cycle, "phase": p.phase.name, "sent": len(p.samples), "errors": errors(p.samples),
                        "rss_kb": p.end_reading.rss_kb, "peak_kb": p.peak_kb, "fds": p.end_reading.fds,
                        "others_pct": p.phase.others_cpu_percent} for p in outcome.phases],
            "idle": vars(outcome.idle), "after_load": vars(outcome.after_load),
            "pool_only_in_s": outcome.settling.pool_only_in_s, "idle_in_s": outcome.settling.idle_in_s,
        }, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this bench started has been stopped")
