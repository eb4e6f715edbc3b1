"""The Azure OpenAI simulator's Responses API, as `AzureOpenAI` (the preview form, `/openai/responses`),
the stock client on `/openai/v1/` and the raw wire see it."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from llmroute_proxy.sim import Fault, FaultKind, SimServer, azure_openai_app, sim_state
from tests.proxy.sim import SimPool

KEY = "azure-sim-responses-key-0123456789"
DEPLOYMENT = "gpt-4o-prod"
VERSION = "2025-03-01-preview"
QUESTION = "What is the weather like in Paris today?"
ANSWER = f"[sim-azure {DEPLOYMENT}] You said: {QUESTION}"
SAFE = {"filtered": False, "severity": "safe"}


@pytest.fixture
async def sim(sims: SimPool) -> SimServer:
    return await sims.start(azure_openai_app(KEY, chunks=4, deployments=(DEPLOYMENT,)))


def azure(sims: SimPool, server: SimServer, api_version: str = VERSION, retries: int = 0) -> openai.AsyncAzureOpenAI:
    api = openai.AsyncAzureOpenAI(api_key=KEY, azure_endpoint=server.url, api_version=api_version,
                                  max_retries=retries, timeout=5)
    sims.on_close(api.close)
    return api


def v1(sims: SimPool, server: SimServer) -> openai.AsyncOpenAI:
    api = openai.AsyncOpenAI(api_key="not-the-key", base_url=server.url + "/openai/v1/",
                             default_headers={"api-key": KEY}, max_retries=0, timeout=5)
    sims.on_close(api.close)
    return api


async def post(server: SimServer, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            server.url + path, json=body, headers={"api-key": KEY} if headers is None else headers) as response:
        return response.status, await response.json()


async def test_azure_openai_answers_on_the_preview_path_with_content_filters(sims: SimPool, sim: SimServer) -> None:
    response = await azure(sims, sim).responses.create(model=DEPLOYMENT, input=QUESTION)

    assert response.output_text == ANSWER and response.model == DEPLOYMENT
    assert response.model_extra is not None
    assert response.model_extra["content_filters"] == [
        {"blocked": False, "source_type": "prompt", "content_filter_results": {
            category: SAFE for category in ("hate", "self_harm", "sexual", "violence")}},
        {"blocked": False, "source_type": "completion", "content_filter_results": {
            category: SAFE for category in ("hate", "self_harm", "sexual", "violence")}}]
    recorded = sim_state(sim.app).stats.last
    assert recorded is not None and (recorded.path, recorded.query) == ("/openai/responses", {"api-version": VERSION})


async def test_the_stock_client_streams_on_the_v1_path(sims: SimPool, sim: SimServer) -> None:
    async with v1(sims, sim).responses.stream(model=DEPLOYMENT, input=QUESTION) as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()

    assert len(deltas) == 4 and final.output_text == ANSWER
    assert dict(sim_state(sim.app).stats.by_path) == {"/openai/v1/responses": 1}


async def test_a_conversation_continues_and_is_retrieved_on_the_preview_path(sims: SimPool, sim: SimServer) -> None:
    api = azure(sims, sim)
    first = await api.responses.create(model=DEPLOYMENT, input=QUESTION)

    second = await api.responses.create(model=DEPLOYMENT, input="And tomorrow?", previous_response_id=first.id)
    fetched = await api.responses.retrieve(first.id)

    assert second.output_text == f"[sim-azure {DEPLOYMENT}] You said: And tomorrow?"
    assert fetched.output_text == ANSWER


@pytest.mark.parametrize(("path", "status", "error"), [
    ("/openai/responses", 404, {"code": "404", "message": "Resource not found"}),
    ("/openai/responses?api-version=2099-01-01", 400, {"code": "BadRequest", "message": "API version not supported"}),
    ("/openai/responses?api-version=2024-10-21", 400, {
        "message": "Azure OpenAI Responses API is enabled only for api-version 2025-03-01-preview and later",
        "type": "invalid_request_error", "param": None, "code": None}),
    ("/openai/v1/responses?api-version=2025-03-01-preview", 400,
     {"code": "BadRequest", "message": "API version not supported"}),
])
async def test_api_versions_are_refused_as_azure_refuses_them(
        sim: SimServer, path: str, status: int, error: dict[str, Any]) -> None:
    answered, body = await post(sim, path, {"model": DEPLOYMENT, "input": QUESTION})

    assert (answered, body) == (status, {"error": error})


async def test_an_unknown_deployment_is_a_400_naming_the_model(sims: SimPool, sim: SimServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await v1(sims, sim).responses.create(model="gpt-nope", input=QUESTION)

    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert "gpt-nope" in caught.value.message


async def test_a_missing_key_is_azures_401(sim: SimServer) -> None:
    status, body = await post(sim, "/openai/v1/responses", {"model": DEPLOYMENT, "input": QUESTION}, headers={})

    assert status == 401 and body["error"]["code"] == "401"


async def test_a_429_carries_both_back_off_headers_and_the_sdk_retries_it(sims: SimPool, sim: SimServer) -> None:
    sim_state(sim.app).faults.next(Fault(FaultKind.STATUS, status=429, retry_after_ms=10))
    with pytest.raises(openai.RateLimitError) as caught:
        await azure(sims, sim).responses.create(model=DEPLOYMENT, input=QUESTION)
    sim_state(sim.app).faults.next(Fault(FaultKind.STATUS, status=429, retry_after_ms=10))

    retried = await azure(sims, sim, retries=1).responses.create(model=DEPLOYMENT, input=QUESTION)

    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("1", "10")
    assert "Please retry after 1 second" in caught.value.message
    assert retried.output_text == ANSWER


async def test_the_output_filter_ends_a_refused_answer_as_incomplete(sims: SimPool, sim: SimServer) -> None:
    sim_state(sim.app).faults.next(Fault(FaultKind.REFUSAL))

    response = await azure(sims, sim).responses.create(model=DEPLOYMENT, input=QUESTION)

    assert response.status == "incomplete" and response.output == []
    assert response.incomplete_details is not None and response.incomplete_details.reason == "content_filter"
    assert response.model_extra is not None
    completion = response.model_extra["content_filters"][1]
    assert completion["blocked"] is True and completion["content_filter_results"]["violence"]["filtered"] is True


async def test_a_streamed_filtered_answer_is_a_response_incomplete_event(sims: SimPool, sim: SimServer) -> None:
    sim_state(sim.app).faults.next(Fault(FaultKind.REFUSAL))

    async with v1(sims, sim).responses.stream(model=DEPLOYMENT, input=QUESTION) as stream:
        names = [event.type async for event in stream]

    assert names == ["response.created", "response.in_progress", "response.incomplete"]


async def test_a_prompt_block_is_azures_content_filter_400(sims: SimPool, sim: SimServer) -> None:
    sim_state(sim.app).faults.next(Fault(FaultKind.PROMPT_BLOCKED))

    with pytest.raises(openai.BadRequestError) as caught:
        await azure(sims, sim).responses.create(model=DEPLOYMENT, input=QUESTION)

    assert caught.value.code == "content_filter"
