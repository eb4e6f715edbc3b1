"""Google service-account keys, and the self-signed JWTs that authenticate a Vertex AI call with them.

Google's own client libraries call Vertex AI with a JWT the service account signs itself, not
with an access token fetched from Google's token endpoint (`always_use_jwt_access`; AIP-4111). So
does the sidecar: no token endpoint, no network, one RS256 signature an hour per key. The token
is what `google/oauth2/service_account.py` (`_create_self_signed_jwt`, with scopes) and
`google/auth/jwt.py` (`encode`, `Credentials._make_jwt`) make: header `{"typ": "JWT", "alg":
"RS256", "kid": private_key_id}`, claims `iss` and `sub` the client e-mail, `iat`, `exp` an hour
later and `scope` cloud-platform, no `aud`.

Pure: the time is the caller's (`now`). Nothing here ever puts a key, or any part of one, in a message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_LIFETIME_S = 3600  # google.auth.jwt._DEFAULT_TOKEN_LIFETIME_SECS


class ServiceAccountError(ValueError):
    """The credential is not a usable service-account key; the message says why, never what it holds."""


@dataclass(frozen=True, slots=True, repr=False)
class ServiceAccount:
    client_email: str
    private_key_id: str
    key: rsa.RSAPrivateKey

    def __repr__(self) -> str:
        return f"ServiceAccount({self.client_email}, key {self.private_key_id[:8]}…)"


_REQUIRED = ("client_email", "private_key", "private_key_id")


def load_service_account(text: str) -> ServiceAccount:
    """The key file as GCP issues it (JSON, `type: service_account`); `ServiceAccountError` otherwise."""
    try:
        info = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ServiceAccountError("is not JSON: expected a service-account key file as GCP issues it "
                                  "(type service_account)") from None
    if not isinstance(info, dict):
        raise ServiceAccountError("is not a JSON object: expected a service-account key file")
    if info.get("type") != "service_account":
        found = info.get("type")
        shown = f"'{found}'" if isinstance(found, str) and len(found) < 40 else "missing"
        raise ServiceAccountError(f"has type {shown}; expected a service-account key (type service_account)")
    missing = [name for name in _REQUIRED if not isinstance(info.get(name), str) or not info[name]]
    if missing:
        raise ServiceAccountError(f"misses {', '.join(missing)}")
    try:
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise ServiceAccountError("private_key does not load as an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ServiceAccountError("private_key is not an RSA key (RS256 needs one)")
    return ServiceAccount(info["client_email"], info["private_key_id"], key)


def service_account_problem(text: str) -> str | None:
    """Why `text` is not a usable service-account key, or None."""
    try:
        load_service_account(text)
    except ServiceAccountError as problem:
        return str(problem)
    return None


def self_signed_jwt(account: ServiceAccount, now: int, lifetime_s: int = TOKEN_LIFETIME_S) -> str:
    """The bearer token for Google APIs, issued at `now` (epoch seconds) and valid for `lifetime_s`."""
    header = {"typ": "JWT", "alg": "RS256", "kid": account.private_key_id}
    claims = {"iss": account.client_email, "sub": account.client_email, "iat": now, "exp": now + lifetime_s,
              "scope": SCOPE}
    signing_input = _b64(orjson.dumps(header)) + b"." + _b64(orjson.dumps(claims))
    signature = account.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return (signing_input + b"." + _b64(signature)).decode()


def key_parts(text: str) -> list[str]:
    """What of a service-account key a log or an echo could quote, for the scrubber: the private key's
    PEM, its base64 body in one piece and line by line. Empty for a credential that is no such key."""
    if '"private_key"' not in text:
        return []
    try:
        info = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    pem = info.get("private_key") if isinstance(info, dict) else None
    if not isinstance(pem, str):
        return []
    lines = [line.strip() for line in pem.splitlines() if line.strip() and not line.startswith("-----")]
    return [pem, "".join(lines), *lines]


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
