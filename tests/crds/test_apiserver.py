"""Tier B: the CRDs on a real API server (Kubernetes 1.20, see tests/kube.py).

The CRDs install and become Established without a NonStructuralSchema condition; every document of the
agreement tests gets from the real server the verdict and the stored spec that apiserver.py predicts
without CEL (1.20 evaluates no CEL rules; those are checked by the model and, in a cluster, by the
operator); and kubectl shows what the CRDs promise: explain, printer columns, short names, the category,
`kubectl wait --for=condition=Synced`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmroute_operator.crds import load_crds
from tests.crds.apiserver import admit
from tests.crds.test_agreement import CASES, VALID, as_applied
from tests.kube import KubeAPI, running_apiserver

NAMESPACE = "crds"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "standalone.yaml"
PLURALS = {"LLMProvider": "llmproviders", "LLMRoute": "llmroutes"}


def install_crds(api: KubeAPI) -> None:
    for crd in load_crds():
        status, body = api.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        assert status == 201, body
    deadline = time.monotonic() + 30
    for crd in load_crds():
        while True:
            _, body = api.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                         f"{crd['metadata']['name']}")
            conditions = {c["type"]: c["status"] for c in body.get("status", {}).get("conditions", [])}
            if conditions.get("Established") == "True":
                break
            assert time.monotonic() < deadline, body.get("status")
            time.sleep(0.1)
    for plural in PLURALS.values():  # discovery and the REST storage are ready once a list answers
        while api.request("GET", f"/apis/llmroute.dev/v1alpha1/{plural}")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPI]:
    with running_apiserver(tmp_path_factory.mktemp("kube")) as api:
        install_crds(api)
        status, body = api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                                    "metadata": {"name": NAMESPACE}})
        assert status == 201, body
        yield api


def test_the_crds_are_established_and_structural(api: KubeAPI) -> None:
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


def create(api: KubeAPI, doc: dict[str, Any], *, dry_run: bool = True) -> tuple[int, dict[str, Any]]:
    path = f"/apis/llmroute.dev/v1alpha1/namespaces/{NAMESPACE}/{PLURALS[doc['kind']]}"
    return api.request("POST", path + ("?dryRun=All" if dry_run else ""), doc)


@pytest.mark.parametrize(("name", "doc"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_the_real_api_server_stores_what_the_model_predicts(api: KubeAPI, name: str, doc: dict[str, Any]) -> None:
    status, body = create(api, doc)
    predicted = admit(doc, with_cel=False)
    assert (status == 201) == predicted.accepted, (body.get("message"), predicted.errors)
    if predicted.accepted:
        assert predicted.stored is not None
        assert body["spec"] == predicted.stored["spec"]


def test_kubectl_explain_reads_the_descriptions(api: KubeAPI) -> None:
    deadline = time.monotonic() + 30  # the API server publishes a new CRD's OpenAPI a few seconds late
    while (explained := api.kubectl("explain", "llmroute.spec.fallback.perTryTimeout")).returncode != 0:
        assert time.monotonic() < deadline, explained.stderr
        time.sleep(0.5)
    assert explained.returncode == 0, explained.stderr
    assert "One attempt from sending to the last byte" in " ".join(explained.stdout.split())
    explained = api.kubectl("explain", "llmp.spec.credentials")
    assert "exactly one of secretRef" in " ".join(explained.stdout.split())


# Non-empty messages: this v1.20 build (Debian source, Go 1.19, reflect2 swapped) turns "" in a custom
# resource's JSON into null, which the schema then refuses ("must be of type string"); built-in kinds
# are not affected.
ROUTE_STATUS = {
    "observedGeneration": 1, "tableVersion": "3f2a9c1d00e4b7a1",
    "sidecars": {"selected": 3, "synced": 2, "summary": "2/3", "nacked": []},
    "spend": {"periodUSD": 12.5, "percentOfBudget": 5, "periodStart": "2026-12-03T00:00:00Z"},
    "conditions": [
        {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "the spec is valid",
         "lastTransitionTime": "2026-12-03T07:00:00Z"},
        {"type": "Synced", "status": "True", "reason": "AllSynced", "message": "3/3 sidecars run the current table",
         "lastTransitionTime": "2026-12-03T07:00:00Z"},
    ],
}


def test_kubectl_get_shows_the_printer_columns_and_wait_works(api: KubeAPI) -> None:
    applied = api.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    assert applied.returncode == 0, applied.stderr
    status, body = api.request("PATCH", f"/apis/llmroute.dev/v1alpha1/namespaces/{NAMESPACE}/llmroutes/chat/status",
                               {"status": ROUTE_STATUS}, content_type="application/merge-patch+json")
    assert status == 200, body.get("message")
    table = api.kubectl("get", "llmr", "-n", NAMESPACE).stdout.split("\n")
    assert table[0].split() == ["NAME", "ACCEPTED", "SYNCED", "SPEND", "%", "TABLE", "AGE"]
    assert table[1].split()[:5] == ["chat", "True", "2/3", "5", "3f2a9c1d00e4b7a1"]
    providers = api.kubectl("get", "llmp", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert sorted(providers) == ["llmprovider.llmroute.dev/azure-gpt", "llmprovider.llmroute.dev/claude",
                                 "llmprovider.llmroute.dev/openai-main"]
    one = api.kubectl("get", "llmroute", "chat", "-n", NAMESPACE, "-o", "json")
    assert one.returncode == 0 and json.loads(one.stdout)["status"]["sidecars"]["summary"] == "2/3", one.stderr
    both = api.kubectl("get", "llm", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert len(both) == 4
    waited = api.kubectl("wait", "-n", NAMESPACE, "--for=condition=Synced", "llmroute/chat", "--timeout=10s")
    assert waited.returncode == 0, waited.stderr


def test_status_is_written_only_through_the_status_subresource(api: KubeAPI) -> None:
    doc = as_applied(VALID["the valid set"]())[2]
    doc["metadata"]["name"] = "status-ignored"
    doc["status"] = ROUTE_STATUS
    status, body = create(api, doc, dry_run=False)
    assert status == 201, body
    assert "status" not in body
