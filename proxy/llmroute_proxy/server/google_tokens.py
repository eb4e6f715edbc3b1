"""Bearer tokens for Vertex AI targets: signed by the sidecar with a service-account key, or given by the
GCP metadata server to the pod's own service account (GKE Workload Identity; a GCE VM's attached one).

Providers are pure and a token needs the time (and, from the metadata server, the network), so the token
is added here, in the shell, where an attempt's request is sent (`with_token`).

- A service-account key: one token per key is kept and signed again when less than `RESIGN_BEFORE_S` of
  it remains (google-auth refreshes 3 min 45 s before expiry; a little more leaves room for a slow answer
  and clock skew). Signing costs about a millisecond; loading the PEM more, so the loaded key is kept too.
- The metadata server (`credentials.workloadIdentity`): `GET http://{host}/computeMetadata/v1/instance/
  service-accounts/default/token` with `Metadata-Flavor: Google` answers an access token and its
  `expires_in`. The token is kept until `RESIGN_BEFORE_S` before it expires (half its life, for one the
  server gave with less than twice that left). One fetch at a time: requests that need a token while one
  is being fetched wait for that one, and all fail with it when it fails (the attempt's failure, so the
  request fails over). A metadata server that does not know the pod's account (404, 403) is the target's
  `auth` failure: the credentials are missing, as with a bad key.

Tokens travel only in the requests' headers, which are never printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from llmroute_proxy.dialects.base import UpstreamRequest
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.server.renewing import Fetched, Renewing
from llmroute_proxy.service_accounts import (
    TOKEN_LIFETIME_S,
    ServiceAccount,
    ServiceAccountError,
    load_service_account,
    self_signed_jwt,
)
from llmroute_proxy.table import METADATA_AUTH, ProviderType, Secret, Target

RESIGN_BEFORE_S = 300
MAX_KEYS = 64  # keys kept at once: a table's worth; more only when tables with new keys keep coming
METADATA_HOST = "metadata.google.internal"
"""The GCP metadata server, as google-auth reaches it; `GCE_METADATA_HOST` (host[:port]) overrides it."""
METADATA_TIMEOUT_S = 3.0
METADATA_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
MAX_METADATA_ANSWER = 64 * 1024

MetadataFetch = Callable[[], Awaitable[tuple[str, float]]]
"""Fetches the pod's access token from the metadata server: (token, seconds it lives)."""


@dataclass(slots=True)
class _Signed:
    account: ServiceAccount
    token: str = ""
    expires: float = 0.0


class GoogleTokens:
    """The bearer token of each Vertex AI target: its service-account key's self-signed JWT, re-signed
    before it expires, or the metadata server's token for the pod; `wallclock` gives epoch seconds (the
    sidecar's, injected: tests move it), `metadata` fetches from the metadata server."""

    def __init__(self, wallclock: Callable[[], float], metadata: MetadataFetch | None = None) -> None:
        self._wallclock = wallclock
        self._metadata = metadata
        self._signed: dict[Secret, _Signed] = {}
        self._given = Renewing(wallclock, self._fetch, "the GCP metadata server's token")

    def token(self, credential: Secret) -> str:
        signed = self._signed.get(credential)
        if signed is None:
            signed = self._signed[credential] = _Signed(load_service_account(credential.reveal()))
            if len(self._signed) > MAX_KEYS:
                del self._signed[next(iter(self._signed))]
        now = self._wallclock()
        if signed.expires - now < RESIGN_BEFORE_S:
            issued = int(now)
            signed.token = self_signed_jwt(signed.account, issued)
            signed.expires = issued + TOKEN_LIFETIME_S
        return signed.token

    async def with_token(self, request: UpstreamRequest, target: Target) -> UpstreamRequest:
        """The request with the target's bearer token when its provider takes one (Vertex AI); else as it is."""
        if target.provider_type is not ProviderType.VERTEX:
            return request
        if target.credential is not None:
            try:
                token = self.token(target.credential)
            except ServiceAccountError as problem:  # refused when the table was loaded: only a bug gets here
                raise UpstreamError(FailureKind.AUTH, f"the service-account key {problem}") from None
        elif target.options.get("auth") == METADATA_AUTH:
            token = await self.metadata_token()
        else:
            return request
        return replace(request, headers={**request.headers, "Authorization": "Bearer " + token})

    async def metadata_token(self) -> str:
        """The pod's access token from the metadata server: the one held while it has time left, else the
        one being fetched (a fetch is started when none is: `server/renewing`)."""
        return await self._given.get()

    async def _fetch(self) -> Fetched[str]:
        if self._metadata is None:
            raise UpstreamError(FailureKind.AUTH, "no metadata server is configured to give this sidecar a token")
        token, lifetime = await self._metadata()
        renew_at = self._wallclock() + max(lifetime - RESIGN_BEFORE_S, lifetime / 2)
        return Fetched(token, renew_at, renew_at)


async def fetch_metadata_token(send: Callable[[UpstreamRequest], Awaitable[Any]], host: str) -> tuple[str, float]:
    """The pod's access token and its life in seconds, from the metadata server at `host` (`send`: the
    sidecar's upstream client, bound to a target name for its errors)."""
    request = UpstreamRequest("GET", f"http://{host}{METADATA_PATH}", {"Metadata-Flavor": "Google"})
    try:
        async with asyncio.timeout(METADATA_TIMEOUT_S):
            answer = await send(request)
            async with answer:
                body = await answer.read(MAX_METADATA_ANSWER)
    except TimeoutError:
        raise UpstreamError(FailureKind.TIMEOUT, f"the metadata server at {host} gave no token within "
                                                 f"{METADATA_TIMEOUT_S:g}s") from None
    except UpstreamError as error:
        raise UpstreamError(error.kind, f"the metadata server at {host} gave no token: {error.message}") from None
    if answer.status != 200:
        kind = FailureKind.AUTH if answer.status in (401, 403, 404) else FailureKind.SERVER_ERROR
        raise UpstreamError(kind, f"the metadata server at {host} gave no token: HTTP {answer.status} (is "
                                  "Workload Identity set up for the pod's service account?)")
    return _token_answer(body, host)


def _token_answer(body: bytes, host: str) -> tuple[str, float]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    token = answer.get("access_token") if isinstance(answer, dict) else None
    lifetime = answer.get("expires_in") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token or not isinstance(lifetime, (int, float)) or lifetime <= 0:
        raise UpstreamError(FailureKind.SERVER_ERROR, f"the metadata server at {host} answered no access token "
                                                      "with a positive expires_in")
    return token, float(lifetime)
