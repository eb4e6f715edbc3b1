"""A few lines of Kubernetes REST for the tier-B tests: the API server's own answers, nothing hidden.

`rest` is the one request function: `ApiServer.request` (synchronous, for tests/crds and the harness)
and `Kube` (async, for the tier-B tests that run an event loop) both call it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

API_AUDIENCE = "https://kubernetes.default.svc"  # the API server's own (--api-audiences)


def rest(url: str, token: str, context: ssl.SSLContext, method: str, path: str, body: object = None,
         content_type: str = "application/json", timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """One call to the API server at `url` as the holder of `token`: the status and the JSON body (other
    bodies as {"text": ...}). An HTTP error is an answer; not reaching the server raises (URLError, OSError)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", **({"Content-Type": content_type} if data is not None else {})}
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _json(error.read())


def _json(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        return {"text": raw.decode(errors="replace")}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


class KubeError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body.get('message', body)}")


class Kube:
    """REST calls to one API server as the holder of one bearer token; an HTTP error raises KubeError."""

    def __init__(self, url: str, token: str, ssl_context: ssl.SSLContext) -> None:
        self.url = url
        self.token = token
        self._ssl = ssl_context

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json") -> dict[str, Any]:
        status, document = await asyncio.to_thread(rest, self.url, self.token, self._ssl, method, path, body,
                                                   content_type)
        if status >= 400:
            raise KubeError(status, document)
        return document

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body)

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def delete(self, path: str) -> dict[str, Any]:
        return await self.request("DELETE", path)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def namespace(self, prefix: str) -> str:
        created = await self.create("/api/v1/namespaces", {"metadata": {"generateName": f"{prefix}-"}})
        return str(created["metadata"]["name"])

    async def pod(self, namespace: str, name: str, service_account: str,
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
        """A Pod object; no node runs it in tier B."""
        return await self.create(f"/api/v1/namespaces/{namespace}/pods", {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"serviceAccountName": service_account,
                     "containers": [{"name": "app", "image": "localhost/app:none"}]}})

    async def service_account(self, namespace: str, name: str) -> None:
        await self.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}})

    async def operator_token(self, rules: list[dict[str, Any]]) -> str:
        """A new `operator` ServiceAccount bound to a new ClusterRole of exactly `rules`: its API token."""
        namespace = await self.namespace("llmroute-system")
        await self.service_account(namespace, "operator")
        role = await self.create("/apis/rbac.authorization.k8s.io/v1/clusterroles",
                                 {"metadata": {"generateName": "llmroute-operator-"}, "rules": rules})
        await self.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "metadata": {"generateName": "llmroute-operator-"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role["metadata"]["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}]})
        issued = await self.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/operator/token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [API_AUDIENCE], "expirationSeconds": 3600}})
        return str(issued["status"]["token"])

    async def bound_token(self, pod: dict[str, Any], audience: str, expiration_s: int = 600) -> str:
        """What the kubelet projects into the pod: a TokenRequest bound to the pod object."""
        meta = pod["metadata"]
        review = await self.create(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{pod['spec']['serviceAccountName']}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"audiences": [audience], "expirationSeconds": expiration_s,
                      "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                                         "uid": meta["uid"]}}})
        return str(review["status"]["token"])
