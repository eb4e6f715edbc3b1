"""The simulators' deterministic answers: the text they reply, how it is split for streaming,
tool-call arguments and embedding vectors, all derived from the request alone (pure).

Nothing here may import `llmroute_proxy.server`: the simulators stand in for the outside world.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

# --- deterministic answers (pure) -------------------------------------------------------------

def count_tokens(text: str) -> int:
    """The simulators' tokenizer: words × 1.3, rounded, at least 1."""
    return max(1, round(len(text.split()) * 1.3))


LONG_ANSWER_FILLER = " — ünïcödé 日本語 🚀 long answer"
"""What pads a long answer: characters of one to four UTF-8 bytes, so cuts fall inside them."""


def reply_text(name: str, model: str, said: str, min_bytes: int = 0) -> str:
    """The answer to `said`, padded to at least `min_bytes` UTF-8 bytes (a long answer)."""
    text = f"[{name} {model}] You said: {said[:60]}"
    missing = min_bytes - len(text.encode())
    if missing <= 0:
        return text
    filler = LONG_ANSWER_FILLER.encode()
    return text + LONG_ANSWER_FILLER * -(-missing // len(filler))


def choice_text(text: str, index: int) -> str:
    """Choice `index` of several asked at once (OpenAI's `n`, Gemini's `candidateCount`): the first is the
    usual answer, each other one says which it is, so a client or translator that mixes choices up shows it."""
    return text if index == 0 else f"(choice {index + 1}) {text}"


def tool_reply_text(name: str, model: str, result: str) -> str:
    return f"[{name} {model}] Tool said: {result[:60]}"


def fit_tokens(text: str, limit: int | None) -> tuple[str, bool]:
    """Cut `text` on a word boundary to at most `limit` tokens; True when it was cut."""
    if limit is None or count_tokens(text) <= limit:
        return text, False
    words = text.split(" ")
    fits, too_many = 1, len(words)  # the most words that fit lies in [fits, too_many)
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        if count_tokens(" ".join(words[:middle])) <= limit:
            fits = middle
        else:
            too_many = middle
    return " ".join(words[:fits]), True


def split_words(text: str, count: int) -> list[str]:
    """Split on spaces into at most `count` pieces that concatenate back to `text`."""
    words = text.split(" ")
    count = max(1, min(count, len(words)))
    base, extra = divmod(len(words), count)
    pieces: list[str] = []
    start = 0
    for index in range(count):
        end = start + base + (1 if index < extra else 0)
        pieces.append(" ".join(words[start:end]) + (" " if end < len(words) else ""))
        start = end
    return pieces


def split_even(text: str, count: int) -> list[str]:
    """Split into at most `count` contiguous pieces of near-equal length (tool-argument fragments)."""
    if not text:
        return [""]
    count = max(1, min(count, len(text)))
    size = -(-len(text) // count)
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


_TOKEN = re.compile(r"\S+\s*|\s+")

ALTERNATIVE_TOKENS = (" the", " a", ",", ".", " and", " of", " to", " in", " is", " it", " that", " for", " on",
                      " with", " as", " at", " by", " this", " be", " or", " an")
"""The tokens a model might have said instead, least likely last (at least 20 besides any one token)."""


def logprob_tokens(text: str) -> list[str]:
    """The tokens log probabilities are given for: each word with the spaces after it, so they join back to
    `text` and a text split by `split_words` splits into the same tokens piece by piece."""
    return _TOKEN.findall(text)


def token_logprob(model: str, token: str, position: int) -> float:
    """The log probability of the token said at `position`: between -0.5 and 0, from a hash (deterministic)."""
    digest = hashlib.sha256(f"{model}\0{position}\0{token}".encode()).digest()
    return -round(int.from_bytes(digest[:4], "little") % 5000 / 10000, 4)


def top_alternatives(token: str, logprob: float, count: int) -> list[tuple[str, float]]:
    """The `count` most likely tokens at a position, most likely first: the one said, then alternatives each
    less likely than the last."""
    others = (t for t in ALTERNATIVE_TOKENS if t != token)
    ranked = [(token, logprob), *((other, round(logprob - 1.5 * (k + 1), 4)) for k, other in enumerate(others))]
    return ranked[:count]


def structured_reply(schema: Any, text: str) -> str:
    """The answer as JSON, as a real model gives it under a response schema (every required property
    filled in, as for tool arguments) or in JSON mode (`schema` None: the text under "answer")."""
    if isinstance(schema, Mapping):
        return orjson.dumps(tool_arguments(schema)).decode()
    return orjson.dumps({"answer": text}).decode()


def tool_arguments(schema: Any) -> dict[str, Any]:
    """Arguments for a tool call: every required property, strings "sim", numbers 1, booleans true."""
    if not isinstance(schema, Mapping):
        return {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    if not isinstance(required, list):
        return {}
    return {name: _sample_value(properties.get(name)) for name in required if isinstance(name, str)}


def _sample_value(schema: Any) -> Any:
    if not isinstance(schema, Mapping):
        return "sim"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), "string")
    kind = kind.lower() if isinstance(kind, str) else "string"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return tool_arguments(schema)
    return "sim"


def embedding_vector(model: str, text: str, dims: int) -> list[float]:
    """A unit vector derived from a hash of (model, text): equal inputs, equal vectors."""
    seed = hashlib.sha256(f"{model}\0{text}".encode()).digest()
    raw: list[float] = []
    block = 0
    while len(raw) < dims:
        digest = hashlib.sha256(seed + block.to_bytes(4, "little")).digest()
        raw.extend((byte - 127.5) / 127.5 for byte in digest)
        block += 1
    raw = raw[:dims]
    norm = sum(value * value for value in raw) ** 0.5 or 1.0
    return [value / norm for value in raw]
