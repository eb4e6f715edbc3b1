"""Claude's signed thinking blocks outside Claude's API: their shapes, stream fragments and Responses tokens."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from llmroute_proxy.dialects.thinking import (
    TOKEN_PREFIX,
    BlockCollector,
    check_messages,
    checked_blocks,
    fragment,
    read_token,
    refuses_signature,
    token,
    unsigned,
    well_formed,
)
from llmroute_proxy.errors import BadRequest

THOUGHT = {"type": "thinking", "thinking": "Paris, then.", "signature": "EqSig"}
REDACTED = {"type": "redacted_thinking", "data": "EmwData"}


def assistant(**members: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": None, **members}


def test_blocks_keep_only_their_own_members() -> None:
    assert checked_blocks([{**THOUGHT, "cache_control": {"type": "ephemeral"}}, REDACTED], "x") == [THOUGHT, REDACTED]


@pytest.mark.parametrize(("blocks", "param"), [
    ({"type": "thinking"}, "messages[1].thinking_blocks"),
    ([{"type": "text", "text": "hi"}], "messages[1].thinking_blocks[0].type"),
    (["thinking"], "messages[1].thinking_blocks[0].type"),
    ([REDACTED, {"type": "thinking", "thinking": "hm"}], "messages[1].thinking_blocks[1].signature"),
    ([{"type": "thinking", "thinking": "hm", "signature": ""}], "messages[1].thinking_blocks[0].signature"),
    ([{"type": "thinking", "signature": "EqSig"}], "messages[1].thinking_blocks[0].thinking"),
    ([{"type": "redacted_thinking", "data": 7}], "messages[1].thinking_blocks[0].data"),
])
def test_a_malformed_block_sent_back_is_refused_naming_its_member(blocks: Any, param: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}, assistant(thinking_blocks=blocks)]}
    with pytest.raises(BadRequest) as refused:
        check_messages(body)
    assert refused.value.param == param and param in refused.value.message


def test_only_assistant_messages_carry_blocks() -> None:
    with pytest.raises(BadRequest) as refused:
        check_messages({"messages": [{"role": "user", "content": "hi", "thinking_blocks": [THOUGHT]}]})
    assert refused.value.param == "messages[0].thinking_blocks"


def test_well_formed_blocks_pass_and_null_means_none() -> None:
    body = {"messages": [assistant(thinking_blocks=[THOUGHT, REDACTED]), assistant(thinking_blocks=None)]}
    assert check_messages(body) is body


def test_well_formed_leaves_out_what_claude_did_not_write_whole() -> None:
    assert well_formed([THOUGHT, {"type": "thinking", "thinking": "cut"}, REDACTED]) == [THOUGHT, REDACTED]


def test_unsigned_drops_the_blocks_and_leaves_a_body_without_any_as_it_is() -> None:
    plain = {"model": "m", "messages": [{"role": "user", "content": "hi"}, assistant()]}
    assert unsigned(plain) is plain
    signed = {"model": "m", "messages": [{"role": "user", "content": "hi"}, assistant(thinking_blocks=[THOUGHT])]}
    assert unsigned(signed) == plain and signed["messages"][1]["thinking_blocks"] == [THOUGHT]


def test_stream_fragments_make_the_blocks_by_index() -> None:
    collector = BlockCollector()
    collector.add([fragment(0, "thinking", thinking="Paris, ")])
    collector.add([fragment(1, "redacted_thinking", data="EmwData")])
    collector.add([fragment(0, "thinking", thinking="then.")])
    collector.add([fragment(0, "thinking", signature="EqSig")])
    collector.add("not fragments")
    assert collector.blocks() == [THOUGHT, REDACTED]


def test_a_token_carries_the_blocks_and_reads_back() -> None:
    made = token("claude-a", [THOUGHT, REDACTED])
    assert made.startswith(TOKEN_PREFIX) and "=" not in made
    assert read_token(made, "input[0].encrypted_content") == [THOUGHT, REDACTED]


@pytest.mark.parametrize("value", [None, "", "gAAAAABoOpenAIsOwnEncryptedReasoning==", 42])
def test_a_token_without_our_prefix_is_not_ours(value: Any) -> None:
    assert read_token(value, "input[0].encrypted_content") is None


@pytest.mark.parametrize("rest", ["", "not base64!", base64.urlsafe_b64encode(b"[1, 2]").decode(),
                                  base64.urlsafe_b64encode(b'{"blocks": [{"type": "thinking"}]}').decode(),
                                  base64.urlsafe_b64encode(b"\xff\xfe").decode()])
def test_a_malformed_token_of_ours_is_refused_naming_where_it_was(rest: str) -> None:
    with pytest.raises(BadRequest) as refused:
        read_token(TOKEN_PREFIX + rest, "input[3].encrypted_content")
    assert refused.value.param == "input[3].encrypted_content" and refused.value.code == "invalid_encrypted_content"


@pytest.mark.parametrize(("message", "refused"), [
    ("messages.1.content.0: Invalid `signature` in `thinking` block", True),
    ("messages.3.content.0: Invalid `data` in `redacted_thinking` block", True),
    ("messages.1.content.0.thinking.signature: Field required", True),
    ("messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`.", False),
    ("max_tokens: Field required", False),
])
def test_claudes_refusal_of_a_signature_is_told_from_other_400s(message: str, refused: bool) -> None:
    assert refuses_signature(message) is refused
