"""The sidecar's memory and start-up: RSS idle, RSS with 128 streams open, start to ready.

Starts on 127.0.0.1 (free ports) a fake OpenAI upstream whose streams last about a second
(`--chunks` chunks `--chunk-delay-ms` apart), the bare aiohttp proxy and `llmroute-proxy serve`.

- start to ready: from launching `llmroute-proxy serve` to `/readyz` answering 200 (polled
  every 5 ms), `--starts` times, median and worst;
- idle RSS: 2 s after ready, before any request;
- RSS at 128 concurrent streams: `_load.py` keeps 128 streaming requests open for
  `--seconds` while RSS is sampled every 50 ms (the peak, and VmHWM); llmroute's own
  `/status` in-flight count is sampled at the same time, to show the 128 were really open;
- RSS after: 2 s after the load stopped (what the process keeps).

The same load against the bare proxy gives its figures beside llmroute's. Everything started
here is stopped on exit, Ctrl-C or error.

Run: `.venv/bin/python bench/memory.py [--seconds 10] [--starts 3] [--streams 128]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import orjson

from overhead import (
    HERE,
    LOAD_CORE,
    PYTHON,
    Harness,
    harness,
    rss_mb,
    start_bare,
    start_llmroute,
    start_upstream,
)

READY_MB, LOADED_MB, READY_S = 60.0, 100.0, 1.0  # design.md targets


@dataclass
class Sampler:
    """Samples a process's RSS (and optionally llmroute's in-flight count) in a thread."""

    pid: int
    admin: str | None = None
    peak_mb: float = 0.0
    peak_in_flight: int = 0
    in_flight: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        ticks = 0
        while not self._stop.wait(0.05):
            try:
                self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            except OSError:
                return
            ticks += 1
            if self.admin and ticks % 4 == 0:
                count = _in_flight(self.admin)
                if count is not None:
                    self.in_flight.append(count)
                    self.peak_in_flight = max(self.peak_in_flight, count)


def _in_flight(admin: str) -> int | None:
    try:
        with urllib.request.urlopen(admin + "/status", timeout=1) as response:
            value = orjson.loads(response.read()).get("in_flight")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) else None


@dataclass
class Figures:
    idle_mb: float
    peak_mb: float
    hwm_mb: float
    after_mb: float
    streams_ok: int
    streams_failed: int
    in_flight_median: float | None = None
    in_flight_peak: int | None = None


def hold_streams(h: Harness, pid: int, base: str, streams: int, seconds: float, admin: str | None) -> Figures:
    time.sleep(2.0)
    idle = rss_mb(pid)
    command = h.pinned(LOAD_CORE, [PYTHON, str(HERE / "_load.py"), "--url", base + "/v1/chat/completions",
                                   "-c", str(streams), "--seconds", str(seconds), "--warmup", "0", "--stream"])
    with Sampler(pid, admin) as sampler:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    try:
        load = orjson.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, orjson.JSONDecodeError):
        raise SystemExit(f"load generator failed:\n{done.stdout[-500:]}{done.stderr[-1500:]}") from None
    time.sleep(2.0)
    return Figures(idle, sampler.peak_mb, rss_mb(pid, "VmHWM"), rss_mb(pid), load["ok"], load["errors"],
                   statistics.median(sampler.in_flight) if sampler.in_flight else None,
                   sampler.peak_in_flight if admin else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the streams are held (default 10)")
    parser.add_argument("--starts", type=int, default=3, help="how many cold starts to time (default 3)")
    parser.add_argument("--streams", type=int, default=128, help="concurrent streams (default 128)")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay-ms", type=float, default=50.0, help="gap between chunks (default 50)")
    args = parser.parse_args()
    with harness() as h:
        upstream = start_upstream(h, args.chunks, args.chunk_delay_ms)
        ready = []
        for i in range(max(1, args.starts)):
            sidecar = start_llmroute(h, upstream, f"llmroute-start{i}")
            ready.append(sidecar.ready_s)
            if i < args.starts - 1:
                h.stop(sidecar.proc)
        print(f"start to ready: {', '.join(f'{s * 1000:.0f} ms' for s in ready)}", flush=True)
        print(f"holding {args.streams} streams for {args.seconds:g} s on llmroute…", flush=True)
        ours = hold_streams(h, sidecar.proc.pid, sidecar.base, args.streams, args.seconds, sidecar.admin)
        bare_base, bare = start_bare(h, upstream)
        print(f"holding {args.streams} streams for {args.seconds:g} s on the bare proxy…", flush=True)
        theirs = hold_streams(h, bare.pid, bare_base, args.streams, args.seconds, None)
    print(report(args, ready, ours, theirs))


def report(args: argparse.Namespace, ready: list[float], ours: Figures, bare: Figures) -> str:
    def row(label: str, a: float, b: float) -> str:
        return f"  {label:<34}{a:>10.1f}{b:>10.1f}{a / b if b else float('nan'):>10.2f}"

    stream_s = args.chunks * args.chunk_delay_ms / 1000.0
    lines = [
        f"\nRSS in MB ({args.streams} concurrent streams of {args.chunks} chunks {args.chunk_delay_ms:g} ms apart,"
        f" ~{stream_s:.1f} s each, held {args.seconds:g} s)",
        f"  {'':<34}{'llmroute':>10}{'bare':>10}{'ratio':>10}",
        row("idle (2 s after ready)", ours.idle_mb, bare.idle_mb),
        row(f"peak sampled at {args.streams} streams", ours.peak_mb, bare.peak_mb),
        row("VmHWM (high-water mark)", ours.hwm_mb, bare.hwm_mb),
        row("2 s after the load", ours.after_mb, bare.after_mb),
        f"  streams completed / failed: llmroute {ours.streams_ok} / {ours.streams_failed}, "
        f"bare {bare.streams_ok} / {bare.streams_failed}",
        f"  llmroute in-flight during the load (its /status): median {ours.in_flight_median}, "
        f"peak {ours.in_flight_peak}",
        f"\nstart to ready (llmroute-proxy serve → /readyz 200): median {statistics.median(ready) * 1000:.0f} ms, "
        f"worst {max(ready) * 1000:.0f} ms over {len(ready)} starts",
        "\nTargets (design.md) for llmroute:",
        _verdict("RSS idle", ours.idle_mb, READY_MB, "MB"),
        _verdict(f"RSS at {args.streams} streams (VmHWM)", ours.hwm_mb, LOADED_MB, "MB"),
        _verdict("start to ready (median)", statistics.median(ready), READY_S, "s"),
    ]
    return "\n".join(lines)


def _verdict(label: str, value: float, limit: float, unit: str) -> str:
    return f"  {label:<34}{value:>9.2f} {unit:<3} goal ≤ {limit:g} {unit:<3} {'met' if value <= limit else 'MISSED'}"


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this bench started has been stopped")
