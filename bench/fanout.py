"""Fan-out: one hub process pushes a changed table to 1,000 sidecar connections; how long until all ACK?

The hub runs in its own process (pinned to core 0 when `taskset` exists) exactly as the operator
runs it: TLS, every connection's bearer token verified (an HMAC-signed token with an expiry,
checked by a reviewer behind the same `CachedReviewer` the operator uses for TokenReviews),
tables from a TableSource whose pods fall into `--tables` distinct tables. This process (core 1)
opens N real WebSocket clients over TLS that behave like sidecars: hello, then for each table
check its version (sha256 of the payload) and ACK; they compile each distinct version once, as
every sidecar with that table would. Then the table is changed `--rounds` times; each round
reports the time from the change until every connection ACKed the new version. The hub's CPU
seconds and RSS are read from its own /proc; the compile cost per distinct table is timed in
the hub process with the sidecar's own compiler (what the operator's per-pod compile reuses).

    .venv/bin/python bench/fanout.py                 # 1,000 connections, 3 rounds
    .venv/bin/python bench/fanout.py --connections 200 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import ssl
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _processes import ROOT, free_port, harness
from llmroute_operator.certs import write_self_signed
from llmroute_operator.contracts import DesiredTable, Generation, PodRef
from llmroute_operator.hub import Hub, hub_ssl_context
from llmroute_operator.tokenreview import CachedReviewer, Identity, Refused
from llmroute_proxy.sync.protocol import (
    Ack,
    Hello,
    TablePush,
    compile_payload,
    decode_down,
    encode,
    payload_version,
    table_payload,
)

TARGET_S = 5.0
SIGNING_KEY = b"bench-signing-key"


# ---- the hub process ------------------------------------------------------------------------------

def documents(round_no: int, group: int) -> list[dict[str, Any]]:
    """A realistic route: three providers, three tiers, rules; the model name changes each round."""
    providers = [{"apiVersion": "llmroute.dev/v1alpha1", "kind": "LLMProvider", "metadata": {"name": name},
                  "spec": {"type": kind, "endpoints": [{"region": "us", "url": url}],
                           "credentials": {"secretRef": {"name": "keys", "key": name}},
                           "limits": {"requestsPerMinute": 5000, "maxConcurrency": 64}}}
                 for name, kind, url in (("openai", "openai", "https://api.openai.com/v1"),
                                         ("claude", "anthropic", "https://api.anthropic.com"),
                                         ("gemini", "gemini", "https://generativelanguage.googleapis.com"))]
    route = {"apiVersion": "llmroute.dev/v1alpha1", "kind": "LLMRoute", "metadata": {"name": f"chat-{group}"},
             "spec": {"tiers": {
                 "fast": {"targets": [{"provider": "openai", "model": f"gpt-4o-mini-r{round_no}"},
                                      {"provider": "claude", "model": "claude-haiku-4-5", "priority": 1}]},
                 "smart": {"targets": [{"provider": "claude", "model": "claude-sonnet-4-5"},
                                       {"provider": "gemini", "model": "gemini-2.5-pro", "priority": 1}]},
                 "code": {"targets": [{"provider": "claude", "model": "claude-sonnet-4-5"}]}},
                 "rules": [{"name": "code", "when": {"containsCode": True}, "tier": "code"},
                           {"name": "short", "when": {"maxPromptTokens": 500}, "tier": "fast"}],
                 "defaultTier": "smart"}}
    return [*providers, route]


class BenchSource:
    def __init__(self, groups: int) -> None:
        self.groups = groups
        self.round = 0
        self._generation = Generation()
        self._tables = self._build()

    def _build(self) -> list[DesiredTable]:
        tables = []
        for group in range(self.groups):
            payload = table_payload("us", documents(self.round, group),
                                    {"openai": "sk-o", "claude": "sk-c", "gemini": "sk-g"})
            tables.append(DesiredTable(payload_version(payload), payload))
        return tables

    def table_for(self, pod: PodRef) -> DesiredTable | None:
        return self._tables[int(pod.name.rsplit("-", 1)[1]) % self.groups]

    def generation(self) -> int:
        return self._generation.value

    async def changed(self, since: int) -> int:
        return await self._generation.changed(since)

    async def change(self) -> set[str]:
        self.round += 1
        self._tables = self._build()
        await self._generation.bump()
        return {t.version for t in self._tables}


class CountingSink:
    def __init__(self) -> None:
        self.acks: dict[str, int] = {}
        self.connected_count = 0
        self.all_acked = asyncio.Event()
        self.waiting_for: set[str] = set()
        self.expected = 0

    def connected(self, pod: PodRef) -> None:
        self.connected_count += 1

    def disconnected(self, pod: PodRef) -> None:
        self.connected_count -= 1

    def pushed(self, pod: PodRef, version: str) -> None:
        pass

    def acked(self, pod: PodRef, version: str) -> None:
        self.acks[version] = self.acks.get(version, 0) + 1
        if self.waiting_for and sum(self.acks.get(v, 0) for v in self.waiting_for) >= self.expected:
            self.all_acked.set()

    def nacked(self, pod: PodRef, version: str, error: str) -> None:
        print(f"NACK from {pod}: {error}", file=sys.stderr)

    def usage(self, pod: PodRef, report: Any) -> None:
        pass

    def refused(self, reason: str, pod: PodRef | None) -> None:
        print(f"refused: {reason}", file=sys.stderr)


class SignedTokenReviewer:
    """Verifies `base64(claims).hmac` tokens with an expiry: the cost of a real check, no API server."""

    async def review(self, token: str) -> Identity:
        body, _, signature = token.rpartition(".")
        expected = base64.urlsafe_b64encode(hmac.new(SIGNING_KEY, body.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(signature, expected):
            raise Refused(401, "token not authenticated: bad signature")
        claims = json.loads(base64.urlsafe_b64decode(body))
        if claims["exp"] < time.time():
            raise Refused(401, "token not authenticated: expired")
        return Identity(PodRef(claims["ns"], claims["pod"]), claims["uid"])


def sign(pod: PodRef) -> str:
    body = base64.urlsafe_b64encode(json.dumps(
        {"ns": pod.namespace, "pod": pod.name, "uid": f"uid-{pod.name}", "exp": time.time() + 3600}).encode()).decode()
    return body + "." + base64.urlsafe_b64encode(hmac.new(SIGNING_KEY, body.encode(), hashlib.sha256).digest()).decode()


def hub_usage() -> dict[str, float]:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    status = Path("/proc/self/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / ticks, "rss_mib": rss_kib / 1024}


async def serve_hub(port: int, control_port: int, cert_dir: Path, groups: int) -> None:
    source, sink = BenchSource(groups), CountingSink()
    reviewer = CachedReviewer(SignedTokenReviewer())
    hub = Hub(source, sink, reviewer)

    async def change(request: web.Request) -> web.Response:
        sink.expected = int(request.query["expect"])
        before = hub_usage()
        sink.all_acked.clear()
        started = time.perf_counter()
        sink.waiting_for = await source.change()
        await asyncio.wait_for(sink.all_acked.wait(), 60)
        elapsed = time.perf_counter() - started
        after = hub_usage()
        return web.json_response({"all_acked_s": elapsed, "cpu_s": after["cpu_s"] - before["cpu_s"],
                                  "rss_mib": after["rss_mib"]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({**hub_usage(), "connected": sink.connected_count,
                                  "reviews": reviewer.misses, "cache_hits": reviewer.hits})

    async def compile_cost(request: web.Request) -> web.Response:
        payload = source._tables[0].payload
        runs = 50
        started = time.perf_counter()
        for _ in range(runs):
            compile_payload(payload)
            payload_version(payload)
            encode(TablePush("v", payload))
        return web.json_response({"compile_ms": (time.perf_counter() - started) / runs * 1000,
                                  "payload_bytes": len(orjson.dumps(payload))})

    control = web.Application()
    control.router.add_post("/change", change)
    control.router.add_get("/stats", stats)
    control.router.add_get("/compile", compile_cost)
    runners = [web.AppRunner(hub.app(), access_log=None), web.AppRunner(control, access_log=None)]
    for runner in runners:
        await runner.setup()
    await web.TCPSite(runners[0], "127.0.0.1", port, backlog=4096,
                      ssl_context=hub_ssl_context(str(cert_dir / "tls.crt"), str(cert_dir / "tls.key"))).start()
    await web.TCPSite(runners[1], "127.0.0.1", control_port).start()
    print("hub ready", flush=True)
    await asyncio.Event().wait()


# ---- the simulated sidecars -----------------------------------------------------------------------

class Sidecars:
    def __init__(self, url: str, ca: Path, count: int) -> None:
        self.url, self.count = url, count
        self.ssl = ssl.create_default_context(cafile=str(ca))
        self.compiled: dict[str, bool] = {}
        self.connected = 0

    async def one(self, session: aiohttp.ClientSession, index: int) -> None:
        pod = PodRef("bench", f"sidecar-{index}")
        async with session.ws_connect(self.url, ssl=self.ssl, headers={"Authorization": f"Bearer {sign(pod)}"},
                                      max_msg_size=0) as ws:
            await ws.send_str(encode(Hello(None, "bench")))
            self.connected += 1
            async for message in ws:
                push = decode_down(message.data)
                if isinstance(push, TablePush):
                    if payload_version(push.table) != push.version:
                        raise AssertionError("version is not the payload's sha256")
                    if push.version not in self.compiled:
                        compile_payload(push.table)
                        self.compiled[push.version] = True
                    await ws.send_str(encode(Ack(push.version)))


def control(port: int, path: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=120) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


async def drive(args: argparse.Namespace, port: int, control_port: int, ca: Path) -> dict[str, Any]:
    sidecars = Sidecars(f"wss://localhost:{port}/v1/sync", ca, args.connections)
    connector = aiohttp.TCPConnector(limit=0)
    idle = await asyncio.to_thread(control, control_port, "/stats")
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        tasks = []
        for i in range(args.connections):
            tasks.append(asyncio.create_task(sidecars.one(session, i)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # a rollout, not a thundering herd of handshakes
        async with asyncio.timeout(120):
            while (await asyncio.to_thread(control, control_port, "/stats"))["connected"] < args.connections:
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # let the initial pushes settle
        connect_s = time.perf_counter() - started
        rounds = []
        for _ in range(args.rounds):
            rounds.append(await asyncio.to_thread(control, control_port, f"/change?expect={args.connections}",
                                                  "POST"))
        stats = await asyncio.to_thread(control, control_port, "/stats")
        compile_cost = await asyncio.to_thread(control, control_port, "/compile")
        for task in tasks:
            task.cancel()
    return {"connect_s": connect_s, "rounds": rounds, "stats": stats, "idle": idle, "compile": compile_cost}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tables", type=int, default=10, help="distinct tables among the pods (default 10)")
    parser.add_argument("--serve-hub", nargs=3, metavar=("PORT", "CONTROL_PORT", "CERT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hub:
        port, control_port, cert_dir = args.serve_hub
        asyncio.run(serve_hub(int(port), int(control_port), Path(cert_dir), args.tables))
        return 0
    with harness("llmroute-fanout-") as h:
        certs = write_self_signed(h.workdir / "certs")
        port, control_port = free_port(), free_port()
        h.spawn("hub", 0, [sys.executable, str(ROOT / "bench" / "fanout.py"), "--tables", str(args.tables),
                           "--serve-hub", str(port), str(control_port), str(certs.ca.parent)])
        if h.pin:
            os.sched_setaffinity(0, {1})
        deadline = time.monotonic() + 30
        while "hub ready" not in h.log_tail("hub"):
            if time.monotonic() > deadline:
                print(h.log_tail("hub"), file=sys.stderr)
                return 1
            time.sleep(0.1)
        result = asyncio.run(drive(args, port, control_port, certs.ca))
    report(args, result)
    return 0


def report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    times = [r["all_acked_s"] for r in result["rounds"]]
    cpus = [r["cpu_s"] for r in result["rounds"]]
    stats, compile_cost = result["stats"], result["compile"]
    median = statistics.median(times)
    print(f"fan-out: {args.connections} TLS WebSocket sidecars, {args.tables} distinct tables, {args.rounds} changes")
    print(f"  connected and synced in            {result['connect_s']:.1f} s "
          f"(token reviews {stats['reviews']}, cache hits {stats['cache_hits']})")
    print("  change → all ACKed, per round      " + ", ".join(f"{t:.2f} s" for t in times))
    print(f"  median                             {median:.2f} s  (target ≤ {TARGET_S:.0f} s: "
          f"{median / TARGET_S:.2f}× the target)")
    print("  hub CPU per change                 " + ", ".join(f"{c:.2f} s" for c in cpus))
    idle = result["idle"]["rss_mib"]
    print(f"  hub RSS idle → all connected       {idle:.0f} → {stats['rss_mib']:.0f} MiB "
          f"({(stats['rss_mib'] - idle) * 1024 / args.connections:.0f} KiB per connection)")
    print(f"  compile per distinct table         {compile_cost['compile_ms']:.2f} ms "
          f"(spec + compiler + version + encode; payload {compile_cost['payload_bytes']} bytes)")


if __name__ == "__main__":
    sys.exit(main())
