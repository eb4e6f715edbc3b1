"""The wire protocol: every message round-trips; bad ones are refused naming what and where."""

from __future__ import annotations

import pytest

from llmroute_proxy.dialects.base import Quota, RateLimits
from llmroute_proxy.sync.protocol import (
    MAX_DEPTH,
    UNKNOWN_KINDS_TOLD,
    Ack,
    Hello,
    Lease,
    LeaseBudget,
    Limits,
    Nack,
    PeriodSpend,
    ProtocolError,
    TablePush,
    TableRejected,
    UnknownMessage,
    UsageReport,
    compile_payload,
    decode_down,
    decode_up,
    encode,
    payload_version,
    rate_limits_json,
    read_rate_limits,
    table_payload,
    tell_of,
)
from tests.syncfakes import KEY, documents


@pytest.mark.parametrize("message", [
    Hello(None, "0.1.0"), Hello("abc", "0.1.0"), Hello("abc", "0.2.0", {}),
    Hello(None, "0.2.0", {"chat": PeriodSpend(1_779_926_400.0, 12.345678), "batch": PeriodSpend(0, 0)}), Ack("v1"), Nack("v1", "table.documents: bad"),
    UsageReport(10.0, {"chat": {"requests": 1, "input_tokens": 2, "output_tokens": 3, "cost_usd": 0.5}},
                {"p/m@us": {"requests": 2, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0,
                            "failures": 1, "errors": {"timeout": 1}}},
                {"p": {"requests": 2, "tokens": 5}}, final=True),
    UsageReport(10.0, providers={"p": {"requests": 2, "tokens": 5}},
                rate_limits={"p": {"age_s": 0.25, "requests": {"limit": 5000, "remaining": 4999, "reset_s": 0.012},
                                   "tokens": {"remaining": 0}, "retry_after_s": 2.5},
                             "q": {"age_s": 0}}),
])
def test_up_messages_round_trip(message: object) -> None:
    assert decode_up(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize("message", [
    TablePush("v1", {"region": "us", "documents": [], "credentials": {}}),
    Lease(30.0, {"openai": Limits(100.0, None, 4)}, {"chat": LeaseBudget(12.5, 2.0)}),
])
def test_down_messages_round_trip(message: object) -> None:
    assert decode_down(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize("text, where, what", [
    ("nope", "", "not JSON"),
    ("[1]", "", "must be a JSON object, got an array"),
    ('{"type":"table"}', "type", "'table' is not one of 'hello', 'ack', 'nack', 'usage'"),
    ('{"type":5}', "type", "must be a non-empty string, got a number"),
    ('{"version":"v"}', "type", "must be a non-empty string, got null"),
    ('{"type":"ack"}', "ack.version", "must be a non-empty string, got null"),
    ('{"type":"nack","version":"v","error":""}', "nack.error", "non-empty string"),
    ('{"type":"hello","version":3,"sidecar":"x"}', "hello.version", "got a number"),
    ('{"type":"hello","version":null,"sidecar":"x","budgets":[]}', "hello.budgets", "must be an object, got an array"),
    ('{"type":"hello","version":null,"sidecar":"x","budgets":{"chat":3}}', "hello.budgets.chat", "must be an object"),
    ('{"type":"hello","version":null,"sidecar":"x","budgets":{"chat":{"spentUSD":1}}}',
     "hello.budgets.chat.periodStart", "is required"),
    ('{"type":"hello","version":null,"sidecar":"x","budgets":{"chat":{"periodStart":0}}}',
     "hello.budgets.chat.spentUSD", "is required"),
    ('{"type":"hello","version":null,"sidecar":"x","budgets":{"chat":{"periodStart":0,"spentUSD":-1}}}',
     "hello.budgets.chat.spentUSD", "must not be negative"),
    ('{"type":"hello","version":null,"sidecar":"x","budgets":{"chat":{"periodStart":"today","spentUSD":1}}}',
     "hello.budgets.chat.periodStart", "must be a number, got a string"),
    ('{"type":"usage","interval":1,"routes":{"chat":{"requests":-1}}}', "usage.routes.chat.requests",
     "non-negative"),
    ('{"type":"usage","interval":1,"targets":{"t":{"errors":[]}}}', "usage.targets.t.errors", "an array"),
    ('{"type":"usage","interval":"1"}', "usage.interval", "must be a number"),
    ('{"type":"usage","interval":1,"rate_limits":{"p":{"requests":{}}}}', "usage.rate_limits.p.age_s", "is required"),
    ('{"type":"usage","interval":1,"rate_limits":{"p":{"age_s":1,"requests":{"remaining":-1}}}}',
     "usage.rate_limits.p.requests.remaining", "non-negative"),
    ('{"type":"usage","interval":1,"rate_limits":{"p":[]}}', "usage.rate_limits.p", "must be an object"),
])
def test_bad_up_messages_say_what_and_where(text: str, where: str, what: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_up(text)
    assert caught.value.where == where and what in caught.value.what


@pytest.mark.parametrize("text, where, what", [
    ('{"type":"table","version":"v","table":[]}', "table.table", "must be an object"),
    ('{"type":"lease","ttl":0}', "lease.ttl", "must be positive"),
    ('{"type":"lease","ttl":5,"limits":{"p":{"requestsPerMinute":"1"}}}', "lease.limits.p.requestsPerMinute",
     "must be a number, got a string"),
    ('{"type":"lease","ttl":5,"limits":{"p":{"maxConcurrency":1.5}}}', "lease.limits.p.maxConcurrency",
     "whole number"),
    ('{"type":"lease","ttl":5,"limits":{"p":{"requestsPerMinute":-1}}}', "lease.limits.p.requestsPerMinute",
     "must not be negative"),
    ('{"type":"lease","ttl":5,"budgets":{"chat":{}}}', "lease.budgets.chat.limitUSD", "is required"),
])
def test_bad_down_messages_say_what_and_where(text: str, where: str, what: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_down(text)
    assert caught.value.where == where and what in caught.value.what


NEWER_UP = [
    ('{"type":"hello","version":"v","sidecar":"9.0.0","zone":"a","budgets":{"chat":{"periodStart":0,"spentUSD":1,'
     '"period":"day","byModel":{"m":1}}}}', Hello("v", "9.0.0", {"chat": PeriodSpend(0, 1)})),
    ('{"type":"ack","version":"v","installedAt":3}', Ack("v")),
    ('{"type":"usage","interval":1,"routes":{"chat":{"requests":1,"cached_tokens":9}},'
     '"rate_limits":{"p":{"age_s":1,"resetS":1,"tokens":{"remaining":3,"left":3},"images":{"limit":1}}},'
     '"queue":{"depth":2}}',
     UsageReport(1.0, {"chat": {"requests": 1, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0}},
                 rate_limits={"p": {"age_s": 1, "tokens": {"remaining": 3}}})),
]
NEWER_DOWN = [
    ('{"type":"lease","ttl":5,"epoch":7,"limits":{"p":{"requestsPerMinute":60,"imagesPerMinute":5}},'
     '"budgets":{"chat":{"limitUSD":2,"spentUSD":1,"hardStop":true}}}',
     Lease(5.0, {"p": Limits(60.0, None, None)}, {"chat": LeaseBudget(2.0, 1.0)})),
    ('{"type":"table","version":"v","table":{"documents":[]},"compression":"none"}',
     TablePush("v", {"documents": []})),
]


@pytest.mark.parametrize("text, message", NEWER_UP)
def test_fields_a_newer_sidecar_adds_are_skipped_and_the_rest_read_as_ever(text: str, message: object) -> None:
    """The operator and the sidecars are upgraded apart: what a newer peer adds, at any level, is not an error."""
    assert decode_up(text) == message


@pytest.mark.parametrize("text, message", NEWER_DOWN)
def test_fields_a_newer_operator_adds_are_skipped_and_the_rest_read_as_ever(text: str, message: object) -> None:
    assert decode_down(text) == message


def test_a_message_type_a_newer_peer_adds_is_told_apart_from_a_broken_message() -> None:
    with pytest.raises(UnknownMessage) as caught:
        decode_down('{"type":"drain","within_s":30}')
    assert caught.value.kind == "drain" and caught.value.where == "type"
    with pytest.raises(UnknownMessage):
        decode_up('{"type":"table","version":"v","table":{}}')  # a type of the other direction is not for it
    told: set[str] = set()
    assert tell_of(told, caught.value) and not tell_of(told, caught.value)  # one log line per type
    for n in range(UNKNOWN_KINDS_TOLD):
        tell_of(told, UnknownMessage(f"kind-{n}", ("table",)))
    assert len(told) == UNKNOWN_KINDS_TOLD and not tell_of(told, UnknownMessage("one-more", ("table",)))


def test_a_hello_says_its_spend_or_nothing_of_it_as_older_sidecars_do() -> None:
    """An older sidecar's hello has no `budgets`: that is not saying it spent nothing."""
    older = decode_up('{"type":"hello","version":null,"sidecar":"0.1.0"}')
    assert isinstance(older, Hello) and older.budgets is None
    assert "budgets" not in encode(Hello(None, "0.1.0"))
    assert '"budgets":{}' in encode(Hello(None, "0.2.0", {}))
    said = decode_up('{"type":"hello","version":null,"sidecar":"0.2.0",'
                     '"budgets":{"chat":{"periodStart":1779926400,"spentUSD":2.5}}}')
    assert isinstance(said, Hello) and said.budgets == {"chat": PeriodSpend(1_779_926_400.0, 2.5)}


def test_the_version_is_the_sha256_of_the_canonical_payload_whatever_the_key_order() -> None:
    a = table_payload("us", documents(), {"openai-main": KEY})
    b = dict(reversed(list(a.items())))
    assert payload_version(a) == payload_version(b) and len(payload_version(a)) == 64
    assert payload_version(a) != payload_version(table_payload("eu", documents(), {"openai-main": KEY}))


def test_a_payload_compiles_with_the_sidecars_own_compiler() -> None:
    table = compile_payload(table_payload("us", documents(), {"openai-main": KEY}))
    route = table.route("chat")
    assert route is not None and table.region == "us"
    assert route.tiers["fast"].targets[0].credential.reveal() == KEY  # type: ignore[union-attr]
    assert table.provider_limits["openai-main"].requests_per_minute == 600


@pytest.mark.parametrize("payload, expected", [
    ({"region": 1, "documents": []}, "table.region: must be a string"),
    ({"region": "us", "documents": {}}, "table.documents: must be an array"),
    ({"region": "us", "documents": [], "credentials": {"p": 1}}, "table.credentials: must be an object"),
    ({"region": "us", "documents": documents()[:1], "credentials": {"openai-main": KEY}},
     "table.documents: holds no LLMRoute document"),
])
def test_payloads_that_cannot_become_a_table_are_rejected_with_the_reason(
        payload: dict[str, object], expected: str) -> None:
    with pytest.raises(TableRejected, match=expected):
        compile_payload(payload)


def test_every_problem_of_the_documents_is_named_with_its_path() -> None:
    docs = documents()
    docs[0]["spec"]["type"] = "openaj"
    docs[1]["spec"]["defaultTier"] = "slow"
    with pytest.raises(TableRejected) as caught:
        compile_payload(table_payload("us", docs, {"openai-main": KEY}))
    message = str(caught.value)
    assert "LLMProvider/openai-main: spec.type" in message and "LLMRoute/chat: spec.defaultTier" in message
    assert KEY not in message


def test_what_a_providers_headers_said_round_trips_through_a_usage_report() -> None:
    said = RateLimits(Quota(5000, 4999, 0.012), Quota(None, 20, None), 1.5)
    report = UsageReport(10.0, rate_limits={"openai": rate_limits_json(said, 0.4)})
    decoded = decode_up(encode(report))
    assert isinstance(decoded, UsageReport) and not decoded.is_empty()
    assert read_rate_limits(decoded.rate_limits["openai"]) == (said, 0.4)
    assert "rate_limits" not in encode(UsageReport(10.0))  # left out when there is nothing to say


@pytest.mark.parametrize("depth", [250, 300, 1000])
def test_a_table_nested_deeper_than_json_is_encoded_is_refused_naming_where(depth: int) -> None:
    """Fuzzing found it: a table nested 254-1023 levels deep decoded, then `payload_version` raised
    TypeError out of the sidecar's stream reader."""
    text = encode(TablePush("v", {"region": "us", "documents": [{"spec": {"x": 1}}], "credentials": {}}))
    text = text.replace('{"x":1}', '{"x":' + "[" * depth + "]" * depth + "}")
    with pytest.raises(ProtocolError) as caught:
        decode_down(text)
    assert caught.value.what == f"nests deeper than {MAX_DEPTH} levels"
    assert caught.value.where.startswith("table.table.documents[0].spec.x[0][0]")


def test_the_deepest_message_decoded_is_one_that_can_be_encoded_again() -> None:
    text = '{"type":"table","version":"v","table":{"x":' + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "}}"
    push = decode_down(text)
    assert isinstance(push, TablePush)
    assert payload_version(push.table) and encode(push)
    with pytest.raises(ProtocolError):
        decode_down(text.replace("[", "[[", 1).replace("]", "]]", 1))
