"""The Azure OpenAI simulator, as `AzureOpenAI`, the stock `OpenAI` client on v1 URLs and the raw wire see it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest

from llmroute_proxy.sim import Fault, FaultKind, FaultPlan, SimServer, azure_openai_app, openai_app, sim_state
from tests.proxy.sim import SimPool

KEY = "azure-sim-key-0123456789abcdef"
DEPLOYMENT = "gpt-4o-prod"
EMBEDDER = "embed-prod"
VERSION = "2024-10-21"
QUESTION = "What is the weather like in Paris today?"
ANSWER = f"[sim-azure {DEPLOYMENT}] You said: {QUESTION}"
MESSAGES: list[Any] = [{"role": "user", "content": QUESTION}]
CLASSIC_CHAT = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
V1_CHAT = "/openai/v1/chat/completions"
SAFE = {"filtered": False, "severity": "safe"}
WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}


@pytest.fixture
def faults() -> FaultPlan:
    return FaultPlan()


@pytest.fixture
async def sim(sims: SimPool, faults: FaultPlan) -> SimServer:
    return await sims.start(azure_openai_app(KEY, faults=faults, chunks=4, deployments=(DEPLOYMENT, EMBEDDER)))


AzureClient = Callable[..., openai.AsyncAzureOpenAI]
V1Client = Callable[..., openai.AsyncOpenAI]


@pytest.fixture
def azure(sims: SimPool) -> AzureClient:
    """`AzureOpenAI` on the classic URLs: endpoint, dated api-version, a deployment unless given per call."""
    def connect(server: SimServer, key: str = KEY, deployment: str | None = DEPLOYMENT,
                api_version: str = VERSION) -> openai.AsyncAzureOpenAI:
        api = openai.AsyncAzureOpenAI(api_key=key, azure_endpoint=server.url, api_version=api_version,
                                      azure_deployment=deployment, max_retries=0, timeout=5)
        sims.on_close(api.close)
        return api
    return connect


@pytest.fixture
def v1(sims: SimPool) -> V1Client:
    """The stock client on the v1 URLs, the key in `api-key` (the bearer token is a decoy unless given)."""
    def connect(server: SimServer, key: str = KEY, bearer: str = "not-the-key") -> openai.AsyncOpenAI:
        api = openai.AsyncOpenAI(api_key=bearer, base_url=server.url + "/openai/v1/",
                                 default_headers={"api-key": key} if key else None, max_retries=0, timeout=5)
        sims.on_close(api.close)
        return api
    return connect


async def post(server: SimServer, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            server.url + path, json=body, headers={"api-key": KEY} if headers is None else headers) as response:
        return response.status, await response.json()


async def stream_events(server: SimServer, path: str, body: dict[str, Any]) -> list[Any]:
    async with aiohttp.ClientSession() as session, session.post(
            server.url + path, json={**body, "stream": True}, headers={"api-key": KEY}) as response:
        assert response.status == 200
        text = await response.text()
    events = text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    return [json.loads(event.removeprefix("data: ")) for event in events[:-2]]


async def test_the_azure_client_reaches_a_deployment_with_the_api_key_and_api_version(
        sim: SimServer, azure: AzureClient) -> None:
    completion = await azure(sim).chat.completions.create(model="ignored-by-azure", messages=MESSAGES)

    assert completion.choices[0].message.content == ANSWER
    assert completion.model == DEPLOYMENT and completion.choices[0].finish_reason == "stop"
    recorded = sim_state(sim.app).stats.last
    assert recorded is not None and recorded.path == CLASSIC_CHAT
    assert recorded.query["api-version"] == VERSION
    assert recorded.headers["api-key"] == KEY and "Authorization" not in recorded.headers


async def test_without_a_client_deployment_the_model_names_the_deployment(sim: SimServer, azure: AzureClient) -> None:
    completion = await azure(sim, deployment=None).chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)

    assert completion.model == DEPLOYMENT
    assert sim_state(sim.app).stats.by_path == {CLASSIC_CHAT: 1}


@pytest.mark.parametrize("key_in", ["api-key", "bearer"])
async def test_the_stock_client_reaches_the_v1_urls_with_the_deployment_as_model(
        sim: SimServer, v1: V1Client, key_in: str) -> None:
    client = v1(sim) if key_in == "api-key" else v1(sim, key="", bearer=KEY)

    completion = await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)

    assert completion.choices[0].message.content == ANSWER and completion.model == DEPLOYMENT
    recorded = sim_state(sim.app).stats.last
    assert recorded is not None and recorded.path == V1_CHAT and "api-version" not in recorded.query


async def test_answers_carry_prompt_and_completion_filter_results(sim: SimServer, azure: AzureClient) -> None:
    completion = await azure(sim).chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)
    wire = completion.model_dump()

    prompt_results = wire["prompt_filter_results"]
    assert [r["prompt_index"] for r in prompt_results] == [0]
    assert prompt_results[0]["content_filter_results"]["jailbreak"] == {"filtered": False, "detected": False}
    assert wire["choices"][0]["content_filter_results"]["violence"] == SAFE


async def test_a_stream_starts_with_a_prompt_filter_chunk_and_ends_with_usage(
        sim: SimServer, azure: AzureClient) -> None:
    stream = await azure(sim).chat.completions.create(
        model=DEPLOYMENT, messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]

    first = chunks[0].model_dump()
    assert first["choices"] == [] and first["id"] == "" and first["prompt_filter_results"]
    assert first["usage"] is None
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 4 and "".join(pieces) == ANSWER
    assert all(c.model_dump()["choices"][0]["content_filter_results"]["hate"] == SAFE
               for c in chunks if c.choices and c.choices[0].delta.content)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


async def test_the_asynchronous_filter_annotates_in_a_chunk_without_delta_after_the_finish(sims: SimPool) -> None:
    sim = await sims.start(azure_openai_app(KEY, async_filter=True, chunks=4))

    events = await stream_events(sim, f"{CLASSIC_CHAT}?api-version={VERSION}", {"messages": MESSAGES})

    finish = next(i for i, e in enumerate(events) if e["choices"] and e["choices"][0]["finish_reason"])
    annotation = events[finish + 1]["choices"][0]
    assert "delta" not in annotation and annotation["content_filter_results"]["sexual"] == SAFE
    assert annotation["content_filter_offsets"]["end_offset"] == len(ANSWER)
    assert all(e["choices"][0]["content_filter_results"] == {} for e in events[1:finish + 1])
    assert len(events) == finish + 2


async def test_tool_calls_come_through_the_azure_client_whole_and_streamed(sim: SimServer, azure: AzureClient) -> None:
    client = azure(sim)
    completion = await client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES, tools=[WEATHER_TOOL])
    async with client.chat.completions.stream(model=DEPLOYMENT, messages=MESSAGES, tools=[WEATHER_TOOL]) as stream:
        streamed = await stream.get_final_completion()

    for answer in (completion, streamed):
        calls = answer.choices[0].message.tool_calls
        assert answer.choices[0].finish_reason == "tool_calls" and calls is not None
        assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
        assert json.loads(calls[0].function.arguments) == {"city": "sim"}  # type: ignore[union-attr]


async def test_embeddings_are_served_in_both_url_forms_with_the_deployment_as_model(
        sim: SimServer, azure: AzureClient, v1: V1Client) -> None:
    classic = await azure(sim, deployment=None).embeddings.create(model=EMBEDDER, input=["a cat", "a dog"])
    current = await v1(sim).embeddings.create(model=EMBEDDER, input=["a cat", "a dog"])

    assert classic.model == current.model == EMBEDDER
    assert [d.embedding for d in classic.data] == [d.embedding for d in current.data]
    assert len(classic.data) == 2 and classic.usage.prompt_tokens > 0
    assert sim_state(sim.app).stats.by_path == {f"/openai/deployments/{EMBEDDER}/embeddings": 1,
                                                "/openai/v1/embeddings": 1}


@pytest.mark.parametrize(("path", "status", "error"), [
    (CLASSIC_CHAT, 404, {"code": "404", "message": "Resource not found"}),
    (CLASSIC_CHAT + "?api-version=1999-01-01", 400, {"code": "BadRequest", "message": "API version not supported"}),
    (CLASSIC_CHAT + "?api-version=v1", 400, {"code": "BadRequest", "message": "API version not supported"}),
    (V1_CHAT + f"?api-version={VERSION}", 400, {"code": "BadRequest", "message": "API version not supported"}),
])
async def test_the_api_version_is_required_on_classic_urls_and_checked_on_both(
        sim: SimServer, path: str, status: int, error: dict[str, str]) -> None:
    answered = await post(sim, path, {"model": DEPLOYMENT, "messages": MESSAGES})

    assert answered == (status, {"error": error})


@pytest.mark.parametrize(("path", "model"), [(CLASSIC_CHAT + "?api-version=2025-04-01-preview", "x"),
                                             (V1_CHAT + "?api-version=preview", DEPLOYMENT)])
async def test_preview_api_versions_are_served(sim: SimServer, path: str, model: str) -> None:
    status, body = await post(sim, path, {"model": model, "messages": MESSAGES})

    assert status == 200 and body["model"] == DEPLOYMENT


@pytest.mark.parametrize(("version", "status"), [("2024-06-01", 400), ("2024-08-01-preview", 400),
                                                 ("2024-10-21", 200), ("2025-01-01-preview", 200)])
async def test_api_versions_older_than_stream_options_reject_it(sims: SimPool, version: str, status: int) -> None:
    sim = await sims.start(azure_openai_app(KEY, api_versions=(version,)))
    body = {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}

    async with aiohttp.ClientSession() as session, session.post(
            f"{sim.url}{CLASSIC_CHAT}?api-version={version}", json=body, headers={"api-key": KEY}) as response:
        text = await response.text()

    assert response.status == status
    if status == 400:
        assert json.loads(text)["error"]["message"] == "Unrecognized request argument supplied: stream_options"


@pytest.mark.parametrize(("headers", "message_start"), [
    ({}, "Access denied due to missing subscription key"),
    ({"api-key": "wrong-key-9876543210"}, "Access denied due to invalid subscription key"),
    ({"Authorization": f"Bearer {KEY}"}, "Access denied due to invalid subscription key"),
])
async def test_a_missing_or_wrong_key_is_a_401_in_azure_shape(
        sim: SimServer, headers: dict[str, str], message_start: str) -> None:
    status, body = await post(sim, f"{CLASSIC_CHAT}?api-version={VERSION}", {"messages": MESSAGES}, headers)

    assert status == 401 and body["error"]["code"] == "401"
    assert body["error"]["message"].startswith(message_start)
    assert "wrong-key" not in json.dumps(body)


async def test_the_sdk_raises_authentication_error_for_a_wrong_key(sim: SimServer, azure: AzureClient) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await azure(sim, key="wrong-key-9876543210").chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)

    assert caught.value.status_code == 401 and caught.value.code == "401"


async def test_an_unknown_deployment_is_a_404_deployment_not_found_in_both_forms(
        sim: SimServer, azure: AzureClient, v1: V1Client) -> None:
    for client in (azure(sim, deployment="gpt-nope"), v1(sim)):
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-nope", messages=MESSAGES)
        assert caught.value.code == "DeploymentNotFound"


async def test_a_content_filter_fault_is_a_400_responsible_ai_policy_violation(
        sim: SimServer, faults: FaultPlan, azure: AzureClient) -> None:
    faults.next(Fault(FaultKind.STATUS, status=400, code="content_filter"))

    with pytest.raises(openai.BadRequestError) as caught:
        await azure(sim).chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)

    assert caught.value.code == "content_filter" and caught.value.param == "prompt"
    error = caught.value.response.json()["error"]
    assert error["status"] == 400 and error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error["innererror"]["content_filter_result"]["jailbreak"] == {"filtered": True, "detected": True}
    assert "content management policy" in error["message"]


async def test_the_control_api_scripts_a_content_filter_block(sim: SimServer, v1: V1Client) -> None:
    control = {"mode": "next", "fault": {"kind": "status", "status": 400, "code": "content_filter"}}
    async with aiohttp.ClientSession() as session, session.post(sim.url + "/_sim/faults", json=control) as response:
        assert response.status == 200

    with pytest.raises(openai.BadRequestError) as caught:
        await v1(sim).chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)
    assert caught.value.code == "content_filter"


@pytest.mark.parametrize(("fault", "retry_after", "retry_after_ms", "seconds"), [
    (Fault(FaultKind.STATUS, status=429, retry_after_ms=2500), "3", "2500", "3 seconds"),
    (Fault(FaultKind.STATUS, status=429, retry_after=1), "1", "1000", "1 second"),
    (Fault(FaultKind.STATUS, status=429, retry_after=4, retry_after_ms=3200), "4", "3200", "4 seconds"),
])
async def test_a_rate_limit_is_a_429_in_azure_shape_with_both_back_off_headers(
        sim: SimServer, faults: FaultPlan, fault: Fault, retry_after: str, retry_after_ms: str, seconds: str) -> None:
    faults.next(fault)

    async with aiohttp.ClientSession() as session, session.post(
            f"{sim.url}{CLASSIC_CHAT}?api-version={VERSION}", json={"messages": MESSAGES},
            headers={"api-key": KEY}) as response:
        body = await response.json()

    assert response.status == 429
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == (retry_after, retry_after_ms)
    assert body["error"]["code"] == "429" and f"Please retry after {seconds}." in body["error"]["message"]


async def test_the_plain_openai_simulator_sends_no_filter_results(sims: SimPool) -> None:
    sim = await sims.start(openai_app())

    status, body = await post(sim, "/v1/chat/completions", {"model": "m", "messages": MESSAGES}, {})
    events = await stream_events(sim, "/v1/chat/completions", {"model": "m", "messages": MESSAGES})

    assert status == 200 and "prompt_filter_results" not in body
    assert "content_filter_results" not in body["choices"][0]
    assert all(e["choices"] and "content_filter_results" not in e["choices"][0] for e in events)


async def test_several_choices_each_carry_their_filter_results_and_annotations(sims: SimPool) -> None:
    sim = await sims.start(azure_openai_app(KEY, async_filter=True, chunks=4))
    status, whole = await post(sim, CLASSIC_CHAT + f"?api-version={VERSION}", {"messages": MESSAGES, "n": 2})
    events = await stream_events(sim, CLASSIC_CHAT + f"?api-version={VERSION}", {"messages": MESSAGES, "n": 2})

    assert status == 200
    assert [(c["index"], c["content_filter_results"]["hate"]) for c in whole["choices"]] == [(0, SAFE), (1, SAFE)]
    assert [c["message"]["content"] for c in whole["choices"]] == [ANSWER, f"(choice 2) {ANSWER}"]
    annotated = [e["choices"][0]["index"] for e in events if e["choices"] and "content_filter_offsets" in e["choices"][0]]
    assert annotated == [0, 1]
