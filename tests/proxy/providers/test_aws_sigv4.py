"""The SigV4 signer against botocore's own `SigV4Auth`: the same request, time and credentials give the
byte-identical `Authorization` header (and the same `x-amz-date`, `x-amz-security-token`), for the
requests the Bedrock provider sends. The Bedrock simulator checks signatures with this signer, so this
file is what makes that check independent of it."""

from __future__ import annotations

import datetime
from typing import Any

import orjson
import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from llmroute_proxy.dialects.base import ChatRequest
from llmroute_proxy.providers.aws_sigv4 import (
    AwsCredentials,
    bedrock_region,
    canonical_uri,
    host_of,
    parse_authorization,
    sign,
)
from llmroute_proxy.providers.bedrock import BedrockProvider
from llmroute_proxy.table import ProviderType, Target, TargetId

NOW = 1764990000.5  # 2025-12-06T03:00:00.5Z
STATIC = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TEMPORARY = AwsCredentials("ASIAEXAMPLE", "c2VjcmV0L3dpdGgrc2xhc2hlcw==", "IQoJb3JpZ2luX2VjEFQaCXVzLWVhc3QtMSJH/token+=")
US = "https://bedrock-runtime.us-east-1.amazonaws.com"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
BODY = orjson.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                     "messages": [{"role": "user", "content": "héllo"}]})
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


def botocore_signed(method: str, url: str, headers: dict[str, str], body: bytes | None, credentials: AwsCredentials,
                    region: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    at = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: at)
    signer = botocore_auth.SigV4Auth(Credentials(credentials.access_key_id, credentials.secret_access_key,
                                                 credentials.session_token), "bedrock", region)
    signer.add_auth(request)
    own = {name.lower() for name in headers}
    return {name.lower(): value for name, value in request.headers.items() if name.lower() not in own}


CASES: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("POST", f"{US}/model/{SONNET}/invoke", JSON_HEADERS, BODY),
    ("POST", f"{US}/model/{SONNET}/invoke-with-response-stream", JSON_HEADERS, BODY),
    ("POST", f"{US}/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke", JSON_HEADERS, BODY),
    ("POST", f"{US}/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/invoke-with-response-stream",
     {**JSON_HEADERS, "user-agent": "llmroute", "x-amzn-trace-id": "Root=1-abc"}, BODY),
    ("POST", "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com/model/a%2Fb/./x/../invoke/", JSON_HEADERS, b""),
    ("GET", "https://bedrock.eu-west-1.amazonaws.com/foundation-models?byProvider=anthropic&b=2&a=1", {}, None),
    ("POST", "http://127.0.0.1:8123//model/" + SONNET + "/invoke", {"Content-Type": "application/json",
                                                                      "X-Custom": "  two   spaces  "}, BODY),
]


@pytest.mark.parametrize("credentials", [STATIC, TEMPORARY], ids=["long-term", "temporary"])
@pytest.mark.parametrize(("method", "url", "headers", "body"), CASES)
def test_the_signature_is_botocores_byte_for_byte(method: str, url: str, headers: dict[str, str], body: bytes | None,
                                                  credentials: AwsCredentials, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = sign(method, url, headers, body, credentials, "us-east-1", "bedrock", NOW)
    theirs = botocore_signed(method, url, headers, body, credentials, "us-east-1", monkeypatch)
    assert ours == theirs
    assert ("x-amz-security-token" in ours) is (credentials.session_token is not None)
    assert "x-amz-content-sha256" not in theirs  # botocore sends it to S3 only


def test_what_the_bedrock_provider_sends_signs_as_botocore_signs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    target = Target(id=TargetId(f"b/{SONNET}@us-west-2"), provider="b", provider_type=ProviderType.BEDROCK,
                    model=SONNET, url="https://bedrock-runtime.us-west-2.amazonaws.com", region="us-west-2")
    for stream in (False, True):
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        request = BedrockProvider().chat_request(ChatRequest(body), target)
        assert "authorization" not in request.headers  # no key: the shell signs
        ours = sign(request.method, request.url, request.headers, request.body, TEMPORARY, "us-west-2", "bedrock", NOW)
        assert ours == botocore_signed(request.method, request.url, request.headers, request.body, TEMPORARY,
                                       "us-west-2", monkeypatch)


def test_a_different_body_time_or_secret_changes_the_signature() -> None:
    url, base = f"{US}/model/{SONNET}/invoke", sign("POST", f"{US}/model/{SONNET}/invoke", JSON_HEADERS, BODY,
                                                     STATIC, "us-east-1", "bedrock", NOW)
    others = [sign("POST", url, JSON_HEADERS, BODY + b" ", STATIC, "us-east-1", "bedrock", NOW),
              sign("POST", url, JSON_HEADERS, BODY, STATIC, "us-east-1", "bedrock", NOW + 1),
              sign("POST", url, JSON_HEADERS, BODY, AwsCredentials("AKIDEXAMPLE", "other"), "us-east-1", "bedrock", NOW),
              sign("POST", url, JSON_HEADERS, BODY, STATIC, "us-west-2", "bedrock", NOW)]
    assert len({o["authorization"] for o in [base, *others]}) == 5


def test_the_authorization_header_parses_back() -> None:
    signed = sign("POST", f"{US}/model/{SONNET}/invoke", JSON_HEADERS, BODY, TEMPORARY, "us-east-1", "bedrock", NOW)
    parsed = parse_authorization(signed["authorization"])
    assert parsed is not None
    assert (parsed.access_key_id, parsed.date, parsed.region, parsed.service) == (
        "ASIAEXAMPLE", "20251206", "us-east-1", "bedrock")
    assert parsed.signed_headers == ("accept", "content-type", "host", "x-amz-date", "x-amz-security-token")
    assert signed["authorization"].endswith("Signature=" + parsed.signature)
    assert parse_authorization("Bearer ABSK…") is None
    assert parse_authorization("AWS4-HMAC-SHA256 Credential=AKID/20251206/us-east-1, Signature=x") is None


@pytest.mark.parametrize(("url", "region"), [
    ("https://bedrock-runtime.us-east-1.amazonaws.com", "us-east-1"),
    ("https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com/", "us-gov-west-1"),
    ("https://bedrock-runtime.cn-north-1.amazonaws.com.cn", "cn-north-1"),
    ("https://vpce-0abc-xyz.bedrock-runtime.eu-central-1.vpce.amazonaws.com", "eu-central-1"),
    ("https://BEDROCK-RUNTIME.AP-SOUTHEAST-2.AMAZONAWS.COM", "ap-southeast-2"),
    ("http://127.0.0.1:9000", None),
    ("https://bedrock.internal.example.com", None),
    ("https://bedrock-runtime.us-east-1.amazonaws.com.evil.example", None),
])
def test_the_region_comes_from_a_bedrock_runtime_host(url: str, region: str | None) -> None:
    assert bedrock_region(url) == region


def test_the_canonical_uri_encodes_the_path_as_sent_once_more() -> None:
    assert canonical_uri("/model/a.b-v1:0/invoke") == "/model/a.b-v1%3A0/invoke"
    assert canonical_uri("/model/a.b-v1%3A0/invoke") == "/model/a.b-v1%253A0/invoke"
    assert canonical_uri("") == canonical_uri("/") == "/"
    assert host_of("https://h.example:443/x") == "h.example" and host_of("http://127.0.0.1:81") == "127.0.0.1:81"
