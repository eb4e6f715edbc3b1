"""What every provider that embeds through its own API shares: the texts an OpenAI embeddings request
holds, and the OpenAI list its vectors become (floats, or base64 as `encoding_format: base64` asks).

OpenAI's base64 is the vector as little-endian float32s, which the official SDK decodes with
`numpy.frombuffer(…, dtype="float32")`: a provider that answers floats is encoded here, the same way for all.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from llmroute_proxy.errors import BadRequest


def embedding_texts(body: Mapping[str, Any], provider: str) -> list[str]:
    """The texts of `input` (one string or an array of them); token ids, which only OpenAI's own API
    reads, are refused naming `input`, as is an `encoding_format` other than float or base64."""
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest(f"'input' must be a string or an array of strings for {provider} targets "
                         "(token-id input is not supported).", param="input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    return texts


def embeddings_list(vectors: Sequence[Sequence[float]], request_body: Mapping[str, Any], model: str,
                    prompt_tokens: int) -> dict[str, Any]:
    """OpenAI's answer to an embeddings request: one item per vector, in the order of the inputs."""
    as_base64 = request_body.get("encoding_format") == "base64"
    data = [{"object": "embedding", "index": i, "embedding": base64_floats(vector) if as_base64 else list(vector)}
            for i, vector in enumerate(vectors)]
    return {"object": "list", "model": model, "data": data,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def base64_floats(values: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
