from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from llmroute_proxy.server.admin import admin_app
from llmroute_proxy.server.telemetry import Telemetry
from llmroute_proxy.table import Pricing, ProviderType, Route, Secret, Table, Target, TargetId, Tier

SECRET = "sk-ant-api03-NEVER-SHOW-ME"

TARGET = Target(id=TargetId("claude/claude-sonnet-4@eu"), provider="claude", provider_type=ProviderType.ANTHROPIC,
                model="claude-sonnet-4", url="https://api.anthropic.com", region="eu", credential=Secret(SECRET),
                pricing=Pricing(3.0, 15.0), options={"beta": "x"})
TABLE = Table(version="v-123", region="eu",
              routes=(Route(name="default", tiers={"smart": Tier("smart", (TARGET,))}, rules=(),
                            default_tier="smart"),))


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.shutdown()


class Sidecar:
    def __init__(self) -> None:
        self.table: Table | None = None

    def status(self) -> dict[str, Any]:
        # deliberately unfiltered: the admin plane must still never show the credential
        return {"version": "0.1.0", "table": None if self.table is None else {"version": self.table.version},
                "targets": list(self.table.targets().values()) if self.table else [], "raw": self.table,
                "budgets": [], "decisions": []}


Admin = tuple[TestClient[web.Request, web.Application], Sidecar]


@pytest.fixture
async def admin(aiohttp_client: Any, telemetry: Telemetry) -> Admin:
    sidecar = Sidecar()
    client = await aiohttp_client(admin_app(sidecar.status, telemetry, lambda: sidecar.table is not None))
    return client, sidecar


async def test_healthz_answers_while_the_process_lives(admin: Admin) -> None:
    client, _ = admin
    response = await client.get("/healthz")
    assert response.status == 200 and await response.text() == "ok\n"


async def test_readyz_is_503_until_a_table_is_loaded(admin: Admin) -> None:
    client, sidecar = admin
    assert (await client.get("/readyz")).status == 503
    sidecar.table = TABLE
    assert (await client.get("/readyz")).status == 200


async def test_metrics_serves_the_prometheus_text(admin: Admin, telemetry: Telemetry) -> None:
    client, _ = admin
    scope = telemetry.start_request("chat", {})
    scope.attempt(TARGET, 1).end()
    scope.end(200)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "gen_ai_client_operation_duration_seconds_bucket" in await response.text()


async def test_status_serves_what_the_source_returns_as_json(admin: Admin) -> None:
    client, sidecar = admin
    sidecar.table = TABLE
    response = await client.get("/status")
    assert response.status == 200 and response.content_type == "application/json"
    document = orjson.loads(await response.read())
    assert document["table"] == {"version": "v-123"}
    assert document["targets"][0]["id"] == "claude/claude-sonnet-4@eu"
    assert document["targets"][0]["credential"] == "***"


async def test_no_secret_ever_appears_in_status_or_the_page(admin: Admin) -> None:
    client, sidecar = admin
    sidecar.table = TABLE
    for path in ("/status", "/", "/metrics"):
        body = await (await client.get(path)).read()
        assert SECRET.encode() not in body, path


async def test_the_page_is_self_contained_html_with_stable_ids(admin: Admin) -> None:
    client, _ = admin
    response = await client.get("/")
    html = await response.text()
    assert response.status == 200 and response.content_type == "text/html"
    for element_id in ("version", "targets", "budgets", "decisions"):
        assert f'id="{element_id}"' in html
    assert 'fetch("status"' in html and "2000" in html
    assert "src=" not in html and "href=" not in html and "@import" not in html
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_there_is_no_write_api(admin: Admin, method: str) -> None:
    client, _ = admin
    for path in ("/status", "/", "/readyz"):
        assert (await client.request(method, path)).status == 405


async def test_status_refuses_a_foreign_host_so_dns_rebinding_cannot_read_it(admin: Admin) -> None:
    client, sidecar = admin
    sidecar.table = TABLE
    for path in ("/status", "/"):
        response = await client.get(path, headers={"Host": "evil.example:15401"})
        assert response.status == 403, path
        assert "claude" not in await response.text()
    for host in ("localhost:15401", "127.0.0.1", "[::1]:15401"):
        assert (await client.get("/status", headers={"Host": host})).status == 200, host


async def test_probes_answer_the_pod_ip_as_host(admin: Admin) -> None:
    client, _ = admin
    assert (await client.get("/healthz", headers={"Host": "10.1.2.3:15401"})).status == 200


async def test_configured_extra_host_may_read_status(aiohttp_client: Any, telemetry: Telemetry) -> None:
    client = await aiohttp_client(admin_app(lambda: {}, telemetry, lambda: True,
                                            extra_hosts=frozenset({"10.1.2.3"})))
    assert (await client.get("/status", headers={"Host": "10.1.2.3:15401"})).status == 200
    assert (await client.get("/status", headers={"Host": "10.1.2.4:15401"})).status == 403
