"""The pod's AWS credentials, for Bedrock targets with `credentials.workloadIdentity`, and the SigV4
signature added with them where an attempt's request is sent (`AwsCredentialSource.signed`).

They are found as botocore's default chain finds them in a container, in its order (`aws_environment`
reads the variables; `Settings.aws` holds them):

1. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`): used as they are;
2. IRSA: `AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE`. The token file (the pod's projected service
   account token, which the kubelet rotates: read at each fetch) is sent to STS `AssumeRoleWithWebIdentity`
   (unsigned, form-encoded POST; session name `AWS_ROLE_SESSION_NAME` or `llmroute-{epoch}`), at
   `AWS_ENDPOINT_URL_STS` (or `AWS_ENDPOINT_URL`) if set, else the regional endpoint of `AWS_REGION`
   (`AWS_DEFAULT_REGION`), or the global one when no region is set (or it is `aws-global`), and, with
   `AWS_STS_REGIONAL_ENDPOINTS=legacy`, for the regions botocore keeps on it (`LEGACY_GLOBAL_STS_REGIONS`;
   any other region keeps its regional endpoint, as in botocore 1.44). Its XML answer, or its XML error, is
   read with the standard library;
3. A container credentials endpoint (EKS Pod Identity, ECS): `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS:
   asked at `http://169.254.170.2` followed by it; `AwsEnvironment.ecs_agent_host` holds the host, for
   tests) or, when that is not set, `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS Pod Identity). Either is a
   GET with the token of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read at each fetch) or
   `AWS_CONTAINER_AUTHORIZATION_TOKEN` in `Authorization`, as botocore sends it to both; JSON
   `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`. As botocore, only an https URL, a loopback
   address, `localhost` or the agents' own (169.254.170.2, 169.254.170.23, fd00:ec2::23) is asked.
   botocore asks the agent up to three times, 2 s each, 1 s apart; here one fetch is asked once: a request
   waiting on it fails over rather than wait up to 8 s, and the next request that needs credentials asks
   again.

Temporary credentials are refreshed in the background from 15 minutes before they expire and are no longer
used from 10 minutes before (botocore's advisory and mandatory refresh), one fetch at a time
(`server/renewing`), each within `FETCH_TIMEOUT_S`. A refusal (4xx from the agent, an STS error such as
`InvalidIdentityToken` or `AccessDenied`, nothing set up in the environment) is the target's `auth` failure;
an agent or STS that is down is a `server_error`, `timeout` or `connection` failure, as for the GCP
metadata server: either way the attempt fails and the request fails over.

Keys, session tokens and web-identity tokens travel only in requests' headers and bodies, which are never
printed; messages name hosts, HTTP statuses and AWS error codes only. The sidecar also hands them to its
scrubber (`Sidecar.hold_secrets`): the credentials fetched, and each token read to fetch them (the
web-identity token, the container authorization token) as it is read (`fetch_aws_credentials`'s `on_token`),
since the kubelet rotates the token files.
"""

from __future__ import annotations

import asyncio
import ipaddress
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from llmroute_proxy.aws_access_keys import AwsCredentials, load_access_key
from llmroute_proxy.dialects.base import UpstreamRequest
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.providers.aws_sigv4 import bedrock_region, is_aws_region, sign
from llmroute_proxy.server.renewing import Fetched, Renewing
from llmroute_proxy.table import ACCESS_KEY_AUTH, Target

SERVICE = "bedrock"
ADVISORY_REFRESH_S = 15 * 60
MANDATORY_REFRESH_S = 10 * 60
FETCH_TIMEOUT_S = 5.0
MAX_ANSWER = 64 * 1024
ECS_AGENT_HOST = "169.254.170.2"
CONTAINER_HOSTS = frozenset({ECS_AGENT_HOST, "169.254.170.23", "fd00:ec2::23", "localhost"})
LEGACY_GLOBAL_STS_REGIONS = frozenset({
    "ap-northeast-1", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "aws-global", "ca-central-1", "eu-central-1",
    "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3", "sa-east-1", "us-east-1", "us-east-2", "us-west-1",
    "us-west-2"})
"""The regions `AWS_STS_REGIONAL_ENDPOINTS=legacy` sends to STS's global endpoint (botocore's list)."""
STS_VERSION = "2011-06-15"
_STS_AUTH_CODES = frozenset({"InvalidIdentityToken", "ExpiredTokenException", "AccessDenied", "IDPRejectedClaim",
                             "InvalidParameterValue", "MalformedPolicyDocument", "RegionDisabledException"})

Send = Callable[[UpstreamRequest], Awaitable[Any]]
"""The sidecar's upstream client, bound to a name for its errors."""


@dataclass(frozen=True, slots=True)
class AwsEnvironment:
    """What of the sidecar's environment says where the pod's AWS credentials come from."""

    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    role_arn: str | None = None
    web_identity_token_file: str | None = None
    role_session_name: str | None = None
    sts_endpoint: str | None = None  # the endpoint URL set for STS; None: the region's
    sts_regional: bool = True  # AWS_STS_REGIONAL_ENDPOINTS is not `legacy`
    container_relative_uri: str | None = None  # asked at `ecs_agent_host`; wins over `container_uri`
    container_uri: str | None = None
    container_token_file: str | None = None
    container_token: str | None = field(default=None, repr=False)
    ecs_agent_host: str = ECS_AGENT_HOST  # host[:port] the relative URI is asked at (not an AWS variable)

    def source(self) -> str:
        """Where credentials come from, for messages: `environment`, `IRSA`, `ECS`, `EKS Pod Identity` or
        `none`."""
        if self.access_key_id and self.secret_access_key:
            return "environment"
        if self.web_identity_token_file:
            return "IRSA"
        if self.container_relative_uri:
            return "ECS"
        return "EKS Pod Identity" if self.container_uri else "none"

    def container_url(self) -> str | None:
        """Where container credentials are asked: the relative URI on the ECS agent, else the full URI."""
        if self.container_relative_uri:
            return f"http://{self.ecs_agent_host}{self.container_relative_uri}"
        return self.container_uri


def aws_environment(environ: Mapping[str, str]) -> AwsEnvironment:
    """The variables botocore reads in a container (empty ones count as unset)."""
    def get(*names: str) -> str | None:
        return next((environ[name] for name in names if environ.get(name)), None)
    return AwsEnvironment(
        region=get("AWS_REGION", "AWS_DEFAULT_REGION"), access_key_id=get("AWS_ACCESS_KEY_ID"),
        secret_access_key=get("AWS_SECRET_ACCESS_KEY"), session_token=get("AWS_SESSION_TOKEN"),
        role_arn=get("AWS_ROLE_ARN"), web_identity_token_file=get("AWS_WEB_IDENTITY_TOKEN_FILE"),
        role_session_name=get("AWS_ROLE_SESSION_NAME"), sts_endpoint=get("AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"),
        sts_regional=(get("AWS_STS_REGIONAL_ENDPOINTS") or "regional").lower() != "legacy",
        container_relative_uri=get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        container_uri=get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        container_token_file=get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        container_token=get("AWS_CONTAINER_AUTHORIZATION_TOKEN"))


class AwsCredentialSource:
    """The pod's AWS credentials, kept and refreshed (`server/renewing`), and the requests signed with them;
    `fetch` asks the pod's credential source (`fetch_aws_credentials`, bound to the sidecar's client)."""

    def __init__(self, wallclock: Callable[[], float], environment: Callable[[], AwsEnvironment],
                 fetch: Callable[[], Awaitable[AwsCredentials]]) -> None:
        self._wallclock = wallclock
        self._environment = environment
        self._fetch = fetch
        self._held = Renewing(wallclock, self._fetched, "the pod's AWS credentials")
        self._access_keys: dict[str, AwsCredentials] = {}

    async def credentials(self) -> AwsCredentials:
        return await self._held.get()

    async def signed(self, request: UpstreamRequest, target: Target) -> UpstreamRequest:
        """The request signed (SigV4, service `bedrock`) for the target's region, with its own access key
        (`ACCESS_KEY_AUTH`), else with the pod's credentials."""
        region = signing_region(target, self._environment().region)
        if target.options.get("auth") == ACCESS_KEY_AUTH and target.credential is not None:
            credentials = self._access_key(target.credential.reveal())
        else:
            credentials = await self._held.get()
        added = sign(request.method, request.url, request.headers, request.body, credentials, region, SERVICE,
                     self._wallclock())
        return replace(request, headers={**request.headers, **added})

    def _access_key(self, text: str) -> AwsCredentials:
        """A target's access key, parsed once per key (the table's loader checked that it parses)."""
        credentials = self._access_keys.get(text)
        if credentials is None:
            if len(self._access_keys) >= 64:  # keys rotated many times: start again
                self._access_keys.clear()
            credentials = self._access_keys[text] = load_access_key(text)
        return credentials

    async def _fetched(self) -> Fetched[AwsCredentials]:
        credentials = await self._fetch()
        if credentials.expires is None:
            return Fetched(credentials, float("inf"), float("inf"))
        now = self._wallclock()
        left = credentials.expires - now
        if left <= 2 * ADVISORY_REFRESH_S:  # short-lived: refresh at half its life, stop using at three quarters
            return Fetched(credentials, now + left / 2, now + left * 3 / 4)
        return Fetched(credentials, credentials.expires - ADVISORY_REFRESH_S, credentials.expires - MANDATORY_REFRESH_S)


def signing_region(target: Target, configured: str | None) -> str:
    """The region a request to the target is signed for: its URL's (`bedrock-runtime.{region}.amazonaws.com`),
    else its endpoint's region in the spec when that is an AWS region's name, else `AWS_REGION`."""
    region = bedrock_region(target.url) or (target.region if is_aws_region(target.region) else None) or configured
    if region is None:
        raise UpstreamError(FailureKind.AUTH, f"cannot tell the AWS region to sign for: the URL of {target.provider} is "
                                              "not a bedrock-runtime.{region}.amazonaws.com one, its endpoint's "
                                              "region is not an AWS region and AWS_REGION is not set")
    return region


def _not_held(token: str) -> None:
    return None


async def fetch_aws_credentials(send: Send, environment: AwsEnvironment, now: float,
                                on_token: Callable[[str], None] = _not_held) -> AwsCredentials:
    """The pod's credentials from the first source its environment sets up, in botocore's order. `on_token`
    is given each token read to ask for them (web-identity, container authorization) before it is sent."""
    if environment.access_key_id and environment.secret_access_key:
        return AwsCredentials(environment.access_key_id, environment.secret_access_key, environment.session_token)
    if environment.web_identity_token_file:
        return await _bounded(_assume_role(send, environment, now, on_token), "STS")
    if environment.container_url():
        return await _bounded(_container(send, environment, on_token), _agent_name(environment))
    raise UpstreamError(FailureKind.AUTH, "no AWS credentials for the pod: neither IRSA (AWS_ROLE_ARN, "
                                          "AWS_WEB_IDENTITY_TOKEN_FILE) nor EKS Pod Identity "
                                          "(AWS_CONTAINER_CREDENTIALS_FULL_URI) or ECS "
                                          "(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI) is set up in the sidecar's "
                                          "environment")


def _agent_name(environment: AwsEnvironment) -> str:
    return "the ECS agent" if environment.container_relative_uri else "the EKS Pod Identity agent"


async def _bounded(fetch: Awaitable[AwsCredentials], source: str) -> AwsCredentials:
    try:
        async with asyncio.timeout(FETCH_TIMEOUT_S):
            return await fetch
    except TimeoutError:
        raise UpstreamError(FailureKind.TIMEOUT, f"{source} gave no AWS credentials within {FETCH_TIMEOUT_S:g}s") from None


async def _container(send: Send, environment: AwsEnvironment, on_token: Callable[[str], None]) -> AwsCredentials:
    uri = environment.container_url() or ""
    parts = urlsplit(uri)
    name = f"{_agent_name(environment)} at {parts.hostname}"
    if parts.scheme != "https" and not _container_host(parts.hostname or ""):
        variable = "AWS_CONTAINER_CREDENTIALS_" + ("RELATIVE_URI" if environment.container_relative_uri else "FULL_URI")
        raise UpstreamError(FailureKind.AUTH, f"{variable}: {parts.hostname} is not a loopback address nor an "
                                              "agent's (169.254.170.2, 169.254.170.23), and not https")
    headers = {"Accept": "application/json"}
    token = _read_token(environment.container_token_file, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") \
        if environment.container_token_file else environment.container_token
    if token is not None:
        on_token(token)
        if "\r" in token or "\n" in token:
            raise UpstreamError(FailureKind.AUTH, "the container authorization token is not a legal header value")
        headers["Authorization"] = token
    status, body = await _asked(send, UpstreamRequest("GET", uri, headers), name)
    if status != 200:
        kind = FailureKind.AUTH if 400 <= status < 500 else FailureKind.SERVER_ERROR
        raise UpstreamError(kind, f"{name} gave no AWS credentials: HTTP {status} (is a Pod Identity association "
                                  "set up for the pod's service account?)")
    answer = _json_object(body)
    values = [value if isinstance(value := answer.get(key), str) else ""
              for key in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")]
    if not all(values):
        raise UpstreamError(FailureKind.SERVER_ERROR, f"{name} answered no AccessKeyId, SecretAccessKey, Token "
                                                      "and Expiration")
    return AwsCredentials(values[0], values[1], values[2], _expiration(values[3], name))


async def _assume_role(send: Send, environment: AwsEnvironment, now: float,
                       on_token: Callable[[str], None]) -> AwsCredentials:
    if not environment.role_arn:
        raise UpstreamError(FailureKind.AUTH, "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not: "
                                              "IRSA needs the role to assume")
    token = _read_token(environment.web_identity_token_file or "", "AWS_WEB_IDENTITY_TOKEN_FILE")
    on_token(token)
    url = sts_endpoint(environment)
    name = f"STS at {urlsplit(url).hostname}"
    form = urlencode({"Action": "AssumeRoleWithWebIdentity", "Version": STS_VERSION,
                      "RoleArn": environment.role_arn,
                      "RoleSessionName": environment.role_session_name or f"llmroute-{int(now)}",
                      "WebIdentityToken": token})
    request = UpstreamRequest("POST", url, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                                            "Accept": "text/xml"}, form.encode())
    status, body = await _asked(send, request, name)
    if status != 200:
        code, message = sts_error(body)
        kind = FailureKind.AUTH if code in _STS_AUTH_CODES or (400 <= status < 500 and code != "Throttling") \
            else FailureKind.SERVER_ERROR
        raise UpstreamError(kind, f"{name} gave no AWS credentials for the role {environment.role_arn}: "
                                  f"HTTP {status} {code or 'error'}: {message or 'no message'}")
    return sts_credentials(body, name)


def sts_endpoint(environment: AwsEnvironment) -> str:
    """The STS endpoint botocore would ask: the one set, else the region's (the global one for `legacy` in
    the regions botocore keeps on it)."""
    if environment.sts_endpoint:
        return environment.sts_endpoint.rstrip("/") + "/"
    region = environment.region
    if region is None or region == "aws-global" or (not environment.sts_regional and region in LEGACY_GLOBAL_STS_REGIONS):
        return "https://sts.amazonaws.com/"
    return f"https://sts.{region}.amazonaws.com{'.cn' if region.startswith('cn-') else ''}/"


def sts_credentials(body: bytes, name: str) -> AwsCredentials:
    """The credentials of an `AssumeRoleWithWebIdentityResponse`."""
    fields = _xml_fields(body, "Credentials")
    values = [fields.get(key, "") for key in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")]
    if not all(values):
        raise UpstreamError(FailureKind.SERVER_ERROR, f"{name} answered no AccessKeyId, SecretAccessKey, "
                                                      "SessionToken and Expiration")
    return AwsCredentials(values[0], values[1], values[2], _expiration(values[3], name))


def sts_error(body: bytes) -> tuple[str, str]:
    """The code and message of an STS `ErrorResponse` (empty when the body is not one)."""
    fields = _xml_fields(body, "Error")
    return fields.get("Code", ""), fields.get("Message", "")[:300]


def _xml_fields(body: bytes, parent: str) -> dict[str, str]:
    """The child elements' texts of the first `parent` element, namespaces aside ({} for what is not XML)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return {}
    for element in root.iter():
        if element.tag.rpartition("}")[2] == parent:
            return {child.tag.rpartition("}")[2]: (child.text or "").strip() for child in element}
    return {}


async def _asked(send: Send, request: UpstreamRequest, name: str) -> tuple[int, bytes]:
    try:
        answer = await send(request)
        async with answer:
            return answer.status, await answer.read(MAX_ANSWER)
    except UpstreamError as error:
        raise UpstreamError(error.kind, f"{name} gave no AWS credentials: {error.message}") from None


def _read_token(path: str, variable: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as problem:
        raise UpstreamError(FailureKind.AUTH, f"{variable}: cannot read {path} ({problem.strerror})") from None


def _container_host(host: str) -> bool:
    if host in CONTAINER_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _expiration(value: str, name: str) -> float:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UpstreamError(FailureKind.SERVER_ERROR, f"{name} answered an Expiration that is not a time") from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()
