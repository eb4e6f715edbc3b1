"""The Responses store: bounded by memory and time, and a 404 that says why."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmroute_proxy.cli import parser, settings
from llmroute_proxy.server.response_store import ENTRY_OVERHEAD_BYTES, ResponseNotFound, ResponseStore

CONVERSATION = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def put(store: ResponseStore, response_id: str, conversation: list[dict[str, Any]], now: float,
        padding: int = 0) -> bool:
    body = orjson.dumps({"id": response_id, "object": "response", "output": [], "pad": "x" * padding})
    return store.put(response_id, body, conversation, now)


def test_a_stored_response_is_read_back_and_continued() -> None:
    store = ResponseStore(1 << 20, ttl_s=60)
    assert put(store, "resp_1", CONVERSATION, now=0)
    assert store.response("resp_1", now=59).startswith(b'{"id":"resp_1"')
    assert store.conversation("resp_1", now=59) == CONVERSATION


def test_an_expired_response_is_a_404_that_says_it_expired() -> None:
    store = ResponseStore(1 << 20, ttl_s=60)
    put(store, "resp_1", CONVERSATION, now=0)
    with pytest.raises(ResponseNotFound) as gone:
        store.conversation("resp_1", now=60)
    assert gone.value.status == 404 and gone.value.param == "previous_response_id"
    assert "expired (60s after it was created)" in gone.value.message
    assert store.status(now=60)["entries"] == 0 and store.bytes == 0 and store.expired == 1


def test_the_memory_cap_evicts_the_oldest_first_and_says_so() -> None:
    empty = len(b"[]")  # the conversation and the input items
    one = len(b'{"id":"resp_0","object":"response","output":[],"pad":""}') + 1000 + 2 * empty + ENTRY_OVERHEAD_BYTES
    store = ResponseStore(max_bytes=3 * one, ttl_s=60)
    for i in range(5):
        put(store, f"resp_{i}", [], now=i, padding=1000)
        assert store.bytes <= store.max_bytes
    assert store.status(now=5)["entries"] == 3 and store.evicted == 2
    with pytest.raises(ResponseNotFound, match="evicted to keep the response store within its memory cap"):
        store.response("resp_1", now=5)
    assert store.response("resp_4", now=5)


def test_a_response_larger_than_the_store_is_not_kept() -> None:
    store = ResponseStore(max_bytes=1000, ttl_s=60)
    assert not put(store, "resp_big", [], now=0, padding=2000)
    assert store.too_large == 1 and store.bytes == 0
    with pytest.raises(ResponseNotFound, match="larger than the whole response store"):
        store.response("resp_big", now=0)


def test_a_zero_cap_keeps_nothing() -> None:
    store = ResponseStore(max_bytes=0, ttl_s=60)
    assert not put(store, "resp_1", CONVERSATION, now=0)
    assert store.status(now=0)["entries"] == 0


def test_deleted_and_never_stored_ids_are_told_apart() -> None:
    store = ResponseStore(1 << 20, ttl_s=60)
    put(store, "resp_1", CONVERSATION, now=0)
    store.delete("resp_1", now=1)
    assert store.bytes == 0
    with pytest.raises(ResponseNotFound, match="it was deleted"):
        store.response("resp_1", now=1)
    with pytest.raises(ResponseNotFound, match=r"never stored it .*store: false.*restarted"):
        store.response("resp_other", now=1)


def test_the_cap_and_ttl_come_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parser().parse_args(["serve", "--responses-store-bytes", "1000", "--responses-ttl-seconds", "5"])
    assert (settings(args).responses_store_bytes, settings(args).responses_ttl_s) == (1000, 5.0)
    monkeypatch.setenv("LLMROUTE_RESPONSES_STORE_BYTES", "2000")
    monkeypatch.setenv("LLMROUTE_RESPONSES_TTL_SECONDS", "7.5")
    args = parser().parse_args(["serve"])
    assert (settings(args).responses_store_bytes, settings(args).responses_ttl_s) == (2000, 7.5)
