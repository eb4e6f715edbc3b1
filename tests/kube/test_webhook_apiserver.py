"""Tier B: the real API server calls the injection webhook on Pod create.

The webhook is the operator's own code (webhook.py over injection.py) served over TLS on 127.0.0.1 with a
test CA; its settings are the chart's injection ConfigMap read by `load_settings`, and the
MutatingWebhookConfiguration is the chart's, with only its client config pointed at that server and the
test CA as its caBundle. So the chart's rules, selectors and failure policy are what the API server applies.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from aiohttp import web

from llmroute_operator.certs import CertFiles, write_self_signed
from llmroute_operator.hub import hub_ssl_context
from llmroute_operator.webhook import Webhook, load_settings
from tests.kube.apiserver import ApiServer
from tests.kube.client import Kube, KubeError
from tests.ports import free_ports

CHART = Path(__file__).resolve().parents[2] / "charts" / "llmroute"
CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
HUB_URL = "wss://10.96.0.10:15443/v1/sync"
LABEL = {"llmroute.dev/inject": "true"}


@cache
def chart_objects() -> dict[str, dict[str, Any]]:
    """The chart's injection ConfigMap and MutatingWebhookConfiguration, by kind."""
    manifests = helm.Chart.load(CHART).render({"image": {"repository": "localhost/llmroute", "tag": "tier-b"}},
                                               name="llmroute", namespace="llmroute-system", is_install=True)
    docs = [yaml.safe_load(manifests[f"llmroute/templates/{name}.yaml"])
            for name in ("webhook-configmap", "webhook-mutatingwebhookconfiguration")]
    return {doc["kind"]: doc for doc in docs}


@dataclass
class Served:
    webhook: Webhook
    runner: web.AppRunner | None
    url: str


async def serve(webhook: Webhook, certs: CertFiles, port: int) -> web.AppRunner:
    runner = web.AppRunner(webhook.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=hub_ssl_context(str(certs.cert), str(certs.key))).start()
    return runner


@pytest.fixture
async def served(apiserver: ApiServer, admin: Kube, tmp_path: Path) -> AsyncIterator[Served]:
    certs = write_self_signed(tmp_path / "certs", hosts=("127.0.0.1",))
    raw = json.loads(chart_objects()["ConfigMap"]["data"]["injection.json"])
    (tmp_path / "injection.json").write_text(json.dumps({**raw, "caFile": str(certs.ca)}))
    version = (await admin.get("/version"))["gitVersion"]
    webhook = Webhook(load_settings(tmp_path / "injection.json", HUB_URL), version)
    port = free_ports(1)[0]
    configuration = json.loads(json.dumps(chart_objects()["MutatingWebhookConfiguration"]))
    name = configuration["metadata"]["name"] = f"llmroute-tier-b-{port}"
    for entry in configuration["webhooks"]:
        path = entry["clientConfig"]["service"]["path"]
        entry["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                                 "caBundle": base64.b64encode(certs.ca.read_bytes()).decode()}
    made = Served(webhook, await serve(webhook, certs, port), f"https://127.0.0.1:{port}")
    await admin.create(CONFIGURATIONS, configuration)
    try:
        yield made
    finally:
        await admin.delete(f"{CONFIGURATIONS}/{name}")
        if made.runner is not None:
            await made.runner.cleanup()


def pod(name: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            # set by the ServiceAccount admission plugin in a cluster; off on this API server
            "spec": {"serviceAccountName": "default", "containers": [{"name": "app", "image": "localhost/app:none"}]}}


def containers(stored: dict[str, Any]) -> list[str]:
    return [c["name"] for c in stored["spec"]["containers"]]


async def create_when_effective(admin: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """The API server learns of a new webhook configuration asynchronously: dry-run creates until it applies."""
    deadline = time.monotonic() + 10
    path = f"/api/v1/namespaces/{namespace}/pods"
    while "llmroute-proxy" not in containers(await admin.create(path + "?dryRun=All", body)):
        assert time.monotonic() < deadline, "the API server never applied the webhook configuration"
        await admin.request("GET", "/readyz")
    return await admin.create(path, body)


async def test_the_api_server_calls_the_webhook_and_stores_the_pod_with_the_sidecar(
        served: Served, admin: Kube) -> None:
    namespace = await admin.namespace("inject")
    stored = await create_when_effective(admin, namespace, pod("app", LABEL))
    assert containers(stored) == ["llmroute-proxy", "app"]  # 1.20: a regular container, not a native sidecar
    assert "initContainers" not in stored["spec"]
    sidecar = stored["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["LLMROUTE_OPERATOR_URL"] == HUB_URL
    assert env["LLMROUTE_OPERATOR_SERVER_NAME"] == "llmroute-hub.llmroute-system.svc"
    assert sidecar["image"] == "localhost/llmroute:tier-b"
    volumes = {v["name"]: v for v in stored["spec"]["volumes"]}
    assert volumes["llmroute-token"]["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "llmroute.dev"
    assert volumes["llmroute-state"]["emptyDir"]["medium"] == "Memory"
    assert stored["metadata"]["annotations"]["llmroute.dev/status"] == "injected"
    again = await admin.get(f"/api/v1/namespaces/{namespace}/pods/app")
    assert containers(again) == ["llmroute-proxy", "app"]  # stored so, not only answered so


async def test_a_pod_without_the_label_is_stored_as_sent(served: Served, admin: Kube) -> None:
    namespace = await admin.namespace("plain")
    await create_when_effective(admin, namespace, pod("labelled", LABEL))
    calls = dict(served.webhook.counts)
    stored = await admin.create(f"/api/v1/namespaces/{namespace}/pods", pod("plain", {"app": "plain"}))
    assert containers(stored) == ["app"] and "volumes" not in stored["spec"]
    assert "llmroute.dev/status" not in (stored["metadata"].get("annotations") or {})
    assert served.webhook.counts == calls  # the objectSelector kept the API server from even calling it


async def test_a_bad_annotation_is_refused_with_a_message_naming_it(served: Served, admin: Kube) -> None:
    namespace = await admin.namespace("refused")
    await create_when_effective(admin, namespace, pod("fine", LABEL))
    with pytest.raises(KubeError) as refused:
        await admin.create(f"/api/v1/namespaces/{namespace}/pods",
                           pod("greedy", LABEL, {"llmroute.dev/memory": "lots"}))
    assert refused.value.status == 400 and "llmroute.dev/memory" in refused.value.body["message"]


async def test_with_the_webhook_down_the_pod_is_created_without_the_sidecar(served: Served, admin: Kube) -> None:
    """failurePolicy: Ignore (the chart's default): the operator is no single point of failure for pods."""
    namespace = await admin.namespace("down")
    await create_when_effective(admin, namespace, pod("before", LABEL))
    assert served.runner is not None
    await served.runner.cleanup()
    served.runner = None
    stored = await admin.create(f"/api/v1/namespaces/{namespace}/pods", pod("app", LABEL))
    assert containers(stored) == ["app"]
    assert "llmroute.dev/status" not in (stored["metadata"].get("annotations") or {})


async def test_a_pod_that_must_complete_is_refused_a_regular_sidecar_with_the_reason(
        served: Served, admin: Kube) -> None:
    """Before 1.29 the sidecar is a regular container, which would keep a Job's pod from ever completing."""
    namespace = await admin.namespace("job")
    await create_when_effective(admin, namespace, pod("fine", LABEL))
    job_pod = pod("batch", LABEL)
    job_pod["spec"]["restartPolicy"] = "Never"
    with pytest.raises(KubeError) as refused:
        await admin.create(f"/api/v1/namespaces/{namespace}/pods", job_pod)
    assert refused.value.status == 400 and "restartPolicy Never" in refused.value.body["message"]
    job_pod["metadata"]["labels"] = {"llmroute.dev/inject": "false"}
    assert containers(await admin.create(f"/api/v1/namespaces/{namespace}/pods", job_pod)) == ["app"]
