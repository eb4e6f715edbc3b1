"""Tier B end to end: the operator and sidecar processes against a real API server, all on loopback.

The operator runs as its own process with a kubeconfig holding only its ServiceAccount's token and the
ClusterRole of operator/rbac.yaml (so the chart's RBAC is proved sufficient). Sidecar processes run in
cluster mode with real bound tokens for Pod objects on Node objects (no kubelet: the pods never run,
the sidecars stand in for them); providers are simulators. One scenario, step by step, as a platform
team would live it: apply, serve, see status, change, make a mistake, fix it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import openai
import pytest
import yaml

from llmroute_operator.crds import GROUP, VERSION
from llmroute_proxy.sim import SimServer, openai_app, sim_state
from tests.kube.apiserver import ApiServer
from tests.kube.client import Kube
from tests.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = "sk-e2e-secret-0123456789abcdef0123"
WAIT_S = 30.0
REGION_LABEL = "topology.kubernetes.io/region"
SIDECARS = 5
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT_S,
                     explain: Callable[[], Awaitable[object]] | None = None) -> T:
    """The first non-None answer of `probe`, polled until `timeout`; `explain` says what was seen instead."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if (answer := await probe()) is not None:
                return answer
        except (aiohttp.ClientError, OSError) as error:
            last = error
        await asyncio.sleep(0.2)
    seen = await explain() if explain is not None else None
    raise AssertionError(f"{what} within {timeout}s (last error: {last}; seen: {seen})")


class Process:
    """A child process whose output goes to a file, shown when a test fails."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.log = name, logs / f"{name}.log"
        self.popen = subprocess.Popen(argv, env={**os.environ, **env}, stdout=self.log.open("wb"),
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Cluster:
    admin: Kube
    namespace: str
    tmp: Path
    kubeconfig: Path
    hub_port: int
    operator_admin_port: int
    processes: list[Process]

    @property
    def operator_url(self) -> str:
        return f"wss://localhost:{self.hub_port}/v1/sync"  # the dev certificate's name

    @property
    def operator_admin(self) -> str:
        return f"http://127.0.0.1:{self.operator_admin_port}"

    @property
    def operator_ca(self) -> Path:
        return self.tmp / "certs" / "ca.pem"

    def route_path(self, name: str = "") -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/llmroutes" + (f"/{name}" if name else "")

    def provider_path(self, name: str = "") -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/llmproviders" + (f"/{name}" if name else "")


async def operator_kubeconfig(apiserver: ApiServer, admin: Kube, tmp: Path) -> Path:
    """The operator's own identity: a ServiceAccount bound to exactly operator/rbac.yaml's rules."""
    rules = yaml.safe_load((REPO / "operator" / "rbac.yaml").read_text())["rules"]
    return apiserver.kubeconfig(tmp / "operator.kubeconfig", token=await admin.operator_token(rules))


@pytest.fixture
async def cluster(apiserver: ApiServer, admin: Kube, tmp_path: Path) -> AsyncIterator[Cluster]:
    apiserver.install_crds()
    kubeconfig = await operator_kubeconfig(apiserver, admin, tmp_path)
    hub_port, admin_port = free_ports(2)
    made = Cluster(admin, await admin.namespace("team"), tmp_path, kubeconfig, hub_port, admin_port, [])
    try:
        await start_operator(made)
        yield made
    finally:
        for process in reversed(made.processes):
            process.stop()


async def start_operator(cluster: Cluster) -> Process:
    """The operator process (its development CA and hub certificate kept in tmp across restarts)."""
    operator = Process(f"operator-{len(cluster.processes)}",
                       [str(BIN / "llmroute-operator"), "--dev-certs", str(cluster.operator_ca.parent),
                        "--hub-host", "127.0.0.1", "--hub-port", str(cluster.hub_port),
                        "--admin-host", "127.0.0.1", "--admin-port", str(cluster.operator_admin_port),
                        "--status-debounce", "0.2"],
                       {"KUBECONFIG": str(cluster.kubeconfig)}, cluster.tmp)
    cluster.processes.append(operator)
    async with aiohttp.ClientSession() as session:
        async def ready() -> bool | None:
            async with session.get(cluster.operator_admin + "/readyz") as response:
                return True if response.status == 200 else None
        await eventually(ready, f"the operator is ready\n{operator.tail()}")
    return operator


async def start_sidecar(cluster: Cluster, pod: dict[str, Any], restart: int = 0) -> tuple[str, str]:
    """A sidecar process in cluster mode for `pod`, with the token the kubelet would project and the pod's
    state directory (the chart's memory-backed emptyDir, which survives a container restart); its URLs."""
    name = pod["metadata"]["name"]
    token = cluster.tmp / f"{name}.token"
    token.write_text(await cluster.admin.bound_token(pod, "llmroute.dev"))
    port, admin_port = free_ports(2)
    process = Process(f"sidecar-{name}-{restart}", [str(BIN / "llmroute-proxy"), "serve", "--port", str(port),
                                          "--admin-port", str(admin_port), "--drain-seconds", "1"],
                      {"LLMROUTE_OPERATOR_URL": cluster.operator_url, "LLMROUTE_OPERATOR_CA": str(cluster.operator_ca),
                       "LLMROUTE_TOKEN_FILE": str(token), "LLMROUTE_STATE_DIR": str(cluster.tmp / f"state-{name}"),
                       "LLMROUTE_USAGE_REPORT_SECONDS": "1"}, cluster.tmp)
    cluster.processes.append(process)
    return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"


async def wait_ready(admin_url: str, cluster: Cluster) -> None:
    """Until the sidecar's /readyz says a table is loaded."""
    async with aiohttp.ClientSession() as session:
        async def loaded() -> bool | None:
            async with session.get(admin_url + "/readyz") as response:
                return True if response.status == 200 else None
        await eventually(loaded, f"a sidecar loads its table\n{cluster.processes[-1].tail()}")


async def chat_pods(cluster: Cluster, count: int) -> list[dict[str, Any]]:
    """`count` Pod objects labelled app=chat, each with its own ServiceAccount, on a node in eu-west."""
    admin, ns = cluster.admin, cluster.namespace
    await admin.create("/api/v1/nodes", {"metadata": {"name": f"node-{ns}", "labels": {REGION_LABEL: "eu-west"}}})
    pods = []
    for index in range(count):
        await admin.service_account(ns, f"chat-{index}")
        pods.append(await admin.create(f"/api/v1/namespaces/{ns}/pods", {
            "metadata": {"name": f"chat-{index}", "labels": {"app": "chat"}},
            "spec": {"nodeName": f"node-{ns}", "serviceAccountName": f"chat-{index}",
                     "containers": [{"name": "app", "image": "localhost/app:none"}]}}))
    return pods


def provider(name: str, url: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LLMProvider", "metadata": {"name": name},
            "spec": {"type": "openai", "endpoints": [{"region": "eu-west", "url": f"{url}/v1"}],
                     "credentials": {"secretRef": {"name": "llm-keys", "key": name}},
                     "models": [{"name": model, "pricing": {"inputPerMTok": 1000.0, "outputPerMTok": 2000.0}},
                                {"name": "gpt-4o", "pricing": {"inputPerMTok": 1000.0, "outputPerMTok": 2000.0}}]}}


def route(model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LLMRoute", "metadata": {"name": "chat"},
            "spec": {"podSelector": {"matchLabels": {"app": "chat"}},
                     "tiers": {"fast": {"targets": [{"provider": "oai", "model": model}]}},
                     "defaultTier": "fast",
                     "budget": {"limitUSD": 1.0, "period": "day"}}}


async def route_status(cluster: Cluster) -> dict[str, Any]:
    return (await cluster.admin.get(cluster.route_path("chat"))).get("status") or {}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


async def ask(url: str, content: str) -> tuple[str, str]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=15)
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": content}])
        completion = raw.parse()
        return completion.model, raw.headers.get("x-llmroute-provider", "")
    finally:
        await client.close()


async def test_apply_serve_observe_change_and_survive_a_mistake(cluster: Cluster) -> None:
    sim = await SimServer.start(openai_app(KEY, name="sim-oai"))
    try:
        await scenario(cluster, sim)
    finally:
        await sim.close()


async def scenario(cluster: Cluster, sim: SimServer) -> None:
    admin, ns = cluster.admin, cluster.namespace
    await admin.create(f"/api/v1/namespaces/{ns}/secrets",
                       {"metadata": {"name": "llm-keys"}, "stringData": {"oai": KEY}})
    await admin.create(cluster.provider_path(), provider("oai", sim.url))
    await admin.create(cluster.route_path(), route())
    pods = await chat_pods(cluster, SIDECARS)
    sidecars = [await start_sidecar(cluster, pod) for pod in pods]

    # 1. every selected sidecar gets the table and serves it; status says so
    for _, admin_url in sidecars:
        await wait_ready(admin_url, cluster)
    for data_url, _ in sidecars:
        assert await ask(data_url, "hello") == ("gpt-4o-mini", "oai")
    assert sim_state(sim.app).stats.total == SIDECARS

    async def synced(version: str | None = None) -> dict[str, Any] | None:
        status = await route_status(cluster)
        done = (condition(status, "Accepted").get("status") == "True"
                and condition(status, "Synced").get("status") == "True"
                and status.get("sidecars", {}).get("summary") == f"{SIDECARS}/{SIDECARS}")
        return status if done and (version is None or status.get("tableVersion") != version) else None

    first = await eventually(synced, "LLMRoute status shows Accepted and Synced 5/5",
                             explain=lambda: route_status(cluster))

    # 2. usage reports add up to spend in status; the key appears nowhere in it
    async def spent() -> dict[str, Any] | None:
        status = await route_status(cluster)
        return status if status.get("spend", {}).get("periodUSD", 0) > 0 else None

    status = await eventually(spent, "spend reaches LLMRoute status")
    assert 0 < status["spend"]["percentOfBudget"] < 100
    provider_doc = await admin.get(cluster.provider_path("oai"))
    assert KEY not in json.dumps(status) and KEY not in json.dumps(provider_doc)

    # 3. a change reaches the running sidecars, with no restart
    await admin.merge_patch(cluster.route_path("chat"),
                            {"spec": {"tiers": {"fast": {"targets": [{"provider": "oai", "model": "gpt-4o"}]}}}})
    changed = await eventually(lambda: synced(first["tableVersion"]), "the changed route is synced 5/5")
    for data_url, _ in sidecars:
        assert await ask(data_url, "again") == ("gpt-4o", "oai")

    # 4. a mistake is reported on the resource and changes nothing that runs
    await admin.merge_patch(cluster.route_path("chat"), {"spec": {"defaultTier": "missing"}})

    async def refused() -> dict[str, Any] | None:
        status = await route_status(cluster)
        return status if condition(status, "Accepted").get("status") == "False" else None

    status = await eventually(refused, "the bad route is marked Accepted=False")
    assert "defaultTier" in condition(status, "Accepted").get("message", "")
    for data_url, _ in sidecars:
        assert await ask(data_url, "still there?") == ("gpt-4o", "oai")

    # 5. fixed, it is accepted again with the last good table
    await admin.merge_patch(cluster.route_path("chat"), {"spec": {"defaultTier": "fast"}})
    fixed = await eventually(lambda: synced(None), "the fixed route is accepted and synced again")
    assert fixed["tableVersion"] == changed["tableVersion"]

    # 6. the operator goes away: every sidecar keeps serving; a new operator resyncs them all
    operator = next(p for p in cluster.processes if p.name.startswith("operator"))
    operator.stop()
    for data_url, _ in sidecars:
        assert await ask(data_url, "operator down") == ("gpt-4o", "oai")
    # a sidecar restarted while the operator is down serves the table it persisted
    restarted = next(p for p in cluster.processes if p.name == "sidecar-chat-0-0")
    restarted.stop()
    sidecars[0] = await start_sidecar(cluster, pods[0], restart=1)
    await wait_ready(sidecars[0][1], cluster)
    assert await ask(sidecars[0][0], "restarted alone") == ("gpt-4o", "oai")
    await admin.merge_patch(cluster.route_path("chat"),
                            {"spec": {"tiers": {"fast": {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}]}}}})
    await start_operator(cluster)
    await eventually(lambda: synced(changed["tableVersion"]), "the new operator pushes the route changed while it was away")
    for data_url, _ in sidecars:
        assert await ask(data_url, "operator back") == ("gpt-4o-mini", "oai")



# ---- global limits across sidecar processes --------------------------------------------------------------

LIMIT_RPM = 60  # the limited provider's global requestsPerMinute
LIMIT_SIDECARS = 3
LOAD_S = 10.0
CLIENTS_PER_SIDECAR = 4
PACE_S = 0.2  # each client at most 5 requests a second: 60/s offered in all, 60 times the limit's rate


@dataclass
class Answer:
    sidecar: int
    status: int
    provider: str
    code: str = ""
    retry_after: str = ""
    tokens: int = 0  # the usage the provider reported


def client_of(url: str, route_name: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=15,
                              default_headers={"x-llmroute-route": route_name} if route_name else {})


async def call(sidecar: int, client: openai.AsyncOpenAI, content: str = "hello") -> Answer:
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": content}])
        usage = raw.parse().usage
        return Answer(sidecar, raw.status_code, raw.headers.get("x-llmroute-provider", ""),
                      tokens=usage.total_tokens if usage is not None else 0)
    except openai.APIStatusError as error:
        body = error.body if isinstance(error.body, dict) else {}
        return Answer(sidecar, error.status_code, error.response.headers.get("x-llmroute-provider", ""),
                      str(body.get("code", "")), error.response.headers.get("retry-after", ""))


async def load(sidecar: int, url: str, until: float, content: str = "hello") -> list[Answer]:
    """One client: a request every PACE_S (or as fast as answers come) until `until`; bounded by both."""
    answers: list[Answer] = []
    async with client_of(url) as client:
        while (started := time.monotonic()) < until and len(answers) < LOAD_S / PACE_S + 1:
            answers.append(await call(sidecar, client, content))
            await asyncio.sleep(max(PACE_S - (time.monotonic() - started), 0.0))
    return answers


async def test_sidecar_processes_share_a_providers_rpm_limit_through_the_operators_leases(cluster: Cluster) -> None:
    """Three sidecar processes under load far above one provider's global RPM admit, summed, what the limit
    allows — counted by the provider itself — and send the rest to the route's next target.

    The bound. A sidecar enforces its leased share s_i as a token bucket holding one minute's worth (a full
    minute may be spent in a burst, as providers allow) that refills at s_i per minute; a new lease keeps the
    bucket's level (never above the new share), and the shares never sum to more than the limit L. So from
    the moment the load starts, over T seconds, all sidecars together admit at most
        sum(s_i) + sum(s_i) * T/60  <=  L * (1 + T/60)
    plus at most one request per sidecar around a lease change (the shares are sent to each sidecar one after
    the other). Without leases each sidecar would enforce all of L itself: N times as much, 3 * 70 = 210 here
    against a bound of 73. A minute of wall time is not needed: the bucket bound holds for any window.
    """
    limited = await SimServer.start(openai_app(KEY, name="sim-limited"))
    spare = await SimServer.start(openai_app(KEY, name="sim-spare"))
    try:
        await shared_limit(cluster, limited, spare)
    finally:
        await limited.close()
        await spare.close()


async def limited_sidecars(cluster: Cluster, limited: SimServer, spare: SimServer,
                           limits: dict[str, int]) -> list[tuple[str, str]]:
    """LIMIT_SIDECARS sidecar processes, each holding a lease, whose routes send to `limited` (with
    `limits`) first: `chat` fails over to `spare`, `strict` has no other target."""
    admin, ns = cluster.admin, cluster.namespace
    await admin.create(f"/api/v1/namespaces/{ns}/secrets",
                       {"metadata": {"name": "llm-keys"}, "stringData": {"limited": KEY, "spare": KEY}})
    capped = provider("limited", limited.url)
    capped["spec"]["limits"] = limits
    await admin.create(cluster.provider_path(), capped)
    await admin.create(cluster.provider_path(), provider("spare", spare.url))
    targets = [{"provider": "limited", "model": "gpt-4o-mini"},
               {"provider": "spare", "model": "gpt-4o-mini", "priority": 1}]
    for name, tier_targets in (("chat", targets), ("strict", targets[:1])):
        document = route()
        document["metadata"]["name"] = name
        document["spec"]["tiers"]["fast"]["targets"] = tier_targets
        await admin.create(cluster.route_path(), document)
    sidecars = [await start_sidecar(cluster, pod) for pod in await chat_pods(cluster, LIMIT_SIDECARS)]
    async with aiohttp.ClientSession() as session:
        for _, admin_url in sidecars:
            async def leased(url: str = admin_url) -> bool | None:
                async with session.get(url + "/status") as response:
                    operator = (await response.json()).get("operator") or {}
                    return True if operator.get("lease") == "held" else None
            await eventually(leased, f"a sidecar holds a lease\n{cluster.processes[-1].tail()}")
    return sidecars


async def shared_limit(cluster: Cluster, limited: SimServer, spare: SimServer) -> None:
    sidecars = await limited_sidecars(cluster, limited, spare, {"requestsPerMinute": LIMIT_RPM})
    before = sim_state(limited.app).stats.total

    # far above the limit for LOAD_S: what the leases do not admit fails over to `spare`, invisibly
    start = time.monotonic()
    runs = [load(i, data_url, start + LOAD_S) for i, (data_url, _) in enumerate(sidecars)
            for _ in range(CLIENTS_PER_SIDECAR)]
    answers = [a for run in await asyncio.gather(*runs) for a in run]
    # the buckets are spent now: a route with no other target answers the documented 429
    strict = []
    for i, (data_url, _) in enumerate(sidecars):
        async with client_of(data_url, "strict") as client:
            strict += [await call(i, client) for _ in range(2)]
    elapsed = time.monotonic() - start
    admitted = sim_state(limited.app).stats.total - before

    assert all(a.status == 200 for a in answers), {a.status for a in answers}
    served = {name: sum(a.provider == name for a in answers + strict if a.status == 200) for name in ("limited", "spare")}
    assert served["limited"] == admitted  # the sidecars' view and the provider's own count agree
    bound = LIMIT_RPM * (1 + elapsed / 60) + LIMIT_SIDECARS
    assert admitted <= bound, (admitted, bound, served)
    assert admitted >= 0.8 * LIMIT_RPM, (admitted, served)  # the shares were used, not starved
    assert served["spare"] > 3 * admitted, served  # the load was far above the limit
    refused = [a for a in strict if a.status != 200]
    assert refused and all((a.status, a.code) == (429, "rate_limit_exceeded") and a.retry_after for a in refused), strict
    assert all(a.provider == "limited" for a in strict if a.status == 200)
    per_sidecar = [sum(a.provider == "limited" for a in answers if a.sidecar == i) for i in range(LIMIT_SIDECARS)]
    assert all(n < LIMIT_RPM for n in per_sidecar), per_sidecar  # none had the whole limit to itself
    print(f"\nglobal RPM {LIMIT_RPM}, {LIMIT_SIDECARS} sidecars, {elapsed:.1f} s: provider counted {admitted} "
          f"(bound {bound:.1f}; per sidecar {per_sidecar}), {served['spare']} failed over, "
          f"{len(refused)}/{len(strict)} strict requests got 429")


LIMIT_TPM = 6000  # the limited provider's global tokensPerMinute; no RPM limit
# 140 prompt tokens by the simulator's count; the sidecar estimates 117, so each request goes beyond its estimate
PROMPT = " ".join(["the quick brown fox jumps over a lazy dog"] * 12)


async def test_sidecar_processes_share_a_providers_tpm_limit_through_the_operators_leases(cluster: Cluster) -> None:
    """Three sidecar processes under load far above one provider's global TPM admit, summed, the tokens
    the limit allows — counted from the usage the provider itself reported — and fail over the rest.

    The bound. A sidecar takes a request's estimated prompt tokens from its TPM bucket (one minute's worth
    of its share t_i, refilled at t_i per minute) before sending, and settles to the real usage after, so a
    bucket may go into debt that later refills repay. The shares never sum to more than the limit L. So over
    T seconds all sidecars together are sent at most
        sum(t_i) * (1 + T/60)  <=  L * (1 + T/60)
    plus what was in flight beyond its estimate when the window closed or a lease changed — at most one
    request's tokens per concurrent client (CLIENTS_PER_SIDECAR) and one more per sidecar for the lease
    changes: N * (C + 1) * the largest request. Here L (1 + T/60) = 7,000 and the slack 15 requests of
    ~140 tokens; without leases each sidecar would admit its 7,000 itself.
    """
    limited = await SimServer.start(openai_app(KEY, name="sim-limited"))
    spare = await SimServer.start(openai_app(KEY, name="sim-spare"))
    try:
        await shared_tokens(cluster, limited, spare)
    finally:
        await limited.close()
        await spare.close()


async def shared_tokens(cluster: Cluster, limited: SimServer, spare: SimServer) -> None:
    sidecars = await limited_sidecars(cluster, limited, spare, {"tokensPerMinute": LIMIT_TPM})
    before = sim_state(limited.app).stats.total
    start = time.monotonic()
    runs = [load(i, data_url, start + LOAD_S, PROMPT) for i, (data_url, _) in enumerate(sidecars)
            for _ in range(CLIENTS_PER_SIDECAR)]
    answers = [a for run in await asyncio.gather(*runs) for a in run]
    elapsed = time.monotonic() - start

    assert all(a.status == 200 for a in answers), {a.status for a in answers}
    on_limited = [a for a in answers if a.provider == "limited"]
    assert len(on_limited) == sim_state(limited.app).stats.total - before  # the sidecars and the provider agree
    admitted = sum(a.tokens for a in on_limited)
    largest = max(a.tokens for a in answers)
    bound = LIMIT_TPM * (1 + elapsed / 60) + LIMIT_SIDECARS * (CLIENTS_PER_SIDECAR + 1) * largest
    assert admitted <= bound, (admitted, bound, len(on_limited))
    assert admitted >= 0.8 * LIMIT_TPM, (admitted, len(on_limited))  # the shares were used, not starved
    spare_tokens = sum(a.tokens for a in answers if a.provider == "spare")
    assert spare_tokens > 3 * admitted, (spare_tokens, admitted)  # the load was far above the limit
    per_sidecar = [sum(a.tokens for a in on_limited if a.sidecar == i) for i in range(LIMIT_SIDECARS)]
    assert all(n < LIMIT_TPM for n in per_sidecar), per_sidecar  # none had the whole limit to itself
    print(f"\nglobal TPM {LIMIT_TPM}, {LIMIT_SIDECARS} sidecars, {elapsed:.1f} s: provider reported {admitted} tokens "
          f"in {len(on_limited)} requests (bound {bound:.0f}, largest request {largest}; per sidecar {per_sidecar}), "
          f"{spare_tokens} tokens failed over")
