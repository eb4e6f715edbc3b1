"""AWS Signature Version 4, as botocore's `SigV4Auth` signs a request for a service other than S3.

Pure: the caller gives the time and the credentials; the result is the headers to add. What botocore
does, and so what this does (tests compare the two byte for byte):

- `x-amz-date` (`YYYYMMDDTHHMMSSZ`, UTC) and, for temporary credentials, `x-amz-security-token` are
  added and signed; `x-amz-content-sha256` is not sent (botocore adds it for S3 only), but the body's
  SHA-256 is the canonical request's payload hash all the same;
- every header the request carries is signed, but those a hop may change (`user-agent`,
  `connection`, `expect`, `transfer-encoding`… `SIGNED_HEADERS_BLACKLIST`), plus `host` (lower-cased,
  without a default port), as the HTTP client will send it;
- the canonical URI is the path *as sent*, without dot segments and empty segments, URI-encoded once
  more (`safe="/~"`): a model id sent with `:` signs as `%3A`, one sent as `%3A` signs as `%253A`;
- the query's pairs are sorted as they are written, not re-encoded.

A signing key is an HMAC chain over the date, region and service; it is the same for a day, so it is
kept (`_signing_key`, per secret, date, region and service) and a request costs two SHA-256s and one HMAC.
A path's canonical form, a URL's host and a second's date are kept too (bench/signing.py).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from llmroute_proxy.aws_access_keys import AwsCredentials

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_HEADERS = frozenset({
    "baggage", "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "traceparent", "tracestate", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
    "authorization",
})
"""Headers never signed: botocore's `SIGNED_HEADERS_BLACKLIST`, and the one the signature goes in."""
_BEDROCK_HOST = re.compile(
    r"(?:^|\.)bedrock-runtime(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-[0-9]+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$")
_AWS_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+")


@dataclass(frozen=True, slots=True)
class Signed:
    """A parsed `Authorization: AWS4-HMAC-SHA256 …` header."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def amz_date(now: float) -> str:
    return _second(int(now))


@functools.lru_cache(maxsize=4)
def _second(epoch: int) -> str:
    """One second's `x-amz-date` (requests signed in the same second share it)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%dT%H%M%SZ")


@functools.lru_cache(maxsize=256)
def host_of(url: str) -> str:
    """The `Host` header an HTTP client sends for `url` (botocore's `_host_from_url`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def bedrock_region(url: str) -> str | None:
    """The region of a Bedrock runtime URL (`bedrock-runtime.{region}.amazonaws.com`, its FIPS and VPC
    endpoint forms), or None for any other host (a proxy, a simulator)."""
    found = _BEDROCK_HOST.search(urlsplit(url).hostname or "")
    return found.group(1) if found else None


def is_aws_region(name: str) -> bool:
    return _AWS_REGION.fullmatch(name) is not None


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes | None, credentials: AwsCredentials,
         region: str, service: str, now: float) -> dict[str, str]:
    """The headers that sign the request: `x-amz-date`, `x-amz-security-token` (temporary credentials),
    `authorization`. `headers` are the request's own, to be sent with these."""
    date = amz_date(now)
    added = {"x-amz-date": date}
    if credentials.session_token:
        added["x-amz-security-token"] = credentials.session_token
    to_sign = {name.lower(): value for name, value in headers.items()
               if name.lower() not in UNSIGNED_HEADERS and name.lower() not in added}
    to_sign.setdefault("host", host_of(url))
    to_sign.update(added)
    parts = urlsplit(url)
    names = sorted(to_sign)
    signature = signature_of(method, parts.path, parts.query, {n: to_sign[n] for n in names},
                             hashlib.sha256(body or b"").hexdigest(), credentials.secret_access_key,
                             date, region, service)
    scope = f"{credentials.access_key_id}/{date[:8]}/{region}/{service}/aws4_request"
    added["authorization"] = f"{ALGORITHM} Credential={scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    return added


def signature_of(method: str, path: str, query: str, signed: Mapping[str, str], payload_hash: str,
                 secret: str, date: str, region: str, service: str) -> str:
    """The hex signature of a request: its path and query as sent, its signed headers (lower-case
    names, in order), its payload's SHA-256. What a server that checks signatures computes too."""
    canonical = "\n".join((method.upper(), canonical_uri(path), canonical_query(query),
                           "".join(f"{name}:{' '.join(value.split())}\n" for name, value in signed.items()),
                           ";".join(signed), payload_hash))
    scope = f"{date[:8]}/{region}/{service}/aws4_request"
    to_sign = f"{ALGORITHM}\n{date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(_signing_key(secret, date[:8], region, service), to_sign.encode(), hashlib.sha256).hexdigest()


def parse_authorization(value: str) -> Signed | None:
    """`AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, SignedHeaders=a;b, Signature=hex`,
    or None when it is not of that form."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not fields.get("SignedHeaders") or not fields.get("Signature"):
        return None
    return Signed(scope[0], scope[1], scope[2], scope[3], tuple(fields["SignedHeaders"].split(";")),
                  fields["Signature"])


@functools.lru_cache(maxsize=1024)  # a target's paths are few: two operations per model
def canonical_uri(path: str) -> str:
    """botocore's `_normalize_url_path`: dot segments and empty segments removed, then encoded once more."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    normalized = "/" + "/".join(kept)
    if path.endswith("/") and kept:
        normalized += "/"
    return quote(normalized, safe="/~")


def canonical_query(query: str) -> str:
    if not query:
        return ""
    return "&".join(f"{key}={value}" for key, value in sorted(pair.partition("=")[::2] for pair in query.split("&")))


@functools.lru_cache(maxsize=64)
def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
