"""Vertex AI with no key (`credentials.workloadIdentity`): the sidecar asks the GCP metadata server for the
pod's token, as on GKE with Workload Identity, and the official `openai` SDK's requests reach Gemini and
Claude on a simulated Vertex that accepts only the tokens a simulated metadata server gave."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from llmroute_proxy.sim import FaultPlan, sim_state
from llmroute_proxy.sim.gcp_metadata import MetadataTokens, metadata_app
from llmroute_proxy.sim.vertex import vertex_app
from tests.proxy.documents import QUICK_FALLBACK, model, provider, route, target
from tests.proxy.google_keys import service_account
from tests.proxy.server.spending import ended
from tests.proxy.stack import GEM, Stack

ACCOUNT = service_account()  # a key the simulated Vertex knows, which the sidecar never gets here
GEMINI, CLAUDE = "gemini-2.5-pro", "claude-sonnet-4-5@20250929"
SHIFT = {"sim": 0.0, "sidecar": 0.0}
"""Seconds each side's clock runs ahead of real time: tokens age without anyone sleeping."""
TOKENS = MetadataTokens(clock=lambda: time.time() + SHIFT["sim"])
HELLO: Any = [{"role": "user", "content": "hello"}]

CONFIG = [
    provider("vx", "vertex", "{vertex}/v1/projects/sim-project/locations/us-east5",
             credentials={"workloadIdentity": {}},
             models=[model(GEMINI, input_per_mtok=1.25, output_per_mtok=10.0),
                     model(CLAUDE, input_per_mtok=3.0, output_per_mtok=15.0)]),
    GEM,
    route("main", {
        "gemini": [target("vx", GEMINI), target("gem", "gemini-2.5-flash", priority=1)],
        "claude": [target("vx", CLAUDE)],
    }, default_tier="gemini",
        fallback=QUICK_FALLBACK),
]


def vertex_sim(faults: FaultPlan) -> web.Application:
    return vertex_app(ACCOUNT.client_email, ACCOUNT.public_key, ACCOUNT.key_id, faults=faults,
                      access_tokens=TOKENS.valid, clock=lambda: time.time() + SHIFT["sim"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sims = {"vertex": vertex_sim, "metadata": lambda faults: metadata_app(TOKENS)}
    with Stack(tmp_path_factory.mktemp("workload-identity"), config=CONFIG, extra_sims=sims) as running:
        host = running.sims["metadata"].url.removeprefix("http://")
        running.sidecar.settings = dataclasses.replace(running.sidecar.settings, gcp_metadata_host=host)
        running.sidecar.wallclock = lambda: time.time() + SHIFT["sidecar"]
        yield running


@pytest.fixture(autouse=True)
def healthy_metadata_server() -> Iterator[None]:
    yield
    TOKENS.always_fail = None
    SHIFT.update(sim=0.0, sidecar=0.0)


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    caplog.set_level(logging.INFO, "llmroute.access")
    return lambda: [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "llmroute.access"]


def bearer(stack: Stack, publisher: str, model_name: str, method: str) -> str:
    path = f"/v1/projects/sim-project/locations/us-east5/publishers/{publisher}/models/{model_name}:{method}"
    request = stack.call(lambda: sim_state(stack.sims["vertex"].app).stats.last_by_path[path])
    token: str = request.headers["Authorization"]
    return token


def test_gemini_and_claude_answer_with_the_token_the_metadata_server_gave(stack: Stack, client: openai.OpenAI) -> None:
    fetched = TOKENS.fetches
    gemini = client.chat.completions.with_raw_response.create(model="gemini", messages=HELLO)
    claude = client.chat.completions.create(model="claude", messages=HELLO)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="claude", messages=HELLO, stream=True) if chunk.choices)

    assert gemini.headers["x-llmroute-provider"] == "vx" and gemini.parse().choices[0].message.content
    assert claude.choices[0].message.content and streamed
    given = "Bearer " + next(reversed(TOKENS.issued))
    assert bearer(stack, "google", GEMINI, "generateContent") == given
    assert bearer(stack, "anthropic", CLAUDE, "streamRawPredict") == given
    assert TOKENS.fetches - fetched <= 1  # one token serves every request while it lives


def test_the_token_is_asked_for_again_only_near_its_end(stack: Stack, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gemini", messages=HELLO)  # a token is held
    fetched, first = TOKENS.fetches, next(reversed(TOKENS.issued))

    SHIFT.update(sim=3000.0, sidecar=3000.0)  # 599 s left: still held
    client.chat.completions.create(model="gemini", messages=HELLO)
    assert TOKENS.fetches == fetched and bearer(stack, "google", GEMINI, "generateContent") == "Bearer " + first

    SHIFT.update(sim=3400.0, sidecar=3400.0)  # 199 s left: renewed, and the server gives a new one
    client.chat.completions.create(model="gemini", messages=HELLO)
    renewed = next(reversed(TOKENS.issued))
    assert TOKENS.fetches == fetched + 1 and renewed != first
    assert bearer(stack, "google", GEMINI, "generateContent") == "Bearer " + renewed


def test_a_metadata_server_that_is_down_fails_the_attempt_over(
        stack: Stack, client: openai.OpenAI, access: Callable[[], list[dict[str, Any]]]) -> None:
    SHIFT.update(sim=7200.0, sidecar=7200.0)  # the token held has expired: a new one is needed
    TOKENS.always_fail = 503

    raw = client.chat.completions.with_raw_response.create(model="gemini", messages=HELLO)

    assert raw.headers["x-llmroute-provider"] == "gem" and raw.headers["x-llmroute-attempts"] == "2"
    ended(stack)
    [line] = access()
    assert [(a["target"], a["outcome"]) for a in line["tried"]] == [
        ("vx/gemini-2.5-pro@here", "server_error"), ("gem/gemini-2.5-flash@here", "ok")]


def test_a_pod_without_a_google_account_is_the_targets_auth_failure(
        stack: Stack, client: openai.OpenAI, access: Callable[[], list[dict[str, Any]]]) -> None:
    SHIFT.update(sim=7200.0, sidecar=7200.0)
    TOKENS.always_fail = 404

    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="claude", messages=HELLO)

    assert failed.value.status_code == 502
    assert "metadata server" in failed.value.message and "Workload Identity" in failed.value.message
    ended(stack)
    [line] = access()
    assert [(a["target"], a["outcome"]) for a in line["tried"]] == [("vx/claude-sonnet-4-5@20250929@here", "auth")]
