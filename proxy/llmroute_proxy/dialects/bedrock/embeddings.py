"""OpenAI embeddings ↔ the InvokeModel bodies of Bedrock's text-embedding models (providers.md §2.7).

Each family has its own body. Titan Text Embeddings v2 (`amazon.titan-embed-text-v2:0`) takes one text,
`{"inputText", "dimensions", "normalize"}`, and answers `{"embedding", "inputTextTokenCount"}`; Titan v1
(`amazon.titan-embed-text-v1`) takes only `inputText` and answers 1536 dimensions in the same shape.
Cohere Embed v3 (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`) takes up to 96 texts,
`{"texts", "input_type", "truncate"}`, and answers `{"embeddings": [[…]], "id", "response_type", "texts"}`
with no token count: the dispatch estimates one, as for Gemini's embeddings.

One attempt is one upstream call, so what a model cannot take in one (several texts for Titan, more than
96 for Cohere), or a `dimensions` it cannot give, is refused here naming the field: the target is passed
over for the tier's next one, which may take it whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.dialects.common import body_excerpt, loads_object
from llmroute_proxy.dialects.embeddings import embedding_texts, embeddings_list
from llmroute_proxy.errors import BadRequest, FailureKind, UpstreamError

COHERE_MAX_TEXTS = 96
TITAN_V2_DIMENSIONS = (256, 512, 1024)
TITAN_V1_DIMENSIONS = 1536
COHERE_V3_DIMENSIONS = 1024
COHERE_INPUT_TYPE = "search_document"
"""OpenAI's request says nothing of what a text is for; a document is what most embeddings stored are."""


class EmbeddingFamily(StrEnum):
    TITAN_V2 = "titan-v2"
    TITAN_V1 = "titan-v1"
    COHERE_V3 = "cohere-v3"


_FAMILIES = (
    (re.compile(r"amazon\.titan-embed-text-v2(?::\d+)?"), EmbeddingFamily.TITAN_V2),
    (re.compile(r"amazon\.titan-embed-(?:text-v1|g1-text-02)(?::\d+)?"), EmbeddingFamily.TITAN_V1),
    (re.compile(r"cohere\.embed-(?:english|multilingual)-v3(?::\d+)?"), EmbeddingFamily.COHERE_V3),
)
_REGION = re.compile(r"[a-z]{2,6}\.")  # a cross-region inference profile's prefix


def embedding_family(model: str) -> EmbeddingFamily | None:
    """The family of a Bedrock text-embedding model id; None for any other model (chat, image embeddings,
    Cohere Embed v4, an ARN the id of which says nothing)."""
    for pattern, family in _FAMILIES:
        if pattern.fullmatch(model) or (_REGION.match(model) and pattern.fullmatch(model.split(".", 1)[1])):
            return family
    return None


def embeddings_body(body: Mapping[str, Any], family: EmbeddingFamily) -> dict[str, Any]:
    """The InvokeModel body for `family`; `BadRequest` naming `input` or `dimensions` for what it cannot take."""
    texts = embedding_texts(body, "Bedrock")
    dimensions = body.get("dimensions")
    if family is EmbeddingFamily.COHERE_V3:
        if len(texts) > COHERE_MAX_TEXTS:
            raise BadRequest(f"'input' has {len(texts)} texts; Cohere Embed on Bedrock takes at most "
                             f"{COHERE_MAX_TEXTS} in one request.", param="input")
        _fixed_dimensions(dimensions, COHERE_V3_DIMENSIONS, "Cohere Embed v3")
        return {"texts": texts, "input_type": COHERE_INPUT_TYPE, "truncate": "NONE"}
    if len(texts) > 1:
        raise BadRequest(f"'input' has {len(texts)} texts; Titan Text Embeddings on Bedrock embeds one text "
                         "per request.", param="input")
    if family is EmbeddingFamily.TITAN_V1:
        _fixed_dimensions(dimensions, TITAN_V1_DIMENSIONS, "Titan Text Embeddings v1")
        return {"inputText": texts[0]}
    sent: dict[str, Any] = {"inputText": texts[0], "normalize": True}  # OpenAI's vectors have length 1
    if dimensions is not None:
        if dimensions not in TITAN_V2_DIMENSIONS:
            raise BadRequest(f"'dimensions' must be one of {', '.join(map(str, TITAN_V2_DIMENSIONS))} for Titan "
                             f"Text Embeddings v2; got {dimensions!r}.", param="dimensions")
        sent["dimensions"] = dimensions
    return sent


def _fixed_dimensions(dimensions: Any, size: int, name: str) -> None:
    if dimensions is not None and dimensions != size:
        raise BadRequest(f"'dimensions' must be {size} for {name} (its only size); got {dimensions!r}.",
                         param="dimensions")


def translate_embeddings(body: bytes, request_body: Mapping[str, Any], family: EmbeddingFamily,
                         model: str) -> tuple[dict[str, Any], Usage]:
    """OpenAI's list from a 2xx InvokeModel answer; zero usage for Cohere's, which counts nothing."""
    answer = loads_object(body) or {}
    if family is EmbeddingFamily.COHERE_V3:
        vectors = answer.get("embeddings")
        tokens = 0
    else:
        vector = answer.get("embedding")
        vectors = [vector] if isinstance(vector, list) else None
        count = answer.get("inputTextTokenCount")
        tokens = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0
    if not (isinstance(vectors, list) and vectors and all(_floats(v) for v in vectors)):
        raise UpstreamError(FailureKind.SERVER_ERROR, f"Bedrock's embeddings answer holds no vectors: "
                                                      f"{body_excerpt(body)}", status=502)
    texts = request_body.get("input")
    asked = len(texts) if isinstance(texts, list) else 1
    if len(vectors) != asked:  # a vector short would put every later one at the wrong index
        raise UpstreamError(FailureKind.SERVER_ERROR, f"Bedrock answered {len(vectors)} embeddings for {asked} "
                                                      "texts", status=502)
    return embeddings_list(vectors, request_body, model, tokens), Usage(input_tokens=tokens)


def _floats(vector: Any) -> bool:
    return isinstance(vector, list) and bool(vector) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in vector)
