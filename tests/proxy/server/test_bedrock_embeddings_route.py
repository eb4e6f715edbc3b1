"""The official OpenAI SDK's embeddings through the sidecar to Bedrock's embedding models (InvokeModel):
Titan Text Embeddings one text per call, Cohere Embed v3 many, floats and base64, the usage each reports
(Cohere none: the estimate is charged), and the targets passed over for what one call cannot take."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from llmroute_proxy.routing.tokens import embedding_input_tokens
from llmroute_proxy.sim import Fault, FaultKind, bedrock_app
from llmroute_proxy.sim.answers import count_tokens
from llmroute_proxy.table import TargetId
from tests.proxy.documents import QUICK_FALLBACK, model, provider, route, target
from tests.proxy.server.spending import ended
from tests.proxy.stack import OAI, Stack

BEDROCK_KEY = "ABSKQmVkcm9ja0FQSUtleS1zaW0tdGVzdA=="
TITAN = "amazon.titan-embed-text-v2:0"
TITAN_V1 = "amazon.titan-embed-text-v1"
COHERE = "cohere.embed-english-v3"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
TITAN_PRICE, COHERE_PRICE = 0.02, 0.10
TITAN_INVOKE = f"/model/{TITAN}/invoke"
COHERE_INVOKE = f"/model/{COHERE}/invoke"

CONFIG = [
    OAI,
    provider("bedrock", "bedrock", "{bedrock}", key_env="TEST_BEDROCK_KEY", region="here", models=[
        model(TITAN, input_per_mtok=TITAN_PRICE), model(TITAN_V1, input_per_mtok=0.1),
        model(COHERE, input_per_mtok=COHERE_PRICE), model(SONNET, input_per_mtok=3.0, output_per_mtok=15.0)]),
    route("main", {
        "titan": [target("bedrock", TITAN)],
        "titan-v1": [target("bedrock", TITAN_V1)],
        "cohere": [target("bedrock", COHERE)],
        "titan-first": [target("bedrock", TITAN), target("oai", "text-embedding-3-small", priority=1)],
        "sonnet-first": [target("bedrock", SONNET), target("bedrock", TITAN, priority=1)],
        "cohere-first": [target("bedrock", COHERE), target("bedrock", SONNET, priority=1)],
    }, default_tier="titan",
        fallback=QUICK_FALLBACK),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("bedrock-embeddings"), config=CONFIG,
               extra_sims={"bedrock": lambda faults: bedrock_app(BEDROCK_KEY, faults=faults)},
               environ={"TEST_BEDROCK_KEY": BEDROCK_KEY}) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="app-key", max_retries=0)


def test_titan_embeds_one_text_at_the_dimensions_asked_and_is_charged_its_count(
        stack: Stack, client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="titan", input="a cat on a mat", dimensions=256,
                                                     encoding_format="float")
    answer = raw.parse()

    vector = answer.data[0].embedding
    assert len(answer.data) == 1 and len(vector) == 256
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-6)
    sent = stack.last_sim_request("bedrock", TITAN_INVOKE)
    assert sent.headers["Authorization"] == f"Bearer {BEDROCK_KEY}"
    assert sent.body == {"inputText": "a cat on a mat", "normalize": True, "dimensions": 256}
    outcome = ended(stack)
    assert answer.usage.prompt_tokens > 0 and not outcome.usage_estimated
    assert outcome.usage is not None and outcome.usage.input_tokens == answer.usage.prompt_tokens
    cost = answer.usage.prompt_tokens * TITAN_PRICE / 1e6
    assert float(raw.headers["x-llmroute-cost-usd"]) == pytest.approx(cost, rel=1e-3)
    assert raw.headers["x-llmroute-provider"] == "bedrock" and stack.sim_paths("bedrock") == {TITAN_INVOKE: 1}


@pytest.mark.parametrize("tier", ["titan", "cohere"])
def test_base64_is_the_float_vector_as_little_endian_float32(client: openai.OpenAI, tier: str) -> None:
    floats = client.embeddings.create(model=tier, input="a cat", encoding_format="float").data[0].embedding
    encoded: Any = client.embeddings.create(model=tier, input="a cat", encoding_format="base64").data[0].embedding
    decoded = client.embeddings.create(model=tier, input="a cat").data[0].embedding  # the SDK asks base64 itself

    raw = base64.b64decode(encoded)
    assert struct.unpack(f"<{len(raw) // 4}f", raw) == pytest.approx(floats, abs=1e-7)
    assert list(decoded) == pytest.approx(floats, abs=1e-7)


def test_cohere_embeds_every_text_in_one_call_and_is_charged_what_bedrocks_header_counts(
        stack: Stack, client: openai.OpenAI) -> None:
    texts = ["a cat on a mat", "a dog in the fog", "a bird on a wire"]
    raw = client.embeddings.with_raw_response.create(model="cohere", input=texts, encoding_format="float")
    answer = raw.parse()

    assert [item.index for item in answer.data] == [0, 1, 2] and {len(item.embedding) for item in answer.data} == {1024}
    assert answer.data[0].embedding != answer.data[1].embedding
    assert stack.last_sim_request("bedrock", COHERE_INVOKE).body == {"texts": texts, "input_type": "search_document",
                                                               "truncate": "NONE"}
    outcome = ended(stack)
    counted = sum(count_tokens(text) for text in texts)  # what the simulator's X-Amzn-Bedrock-Input-Token-Count says
    assert counted != embedding_input_tokens(texts)  # so the figure charged is the header's, not the estimate
    assert answer.usage.prompt_tokens == 0, "the client is told what Bedrock's body said: nothing counted"
    assert not outcome.usage_estimated and outcome.usage is not None and outcome.usage.input_tokens == counted
    assert float(raw.headers["x-llmroute-cost-usd"]) == pytest.approx(counted * COHERE_PRICE / 1e6, rel=1e-9)


def test_titan_v1_takes_its_text_alone_and_answers_1536_dimensions(stack: Stack, client: openai.OpenAI) -> None:
    answer = client.embeddings.create(model="titan-v1", input="a cat", encoding_format="float")

    assert len(answer.data[0].embedding) == 1536
    assert stack.last_sim_request("bedrock", f"/model/{TITAN_V1}/invoke").body == {"inputText": "a cat"}


@pytest.mark.parametrize(("given", "param"), [({"input": ["a cat", "a dog"]}, "input"),
                                              ({"input": "a cat", "dimensions": 300}, "dimensions")])
def test_what_titan_cannot_take_in_one_call_passes_it_over_to_the_next_target(
        stack: Stack, client: openai.OpenAI, given: dict[str, Any], param: str) -> None:
    raw = client.embeddings.with_raw_response.create(model="titan-first", **given)

    assert len(raw.parse().data) == (len(given["input"]) if isinstance(given["input"], list) else 1)
    assert (raw.headers["x-llmroute-provider"], raw.headers["x-llmroute-attempts"]) == ("oai", "1")
    assert list(ended(stack).passed_over) == [(TargetId(f"bedrock/{TITAN}@here"), param)]
    assert stack.sim_paths("bedrock") == {}


def test_a_tier_of_titan_alone_refuses_several_texts_naming_input(stack: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="titan", input=["a cat", "a dog"])

    assert raised.value.param == "input" and "one text per request" in raised.value.message
    assert stack.sim_paths("bedrock") == {}


def test_a_chat_model_is_passed_over_for_the_embedding_model_of_the_tier(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="sonnet-first", input="a cat")

    assert len(raw.parse().data) == 1 and raw.headers["x-llmroute-attempts"] == "1"
    assert list(ended(stack).passed_over) == [(TargetId(f"bedrock/{SONNET}@here"), "model")]
    assert stack.sim_paths("bedrock") == {TITAN_INVOKE: 1}


def test_a_throttled_titan_fails_over_to_the_next_target(stack: Stack, client: openai.OpenAI) -> None:
    stack.call(lambda: stack.faults["bedrock"].next(Fault(FaultKind.STATUS, status=429)))

    raw = client.embeddings.with_raw_response.create(model="titan-first", input="a cat")

    assert len(raw.parse().data) == 1
    assert (raw.headers["x-llmroute-provider"], raw.headers["x-llmroute-attempts"]) == ("oai", "2")
    assert stack.sim_paths("bedrock") == {TITAN_INVOKE: 1}


def test_an_embedding_model_is_passed_over_for_the_chat_model_of_the_tier(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="cohere-first",
                                                           messages=[{"role": "user", "content": "hello"}])

    assert "You said: hello" in (raw.parse().choices[0].message.content or "")
    assert raw.headers["x-llmroute-attempts"] == "1"
    assert list(ended(stack).passed_over) == [(TargetId(f"bedrock/{COHERE}@here"), "model")]
    assert stack.sim_paths("bedrock") == {f"/model/{SONNET}/invoke": 1}, "nothing goes to Cohere's Converse"


def test_a_tier_of_an_embedding_model_alone_refuses_a_chat_completion_naming_model(
        stack: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="titan", messages=[{"role": "user", "content": "hello"}])

    error: Any = raised.value.body
    assert (error["param"], error["code"]) == ("model", "unsupported_operation")
    assert "not a chat model" in raised.value.message
    assert stack.sim_paths("bedrock") == {}
