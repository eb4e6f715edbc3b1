"""A translated Responses request is checked as any chat completion request (`validate_chat`), except a
plain first turn, which `ResponsesTurn.checked` passes as the Responses checks left it: for such turns
that must accept and refuse exactly what `validate_chat` accepts and refuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmroute_proxy.dialects.responses import request_in
from llmroute_proxy.dialects.responses.request_in import ResponsesTurn, read_turn
from llmroute_proxy.errors import BadRequest
from llmroute_proxy.validation import validate_chat
from tests.proxy.fuzz.strategies import FUZZ, SCALARS, mutated, responses_requests

ODD = SCALARS | st.sampled_from([16, 15, 1, 2**31, 0.5, 2.5, True, "", "m", [], {}])
"""Any value of a plain field, inside and outside what both checks take."""


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` seven times in eight, else anything: most bodies pass the Responses checks."""
    return st.integers(0, 7).flatmap(lambda draw: valid if draw else ODD)


messages = st.fixed_dictionaries(
    {"role": mostly(st.sampled_from(["user", "system", "developer", "assistant"])),
     "content": mostly(st.text(max_size=4) | st.just([{"type": "input_text", "text": "t"}]))},
    optional={"type": mostly(st.just("message")), "id": mostly(st.just("msg_1")), "status": ODD})
plain_bodies = st.fixed_dictionaries(
    {"model": mostly(st.just("m")), "input": mostly(st.text(max_size=4) | st.lists(messages, min_size=1, max_size=3))},
    optional={"instructions": mostly(st.text(max_size=4)), "max_output_tokens": mostly(st.integers(1, 2**40)),
              "temperature": mostly(st.floats(-0.5, 2.5)), "top_p": mostly(st.floats(-0.5, 1.5)),
              "user": mostly(st.text(max_size=4)), "safety_identifier": mostly(st.text(max_size=4)),
              "prompt_cache_key": mostly(st.text(max_size=4)), "stream": mostly(st.booleans()),
              "stream_options": mostly(st.just({"include_usage": True})), "store": mostly(st.booleans()),
              "metadata": mostly(st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))})


def validated(turn: ResponsesTurn) -> tuple[str, Any]:
    try:
        return "accepted", validate_chat(turn.canonical)
    except BadRequest as refused:
        return "refused", (refused.message, refused.param)


def checked(turn: ResponsesTurn) -> tuple[str, Any]:
    try:
        return "accepted", turn.checked()
    except BadRequest as refused:
        return "refused", (refused.message, refused.param)


def turn_of(body: Any) -> ResponsesTurn | None:
    try:
        return read_turn(body)
    except BadRequest:
        return None  # refused by the Responses checks: never checked as a chat request


@FUZZ
@given(st.one_of(plain_bodies, mutated({"model": "m", "input": "hi", "max_output_tokens": 32, "stream": True}),
                 responses_requests))
def test_a_turn_is_checked_as_validate_chat_checks_its_canonical_request(body: Any) -> None:
    turn = turn_of(body)
    if turn is not None:
        assert checked(turn) == validated(turn)


@pytest.mark.parametrize("body", [
    {"model": "m", "input": "hi"},
    {"model": "m", "input": "hi", "instructions": "be brief", "max_output_tokens": 32, "stream": True,
     "temperature": 0.5, "top_p": 1, "user": "u", "store": False, "metadata": {"k": "v"}},
    {"model": "m", "input": [{"role": "user", "content": "hi"}, {"type": "message", "role": "assistant", "content": "yo"},
                             {"role": "developer", "content": "be nice"}]},
    {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]},  # one text part
])
def test_a_plain_first_turn_is_not_checked_twice(body: dict[str, Any]) -> None:
    turn = read_turn(body)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(request_in, "validate_chat", lambda _: pytest.fail("checked twice"))
        assert turn.checked() is turn.canonical


@pytest.mark.parametrize("body", [
    {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                                           {"type": "input_image", "image_url": "https://i/x.png"}]}]},
    {"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f"}]},
    {"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}}},
    {"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "42"}]},
    {"model": "m", "input": "hi", "conversation": "c"},  # OpenAI's only: its canonical form is a summary
])
def test_any_other_turn_is_checked_as_a_chat_request(body: dict[str, Any]) -> None:
    turn = read_turn(body)
    calls: list[Any] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(request_in, "validate_chat", lambda canonical: calls.append(canonical) or canonical)
        turn.checked()
    assert calls == [turn.canonical]


def test_a_later_turn_is_checked_as_a_chat_request() -> None:
    turn = read_turn({"model": "m", "input": "and then?"}, [{"type": "message", "role": "user", "content": "hi"}])
    calls: list[Any] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(request_in, "validate_chat", lambda canonical: calls.append(canonical) or canonical)
        turn.checked()
    assert calls == [turn.canonical]
