"""Claude's signed thinking, carried through the dialects that have no place for it.

With extended thinking, Claude answers a tool call after a `thinking` block (its text and a
`signature`) or a `redacted_thinking` block (opaque `data`), and refuses the next step of the tool
loop unless the assistant turn sends those blocks back first, unchanged. Chat completions and the
Responses API have no such blocks, so the sidecar carries them in two extensions:

- chat completions: `thinking_blocks` on the assistant message, as LiteLLM names it: a list of
  `{"type": "thinking", "thinking", "signature"}` and `{"type": "redacted_thinking", "data"}`; a
  stream sends them as fragments with an `index` (one per block, as tool calls have), whose
  `thinking` pieces are joined and whose `signature` or `data` comes whole;
- the Responses API: a reasoning item's `encrypted_content`, a token of our own
  (`TOKEN_PREFIX` + base64url of the JSON `{"provider", "blocks"}`) that OpenAI's own tokens never
  look like, so each goes only where it can be read.

Only Claude can use the blocks, and only the account that signed them: other providers are sent
none, and a Claude that refuses another account's signatures is asked again without them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from llmroute_proxy.errors import BadRequest

JSON = dict[str, Any]

FIELD = "thinking_blocks"
"""The member of an assistant message (and of a stream's delta) that carries the blocks."""
TOKEN_PREFIX = "llmroute.thinking.v1:"
"""How a reasoning item's `encrypted_content` made by the sidecar begins."""
_SIGNED_MEMBER = {"thinking": "signature", "redacted_thinking": "data"}
"""Each block type and the member Claude signs it with."""
_SIGNATURE_REFUSALS = ("Invalid `signature` in `thinking` block", "Invalid `data` in `redacted_thinking` block",
                       ".signature: Field required")
"""What Claude's 400 says when it does not take a block's signature back (another account signed it)."""


def checked_blocks(value: Any, path: str) -> list[JSON]:
    """The blocks of a `thinking_blocks` value, each with only its own members; `BadRequest` naming
    the member at fault (`messages[1].thinking_blocks[0].signature`) when one is not as Claude wrote it."""
    if not isinstance(value, list):
        raise BadRequest(f"{path} must be an array of thinking blocks.", param=path)
    return [_checked_block(block, f"{path}[{k}]") for k, block in enumerate(value)]


def _checked_block(block: Any, path: str) -> JSON:
    kind = block.get("type") if isinstance(block, dict) else None
    signed = _SIGNED_MEMBER.get(kind) if isinstance(kind, str) else None
    if signed is None:
        raise BadRequest(f"{path}.type must be thinking or redacted_thinking.", param=f"{path}.type")
    if kind == "thinking" and not isinstance(block.get("thinking"), str):
        raise BadRequest(f"{path}.thinking must be a string.", param=f"{path}.thinking")
    if not isinstance(block.get(signed), str) or not block[signed]:
        raise BadRequest(f"{path}.{signed} must be the non-empty string Claude sent: a block is sent back "
                         "unchanged.", param=f"{path}.{signed}")
    if kind == "thinking":
        return {"type": kind, "thinking": block["thinking"], "signature": block["signature"]}
    return {"type": kind, "data": block["data"]}


def well_formed(blocks: Iterable[Any]) -> list[JSON]:
    """The blocks that are as Claude writes them, each with only its own members; the others left out."""
    out: list[JSON] = []
    for block in blocks:
        try:
            out.append(_checked_block(block, "block"))
        except BadRequest:
            continue
    return out


def check_messages(body: JSON) -> JSON:
    """A (validated) chat request whose assistant messages' `thinking_blocks` are checked: only
    assistant messages carry them. The body itself is returned."""
    for i, message in enumerate(body["messages"]):
        if FIELD in message and message[FIELD] is not None:
            path = f"messages[{i}].{FIELD}"
            if message.get("role") != "assistant":
                raise BadRequest(f"{path}: only assistant messages carry thinking blocks.", param=path)
            checked_blocks(message[FIELD], path)
    return body


def unsigned(body: JSON) -> JSON:
    """The chat request without thinking blocks (for a provider that cannot take them, or a Claude that
    refused them); the body itself when it has none."""
    messages = body.get("messages")
    if type(messages) is not list:
        return body
    for message in messages:  # every request to OpenAI passes here: a loop, not any() over a generator
        if type(message) is dict and FIELD in message:
            break
    else:
        return body
    kept = [{k: v for k, v in m.items() if k != FIELD} if isinstance(m, dict) else m for m in messages]
    return {**body, "messages": kept}


def refuses_signature(message: str) -> bool:
    """Whether Claude's 400 refused a thinking block's signature (not the request's own shape)."""
    return any(refusal in message for refusal in _SIGNATURE_REFUSALS)


# ---- streams ---------------------------------------------------------------------------


def fragment(index: int, kind: str, **members: str) -> JSON:
    """One streamed piece of the block at `index`: part of its `thinking`, or its whole `signature`/`data`."""
    return {"index": index, "type": kind, **members}


class BlockCollector:
    """The blocks a stream's `thinking_blocks` fragments make, in the order of their indexes."""

    __slots__ = ("_blocks",)

    def __init__(self) -> None:
        self._blocks: dict[int, JSON] = {}

    def add(self, fragments: Any) -> None:
        for piece in fragments if isinstance(fragments, list) else ():
            if not isinstance(piece, dict) or not isinstance(piece.get("index"), int):
                continue
            block = self._blocks.setdefault(piece["index"], {"type": piece.get("type") or "thinking"})
            if isinstance(piece.get("thinking"), str):
                block["thinking"] = block.get("thinking", "") + piece["thinking"]
            for name in ("signature", "data"):
                if isinstance(piece.get(name), str):
                    block[name] = piece[name]

    def blocks(self) -> list[JSON]:
        return [self._blocks[index] for index in sorted(self._blocks)]


# ---- Responses tokens --------------------------------------------------------------------


def token(provider: str, blocks: Sequence[JSON]) -> str:
    """A reasoning item's `encrypted_content` for Claude's blocks (`provider`: the one that answered)."""
    payload = orjson.dumps({"provider": provider, "blocks": list(blocks)})
    return TOKEN_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def read_token(value: Any, path: str) -> list[JSON] | None:
    """The blocks a reasoning item's `encrypted_content` carries, or None when the sidecar did not make it
    (OpenAI's own); `BadRequest` naming `path` when it has our prefix but is not a token we made."""
    if not isinstance(value, str) or not value.startswith(TOKEN_PREFIX):
        return None
    encoded = value[len(TOKEN_PREFIX):]
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):
        payload = None
    blocks = payload.get("blocks") if isinstance(payload, dict) else None
    try:
        return checked_blocks(blocks, "blocks")
    except BadRequest as bad:
        raise BadRequest(f"{path} is not an encrypted_content llmroute made ({bad.message} It is sent back as "
                         "it came).", param=path, code="invalid_encrypted_content") from None
