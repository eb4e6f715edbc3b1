"""The Responses store: bounded by memory and time, and a 404 that says why."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson
import pytest

from llmroute_proxy.cli import parser, settings
from llmroute_proxy.server.response_store import ENTRY_OVERHEAD_BYTES, ResponseNotFound, ResponseStore

CONVERSATION = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]}]


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
    one = (len(b'{"id":"resp_0","object":"response","output":[],"pad":""}') + 1000 + 2 * empty + len("resp_0")
           + ENTRY_OVERHEAD_BYTES)
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


def test_what_the_cap_counts_covers_what_an_entry_allocates() -> None:
    """orjson's bytes keep their whole growth buffer (~8 KiB for a short document): an entry kept
    that way allocated several times the bytes the cap counted, and RSS outgrew the cap."""
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi " * 20}]}]
    conversation = [*items, {"type": "message", "role": "assistant",
                             "content": [{"type": "output_text", "text": "hello " * 40}]}]
    bodies = [orjson.dumps({"id": f"resp_{i:048x}", "object": "response", "output": [], "pad": "x" * 300})
              for i in range(300)]
    store = ResponseStore(1 << 30, ttl_s=60)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i, body in enumerate(bodies):
            store.put(f"resp_{i:048x}", body, conversation, now=0, input_span=(0, 1))
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.status(now=0)["entries"] == 300
    assert allocated <= store.bytes
    assert store.bytes == sum(len(orjson.dumps({"id": f"resp_{i:048x}", "object": "response", "output": [],
                                                "pad": "x" * 300})) + len(orjson.dumps(conversation))
                              + len(f"resp_{i:048x}") + ENTRY_OVERHEAD_BYTES
                              for i in range(300))


def test_entries_expire_oldest_first_and_give_their_bytes_back() -> None:
    store = ResponseStore(1 << 20, ttl_s=60)
    put(store, "resp_old", CONVERSATION, now=0)
    put(store, "resp_new", CONVERSATION, now=30)
    one = store.bytes // 2
    assert store.status(now=59.9)["entries"] == 2
    assert store.status(now=60)["entries"] == 1 and store.bytes == one and store.expired == 1
    assert store.conversation("resp_new", now=89.9) == CONVERSATION
    with pytest.raises(ResponseNotFound, match="expired"):
        store.response("resp_old", now=60)
    assert store.status(now=90) == {"entries": 0, "bytes": 0, "max_bytes": 1 << 20, "ttl_seconds": 60,
                                    "stored": 2, "expired": 2, "evicted": 0, "too_large": 0}


def test_an_evicted_entry_gives_back_exactly_what_it_counted() -> None:
    store = ResponseStore(max_bytes=10_000, ttl_s=60)
    for i in range(50):
        put(store, f"resp_{i}", CONVERSATION * (i % 4), now=0, padding=37 * (i % 7))
        assert 0 < store.bytes <= store.max_bytes
    kept = [f"resp_{i}" for i in range(50) if f"resp_{i}" in store._entries]
    assert kept == [f"resp_{i}" for i in range(50 - len(kept), 50)]
    assert store.bytes == sum(store._entries[k].size for k in kept)
    assert store.stored == 50 and store.evicted == 50 - len(kept)
    for k in kept:
        store.delete(k, now=0)
    assert store.bytes == 0


def test_input_items_are_read_back_as_stored() -> None:
    store = ResponseStore(1 << 20, ttl_s=60)
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "héllo"}]}]
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}
    body = orjson.dumps({"id": "resp_1", "output": [answer]})
    store.put("resp_1", body, [*CONVERSATION, *items, answer], now=0, input_span=(2, 3))
    assert store.response("resp_1", now=0) == body
    assert store.conversation("resp_1", now=0) == [*CONVERSATION, *items, answer]
    assert store.input_items("resp_1", now=0) == items  # the request's own, not the earlier turns' nor the answer


def test_a_second_response_under_the_same_id_replaces_the_first_and_is_counted_once() -> None:
    """Relayed responses keep their provider's ids, and two providers could make the same one."""
    store = ResponseStore(1 << 20, ttl_s=60)
    alone = ResponseStore(1 << 20, ttl_s=60)
    put(alone, "resp_1", CONVERSATION[:1], now=1, padding=300)
    put(store, "resp_1", CONVERSATION, now=0, padding=100)
    put(store, "resp_1", CONVERSATION[:1], now=1, padding=300)
    assert store.status(now=1)["entries"] == 1
    assert store.bytes == alone.bytes  # the second entry's size alone
    assert store.conversation("resp_1", now=1) == CONVERSATION[:1]
    store.delete("resp_1", now=1)
    assert store.bytes == 0
