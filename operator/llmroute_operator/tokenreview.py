"""Who is connecting: a sidecar's projected service-account token → its pod, via a TokenReview.

`TokenReviewer` is the seam the hub is tested through. `KubernetesTokenReviewer` asks the API server
(TokenReview with audience llmroute.dev), reads the pod from the token's bound-object claims and
checks that pod still exists with that uid and runs as the token's service account (the API server
checks the pod's uid but not which service account the pod runs as). `CachedReviewer` remembers a positive review briefly
(keyed by the token's hash, never the token; no longer than the token itself is valid), so 1,000
reconnecting sidecars do not mean 1,000 API calls a second. Refusals never carry the token; they name
the pod the token is for (`Refused.pod`) when it says one — verified when the review passed, read
unverified from the token's claims otherwise — so that pod's owners can be told (an Event on it).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from llmroute_operator.contracts import PodRef

AUDIENCE = "llmroute.dev"
POD_NAME_CLAIM = "authentication.kubernetes.io/pod-name"
POD_UID_CLAIM = "authentication.kubernetes.io/pod-uid"
SERVICE_ACCOUNT_CLAIMS = "kubernetes.io"  # the JWT claim of a bound token: namespace, pod, serviceaccount


@dataclass(frozen=True, slots=True)
class Identity:
    pod: PodRef
    uid: str


class Refused(Exception):
    """The token does not identify a live pod; `status` is 401 (who are you) or 403 (not you).

    `pod` is the pod the token names, if it names one (maybe falsely: see `claimed_pod`)."""

    def __init__(self, status: int, reason: str, pod: PodRef | None = None) -> None:
        self.status = status
        self.reason = reason
        self.pod = pod
        super().__init__(reason)


class TokenReviewer(Protocol):
    async def review(self, token: str) -> Identity:
        """The pod the token was issued for; raises Refused."""
        ...


def identity_from_review(review: Mapping[str, Any], audience: str = AUDIENCE) -> tuple[PodRef, str]:
    """A TokenReview's status → (pod, uid); raises Refused. Pure, for the real reviewer and its tests."""
    pod, uid, _ = _review_claims(review, audience)
    return pod, uid


def _review_claims(review: Mapping[str, Any], audience: str) -> tuple[PodRef, str, str]:
    """(pod, its uid, the service account's name) from a review; raises Refused."""
    status = review.get("status") or {}
    if not status.get("authenticated"):
        raise Refused(401, f"token not authenticated: {status.get('error') or 'invalid or expired'}")
    if audience not in (status.get("audiences") or []):
        raise Refused(401, f"token is not for audience {audience}")
    user = status.get("user") or {}
    parts = str(user.get("username", "")).split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        raise Refused(403, f"not a service-account token (user {user.get('username')!r})")
    extra = user.get("extra") or {}
    names, uids = extra.get(POD_NAME_CLAIM) or [], extra.get(POD_UID_CLAIM) or []
    if not names or not uids:
        raise Refused(403, "token is not bound to a pod")
    return PodRef(parts[2], str(names[0])), str(uids[0]), parts[3]


def claimed_pod(token: str) -> PodRef | None:
    """The pod a bound service-account token names in its claims, read WITHOUT verifying it: only for
    telling that pod's owners that a connection in its name was refused, never for trusting anyone."""
    claims = _claims(token)
    bound = claims.get(SERVICE_ACCOUNT_CLAIMS) if claims is not None else None
    pod = bound.get("pod") if isinstance(bound, dict) else None
    namespace = bound.get("namespace") if isinstance(bound, dict) else None
    name = pod.get("name") if isinstance(pod, dict) else None
    if isinstance(namespace, str) and namespace and isinstance(name, str) and name:
        return PodRef(namespace, name)
    return None


class KubernetesTokenReviewer:
    """TokenReview and the pod lookup through the API server, with the operator's own credentials."""

    def __init__(self, session: aiohttp.ClientSession, api_url: str,
                 headers: Mapping[str, str] | Callable[[], Mapping[str, str]], audience: str = AUDIENCE) -> None:
        """`headers` may be a function, called for every request: in a pod the operator's own token is
        projected and rotated by the kubelet, so it is read again each time (k8s.Connection.headers)."""
        self._headers = headers if callable(headers) else _fixed(dict(headers))
        self._session, self._api, self._audience = session, api_url.rstrip("/"), audience

    async def review(self, token: str) -> Identity:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self._audience]}}
        headers = dict(self._headers())
        async with self._session.post(f"{self._api}/apis/authentication.k8s.io/v1/tokenreviews",
                                      data=orjson.dumps(body), headers={**headers,
                                      "Content-Type": "application/json"}) as response:
            if response.status != 201 and response.status != 200:
                raise Refused(503, f"TokenReview failed: HTTP {response.status}")
            review = orjson.loads(await response.read())
        try:
            pod, uid, account = _review_claims(review, self._audience)
        except Refused as refusal:
            raise Refused(refusal.status, refusal.reason, claimed_pod(token)) from None
        async with self._session.get(f"{self._api}/api/v1/namespaces/{pod.namespace}/pods/{pod.name}",
                                     headers=headers) as response:
            if response.status == 404:
                raise Refused(403, f"pod {pod} no longer exists", pod)
            if response.status != 200:
                raise Refused(503, f"pod lookup failed: HTTP {response.status}", pod)
            live = orjson.loads(await response.read())
        if (live.get("metadata") or {}).get("uid") != uid:
            raise Refused(403, f"token was issued for an earlier pod named {pod}", pod)
        runs_as = (live.get("spec") or {}).get("serviceAccountName") or "default"
        if runs_as != account:
            raise Refused(403, f"token of service account {account} names pod {pod}, which runs as {runs_as}", pod)
        return Identity(pod, uid)


def _fixed(headers: Mapping[str, str]) -> Callable[[], Mapping[str, str]]:
    return lambda: headers


class CachedReviewer:
    """Remembers positive reviews for `ttl_s`, never past the token's own `exp`."""

    def __init__(self, inner: TokenReviewer, ttl_s: float = 30.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self._inner, self._ttl, self._max, self._clock = inner, ttl_s, max_entries, clock
        self._cache: OrderedDict[str, tuple[float, Identity]] = OrderedDict()
        self.hits = self.misses = 0

    async def review(self, token: str) -> Identity:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now < cached[0]:
            self.hits += 1
            return cached[1]
        self.misses += 1
        identity = await self._inner.review(token)
        expires = min(now + self._ttl, token_expiry(token) or float("inf"))
        self._cache[key] = (expires, identity)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return identity


def token_expiry(token: str) -> float | None:
    """The JWT's `exp` claim, read without verifying (the review verified it); None if unreadable."""
    claims = _claims(token)
    exp = claims.get("exp") if claims is not None else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _claims(token: str) -> dict[str, Any] | None:
    """A JWT's claims, unverified; None when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None
