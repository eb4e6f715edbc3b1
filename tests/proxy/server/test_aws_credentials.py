"""The pod's AWS credentials in process, on an injected clock and a fake client: which source the
environment sets up (in botocore's order), what is asked of it, what its answers and refusals become,
and how long credentials are kept (botocore's advisory and mandatory refresh, one fetch at a time)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import botocore.session
import orjson
import pytest

from llmroute_proxy.aws_access_keys import AwsCredentials
from llmroute_proxy.dialects.base import UpstreamRequest
from llmroute_proxy.errors import FailureKind, UpstreamError
from llmroute_proxy.server.aws_credentials import (
    AwsCredentialSource,
    AwsEnvironment,
    aws_environment,
    fetch_aws_credentials,
    signing_region,
    sts_endpoint,
)
from llmroute_proxy.table import ProviderType, Target, TargetId

EXPIRES = "2026-12-06T05:00:00Z"
EXPIRES_AT = 1796533200.0


class Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status, self._body = status, body

    async def read(self, limit: int) -> bytes:
        return self._body[:limit]

    async def __aenter__(self) -> Answer:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        return None


class Client:
    """Answers every request with `status` and `body`, and keeps the requests."""

    def __init__(self, status: int, body: bytes) -> None:
        self.answer = Answer(status, body)
        self.sent: list[UpstreamRequest] = []

    async def __call__(self, request: UpstreamRequest) -> Answer:
        self.sent.append(request)
        return self.answer


def container_answer(**changes: Any) -> bytes:
    return orjson.dumps({"AccessKeyId": "ASIAPOD", "SecretAccessKey": "pod-secret", "Token": "pod-token",
                         "AccountId": "123456789012", "Expiration": EXPIRES, **changes})


STS_ANSWER = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult><Credentials>
    <AccessKeyId>ASIASTS</AccessKeyId><SecretAccessKey>sts-secret</SecretAccessKey>
    <SessionToken>sts-token</SessionToken><Expiration>{EXPIRES}</Expiration>
  </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>""".encode()


def sts_refusal(code: str) -> bytes:
    return (f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            f"<Code>{code}</Code><Message>why {code}</Message></Error><RequestId>r</RequestId></ErrorResponse>").encode()


@pytest.fixture
def pod_identity(tmp_path: Path) -> AwsEnvironment:
    (tmp_path / "eks-pod-identity-token").write_text("projected-pod-token\n")
    return AwsEnvironment(container_uri="http://169.254.170.23/v1/credentials",
                          container_token_file=str(tmp_path / "eks-pod-identity-token"))


@pytest.fixture
def irsa(tmp_path: Path) -> AwsEnvironment:
    (tmp_path / "token").write_text("web-identity-jwt")
    return AwsEnvironment(region="eu-west-1", role_arn="arn:aws:iam::1:role/r",
                          web_identity_token_file=str(tmp_path / "token"))


def test_the_environment_is_read_as_botocore_reads_it() -> None:
    read = aws_environment({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ROLE_ARN": "arn", "AWS_WEB_IDENTITY_TOKEN_FILE": "/t",
                            "AWS_STS_REGIONAL_ENDPOINTS": "legacy", "AWS_ENDPOINT_URL": "http://local",
                            "AWS_CONTAINER_CREDENTIALS_FULL_URI": "", "AWS_ACCESS_KEY_ID": "AKID"})
    assert (read.region, read.role_arn, read.web_identity_token_file, read.sts_regional, read.sts_endpoint) == (
        "eu-west-1", "arn", "/t", False, "http://local")
    assert read.container_uri is None and read.source() == "IRSA"  # a key id without its secret is no key
    assert aws_environment({"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "x"}).region == "us-east-2"
    assert "AKID" not in repr(aws_environment({"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"}))


def test_an_ecs_relative_uri_alone_is_a_source_asked_on_the_ecs_agent() -> None:
    read = aws_environment({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/task-uuid"})
    assert read.source() == "ECS" and read.container_url() == "http://169.254.170.2/v2/credentials/task-uuid"
    client = Client(200, container_answer())
    assert asyncio.run(fetch_aws_credentials(client, read, 0.0)).access_key_id == "ASIAPOD"
    [sent] = client.sent
    assert (sent.method, sent.url, "Authorization" in sent.headers) == (
        "GET", "http://169.254.170.2/v2/credentials/task-uuid", False)


@pytest.mark.parametrize(("environment", "url"), [
    (AwsEnvironment(region="eu-west-1"), "https://sts.eu-west-1.amazonaws.com/"),
    (AwsEnvironment(region="cn-north-1"), "https://sts.cn-north-1.amazonaws.com.cn/"),
    (AwsEnvironment(region="eu-west-1", sts_regional=False), "https://sts.amazonaws.com/"),
    (AwsEnvironment(region="us-west-2", sts_regional=False), "https://sts.amazonaws.com/"),
    # botocore keeps `legacy` on the global endpoint for its legacy regions only
    (AwsEnvironment(region="eu-south-1", sts_regional=False), "https://sts.eu-south-1.amazonaws.com/"),
    (AwsEnvironment(region="ap-east-1", sts_regional=False), "https://sts.ap-east-1.amazonaws.com/"),
    (AwsEnvironment(region="cn-north-1", sts_regional=False), "https://sts.cn-north-1.amazonaws.com.cn/"),
    (AwsEnvironment(region="aws-global"), "https://sts.amazonaws.com/"),
    (AwsEnvironment(), "https://sts.amazonaws.com/"),
    (AwsEnvironment(region="eu-west-1", sts_endpoint="http://127.0.0.1:9/"), "http://127.0.0.1:9/"),
])
def test_sts_is_asked_at_the_regional_endpoint_unless_told_otherwise(environment: AwsEnvironment, url: str) -> None:
    assert sts_endpoint(environment) == url


@pytest.mark.parametrize("mode", ["regional", "legacy"])
def test_sts_is_asked_where_the_installed_botocore_asks_it_in_every_region(
        mode: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [name for name in os.environ if name.startswith("AWS_")]:  # the shell's own endpoints, profiles
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    session = botocore.session.Session()
    session.set_config_variable("sts_regional_endpoints", mode)
    regions = [region for partition in ("aws", "aws-cn", "aws-us-gov")
               for region in session.get_available_regions("sts", partition)]
    assert len(regions) > 30
    for region in [*regions, "aws-global", None]:
        client = session.create_client("sts", region_name=region, aws_access_key_id="a", aws_secret_access_key="b")
        ours = sts_endpoint(AwsEnvironment(region=region, sts_regional=mode != "legacy"))
        assert (region, ours) == (region, client.meta.endpoint_url + "/")


def test_pod_identity_is_asked_with_the_token_of_its_file(pod_identity: AwsEnvironment) -> None:
    client = Client(200, container_answer())
    credentials = asyncio.run(fetch_aws_credentials(client, pod_identity, 0.0))
    assert credentials == AwsCredentials("ASIAPOD", "pod-secret", "pod-token", EXPIRES_AT)
    [sent] = client.sent
    assert (sent.method, sent.url, sent.headers["Authorization"]) == (
        "GET", "http://169.254.170.23/v1/credentials", "projected-pod-token")


def test_the_relative_uri_wins_over_the_full_uri_and_is_asked_with_the_same_token(
        pod_identity: AwsEnvironment) -> None:
    both = replace(pod_identity, container_relative_uri="/v2/credentials/task-uuid")
    assert both.source() == "ECS"
    client = Client(200, container_answer())
    assert asyncio.run(fetch_aws_credentials(client, both, 0.0)).access_key_id == "ASIAPOD"
    [sent] = client.sent
    assert (sent.url, sent.headers["Authorization"]) == (  # botocore sends the token to either URI
        "http://169.254.170.2/v2/credentials/task-uuid", "projected-pod-token")


@pytest.mark.parametrize("uri", ["http://localhost:2773/creds", "http://127.0.0.2/creds", "http://[::1]/creds",
                                 "http://[fd00:ec2::23]/v1/credentials", "https://creds.example/v1"])
def test_the_container_hosts_botocore_allows_are_asked(uri: str) -> None:
    client = Client(200, container_answer())
    asyncio.run(fetch_aws_credentials(client, AwsEnvironment(container_uri=uri), 0.0))
    assert [sent.url for sent in client.sent] == [uri]


def test_each_token_read_is_handed_over_as_it_is_read(
        tmp_path: Path, irsa: AwsEnvironment, pod_identity: AwsEnvironment) -> None:
    read: list[str] = []
    asyncio.run(fetch_aws_credentials(Client(200, STS_ANSWER), irsa, 0.0, read.append))
    (tmp_path / "token").write_text("rotated-web-identity-jwt")  # the kubelet rotates the projected token
    asyncio.run(fetch_aws_credentials(Client(200, STS_ANSWER), irsa, 0.0, read.append))
    with pytest.raises(UpstreamError):  # handed over before it is sent: a refusal may echo it
        asyncio.run(fetch_aws_credentials(Client(401, b"{}"), pod_identity, 0.0, read.append))
    from_env = AwsEnvironment(container_uri="http://127.0.0.1/creds", container_token="env-authorization-token")
    asyncio.run(fetch_aws_credentials(Client(200, container_answer()), from_env, 0.0, read.append))
    assert read == ["web-identity-jwt", "rotated-web-identity-jwt", "projected-pod-token", "env-authorization-token"]


def test_irsa_assumes_the_role_with_the_web_identity_token(irsa: AwsEnvironment) -> None:
    client = Client(200, STS_ANSWER)
    credentials = asyncio.run(fetch_aws_credentials(client, irsa, 1764990000.0))
    assert credentials == AwsCredentials("ASIASTS", "sts-secret", "sts-token", EXPIRES_AT)
    [sent] = client.sent
    assert (sent.method, sent.url) == ("POST", "https://sts.eu-west-1.amazonaws.com/")
    assert sent.body == (b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr"
                         b"&RoleSessionName=llmroute-1764990000&WebIdentityToken=web-identity-jwt")
    assert "Authorization" not in sent.headers  # AssumeRoleWithWebIdentity is not signed


def test_irsa_comes_before_pod_identity_and_keys_in_the_environment_before_both(
        irsa: AwsEnvironment, pod_identity: AwsEnvironment) -> None:
    both = AwsEnvironment(**{**vars_of(pod_identity), **{k: v for k, v in vars_of(irsa).items() if v is not None}})
    client = Client(200, STS_ANSWER)
    assert asyncio.run(fetch_aws_credentials(client, both, 0.0)).access_key_id == "ASIASTS"
    keys = AwsEnvironment(**{**vars_of(both), "access_key_id": "AKIDENV", "secret_access_key": "env-secret"})
    assert asyncio.run(fetch_aws_credentials(client, keys, 0.0)) == AwsCredentials("AKIDENV", "env-secret")
    assert len(client.sent) == 1


def vars_of(environment: AwsEnvironment) -> dict[str, Any]:
    return {name: getattr(environment, name) for name in environment.__slots__}


@pytest.mark.parametrize(("source", "status", "body", "kind", "said"), [
    ("irsa", 400, sts_refusal("InvalidIdentityToken"), FailureKind.AUTH,
     "HTTP 400 InvalidIdentityToken: why InvalidIdentityToken"),
    ("irsa", 403, sts_refusal("AccessDenied"), FailureKind.AUTH, "HTTP 403 AccessDenied"),
    ("irsa", 400, sts_refusal("ExpiredTokenException"), FailureKind.AUTH, "ExpiredTokenException"),
    ("irsa", 400, sts_refusal("Throttling"), FailureKind.SERVER_ERROR, "Throttling"),
    ("irsa", 503, b"<html>down</html>", FailureKind.SERVER_ERROR, "HTTP 503 error: no message"),
    ("irsa", 200, b"<not-xml", FailureKind.SERVER_ERROR, "answered no AccessKeyId"),
    ("pod_identity", 401, b'{"Message": "token projected-pod-token cannot be verified"}', FailureKind.AUTH,
     "HTTP 401"),
    ("pod_identity", 500, b"{}", FailureKind.SERVER_ERROR, "HTTP 500"),
    ("pod_identity", 200, container_answer(Token=None), FailureKind.SERVER_ERROR, "answered no AccessKeyId"),
    ("pod_identity", 200, container_answer(Expiration="tomorrow"), FailureKind.SERVER_ERROR,
     "Expiration that is not a time"),
])
def test_refusals_and_failures_are_classified_and_name_no_token(
        request: pytest.FixtureRequest, source: str, status: int, body: bytes, kind: FailureKind, said: str) -> None:
    environment: AwsEnvironment = request.getfixturevalue(source)
    with pytest.raises(UpstreamError) as failed:
        asyncio.run(fetch_aws_credentials(Client(status, body), environment, 0.0))
    assert failed.value.kind is kind and said in failed.value.message
    assert "web-identity-jwt" not in failed.value.message and "projected-pod-token" not in failed.value.message


@pytest.mark.parametrize(("environment", "said"), [
    (AwsEnvironment(), "neither IRSA"),
    (AwsEnvironment(web_identity_token_file="/t"), "AWS_ROLE_ARN is not"),
    (AwsEnvironment(role_arn="r", web_identity_token_file="/nonexistent/token"), "cannot read /nonexistent/token"),
    (AwsEnvironment(container_uri="http://metadata.example/creds"), "not a loopback address"),
    (AwsEnvironment(container_uri="http://127.0.0.1/creds", container_token="a\r\nb"), "not a legal header value"),
    (AwsEnvironment(container_relative_uri="/creds", ecs_agent_host="metadata.example"),
     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: metadata.example is not a loopback address"),
])
def test_what_is_not_set_up_is_the_targets_auth_failure(environment: AwsEnvironment, said: str) -> None:
    client = Client(200, container_answer())
    with pytest.raises(UpstreamError) as failed:
        asyncio.run(fetch_aws_credentials(client, environment, 0.0))
    assert failed.value.kind is FailureKind.AUTH and said in failed.value.message and client.sent == []


def bedrock_target(url: str, region: str = "here") -> Target:
    return Target(id=TargetId("b/m@" + region), provider="b", provider_type=ProviderType.BEDROCK,
                  model="anthropic.claude-sonnet-4-5-20250929-v1:0", url=url, region=region)


def test_the_signing_region_is_the_urls_else_the_endpoints_else_aws_region() -> None:
    assert signing_region(bedrock_target("https://bedrock-runtime.eu-west-3.amazonaws.com", "us-east-1"), "x") == "eu-west-3"
    assert signing_region(bedrock_target("https://llm-gateway.internal", "us-west-2"), "eu-west-1") == "us-west-2"
    assert signing_region(bedrock_target("https://llm-gateway.internal"), "eu-west-1") == "eu-west-1"
    with pytest.raises(UpstreamError) as failed:
        signing_region(bedrock_target("https://llm-gateway.internal"), None)
    assert failed.value.kind is FailureKind.AUTH and "AWS_REGION" in failed.value.message


class Fetches:
    """Credentials that expire `lifetime` after each fetch, numbered; each fetch yields to the loop once."""

    def __init__(self, clock: Callable[[], float], lifetime: float = 3600.0) -> None:
        self.clock, self.lifetime, self.count = clock, lifetime, 0
        self.failing: UpstreamError | None = None

    async def __call__(self) -> AwsCredentials:
        self.count += 1
        await asyncio.sleep(0)
        if self.failing is not None:
            raise self.failing
        return AwsCredentials(f"ASIA{self.count}", "s", "t", self.clock() + self.lifetime)


def test_credentials_are_kept_refreshed_ahead_in_the_background_and_awaited_at_the_end() -> None:
    now = [0.0]
    fetches = Fetches(lambda: now[0])
    source = AwsCredentialSource(lambda: now[0], AwsEnvironment, fetches)

    async def at(seconds: float, turns: int = 0) -> str:
        now[0] = seconds
        key = (await source.credentials()).access_key_id
        for _ in range(turns):
            await asyncio.sleep(0)
        return key

    async def scenario() -> list[str]:
        keys = [await at(0), await at(2699)]  # 15 min + 1 s left: kept
        keys.append(await at(2700, turns=3))  # 15 min left: the held one serves, a new one is fetched behind it
        keys.append(await at(2701))  # the new one
        fetches.failing = UpstreamError(FailureKind.SERVER_ERROR, "down")
        keys.append(await at(2701 + 2700, turns=3))  # refreshing ahead fails: the held one still serves
        try:
            await at(2701 + 3000)  # 10 min left: no longer used, and none can be fetched
        except UpstreamError as error:
            keys.append(error.message)
        return keys

    assert asyncio.run(scenario()) == ["ASIA1", "ASIA1", "ASIA1", "ASIA2", "ASIA2", "down"]
    assert fetches.count == 4


def test_requests_waiting_for_credentials_share_one_fetch_and_its_failure() -> None:
    fetches = Fetches(lambda: 0.0)
    source = AwsCredentialSource(lambda: 0.0, AwsEnvironment, fetches)
    fetches.failing = UpstreamError(FailureKind.AUTH, "refused")

    async def many() -> list[Any]:
        return await asyncio.gather(*(source.credentials() for _ in range(10)), return_exceptions=True)

    assert [str(e) for e in asyncio.run(many())] == ["refused"] * 10 and fetches.count == 1
    fetches.failing = None
    assert [c.access_key_id for c in asyncio.run(many())] == ["ASIA2"] * 10 and fetches.count == 2


def test_short_lived_credentials_are_refreshed_at_half_their_life() -> None:
    now = [0.0]
    fetches = Fetches(lambda: now[0], lifetime=1200.0)
    source = AwsCredentialSource(lambda: now[0], AwsEnvironment, fetches)

    async def at(seconds: float) -> str:
        now[0] = seconds
        return (await source.credentials()).access_key_id

    assert [asyncio.run(at(0)), asyncio.run(at(599)), asyncio.run(at(900))] == ["ASIA1", "ASIA1", "ASIA2"]
