"""The webhook inside the llmroute-operator process: flags, the API server's version, TLS serving."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from pathlib import Path

import aiohttp
import kopf
import pytest
from aiohttp import web

from llmroute_operator.certs import write_self_signed
from llmroute_operator.hub import hub_ssl_context
from llmroute_operator.k8s import Connection, KubernetesApi
from llmroute_operator.main import Operator, Settings, parse
from llmroute_operator.webhook import Webhook
from tests.operator.kopfcluster import TIMEOUT, Emulator, prepare
from tests.operator.test_injection import ON, SETTINGS, apply, pod, sidecar_of
from tests.operator.test_webhook import review
from tests.syncfakes import FakeReviewer


def test_the_webhook_flags_have_environment_defaults_and_come_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMROUTE_WEBHOOK_PORT", "16445")
    monkeypatch.setenv("LLMROUTE_INJECT_OPERATOR_URL", "wss://10.96.0.12:15443/v1/sync")
    settings = parse(["--dev-certs", "/tmp/d", "--webhook-cert", "w.crt", "--webhook-key", "w.key",
                      "--inject-config", "i.json"])
    assert settings.webhook_port == 16445 and settings.webhook_cert == Path("w.crt")
    assert settings.inject_operator_url == "wss://10.96.0.12:15443/v1/sync"
    assert settings.inject_config == Path("i.json")
    with pytest.raises(SystemExit):
        parse(["--dev-certs", "/tmp/d", "--webhook-cert", "w.crt"])
    monkeypatch.delenv("LLMROUTE_WEBHOOK_PORT")
    assert parse(["--dev-certs", "/tmp/d"]).webhook_port == 15445  # 15444 is the admin plane's


async def test_the_server_version_is_read_from_slash_version(aiohttp_client: object) -> None:
    async def version(_: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "20", "gitVersion": "v1.20.2"})

    app = web.Application()
    app.router.add_get("/version", version)
    server = await aiohttp_client(app)  # type: ignore[operator]
    async with aiohttp.ClientSession() as session:
        api = KubernetesApi(session, Connection(str(server.make_url("")).rstrip("/"), False, dict))
        assert await api.server_version() == "v1.20.2"


@pytest.mark.kmock(cls=Emulator)
async def test_the_operator_serves_the_webhook_over_tls_beside_the_hub(kmock: Emulator, tmp_path: Path) -> None:
    prepare(kmock)
    certs = write_self_signed(tmp_path / "certs", hosts=("llmroute-webhook.llmroute.svc",))
    server = str(kmock.url).rstrip("/")
    settings = Settings(hub_host="127.0.0.1", hub_port=0, admin_host="127.0.0.1", admin_port=0,
                        status_debounce_s=0.0, status_resync_s=3600.0, secret_refresh_s=3600.0,
                        webhook_host="127.0.0.1", webhook_port=0, webhook_cert=certs.cert, webhook_key=certs.key)
    async with aiohttp.ClientSession() as session:
        k8s = KubernetesApi(session, Connection(server, False, dict), instance="test")
        operator = Operator(settings, k8s, k8s, FakeReviewer(), webhook=Webhook(SETTINGS, "v1.20.2"))
        stop = asyncio.Event()
        task = asyncio.create_task(operator.run(kopf.ConnectionInfo(server=server), stop_flag=stop,
                                                hub_ssl=hub_ssl_context(str(certs.cert), str(certs.key))))
        try:
            async with asyncio.timeout(TIMEOUT):
                await operator.ready.wait()
                while not operator.webhook_port:
                    await asyncio.sleep(0)
            context = ssl.create_default_context(cafile=str(certs.ca))
            original = pod(ON)
            async with session.post(f"https://127.0.0.1:{operator.webhook_port}/inject", json=review(original),
                                    ssl=context, server_hostname="llmroute-webhook.llmroute.svc") as response:
                assert response.status == 200
                answer = (await response.json())["response"]
            patched = apply(original, json.loads(base64.b64decode(answer["patch"])))
            assert patched["spec"]["containers"][0] is sidecar_of(patched)  # 1.20: a regular first container
        finally:
            stop.set()
            async with asyncio.timeout(TIMEOUT):
                await task
