"""Sidecar injection, the pure part: who is injected, how, and what a bad annotation gets."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import jsonpatch
import pytest

from llmroute_operator.injection import (
    CLOUD_IDENTITY_ENV,
    CONTAINER_NAME,
    WIRING_ENV,
    InjectionSettings,
    Refused,
    Resources,
    mutate,
    native_sidecars,
    parse_quantity,
    selected,
)

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SETTINGS = InjectionSettings(image="localhost/llmroute:0.1.0", operator_url="wss://10.96.0.12:15443/v1/sync",
                             server_name="llmroute-hub.llmroute.svc", ca_pem=CA,
                             excluded_namespaces=frozenset({"kube-system", "llmroute"}))
ON = {"llmroute.dev/inject": "true"}


def pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "app-", "namespace": "team-a", "labels": labels or {}}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "app:1"}], **spec}}


def apply(document: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """A small RFC 6902 `add`/`replace` applier: enough to check the patch lands where it says."""
    result = copy.deepcopy(document)
    for op in patch:
        assert op["op"] in ("add", "replace")
        *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        target: Any = result
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        if isinstance(target, list):
            if last == "-":
                target.append(op["value"])
            else:
                target.insert(int(last), op["value"])
        else:
            assert op["op"] == "add" or last in target
            target[last] = op["value"]
    return result


def sidecar_of(document: dict[str, Any]) -> dict[str, Any]:
    spec = document["spec"]
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == CONTAINER_NAME]
    assert len(found) == 1
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("pod_labels, ns_labels, expected", [
    (ON, {}, True),
    ({}, ON, True),
    ({"llmroute.dev/inject": "false"}, ON, False),
    ({}, {}, False),
    ({"llmroute.dev/inject": "yes"}, {}, False),
    ({"llmroute.dev/inject": "true"}, {"llmroute.dev/inject": "false"}, True),
])
def test_the_pod_label_decides_and_else_the_namespace_label(
        pod_labels: dict[str, str], ns_labels: dict[str, str], expected: bool) -> None:
    assert selected(pod_labels, ns_labels) is expected
    assert bool(mutate(pod(pod_labels), ns_labels, SETTINGS, "v1.30.0")) is expected


def test_excluded_namespaces_are_never_injected_whatever_their_labels() -> None:
    assert mutate(pod(ON), ON, SETTINGS, "v1.30.0", namespace="kube-system") == []
    assert mutate(pod(ON), ON, SETTINGS, "v1.30.0", namespace="llmroute") == []


@pytest.mark.parametrize("version, mode, native", [
    ("v1.29.0", "auto", True), ("v1.33.1+k3s1", "auto", True), ("v1.28.9", "auto", False),
    ("v1.20.2", "auto", False), ("v2.0.0", "auto", True), ("nonsense", "auto", False),
    ("v1.20.2", "always", True), ("v1.31.0", "never", False),
])
def test_native_sidecars_from_1_29_unless_the_settings_say_otherwise(version: str, mode: str, native: bool) -> None:
    assert native_sidecars(version, mode) is native


def test_on_1_29_the_sidecar_is_a_native_sidecar_init_container_first_in_line() -> None:
    original = pod(ON, initContainers=[{"name": "migrate", "image": "m:1"}])
    result = apply(original, mutate(original, {}, SETTINGS, "v1.29.3"))
    init = result["spec"]["initContainers"]
    assert [c["name"] for c in init] == [CONTAINER_NAME, "migrate"]
    assert init[0]["restartPolicy"] == "Always" and "lifecycle" not in init[0]
    assert [c["name"] for c in result["spec"]["containers"]] == ["app"]
    assert result["spec"]["terminationGracePeriodSeconds"] == 30  # the drain (25 s) and a margin
    assert "kubectl.kubernetes.io/default-container" not in result["metadata"]["annotations"]


# The native-sidecar shape (1.29+) never reaches a real API server here (tier B and C run 1.20): these pin
# it down completely, and apply it with a real RFC 6902 implementation (jsonpatch, which kopf uses).

@pytest.mark.parametrize("version, mode", [("v1.29.0", "auto"), ("v1.33.1", "auto"), ("v1.20.2", "always")])
def test_the_native_patch_adds_only_the_init_container_grace_volumes_and_status(version: str, mode: str) -> None:
    settings = InjectionSettings(**{**_fields(SETTINGS), "native_sidecar": mode})
    original = pod(ON)
    patch = mutate(original, {}, settings, version)
    assert [(op["op"], op["path"]) for op in patch] == [
        ("add", "/spec/initContainers"), ("add", "/spec/terminationGracePeriodSeconds"),
        ("add", "/spec/volumes"), ("add", "/metadata/annotations")]
    assert [c["name"] for c in patch[0]["value"]] == [CONTAINER_NAME]
    result = jsonpatch.apply_patch(original, patch)
    assert result == apply(original, patch)
    assert result["spec"]["containers"] == original["spec"]["containers"]  # the app is not touched
    assert result["metadata"]["annotations"] == {"llmroute.dev/status": "injected"}  # no default-container


def test_the_native_sidecar_goes_before_every_init_container_even_another_native_sidecar() -> None:
    others = [{"name": "mesh-proxy", "image": "mesh:1", "restartPolicy": "Always"},
              {"name": "migrate", "image": "m:1"}]
    original = pod(ON, initContainers=copy.deepcopy(others))
    patch = mutate(original, {}, SETTINGS, "v1.30.0")
    assert patch[0]["op"] == "add" and patch[0]["path"] == "/spec/initContainers/0"  # inserted, nothing replaced
    result = jsonpatch.apply_patch(original, patch)
    init = result["spec"]["initContainers"]
    # Init containers start one by one, each after the one before is started (a native sidecar: its
    # startupProbe passed): first in line, the sidecar has a table before a migration or the app runs.
    assert [c["name"] for c in init] == [CONTAINER_NAME, "mesh-proxy", "migrate"]
    assert init[1:] == others
    assert mutate(result, {}, SETTINGS, "v1.30.0") == []  # found among the init containers: not injected again


def test_the_native_sidecar_holds_the_app_with_its_startup_probe_not_a_hook() -> None:
    settings = InjectionSettings(**{**_fields(SETTINGS), "startup_timeout_s": 45})
    car = sidecar_of(apply(pod(ON), mutate(pod(ON), {}, settings, "v1.29.0")))
    assert car["restartPolicy"] == "Always"
    assert car["startupProbe"] == {"httpGet": {"path": "/readyz", "port": 15401}, "periodSeconds": 1,
                                   "timeoutSeconds": 1, "failureThreshold": 45}
    assert car["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 15401}
    assert car["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 15401}
    assert "lifecycle" not in car  # no postStart hold, no preStop head start: the kubelet orders both


def test_the_native_sidecar_is_the_regular_one_but_for_restart_policy_and_hooks() -> None:
    native = sidecar_of(apply(pod(ON), mutate(pod(ON), {}, SETTINGS, "v1.29.0")))
    regular = sidecar_of(apply(pod(ON), mutate(pod(ON), {}, SETTINGS, "v1.28.0")))
    assert {k: v for k, v in native.items() if k != "restartPolicy"} == \
        {k: v for k, v in regular.items() if k != "lifecycle"}


def test_before_1_29_the_sidecar_is_the_first_container_holding_the_app_until_ready() -> None:
    original = pod(ON)
    result = apply(original, mutate(original, {}, SETTINGS, "v1.20.2"))
    containers = result["spec"]["containers"]
    assert [c["name"] for c in containers] == [CONTAINER_NAME, "app"]
    assert "initContainers" not in result["spec"] and "restartPolicy" not in containers[0]
    hold = containers[0]["lifecycle"]["postStart"]["exec"]["command"]
    assert hold[:2] == ["python3", "-c"] and "http://127.0.0.1:15401/readyz" in hold[2]
    compile(hold[2], "<postStart>", "exec")  # the held script is valid Python
    assert containers[0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert result["spec"]["terminationGracePeriodSeconds"] == 35  # 5 s head start + 25 s drain + margin
    # kubectl exec/logs keep going to the app, not to the sidecar now first in line
    assert result["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "app"


def test_a_longer_grace_period_is_kept_and_a_shorter_one_lifted() -> None:
    long = pod(ON, terminationGracePeriodSeconds=120)
    assert apply(long, mutate(long, {}, SETTINGS, "v1.30.0"))["spec"]["terminationGracePeriodSeconds"] == 120
    short = pod(ON, terminationGracePeriodSeconds=3)
    assert apply(short, mutate(short, {}, SETTINGS, "v1.30.0"))["spec"]["terminationGracePeriodSeconds"] == 30


def test_the_sidecar_runs_in_cluster_mode_with_the_hub_address_name_ca_and_pod_identity() -> None:
    original = pod(ON)
    result = apply(original, mutate(original, {}, SETTINGS, "v1.30.0"))
    car = sidecar_of(result)
    env = env_of(car)
    assert env["LLMROUTE_OPERATOR_URL"] == "wss://10.96.0.12:15443/v1/sync"
    assert env["LLMROUTE_OPERATOR_SERVER_NAME"] == "llmroute-hub.llmroute.svc"
    assert env["LLMROUTE_OPERATOR_CA_DATA"] == CA
    assert env["LLMROUTE_TOKEN_FILE"] == "/var/run/secrets/llmroute.dev/token"
    assert env["LLMROUTE_STATE_DIR"] == "/var/run/llmroute"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert car["command"] == ["llmroute-proxy", "serve", "--admin-host", "0.0.0.0"]
    assert car["image"] == "localhost/llmroute:0.1.0"
    assert car["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 15401}
    assert car["startupProbe"]["periodSeconds"] * car["startupProbe"]["failureThreshold"] == 120
    assert car["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert car["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert result["metadata"]["annotations"]["llmroute.dev/status"] == "injected"


def test_the_token_is_projected_for_llmroute_and_the_table_lives_in_memory() -> None:
    original = pod(ON, volumes=[{"name": "data", "emptyDir": {}}])
    result = apply(original, mutate(original, {}, SETTINGS, "v1.30.0"))
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert set(volumes) == {"data", "llmroute-token", "llmroute-state"}
    token = volumes["llmroute-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "llmroute.dev", "expirationSeconds": 3600, "path": "token"}
    assert volumes["llmroute-state"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m for m in sidecar_of(result)["volumeMounts"]}
    assert mounts["llmroute-token"] == {"name": "llmroute-token", "mountPath": "/var/run/secrets/llmroute.dev",
                                        "readOnly": True}
    assert mounts["llmroute-state"]["mountPath"] == "/var/run/llmroute"
    assert [c["name"] for c in result["spec"]["containers"] if "volumeMounts" in c] == []  # the app sees neither


def test_the_sidecar_is_locked_down_and_sized_from_settings() -> None:
    settings = InjectionSettings(**{**_fields(SETTINGS), "resources": Resources("10m", "32Mi", "1", "64Mi"),
                                    "run_as_user": 1234})
    car = sidecar_of(apply(pod(ON), mutate(pod(ON), {}, settings, "v1.30.0")))
    assert car["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1234, "runAsGroup": 1234, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert car["resources"] == {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}}


def test_without_a_user_id_the_platform_assigns_one_and_the_sidecar_still_runs_as_non_root() -> None:
    """OpenShift's restricted SCC refuses a fixed runAsUser outside the namespace's range and assigns one."""
    settings = InjectionSettings(**{**_fields(SETTINGS), "run_as_user": None})
    context = sidecar_of(apply(pod(ON), mutate(pod(ON), {}, settings, "v1.30.0")))["securityContext"]
    assert context["runAsNonRoot"] is True and "runAsUser" not in context and "runAsGroup" not in context


def test_annotations_override_image_resources_and_log_level() -> None:
    annotations = {"llmroute.dev/image": "registry.example:5000/team/llmroute:0.2.0", "llmroute.dev/cpu": "250m",
                   "llmroute.dev/memory": "512Mi", "llmroute.dev/log-level": "debug"}
    original = pod(ON, annotations)
    car = sidecar_of(apply(original, mutate(original, {}, SETTINGS, "v1.30.0")))
    assert car["image"] == "registry.example:5000/team/llmroute:0.2.0"
    assert car["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert car["resources"]["limits"] == {"memory": "512Mi"}  # the 256Mi limit is lifted to the request
    assert env_of(car)["LLMROUTE_LOG_LEVEL"] == "DEBUG"


def test_a_smaller_memory_annotation_keeps_the_larger_limit() -> None:
    original = pod(ON, {"llmroute.dev/memory": "100Mi"})
    car = sidecar_of(apply(original, mutate(original, {}, SETTINGS, "v1.30.0")))
    assert car["resources"] == {"requests": {"cpu": "50m", "memory": "100Mi"}, "limits": {"memory": "256Mi"}}


@pytest.mark.parametrize("annotation, value", [
    ("llmroute.dev/image", "Not An Image"),
    ("llmroute.dev/image", "llmroute:0.1.0; rm -rf /"),
    ("llmroute.dev/cpu", "lots"),
    ("llmroute.dev/cpu", "0"),
    ("llmroute.dev/cpu", "-1"),
    ("llmroute.dev/memory", "128mb"),
    ("llmroute.dev/memory", "128m"),  # millibytes: valid for the API server, never meant
    ("llmroute.dev/log-level", "verbose"),
])
def test_a_bad_annotation_refuses_the_pod_naming_the_annotation(annotation: str, value: str) -> None:
    with pytest.raises(Refused, match=annotation) as refused:
        mutate(pod(ON, {annotation: value}), {}, SETTINGS, "v1.30.0")
    assert repr(value) in str(refused.value)


def test_annotations_are_ignored_on_pods_that_are_not_injected() -> None:
    assert mutate(pod({}, {"llmroute.dev/cpu": "lots"}), {}, SETTINGS, "v1.30.0") == []


def test_the_image_annotation_is_refused_where_overrides_are_off() -> None:
    settings = InjectionSettings(**{**_fields(SETTINGS), "allow_image_override": False})
    with pytest.raises(Refused, match="allowImageOverride"):
        mutate(pod(ON, {"llmroute.dev/image": "evil/llmroute:1"}), {}, settings, "v1.30.0")


def test_a_pod_that_has_the_sidecar_is_not_injected_twice() -> None:
    for version in ("v1.30.0", "v1.20.2"):
        once = apply(pod(ON), mutate(pod(ON), {}, SETTINGS, version))
        assert mutate(once, {}, SETTINGS, version) == []


def test_a_volume_name_already_taken_refuses_the_pod() -> None:
    with pytest.raises(Refused, match="llmroute-token"):
        mutate(pod(ON, volumes=[{"name": "llmroute-token", "emptyDir": {}}]), {}, SETTINGS, "v1.30.0")


@pytest.mark.parametrize("port, named", [
    ({"containerPort": 15400}, "15400"),
    ({"containerPort": 15401, "name": "admin"}, "15401"),
    ({"containerPort": 8080, "name": "llmroute-admin"}, "llmroute-admin"),
])
@pytest.mark.parametrize("version", ["v1.30.0", "v1.20.2"])
def test_a_port_the_sidecar_uses_already_declared_by_the_app_refuses_the_pod(
        port: dict[str, Any], named: str, version: str) -> None:
    # The containers share one network namespace: the sidecar could not listen, and would restart for ever.
    app = pod(ON)
    app["spec"]["containers"][0]["ports"] = [{"containerPort": 80}, port]
    with pytest.raises(Refused, match=f"{named}.*llmroute.dev/inject"):
        mutate(app, {}, SETTINGS, version)
    app["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    assert mutate(app, {}, SETTINGS, version)


def test_existing_annotations_are_kept_and_keys_escaped_in_the_patch() -> None:
    original = pod(ON, {"team": "a"})
    patch = mutate(original, {}, SETTINGS, "v1.20.2")
    assert {"op": "add", "path": "/metadata/annotations/llmroute.dev~1status", "value": "injected"} in patch
    assert apply(original, patch)["metadata"]["annotations"]["team"] == "a"


def test_extra_environment_from_settings_reaches_the_sidecar() -> None:
    settings = InjectionSettings(**{**_fields(SETTINGS),
                                    "extra_env": (("OTEL_EXPORTER_OTLP_ENDPOINT", "http://10.96.0.40:4318"),)})
    car = sidecar_of(apply(pod(ON), mutate(pod(ON), {}, settings, "v1.30.0")))
    assert env_of(car)["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://10.96.0.40:4318"


@pytest.mark.parametrize("own, expected", [
    (None, ["registry-a", "registry-b"]),
    ([{"name": "app-registry"}, {"name": "registry-b"}], ["app-registry", "registry-b", "registry-a"]),
])
def test_the_sidecars_pull_secrets_join_the_pods_own(own: list[dict[str, str]] | None, expected: list[str]) -> None:
    settings = InjectionSettings(**{**_fields(SETTINGS), "image_pull_secrets": ("registry-a", "registry-b")})
    original = pod(ON)
    if own is not None:
        original["spec"]["imagePullSecrets"] = own
    injected = apply(original, mutate(original, {}, settings, "v1.30.0"))
    assert [entry["name"] for entry in injected["spec"]["imagePullSecrets"]] == expected


def test_without_pull_secrets_the_pods_are_left_as_they_are() -> None:
    assert "imagePullSecrets" not in apply(pod(ON), mutate(pod(ON), {}, SETTINGS, "v1.30.0"))["spec"]


def test_the_sidecars_wiring_is_what_the_webhook_sets_before_the_charts_env() -> None:
    settings = InjectionSettings(**{**_fields(SETTINGS), "extra_env": (("OTEL_SERVICE_NAME", "app"),)})
    names = [e["name"] for e in sidecar_of(apply(pod(ON), mutate(pod(ON), {}, settings, "v1.30.0")))["env"]]
    assert names == [*WIRING_ENV, "OTEL_SERVICE_NAME"]


IRSA_TOKEN = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
POD_IDENTITY_TOKEN = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"


def eks_mutated_pod(**env: str) -> dict[str, Any]:
    """A pod as EKS's pod identity webhook leaves it (its `env` and token mounts on the app), beside an
    app volume of its own."""
    original = pod(ON)
    app = original["spec"]["containers"][0]
    app["env"] = [{"name": "APP_MODE", "value": "prod"}, *({"name": k, "value": v} for k, v in env.items())]
    app["volumeMounts"] = [{"name": "data", "mountPath": "/data"},
                           {"name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount",
                            "readOnly": True},
                           {"name": "eks-pod-identity-token",
                            "mountPath": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount", "readOnly": True}]
    return original


@pytest.mark.parametrize("version", ["v1.30.0", "v1.27.0"], ids=["native sidecar", "regular container"])
@pytest.mark.parametrize(("env", "mount"), [
    ({"AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/chat", "AWS_WEB_IDENTITY_TOKEN_FILE": IRSA_TOKEN,
      "AWS_STS_REGIONAL_ENDPOINTS": "regional", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-west-1"},
     "aws-iam-token"),
    ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
      "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": POD_IDENTITY_TOKEN}, "eks-pod-identity-token"),
], ids=["IRSA", "EKS Pod Identity"])
def test_the_aws_identity_eks_gave_the_app_first_is_the_sidecars_too(
        version: str, env: dict[str, str], mount: str) -> None:
    """EKS's webhook, called before this one, gave its variables and token to the app only, and does not
    come back for containers added since: the sidecar copies them, with the mount of the token file."""
    original = eks_mutated_pod(**env)
    car = sidecar_of(apply(original, mutate(original, {}, SETTINGS, version)))

    assert {name: value for name, value in env_of(car).items() if name not in WIRING_ENV} == env
    copied = [m for m in car["volumeMounts"] if m["name"] not in ("llmroute-token", "llmroute-state")]
    assert [(m["name"], m["readOnly"]) for m in copied] == [(mount, True)]  # only the token's, never the app's data


def test_a_pod_without_an_aws_identity_gives_the_sidecar_none() -> None:
    car = sidecar_of(apply(eks_mutated_pod(), mutate(eks_mutated_pod(), {}, SETTINGS, "v1.30.0")))
    assert not set(env_of(car)) & set(CLOUD_IDENTITY_ENV)
    assert {m["mountPath"] for m in car["volumeMounts"]} == {m["mountPath"] for m in sidecar_of(
        apply(pod(ON), mutate(pod(ON), {}, SETTINGS, "v1.30.0")))["volumeMounts"]}


def test_the_charts_env_wins_over_the_aws_identity_copied_from_the_app() -> None:
    settings = InjectionSettings(**{**_fields(SETTINGS), "extra_env": (("AWS_REGION", "us-east-1"),)})
    original = eks_mutated_pod(AWS_ROLE_ARN="arn:aws:iam::111122223333:role/chat",
                               AWS_WEB_IDENTITY_TOKEN_FILE=IRSA_TOKEN, AWS_REGION="eu-west-1")
    env = sidecar_of(apply(original, mutate(original, {}, settings, "v1.30.0")))["env"]
    assert [e["value"] for e in env if e["name"] == "AWS_REGION"] == ["us-east-1"]
    assert [e["name"] for e in env][-2:] == ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"]


@pytest.mark.parametrize("field, value, message", [
    ("token_expiration_s", 300, "between 600"), ("native_sidecar", "maybe", "auto, always or never"),
    ("log_level", "loud", "log_level"),
    # a second LLMROUTE_TOKEN_FILE would win in the container: the sidecar would never reach its operator
    ("extra_env", (("OTEL_SERVICE_NAME", "app"), ("LLMROUTE_TOKEN_FILE", "/tmp/t")),
     "env sets LLMROUTE_TOKEN_FILE, which the webhook sets itself"),
])
def test_settings_refuse_what_the_api_server_or_the_sidecar_would(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InjectionSettings(**{**_fields(SETTINGS), field: value})


@pytest.mark.parametrize("text, amount", [("100m", "0.1"), ("1", "1"), ("0.5", "0.5"), ("1Gi", str(2**30)),
                                          ("2k", "2000"),
                                          ("x", None), ("1.5.5", None), ("", None)])
def test_quantities_are_read_as_the_api_server_reads_them(text: str, amount: str | None) -> None:
    assert parse_quantity(text) == (None if amount is None else Decimal(amount))


def _fields(settings: InjectionSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


@pytest.mark.parametrize("restart_policy", ["Never", "OnFailure"])
def test_a_pod_that_must_complete_is_refused_a_sidecar_that_never_exits(restart_policy: str) -> None:
    # A regular sidecar container never exits, so a Job's pod would run for ever; a native one is stopped
    # once the app has exited.
    job_pod = pod(ON, restartPolicy=restart_policy)
    with pytest.raises(Refused, match=f"restartPolicy {restart_policy}.*1.29.*llmroute.dev/inject"):
        mutate(job_pod, {}, SETTINGS, "v1.28.4")
    native = apply(job_pod, mutate(job_pod, {}, SETTINGS, "v1.29.0"))
    assert sidecar_of(native)["restartPolicy"] == "Always" and native["spec"]["restartPolicy"] == restart_policy


def test_a_long_running_pod_gets_a_regular_sidecar_before_1_29() -> None:
    result = apply(pod(ON, restartPolicy="Always"), mutate(pod(ON, restartPolicy="Always"), {}, SETTINGS, "v1.28.4"))
    assert result["spec"]["containers"][0]["name"] == CONTAINER_NAME


def test_a_windows_pod_is_refused_the_linux_sidecar_with_the_reason() -> None:
    # Its Linux-only security context (seccomp, capabilities, runAsUser) would fail validation, unexplained.
    with pytest.raises(Refused, match=r"Windows.*llmroute\.dev/inject"):
        mutate(pod(ON, os={"name": "windows"}), {}, SETTINGS, "v1.30.0")
    assert mutate(pod(ON, os={"name": "linux"}), {}, SETTINGS, "v1.30.0")
