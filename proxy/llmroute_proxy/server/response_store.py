"""The sidecar's store of Responses: what `previous_response_id` and `GET /v1/responses/{id}`
read, bounded in memory and in time.

Each entry is the Response object as the client got it and the conversation it ends, as
Responses items (the earlier turns', the request's own input items, then the answer's output
items; `input_items` lists the request's own), serialized and kept as one bytes object of exactly
their size, decoded on read: they cannot change after the fact, and the cap counts what the entry really holds — its
bytes, its id and a measured per-entry overhead (`ENTRY_OVERHEAD_BYTES`). Not the JSON as
orjson returns it: `orjson.dumps` hands back a bytes object whose allocation is its whole
growth buffer (about 8 KiB for a 500-byte document), so keeping those let RSS grow to ten
times what the cap counted (bench/README.md, response_store.py). Entries leave in the order
they came: at their TTL, or the oldest first when a new one would pass the cap.

The store lives in this process only. A restart, or a request that lands on another sidecar,
finds nothing; the 404 then says so. A few thousand ids that left recently are remembered
(as tombstones) so that the 404 can say whether the id expired, was evicted or deleted.
Time is an argument (`now`, monotonic seconds): the store reads no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from llmroute_proxy.errors import RequestError

ENTRY_OVERHEAD_BYTES = 400
"""What an entry costs beyond its bytes and its id's characters: the entry object, its float and
ints, the bytes and str headers, the ordered dict's slot and node, and malloc's own headers.
bench/response_store.py measures it (tracemalloc and RSS per entry); keep this at or above it."""
TOMBSTONES = 4096
"""Recently gone ids remembered for the 404's reason: at most ~1 MiB, outside the cap."""


_DELETED = "it was deleted"


class ResponseNotFound(RequestError):
    """`deleted`: the client deleted it here; otherwise it was never stored here, or expired or was
    evicted, and a provider may still hold it (OpenAI's own responses, which it keeps for 30 days).
    `held_by`: the store known to hold the conversation (`Target.response_store`: a provider at one of
    its endpoints), "" when none is known."""

    status = 404
    code = "response_not_found"

    def __init__(self, response_id: str, why: str, param: str | None, held_by: str = "") -> None:
        super().__init__(f"No stored response '{response_id}': {why}.")
        self.response_id = response_id
        self.why = why
        self.param = param
        self.deleted = why == _DELETED
        self.held_by = held_by


@dataclass(slots=True)
class StoredResponse:
    """The response's JSON, then the conversation's items, in one bytes object; the request's own
    input items are the conversation's `input_from:input_to`. Never changed once stored; not frozen
    only because a frozen dataclass costs ~4× as much to build, and one is built for every response."""

    blob: bytes
    conversation_at: int
    input_from: int
    input_to: int
    expires_at: float
    size: int
    held_by: str
    """The store of the provider that keeps its own copy (it answered natively, with the client's
    `store`): `Target.response_store`, or ""."""
    remote: bool
    """The conversation it ends is held by `held_by` only: it continued an id the sidecar did not hold,
    so its items here are this turn's alone (for `input_items`), never a history to replay."""

    @property
    def response(self) -> bytes:
        return self.blob[:self.conversation_at]

    @property
    def conversation(self) -> memoryview:
        return memoryview(self.blob)[self.conversation_at:]


def entry_size(response_id: str, blob: bytes) -> int:
    """What the cap counts for one entry."""
    return len(blob) + len(response_id) + ENTRY_OVERHEAD_BYTES


class ResponseStore:
    """At most `max_bytes` of responses, each kept `ttl_s` seconds (0 bytes: keep nothing)."""

    def __init__(self, max_bytes: int, ttl_s: float) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._expired_why = f"it expired ({ttl_s:g}s after it was created)"  # one string for every tombstone
        self.bytes = 0
        self.stored = 0
        self.expired = 0
        self.evicted = 0
        self.too_large = 0

    def put(self, response_id: str, response: bytes, conversation: Sequence[dict[str, Any]], now: float,
            input_span: tuple[int, int] = (0, 0), held_by: str = "", remote: bool = False) -> bool:
        """Keep a response (its JSON, as sent) and the conversation's items, of which `input_span`
        are the request's own, `held_by` the store of the provider that keeps a copy too (and, `remote`, the only
        one that holds the whole conversation); False when it alone is larger than the whole store."""
        blob = b"".join((response, orjson.dumps(list(conversation))))  # a new object of exactly this size
        entry = StoredResponse(blob, len(response), *input_span, now + self.ttl_s, entry_size(response_id, blob),
                               held_by, remote)
        self._expire(now)
        replaced = self._entries.pop(response_id, None)
        if replaced is not None:  # ids are the providers' when relayed: two could make the same one
            self.bytes -= replaced.size
        if entry.size > self.max_bytes:
            self.too_large += 1
            self._bury(response_id, "it was larger than the whole response store and was not kept")
            return False
        while self._entries and self.bytes + entry.size > self.max_bytes:
            oldest_id, oldest = self._entries.popitem(last=False)
            self.bytes -= oldest.size
            self.evicted += 1
            self._bury(oldest_id, "it was evicted to keep the response store within its memory cap")
        self._entries[response_id] = entry
        self.bytes += entry.size
        self.stored += 1
        return True

    def response(self, response_id: str, now: float, param: str | None = None) -> bytes:
        return self._get(response_id, now, param).response

    def conversation(self, response_id: str, now: float) -> list[dict[str, Any]]:
        """The items a new turn continues; `ResponseNotFound` says why there are none (and, for a
        conversation only its provider holds, which provider: `held_by`)."""
        entry = self._get(response_id, now, "previous_response_id")
        if entry.remote:
            raise ResponseNotFound(response_id, f"its earlier turns are held by provider {entry.held_by} only",
                                   "previous_response_id", entry.held_by)
        conversation: list[dict[str, Any]] = orjson.loads(entry.conversation)
        return conversation

    def input_items(self, response_id: str, now: float) -> list[dict[str, Any]]:
        """The input items of the request that produced the response."""
        entry = self._get(response_id, now, None)
        items: list[dict[str, Any]] = orjson.loads(entry.conversation)[entry.input_from:entry.input_to]
        return items

    def held_by(self, response_id: str, now: float) -> str:
        """The store of the provider that keeps its own copy of a stored response ("" for none)."""
        return self._get(response_id, now, None).held_by

    def delete(self, response_id: str, now: float) -> None:
        entry = self._get(response_id, now, None)
        del self._entries[response_id]
        self.bytes -= entry.size
        self._bury(response_id, _DELETED)

    def status(self, now: float) -> dict[str, Any]:
        self._expire(now)
        return {"entries": len(self._entries), "bytes": self.bytes, "max_bytes": self.max_bytes,
                "ttl_seconds": self.ttl_s, "stored": self.stored, "expired": self.expired,
                "evicted": self.evicted, "too_large": self.too_large}

    def _get(self, response_id: str, now: float, param: str | None) -> StoredResponse:
        self._expire(now)
        entry = self._entries.get(response_id)
        if entry is not None:
            return entry
        why = self._gone.get(response_id) or (
            "this sidecar never stored it (it was created with store: false, by another sidecar, or before "
            "this sidecar restarted; responses live in the memory of the sidecar that answered them)")
        raise ResponseNotFound(response_id, why, param)

    def _expire(self, now: float) -> None:
        """Entries expire in the order they were stored, so only the front needs looking at."""
        while self._entries:
            response_id, entry = next(iter(self._entries.items()))
            if entry.expires_at > now:
                return
            self._entries.popitem(last=False)
            self.bytes -= entry.size
            self.expired += 1
            self._bury(response_id, self._expired_why)

    def _bury(self, response_id: str, why: str) -> None:
        self._gone[response_id] = why
        self._gone.move_to_end(response_id)
        while len(self._gone) > TOMBSTONES:
            self._gone.popitem(last=False)
