"""A Bedrock provider's IAM access key, given as the JSON AWS prints: read, refused with reasons that
never quote it, and scrubbed wherever it could be echoed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from llmroute_proxy.aws_access_keys import AwsCredentials, access_key_problem, is_access_key, load_access_key
from llmroute_proxy.config import ConfigError, load_table
from llmroute_proxy.scrubbing import MARKER, Scrubber
from llmroute_proxy.spec import credential_problem
from llmroute_proxy.table import ACCESS_KEY_AUTH, ProviderType, TargetId

KEY_ID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("given", [
    {"AccessKey": {"UserName": "llmroute", "AccessKeyId": KEY_ID, "Status": "Active", "SecretAccessKey": SECRET,
                   "CreateDate": "2026-12-06T04:00:00+00:00"}},  # `aws iam create-access-key`, whole
    {"AccessKeyId": KEY_ID, "SecretAccessKey": SECRET},
    {"accessKeyId": KEY_ID, "secretAccessKey": SECRET},
], ids=["as aws iam create-access-key prints it", "its inner object", "camel case"])
def test_an_access_key_is_read_as_aws_prints_it(given: dict[str, object]) -> None:
    text = orjson.dumps(given).decode()
    assert is_access_key("\n " + text)
    assert load_access_key(text) == AwsCredentials(KEY_ID, SECRET)


def test_a_temporary_key_keeps_its_session_token() -> None:
    key = load_access_key(orjson.dumps({"AccessKeyId": "ASIA1", "SecretAccessKey": SECRET,
                                        "SessionToken": "IQoJb3JpZ2luX2VjEXAMPLE"}).decode())
    assert key.session_token == "IQoJb3JpZ2luX2VjEXAMPLE"
    assert SECRET not in repr(key) and "IQoJ" not in repr(key)


def test_an_api_key_is_not_an_access_key() -> None:
    assert not is_access_key("ABSKQmVkcm9ja0FQSUtleS1EXAMPLE")
    assert credential_problem(ProviderType.BEDROCK, "ABSKQmVkcm9ja0FQSUtleS1EXAMPLE") is None


@pytest.mark.parametrize(("text", "problem"), [
    ('{"AccessKeyId": "AKIA1", "SecretAcessKey": "' + SECRET + '"}',
     "misses SecretAccessKey (members found: AccessKeyId, SecretAcessKey)"),
    ('{"AccessKeyId": "AKIA1", "SecretAccessKey": "' + SECRET, "is not JSON"),
    ('{"AccessKeyId": "AKIA1", "SecretAccessKey": "' + SECRET + '", "SessionToken": 7}',
     "has a SessionToken that is not a string"),
])
def test_a_bad_access_key_is_refused_saying_why_never_what_it_holds(text: str, problem: str) -> None:
    found = access_key_problem(text)
    assert found is not None and found.startswith(problem) and SECRET not in found
    assert credential_problem(ProviderType.BEDROCK, text) == f"the access key {found}"


def test_a_standalone_file_with_a_bad_access_key_is_refused_naming_the_provider(tmp_path: Path) -> None:
    path = tmp_path / "llmroute.yaml"
    path.write_text("""\
apiVersion: llmroute.dev/v1alpha1
kind: LLMProvider
metadata: {name: aws}
spec:
  type: bedrock
  endpoints: [{region: us-east-1, url: "https://bedrock-runtime.us-east-1.amazonaws.com"}]
  credentials: {env: AWS_KEY}
---
apiVersion: llmroute.dev/v1alpha1
kind: LLMRoute
metadata: {name: r}
spec:
  tiers: {t: {targets: [{provider: aws, model: anthropic.claude-sonnet-4-5-20250929-v1:0}]}}
  defaultTier: t
""")
    with pytest.raises(ConfigError) as refused:
        load_table(path, environ={"AWS_KEY": '{"AccessKeyId": "AKIA1", "Secret": "' + SECRET + '"}'})
    assert "aws" in str(refused.value) and "misses SecretAccessKey" in str(refused.value)
    assert SECRET not in str(refused.value)

    table = load_table(path, environ={"AWS_KEY": orjson.dumps({"AccessKeyId": KEY_ID, "SecretAccessKey": SECRET}).decode()})
    target = table.targets()[TargetId("aws/anthropic.claude-sonnet-4-5-20250929-v1:0@us-east-1")]
    assert target.options["auth"] == ACCESS_KEY_AUTH  # signed with it, never sent as a bearer token


def test_the_secret_and_session_token_are_scrubbed_wherever_echoed() -> None:
    text = orjson.dumps({"AccessKeyId": KEY_ID, "SecretAccessKey": SECRET, "SessionToken": "IQoJb3JpZ2luX2VjEXAMPLE0123"})
    scrubbed = Scrubber([text.decode()])(f"upstream said: bad key {SECRET} and token IQoJb3JpZ2luX2VjEXAMPLE0123")
    assert SECRET not in scrubbed and "IQoJb3JpZ2luX2VjEXAMPLE0123" not in scrubbed and MARKER in scrubbed
