"""The Bedrock provider's embeddings: an OpenAI request as the InvokeModel body of Titan Text Embeddings or
Cohere Embed v3, what one call cannot take refused naming the field, and the answers read back as OpenAI's
list (floats or base64)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest

from llmroute_proxy.dialects.bedrock.embeddings import EmbeddingFamily, embedding_family
from llmroute_proxy.errors import BadRequest, FailureKind, UpstreamError
from llmroute_proxy.providers.bedrock import BedrockProvider
from llmroute_proxy.table import ProviderType, Secret, Target, TargetId

PROVIDER = BedrockProvider()
KEY = "ABSKbedrock-api-key"
URL = "https://bedrock-runtime.us-east-1.amazonaws.com"
TITAN = "amazon.titan-embed-text-v2:0"
TITAN_V1 = "amazon.titan-embed-text-v1"
COHERE = "cohere.embed-english-v3"


def target(model: str) -> Target:
    return Target(id=TargetId(f"bedrock/{model}@us-east-1"), provider="bedrock", provider_type=ProviderType.BEDROCK,
                  model=model, url=URL, region="us-east-1", credential=Secret(KEY))


def sent(body: dict[str, Any], model: str) -> tuple[str, dict[str, str], Any]:
    upstream = PROVIDER.embeddings_request({"model": "tier", **body}, target(model))
    assert upstream.method == "POST" and upstream.body is not None
    return upstream.url, upstream.headers, orjson.loads(upstream.body)


@pytest.mark.parametrize(("model", "family"), [
    ("amazon.titan-embed-text-v2:0", EmbeddingFamily.TITAN_V2),
    ("amazon.titan-embed-text-v1", EmbeddingFamily.TITAN_V1),
    ("amazon.titan-embed-g1-text-02", EmbeddingFamily.TITAN_V1),
    ("cohere.embed-english-v3", EmbeddingFamily.COHERE_V3),
    ("cohere.embed-multilingual-v3", EmbeddingFamily.COHERE_V3),
    ("us.cohere.embed-english-v3", EmbeddingFamily.COHERE_V3),
    ("amazon.titan-embed-image-v1", None),
    ("cohere.embed-v4:0", None),
    ("amazon.titan-text-express-v1", None),
    ("anthropic.claude-sonnet-4-5-20250929-v1:0", None),
])
def test_the_family_is_read_from_the_model_id(model: str, family: EmbeddingFamily | None) -> None:
    assert embedding_family(model) is family


# ---- requests ---------------------------------------------------------------------------


def test_titan_v2_gets_one_text_normalized_at_the_dimensions_asked() -> None:
    url, headers, body = sent({"input": ["a cat"], "dimensions": 256}, TITAN)

    assert url == f"{URL}/model/{TITAN}/invoke"
    assert headers == {"authorization": f"Bearer {KEY}", "content-type": "application/json",
                       "accept": "application/json"}
    assert body == {"inputText": "a cat", "normalize": True, "dimensions": 256}


def test_titan_v2_without_dimensions_gets_its_default() -> None:
    assert sent({"input": "a cat"}, TITAN)[2] == {"inputText": "a cat", "normalize": True}


def test_titan_v1_gets_only_its_text() -> None:
    assert sent({"input": "a cat", "dimensions": 1536}, TITAN_V1)[2] == {"inputText": "a cat"}


def test_cohere_gets_all_the_texts_as_documents_untruncated() -> None:
    url, _, body = sent({"input": ["a cat", "a dog"], "encoding_format": "base64"}, COHERE)

    assert url == f"{URL}/model/{COHERE}/invoke"
    assert body == {"texts": ["a cat", "a dog"], "input_type": "search_document", "truncate": "NONE"}


@pytest.mark.parametrize(("model", "body", "param"), [
    (TITAN, {"input": ["a", "b"]}, "input"),
    (TITAN_V1, {"input": ["a", "b"]}, "input"),
    (COHERE, {"input": ["t"] * 97}, "input"),
    (TITAN, {"input": [1, 2, 3]}, "input"),
    (COHERE, {"input": [[1, 2], [3]]}, "input"),
    (TITAN, {"input": "a", "dimensions": 300}, "dimensions"),
    (TITAN, {"input": "a", "dimensions": 1536}, "dimensions"),
    (TITAN_V1, {"input": "a", "dimensions": 1024}, "dimensions"),
    (COHERE, {"input": "a", "dimensions": 256}, "dimensions"),
    (TITAN, {"input": "a", "encoding_format": "int8"}, "encoding_format"),
])
def test_what_one_call_cannot_take_is_refused_naming_the_field(model: str, body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        PROVIDER.embeddings_request({"model": "tier", **body}, target(model))
    assert refused.value.param == param


def test_ninety_six_texts_go_to_cohere_in_one_call() -> None:
    assert len(sent({"input": ["t"] * 96}, COHERE)[2]["texts"]) == 96


@pytest.mark.parametrize("model", ["amazon.titan-embed-image-v1", "cohere.embed-v4:0", "meta.llama3-3-70b-instruct-v1:0"])
def test_a_model_without_built_embeddings_is_refused_naming_model(model: str) -> None:
    with pytest.raises(BadRequest) as refused:
        PROVIDER.embeddings_request({"model": "tier", "input": "hi"}, target(model))
    assert (refused.value.param, refused.value.code) == ("model", "unsupported_operation")
    assert "Titan" in refused.value.message and "Bedrock embedding model" in refused.value.message


# ---- answers ----------------------------------------------------------------------------

TITAN_ANSWER = {"embedding": [0.5, -0.25, 0.125], "inputTextTokenCount": 4,
                "embeddingsByType": {"float": [0.5, -0.25, 0.125]}}
COHERE_ANSWER = {"embeddings": [[0.5, -1.25], [0.0, 2]], "id": "5c8d1f0e-8f7f-4a0a-9d4e-3b7f9d3c2a11",
                 "response_type": "embeddings_floats", "texts": ["a cat", "a dog"]}


def test_titans_answer_is_one_embedding_with_its_token_count() -> None:
    data, usage = PROVIDER.embeddings_response(orjson.dumps(TITAN_ANSWER), {"input": "a cat"}, target(TITAN))

    assert data == {"object": "list", "model": TITAN,
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 0.125]}],
                    "usage": {"prompt_tokens": 4, "total_tokens": 4}}
    assert usage.input_tokens == 4


def test_cohere_answers_one_embedding_per_text_in_order_and_counts_nothing() -> None:
    data, usage = PROVIDER.embeddings_response(orjson.dumps(COHERE_ANSWER), {"input": ["a cat", "a dog"]},
                                               target(COHERE))

    assert [(item["index"], item["embedding"]) for item in data["data"]] == [(0, [0.5, -1.25]), (1, [0.0, 2])]
    assert data["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
    assert usage.input_tokens == 0, "zero: the dispatch estimates the prompt's tokens"


@pytest.mark.parametrize(("model", "answer"), [(TITAN, TITAN_ANSWER), (COHERE, COHERE_ANSWER)])
def test_base64_is_little_endian_float32(model: str, answer: dict[str, Any]) -> None:
    texts = answer.get("texts", "a cat")
    data, _ = PROVIDER.embeddings_response(orjson.dumps(answer), {"input": texts, "encoding_format": "base64"},
                                           target(model))

    raw = base64.b64decode(data["data"][0]["embedding"])
    first = answer.get("embedding") or answer["embeddings"][0]
    assert struct.unpack(f"<{len(first)}f", raw) == pytest.approx(first)


@pytest.mark.parametrize(("model", "answer"), [
    (TITAN, {"inputTextTokenCount": 3}),
    (TITAN, {"embedding": []}),
    (COHERE, {"embeddings": {"float": [[0.5]]}, "response_type": "embeddings_by_type"}),
    (COHERE, {"embeddings": [["x"]]}),
    (COHERE, "not json"),
])
def test_an_answer_without_vectors_is_a_server_error(model: str, answer: Any) -> None:
    body = answer.encode() if isinstance(answer, str) else orjson.dumps(answer)
    with pytest.raises(UpstreamError) as raised:
        PROVIDER.embeddings_response(body, {"input": "a"}, target(model))
    assert (raised.value.kind, raised.value.status) == (FailureKind.SERVER_ERROR, 502)


def test_an_answer_with_a_vector_short_is_a_server_error() -> None:
    with pytest.raises(UpstreamError) as raised:
        PROVIDER.embeddings_response(orjson.dumps(COHERE_ANSWER), {"input": ["a", "b", "c"]}, target(COHERE))
    assert (raised.value.kind, raised.value.status) == (FailureKind.SERVER_ERROR, 502)
    assert "2 embeddings for 3 texts" in raised.value.message
