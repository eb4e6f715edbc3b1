"""The simulated AWS identity: Bedrock's SigV4 check (fed requests botocore itself signed, so the check is
tested apart from the sidecar's signer), its refusals in AWS's shapes and how the Bedrock provider reads
them, the EKS Pod Identity agent and STS AssumeRoleWithWebIdentity, read back by the sidecar's parsers."""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.providers.bedrock import BedrockProvider
from llmroute_proxy.server.aws_credentials import sts_credentials, sts_error
from llmroute_proxy.sim import SimServer, bedrock_app
from llmroute_proxy.sim.aws_identity import AwsKeys, pod_identity_app, sts_app
from tests.proxy.sim import SimPool

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
BODY = orjson.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                     "messages": [{"role": "user", "content": "hello there"}]})
NOW = [time.time()]
KEYS = AwsKeys(clock=lambda: NOW[0], long_term={"AKIDLONGTERM": "long-term-secret"})
ROLE = "arn:aws:iam::123456789012:role/llmroute"


@pytest.fixture
async def bedrock(sims: SimPool) -> SimServer:
    NOW[0] = time.time()
    return await sims.start(bedrock_app(aws_keys=KEYS, region="us-east-1", chunks=4))


def botocore_headers(url: str, body: bytes, key_id: str, secret: str, token: str | None, at: float,
                     region: str = "us-east-1") -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body,
                         headers={"content-type": "application/json", "accept": "application/json"})
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC).replace(tzinfo=None)
    original = botocore_auth.get_current_datetime
    botocore_auth.get_current_datetime = lambda: moment  # type: ignore[assignment]
    try:
        botocore_auth.SigV4Auth(Credentials(key_id, secret, token), "bedrock", region).add_auth(request)
    finally:
        botocore_auth.get_current_datetime = original
    return dict(request.headers.items())


async def post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=dict(headers)) as r:
        return r.status, r.headers, await r.read()


async def test_requests_botocore_signed_are_answered_streamed_or_not(bedrock: SimServer) -> None:
    key_id, key = KEYS.issue()
    for operation in ("invoke", "invoke-with-response-stream"):
        url = f"{bedrock.url}/model/{SONNET}/{operation}"
        status, _, answer = await post(url, BODY, botocore_headers(url, BODY, key_id, key.secret, key.token, NOW[0]))
        assert status == 200, answer
    url = f"{bedrock.url}/model/{SONNET}/invoke"
    status, _, _ = await post(url, BODY, botocore_headers(url, BODY, "AKIDLONGTERM", "long-term-secret", None, NOW[0]))
    assert status == 200


def _tampered(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Authorization": headers["Authorization"][:-4] + "0000"}


@pytest.mark.parametrize(("case", "kind", "message"), [
    ("another secret", "InvalidSignatureException", "does not match the signature you provided"),
    ("another body", "InvalidSignatureException", "does not match the signature you provided"),
    ("a changed signature", "InvalidSignatureException", "does not match the signature you provided"),
    ("another region", "InvalidSignatureException", "scoped to a valid region"),
    ("signed 6 minutes ago", "InvalidSignatureException", "Signature expired"),
    ("an unknown key", "UnrecognizedClientException", "The security token included in the request is invalid."),
    ("without its session token", "UnrecognizedClientException", "The security token included in the request is invalid."),
    ("an expired key", "ExpiredTokenException", "The security token included in the request is expired"),
    ("no signature", "IncompleteSignatureException", "Authorization header requires"),
])
async def test_a_bad_signature_is_refused_as_aws_refuses_it_and_read_as_an_auth_failure(
        bedrock: SimServer, case: str, kind: str, message: str) -> None:
    key_id, key = KEYS.issue()
    url = f"{bedrock.url}/model/{SONNET}/invoke"
    secret, token, at, region, body = key.secret, key.token, NOW[0], "us-east-1", BODY
    if case == "another secret":
        secret = "not-" + secret
    elif case == "another region":
        region = "us-west-2"
    elif case == "signed 6 minutes ago":
        at -= 360
    elif case == "an unknown key":
        key_id = "ASIAUNKNOWN"
    elif case == "an expired key":
        NOW[0] += KEYS.lifetime_s + 1
        at = NOW[0]
    headers = botocore_headers(url, body, key_id, secret, token, at, region)
    if case == "another body":
        body = BODY.replace(b"hello", b"hullo")
    elif case == "a changed signature":
        headers = _tampered(headers)
    elif case == "without its session token":
        del headers["X-Amz-Security-Token"]
    elif case == "no signature":
        headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=" + key_id

    status, answer_headers, answer = await post(url, body, headers)

    assert (status, answer_headers["x-amzn-ErrorType"]) == (403, kind)
    assert message in orjson.loads(answer)["message"]
    error = BedrockProvider().classify_error(status, answer_headers, answer)
    assert error.kind is FailureKind.AUTH and kind in error.message


async def test_the_pod_identity_agent_gives_keys_for_the_pods_token_only(sims: SimPool) -> None:
    keys = AwsKeys()
    agent = await sims.start(pod_identity_app(keys, "pod-token"))
    async with aiohttp.ClientSession() as session:
        async with session.get(agent.url + "/v1/credentials") as missing:
            assert missing.status == 400
        async with session.get(agent.url + "/v1/credentials", headers={"Authorization": "other"}) as wrong:
            assert wrong.status == 401
        async with session.get(agent.url + "/v1/credentials", headers={"Authorization": "pod-token"}) as given:
            answer = await given.json()
    assert answer["AccessKeyId"] == keys.latest() and answer["Token"] == keys.issued[keys.latest()].token
    assert answer["Expiration"].endswith("Z") and answer["SecretAccessKey"]


async def test_sts_answers_assume_role_with_web_identity_in_its_xml_and_refuses_in_its_error_xml(
        sims: SimPool) -> None:
    keys = AwsKeys()
    sts = await sims.start(sts_app(keys, "web-token", ROLE))
    form = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": ROLE,
            "RoleSessionName": "s", "WebIdentityToken": "web-token"}
    async with aiohttp.ClientSession() as session:
        async with session.post(sts.url + "/", data=form) as given:
            credentials = sts_credentials(await given.read(), "STS")
        async with session.post(sts.url + "/", data={**form, "WebIdentityToken": "other"}) as bad_token:
            refused = (bad_token.status, sts_error(await bad_token.read()))
        async with session.post(sts.url + "/", data={**form, "RoleArn": ROLE + "-admin"}) as other_role:
            denied = (other_role.status, sts_error(await other_role.read()))

    key = keys.issued[credentials.access_key_id]
    assert (credentials.secret_access_key, credentials.session_token) == (key.secret, key.token)
    assert credentials.expires == pytest.approx(key.expires, abs=1)
    assert refused == (400, ("InvalidIdentityToken", "Incorrect token audience"))
    assert denied == (403, ("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"))
