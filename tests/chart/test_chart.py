"""Tier A for the Helm chart: strict lint, render over a matrix of values files, kubernetes-validate --strict
for Kubernetes 1.29–1.33, and assertions on the rendered objects.

Rendering and linting use Helm's own library (helm-python-sdk, no helm binary); validation uses
kubernetes-validate's bundled OpenAPI schemas in strict mode (unknown fields are errors).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import helm_python as helm
import kubernetes_validate.utils as kv
import pytest
import yaml
from cryptography import x509

from llmroute_operator.injection import WIRING_ENV, InjectionSettings, mutate
from llmroute_operator.webhook import load_settings
from tests.operator.kopfcluster import Emulator, prepare
from tests.operator.test_injection import apply

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llmroute"
VALUES = Path(__file__).parent / "values"
MATRIX = sorted(p.stem for p in VALUES.glob("*.yaml"))
NAMESPACE = "llmroute"
KUBE_VERSIONS = ("1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0")
# Custom resources of other projects: kubernetes-validate has no schema for them (it only warns).
FOREIGN_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("cert-manager.io/v1", "Certificate"),
                 ("cert-manager.io/v1", "Issuer")}


def values(name: str) -> dict[str, Any]:
    return yaml.safe_load((VALUES / f"{name}.yaml").read_text()) or {}


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(overrides: dict[str, Any] | None = None, *, name: str = "llmroute") -> list[dict[str, Any]]:
    manifests = chart().render(overrides or {}, name=name, namespace=NAMESPACE, is_install=True)
    return [doc for path, text in sorted(manifests.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


@cache
def rendered(values_file: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(values(values_file)))


def one(docs: Any, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def kinds(docs: Any) -> list[str]:
    return sorted(d["kind"] for d in docs)


# --- one source of truth -------------------------------------------------------------------------------

@pytest.mark.parametrize("link, source", [
    ("files/crds/llmproviders.yaml", "crds/llmproviders.yaml"),
    ("files/crds/llmroutes.yaml", "crds/llmroutes.yaml"),
    ("files/operator-rbac.yaml", "operator/rbac.yaml"),
])
def test_the_chart_reads_the_one_source_through_links_and_packages_its_content(
        link: str, source: str, tmp_path: Path) -> None:
    """Helm's .Files cannot read outside the chart: symbolic links bring crds/ and rbac.yaml in, no copies."""
    assert (CHART / link).is_symlink() and (CHART / link).resolve() == (ROOT / source).resolve()
    with tarfile.open(chart().save(tmp_path)) as archive:
        member = archive.getmember(f"llmroute/{link}")
        assert member.isfile()  # the packaged chart holds the file itself
        packed = archive.extractfile(member)
        assert packed is not None and packed.read() == (ROOT / source).read_bytes()


def test_the_rendered_crds_are_the_crds_folder_plus_labels_and_keep() -> None:
    docs = rendered("defaults")
    for name in ("llmproviders", "llmroutes"):
        source = yaml.safe_load((ROOT / "crds" / f"{name}.yaml").read_text())
        crd = one(docs, "CustomResourceDefinition", f"{name}.llmroute.dev")
        assert crd["spec"] == source["spec"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    assert "CustomResourceDefinition" not in kinds(rendered("no-crds"))
    overrides = [d for d in rendered("overrides") if d["kind"] == "CustomResourceDefinition"]
    assert overrides and all("annotations" not in d["metadata"] for d in overrides)  # crds.keep: false


def test_the_clusterrole_has_exactly_the_rules_the_operator_proved() -> None:
    proved = yaml.safe_load((ROOT / "operator" / "rbac.yaml").read_text())["rules"]
    for values_file in MATRIX:
        docs = rendered(values_file)
        role = one(docs, "ClusterRole")
        assert role["rules"] == proved
        assert [d["kind"] for d in docs if d["kind"] in ("Role", "RoleBinding")] == []
        binding = one(docs, "ClusterRoleBinding")
        account = one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]


# --- lint and validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("values_file", MATRIX)
@pytest.mark.parametrize("kube_version", ["v1.20.0", "v1.29.0", "v1.33.0"])
def test_the_chart_lints_strictly(values_file: str, kube_version: str) -> None:
    report = helm.lint(CHART, values(values_file), strict=True, kube_version=kube_version, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_on_1_20_the_pdb_is_policy_v1beta1() -> None:
    report = helm.lint(CHART, {}, strict=True, kube_version="v1.20.0", namespace=NAMESPACE)
    assert report["errors"] == []
    assert one(rendered("defaults"), "PodDisruptionBudget")["apiVersion"] == "policy/v1"


def validate_all(docs: Any, version: str) -> list[str]:
    errors = []
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in FOREIGN_KINDS:
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, error.path))}: {error.message}")
    return errors


@pytest.mark.parametrize("values_file", MATRIX)
def test_every_rendered_object_passes_kubernetes_validate_strict_for_1_29_to_1_33(values_file: str) -> None:
    docs = rendered(values_file)
    for version in KUBE_VERSIONS:
        assert validate_all(docs, version) == [], version


def test_the_kubernetes_validate_command_passes_the_default_render(tmp_path: Path) -> None:
    manifest = tmp_path / "llmroute.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered("defaults")))
    args = ["-k", KUBE_VERSIONS[0], "-k", KUBE_VERSIONS[-1]]
    result = subprocess.run([str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "--quiet",
                             *args, str(manifest)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_other_projects_custom_resources_go_unvalidated() -> None:
    everything = [d for f in MATRIX for d in rendered(f)]
    unknown = {(d["apiVersion"], d["kind"]) for d in everything} - FOREIGN_KINDS
    for api_version, kind in unknown:
        kv.validate(next(d for d in everything if (d["apiVersion"], d["kind"]) == (api_version, kind)),
                    "1.33.0", strict=True)


# --- the objects -------------------------------------------------------------------------------------------

def containers(docs: Any) -> Iterator[dict[str, Any]]:
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    yield from spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("values_file", MATRIX)
def test_the_operator_runs_locked_down_with_probes_and_resources(values_file: str) -> None:
    docs = rendered(values_file)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in containers(docs):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["command"] == ["llmroute-operator"]
    assert one(docs, "Deployment")["spec"]["replicas"] == 1


def test_the_operator_gets_the_hub_url_from_the_hub_services_cluster_ip_and_its_ports_pinned() -> None:
    container = next(containers(rendered("defaults")))
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LLMROUTE_INJECT_OPERATOR_URL"] == "wss://$(LLMROUTE_HUB_SERVICE_HOST):15443/v1/sync"
    # service links of llmroute-hub/llmroute-webhook would set these to tcp://IP:PORT: pinned explicitly
    assert env["LLMROUTE_HUB_PORT"] == "15443" and env["LLMROUTE_WEBHOOK_PORT"] == "15445"
    assert "--webhook-cert=/etc/llmroute/tls/tls.crt" in container["args"]
    other = next(containers(rendered("overrides")))
    assert {e["name"]: e["value"] for e in other["env"]}["LLMROUTE_INJECT_OPERATOR_URL"].startswith(
        "wss://$(LLMR_HUB_SERVICE_HOST):")
    assert [a for a in other["args"] if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert other["image"] == "registry.example:5000/platform/llmroute@sha256:" + "0123456789abcdef" * 4


def webhooks(docs: Any) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in one(docs, "MutatingWebhookConfiguration")["webhooks"]}


@pytest.mark.parametrize("values_file", MATRIX)
def test_the_webhook_sees_only_pod_creates_outside_system_and_release_namespaces(values_file: str) -> None:
    entries = webhooks(rendered(values_file))
    assert set(entries) == {"pods.inject.llmroute.dev", "namespaces.inject.llmroute.dev"}
    for entry in entries.values():
        assert entry["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                   "resources": ["pods"], "scope": "Namespaced"}]
        assert entry["sideEffects"] == "None" and entry["admissionReviewVersions"] == ["v1"]
        assert entry["timeoutSeconds"] <= 5
        excluded = next(e for e in entry["namespaceSelector"]["matchExpressions"]
                        if e["key"] == "kubernetes.io/metadata.name")
        assert excluded["operator"] == "NotIn" and {"kube-system", NAMESPACE} <= set(excluded["values"])
    pods, namespaces = entries["pods.inject.llmroute.dev"], entries["namespaces.inject.llmroute.dev"]
    assert pods["clientConfig"]["service"]["path"] == "/inject"
    assert namespaces["clientConfig"]["service"]["path"] == "/inject/namespace"
    label = "llmroute.dev/inject"
    assert {"key": label, "operator": "In", "values": ["true"]} in pods["objectSelector"]["matchExpressions"]
    assert {"key": label, "operator": "NotIn", "values": ["true"]} in pods["namespaceSelector"]["matchExpressions"]
    assert {"key": label, "operator": "NotIn", "values": ["false"]} in namespaces["objectSelector"]["matchExpressions"]
    assert {"key": label, "operator": "In", "values": ["true"]} in namespaces["namespaceSelector"]["matchExpressions"]


def test_the_failure_policy_is_ignore_by_default_and_reinvocation_is_if_needed() -> None:
    for entry in webhooks(rendered("defaults")).values():
        assert entry["failurePolicy"] == "Ignore" and entry["reinvocationPolicy"] == "IfNeeded"
    for entry in webhooks(rendered("overrides")).values():
        assert entry["failurePolicy"] == "Fail" and entry["reinvocationPolicy"] == "Never"
        excluded = entry["namespaceSelector"]["matchExpressions"][1]["values"]
        assert excluded == ["kube-system", NAMESPACE, "monitoring", "istio-system"]


def test_the_generated_ca_signs_a_serving_certificate_for_both_services_and_is_the_webhooks_bundle() -> None:
    docs = rendered("defaults")
    secret = one(docs, "Secret")
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert {"llmroute-hub.llmroute.svc", "llmroute-webhook.llmroute.svc"} <= set(names)
    for entry in webhooks(docs).values():
        assert entry["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    volume = next(v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


def test_with_cert_manager_the_chart_makes_no_secret_and_cert_manager_injects_the_bundle() -> None:
    docs = rendered("cert-manager")
    assert "Secret" not in kinds(docs)
    configuration = one(docs, "MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "llmroute/llmroute-tls"
    assert all("caBundle" not in w["clientConfig"] for w in configuration["webhooks"])
    serving = one(docs, "Certificate", "llmroute-tls")
    assert serving["spec"]["secretName"] == "llmroute-tls"
    assert serving["spec"]["issuerRef"] == {"name": "llmroute-ca", "kind": "Issuer"}
    assert one(docs, "Certificate", "llmroute-ca")["spec"]["isCA"] is True
    external = [d for d in rendered("overrides") if d["kind"] in ("Certificate", "Issuer")]
    assert [d["kind"] for d in external] == ["Certificate"]
    assert external[0]["spec"]["issuerRef"] == {"name": "platform-ca", "kind": "ClusterIssuer"}


def webhook_settings(docs: Any, tmp_path: Path) -> InjectionSettings:
    """What the webhook loads from the rendered ConfigMap, with the rendered CA where its caFile says."""
    raw = json.loads(one(docs, "ConfigMap")["data"]["injection.json"])
    assert raw["caFile"] == "/etc/llmroute/tls/ca.crt"
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(one(docs, "Secret")["data"]["ca.crt"]))
    config = tmp_path / "injection.json"
    config.write_text(json.dumps({**raw, "caFile": str(ca)}))
    return load_settings(config, "wss://10.96.0.12:15443/v1/sync")


def test_the_injection_configmap_is_what_the_webhook_loads_and_injects_a_valid_pod(tmp_path: Path) -> None:
    docs = rendered("defaults")
    settings = webhook_settings(docs, tmp_path)
    assert settings.server_name == "llmroute-hub.llmroute.svc" and settings.image == "llmroute/llmroute:0.1.0"
    assert settings.excluded_namespaces == {"kube-system", NAMESPACE}
    app = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "app", "namespace": "team-a", "labels": {"llmroute.dev/inject": "true"}},
           "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
    for server_version in ("v1.29.0", "v1.20.2"):
        pod = apply(app, mutate(app, {}, settings, server_version))
        for version in KUBE_VERSIONS:
            kv.validate(pod, version, strict=True)


@pytest.mark.parametrize("overrides, image", [
    ({}, "llmroute/llmroute:0.1.0"),
    ({"image": {"digest": "sha256:" + "a" * 64}}, "llmroute/llmroute@sha256:" + "a" * 64),
    ({"injection": {"image": {"tag": "0.2.0"}}}, "llmroute/llmroute:0.2.0"),
    ({"image": {"repository": "registry.corp/llmroute", "digest": "sha256:" + "a" * 64},
      "injection": {"image": {"tag": "0.2.0"}}}, "registry.corp/llmroute:0.2.0"),
    ({"injection": {"image": {"repository": "registry.corp/proxy"}}}, "registry.corp/proxy:0.1.0"),
])
def test_the_sidecar_image_is_the_operators_unless_injection_image_names_a_repository_or_tag(
        overrides: dict[str, Any], image: str) -> None:
    raw = json.loads(one(render(overrides), "ConfigMap")["data"]["injection.json"])
    assert raw["image"] == image


def test_injection_pull_secrets_reach_the_webhook_and_the_pods_it_injects(tmp_path: Path) -> None:
    settings = webhook_settings(render({"injection": {"imagePullSecrets": [{"name": "mirror-creds"}]}}), tmp_path)
    app = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": "team-a",
                                                          "labels": {"llmroute.dev/inject": "true"}},
           "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
    assert apply(app, mutate(app, {}, settings, "v1.30.0"))["spec"]["imagePullSecrets"] == [{"name": "mirror-creds"}]


def test_a_null_user_id_leaves_it_to_the_platform_for_the_operator_and_the_sidecars(tmp_path: Path) -> None:
    docs = render({"operator": {"runAsUser": None}, "injection": {"runAsUser": None}})
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    contexts = [pod["securityContext"], *(c["securityContext"] for c in containers(docs))]
    assert all(c["runAsNonRoot"] is True and "runAsUser" not in c and "runAsGroup" not in c for c in contexts)
    for version in KUBE_VERSIONS:
        kv.validate(one(docs, "Deployment"), version, strict=True)
    assert webhook_settings(docs, tmp_path).run_as_user is None


def test_the_network_policy_admits_only_the_three_listeners() -> None:
    policy = one(rendered("defaults"), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = sorted(p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"])
    assert ports == ["hub", "metrics", "webhook"]
    scrape = one(rendered("monitoring"), "NetworkPolicy")["spec"]["ingress"][-1]
    assert scrape["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert "NetworkPolicy" not in kinds(rendered("overrides"))


def test_monitoring_adds_a_service_monitor_and_the_dashboard() -> None:
    docs = rendered("monitoring")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    hub = one(docs, "Service", "llmroute-hub")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= hub["metadata"]["labels"].items()
    dashboard = one(docs, "ConfigMap", "llmroute-dashboard")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert json.loads(dashboard["data"]["llmroute.json"]) == json.loads(
        (CHART / "dashboards" / "llmroute.json").read_text())
    assert "ServiceMonitor" not in kinds(rendered("defaults"))


def test_every_template_is_named_component_kind() -> None:
    for template in (CHART / "templates").iterdir():
        if template.name in ("_helpers.tpl", "NOTES.txt"):
            continue
        component, _, kind = template.stem.partition("-")
        assert component in {"operator", "hub", "webhook", "tls", "crd", "dashboard"} and kind, template.name


def test_notes_say_how_to_inject_and_restart() -> None:
    notes = chart().render({}, name="llmroute", namespace=NAMESPACE)["llmroute/templates/NOTES.txt"]
    assert "llmroute.dev/inject=true" in notes and "rollout restart" in notes


def test_notes_without_the_crds_say_how_to_apply_them_on_old_servers_too() -> None:
    """`kubectl apply -f crds/` is refused before 1.23 (tests/kube/test_chart_install.py shows it)."""
    notes = chart().render({"crds": {"install": False}}, name="llmroute", namespace=NAMESPACE)[
        "llmroute/templates/NOTES.txt"]
    assert "kubectl apply -f crds/" in notes and "kubectl apply --validate=false -f crds/" in notes


# --- the schema ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
    ({"webhook": {"failurePolicy": "Sometimes"}}, "at '/webhook/failurePolicy': value must be one of 'Ignore', 'Fail'"),
    ({"injection": {"tokenExpirationSeconds": 60}}, "at '/injection/tokenExpirationSeconds': minimum: got 60, want 600"),
    ({"injection": {"nativeSidecar": "yes"}}, "at '/injection/nativeSidecar'"),
    ({"injection": {"resources": {"requests": {"cpu": "lots"}}}}, "at '/injection/resources/requests/cpu'"),
    ({"operator": {"logLevel": "verbose"}}, "at '/operator/logLevel'"),
    ({"operator": {"runAsUser": 0}}, "at '/operator/runAsUser': minimum: got 0, want 1"),
    ({"webhook": {"excludeNamespaces": ["Not_A_Namespace"]}}, "at '/webhook/excludeNamespaces/0'"),
    ({"injection": {"imagePullSecrets": [{"name": "Not_A_Secret"}]}}, "at '/injection/imagePullSecrets/0/name'"),
    ({"image": {"digest": "latest"}}, "at '/image/digest'"),
    ({"crds": {"install": "yes"}}, "at '/crds/install': got string, want boolean"),
    # One operator replica: a budget that allows no disruption would block every node drain.
    ({"podDisruptionBudget": {"maxUnavailable": 0}}, "at '/podDisruptionBudget/maxUnavailable'"),
    ({"podDisruptionBudget": {"maxUnavailable": "0%"}}, "at '/podDisruptionBudget/maxUnavailable'"),
])
def test_the_schema_refuses_bad_values_with_a_message_naming_the_key(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as refused:
        chart().render(bad, name="llmroute", namespace=NAMESPACE)
    assert message in str(refused.value)


@pytest.mark.parametrize("name", WIRING_ENV)
def test_injection_env_may_not_set_the_variables_that_wire_the_sidecar(name: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=f"injection.env sets {name}, which the webhook sets itself"):
        chart().render({"injection": {"env": [{"name": "OTEL_SERVICE_NAME", "value": "app"}, {"name": name, "value": "x"}]}},
                       name="llmroute", namespace=NAMESPACE)


def test_every_value_is_in_the_schema_and_documented_in_the_readme() -> None:
    readme = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())

    def keys(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for name, child in node.get("properties", {}).items():
            path = f"{prefix}{name}"
            yield path
            if child.get("type") == "object" and "properties" in child:
                yield from keys(child, path + ".")

    def walk(node: dict[str, Any], schema_node: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for name, value in node.items():
            assert name in schema_node.get("properties", {}), f"{prefix}{name} is not in values.schema.json"
            child = schema_node["properties"][name]
            if isinstance(value, dict) and "properties" in child:
                yield from walk(value, child, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    leaves = list(walk(yaml.safe_load((CHART / "values.yaml").read_text()), schema))
    undocumented = [key for key in leaves if f"`{key}`" not in readme]
    assert undocumented == []
    assert set(leaves) <= set(keys(schema))


# --- upgrades -----------------------------------------------------------------------------------------------

@pytest.mark.kmock(cls=Emulator)
async def test_an_upgrade_keeps_the_ca_and_serving_certificate(kmock: Emulator) -> None:
    """`lookup` against an API server (kmock here) finds the Secret of the install and reuses it."""
    prepare(kmock)
    server = str(kmock.url).rstrip("/")

    def render_live() -> dict[str, str]:
        config = helm.Config(kube_apiserver=server, kube_token="test", kube_insecure_skip_tls_verify=True,
                             namespace=NAMESPACE)
        try:
            return config.render(chart(), {}, name="llmroute", namespace=NAMESPACE, is_upgrade=True)
        finally:
            config.close()

    installed = await asyncio.to_thread(render_live)
    secret = yaml.safe_load(installed["llmroute/templates/tls-secret.yaml"])
    url = f"{server}/api/v1/namespaces/{NAMESPACE}/secrets"
    async with aiohttp.ClientSession() as session, session.post(url, json=secret) as response:
        assert response.status in (200, 201)
    upgraded = await asyncio.to_thread(render_live)
    again = yaml.safe_load(upgraded["llmroute/templates/tls-secret.yaml"])
    assert again["data"] == secret["data"]
    configuration = yaml.safe_load(upgraded["llmroute/templates/webhook-mutatingwebhookconfiguration.yaml"])
    assert {w["clientConfig"]["caBundle"] for w in configuration["webhooks"]} == {secret["data"]["ca.crt"]}
    deployments = [yaml.safe_load(text)["spec"]["template"]["metadata"]["annotations"]["checksum/tls"]
                   for text in (installed["llmroute/templates/operator-deployment.yaml"],
                                upgraded["llmroute/templates/operator-deployment.yaml"])]
    assert deployments[0] == deployments[1]  # the operator is not restarted for nothing
    offline = render()
    assert one(offline, "Secret")["data"]["ca.crt"] != secret["data"]["ca.crt"]  # no cluster: a fresh CA
