"""What the llmroute sidecar costs on the data plane, next to a bare aiohttp proxy, in one run.

Starts on 127.0.0.1 (free ports): a fast fake OpenAI upstream (`_upstream.py`), the bare
pass-through proxy (`_bare_proxy.py`, the practical limit of a Python aiohttp proxy) and
`llmroute-proxy serve` with a one-target route to that upstream. Then, interleaved and repeated
(`--reps`), every target at every point:

- non-streaming, concurrency 1 and 32 (wrk): latency p50/p99, req/s;
- streaming (20 chunks + usage + [DONE]), concurrency 1 (`_load.py`): time to first token;
- streaming, concurrency 32 (wrk): req/s;
- the same two concurrency-32 points on `/v1/responses` (llmroute only: the upstream and the bare
  proxy speak chat completions), reported as a ratio to chat completions on the same route,
  with the Responses store's size and the sidecar's RSS at the end (the store fills to its cap
  during the run: this is where the cap is seen to hold under load).
- the four concurrency-32 points again (`ons`, `ost`, `ors`, `ors_st`) on a second route whose provider
  is of type `openai` (llmroute only): there Responses requests go natively to the upstream's own
  `/v1/responses` and are relayed, where the first route (`openai-compatible`) translates them.

`direct` is the upstream itself, the floor. The load generator and the upstream share core 0,
the proxy under test has core 1 (taskset, when present), as in a sidecar with one core. Figures
are medians over the repeats; ratios and added latencies are taken within a repeat, between runs
minutes apart at most, then the median of those. Absolute figures move by tens of percent between
runs on a shared VM: compare the ratios.

Run: `.venv/bin/python bench/overhead.py [--seconds 5] [--reps 2] [--quick] [--json out.json]`.
Needs `wrk` for the throughput points (Debian/Ubuntu: `apt-get install -y wrk`; macOS:
`brew install wrk`); without it every point uses the Python generator, which saturates first
and understates every proxy's throughput (the ratios stay meaningful, the absolutes do not).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from _processes import Harness, free_port, harness, llmroute_command

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOAD_CORE, PROXY_CORE = 0, 1
CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
PROMPT_BODY = b'{"model":"fake-gpt","messages":[{"role":"user","content":"Say hello in five words please."}]'

SIDECAR_CONFIG = """\
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {{name: fake}}
spec:
  type: openai-compatible
  endpoints: [{{region: local, url: "{upstream}/v1"}}]
  credentials: {{env: FAKE_API_KEY}}
  models: [{{name: fake-gpt, pricing: {{inputPerMTok: 1.0, outputPerMTok: 2.0}}}}]
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {{name: bench}}
spec:
  tiers:
    default:
      targets: [{{provider: fake, model: fake-gpt}}]
  defaultTier: default
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {{name: fake-openai}}
spec:
  type: openai
  endpoints: [{{region: local, url: "{upstream}/v1"}}]
  credentials: {{env: FAKE_API_KEY}}
  models: [{{name: fake-gpt, pricing: {{inputPerMTok: 1.0, outputPerMTok: 2.0}}}}]
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {{name: openai}}
spec:
  tiers:
    default:
      targets: [{{provider: fake-openai, model: fake-gpt}}]
  defaultTier: default
"""
"""The first route (the default) reaches the upstream as an `openai-compatible` provider, so Responses
requests are translated to chat completions; the `openai` route (header `x-llmroute-route: openai`)
reaches it as an `openai` provider, which llmroute sends Responses requests to natively."""

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-fake"
if (os.getenv("WRK_ROUTE") or "") ~= "" then wrk.headers["x-llmroute-route"] = os.getenv("WRK_ROUTE") end
local body = '{"model":"fake-gpt","messages":[{"role":"user","content":"Say hello in five words please."}],"max_tokens":32'
if os.getenv("WRK_STREAM") == "1" then body = body .. ',"stream":true,"stream_options":{"include_usage":true}' end
if os.getenv("WRK_API") == "responses" then
  body = '{"model":"fake-gpt","input":"Say hello in five words please.","max_output_tokens":32'
  if os.getenv("WRK_STREAM") == "1" then body = body .. ',"stream":true' end
end
wrk.body = body .. '}'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"lat_p50_ms":%.3f,' ..
    '"lat_p99_ms":%.3f,"errors":%d}\\n', summary.requests, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""

# --- processes ------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except (urllib.error.URLError, OSError):
        return 0


def chat_works(base: str, stream: bool) -> bool:
    body = PROMPT_BODY + (b',"stream":true}' if stream else b"}")
    request = urllib.request.Request(base + CHAT_PATH, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer sk-fake"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            data = response.read()
            return response.status == 200 and (b"data: [DONE]" in data if stream else b'"choices"' in data)
    except (urllib.error.URLError, OSError):
        return False


def wait_until(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout_s: float,
               poll_s: float = 0.01) -> float:
    """Seconds until `ready()`; raises if the process exits or the timeout passes."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        if ready():
            return time.perf_counter() - t0
        time.sleep(poll_s)
    raise RuntimeError(f"not ready within {timeout_s:g}s")


def start_upstream(h: Harness, chunks: int = 20, chunk_delay_ms: float = 0.0, name: str = "upstream") -> str:
    port = free_port()
    proc = h.spawn(name, LOAD_CORE, [PYTHON, str(HERE / "_upstream.py"), "--port", str(port),
                                     "--chunks", str(chunks), "--chunk-delay-ms", str(chunk_delay_ms)])
    base = f"http://127.0.0.1:{port}"
    _ready(h, name, proc, lambda: http_get(base + "/health") == 200, 15)
    return base


def start_bare(h: Harness, upstream: str, name: str = "bare") -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = h.spawn(name, PROXY_CORE, [PYTHON, str(HERE / "_bare_proxy.py"), "--port", str(port),
                                      "--upstream", upstream])
    base = f"http://127.0.0.1:{port}"
    _ready(h, name, proc, lambda: chat_works(base, False) and chat_works(base, True), 15)
    return base, proc


@dataclass
class Sidecar:
    base: str
    admin: str
    proc: subprocess.Popen[bytes]
    ready_s: float


VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {  # name -> (extra serve arguments, environment)
    "llmroute": ([], {}),
    "llmroute-quiet": (["--log-level", "WARNING"], {}),
    "llmroute-nometrics": ([], {"OTEL_SDK_DISABLED": "true"}),
    "llmroute-lean": (["--log-level", "WARNING"], {"OTEL_SDK_DISABLED": "true"}),
}
"""llmroute as shipped, and without its access log line and/or its metrics: what each costs per request."""


def start_llmroute(h: Harness, upstream: str, name: str = "llmroute", extra: Sequence[str] = (),
                   env: dict[str, str] | None = None) -> Sidecar:
    config = h.workdir / f"{name}.yaml"
    config.write_text(SIDECAR_CONFIG.format(upstream=upstream))
    port, admin_port = free_port(), free_port()
    proc = h.spawn(name, PROXY_CORE, [*llmroute_command(), "serve", "--config", str(config), "--host", "127.0.0.1",
                                      "--port", str(port), "--admin-port", str(admin_port), *extra],
                   env={"FAKE_API_KEY": "sk-fake", **(env or {})})
    base, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    ready_s = _ready(h, name, proc, lambda: http_get(admin + "/readyz", 0.5) == 200, 30)
    _ready(h, name, proc, lambda: chat_works(base, False) and chat_works(base, True), 15)
    return Sidecar(base, admin, proc, ready_s)


def _ready(h: Harness, name: str, proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout_s: float) -> float:
    try:
        return wait_until(proc, ready, timeout_s)
    except RuntimeError as error:
        raise SystemExit(f"{name} did not start: {error}\n--- {name} log ---\n{h.log_tail(name)}") from None


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (steal included) since boot."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu_s(h: Harness) -> float:
    """CPU seconds used by this script, its finished children (the load generators) and its servers."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for pid in h.pids():
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def wait_for_quiet(h: Harness, max_wait_s: float, threshold_pct: float = 15.0) -> float:
    """Wait (at most `max_wait_s`) until other processes use under `threshold_pct` CPU; returns their last %.

    Teammates' test runs share this machine; a run measured while they burn a core says little.
    """
    deadline = time.perf_counter() + max_wait_s
    while True:
        busy0, own0, t0 = machine_busy_s(), own_cpu_s(h), time.perf_counter()
        time.sleep(0.5)
        foreign = 100.0 * ((machine_busy_s() - busy0) - (own_cpu_s(h) - own0)) / (time.perf_counter() - t0)
        if foreign < threshold_pct or time.perf_counter() >= deadline:
            return max(0.0, foreign)


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


# --- load -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    key: str
    title: str
    concurrency: int
    stream: bool
    ttft: bool = False
    path: str = CHAT_PATH
    versus: str | None = None  # the chat-completions point a Responses point is compared with
    route: str | None = None  # the llmroute route (x-llmroute-route), when not the default

    def serves(self, target: str) -> bool:
        """Only llmroute speaks the Responses API and has routes; the upstream and the bare proxy do not."""
        return (self.path == CHAT_PATH and self.route is None) or target.startswith("llmroute")


POINTS = (
    Point("ns_c1", "non-streaming, concurrency 1", 1, False),
    Point("ns_c32", "non-streaming, concurrency 32", 32, False),
    Point("st_c1", "streaming, concurrency 1 (time to first token)", 1, True, ttft=True),
    Point("st_c32", "streaming, concurrency 32", 32, True),
    Point("rs_c32", "Responses API, non-streaming, concurrency 32", 32, False, path=RESPONSES_PATH, versus="ns_c32"),
    Point("rs_st_c32", "Responses API, streaming, concurrency 32", 32, True, path=RESPONSES_PATH, versus="st_c32"),
    Point("ons_c32", "openai provider: non-streaming, concurrency 32", 32, False, route="openai"),
    Point("ost_c32", "openai provider: streaming, concurrency 32", 32, True, route="openai"),
    Point("ors_c32", "openai provider: Responses API (native), non-streaming, concurrency 32", 32, False,
          path=RESPONSES_PATH, versus="ons_c32", route="openai"),
    Point("ors_st_c32", "openai provider: Responses API (native), streaming, concurrency 32", 32, True,
          path=RESPONSES_PATH, versus="ost_c32", route="openai"),
)


@dataclass
class Loader:
    """Runs one load point against one URL, with wrk when it is there, else `_load.py`."""

    h: Harness
    seconds: float
    wrk: bool = field(default_factory=lambda: shutil.which("wrk") is not None)

    def run(self, base: str, point: Point, seconds: float | None = None) -> dict[str, Any]:
        seconds = self.seconds if seconds is None else seconds
        if self.wrk and not point.ttft:
            return self._wrk(base, point, seconds)
        return self._python(base, point, seconds)

    def _wrk(self, base: str, point: Point, seconds: float) -> dict[str, Any]:
        script = self.h.workdir / "chat.lua"
        if not script.exists():
            script.write_text(WRK_SCRIPT)
        command = self.h.pinned(LOAD_CORE, ["wrk", "-t1", f"-c{point.concurrency}", f"-d{max(1, round(seconds))}s",
                                            "--timeout", "10s", "-s", str(script), base + point.path])
        env = {**os.environ, "WRK_STREAM": "1" if point.stream else "0",
               "WRK_API": "responses" if point.path == RESPONSES_PATH else "chat", "WRK_ROUTE": point.route or ""}
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60).stdout
        line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
        if line is None:
            return {"error": out[-300:] or "wrk printed nothing"}
        result: dict[str, Any] = orjson.loads(line[8:])
        result["tool"] = "wrk"
        return result

    def _python(self, base: str, point: Point, seconds: float) -> dict[str, Any]:
        command = [PYTHON, str(HERE / "_load.py"), "--url", base + point.path, "-c", str(point.concurrency),
                   "--seconds", str(seconds), "--warmup", "50"]
        if point.stream:
            command.append("--stream")
        if point.route:
            command += ["-H", f"x-llmroute-route: {point.route}"]
        done = subprocess.run(self.h.pinned(LOAD_CORE, command), capture_output=True, text=True,
                              timeout=seconds + 90)
        try:
            result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
            return result
        except (IndexError, orjson.JSONDecodeError):
            return {"error": (done.stdout + done.stderr)[-300:]}


@dataclass
class Target:
    name: str
    base: str
    pid: int | None  # None: the upstream itself (direct)


def measure(loader: Loader, target: Target, point: Point, quiet_wait_s: float) -> dict[str, Any]:
    if quiet_wait_s > 0:
        wait_for_quiet(loader.h, quiet_wait_s)
    cpu0 = cpu_seconds(target.pid) if target.pid else 0.0
    busy0, own0 = machine_busy_s(), own_cpu_s(loader.h)
    t0 = time.perf_counter()
    result = loader.run(target.base, point)
    wall = time.perf_counter() - t0
    foreign = (machine_busy_s() - busy0) - (own_cpu_s(loader.h) - own0)
    result["foreign_cpu_pct"] = round(max(0.0, 100.0 * foreign / wall), 1)
    if target.pid and "error" not in result:
        cpu = cpu_seconds(target.pid) - cpu0
        result["proxy_cpu_pct"] = round(100.0 * cpu / wall, 1)
        result["proxy_cpu_us_per_req"] = round(1e6 * cpu / max(1, result.get("requests", 0)), 1)
        result["proxy_rss_mb"] = round(rss_mb(target.pid), 1)
    return result


# --- figures --------------------------------------------------------------------------------------

Results = dict[tuple[str, str], list[dict[str, Any]]]  # (point, target) -> one result per repeat


def median_of(results: Results, point: str, target: str, metric: str) -> float | None:
    values = [r[metric] for r in results.get((point, target), []) if isinstance(r.get(metric), int | float)]
    return statistics.median(values) if values else None


def paired(results: Results, point: str, target: str, other: str, metric: str,
           combine: Callable[[float, float], float]) -> float | None:
    """Median over repeats of combine(target's value, other's value) taken within each repeat."""
    values = []
    for mine, theirs in zip(results.get((point, target), []), results.get((point, other), []), strict=False):
        a, b = mine.get(metric), theirs.get(metric)
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            values.append(combine(a, b))
    return statistics.median(values) if values else None


def ratio(a: float, b: float) -> float:
    return a / b


def added(a: float, b: float) -> float:
    return a - b


def fmt(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text


METRICS: dict[str, list[tuple[str, str, int]]] = {  # point -> (metric, label, digits)
    "ns_c1": [("lat_p50_ms", "p50 ms", 3), ("lat_p99_ms", "p99 ms", 3), ("rps", "req/s", 0)],
    "ns_c32": [("rps", "req/s", 0), ("lat_p50_ms", "p50 ms", 2), ("lat_p99_ms", "p99 ms", 2)],
    "st_c1": [("ttft_p50_ms", "TTFT p50 ms", 3), ("ttft_p99_ms", "TTFT p99 ms", 3), ("lat_p50_ms", "total p50 ms", 3)],
    "st_c32": [("rps", "req/s", 0), ("lat_p50_ms", "p50 ms", 2), ("lat_p99_ms", "p99 ms", 2)],
    "rs_c32": [("rps", "req/s", 0), ("lat_p50_ms", "p50 ms", 2), ("lat_p99_ms", "p99 ms", 2)],
    "rs_st_c32": [("rps", "req/s", 0), ("lat_p50_ms", "p50 ms", 2), ("lat_p99_ms", "p99 ms", 2)],
    **{key: [("rps", "req/s", 0), ("lat_p50_ms", "p50 ms", 2), ("lat_p99_ms", "p99 ms", 2)]
       for key in ("ons_c32", "ost_c32", "ors_c32", "ors_st_c32")},
}


def table(results: Results, targets: Sequence[str], points: Sequence[Point]) -> str:
    lines = []
    for point in points:
        lines.append(f"\n{point.title} [{point.key}]")
        header = f"  {'target':<20}"
        for _, label, _ in METRICS[point.key]:
            header += f"{label:>14}"
        header += f"{'proxy CPU %':>13}{'CPU µs/req':>12}{'others %':>10}{'errors':>8}"
        lines.append(header)
        for target in targets:
            if not point.serves(target):
                continue
            row = f"  {target:<20}"
            for metric, _, digits in METRICS[point.key]:
                row += f"{fmt(median_of(results, point.key, target, metric), digits):>14}"
            row += f"{fmt(median_of(results, point.key, target, 'proxy_cpu_pct'), 0):>13}"
            row += f"{fmt(median_of(results, point.key, target, 'proxy_cpu_us_per_req'), 0):>12}"
            row += f"{fmt(median_of(results, point.key, target, 'foreign_cpu_pct'), 0):>10}"
            errors = sum(r.get("errors", 0) or 0 for r in results.get((point.key, target), []))
            failed = [r["error"] for r in results.get((point.key, target), []) if "error" in r]
            row += f"{errors:>8}" + (f"  FAILED: {failed[0][:80]!r}" if failed else "")
            lines.append(row)
        for target in targets:
            if target in ("direct", "bare"):
                continue
            if point.versus is not None:
                lines.append(f"  {target} vs its chat completions [{point.versus}]: " + _versus(results, point, target))
            else:
                lines.append(f"  {target} vs bare: " + _comparison(results, point, target))
    return "\n".join(lines)


LEGEND = """
(medians over repeats; "vs bare" figures are taken within each repeat, then the median. CPU µs/req: the
proxy's own CPU time per answered request. others %: CPU used during the run by processes that are not
part of this bench (200 = both cores); above ~10 the run shared the machine and its figures are suspect.)"""


def _comparison(results: Results, point: Point, target: str) -> str:
    key = point.key
    if point.ttft:
        return (f"TTFT p50 added {fmt(paired(results, key, target, 'bare', 'ttft_p50_ms', added), 3, True)} ms "
                f"over bare, {fmt(paired(results, key, target, 'direct', 'ttft_p50_ms', added), 3, True)} ms "
                f"over direct; p99 added {fmt(paired(results, key, target, 'bare', 'ttft_p99_ms', added), 3, True)}"
                f" ms over bare")
    if point.concurrency == 1:
        return (f"p50 added {fmt(paired(results, key, target, 'bare', 'lat_p50_ms', added), 3, True)} ms over bare, "
                f"{fmt(paired(results, key, target, 'direct', 'lat_p50_ms', added), 3, True)} ms over direct; "
                f"p99 added {fmt(paired(results, key, target, 'bare', 'lat_p99_ms', added), 3, True)} ms over bare, "
                f"{fmt(paired(results, key, target, 'direct', 'lat_p99_ms', added), 3, True)} ms over direct")
    cpu = paired(results, key, target, "bare", "proxy_cpu_us_per_req", added)
    return (f"RATIO req/s {fmt(paired(results, key, target, 'bare', 'rps', ratio), 2)} of bare; "
            f"{fmt(cpu, 0, True)} CPU µs per request")


def across(results: Results, point: str, versus: str, target: str, metric: str,
           combine: Callable[[float, float], float]) -> float | None:
    """Median over repeats of combine(value at `point`, value at `versus`), one target, within each repeat."""
    values = []
    for mine, theirs in zip(results.get((point, target), []), results.get((versus, target), []), strict=False):
        a, b = mine.get(metric), theirs.get(metric)
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            values.append(combine(a, b))
    return statistics.median(values) if values else None


def _versus(results: Results, point: Point, target: str) -> str:
    assert point.versus is not None
    cpu = across(results, point.key, point.versus, target, "proxy_cpu_us_per_req", added)
    return (f"RATIO req/s {fmt(across(results, point.key, point.versus, target, 'rps', ratio), 3)}; "
            f"{fmt(cpu, 0, True)} CPU µs per request")


@dataclass(frozen=True)
class Goal:
    label: str
    point: str
    metric: str
    other: str
    combine: Callable[[float, float], float]
    limit: float
    at_least: bool
    unit: str


GOALS = (
    Goal("throughput non-streaming c=32, ÷ bare", "ns_c32", "rps", "bare", ratio, 0.70, True, "×"),
    Goal("throughput streaming c=32, ÷ bare", "st_c32", "rps", "bare", ratio, 0.70, True, "×"),
    Goal("added p50 at c=1 over bare", "ns_c1", "lat_p50_ms", "bare", added, 0.5, False, "ms"),
    Goal("added p50 at c=1 over direct", "ns_c1", "lat_p50_ms", "direct", added, 0.5, False, "ms"),
    Goal("added p99 at c=1 over direct", "ns_c1", "lat_p99_ms", "direct", added, 2.0, False, "ms"),
    Goal("TTFT added p50 over bare", "st_c1", "ttft_p50_ms", "bare", added, 1.0, False, "ms"),
    Goal("TTFT added p50 over direct", "st_c1", "ttft_p50_ms", "direct", added, 1.0, False, "ms"),
)


def verdicts(results: Results, target: str) -> str:
    lines = [f"\nTargets (design.md) for {target}:"]
    for goal in GOALS:
        value = paired(results, goal.point, target, goal.other, goal.metric, goal.combine)
        if value is None:
            continue
        met = value >= goal.limit if goal.at_least else value <= goal.limit
        limit = f"{'≥' if goal.at_least else '≤'} {goal.limit:g} {goal.unit}"
        shown = fmt(value, 2) if goal.unit == "×" else fmt(value, 3, sign=True)
        lines.append(f"  {goal.label:<38} {shown:>9} {goal.unit:<3} goal {limit:<10} {'met' if met else 'MISSED'}")
    for point in POINTS:
        value = across(results, point.key, point.versus, target, "rps", ratio) if point.versus else None
        if value is not None:
            label = f"{point.key} req/s ÷ {point.versus} (Responses)"
            lines.append(f"  {label:<38} {fmt(value, 2):>9} ×   goal ≥ 0.9 ×    {'met' if value >= 0.9 else 'MISSED'}")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measured run (default 5)")
    parser.add_argument("--reps", type=int, default=2, help="repeats, interleaved (default 2)")
    parser.add_argument("--quick", action="store_true", help="one repeat of 2 s runs: a smoke test, not figures")
    parser.add_argument("--targets", default="direct,bare,llmroute",
                        help="comma list of direct, bare, llmroute and its variants (the comparisons with bare and "
                             "direct need them; `--targets llmroute` is enough for Responses ÷ chat completions): "
                             "llmroute-quiet (--log-level "
                             "WARNING: no access log line), llmroute-nometrics (OTEL_SDK_DISABLED=true), "
                             "llmroute-lean (both)")
    parser.add_argument("--points", default=",".join(p.key for p in POINTS))
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0,
                        help="gap between streamed chunks (default 0: back to back, so they coalesce into a few "
                             "reads; > 0: one read per chunk, as with a real model — then compare CPU µs/req, "
                             "req/s is bounded by the gaps)")
    parser.add_argument("--quiet-wait", type=float, default=15.0,
                        help="before each run, wait up to this many seconds for other processes to leave the "
                             "CPU idle (default 15; 0: never wait)")
    parser.add_argument("--responses-store-bytes", type=int,
                        help="llmroute's Responses store cap (default: as shipped, 32 MiB); a small cap shows it "
                             "holding under load")
    parser.add_argument("--json", type=Path, help="also write every raw result here")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.seconds = 1, 2.0
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - {"direct", "bare", *VARIANTS}
    if unknown or not targets:
        parser.error(f"--targets knows direct, bare, {', '.join(VARIANTS)} (got {args.targets})")
    points = [p for p in POINTS if p.key in args.points.split(",")]
    with harness() as h:
        results = run(h, args, targets, points)
    report = table(results, targets, points) + LEGEND
    for target in targets:
        if target.startswith("llmroute"):
            report += "\n" + verdicts(results, target)
    print(report)
    if args.json:
        args.json.write_text(orjson.dumps({f"{p}|{t}": r for (p, t), r in results.items()},
                                          option=orjson.OPT_INDENT_2).decode())
        print(f"\nraw results: {args.json}")


def run(h: Harness, args: argparse.Namespace, names: Sequence[str], points: Sequence[Point]) -> Results:
    loader = Loader(h, args.seconds)
    print(_setup_note(h, loader), flush=True)
    upstream = start_upstream(h, args.chunks, args.chunk_delay_ms)
    targets = {"direct": Target("direct", upstream, None)}
    if "bare" in names:
        base, proc = start_bare(h, upstream)
        targets["bare"] = Target("bare", base, proc.pid)
    sidecars: dict[str, Sidecar] = {}
    for name in names:
        if name.startswith("llmroute"):
            extra, env = VARIANTS[name]
            if args.responses_store_bytes is not None:
                extra = [*extra, "--responses-store-bytes", str(args.responses_store_bytes)]
            sidecar = sidecars[name] = start_llmroute(h, upstream, name, extra, env)
            targets[name] = Target(name, sidecar.base, sidecar.proc.pid)
            print(f"{name}: ready {sidecar.ready_s * 1000:.0f} ms after start, "
                  f"RSS {rss_mb(sidecar.proc.pid):.1f} MB", flush=True)
    warm = 1.0 if args.quick else 2.0
    for name in names:
        for point in (POINTS[1], POINTS[3], POINTS[0], *(p for p in points if p.versus)):
            if point.serves(name):
                loader.run(targets[name].base, point, warm)
    results: Results = {}
    for rep in range(args.reps):
        order = list(names) if rep % 2 == 0 else list(reversed(names))
        for point in points:
            for name in order:
                if not point.serves(name):
                    continue
                result = measure(loader, targets[name], point, args.quiet_wait)
                results.setdefault((point.key, name), []).append(result)
                shown = {k: result.get(k) for k in ("rps", "lat_p50_ms", "ttft_p50_ms", "errors", "proxy_cpu_pct",
                                                   "foreign_cpu_pct", "error") if result.get(k) is not None}
                print(f"rep {rep + 1} {point.key:<7} {name:<15} {orjson.dumps(shown).decode()}", flush=True)
    for name, target in targets.items():
        if name.startswith("llmroute") and target.pid is not None:
            print(f"{name}: after the run RSS {rss_mb(target.pid):.1f} MB (peak {rss_mb(target.pid, 'VmHWM'):.1f}), "
                  f"Responses store {store_status(sidecars[name].admin)}", flush=True)
    return results


def store_status(admin: str) -> str:
    try:
        with urllib.request.urlopen(admin + "/status", timeout=5) as response:
            store = orjson.loads(response.read()).get("responses_store") or {}
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as error:
        return f"unreadable ({error})"
    return (f"{store.get('entries')} entries, {(store.get('bytes') or 0) / 2**20:.1f} of "
            f"{(store.get('max_bytes') or 0) / 2**20:.0f} MiB, {store.get('stored')} stored, "
            f"{store.get('evicted')} evicted")


def _setup_note(h: Harness, loader: Loader) -> str:
    notes = [f"llmroute: {' '.join(llmroute_command())}"]
    notes.append(f"pinning: load generator + upstream on core {LOAD_CORE}, proxy under test on core {PROXY_CORE}"
                 if h.pin else "pinning: OFF (needs taskset and 2 cores): figures are noisier")
    if loader.wrk:
        notes.append("load: wrk (throughput, latency), bench/_load.py (time to first token)")
    else:
        notes.append("load: wrk NOT FOUND, using bench/_load.py everywhere: Python load generation saturates "
                     "before the proxies do, so req/s understate them (install wrk: apt-get install -y wrk, "
                     "or brew install wrk)")
    return "\n".join(notes)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process this bench started has been stopped")
