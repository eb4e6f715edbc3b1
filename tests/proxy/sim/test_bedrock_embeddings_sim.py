"""The Bedrock simulator's text-embedding models through InvokeModel, on the raw wire: Titan's and Cohere's
bodies and answers, and the ValidationExceptions their schemas give."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import orjson
import pytest

from llmroute_proxy.sim import Fault, FaultKind, SimServer, bedrock_app, sim_state
from tests.proxy.sim import SimPool

KEY = "ABSKsim-bedrock-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TITAN = "/model/amazon.titan-embed-text-v2:0/invoke"
TITAN_V1 = "/model/amazon.titan-embed-text-v1/invoke"
COHERE = "/model/cohere.embed-multilingual-v3/invoke"


@pytest.fixture
async def sim(sims: SimPool) -> SimServer:
    return await sims.start(bedrock_app(KEY))


async def post(sim: SimServer, path: str, body: Any) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session, session.post(sim.url + path, json=body, headers=AUTH) as r:
        return r.status, r.headers, orjson.loads(await r.read())


@pytest.mark.parametrize(("body", "size"), [({"inputText": "a cat"}, 1024),
                                            ({"inputText": "a cat", "dimensions": 256, "normalize": True}, 256)])
async def test_titan_v2_answers_a_unit_vector_of_the_dimensions_asked(sim: SimServer, body: Any, size: int) -> None:
    status, headers, answer = await post(sim, TITAN, body)

    assert status == 200 and len(answer["embedding"]) == size
    assert math.isclose(sum(v * v for v in answer["embedding"]), 1.0, rel_tol=1e-9)
    assert answer["embeddingsByType"] == {"float": answer["embedding"]}
    assert answer["inputTextTokenCount"] > 0
    assert headers["X-Amzn-Bedrock-Input-Token-Count"] == str(answer["inputTextTokenCount"])


async def test_the_same_text_is_the_same_vector(sim: SimServer) -> None:
    first, second = [(await post(sim, TITAN, {"inputText": "a cat"}))[2] for _ in range(2)]
    assert first["embedding"] == second["embedding"]


async def test_titan_v1_answers_1536_dimensions_without_embeddings_by_type(sim: SimServer) -> None:
    status, _, answer = await post(sim, TITAN_V1, {"inputText": "a cat"})

    assert status == 200 and len(answer["embedding"]) == 1536 and set(answer) == {"embedding", "inputTextTokenCount"}


async def test_cohere_answers_one_vector_per_text_and_no_token_count_in_the_body(sim: SimServer) -> None:
    status, headers, answer = await post(sim, COHERE, {"texts": ["a cat", "a dog"], "input_type": "search_document",
                                                       "truncate": "NONE"})

    assert status == 200 and set(answer) == {"embeddings", "id", "response_type", "texts"}
    assert answer["response_type"] == "embeddings_floats" and answer["texts"] == ["a cat", "a dog"]
    assert [len(v) for v in answer["embeddings"]] == [1024, 1024] and answer["embeddings"][0] != answer["embeddings"][1]
    assert int(headers["X-Amzn-Bedrock-Input-Token-Count"]) > 0


@pytest.mark.parametrize(("path", "body", "says"), [
    (TITAN, {"inputText": "a", "dimensions": 300}, "#/dimensions: 300 is not a valid enum value"),
    (TITAN, {"texts": ["a"]}, "extraneous key [texts]"),
    (TITAN, {"normalize": True}, "required key [inputText] not found"),
    (TITAN_V1, {"inputText": "a", "dimensions": 1024}, "extraneous key [dimensions]"),
    (COHERE, {"texts": ["t"] * 97, "input_type": "search_document"}, "expected maximum item count: 96, found: 97"),
    (COHERE, {"texts": ["t"]}, "required key [input_type] not found"),
    (COHERE, {"texts": ["t"], "input_type": "query"}, "#/input_type: query is not a valid enum value"),
])
async def test_what_the_models_schema_refuses_is_a_validation_exception(sim: SimServer, path: str, body: Any,
                                                                       says: str) -> None:
    status, headers, answer = await post(sim, path, body)

    assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationException")
    assert says in answer["message"] and answer["message"].startswith("Malformed input request: ")


async def test_the_no_usage_fault_leaves_titans_count_out(sim: SimServer) -> None:
    sim_state(sim.app).faults.next(Fault(FaultKind.NO_USAGE))
    _, _, answer = await post(sim, TITAN, {"inputText": "a cat"})

    assert "inputTextTokenCount" not in answer and len(answer["embedding"]) == 1024
