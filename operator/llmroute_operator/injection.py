"""Sidecar injection: what the mutating webhook adds to a Pod, as JSON Patch operations.

Pure (no I/O, no clock): `mutate(pod, namespace_labels, settings, server_version)` decides from the
Pod as the API server sent it. webhook.py is the shell that reads AdmissionReviews and answers them.

Who is injected: a Pod labelled `llmroute.dev/inject: "true"`, or any Pod in a namespace labelled so
unless the Pod says `"false"`. The webhook does not read Namespaces (the operator has no RBAC for them):
the MutatingWebhookConfiguration's namespace-selected entry calls `/inject/namespace`, and the shell
passes that on as the namespace's label.

What it adds: the `llmroute-proxy` container in cluster mode — a native sidecar (an init container with
`restartPolicy: Always`, started and probed before the app) when the API server is 1.29 or later, else a
regular first container whose postStart hook holds the app's start until the sidecar is ready — with
a projected service-account token (audience `llmroute.dev`, rotated by the kubelet), the hub's address,
name and CA, the downward-API pod identity, a memory-backed directory for the last good table, probes,
a preStop that lets the app stop first, and resources and security context from settings. A Pod that must
complete (restartPolicy Never or OnFailure: a Job's) is refused a regular container, which would never exit.

Per-pod annotations override the image, CPU, memory and log level. A bad value refuses the Pod with a
message that names the annotation: someone asked for something explicit, and a Pod silently running a
sidecar other than the one asked for is worse than a create that fails and says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

INJECT_LABEL = "llmroute.dev/inject"
STATUS_ANNOTATION = "llmroute.dev/status"
IMAGE_ANNOTATION = "llmroute.dev/image"
CPU_ANNOTATION = "llmroute.dev/cpu"
MEMORY_ANNOTATION = "llmroute.dev/memory"
LOG_LEVEL_ANNOTATION = "llmroute.dev/log-level"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"

CONTAINER_NAME = "llmroute-proxy"
TOKEN_VOLUME = "llmroute-token"
STATE_VOLUME = "llmroute-state"
TOKEN_DIR = "/var/run/secrets/llmroute.dev"
STATE_DIR = "/var/run/llmroute"
TOKEN_AUDIENCE = "llmroute.dev"
DATA_PORT = 15400
ADMIN_PORT = 15401
ADMIN_PORT_NAME = "llmroute-admin"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

Patch = list[dict[str, Any]]

# A Kubernetes quantity, as the API server's own parser reads it: a decimal number and a suffix.
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?P<suffix>|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)$")
_MULTIPLIERS: dict[str, Decimal] = {
    "": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18), "Ki": Decimal(2**10), "Mi": Decimal(2**20),
    "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60)}
# An image reference: [registry[:port]/]path[:tag][@sha256:digest], lower-case path components.
_IMAGE = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                    r"(?:@sha256:[a-f0-9]{64})?$")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


class Refused(ValueError):
    """The Pod is refused; the message is shown to whoever created it (kubectl, the ReplicaSet's Events)."""


WIRING_ENV = ("LLMROUTE_OPERATOR_URL", "LLMROUTE_OPERATOR_SERVER_NAME", "LLMROUTE_OPERATOR_CA_DATA", "LLMROUTE_TOKEN_FILE",
              "LLMROUTE_STATE_DIR", "LLMROUTE_LOG_LEVEL", "LLMROUTE_DRAIN_SECONDS", "POD_NAME", "POD_NAMESPACE",
              "NODE_NAME")
"""What the webhook sets on every sidecar; the chart's injection.env may not set them (the chart refuses them too)."""


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_request: str = "50m"
    memory_request: str = "64Mi"
    cpu_limit: str | None = None
    memory_limit: str | None = "256Mi"


@dataclass(frozen=True, slots=True)
class InjectionSettings:
    image: str
    operator_url: str  # wss://CLUSTER-IP:15443/v1/sync — no cluster DNS needed
    server_name: str  # the hub Service's DNS name, which its certificate carries
    ca_pem: str
    image_pull_policy: str = "IfNotPresent"
    resources: Resources = field(default_factory=Resources)
    log_level: str = "INFO"
    token_expiration_s: int = 3600  # the kubelet renews at 80 %; the sidecar re-reads it on every connect
    drain_seconds: int = 25
    prestop_delay_s: int = 5  # regular-container mode: the app gets SIGTERM this long before the sidecar
    startup_timeout_s: int = 120
    run_as_user: int | None = 65532  # None: the platform's (OpenShift assigns each namespace a range)
    native_sidecar: str = "auto"  # auto (by the API server's version) | always | never
    allow_image_override: bool = True
    excluded_namespaces: frozenset[str] = frozenset({"kube-system"})
    extra_env: tuple[tuple[str, str], ...] = ()
    image_pull_secrets: tuple[str, ...] = ()  # added to the Pod's: the sidecar's image in a private registry

    def __post_init__(self) -> None:
        if not 600 <= self.token_expiration_s <= 86400:
            raise ValueError("token_expiration_s must be between 600 and 86400 (the API server's minimum is 600)")
        if self.native_sidecar not in ("auto", "always", "never"):
            raise ValueError("native_sidecar must be auto, always or never")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        wiring = [name for name, _ in self.extra_env if name in WIRING_ENV]
        if wiring:  # a later duplicate would win in the container: the sidecar would lose its operator
            raise ValueError(f"env sets {', '.join(wiring)}, which the webhook sets itself to wire the sidecar to "
                             f"the operator ({', '.join(WIRING_ENV)}); use the chart's own setting instead")


def selected(pod_labels: Mapping[str, str], namespace_labels: Mapping[str, str]) -> bool:
    """The Pod's own label decides when it has one; else its namespace's."""
    own = pod_labels.get(INJECT_LABEL)
    if own is not None:
        return own == "true"
    return namespace_labels.get(INJECT_LABEL) == "true"


def native_sidecars(server_version: str, mode: str) -> bool:
    """Init containers with `restartPolicy: Always` (on by default from Kubernetes 1.29)."""
    if mode != "auto":
        return mode == "always"
    match = _VERSION.match(server_version)
    if match is None:
        return False
    return (int(match[1]), int(match[2])) >= (1, 29)


def injected(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])]
    return CONTAINER_NAME in names


def mutate(pod: Mapping[str, Any], namespace_labels: Mapping[str, str], settings: InjectionSettings,
           server_version: str, namespace: str = "") -> Patch:
    """The JSON Patch that injects the sidecar; [] when the Pod is not selected or already has it.

    Raises Refused when the Pod asks for something invalid (a bad annotation, a name already taken).
    """
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    namespace = namespace or metadata.get("namespace") or ""
    if namespace in settings.excluded_namespaces or not selected(labels, namespace_labels) or injected(pod):
        return []
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    spec = pod.get("spec") or {}
    native = native_sidecars(server_version, settings.native_sidecar)
    _refuse_what_the_sidecar_cannot_join(spec, native)
    container = sidecar_container(settings, annotations, native)
    _join_the_pods_cloud_identity(container, spec)
    patch: Patch = []
    if native:
        patch += _prepend(spec, "initContainers", container)
    else:
        patch += _prepend(spec, "containers", container)
        app = (spec.get("containers") or [{}])[0].get("name")
        if app and DEFAULT_CONTAINER_ANNOTATION not in annotations:
            patch.append(_annotate(annotations, DEFAULT_CONTAINER_ANNOTATION, app))
            annotations = {**annotations, DEFAULT_CONTAINER_ANNOTATION: app}
    # Room for the sidecar's drain (and, as a regular container, the app's head start) before SIGKILL.
    needed = (0 if native else settings.prestop_delay_s) + settings.drain_seconds + 5
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is None or grace < needed:
        patch.append({"op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": needed})
    patch += _append(spec, "volumes", token_volume(settings), state_volume())
    pulled_with = {entry.get("name") for entry in spec.get("imagePullSecrets") or () if isinstance(entry, Mapping)}
    missing = [{"name": name} for name in settings.image_pull_secrets if name not in pulled_with]
    if missing:
        patch += _append(spec, "imagePullSecrets", *missing)
    patch.append(_annotate(annotations, STATUS_ANNOTATION, "injected"))
    return patch


CLOUD_IDENTITY_ENV = ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_STS_REGIONAL_ENDPOINTS", "AWS_REGION",
                      "AWS_DEFAULT_REGION", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                      "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
"""What EKS's pod identity webhook sets in a pod's containers for IRSA and EKS Pod Identity: the sidecar signs
Bedrock requests with them (`credentials.workloadIdentity`)."""
_CLOUD_TOKEN_FILES = ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")


def _join_the_pods_cloud_identity(container: dict[str, Any], spec: Mapping[str, Any]) -> None:
    """Give the sidecar the AWS identity EKS's webhook gave the app, when that webhook ran first.

    That webhook adds its variables and token mounts to the containers a pod has when it is called and,
    called again, not to containers added since: were it called before this one, the sidecar would have
    no credentials. So they are copied from the first app container that has them (with the mounts of
    their token files). Called after this one, it gives them to the sidecar itself, and nothing is here
    to copy yet. The chart's own injection.env wins over a copied variable."""
    for app in spec.get("containers") or ():
        env = {entry.get("name"): entry for entry in app.get("env") or () if isinstance(entry, Mapping)}
        found = [env[name] for name in CLOUD_IDENTITY_ENV if name in env]
        if not found:
            continue
        own = {entry["name"] for entry in container["env"]}
        container["env"] += [dict(entry) for entry in found if entry["name"] not in own]
        files = [env[name].get("value") or "" for name in _CLOUD_TOKEN_FILES if name in env]
        mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
        container["volumeMounts"] += [
            {**{key: mount[key] for key in ("name", "mountPath", "subPath") if key in mount}, "readOnly": True}
            for mount in app.get("volumeMounts") or ()
            if isinstance(mount, Mapping) and mount.get("mountPath") not in mounted
            and any(path.startswith(str(mount.get("mountPath")).rstrip("/") + "/") for path in files)]
        return


def _refuse_what_the_sidecar_cannot_join(spec: Mapping[str, Any], native: bool) -> None:
    for volume in spec.get("volumes") or []:
        if volume.get("name") in (TOKEN_VOLUME, STATE_VOLUME):
            raise Refused(f"the Pod already has a volume named {volume['name']!r}, which llmroute injection "
                          f"adds; rename it or set the label {INJECT_LABEL}: \"false\"")
    if (spec.get("os") or {}).get("name") == "windows":
        raise Refused("the Pod is a Windows Pod (spec.os.name), and the llmroute sidecar is a Linux container; "
                      f"set the label {INJECT_LABEL}: \"false\" to create it without the sidecar")
    _refuse_taken_ports(spec)
    if not native:
        _refuse_if_it_must_complete(spec)


def _refuse_taken_ports(spec: Mapping[str, Any]) -> None:
    """The Pod's containers share one network: a port the sidecar listens on must be free."""
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for port in container.get("ports") or []:
            taken = port.get("containerPort") in (DATA_PORT, ADMIN_PORT) or port.get("name") == ADMIN_PORT_NAME
            if taken:
                what = port.get("name") if port.get("name") == ADMIN_PORT_NAME else port.get("containerPort")
                raise Refused(f"the container {container.get('name')!r} declares the port {what}, which the llmroute "
                              f"sidecar uses ({DATA_PORT} and {ADMIN_PORT}, named {ADMIN_PORT_NAME}); move it or "
                              f"set the label {INJECT_LABEL}: \"false\"")


def _refuse_if_it_must_complete(spec: Mapping[str, Any]) -> None:
    """A regular sidecar container never exits, so a Pod meant to complete (a Job's) would run for ever."""
    policy = spec.get("restartPolicy") or "Always"
    if policy != "Always":
        raise Refused(f"the Pod has restartPolicy {policy} (a Job's, say), which a regular sidecar container "
                      "would keep from ever completing; llmroute injects a native sidecar, which stops when the "
                      "app exits, only on Kubernetes 1.29 or later (the chart's injection.nativeSidecar); "
                      f"set the label {INJECT_LABEL}: \"false\" to create it without the sidecar")


def sidecar_container(settings: InjectionSettings, annotations: Mapping[str, str], native: bool) -> dict[str, Any]:
    image = _image(settings, annotations)
    env: list[dict[str, Any]] = [  # WIRING_ENV, then the chart's injection.env
        {"name": "LLMROUTE_OPERATOR_URL", "value": settings.operator_url},
        {"name": "LLMROUTE_OPERATOR_SERVER_NAME", "value": settings.server_name},
        {"name": "LLMROUTE_OPERATOR_CA_DATA", "value": settings.ca_pem},
        {"name": "LLMROUTE_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"},
        {"name": "LLMROUTE_STATE_DIR", "value": STATE_DIR},
        {"name": "LLMROUTE_LOG_LEVEL", "value": _log_level(settings, annotations)},
        {"name": "LLMROUTE_DRAIN_SECONDS", "value": str(settings.drain_seconds)},
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("NODE_NAME", "spec.nodeName"),
        *({"name": name, "value": value} for name, value in settings.extra_env),
    ]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["llmroute-proxy", "serve", "--admin-host", "0.0.0.0"],
        "env": env,
        "ports": [{"name": ADMIN_PORT_NAME, "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "resources": _resources(settings.resources, annotations),
        "securityContext": {
            "runAsNonRoot": True,
            **({} if settings.run_as_user is None else {"runAsUser": settings.run_as_user,
                                                        "runAsGroup": settings.run_as_user}),
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": STATE_VOLUME, "mountPath": STATE_DIR},
        ],
        # The app starts after this passes (native sidecars); failures until then restart nothing.
        "startupProbe": _probe("/readyz", period=1, failures=settings.startup_timeout_s),
        "readinessProbe": _probe("/readyz", period=5, failures=2),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
    }
    if native:
        container["restartPolicy"] = "Always"
    else:
        # Containers start in order, each after the previous one's postStart: this holds the app's start
        # until the sidecar has a table. preStop: the app gets SIGTERM first and stops sending; then the
        # sidecar drains (--drain-seconds) and sends its last usage report. (A native sidecar is stopped
        # only after the app has exited, so it needs neither.)
        container["lifecycle"] = {
            "postStart": {"exec": {"command": ["python3", "-c", _wait_ready(settings.startup_timeout_s)]}},
            "preStop": {"exec": {"command": ["sleep", str(settings.prestop_delay_s)]}},
        }
    return container


def token_volume(settings: InjectionSettings) -> dict[str, Any]:
    return {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": TOKEN_AUDIENCE, "expirationSeconds": settings.token_expiration_s, "path": "token"}}]}}


def state_volume() -> dict[str, Any]:
    # It holds the last good table, provider keys included: memory only, never the node's disk.
    return {"name": STATE_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}


def parse_quantity(text: str) -> Decimal | None:
    match = _QUANTITY.match(text)
    if match is None:
        return None
    try:
        return Decimal(match["number"]) * _MULTIPLIERS[match["suffix"]]
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        return None


def _image(settings: InjectionSettings, annotations: Mapping[str, str]) -> str:
    image = annotations.get(IMAGE_ANNOTATION)
    if image is None:
        return settings.image
    if not settings.allow_image_override:
        raise Refused(f"the annotation {IMAGE_ANNOTATION} is not allowed in this cluster "
                      "(the chart's injection.allowImageOverride is false)")
    if not _IMAGE.match(image) or len(image) > 512:
        raise Refused(f"the annotation {IMAGE_ANNOTATION} must be an image reference such as "
                      f"registry.example/llmroute:0.1.0, got {image!r}")
    return image


def _log_level(settings: InjectionSettings, annotations: Mapping[str, str]) -> str:
    level = annotations.get(LOG_LEVEL_ANNOTATION)
    if level is None:
        return settings.log_level.upper()
    if level.upper() not in LOG_LEVELS:
        raise Refused(f"the annotation {LOG_LEVEL_ANNOTATION} must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level.upper()


def _resources(base: Resources, annotations: Mapping[str, str]) -> dict[str, Any]:
    """Requests and limits; an annotation sets the request and lifts a lower limit to it."""
    requests = {"cpu": base.cpu_request, "memory": base.memory_request}
    limits = {k: v for k, v in (("cpu", base.cpu_limit), ("memory", base.memory_limit)) if v is not None}
    for resource, annotation, example in (("cpu", CPU_ANNOTATION, "100m or 0.5"),
                                          ("memory", MEMORY_ANNOTATION, "128Mi or 1Gi")):
        value = annotations.get(annotation)
        if value is None:
            continue
        amount = parse_quantity(value)
        if amount is None or amount <= 0 or (resource == "memory" and value.endswith("m")):
            raise Refused(f"the annotation {annotation} must be a positive {resource} quantity such as "
                          f"{example}, got {value!r}")
        requests[resource] = value
        limit = limits.get(resource)
        if limit is not None and (parse_quantity(limit) or 0) < amount:
            limits[resource] = value
    return {"requests": requests, **({"limits": limits} if limits else {})}


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": ADMIN_PORT}, "periodSeconds": period, "timeoutSeconds": 1,
            "failureThreshold": failures}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _wait_ready(timeout_s: int) -> str:
    url = f"http://127.0.0.1:{ADMIN_PORT}/readyz"
    return ("import sys, time, urllib.request\n"
            f"for _ in range({timeout_s}):\n"
            "    try:\n"
            f"        urllib.request.urlopen({url!r}, timeout=1)\n"
            "        sys.exit(0)\n"
            "    except Exception:\n"
            "        time.sleep(1)\n"
            "sys.exit(1)\n")


def _prepend(spec: Mapping[str, Any], key: str, item: dict[str, Any]) -> Patch:
    if spec.get(key):
        return [{"op": "add", "path": f"/spec/{key}/0", "value": item}]
    return [{"op": "add", "path": f"/spec/{key}", "value": [item]}]


def _append(spec: Mapping[str, Any], key: str, *items: dict[str, Any]) -> Patch:
    if spec.get(key):
        return [{"op": "add", "path": f"/spec/{key}/-", "value": item} for item in items]
    return [{"op": "add", "path": f"/spec/{key}", "value": list(items)}]


def _annotate(annotations: Mapping[str, str], key: str, value: str) -> dict[str, Any]:
    if not annotations:
        return {"op": "add", "path": "/metadata/annotations", "value": {key: value}}
    return {"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value}


def _escape(key: str) -> str:
    """A JSON Pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
