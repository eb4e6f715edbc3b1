"""Bedrock with no key (`credentials.workloadIdentity`): the sidecar takes the pod's AWS credentials, from
EKS Pod Identity, an ECS relative URI or IRSA (STS AssumeRoleWithWebIdentity) as the AWS SDKs do, and signs each request with
SigV4. The official SDKs' requests reach Claude on a simulated Bedrock that checks every signature, and
accepts only the temporary keys the simulated agent or STS issued, until they expire on its clock."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import urlopen

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from llmroute_proxy.routing.health import HealthBook
from llmroute_proxy.scrubbing import MARKER
from llmroute_proxy.server.aws_credentials import AwsEnvironment
from llmroute_proxy.sim import FaultPlan, bedrock_app, sim_state
from llmroute_proxy.sim.aws_identity import AwsKeys, pod_identity_app, sts_app
from tests.proxy.documents import QUICK_FALLBACK, model, provider, route, target
from tests.proxy.server.spending import ended
from tests.proxy.stack import CLAUDE, Stack

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
SONNET_TARGET = f"bedrock/{SONNET}@here"
INVOKE, INVOKE_STREAM = f"/model/{SONNET}/invoke", f"/model/{SONNET}/invoke-with-response-stream"
NOVA = "us.amazon.nova-pro-v1:0"
CONVERSE, CONVERSE_STREAM = f"/model/{NOVA}/converse", f"/model/{NOVA}/converse-stream"
ROLE = "arn:aws:iam::123456789012:role/llmroute"
POD_TOKEN = "eyJhbGciOiJSUzI1NiJ9.pod-identity-audience.sim-signature"
WEB_TOKEN = "eyJhbGciOiJSUzI1NiJ9.sts-audience.sim-signature"
SHIFT = {"now": 0.0}
"""Seconds both clocks (the simulators', the sidecar's) run ahead of real time: keys age without sleeping."""
KEYS = AwsKeys(clock=lambda: time.time() + SHIFT["now"])
HELLO: Any = [{"role": "user", "content": "hello"}]

CONFIG = [
    CLAUDE,
    provider("bedrock", "bedrock", "{bedrock}", credentials={"workloadIdentity": {}},
             models=[model(SONNET, context_window=200000, input_per_mtok=3.0, output_per_mtok=15.0),
                     model(NOVA, context_window=300000, input_per_mtok=0.8, output_per_mtok=3.2)]),
    route("main", {
        "bedrock": [target("bedrock", SONNET)],
        "nova": [target("bedrock", NOVA)],
        "bedrock-first": [target("bedrock", SONNET), target("claude", "claude-sonnet-4-5", priority=1)],
    }, default_tier="bedrock",
        fallback=QUICK_FALLBACK),
]


def bedrock_sim(faults: FaultPlan) -> web.Application:
    return bedrock_app(aws_keys=KEYS, region="us-east-1", faults=faults, chunks=4)


def environment(source: str, stack: Stack, tokens: Path) -> AwsEnvironment:
    if source == "pod-identity":
        return AwsEnvironment(region="us-east-1", container_uri=stack.sims["pod-identity"].url + "/v1/credentials",
                              container_token_file=str(tokens / "eks-pod-identity-token"))
    if source == "ecs-relative-uri":  # it wins over a full URI that nothing answers
        return AwsEnvironment(region="us-east-1", container_relative_uri="/v1/credentials",
                              ecs_agent_host=urlsplit(stack.sims["pod-identity"].url).netloc,
                              container_uri="http://127.0.0.1:9/v1/credentials",
                              container_token_file=str(tokens / "eks-pod-identity-token"))
    return AwsEnvironment(region="us-east-1", role_arn=ROLE, web_identity_token_file=str(tokens / "token"),
                          sts_endpoint=stack.sims["sts"].url)


@pytest.fixture(scope="module", params=["pod-identity", "ecs-relative-uri", "irsa"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tokens = tmp_path_factory.mktemp("projected-tokens")
    (tokens / "eks-pod-identity-token").write_text(POD_TOKEN + "\n")
    (tokens / "token").write_text(WEB_TOKEN)
    sims = {"bedrock": bedrock_sim, "pod-identity": lambda faults: pod_identity_app(KEYS, POD_TOKEN),
            "sts": lambda faults: sts_app(KEYS, WEB_TOKEN, ROLE)}
    with Stack(tmp_path_factory.mktemp("aws-workload-identity"), config=CONFIG, extra_sims=sims) as running:
        running.sidecar.settings = dataclasses.replace(running.sidecar.settings,
                                                       aws=environment(request.param, running, tokens))
        running.sidecar.wallclock = lambda: time.time() + SHIFT["now"]
        yield running


@pytest.fixture(autouse=True)
def healthy_credential_source(stack: Stack) -> Iterator[None]:
    yield
    KEYS.always_fail = None
    SHIFT["now"] += 7200.0  # every key issued so far has expired: the next test fetches anew
    stack.sidecar.health = HealthBook()  # an auth failure ejects the target for long: each test starts healthy


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    caplog.set_level(logging.INFO, "llmroute.access")
    return lambda: [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "llmroute.access"]


def signed_with(stack: Stack, path: str) -> str:
    """The access key id of the last request the simulated Bedrock took on `path`."""
    request = stack.call(lambda: sim_state(stack.sims["bedrock"].app).stats.last_by_path[path])
    authorization: str = request.headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    return authorization.removeprefix("AWS4-HMAC-SHA256 Credential=").split("/")[0]


def test_the_sdks_reach_claude_on_bedrock_signed_with_the_pods_credentials(stack: Stack) -> None:
    fetched = KEYS.fetches
    oai = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    claude = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)

    raw = oai.chat.completions.with_raw_response.create(model="bedrock", messages=HELLO)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in oai.chat.completions.create(
        model="bedrock", messages=HELLO, stream=True) if chunk.choices)
    message = claude.messages.create(model="bedrock", max_tokens=64, messages=HELLO)
    with claude.messages.stream(model="bedrock", max_tokens=64, messages=HELLO) as events:
        native_text = "".join(events.text_stream)

    assert raw.headers["x-llmroute-provider"] == "bedrock" and raw.parse().choices[0].message.content
    assert streamed and native_text and message.content
    issued = KEYS.latest()
    assert signed_with(stack, INVOKE) == signed_with(stack, INVOKE_STREAM) == issued
    assert KEYS.fetches - fetched == 1  # one fetch serves every request while the keys live


def test_the_sdks_reach_a_converse_model_signed_with_the_pods_credentials(stack: Stack) -> None:
    oai = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    claude = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)

    whole = oai.chat.completions.create(model="nova", messages=HELLO)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in oai.chat.completions.create(
        model="nova", messages=HELLO, stream=True) if chunk.choices)
    message = claude.messages.create(model="nova", max_tokens=64, messages=HELLO)

    assert "You said: hello" in (whole.choices[0].message.content or "") and "You said: hello" in streamed
    assert "You said: hello" in "".join(block.text for block in message.content if block.type == "text")
    assert signed_with(stack, CONVERSE) == signed_with(stack, CONVERSE_STREAM) == KEYS.latest()


def test_the_credentials_are_fetched_again_only_near_their_end(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    client.chat.completions.create(model="bedrock", messages=HELLO)
    fetched, first = KEYS.fetches, KEYS.latest()

    SHIFT["now"] += 2600.0  # 1000 s left: still more than the 15 minutes of botocore's advisory refresh
    client.chat.completions.create(model="bedrock", messages=HELLO)
    assert (KEYS.fetches, signed_with(stack, INVOKE)) == (fetched, first)

    SHIFT["now"] += 500.0  # 500 s left: within the mandatory 10 minutes, the request waits for new ones
    client.chat.completions.create(model="bedrock", messages=HELLO)
    assert KEYS.fetches == fetched + 1 and KEYS.latest() != first
    assert signed_with(stack, INVOKE) == KEYS.latest()


@pytest.mark.parametrize(("status", "outcome"), [(503, "server_error"), (403, "auth")])
def test_a_failing_credential_source_fails_the_attempt_over_to_another_target(
        stack: Stack, access: Callable[[], list[dict[str, Any]]], status: int, outcome: str) -> None:
    KEYS.always_fail = status
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)

    raw = client.chat.completions.with_raw_response.create(model="bedrock-first", messages=HELLO)

    assert raw.headers["x-llmroute-provider"] == "claude" and raw.headers["x-llmroute-attempts"] == "2"
    ended(stack)
    [line] = access()
    assert [(a["target"], a["outcome"]) for a in line["tried"]] == [
        (SONNET_TARGET, outcome), ("claude/claude-sonnet-4-5@here", "ok")]


def test_a_refused_fetch_is_the_targets_auth_failure_with_a_message_that_names_no_secret(stack: Stack) -> None:
    KEYS.always_fail = 403
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)

    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="bedrock", messages=HELLO)

    assert failed.value.status_code == 502
    assert "AWS credentials" in failed.value.message and "HTTP 403" in failed.value.message
    assert POD_TOKEN not in failed.value.message and WEB_TOKEN not in failed.value.message


def test_no_key_token_or_secret_reaches_a_log_record_or_status(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    client.chat.completions.create(model="bedrock", messages=HELLO)
    "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="bedrock", messages=HELLO, stream=True) if c.choices)
    key = KEYS.issued[KEYS.latest()]
    ended(stack)
    with urlopen(stack.admin_url + "/status") as answer:
        status = answer.read().decode()

    texts = [record.getMessage() for record in caplog.records] + [status]
    for secret in (key.secret, key.token or "", POD_TOKEN, WEB_TOKEN):
        assert not any(secret in text for text in texts)
    scrubbed = stack.call(lambda: stack.sidecar.scrubber.scrub(f"echo: {key.secret} and {key.token}"))
    assert key.secret not in scrubbed and (key.token or "") not in scrubbed  # held: an echo would be scrubbed


def test_the_token_read_to_fetch_is_scrubbed_from_a_log_record(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)
    client.chat.completions.create(model="bedrock", messages=HELLO)
    token = WEB_TOKEN if stack.sidecar.settings.aws.web_identity_token_file else POD_TOKEN

    stack.call(lambda: logging.getLogger("llmroute.proxy").warning("an upstream echoed %s", token))

    [echoed] = [record.getMessage() for record in caplog.records if "an upstream echoed" in record.getMessage()]
    assert token not in echoed and MARKER in echoed
