"""Fuzz: whatever the operator's stream carries, the sidecar's decoder answers with a clean error
naming what and where (`ProtocolError`: logged, the table kept; `TableRejected`: the NACK's reason),
never another exception or a hang; a table that decodes either compiles whole or is refused whole,
and a refused one leaves the running table and its version untouched.

Messages are valid table pushes and leases (the every-section document set, every provider type)
with values at any depth replaced, dropped or added; then any bytes; then JSON nested as deep as
the parser takes it.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmroute_proxy.server.runner import build_sidecar
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.sync.client import ClusterSettings, OperatorClient
from llmroute_proxy.sync.persist import TableStore
from llmroute_proxy.sync.protocol import (
    Ack,
    Hello,
    Lease,
    Nack,
    ProtocolError,
    TablePush,
    TableRejected,
    compile_payload,
    decode_down,
    decode_up,
    encode,
    payload_version,
    table_payload,
)
from llmroute_proxy.table import Table
from tests.proxy.fuzz.strategies import ANY_JSON, FUZZ, mutated
from tests.proxy.fuzz.test_fuzz_config import document_set

CREDENTIALS = {"openai-main": "sk-fuzz-0123456789", "claude": "sk-ant-fuzz-0123456789", "azure": "az-fuzz-0123",
               "gem": "gem-fuzz-0123456789"}
PAYLOAD = table_payload("us", document_set(), CREDENTIALS)
TABLE_PUSH = {"type": "table", "version": payload_version(PAYLOAD), "table": PAYLOAD}
LEASE = {"type": "lease", "ttl": 30,
         "limits": {"openai-main": {"requestsPerMinute": 1200.0, "tokensPerMinute": 400000.0, "maxConcurrency": 16}},
         "budgets": {"chat": {"limitUSD": 41.5, "spentUSD": 12.0}}}


@st.composite
def table_pushes(draw: st.DrawFn) -> dict[str, Any]:
    """A push whose envelope, payload shape, one document or credentials are mutated; the version is
    usually recomputed so that the payload gets past the version check to the compiler."""
    push = copy.deepcopy(TABLE_PUSH)
    payload = push["table"]
    part = draw(st.sampled_from(["envelope", "payload", "document", "credentials"]))
    if part == "envelope":
        return draw(mutated(push))  # type: ignore[no-any-return]
    if part == "payload":
        payload = draw(mutated(payload))
    elif part == "document":
        index = draw(st.integers(0, len(payload["documents"]) - 1))
        payload["documents"][index] = draw(mutated(payload["documents"][index]))
    else:
        payload["credentials"] = draw(mutated(payload["credentials"], values=st.one_of(ANY_JSON, st.text())))
    push["table"] = payload
    if draw(st.integers(0, 4)) and _encodable(payload):
        push["version"] = payload_version(payload)
    return push


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _wire(message: Any) -> bytes | None:
    """The message as the operator would send it, None when JSON cannot say it (a NaN, a 2**70)."""
    try:
        return orjson.dumps(message)
    except TypeError:
        return None


def decoded_or_refused(data: bytes | str) -> TablePush | Lease | None:
    """The message, or None when `decode_down` refused it cleanly, naming where and what."""
    started = time.monotonic()
    try:
        message = decode_down(data)
    except ProtocolError as error:
        assert isinstance(error.where, str) and isinstance(error.what, str) and error.what
        assert str(error)
        return None
    finally:
        assert time.monotonic() - started < 2.0
    assert isinstance(message, TablePush | Lease)
    return message


def compiled_or_rejected(push: TablePush) -> Table | None:
    """The table, or None when it was rejected with a reason (which names no credential)."""
    payload_version(push.table)
    try:
        table = compile_payload(push.table)
    except TableRejected as error:
        reason = str(error)
        assert reason
        assert not any(key in reason for key in CREDENTIALS.values())
        return None
    assert isinstance(table, Table)
    return table


@FUZZ
@given(st.one_of(table_pushes(), mutated(LEASE)))
def test_a_pushed_message_decodes_and_compiles_or_is_refused_naming_where(message: Any) -> None:
    data = _wire(message)
    if data is None:
        return
    down = decoded_or_refused(data)
    if isinstance(down, TablePush):
        compiled_or_rejected(down)
    elif isinstance(down, Lease):
        assert down.ttl > 0
        for limits in down.limits.values():
            for value in (limits.requests_per_minute, limits.tokens_per_minute, limits.max_concurrency):
                assert value is None or 0 <= value < float("inf")


HELLO = {"type": "hello", "version": None, "sidecar": "0.2.0",
         "budgets": {"chat": {"periodStart": 1_779_926_400.0, "spentUSD": 12.5}}}


@FUZZ
@given(mutated(HELLO))
def test_a_hello_decodes_or_is_refused_naming_where(message: Any) -> None:
    """The hub's side: a hello with its spend mutated is one the lease book can take, or a clean refusal."""
    data = _wire(message)
    if data is None:
        return
    try:
        hello = decode_up(data)
    except ProtocolError as error:
        assert error.what and str(error)
        return
    if isinstance(hello, Hello) and hello.budgets is not None:
        for said in hello.budgets.values():
            assert 0 <= said.period_start < float("inf") and 0 <= said.spent_usd < float("inf")


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.builds(lambda head, tail: head + tail, st.sampled_from([
                     b'{"type":"table","version":"v","table":', b'{"type":"lease","ttl":', b'{"type":"table"',
                     b"\xef\xbb\xbf{", b'{"type":"lease","ttl":1,"limits":{"p":']), st.binary(max_size=60))))
def test_any_bytes_decode_or_are_refused_naming_where(data: bytes | str) -> None:
    down = decoded_or_refused(data)
    if isinstance(down, TablePush):
        compiled_or_rejected(down)


@pytest.mark.parametrize("depth", [100, 254, 255, 256, 300, 1000, 1023, 1024, 5000])
@pytest.mark.parametrize("where", ["table", "region", "documents", "credentials", "lease"])
def test_json_nested_as_deep_as_the_parser_takes_is_refused_cleanly(depth: int, where: str) -> None:
    nested = b"[" * depth + b"]" * depth
    messages = {
        "table": b'{"type":"table","version":"v","table":{"x":' + nested + b"}}",
        "region": b'{"type":"table","version":"v","table":{"region":' + nested + b',"documents":[]}}',
        "documents": b'{"type":"table","version":"v","table":{"region":"us","documents":[{"spec":' + nested + b"}]}}",
        "credentials": b'{"type":"table","version":"v","table":{"documents":[],"credentials":{"p":' + nested + b"}}}",
        "lease": b'{"type":"lease","ttl":1,"limits":{"p":' + nested + b"}}",
    }
    down = decoded_or_refused(messages[where])
    if isinstance(down, TablePush):
        compiled_or_rejected(down)


# --- applied by the sidecar -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OperatorClient, Sidecar]]:
    """A sidecar running the valid table, as its operator client applied it (applying does no I/O:
    the sidecar's upstream session only needs a loop to be made and closed in)."""
    state = tmp_path_factory.mktemp("sync-fuzz")
    settings = ClusterSettings(url="wss://operator.test/v1/sync", ca_file=None, token_file=Path(state / "token"),
                               state_dir=state)
    loop = asyncio.new_event_loop()
    sidecar = loop.run_until_complete(_built())
    try:
        client = OperatorClient(settings, sidecar, TableStore(state))
        assert client._apply(_valid_push()) == Ack(TABLE_PUSH["version"])
        yield client, sidecar
    finally:
        loop.run_until_complete(sidecar.upstream.close())
        loop.close()


async def _built() -> Sidecar:
    return build_sidecar()


def _valid_push() -> TablePush:
    push = decode_down(encode(TablePush(TABLE_PUSH["version"], PAYLOAD)))
    assert isinstance(push, TablePush)
    return push


@FUZZ
@given(table_pushes())
def test_a_refused_table_leaves_the_running_table_untouched(running: tuple[OperatorClient, Sidecar],
                                                            message: Any) -> None:
    client, sidecar = running
    data = _wire(message)
    if data is None:
        return
    down = decoded_or_refused(data)
    if not isinstance(down, TablePush):
        return
    before = (sidecar.table, sidecar.pushed_version, sidecar.scrubber)
    answer = client._apply(down)
    if isinstance(answer, Nack):
        assert answer.version == down.version and answer.error
        assert (sidecar.table, sidecar.pushed_version, sidecar.scrubber) == before
    else:
        assert answer == Ack(down.version)
        assert sidecar.pushed_version == down.version and sidecar.table is not None
        assert client._apply(_valid_push()) == Ack(TABLE_PUSH["version"])  # back to it for the next example
