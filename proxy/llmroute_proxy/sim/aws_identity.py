"""A simulated AWS identity for a pod: the credentials an EKS Pod Identity agent or STS hands out, and the
SigV4 check a service makes of a request signed with them.

- `AwsKeys` holds the access keys AWS knows: long-term ones (`long_term`) and the temporary ones it issued,
  each with its session token and its expiry on `clock`. Each fetch issues a new one, as STS does.
- `pod_identity_app`: `GET /v1/credentials` with the pod's token in `Authorization` (as the agent at
  169.254.170.23 takes it) answers `AccessKeyId`, `SecretAccessKey`, `Token`, `AccountId`, `Expiration`;
  no token is 400, another token 401, both `{"Message": …}`.
- `sts_app`: `POST /` form `Action=AssumeRoleWithWebIdentity` answers STS's XML
  (`AssumeRoleWithWebIdentityResponse`); a web-identity token it does not know is 400
  `InvalidIdentityToken`, another role 403 `AccessDenied`, both in STS's `ErrorResponse` XML.
  `always_fail` on `AwsKeys` makes every answer of both that status.
- `sigv4_refusal`: why AWS would refuse a request's signature, as its error type and message (what a
  service answers with a 403 and `x-amzn-ErrorType`), or None. It computes the signature from the request as
  received, on its own (the AWS documentation's steps), not with the sidecar's signer.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote
from xml.sax.saxutils import escape

from aiohttp import web

CREDENTIALS_PATH = "/v1/credentials"
LIFETIME_S = 3600
ACCOUNT = "123456789012"
MAX_SKEW_S = 300
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/,]+)/([0-9]{8})/([^/,]+)/([^/,]+)/aws4_request,\s*"
                            r"SignedHeaders=([a-z0-9;_.-]+),\s*Signature=([0-9a-f]{64})")
_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS Secret "
             "Access Key and signing method. Consult the service documentation for details.")
_INVALID_TOKEN = "The security token included in the request is invalid."


@dataclass(frozen=True, slots=True)
class AwsKey:
    secret: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expires: float | None = None


@dataclass
class AwsKeys:
    """The access keys AWS knows, by id; `fetches` counts the credential answers of the agent and STS."""

    clock: Callable[[], float] = time.time
    lifetime_s: int = LIFETIME_S
    long_term: dict[str, str] = field(default_factory=dict)
    issued: dict[str, AwsKey] = field(default_factory=dict)
    fetches: int = 0
    always_fail: int | None = None
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def issue(self) -> tuple[str, AwsKey]:
        key_id = f"ASIASIM{next(self._numbers):013d}"
        key = AwsKey(secrets.token_urlsafe(30), "IQoJsim" + secrets.token_urlsafe(96), self.clock() + self.lifetime_s)
        self.issued[key_id] = key
        return key_id, key

    def lookup(self, key_id: str) -> AwsKey | None:
        if key_id in self.long_term:
            return AwsKey(self.long_term[key_id])
        return self.issued.get(key_id)

    def latest(self) -> str:
        return next(reversed(self.issued))


def iso8601(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_identity_app(keys: AwsKeys, pod_token: str) -> web.Application:
    """The EKS Pod Identity agent of a pod whose projected token is `pod_token`."""
    async def credentials(request: web.Request) -> web.Response:
        keys.fetches += 1
        if keys.always_fail is not None:
            return web.json_response({"Message": "the agent is failing"}, status=keys.always_fail)
        given = request.headers.get("Authorization")
        if not given:
            return web.json_response({"Message": "Service account token cannot be empty"}, status=400)
        if not hmac.compare_digest(given.encode(), pod_token.encode()):
            return web.json_response({"Message": "Service account token cannot be verified"}, status=401)
        key_id, key = keys.issue()
        return web.json_response({"AccessKeyId": key_id, "SecretAccessKey": key.secret, "Token": key.token,
                                  "AccountId": ACCOUNT, "Expiration": iso8601(key.expires or 0)})

    app = web.Application()
    app.router.add_get(CREDENTIALS_PATH, credentials)
    return app


def sts_app(keys: AwsKeys, web_identity_token: str, role_arn: str) -> web.Application:
    """STS, for a pod whose projected token is `web_identity_token` and may assume `role_arn` only."""
    async def action(request: web.Request) -> web.Response:
        form = await request.post()
        keys.fetches += 1
        if keys.always_fail is not None:
            if keys.always_fail < 500:
                return sts_error(keys.always_fail, "Sender", "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
            return sts_error(keys.always_fail, "Receiver", "ServiceUnavailable", "Service is unavailable")
        if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("Version") != "2011-06-15":
            return sts_error(400, "Sender", "InvalidAction", "Could not find operation")
        if not hmac.compare_digest(str(form.get("WebIdentityToken", "")).encode(), web_identity_token.encode()):
            return sts_error(400, "Sender", "InvalidIdentityToken", "Incorrect token audience")
        if form.get("RoleArn") != role_arn:
            return sts_error(403, "Sender", "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        key_id, key = keys.issue()
        session = escape(str(form.get("RoleSessionName", "")))
        return web.Response(content_type="text/xml", text=(
            f'<AssumeRoleWithWebIdentityResponse xmlns="{STS_NS}">\n  <AssumeRoleWithWebIdentityResult>\n'
            "    <Audience>sts.amazonaws.com</Audience>\n"
            f"    <AssumedRoleUser>\n      <AssumedRoleId>AROASIM:{session}</AssumedRoleId>\n"
            f"      <Arn>{escape(role_arn.replace(':role/', ':assumed-role/').replace('iam::', 'sts::'))}/{session}</Arn>\n"
            "    </AssumedRoleUser>\n    <Credentials>\n"
            f"      <AccessKeyId>{key_id}</AccessKeyId>\n      <SecretAccessKey>{key.secret}</SecretAccessKey>\n"
            f"      <SessionToken>{key.token}</SessionToken>\n      <Expiration>{iso8601(key.expires or 0)}</Expiration>\n"
            "    </Credentials>\n  </AssumeRoleWithWebIdentityResult>\n"
            "  <ResponseMetadata>\n    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n"
            "  </ResponseMetadata>\n</AssumeRoleWithWebIdentityResponse>\n"))

    app = web.Application()
    app.router.add_post("/", action)
    return app


def sts_error(status: int, kind: str, code: str, message: str) -> web.Response:
    return web.Response(status=status, content_type="text/xml", text=(
        f'<ErrorResponse xmlns="{STS_NS}">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{code}</Code>\n'
        f"    <Message>{escape(message)}</Message>\n  </Error>\n"
        "  <RequestId>8a1a5b1e-1f4e-4c43-9d2c-5a0d8e5c0f4b</RequestId>\n</ErrorResponse>\n"))


def sigv4_refusal(request: web.Request, body: bytes, keys: AwsKeys, region: str,
                  service: str) -> tuple[str, str] | None:
    """(AWS error type, message) for a request whose SigV4 signature AWS would refuse; None when it holds."""
    found = _AUTHORIZATION.fullmatch(request.headers.get("Authorization", ""))
    if found is None:
        return "IncompleteSignatureException", "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'."
    key_id, day, scope_region, scope_service, signed, signature = found.groups()
    key = keys.lookup(key_id)
    if key is None or (key.token is not None and not hmac.compare_digest(
            request.headers.get("X-Amz-Security-Token", "").encode(), key.token.encode())):
        return "UnrecognizedClientException", _INVALID_TOKEN
    now = keys.clock()
    if key.expires is not None and key.expires <= now:
        return "ExpiredTokenException", "The security token included in the request is expired"
    stamp = request.headers.get("X-Amz-Date", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return "IncompleteSignatureException", "Date must be in ISO-8601 'basic format'."
    if abs(signed_at - now) > MAX_SKEW_S:
        return "InvalidSignatureException", (f"Signature expired: {stamp} is now earlier than "
                                             f"{datetime.fromtimestamp(now - MAX_SKEW_S, UTC):%Y%m%dT%H%M%SZ} "
                                             f"({datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%SZ} - 5 min.)")
    names = signed.split(";")
    if "host" not in names or day != stamp[:8] or scope_region != region or scope_service != service:
        return "InvalidSignatureException", _MISMATCH if "host" not in names else (
            f"Credential should be scoped to a valid region, and to service '{service}'.")
    if not hmac.compare_digest(_expected(request, body, names, key.secret, stamp, region, service), signature):
        return "InvalidSignatureException", _MISMATCH
    return None


def _expected(request: web.Request, body: bytes, names: list[str], secret: str, stamp: str, region: str,
              service: str) -> str:
    path, _, query = request.raw_path.partition("?")
    pairs = sorted(tuple(pair.split("=", 1)) if "=" in pair else (pair, "") for pair in query.split("&") if pair)
    lines = [request.method, quote(path, safe="/~"), "&".join(f"{k}={v}" for k, v in pairs)]
    lines += [name + ":" + ",".join(" ".join(v.split()) for v in request.headers.getall(name, [])) for name in names]
    lines += ["", ";".join(names), hashlib.sha256(body).hexdigest()]
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256("\n".join(lines).encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (stamp[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
