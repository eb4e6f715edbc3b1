"""The official `openai` and `anthropic` SDKs call the sidecar, which calls Gemini and Claude on Vertex AI
with a token it signs itself (a simulated Vertex that checks what Vertex checks, the token included)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from llmroute_proxy.sim import Fault, FaultKind, FaultPlan
from llmroute_proxy.sim.vertex import vertex_app
from tests.proxy.documents import QUICK_FALLBACK, model, provider, route, target
from tests.proxy.google_keys import service_account
from tests.proxy.stack import Stack

ACCOUNT = service_account()
GEMINI, CLAUDE = "gemini-2.5-pro", "claude-sonnet-4-5@20250929"
EAST = "/v1/projects/sim-project/locations/us-east5/publishers"
WEST = "/v1/projects/sim-project/locations/europe-west1/publishers"
SHIFT = {"sim": 0.0, "sidecar": 0.0}
"""Seconds each side's clock runs ahead of real time: tokens age without anyone sleeping."""

WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

CONFIG = [
    # the sidecar's own region ("here") is us-east5: preferred, europe-west1 is where it spills over
    provider("vx", "vertex", [("here", "{vertex}/v1/projects/sim-project/locations/us-east5"),
                              ("there", "{vertex}/v1/projects/sim-project/locations/europe-west1")],
             key_env="TEST_VERTEX_KEY",
             models=[model(GEMINI, input_per_mtok=1.25, output_per_mtok=10.0),
                     model(CLAUDE, input_per_mtok=3.0, output_per_mtok=15.0)]),
    provider("oai", "openai", "{oai}/v1", key_env="TEST_OAI_KEY", models=["text-embedding-3-small"]),
    route("main", {
        "gemini": [target("vx", GEMINI)],
        "claude": [target("vx", CLAUDE)],
        "embed": [target("vx", GEMINI), target("oai", "text-embedding-3-small", priority=1)],
    }, default_tier="gemini",
        fallback=QUICK_FALLBACK),
]


def vertex_sim(faults: FaultPlan) -> web.Application:
    return vertex_app(ACCOUNT.client_email, ACCOUNT.public_key, ACCOUNT.key_id, faults=faults,
                      clock=lambda: time.time() + SHIFT["sim"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("vertex"), config=CONFIG, extra_sims={"vertex": vertex_sim},
               environ={"TEST_VERTEX_KEY": ACCOUNT.key_file}) as running:
        running.sidecar.wallclock = lambda: time.time() + SHIFT["sidecar"]
        yield running


@pytest.fixture(autouse=True)
def real_time() -> Iterator[None]:
    yield
    SHIFT.update(sim=0.0, sidecar=0.0)


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)




def claims(request: Any) -> dict[str, Any]:
    token = request.headers["Authorization"].removeprefix("Bearer ")
    header, body, _ = token.split(".")
    assert orjson.loads(base64.urlsafe_b64decode(header + "==")) == {"typ": "JWT", "alg": "RS256",
                                                                     "kid": ACCOUNT.key_id}
    decoded: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(body + "=="))
    return decoded


def test_a_chat_reaches_gemini_on_vertex_at_its_publisher_path_with_a_self_signed_token(
        stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gemini", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
    completion = raw.parse()

    assert completion.choices[0].message.content and "You said: hello" in completion.choices[0].message.content
    assert raw.headers["x-llmroute-provider"] == "vx" and float(raw.headers["x-llmroute-cost-usd"]) > 0
    path = f"{EAST}/google/models/{GEMINI}:generateContent"
    request = stack.last_sim_request("vertex", path)
    assert all(content["role"] == "user" for content in request.body["contents"])
    assert "x-goog-api-key" not in request.headers and "generateContentRequest" not in request.body
    token = claims(request)
    assert token["iss"] == token["sub"] == ACCOUNT.client_email
    assert token["scope"] == "https://www.googleapis.com/auth/cloud-platform" and "aud" not in token
    assert token["exp"] - token["iat"] == 3600 and abs(token["iat"] - time.time()) < 60
    assert stack.sim_paths("vertex") == {path: 1}


@pytest.mark.parametrize(("tier", "path"), [("gemini", f"{EAST}/google/models/{GEMINI}:streamGenerateContent"),
                                            ("claude", f"{EAST}/anthropic/models/{CLAUDE}:streamRawPredict")])
def test_a_stream_from_either_publisher_ends_with_its_usage(stack: Stack, client: openai.OpenAI, tier: str,
                                                            path: str) -> None:
    chunks = list(client.chat.completions.create(
        model=tier, messages=[{"role": "user", "content": "tell me a story"}], stream=True,
        stream_options={"include_usage": True}))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "You said: tell me a story" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert stack.sim_paths("vertex") == {path: 1}


def test_a_translated_chat_reaches_claude_on_vertex_without_model_and_with_vertex_s_version(
        stack: Stack, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="claude", max_tokens=300,
                                                messages=[{"role": "user", "content": "hi claude"}])

    assert completion.choices[0].message.content and "You said: hi claude" in completion.choices[0].message.content
    body = stack.last_sim_request("vertex", f"{EAST}/anthropic/models/{CLAUDE}:rawPredict").body
    assert "model" not in body and body["anthropic_version"] == "vertex-2023-10-16"
    assert body["max_tokens"] == 300


def test_the_anthropic_sdk_reaches_claude_on_vertex_natively_its_betas_in_the_body(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)
    message = client.messages.create(model="claude", max_tokens=200, system="Be brief.",
                                     messages=[{"role": "user", "content": "hi there"}],
                                     extra_headers={"anthropic-beta": "context-management-2025-06-27"})
    with client.messages.stream(model="claude", max_tokens=200,
                                messages=[{"role": "user", "content": "stream it"}]) as stream:
        streamed = stream.get_final_message()

    assert message.content[0].type == "text" and "You said: hi there" in message.content[0].text
    assert streamed.content[0].type == "text" and "You said: stream it" in streamed.content[0].text
    unary = stack.last_sim_request("vertex", f"{EAST}/anthropic/models/{CLAUDE}:rawPredict")
    assert unary.headers["anthropic-beta"] == "context-management-2025-06-27" and "model" not in unary.body
    assert unary.body["system"] == "Be brief." and "anthropic_beta" not in unary.body
    assert stack.last_sim_request("vertex", f"{EAST}/anthropic/models/{CLAUDE}:streamRawPredict").body["stream"] is True


@pytest.mark.parametrize("tier", ["gemini", "claude"])
def test_tool_calls_round_trip_through_either_publisher(client: openai.OpenAI, tier: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=tier, messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"

    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}]
    second = client.chat.completions.create(model=tier, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


@pytest.mark.parametrize(("tier", "publisher", "method"), [("gemini", "google", f"{GEMINI}:generateContent"),
                                                           ("claude", "anthropic", f"{CLAUDE}:rawPredict")])
def test_a_vertex_429_fails_over_to_the_other_region(stack: Stack, client: openai.OpenAI, tier: str,
                                                     publisher: str, method: str) -> None:
    exhausted = Fault(FaultKind.STATUS, status=429, path="/locations/us-east5/")
    stack.call(lambda: stack.faults["vertex"].next(exhausted))

    raw = client.chat.completions.with_raw_response.create(model=tier, messages=[{"role": "user", "content": "hi"}])

    assert raw.parse().choices[0].message.content
    assert raw.headers["x-llmroute-attempts"] == "2"
    assert stack.sim_paths("vertex") == {f"{EAST}/{publisher}/models/{method}": 1, f"{WEST}/{publisher}/models/{method}": 1}


def test_a_token_the_simulator_holds_expired_is_refused_in_google_s_shape(stack: Stack,
                                                                          client: openai.OpenAI) -> None:
    SHIFT["sim"] = 2 * 3600.0  # Vertex's clock is two hours past the token's issue

    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "hi"}])

    assert refused.value.status_code >= 500  # the sidecar's own credential failed: not the client's 401
    assert "UNAUTHENTICATED" in str(refused.value.body) and ACCOUNT.private_pem[40:80] not in str(refused.value.body)
    assert sum(stack.sim_paths("vertex").values()) == 2  # both regions refused it


def test_the_token_is_kept_then_signed_again_when_five_minutes_remain(stack: Stack, client: openai.OpenAI) -> None:
    path = f"{EAST}/google/models/{GEMINI}:generateContent"

    def token_now(shift: float) -> dict[str, Any]:
        SHIFT["sim"] = SHIFT["sidecar"] = shift
        client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "hi"}])
        return claims(stack.last_sim_request("vertex", path))

    first = token_now(0.0)
    kept = token_now(50 * 60.0)
    resigned = token_now(56 * 60.0)

    assert kept == first
    assert resigned["iat"] >= first["iat"] + 56 * 60 - 5 and resigned["exp"] == resigned["iat"] + 3600


def test_embeddings_pass_over_vertex_to_a_target_that_serves_them(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="embed", input="hello")

    assert raw.parse().data and raw.headers["x-llmroute-provider"] == "oai"


def test_counting_tokens_reaches_both_publishers_count_endpoints(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key="app-key", max_retries=0)

    gemini = client.messages.count_tokens(model="gemini", messages=[{"role": "user", "content": "count me in"}])
    claude = client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "count me in"}])

    assert gemini.input_tokens > 0 and claude.input_tokens > 0
    counted = stack.last_sim_request("vertex", f"{EAST}/google/models/{GEMINI}:countTokens").body
    assert set(counted) <= {"contents", "systemInstruction", "tools"}
    claude_count = stack.last_sim_request("vertex", f"{EAST}/anthropic/models/count-tokens:rawPredict").body
    assert claude_count["model"] == CLAUDE and claude_count["anthropic_version"] == "vertex-2023-10-16"
