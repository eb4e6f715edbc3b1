"""Bedrock providers with IAM access keys of their own: a credential given as the JSON `aws iam
create-access-key` prints signs each request (SigV4) instead of going as a bearer token, so two providers
can call Bedrock as two accounts. The simulated Bedrock checks every signature against the keys it knows."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.request import urlopen

import anthropic
import openai
import orjson
import pytest

from llmroute_proxy.sim import bedrock_app, sim_state
from llmroute_proxy.sim.aws_identity import AwsKeys
from tests.proxy.documents import model, provider, route, target
from tests.proxy.stack import Stack

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
INVOKE = f"/model/{SONNET}/invoke"
ACCOUNT_A = ("AKIASIMACCOUNTA00001", secrets.token_urlsafe(30))
ACCOUNT_B = ("AKIASIMACCOUNTB00002", secrets.token_urlsafe(30))
KEYS = AwsKeys(long_term=dict([ACCOUNT_A, ACCOUNT_B]))
CREATED = {"AccessKey": {"UserName": "llmroute", "AccessKeyId": ACCOUNT_A[0], "Status": "Active",
                         "SecretAccessKey": ACCOUNT_A[1], "CreateDate": "2026-12-06T04:00:00+00:00"}}
"""What `aws iam create-access-key` prints, pasted whole into a Secret."""
INNER = {"accessKeyId": ACCOUNT_B[0], "secretAccessKey": ACCOUNT_B[1]}
HELLO: Any = [{"role": "user", "content": "hello"}]
TITAN = "amazon.titan-embed-text-v2:0"
PRICED = [model(SONNET, input_per_mtok=3.0, output_per_mtok=15.0), model(TITAN, input_per_mtok=0.02)]
CONFIG = [
    # the endpoints' region names the region signed for (the simulator is not at a bedrock-runtime URL)
    provider("bedrock-a", "bedrock", "{bedrock}", key_env="BEDROCK_A_KEY", models=PRICED, region="us-east-1"),
    provider("bedrock-b", "bedrock", "{bedrock}", key_env="BEDROCK_B_KEY", models=PRICED, region="us-east-1"),
    route("main", {"a": [target("bedrock-a", SONNET)], "b": [target("bedrock-b", SONNET)],
                   "a-embed": [target("bedrock-a", TITAN)]}, default_tier="a"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sims = {"bedrock": lambda faults: bedrock_app(aws_keys=KEYS, region="us-east-1", faults=faults)}
    environ = {"BEDROCK_A_KEY": orjson.dumps(CREATED).decode(), "BEDROCK_B_KEY": orjson.dumps(INNER).decode()}
    with Stack(tmp_path_factory.mktemp("bedrock-access-keys"), config=CONFIG, extra_sims=sims,
               environ=environ) as running:
        yield running


def last_authorization(stack: Stack) -> str:
    request = stack.call(lambda: sim_state(stack.sims["bedrock"].app).stats.last_by_path[INVOKE])
    authorization: str = request.headers["Authorization"]
    return authorization


@pytest.mark.parametrize(("tier", "key_id"), [("a", ACCOUNT_A[0]), ("b", ACCOUNT_B[0])])
def test_each_provider_signs_with_its_own_access_key(stack: Stack, tier: str, key_id: str) -> None:
    oai = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    claude = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)

    answered = oai.chat.completions.with_raw_response.create(model=tier, messages=HELLO)
    assert answered.parse().choices[0].message.content and answered.headers["x-llmroute-provider"] == f"bedrock-{tier}"
    assert last_authorization(stack).startswith(f"AWS4-HMAC-SHA256 Credential={key_id}/")
    with claude.messages.stream(model=tier, max_tokens=64, messages=HELLO) as events:
        assert "".join(events.text_stream)


def test_an_embeddings_request_is_signed_as_a_chat_request_is(stack: Stack) -> None:
    oai = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)

    answer = oai.embeddings.create(model="a-embed", input="a cat", dimensions=512)

    assert len(answer.data[0].embedding) == 512
    request = stack.call(lambda: sim_state(stack.sims["bedrock"].app).stats.last_by_path[f"/model/{TITAN}/invoke"])
    assert request.headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCOUNT_A[0]}/")


def test_the_secret_key_is_never_sent_logged_or_shown(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0).chat.completions.create(
        model="a", messages=HELLO)

    request = stack.call(lambda: sim_state(stack.sims["bedrock"].app).stats.last_by_path[INVOKE])
    assert ACCOUNT_A[1] not in str(dict(request.headers)) and ACCOUNT_A[1].encode() not in request.raw
    assert "Bearer" not in request.headers["Authorization"]
    assert ACCOUNT_A[1] not in caplog.text and ACCOUNT_B[1] not in caplog.text
    with urlopen(stack.admin_url + "/status") as answer:
        status = answer.read().decode()
    assert '"bedrock-a"' in status and ACCOUNT_A[1] not in status and ACCOUNT_B[1] not in status
