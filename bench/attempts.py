"""What a failed attempt costs the sidecar's memory: RSS per 100 failed attempts, and the slope.

Starts on 127.0.0.1 (free ports), each its own process: a simulated OpenAI provider (`primary`)
and `llmroute-proxy serve` with a one-target route to it, outlier detection set so that the
primary is never ejected (every request makes exactly one attempt, and it fails). Then, for each
fault kind in `--faults` (`hang`: the primary accepts and never answers, the attempt ends at a
short per-try timeout; `reset`: the primary resets the connection), the primary is given that
fault and `--attempts` requests (half of them streamed) are sent `--concurrency` at a time.

Printed per 100 failed attempts: the sidecar's RSS and its open fds; per fault, the slope of RSS
over the attempts after the first `--warmup` (least squares, bytes per failed attempt) — a
sidecar that keeps nothing of a failed attempt shows ~0 once its pools and arenas are warm.

Run: `.venv/bin/python bench/attempts.py [--attempts 3000] [--faults hang,reset] [--concurrency 50]
      [--per-try-timeout 50ms]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import aiohttp

from _processes import Harness, free_port, harness, llmroute_command
from failover import PYTHON, SIM_MAIN, answers, wait_ready

PROXY_CORE, LOAD_CORE = 1, 0

CONFIG = """\
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {{name: primary}}
spec:
  type: openai
  endpoints: [{{region: local, url: "{primary}/v1"}}]
  credentials: {{env: BENCH_API_KEY}}
  models: [{{name: gpt-4o-mini}}]
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {{name: bench}}
spec:
  tiers:
    only: {{targets: [{{provider: primary, model: gpt-4o-mini}}]}}
  defaultTier: only
  fallback: {{maxAttempts: 1, perTryTimeout: {per_try}, firstByteTimeout: {per_try}, idleTimeout: {per_try},
             overallTimeout: 30s}}
  outlierDetection: {{consecutiveFailures: 1000000000, baseEjection: 1s, maxEjection: 1s}}
"""

FAULTS = {
    "hang": {"kind": "hang"},
    "reset": {"kind": "reset"},
    "503": {"kind": "status", "status": 503},
    "break": {"kind": "break_before_first_token"},
}


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of (attempts, RSS kB), in bytes per attempt."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 1024 if sxx else float("nan")


async def start(procs: Harness, session: aiohttp.ClientSession, per_try: str) -> tuple[str, str, int]:
    port = free_port()
    primary = f"http://127.0.0.1:{port}"
    sim = procs.spawn("primary", LOAD_CORE, [PYTHON, "-c", SIM_MAIN, "openai", "--port", str(port)])
    await wait_ready(procs, "primary", sim, lambda: answers(session, primary + "/_sim/stats"))
    config = procs.workdir / "llmroute.yaml"
    config.write_text(CONFIG.format(primary=primary, per_try=per_try))
    data, admin = free_port(), free_port()
    proc = procs.spawn("llmroute", PROXY_CORE, [
        *llmroute_command(), "serve", "--config", str(config), "--port", str(data),
        "--admin-port", str(admin), "--log-level", "WARNING"], env={"BENCH_API_KEY": "sk-bench"})
    await wait_ready(procs, "llmroute", proc, lambda: answers(session, f"http://127.0.0.1:{admin}/readyz"))
    return primary, f"http://127.0.0.1:{data}", proc.pid


async def one(session: aiohttp.ClientSession, url: str, stream: bool) -> int:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    async with session.post(url, json=body) as response:
        await response.read()
        return response.status


async def run(args: argparse.Namespace, procs: Harness) -> list[tuple[str, float, int, int]]:
    results = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        primary, base, pid = await start(procs, session, args.per_try_timeout)
        url = base + "/v1/chat/completions"
        print(f"sidecar pid {pid}: idle RSS {rss_kb(pid) / 1024:.1f} MB, {fds(pid)} fds", flush=True)
        for name in args.faults.split(","):
            async with session.post(primary + "/_sim/faults", json={"mode": "always", "fault": FAULTS[name]}) as r:
                r.raise_for_status()
            points: list[tuple[int, int]] = []
            start_kb, done, bad = rss_kb(pid), 0, 0
            print(f"\n{name}: {'attempts':>8} {'RSS MB':>8} {'Δ kB':>8} {'fds':>5}", flush=True)
            while done < args.attempts:
                batch = min(args.concurrency, args.attempts - done)
                statuses = await asyncio.gather(*(one(session, url, (done + i) % 2 == 1) for i in range(batch)))
                bad += sum(1 for s in statuses if s == 200)  # a 200 would mean the attempt did not fail
                before, done = done, done + batch
                if done // 100 != before // 100:
                    kb = rss_kb(pid)
                    if done > args.warmup:
                        points.append((done, kb))
                    print(f"{'':<{len(name)}}  {done:>8} {kb / 1024:>8.1f} {kb - start_kb:>8} {fds(pid):>5}", flush=True)
            per_attempt = slope(points)
            print(f"{name}: slope after {args.warmup} attempts: {per_attempt:.0f} bytes per failed attempt"
                  f"{f' ({bad} requests unexpectedly succeeded)' if bad else ''}", flush=True)
            results.append((name, per_attempt, rss_kb(pid) - start_kb, fds(pid)))
            async with session.delete(primary + "/_sim/faults") as r:
                r.raise_for_status()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=3000, help="failed attempts per fault (default 3000)")
    parser.add_argument("--warmup", type=int, default=500, help="attempts left out of the slope (default 500)")
    parser.add_argument("--faults", default="hang,reset", help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight at once (default 50)")
    parser.add_argument("--per-try-timeout", default="50ms", help="perTryTimeout, firstByteTimeout (default 50ms)")
    args = parser.parse_args()
    with harness(prefix="llmroute-attempts-") as procs:
        results = asyncio.run(run(args, procs))
    print("\nfault   bytes/failed attempt   RSS growth kB   fds after")
    for name, per_attempt, growth, open_fds in results:
        print(f"{name:<8}{per_attempt:>20.0f}{growth:>16}{open_fds:>12}")


if __name__ == "__main__":
    main()
