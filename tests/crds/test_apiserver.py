"""Tier B: the CRDs on a real API server (Kubernetes 1.20, see tests/kube/apiserver.py).

The CRDs install and become Established without a NonStructuralSchema condition; every document of the
agreement tests gets from the real server the verdict and the stored spec that apiserver.py predicts
without CEL (1.20 evaluates no CEL rules; those are checked by the model and, in a cluster, by the
operator); and kubectl shows what the CRDs promise: explain, printer columns, short names, the category,
`kubectl wait --for=condition=Synced`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from llmroute_operator.crds import load_crds
from tests.crds.apiserver import admit
from tests.crds.test_agreement import CASES, VALID, as_applied
from tests.kube.apiserver import ApiServer

NAMESPACE = "crds"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "standalone.yaml"
PLURALS = {"LLMProvider": "llmproviders", "LLMRoute": "llmroutes"}


@pytest.fixture(scope="module")
def api(apiserver: ApiServer) -> ApiServer:
    apiserver.install_crds()
    status, body = apiserver.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                                     "metadata": {"name": NAMESPACE}})
    assert status in (201, 409), body
    return apiserver


def test_the_crds_are_established_and_structural(api: ApiServer) -> None:
    for crd in load_crds():
        _, body = api.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                     f"{crd['metadata']['name']}")
        conditions = {c["type"]: c["status"] for c in body["status"]["conditions"]}
        assert conditions == {"NamesAccepted": "True", "Established": "True"}


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = [(f"{name} {n}", doc) for name, make in VALID.items() for n, doc in enumerate(as_applied(make()))]
    out += [(case.id, as_applied(case.docs)[case.index]) for case in CASES]
    for _, doc in out:
        if isinstance(doc.get("metadata"), dict):
            doc["metadata"].pop("namespace", None)
    return out


DOCUMENTS = documents()


def create(api: ApiServer, doc: dict[str, Any], *, dry_run: bool = True) -> tuple[int, dict[str, Any]]:
    path = f"/apis/llmroute.dev/v1alpha1/namespaces/{NAMESPACE}/{PLURALS[doc['kind']]}"
    return api.request("POST", path + ("?dryRun=All" if dry_run else ""), doc)


@pytest.mark.parametrize(("name", "doc"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_the_real_api_server_stores_what_the_model_predicts(api: ApiServer, name: str, doc: dict[str, Any]) -> None:
    status, body = create(api, doc)
    predicted = admit(doc, with_cel=False)
    assert (status == 201) == predicted.accepted, (body.get("message"), predicted.errors)
    if predicted.accepted:
        assert predicted.stored is not None
        assert body["spec"] == predicted.stored["spec"]


def test_kubectl_explain_reads_the_descriptions(api: ApiServer) -> None:
    deadline = time.monotonic() + 30  # the API server publishes a new CRD's OpenAPI a few seconds late
    while (explained := api.kubectl("explain", "llmroute.spec.fallback.perTryTimeout")).returncode != 0:
        assert time.monotonic() < deadline, explained.stderr
        time.sleep(0.5)
    assert explained.returncode == 0, explained.stderr
    assert "One attempt from sending to the last byte" in " ".join(explained.stdout.split())
    explained = api.kubectl("explain", "llmp.spec.credentials")
    assert "exactly one of secretRef" in " ".join(explained.stdout.split())


ROUTE_STATUS = {
    "observedGeneration": 1, "tableVersion": "3f2a9c1d00e4b7a1",
    "sidecars": {"selected": 3, "synced": 2, "summary": "2/3", "nacked": []},
    "spend": {"periodUSD": 12.5, "percentOfBudget": 5, "periodStart": "2026-12-03T00:00:00Z"},
    "conditions": [
        {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "the spec is valid",
         "lastTransitionTime": "2026-12-03T07:00:00Z"},
        {"type": "Synced", "status": "True", "reason": "AllSynced", "message": "3/3 sidecars run the current table",
         "lastTransitionTime": "2026-12-03T07:00:00Z"},
        {"type": "Priced", "status": "False", "reason": "PricingMissing",
         "message": "openai-main/gpt-4o has no pricing", "lastTransitionTime": "2026-12-03T07:00:00Z"},
    ],
}


def test_kubectl_get_shows_the_printer_columns_and_wait_works(api: ApiServer) -> None:
    applied = api.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    assert applied.returncode == 0, applied.stderr
    status, body = api.request("PATCH", f"/apis/llmroute.dev/v1alpha1/namespaces/{NAMESPACE}/llmroutes/chat/status",
                               {"status": ROUTE_STATUS}, content_type="application/merge-patch+json")
    assert status == 200, body.get("message")
    table = api.kubectl("get", "llmr", "-n", NAMESPACE).stdout.split("\n")
    assert table[0].split() == ["NAME", "ACCEPTED", "SYNCED", "SPEND", "%", "TABLE", "AGE"]
    assert table[1].split()[:5] == ["chat", "True", "2/3", "5", "3f2a9c1d00e4b7a1"]
    wide = api.kubectl("get", "llmr", "-n", NAMESPACE, "-o", "wide").stdout.split("\n")
    assert wide[0].split()[-3:] == ["DEGRADED", "PRICED", "AGE"] and wide[1].split()[-2] == "False"
    providers = api.kubectl("get", "llmp", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert sorted(providers) == ["llmprovider.llmroute.dev/azure-gpt", "llmprovider.llmroute.dev/claude",
                                 "llmprovider.llmroute.dev/openai-main"]
    one = api.kubectl("get", "llmroute", "chat", "-n", NAMESPACE, "-o", "json")
    assert one.returncode == 0 and json.loads(one.stdout)["status"]["sidecars"]["summary"] == "2/3", one.stderr
    both = api.kubectl("get", "llm", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert len(both) == 4
    waited = api.kubectl("wait", "-n", NAMESPACE, "--for=condition=Synced", "llmroute/chat", "--timeout=10s")
    assert waited.returncode == 0, waited.stderr


def test_status_is_written_only_through_the_status_subresource(api: ApiServer) -> None:
    doc = as_applied(VALID["the valid set"]())[2]
    doc["metadata"]["name"] = "status-ignored"
    doc["status"] = ROUTE_STATUS
    status, body = create(api, doc, dry_run=False)
    assert status == 201, body
    assert "status" not in body


def test_a_status_with_empty_strings_and_zeros_is_stored_as_sent(api: ApiServer) -> None:
    """Built with Go >= 1.19, an unpatched 1.20 API server refuses "" and 0 in a custom resource as null
    (go-openapi's zero-value check; build-binaries.sh patches it): this one must behave as released."""
    doc = as_applied(VALID["the valid set"]())[2]
    doc["metadata"]["name"] = "zero-values"
    assert create(api, doc, dry_run=False)[0] == 201
    zeros = {"tableVersion": "", "sidecars": {"selected": 0, "synced": 0, "summary": "0/0", "nacked": []},
             "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                             "lastTransitionTime": "2026-12-03T07:00:00Z"}]}
    status, body = api.request("PATCH", f"/apis/llmroute.dev/v1alpha1/namespaces/{NAMESPACE}/llmroutes/zero-values"
                                        "/status", {"status": zeros}, content_type="application/merge-patch+json")
    assert status == 200, body.get("message")
    assert body["status"]["sidecars"] == zeros["sidecars"] and body["status"]["tableVersion"] == ""
