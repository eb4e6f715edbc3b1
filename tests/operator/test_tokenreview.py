"""TokenReview results → the pod, and the review cache (by token hash, never past the token's exp)."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from llmroute_operator.contracts import PodRef
from llmroute_operator.tokenreview import (
    CachedReviewer,
    Identity,
    KubernetesTokenReviewer,
    Refused,
    claimed_pod,
    identity_from_review,
    token_expiry,
)

GOOD = {"status": {"authenticated": True, "audiences": ["llmroute.dev"],
                   "user": {"username": "system:serviceaccount:team-a:chat",
                            "extra": {"authentication.kubernetes.io/pod-name": ["chat-0"],
                                      "authentication.kubernetes.io/pod-uid": ["u-1"]}}}}


def test_the_pod_comes_from_the_bound_object_claims_and_the_namespace_from_the_username() -> None:
    assert identity_from_review(GOOD) == (PodRef("team-a", "chat-0"), "u-1")


@pytest.mark.parametrize("status, code, reason", [
    ({"authenticated": False, "error": "token has expired"}, 401, "token has expired"),
    ({**GOOD["status"], "audiences": ["https://kubernetes.default.svc"]}, 401, "not for audience llmroute.dev"),
    ({**GOOD["status"], "user": {"username": "alice"}}, 403, "not a service-account token"),
    ({**GOOD["status"], "user": {"username": "system:serviceaccount:team-a:chat", "extra": {}}}, 403,
     "not bound to a pod"),
])
def test_reviews_that_do_not_name_a_pod_for_this_audience_are_refused(
        status: dict[str, object], code: int, reason: str) -> None:
    with pytest.raises(Refused) as caught:
        identity_from_review({"status": status})
    assert caught.value.status == code and reason in caught.value.reason


def jwt(exp: float) -> str:
    claims = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"e30.{claims}.signature"


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    async def review(self, token: str) -> Identity:
        self.calls += 1
        if token == "bad":
            raise Refused(401, "token not authenticated")
        return Identity(PodRef("ns", "p"), "u")


async def test_positive_reviews_are_cached_for_the_ttl_but_never_past_the_tokens_exp() -> None:
    now = [1000.0]
    inner = Counting()
    cache = CachedReviewer(inner, ttl_s=30, clock=lambda: now[0])
    long_lived, short_lived = jwt(5000), jwt(1010)
    for token in (long_lived, long_lived, short_lived, short_lived):
        await cache.review(token)
    assert inner.calls == 2
    now[0] = 1015.0  # past the short token's exp, within the TTL
    await cache.review(long_lived)
    await cache.review(short_lived)
    assert inner.calls == 3
    now[0] = 1031.0
    await cache.review(long_lived)
    assert inner.calls == 4


async def test_refusals_are_not_cached_and_the_cache_holds_no_token() -> None:
    inner = Counting()
    cache = CachedReviewer(inner)
    for _ in range(2):
        with pytest.raises(Refused):
            await cache.review("bad")
    assert inner.calls == 2
    await cache.review("secret-token-value")
    assert "secret-token-value" not in repr(cache._cache)


def test_token_expiry_reads_exp_and_tolerates_garbage() -> None:
    assert token_expiry(jwt(123)) == 123.0
    assert token_expiry("not-a-jwt") is None and token_expiry("a.!!!.c") is None


def bound(claims: dict[str, object]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{body}.signature"


@pytest.mark.parametrize("token, pod", [
    (bound({"kubernetes.io": {"namespace": "team-a", "pod": {"name": "chat-0", "uid": "u"}}}), PodRef("team-a", "chat-0")),
    (bound({"kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "chat"}}}), None),  # not pod-bound
    (bound({"sub": "system:serviceaccount:team-a:chat"}), None),  # a legacy Secret token
    (bound({"kubernetes.io": {"namespace": 3, "pod": {"name": "chat-0"}}}), None),
    ("not-a-jwt", None),
    ("a.%%%.c", None),
])
def test_the_pod_a_token_claims_is_read_without_verifying_it(token: str, pod: PodRef | None) -> None:
    assert claimed_pod(token) == pod


async def test_every_review_asks_with_the_operators_current_credentials(aiohttp_server: Any) -> None:
    """In a pod the operator's own token is projected and rotated by the kubelet (bound tokens expire):
    each TokenReview and pod lookup must carry the token read now, not the one read at start."""
    seen: list[str] = []

    async def token_review(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.json_response(GOOD, status=201)

    async def pod(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.json_response({"metadata": {"uid": "u-1"}, "spec": {"serviceAccountName": "chat"}})

    app = web.Application()
    app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", token_review)
    app.router.add_get("/api/v1/namespaces/team-a/pods/chat-0", pod)
    server = await aiohttp_server(app)
    rotations = iter(("Bearer operator-token-1", "Bearer operator-token-2"))
    current = {"Authorization": next(rotations)}
    async with aiohttp.ClientSession() as session:
        reviewer = KubernetesTokenReviewer(session, str(server.make_url("")), lambda: dict(current))
        assert await reviewer.review("sidecar-token") == Identity(PodRef("team-a", "chat-0"), "u-1")
        current["Authorization"] = next(rotations)  # the kubelet wrote a new token
        await reviewer.review("sidecar-token")
    assert seen == ["Bearer operator-token-1"] * 2 + ["Bearer operator-token-2"] * 2
