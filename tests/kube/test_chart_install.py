"""Tier B: the chart installs into the real API server (v1.20) with Helm's own library, and uninstalls.

Helm validates every object against the server's OpenAPI before it creates anything, so this is where a
field the server does not know (a CRD's CEL rules on a server older than 1.23) refuses the whole install.
No pod runs here (no node): the operator's Deployment is created, never scheduled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import helm_python as helm
import pytest

from tests.kube.apiserver import ADMIN_TOKEN, ApiServer

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmroute"
REPO_CRDS = REPO / "crds"   # what the docs apply: `kubectl apply -f crds/` from the repository
RELEASE, NAMESPACE = "llmroute", "llmroute-system"
CRDS = ("llmproviders.llmroute.dev", "llmroutes.llmroute.dev")
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.fixture
def helm_config(apiserver: ApiServer) -> Iterator[helm.Config]:
    config = helm.Config(kube_apiserver=apiserver.url, kube_token=ADMIN_TOKEN, kube_ca_file=apiserver.ca_file,
                         namespace=NAMESPACE)
    try:
        yield config
    finally:
        config.close()


def without_crds(apiserver: ApiServer) -> None:
    """Other tests of the session applied the CRDs themselves; the chart must create (own) them here."""
    for name in CRDS:
        apiserver.request("DELETE", f"{CRD_PATH}/{name}")
    deadline = time.monotonic() + 30
    while any(apiserver.request("GET", f"{CRD_PATH}/{name}")[0] != 404 for name in CRDS):
        assert time.monotonic() < deadline, "the CRDs of earlier tests are not deleted"
        time.sleep(0.1)


def test_the_chart_installs_on_1_20_and_uninstall_keeps_the_crds(apiserver: ApiServer,
                                                                  helm_config: helm.Config) -> None:
    without_crds(apiserver)
    release = helm_config.install(helm.Chart.load(CHART), RELEASE, {"image": {"repository": "localhost/llmroute"}},
                                  namespace=NAMESPACE, create_namespace=True, timeout=60)
    assert release["status"] == "deployed"
    for name in CRDS:
        status, crd = apiserver.request("GET", f"{CRD_PATH}/{name}")
        assert status == 200 and crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    status, _ = apiserver.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}-operator")
    assert status == 200
    status, configuration = apiserver.request(
        "GET", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{RELEASE}")
    assert status == 200 and len(configuration["webhooks"]) == 2

    helm_config.uninstall(RELEASE, timeout=60)
    assert apiserver.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}-operator")[0] == 404
    assert apiserver.request(
        "GET", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{RELEASE}")[0] == 404
    for name in CRDS:  # helm.sh/resource-policy: keep — every LLMProvider and LLMRoute survives
        assert apiserver.request("GET", f"{CRD_PATH}/{name}")[0] == 200


def test_the_crds_apply_on_1_20_as_the_docs_say_and_the_chart_installs_without_them(
        apiserver: ApiServer, helm_config: helm.Config) -> None:
    """The path for CRDs managed apart (`crds.install=false`), with the session's kubectl v1.20: plain
    `kubectl apply -f crds/` is refused on a server before 1.23 (its client-side check does not know the CEL
    rules), which is why the docs say `--validate=false` there; with it the CRDs are created and Established,
    and applying again stores nothing new; then the chart installs without them."""
    without_crds(apiserver)
    plain = apiserver.kubectl("apply", "-f", str(REPO_CRDS))
    assert plain.returncode != 0 and 'unknown field "x-kubernetes-validations"' in plain.stderr, plain
    applied = apiserver.kubectl("apply", "--validate=false", "-f", str(REPO_CRDS))
    assert applied.returncode == 0, applied.stderr
    assert sorted(applied.stdout.split("\n")) == sorted(["", *(f"customresourcedefinition.apiextensions.k8s.io/"
                                                              f"{name} created" for name in CRDS)])
    for name in CRDS:
        waited = apiserver.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
        assert waited.returncode == 0, waited.stderr
    versions = {name: apiserver.request("GET", f"{CRD_PATH}/{name}")[1]["metadata"]["resourceVersion"] for name in CRDS}
    again = apiserver.kubectl("apply", "--validate=false", "-f", str(REPO_CRDS))
    assert again.returncode == 0, again.stderr
    for name in CRDS:  # kubectl says "configured" (it re-sends the CEL rules the server drops); nothing changes
        assert apiserver.request("GET", f"{CRD_PATH}/{name}")[1]["metadata"]["resourceVersion"] == versions[name]

    release = helm_config.install(helm.Chart.load(CHART), RELEASE, {"image": {"repository": "localhost/llmroute"},
                                                                     "crds": {"install": False}},
                                  namespace=NAMESPACE, create_namespace=True, timeout=60)
    try:
        assert release["status"] == "deployed"
        assert "kind: CustomResourceDefinition" not in release["manifest"]
    finally:
        helm_config.uninstall(RELEASE, timeout=60)
    for name in CRDS:  # not the release's: uninstall leaves them as they were
        status, crd = apiserver.request("GET", f"{CRD_PATH}/{name}")
        assert status == 200 and "meta.helm.sh/release-name" not in crd["metadata"].get("annotations", {})
