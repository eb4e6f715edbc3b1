"""The simulated Bedrock runtime's text-embedding models through InvokeModel, `/model/{modelId}/invoke`, in
AWS's documented bodies: Titan Text Embeddings v2 (`{"inputText", "dimensions", "normalize",
"embeddingTypes"}` → `{"embedding", "inputTextTokenCount", "embeddingsByType"}`), Titan v1 (`inputText` only,
1536 dimensions) and Cohere Embed v3 (`{"texts", "input_type", "truncate"}`, at most 96 texts →
`{"embeddings", "id", "response_type": "embeddings_floats", "texts"}`, no token count in the body).

Vectors are deterministic unit vectors of (model, text), as the other simulators' are. A body the model's
schema refuses is a `ValidationException` in Bedrock's "Malformed input request" words; every answer
carries the input token count in `X-Amzn-Bedrock-Input-Token-Count`, as InvokeModel's do (the `no_usage`
fault leaves Titan's count out of the body).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from aiohttp import web

from llmroute_proxy.sim.answers import count_tokens, embedding_vector
from llmroute_proxy.sim.faults import FaultKind
from llmroute_proxy.sim.runtime import SimCall

TITAN_V2 = re.compile(r"amazon\.titan-embed-text-v2(?::\d+)?")
TITAN_V1 = re.compile(r"amazon\.titan-embed-(?:text-v1|g1-text-02)(?::\d+)?")
COHERE_V3 = re.compile(r"(?:[a-z]{2,6}\.)?cohere\.embed-(?:english|multilingual)-v3(?::\d+)?")
TITAN_V2_DIMENSIONS = (256, 512, 1024)
COHERE_MAX_TEXTS = 96
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
_TITAN_V2_KEYS = frozenset({"inputText", "dimensions", "normalize", "embeddingTypes"})
_COHERE_KEYS = frozenset({"texts", "input_type", "truncate", "embedding_types", "images"})
TOKEN_COUNT_HEADER = "X-Amzn-Bedrock-Input-Token-Count"


def embedding_model(model_id: str) -> bool:
    return any(pattern.fullmatch(model_id) for pattern in (TITAN_V2, TITAN_V1, COHERE_V3))


def malformed(problem: str) -> str:
    return f"Malformed input request: {problem}, please reformat your input and try again."


def embed(call: SimCall, model_id: str) -> web.Response:
    body = call.body
    if not isinstance(body, dict):
        return _invalid(call, "Malformed input request, please reformat your input and try again.")
    if COHERE_V3.fullmatch(model_id):
        return _cohere(call, model_id, body)
    return _titan(call, model_id, body, v2=TITAN_V2.fullmatch(model_id) is not None)


def _titan(call: SimCall, model_id: str, body: dict[str, Any], v2: bool) -> web.Response:
    allowed = _TITAN_V2_KEYS if v2 else frozenset({"inputText"})
    problem = _extraneous(body, allowed) or _required(body, "inputText")
    text = body.get("inputText")
    dims = body.get("dimensions", 1024) if v2 else 1536
    if problem is None and not isinstance(text, str):
        problem = "#/inputText: expected type: String, found: " + type(text).__name__
    if problem is None and v2 and dims not in TITAN_V2_DIMENSIONS:
        problem = f"#/dimensions: {dims} is not a valid enum value"
    if problem is not None:
        return _invalid(call, malformed(problem))
    assert isinstance(text, str)
    vector = embedding_vector(model_id, text, dims)
    tokens = count_tokens(text)
    answer: dict[str, Any] = {"embedding": vector}
    if call.fault is None or call.fault.kind is not FaultKind.NO_USAGE:
        answer["inputTextTokenCount"] = tokens
    if v2:
        answer["embeddingsByType"] = {"float": vector}
    return call.state.json(answer, headers={TOKEN_COUNT_HEADER: str(tokens)})


def _cohere(call: SimCall, model_id: str, body: dict[str, Any]) -> web.Response:
    texts = body.get("texts")
    problem = _extraneous(body, _COHERE_KEYS) or _required(body, "texts") or _required(body, "input_type")
    if problem is None and not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
        problem = "#/texts: expected type: JSONArray of String"
    if problem is None and isinstance(texts, list) and len(texts) > COHERE_MAX_TEXTS:
        problem = f"#/texts: expected maximum item count: {COHERE_MAX_TEXTS}, found: {len(texts)}"
    if problem is None and body["input_type"] not in COHERE_INPUT_TYPES:
        problem = f"#/input_type: {body['input_type']} is not a valid enum value"
    if problem is not None:
        return _invalid(call, malformed(problem))
    assert isinstance(texts, list)
    seed = hashlib.sha256("\0".join([model_id, *texts]).encode()).digest()
    answer = {"embeddings": [embedding_vector(model_id, text, 1024) for text in texts],
              "id": str(uuid.UUID(bytes=seed[:16])), "response_type": "embeddings_floats", "texts": texts}
    tokens = sum(count_tokens(text) for text in texts)
    return call.state.json(answer, headers={TOKEN_COUNT_HEADER: str(tokens)})


def _extraneous(body: dict[str, Any], allowed: frozenset[str]) -> str | None:
    extra = next((name for name in body if name not in allowed), None)
    return None if extra is None else f"#: extraneous key [{extra}] is not permitted"


def _required(body: dict[str, Any], name: str) -> str | None:
    return None if name in body else f"#: required key [{name}] not found"


def _invalid(call: SimCall, message: str) -> web.Response:
    return call.state.json({"message": message}, 400, {"x-amzn-ErrorType": "ValidationException"})
