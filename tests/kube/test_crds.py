"""Tier B: the CRDs of crds/ in a real API server, and the agreement tests' model of it checked against it.

tests/crds/ proves the CRDs and the sidecar's parser agree through a model of what an API server does on
create (tests/crds/apiserver.py). Here every document of those tests is sent to a real kube-apiserver
(v1.20, which ignores CEL rules: the model runs `with_cel=False`) with a server-side dry run, and the
server's verdict and stored object must be the model's. So the model cannot drift from the real thing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from llmroute_operator.crds import GROUP, VERSION, load_crds
from tests.crds.apiserver import admit
from tests.crds.test_agreement import CASES, VALID, Case, as_applied
from tests.kube.client import Kube, KubeError, install_crds

PLURALS = {crd["spec"]["names"]["kind"]: crd["spec"]["names"]["plural"] for crd in load_crds()}


@pytest.fixture
async def namespace(admin: Kube) -> AsyncIterator[str]:
    await install_crds(admin)
    yield await admin.namespace("crds")


async def dry_run_create(admin: Kube, namespace: str, document: dict[str, Any]) -> dict[str, Any]:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[document['kind']]}?dryRun=All"
    return await admin.create(path, document)


def comparable(stored: dict[str, Any]) -> dict[str, Any]:
    return {"spec": stored.get("spec"), "name": stored["metadata"]["name"]}


async def test_the_crds_are_accepted_by_a_real_api_server_as_structural(admin: Kube) -> None:
    await install_crds(admin)
    for crd in load_crds():
        served = await admin.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}")
        conditions = {c["type"]: c for c in served["status"]["conditions"]}
        assert "NonStructuralSchema" not in conditions, conditions.get("NonStructuralSchema")
        assert conditions["NamesAccepted"]["status"] == "True"


@pytest.mark.parametrize("name", list(VALID))
async def test_a_valid_document_is_stored_by_the_real_server_as_the_model_stores_it(
        admin: Kube, namespace: str, name: str) -> None:
    for document in as_applied(VALID[name]()):
        document.get("metadata", {}).pop("namespace", None)
        model = admit(document, with_cel=False)
        assert model.stored is not None, model.errors
        stored = await dry_run_create(admin, namespace, document)
        assert comparable(stored) == comparable(model.stored)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_an_invalid_document_gets_the_same_verdict_from_the_real_server_and_the_model(
        admin: Kube, namespace: str, case: Case) -> None:
    document = as_applied(case.docs)[case.index]
    document.get("metadata", {}).pop("namespace", None)
    model = admit(document, with_cel=False)
    try:
        stored = await dry_run_create(admin, namespace, document)
    except KubeError as error:
        assert error.status in (400, 422), error  # 400: a body the server cannot decode as this kind
        assert model.stored is None, f"the model stores what the server refuses: {error}"
        return
    assert model.stored is not None, f"the model refuses what the server stores: {model.errors}"
    assert comparable(stored) == comparable(model.stored)
