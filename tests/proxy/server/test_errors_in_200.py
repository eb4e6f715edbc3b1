"""An upstream that answers HTTP 200 with its error object as the whole body (not SSE, even for a
stream), as providers and the proxies in front of them do: the official SDKs, through the sidecar,
see what the real error calls for, for OpenAI, Anthropic, Gemini and Azure upstreams.

An auth failure is the target's (failed over unseen, the target ejected for long, never a 401 for
the client); a bad request is the client's (its 400 with the upstream's message, not failed over).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from llmroute_proxy.errors import FailureKind
from llmroute_proxy.sim import Fault, FaultKind, FaultPlan, azure_openai_app
from llmroute_proxy.table import TargetId
from tests.proxy.documents import QUICK_FALLBACK, model, provider, route, target
from tests.proxy.server.conftest import sim_requests
from tests.proxy.stack import CLAUDE, GEM, OAI, OAI_B, Stack

AZURE_KEY = "azure-200-key-0123456789abcdef"
BACKUP = target("oai-b", "gpt-4o-mini", priority=1)
PRIMARIES = {"openai": ("oai", "gpt-4o-mini"), "anthropic": ("claude", "claude-sonnet-4-5"),
             "gemini": ("gem", "gemini-2.5-flash"), "azure": ("azure", "gpt-4o-prod")}
CONFIG = [
    OAI, OAI_B, CLAUDE, GEM,
    provider("azure", "azure-openai", "{azure}", key_env="TEST_AZURE_KEY", azure={"apiVersion": "2024-10-21"},
             models=[model("gpt-4o-prod", context_window=128000)]),
    provider("gem-embed", "gemini", "{gem}", key_env="TEST_GEM_KEY", models=["gemini-embedding-001"]),
    route("main", {**{tier: [target(name, model_name), BACKUP] for tier, (name, model_name) in PRIMARIES.items()},
                   "gem-embed": [target("gem-embed", "gemini-embedding-001")]},
          default_tier="openai",
          fallback=QUICK_FALLBACK,
          outlierDetection={"consecutiveFailures": 2, "baseEjection": "30s"}),
]
HELLO: Any = [{"role": "user", "content": "hello"}]


def azure_sim(faults: FaultPlan) -> web.Application:
    return azure_openai_app(AZURE_KEY, name="sim-azure", faults=faults, deployments=("gpt-4o-prod",), quirks=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Quirks on: Gemini wraps its error in a list, Anthropic adds its request id."""
    with Stack(tmp_path_factory.mktemp("errors-200"), config=CONFIG, extra_sims={"azure": azure_sim},
               environ={"TEST_AZURE_KEY": AZURE_KEY}, quirks=True) as running:
        yield running


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0, timeout=20)


def primary_health(stack: Stack, tier: str) -> tuple[str, FailureKind | None]:
    name, model_name = PRIMARIES[tier]
    target_id = TargetId(f"{name}/{model_name}@here")
    health = stack.call(lambda: stack.sidecar.health.snapshot(target_id, stack.sidecar.clock()))
    return health.state, health.last_failure


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
@pytest.mark.parametrize("tier", list(PRIMARIES))
def test_an_auth_error_sent_as_200_fails_over_unseen_and_ejects_the_target_for_long(
        stack: Stack, tier: str, stream: bool) -> None:
    name = PRIMARIES[tier][0]
    stack.call(lambda: stack.faults[name].always(Fault(FaultKind.ERROR_AS_200, status=401)))
    if stream:
        raw = client(stack).chat.completions.with_raw_response.create(model=tier, messages=HELLO, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        raw = client(stack).chat.completions.with_raw_response.create(model=tier, messages=HELLO)
        text = raw.parse().choices[0].message.content or ""
    assert raw.status_code == 200
    assert raw.headers["x-llmroute-provider"] == "oai-b" and raw.headers["x-llmroute-attempts"] == "2"
    assert "sim-oai-b" in text
    assert primary_health(stack, tier) == ("ejected", FailureKind.AUTH)
    calls = sim_requests(stack, name)
    client(stack).chat.completions.create(model=tier, messages=HELLO, stream=stream)
    assert sim_requests(stack, name) == calls  # ejected for long: not asked again


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
@pytest.mark.parametrize("tier", list(PRIMARIES))
def test_a_bad_request_sent_as_200_is_the_clients_400_and_never_failed_over(
        stack: Stack, tier: str, stream: bool) -> None:
    name = PRIMARIES[tier][0]
    stack.call(lambda: stack.faults[name].always(
        Fault(FaultKind.ERROR_AS_200, status=400, message="messages[0].content: too many images")))
    with pytest.raises(openai.BadRequestError) as caught:
        client(stack).chat.completions.create(model=tier, messages=HELLO, stream=stream)
    assert caught.value.status_code == 400
    assert "too many images" in caught.value.message
    assert caught.value.response.headers["x-llmroute-attempts"] == "1"
    assert sim_requests(stack, "oai-b") == 0
    assert primary_health(stack, tier) == ("healthy", None)


def test_the_anthropic_sdk_gets_the_400_in_its_own_shape_when_claude_sends_it_as_200(stack: Stack) -> None:
    stack.call(lambda: stack.faults["claude"].always(
        Fault(FaultKind.ERROR_AS_200, status=400, message="max_tokens: 100000 > 64000, the maximum")))
    claude = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0, timeout=20)
    with (pytest.raises(anthropic.BadRequestError) as caught,
          claude.messages.stream(model="anthropic", max_tokens=64, messages=HELLO) as events):
        list(events)
    assert caught.value.status_code == 400
    assert "the maximum" in caught.value.message
    assert sim_requests(stack, "oai-b") == 0


def test_a_spent_quota_sent_as_200_fails_over_and_ejects_the_target(stack: Stack) -> None:
    stack.call(lambda: stack.faults["oai"].always(
        Fault(FaultKind.ERROR_AS_200, status=429, code="insufficient_quota")))
    raw = client(stack).chat.completions.with_raw_response.create(model="openai", messages=HELLO, stream=True)
    assert raw.headers["x-llmroute-provider"] == "oai-b"
    assert any(c.choices for c in raw.parse())
    assert primary_health(stack, "openai") == ("ejected", FailureKind.QUOTA_EXHAUSTED)


@pytest.mark.parametrize(("status", "error", "client_status", "ejected"), [
    (401, openai.APIStatusError, 502, True),
    (400, openai.BadRequestError, 400, False),
])
def test_gemini_embeddings_sent_as_200_errors_are_classified_like_chat(
        stack: Stack, status: int, error: type[openai.APIStatusError], client_status: int, ejected: bool) -> None:
    stack.call(lambda: stack.faults["gem"].always(
        Fault(FaultKind.ERROR_AS_200, status=status, message="embedding refused here")))
    with pytest.raises(error) as caught:
        client(stack).embeddings.create(model="gem-embed", input=["a", "b"])
    assert caught.value.status_code == client_status
    assert "embedding refused here" in caught.value.message
    assert not caught.value.message.lstrip().startswith("{")
    target_id = TargetId("gem-embed/gemini-embedding-001@here")
    health = stack.call(lambda: stack.sidecar.health.snapshot(target_id, stack.sidecar.clock()))
    assert (health.state == "ejected", health.last_failure) == (ejected, FailureKind.AUTH if ejected else None)
