"""Bearer tokens for Vertex AI targets, signed by the sidecar with their service-account keys.

Providers are pure and a token needs the time, so the token is added here, in the shell, where an
attempt's request is sent (`with_token`). One token per key is kept and signed again when less than
`RESIGN_BEFORE_S` of it remains (google-auth refreshes 3 min 45 s before expiry; a little more leaves
room for a slow answer and clock skew). Signing costs about a millisecond; loading the PEM more, so the
loaded key is kept too. The token travels only in the request's headers, which are never printed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from llmroute_proxy.dialects.base import UpstreamRequest
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.service_accounts import (
    TOKEN_LIFETIME_S,
    ServiceAccount,
    ServiceAccountError,
    load_service_account,
    self_signed_jwt,
)
from llmroute_proxy.table import ProviderType, Secret, Target

RESIGN_BEFORE_S = 300
MAX_KEYS = 64  # keys kept at once: a table's worth; more only when tables with new keys keep coming


@dataclass(slots=True)
class _Signed:
    account: ServiceAccount
    token: str = ""
    expires: float = 0.0


class GoogleTokens:
    """The self-signed JWT of each service-account key, re-signed before it expires; `wallclock` gives
    epoch seconds (the sidecar's, injected: tests move it)."""

    def __init__(self, wallclock: Callable[[], float]) -> None:
        self._wallclock = wallclock
        self._signed: dict[Secret, _Signed] = {}

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

    def with_token(self, request: UpstreamRequest, target: Target) -> UpstreamRequest:
        """The request with the target's bearer token when its provider takes one (Vertex AI); else as it is."""
        if target.provider_type is not ProviderType.VERTEX or target.credential is None:
            return request
        try:
            token = self.token(target.credential)
        except ServiceAccountError as problem:  # refused when the table was loaded: only a bug gets here
            raise UpstreamError(FailureKind.AUTH, f"the service-account key {problem}") from None
        return replace(request, headers={**request.headers, "Authorization": "Bearer " + token})
