"""The admission webhook over HTTP: AdmissionReview v1 round trips, refusals, malformed reviews, settings."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from llmroute_operator.webhook import ConfigError, Webhook, load_settings
from tests.operator.test_injection import CA, ON, SETTINGS, apply, pod, sidecar_of

AiohttpClient = Any


def review(obj: dict[str, Any] | None, *, operation: str = "CREATE", kind: str = "Pod",
           namespace: str = "team-a") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "0b5c-42", "kind": {"group": "", "version": "v1", "kind": kind},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": namespace, "operation": operation, "object": obj}}


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(Webhook(SETTINGS, "v1.29.2").app())
    return client


async def answer(client: TestClient[Any, Any], body: Any, path: str = "/inject") -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    assert document["apiVersion"] == "admission.k8s.io/v1" and document["kind"] == "AdmissionReview"
    assert document["response"]["uid"] == "0b5c-42"
    return document["response"]


async def test_a_labelled_pod_comes_back_with_a_patch_that_injects_the_sidecar(client: TestClient[Any, Any]) -> None:
    original = pod(ON)
    response = await answer(client, review(original))
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patched = apply(original, json.loads(base64.b64decode(response["patch"])))
    assert sidecar_of(patched)["restartPolicy"] == "Always"  # the version read at start: 1.29


async def test_the_namespace_entry_injects_an_unlabelled_pod_and_the_pod_entry_does_not(
        client: TestClient[Any, Any]) -> None:
    assert "patch" in await answer(client, review(pod({})), "/inject/namespace")
    unlabelled = await answer(client, review(pod({})))
    assert unlabelled["allowed"] is True and "patch" not in unlabelled
    opted_out = await answer(client, review(pod({"llmroute.dev/inject": "false"})), "/inject/namespace")
    assert opted_out["allowed"] is True and "patch" not in opted_out


async def test_the_request_namespace_counts_when_the_pod_has_none_yet(client: TestClient[Any, Any]) -> None:
    original = pod(ON)
    del original["metadata"]["namespace"]
    response = await answer(client, review(original, namespace="kube-system"))
    assert response["allowed"] is True and "patch" not in response


async def test_a_bad_annotation_is_refused_with_a_message_naming_it(client: TestClient[Any, Any]) -> None:
    response = await answer(client, review(pod(ON, {"llmroute.dev/memory": "lots"})))
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 400
    assert "llmroute.dev/memory" in response["status"]["message"]


@pytest.mark.parametrize("operation, kind", [("UPDATE", "Pod"), ("CREATE", "Deployment")])
async def test_other_operations_and_kinds_are_allowed_untouched(
        client: TestClient[Any, Any], operation: str, kind: str) -> None:
    response = await answer(client, review({"metadata": {}, "spec": {}}, operation=operation, kind=kind))
    assert response == {"uid": "0b5c-42", "allowed": True}


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not an AdmissionReview"),
    (b"[]", "not a JSON object"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}).encode(), "v1beta1"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "request is missing"),
    (json.dumps({**review(pod(ON)), "request": {**review(pod(ON))["request"], "uid": ""}}).encode(), "uid"),
    (json.dumps(review({"metadata": {}})).encode(), "not a Pod"),
])
async def test_a_malformed_review_gets_a_clean_400_that_says_what_is_wrong(
        client: TestClient[Any, Any], body: bytes, message: str) -> None:
    response = await client.post("/inject", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert message in (await response.json())["error"]


async def test_counts_say_what_the_webhook_did(aiohttp_client: AiohttpClient) -> None:
    webhook = Webhook(SETTINGS, "v1.20.2")
    client = await aiohttp_client(webhook.app())
    await client.post("/inject", json=review(pod(ON)))
    await client.post("/inject", json=review(pod({})))
    await client.post("/inject", json=review(pod(ON, {"llmroute.dev/cpu": "x"})))
    await client.post("/inject", data=b"x")
    assert webhook.counts == {"injected": 1, "skipped": 1, "refused": 1, "malformed": 1}


def write_config(tmp_path: Path, **fields: Any) -> Path:
    ca = tmp_path / "ca.crt"
    ca.write_text(CA)
    config = {"image": "localhost/llmroute:0.1.0", "serverName": "llmroute-hub.llmroute.svc", "caFile": str(ca),
              **fields}
    path = tmp_path / "injection.json"
    path.write_text(json.dumps(config))
    return path


def test_settings_load_from_the_charts_json_with_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, resources={"requests": {"cpu": "20m"}, "limits": {"memory": "128Mi"}},
                        excludedNamespaces=["kube-system", "llmroute"], nativeSidecar="never",
                        env=[{"name": "OTEL_SERVICE_NAME", "value": "app"}], imagePullSecrets=[{"name": "mirror"}])
    settings = load_settings(path, "wss://10.96.0.12:15443/v1/sync")
    assert settings.ca_pem == CA and settings.operator_url == "wss://10.96.0.12:15443/v1/sync"
    assert settings.resources.cpu_request == "20m" and settings.resources.memory_request == "64Mi"
    assert settings.resources.cpu_limit is None and settings.resources.memory_limit == "128Mi"
    assert settings.excluded_namespaces == {"kube-system", "llmroute"} and settings.native_sidecar == "never"
    assert settings.extra_env == (("OTEL_SERVICE_NAME", "app"),) and settings.token_expiration_s == 3600
    assert settings.image_pull_secrets == ("mirror",)


@pytest.mark.parametrize("fields, url, message", [
    ({}, "wss://$(LLMROUTE_HUB_SERVICE_HOST):15443/v1/sync", "is the hub Service missing"),
    ({}, "https://10.96.0.12/v1/sync", "must be wss://"),
    ({"tokenExpirationSeconds": 60}, "wss://h/v1/sync", "between 600"),
    ({"caFile": "/nonexistent/ca.crt"}, "wss://h/v1/sync", "cannot read the hub's CA"),
    ({"nativeSidecar": "maybe"}, "wss://h/v1/sync", "auto, always or never"),
])
def test_bad_settings_stop_the_webhook_at_start_with_a_clear_message(
        tmp_path: Path, fields: dict[str, Any], url: str, message: str) -> None:
    path = write_config(tmp_path, **fields)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path, url)


def test_a_missing_key_or_file_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    raw = json.loads(path.read_text())
    del raw["serverName"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="lack 'serverName'"):
        load_settings(path, "wss://h/v1/sync")
    with pytest.raises(ConfigError, match="cannot read the injection settings"):
        load_settings(tmp_path / "absent.json", "wss://h/v1/sync")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        load_settings(tmp_path / "bad.json", "wss://h/v1/sync")
