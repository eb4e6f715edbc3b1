"""The mutating admission webhook: AdmissionReview v1 in, a JSON Patch (or a refusal) out.

The shell around injection.py. It is served over TLS by the operator process on its own port
(`--webhook-port`); the API server calls `/inject` for Pods labelled `llmroute.dev/inject: "true"` and
`/inject/namespace` for Pods in namespaces labelled so (the MutatingWebhookConfiguration's two entries),
so the webhook needs no read access to Namespaces. The API server's version, which decides native
sidecar or regular container, is read once at start.

Its settings come from a JSON file (`--inject-config`, the chart's ConfigMap) and the hub's URL from
`--inject-operator-url` (the chart builds it from the hub Service's cluster IP).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from llmroute_operator.injection import INJECT_LABEL, InjectionSettings, Refused, Resources, mutate

log = logging.getLogger("llmroute.webhook")

REVIEW_VERSION = "admission.k8s.io/v1"
_NAMESPACE_SELECTED = {INJECT_LABEL: "true"}


class ConfigError(ValueError):
    pass


class Webhook:
    def __init__(self, settings: InjectionSettings, server_version: str) -> None:
        self.settings = settings
        self.server_version = server_version
        self.counts = {"injected": 0, "skipped": 0, "refused": 0, "malformed": 0}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/inject", self._pod_selected)
        app.router.add_post("/inject/namespace", self._namespace_selected)
        return app

    async def _pod_selected(self, request: web.Request) -> web.Response:
        return await self._handle(request, {})

    async def _namespace_selected(self, request: web.Request) -> web.Response:
        return await self._handle(request, _NAMESPACE_SELECTED)

    async def _handle(self, request: web.Request, namespace_labels: Mapping[str, str]) -> web.Response:
        try:
            review = orjson.loads(await request.read())
            uid, pod, namespace, operation = _request_parts(review)
        except (orjson.JSONDecodeError, ValueError) as error:
            self.counts["malformed"] += 1
            message = f"not an AdmissionReview {REVIEW_VERSION}: {error}"
            log.warning("refused a malformed review: %s", message)
            return web.json_response({"error": message}, status=400)
        response: dict[str, Any] = {"uid": uid, "allowed": True}
        if operation == "CREATE" and pod is not None:
            try:
                patch = mutate(pod, namespace_labels, self.settings, self.server_version, namespace=namespace)
            except Refused as refusal:
                self.counts["refused"] += 1
                log.info("refused a Pod in %s: %s", namespace, refusal)
                response = {"uid": uid, "allowed": False,
                            "status": {"code": 400, "reason": "BadRequest", "message": str(refusal)}}
            else:
                if patch:
                    self.counts["injected"] += 1
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
                    log.info("injected the sidecar into a Pod in %s (%s)", namespace, _pod_name(pod))
                else:
                    self.counts["skipped"] += 1
        else:
            self.counts["skipped"] += 1
        body = {"apiVersion": REVIEW_VERSION, "kind": "AdmissionReview", "response": response}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _request_parts(review: Any) -> tuple[str, dict[str, Any] | None, str, str]:
    """uid, the Pod (None for any other kind), namespace and operation; ValueError names what is wrong."""
    if not isinstance(review, dict):
        raise ValueError("the body is not a JSON object")
    if review.get("apiVersion") != REVIEW_VERSION or review.get("kind") != "AdmissionReview":
        raise ValueError(f"apiVersion/kind are {review.get('apiVersion')!r}/{review.get('kind')!r}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise ValueError("request is missing")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ValueError("request.uid is missing")
    kind = request.get("kind") or {}
    obj = request.get("object")
    is_pod = isinstance(kind, dict) and kind.get("kind") == "Pod" and not kind.get("group")
    if is_pod and not (isinstance(obj, dict) and isinstance(obj.get("spec"), dict)):
        raise ValueError("request.object is not a Pod")
    namespace = request.get("namespace") or ""
    return uid, obj if is_pod else None, str(namespace), str(request.get("operation") or "")


def _pod_name(pod: Mapping[str, Any]) -> str:
    metadata = pod.get("metadata") or {}
    return str(metadata.get("name") or (metadata.get("generateName") or "") + "…")


def load_settings(path: Path, operator_url: str) -> InjectionSettings:
    """The chart's injection ConfigMap (JSON, camelCase as in values.yaml) and the hub's URL."""
    try:
        raw = orjson.loads(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"cannot read the injection settings {path}: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise ConfigError(f"the injection settings {path} are not JSON: {error}") from None
    parts = urlsplit(operator_url)
    if parts.scheme != "wss" or not parts.hostname or "$(" in operator_url:
        raise ConfigError(f"the hub's URL for sidecars must be wss://HOST:PORT/v1/sync, got {operator_url!r} "
                          "(is the hub Service missing, or was the operator started before it?)")
    try:
        ca_pem = Path(raw["caFile"]).read_text()
        resources = raw.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        return InjectionSettings(
            image=str(raw["image"]), operator_url=operator_url, server_name=str(raw["serverName"]), ca_pem=ca_pem,
            image_pull_policy=str(raw.get("imagePullPolicy", "IfNotPresent")),
            resources=Resources(str(requests.get("cpu", "50m")), str(requests.get("memory", "64Mi")),
                                _optional(limits.get("cpu")), _optional(limits.get("memory"))),
            log_level=str(raw.get("logLevel", "INFO")),
            token_expiration_s=int(raw.get("tokenExpirationSeconds", 3600)),
            drain_seconds=int(raw.get("drainSeconds", 25)),
            prestop_delay_s=int(raw.get("preStopDelaySeconds", 5)),
            startup_timeout_s=int(raw.get("startupTimeoutSeconds", 120)),
            run_as_user=None if (uid := raw.get("runAsUser", 65532)) is None else int(uid),
            native_sidecar=str(raw.get("nativeSidecar", "auto")),
            allow_image_override=bool(raw.get("allowImageOverride", True)),
            excluded_namespaces=frozenset(str(n) for n in raw.get("excludedNamespaces", ["kube-system"])),
            extra_env=tuple((str(e["name"]), str(e["value"])) for e in raw.get("env", [])),
            image_pull_secrets=tuple(str(s["name"]) for s in raw.get("imagePullSecrets") or []),
        )
    except KeyError as error:
        raise ConfigError(f"the injection settings {path} lack {error.args[0]!r}") from None
    except OSError as error:
        raise ConfigError(f"cannot read the hub's CA {raw.get('caFile')}: {error.strerror}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the injection settings {path} are invalid: {error}") from None


def _optional(value: object) -> str | None:
    return None if value in (None, "") else str(value)
