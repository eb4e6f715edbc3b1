"""The official `openai` SDK calls the sidecar, which calls Azure OpenAI in both URL forms."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from aiohttp import web

from llmroute_proxy.routing.cost import cost_usd
from llmroute_proxy.routing.rules import RequestFacts
from llmroute_proxy.routing.tokens import estimate_tokens
from llmroute_proxy.sim import Fault, FaultKind, FaultPlan, azure_openai_app, sim_state
from llmroute_proxy.table import Pricing, TargetId
from tests.proxy.documents import QUICK_FALLBACK, model, provider, route, target
from tests.proxy.server.spending import ended
from tests.proxy.stack import Stack

AZURE_KEY = "azure-route-key-0123456789abcdef"
APP_KEY = "app-key-never-forwarded"
CHAT, EMBED = "gpt-4o-prod", "embed-prod"
CLASSIC_CHAT = f"/openai/deployments/{CHAT}/chat/completions"
V1_CHAT = "/openai/v1/chat/completions"
CLASSIC_TARGET = TargetId(f"az-classic/{CHAT}@here")
WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

PROD_MODEL = model("gpt-4o-prod", context_window=128000, input_per_mtok=2.5, output_per_mtok=10.0)
PROD_MODEL_PRICING = Pricing(input_per_mtok=2.5, output_per_mtok=10.0)
EMBED_MODEL = model("embed-prod", input_per_mtok=0.02)
CONFIG = [
    provider("az-classic", "azure-openai", "{azure}", key_env="TEST_AZURE_KEY", azure={"apiVersion": "2024-10-21"},
             models=[PROD_MODEL, EMBED_MODEL]),
    provider("az-v1", "azure-openai", "{azure}/openai/v1", key_env="TEST_AZURE_KEY", models=[PROD_MODEL, EMBED_MODEL]),
    provider("az-old", "azure-openai", "{azure}", key_env="TEST_AZURE_KEY", azure={"apiVersion": "2024-06-01"},
             models=[PROD_MODEL]),
    route("main", {
        "azure": [target("az-classic", "gpt-4o-prod"), target("az-v1", "gpt-4o-prod", priority=1)],
        "azure-v1": [target("az-v1", "gpt-4o-prod")],
        "azure-old": [target("az-old", "gpt-4o-prod")],
        "embed-classic": [target("az-classic", "embed-prod")],
        "embed-v1": [target("az-v1", "embed-prod")],
    }, default_tier="azure",
        fallback=QUICK_FALLBACK,
        outlierDetection={"consecutiveFailures": 2, "baseEjection": "30s"}),
]


def azure_sim(faults: FaultPlan) -> web.Application:
    return azure_openai_app(AZURE_KEY, name="sim-azure", faults=faults, chunks=4, async_filter=True,
                            deployments=(CHAT, EMBED))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("azure"), config=CONFIG, extra_sims={"azure": azure_sim},
               environ={"TEST_AZURE_KEY": AZURE_KEY}) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=APP_KEY, max_retries=0)


def azure_paths(stack: Stack) -> dict[str, int]:
    return stack.call(lambda: dict(sim_state(stack.sims["azure"].app).stats.by_path))


def last_azure_request(stack: Stack, path: str) -> Any:
    return stack.call(lambda: sim_state(stack.sims["azure"].app).stats.last_by_path[path])


@pytest.mark.parametrize(("tier", "path", "provider"), [("azure", CLASSIC_CHAT, "az-classic"),
                                                        ("azure-v1", V1_CHAT, "az-v1")])
def test_a_chat_completion_reaches_azure_with_its_key_path_and_api_version(
        stack: Stack, client: openai.OpenAI, tier: str, path: str, provider: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=tier, messages=[{"role": "user", "content": "hello there"}])
    completion = raw.parse()

    assert completion.choices[0].message.content == f"[sim-azure {CHAT}] You said: hello there"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-llmroute-provider"] == provider and raw.headers["x-llmroute-attempts"] == "1"
    assert float(raw.headers["x-llmroute-cost-usd"]) > 0
    sent = last_azure_request(stack, path)
    assert sent.headers["api-key"] == AZURE_KEY and "Authorization" not in sent.headers
    assert APP_KEY not in json.dumps(dict(sent.headers))
    assert sent.body["model"] == CHAT
    assert sent.query.get("api-version") == ("2024-10-21" if tier == "azure" else None)
    assert azure_paths(stack) == {path: 1}


@pytest.mark.parametrize("tier", ["azure", "azure-v1"])
def test_a_stream_ends_with_one_usage_chunk_and_no_filter_chunks(stack: Stack, client: openai.OpenAI,
                                                                 tier: str) -> None:
    chunks = list(client.chat.completions.create(
        model=tier, messages=[{"role": "user", "content": "tell me a story"}], stream=True,
        stream_options={"include_usage": True}))

    assert all(c.id and c.id.startswith("chatcmpl-") for c in chunks), "the prompt-filter chunk leaked"
    with_choices = chunks[:-1]
    assert all(c.choices and c.choices[0].delta is not None for c in with_choices), "an annotation chunk leaked"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == f"[sim-azure {CHAT}] You said: tell me a story"
    assert [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason] == ["stop"]
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.usage is not None for c in chunks].count(True) == 1


def test_a_stream_without_include_usage_shows_no_usage_chunk(stack: Stack, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="azure", messages=[{"role": "user", "content": "hi"}], stream=True))

    assert chunks and all(c.choices and c.usage is None for c in chunks)
    assert last_azure_request(stack, CLASSIC_CHAT).body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("tier", ["azure", "azure-v1"])
def test_tool_calls_round_trip_through_azure(stack: Stack, client: openai.OpenAI, tier: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=tier, messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    function = call.function  # type: ignore[union-attr]
    assert (function.name, json.loads(function.arguments)) == ("get_weather", {"city": "sim"})

    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18C and cloudy"}]
    second = client.chat.completions.create(model=tier, messages=messages, tools=[WEATHER_TOOL])
    assert "Tool said: 18C and cloudy" in (second.choices[0].message.content or "")


def test_streamed_tool_calls_arrive_whole_through_azure(stack: Stack, client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="azure", messages=[{"role": "user", "content": "Weather?"}],
                                        tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()

    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls" and calls is not None
    assert json.loads(calls[0].function.arguments) == {"city": "sim"}


@pytest.mark.parametrize(("tier", "path"), [("embed-classic", f"/openai/deployments/{EMBED}/embeddings"),
                                            ("embed-v1", "/openai/v1/embeddings")])
def test_embeddings_reach_azure_in_both_forms(stack: Stack, client: openai.OpenAI, tier: str, path: str) -> None:
    answer = client.embeddings.create(model=tier, input=["a cat", "a dog"])

    assert len(answer.data) == 2 and len(answer.data[0].embedding) == 16
    assert answer.usage.prompt_tokens > 0
    sent = last_azure_request(stack, path)
    assert sent.headers["api-key"] == AZURE_KEY and sent.body["model"] == EMBED
    assert azure_paths(stack) == {path: 1}


def test_a_content_filter_block_reaches_the_client_as_a_400_and_is_not_failed_over(
        stack: Stack, client: openai.OpenAI) -> None:
    stack.call(lambda: stack.faults["azure"].next(Fault(FaultKind.STATUS, status=400, code="content_filter")))

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="azure", messages=[{"role": "user", "content": "something bad"}])

    assert caught.value.status_code == 400 and caught.value.code == "content_filter"
    assert "content management policy" in caught.value.message
    assert azure_paths(stack) == {CLASSIC_CHAT: 1}


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_stopped_by_the_output_filter_ends_as_content_filter_and_is_not_failed_over(
        stack: Stack, client: openai.OpenAI, stream: bool) -> None:
    stack.call(lambda: stack.faults["azure"].next(Fault(FaultKind.REFUSAL)))
    ask: Any = [{"role": "user", "content": "hello there"}]
    if stream:
        chunks = list(client.chat.completions.create(model="azure", messages=ask, stream=True))
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        whole = client.chat.completions.create(model="azure", messages=ask)
        finishes, text = [whole.choices[0].finish_reason], whole.choices[0].message.content or ""
    assert finishes == ["content_filter"] and text == ""
    assert azure_paths(stack) == {f"/openai/deployments/{CHAT}/chat/completions": 1}


def test_a_rate_limit_with_retry_after_ms_fails_over_to_the_v1_target_and_cools_the_first(
        stack: Stack, client: openai.OpenAI) -> None:
    rate_limited = Fault(FaultKind.STATUS, status=429, retry_after_ms=2500, path="/deployments/")
    stack.call(lambda: stack.faults["azure"].next(rate_limited))

    first = client.chat.completions.with_raw_response.create(
        model="azure", messages=[{"role": "user", "content": "hello"}])
    second = client.chat.completions.with_raw_response.create(
        model="azure", messages=[{"role": "user", "content": "hello again"}])

    assert (first.headers["x-llmroute-provider"], first.headers["x-llmroute-attempts"]) == ("az-v1", "2")
    assert "You said: hello" in (first.parse().choices[0].message.content or "")
    assert (second.headers["x-llmroute-provider"], second.headers["x-llmroute-attempts"]) == ("az-v1", "1")
    assert azure_paths(stack) == {CLASSIC_CHAT: 1, V1_CHAT: 2}
    health = stack.call(lambda: stack.sidecar.health.snapshot(CLASSIC_TARGET, stack.sidecar.clock()))
    assert health.state == "cooling" and 2.0 < health.until <= 2.5, "retry-after-ms (2.5 s) sets the cooldown"


@pytest.mark.parametrize("fault", [
    Fault(FaultKind.BREAK_AFTER_TOKENS, tokens=0, path="/deployments/"),
    Fault(FaultKind.ANTHROPIC_ERROR_EVENT, status=500, tokens=0, path="/deployments/"),
], ids=lambda f: f.kind.value)
def test_a_stream_that_fails_after_the_filter_chunk_but_before_content_fails_over_invisibly(
        stack: Stack, client: openai.OpenAI, fault: Fault) -> None:
    stack.call(lambda: stack.faults["azure"].next(fault))

    response = client.chat.completions.with_raw_response.create(
        model="azure", messages=[{"role": "user", "content": "hello"}], stream=True)

    text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == f"[sim-azure {CHAT}] You said: hello"
    assert (response.headers["x-llmroute-provider"], response.headers["x-llmroute-attempts"]) == ("az-v1", "2")
    assert azure_paths(stack) == {CLASSIC_CHAT: 1, V1_CHAT: 1}


def test_a_stream_to_a_target_pinned_to_an_old_api_version_succeeds(stack: Stack, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="azure-old", messages=[{"role": "user", "content": "hi"}], stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith("You said: hi")


def test_a_stream_to_an_old_api_version_carries_no_usage_and_is_charged_an_estimate_of_it(
        stack: Stack, client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    chunks = list(client.chat.completions.create(model="azure-old", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    outcome = ended(stack)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.usage for c in chunks if c.usage is not None] == []  # Azure sent none: none is made up
    assert outcome.usage_estimated and outcome.usage is not None
    assert outcome.usage.input_tokens == RequestFacts("azure-old", messages, {}, False, None).prompt_tokens
    # a few chunks at the size of the first (the simulator's densest: its name and model), not the 4096
    # tokens a reservation assumes; test_unmetered_answers checks the estimate on padded answers
    assert estimate_tokens(text) <= outcome.usage.output_tokens < 100
    assert outcome.cost_usd == pytest.approx(cost_usd(outcome.usage, PROD_MODEL_PRICING))


def test_a_whole_answer_from_a_target_pinned_to_an_old_api_version_succeeds(
        stack: Stack, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="azure-old", messages=[{"role": "user", "content": "hi"}])

    assert (completion.choices[0].message.content or "").endswith("You said: hi")
    assert last_azure_request(stack, CLASSIC_CHAT).query["api-version"] == "2024-06-01"


@pytest.mark.parametrize("tier", ["azure", "azure-v1", "azure-old"])
def test_responses_go_to_azures_own_v1_responses_api_whatever_the_chat_api_version(
        stack: Stack, client: openai.OpenAI, tier: str) -> None:
    sdk = client
    raw = sdk.responses.with_raw_response.create(model=tier, input="hello there", tools=[{"type": "web_search"}])
    response = raw.parse()
    assert raw.headers["x-llmroute-provider"].startswith("az-")
    assert [item.type for item in response.output] == ["web_search_call", "message"] and response.output_text
    sent = stack.call(lambda: sim_state(stack.sims["azure"].app).stats.last)
    assert sent.path == "/openai/v1/responses" and sent.body["model"] == CHAT
    assert sent.headers["api-key"] == AZURE_KEY and "app-key" not in json.dumps(dict(sent.headers))
    with sdk.responses.stream(model=tier, input="tell me more") as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text
    assert sdk.responses.retrieve(final.id).id == final.id  # kept by the sidecar under Azure's own id
    sdk.responses.delete(final.id)  # and by Azure: deleted there too, with its key, on its v1 path
    deleted = last_azure_request(stack, f"/openai/v1/responses/{final.id}")
    assert (deleted.method, deleted.headers["api-key"]) == ("DELETE", AZURE_KEY)
    azure_itself = openai.OpenAI(base_url=stack.sims["azure"].url + "/openai/v1", api_key=AZURE_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        azure_itself.responses.retrieve(final.id)
