"""Fuzz through the whole sidecar: any body and headers to each front door get a 2xx or a clean 4xx in
that endpoint's own error dialect — never a 5xx, an exception in the logs or a hang — and the next
valid request on the same sidecar still succeeds.

The sidecar is the served one (`tests/proxy/stack.py`: real sockets, simulated providers behind it),
so this covers what the unit fuzzers cannot: reading the body, the browser guard, routing, the
attempt loop, the encoders and what the simulated providers make of what passed validation.
Requests go over `http.client`, which sends exactly the bytes and headers drawn.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.proxy.fuzz.strategies import (
    ANY_JSON,
    CHAT_BASE,
    EMBED_BASE,
    EXAMPLES,
    FUZZ,
    MESSAGES_BASE,
    RESPONSES_BASE,
    mutated,
)
from tests.proxy.stack import Stack

APP_FUZZ = settings(parent=FUZZ, max_examples=max(1, EXAMPLES // 3))
"""Each example is two requests through the served sidecar: a third of the unit fuzzers' count."""

TIMEOUT_S = 15.0
"""Far above any answer from the simulators (milliseconds), far below the route's 10 s overall
timeout plus a stream: a request still open then is a hang."""

MODELS = ("openai", "anthropic", "gemini", "ha", "auto", "gpt-4o-mini", "claude-sonnet-4-5")


@dataclass(frozen=True)
class Door:
    path: str
    base: dict[str, Any]
    anthropic: bool = False

    def valid(self) -> bytes:
        """A request this door must answer with 200."""
        if self.path == "/v1/embeddings":
            return orjson.dumps({"model": "embed", "input": "hello"})
        if self.path == "/v1/responses":
            return orjson.dumps({"model": "openai", "input": "hello"})
        if self.anthropic:
            return orjson.dumps({"model": "anthropic", "max_tokens": 20,
                                 "messages": [{"role": "user", "content": "hello"}]})
        return orjson.dumps({"model": "openai", "messages": [{"role": "user", "content": "hello"}]})


CHAT = Door("/v1/chat/completions", CHAT_BASE)
MESSAGES = Door("/v1/messages", {**MESSAGES_BASE, "max_tokens": 4000}, anthropic=True)
RESPONSES = Door("/v1/responses", RESPONSES_BASE)
EMBEDDINGS = Door("/v1/embeddings", EMBED_BASE)
DOORS = {door.path: door for door in (CHAT, MESSAGES, RESPONSES, EMBEDDINGS)}

# --- strategies ------------------------------------------------------------------------------------------

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)
ODD_HEADERS: dict[str, st.SearchStrategy[str]] = {
    "Content-Type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                     "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                                     "", "*/*", "application/json; charset=utf-16"]),
    "Content-Encoding": st.sampled_from(["identity", "gzip", "deflate", "br", "zstd", "gzip, br", "x-unknown"]),
    "Accept": st.sampled_from(["*/*", "text/event-stream", "application/xml", ""]),
    "Accept-Encoding": st.sampled_from(["gzip", "br", "identity;q=0", "*"]),
    "x-llmroute-route": st.one_of(st.just("main"), HEADER_TEXT),
    "traceparent": st.one_of(st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), HEADER_TEXT),
    "tracestate": HEADER_TEXT,
    "baggage": HEADER_TEXT,
    "anthropic-version": st.one_of(st.just("2023-06-01"), HEADER_TEXT),
    "anthropic-beta": HEADER_TEXT,
    "Authorization": st.one_of(st.just("Bearer sk-x"), HEADER_TEXT),
    "x-api-key": HEADER_TEXT,
    "OpenAI-Organization": HEADER_TEXT,
    "Idempotency-Key": HEADER_TEXT,
    "x-stainless-retry-count": st.one_of(st.just("1"), HEADER_TEXT),
    "Sec-Fetch-Site": st.sampled_from(["none", "cross-site", "same-origin", ""]),
    "Origin": st.sampled_from(["https://evil.example", "null", "http://localhost:3000"]),
    "Expect": st.sampled_from(["100-continue", "100-Continue", "x", ""]),
    "User-Agent": HEADER_TEXT,
}
headers_strategy = st.dictionaries(st.sampled_from(sorted(ODD_HEADERS)), st.just(""), max_size=4).flatmap(
    lambda picked: st.fixed_dictionaries({name: ODD_HEADERS[name] for name in picked}))


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """JSON nested deeper than orjson writes (255) and than a naive recursive walker should follow."""
    depth = draw(st.sampled_from([50, 300, 600]))
    leaf: Any = draw(st.sampled_from([{"type": "object"}, "x", 1]))
    as_list = draw(st.booleans())
    for _ in range(depth):
        leaf = [leaf] if as_list else {draw(st.sampled_from(["properties", "items", "a", "content"])): leaf}
    return leaf


@st.composite
def deep_inside(draw: st.DrawFn, base: Any) -> Any:
    """`base` with one value, at any depth, replaced by deeply nested JSON."""
    value = orjson.loads(orjson.dumps(base))
    holder, key = value, None
    while True:
        keys = list(holder) if isinstance(holder, dict) else list(range(len(holder))) if isinstance(holder, list) else []
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        if not isinstance(holder[key], dict | list) or draw(st.integers(0, 2)) == 0:
            break
        holder = holder[key]
    if key is not None:
        holder[key] = draw(deep())
    return value


def dumps(value: Any) -> bytes:
    """JSON as any client library might write it: NaN, Infinity and integers of any size included."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def bodies(door: Door) -> st.SearchStrategy[bytes]:
    base = {**door.base, "model": "openai"}
    with_model = st.builds(lambda b, m: {**b, "model": m} if isinstance(b, dict) and "model" in b else b,
                           mutated(base), st.sampled_from(MODELS))
    as_json = st.one_of(with_model, with_model, ANY_JSON, deep_inside(base)).map(dumps)
    raw = st.one_of(
        st.binary(max_size=80),
        as_json.map(lambda b: b[: len(b) // 2]),  # truncated
        as_json.map(lambda b: b.replace(b'"hi"', b'"\xff\xfe"')),  # not UTF-8
        st.sampled_from([b"NaN", b"1e999", b'{"model": 1e999}', b"[" * 5000, b'{"a":' * 2000, b"\x00", b"null",
                         b'"\\ud800"', b'{"model": "openai", "messages": [{"role": "user", "content": "\\ud800"}]}',
                         b"{}" * 3, b"\xef\xbb\xbf{}"]),
    )
    return st.one_of(as_json, as_json, as_json, raw)


# --- the sidecar -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("fuzz-app"), delivery=None) as running:  # answers in one piece: quicker
        yield running


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


def send(stack: Stack, path: str, body: bytes, headers: dict[str, str]) -> Answer:
    host, port = stack.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        connection.request("POST", path, body=body, headers={"Content-Length": str(len(body)), **headers})
        response = connection.getresponse()
        return Answer(response.status, response.getheader("Content-Type") or "", response.read())
    except TimeoutError:
        pytest.fail(f"no answer within {TIMEOUT_S:g}s: {path} {headers} {body[:200]!r}")
    finally:
        connection.close()


PARAM_HEADERS = {"x-llmroute-route", "origin", "sec-fetch-site", "content-encoding", "expect"}


def check_error(door: Door, answer: Answer, body: bytes) -> None:
    """A 4xx in the door's own dialect; a `param`, when given, names something the client sent or left out."""
    assert answer.content_type.startswith("application/json"), answer
    error_body = orjson.loads(answer.body)
    if door.anthropic:
        assert error_body["type"] == "error", error_body
        assert isinstance(error_body["error"]["type"], str) and error_body["error"]["type"] != "api_error"
        assert isinstance(error_body["error"]["message"], str) and error_body["error"]["message"]
        return
    error = error_body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error_body
    assert isinstance(error["message"], str) and error["message"], error_body
    param = error["param"]
    if param is None or param.lower() in PARAM_HEADERS:
        return
    top = re.split(r"[.\[]", param, maxsplit=1)[0]
    try:
        sent = orjson.loads(body)
    except orjson.JSONDecodeError:
        sent = None
    named = set(sent) if isinstance(sent, dict) else set()
    assert top in named | {"model", "messages", "input"}, (param, body[:300])


def check_answer(door: Door, answer: Answer, body: bytes, headers: dict[str, str]) -> None:
    assert answer.status < 500, (answer, body[:300])
    if answer.status >= 400:
        check_error(door, answer, body)
    elif answer.content_type.startswith("application/json"):
        assert isinstance(orjson.loads(answer.body), dict)
    else:
        assert answer.content_type.startswith("text/event-stream"), answer


BODIES = {path: bodies(door) for path, door in DOORS.items()}


def assert_nothing_logged(caplog: pytest.LogCaptureFixture) -> None:
    """No record of an error or with an exception, from any thread (the sidecar runs in its own)."""
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not logged, [r.getMessage() for r in logged]


def fuzz_door(stack: Stack, door: Door, body: bytes, headers: dict[str, str],
              caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    check_answer(door, send(stack, door.path, body, headers), body, headers)
    follow_up = send(stack, door.path, door.valid(), {"Content-Type": "application/json"})
    assert follow_up.status == 200, follow_up
    assert_nothing_logged(caplog)


@pytest.mark.parametrize("path", sorted(DOORS))
@APP_FUZZ
@given(data=st.data())
def test_a_door_answers_anything_cleanly(stack: Stack, path: str, data: st.DataObject,
                                         caplog: pytest.LogCaptureFixture) -> None:
    door = DOORS[path]
    fuzz_door(stack, door, data.draw(BODIES[path], label="body"), data.draw(headers_strategy, label="headers"),
              caplog)


WRONG_TYPES: tuple[Any, ...] = (None, True, 0, -1, 1.5, 1e308, "x", "", [], [None], {}, {"x": None})


def field_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from field_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*path, index)
            yield from field_paths(item, (*path, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = orjson.loads(orjson.dumps(value))
    holder = copy
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = new
    return copy


@pytest.mark.parametrize("path", sorted(DOORS))
def test_every_field_of_a_door_with_every_wrong_type_gets_a_clean_answer(
        stack: Stack, path: str, caplog: pytest.LogCaptureFixture) -> None:
    """Not left to chance: each field of a full request, at every depth, given each JSON type in turn."""
    door = DOORS[path]
    base = {**door.base, "model": "anthropic" if door.anthropic else "embed" if path.endswith("embeddings")
            else "openai", "stream": False} if "stream" in door.base else {**door.base, "model": "embed"}
    caplog.clear()
    for field_path in field_paths(base):
        for wrong in WRONG_TYPES:
            body = orjson.dumps(replaced(base, field_path, wrong))
            check_answer(door, send(stack, door.path, body, {"Content-Type": "application/json"}), body, {})
    assert send(stack, door.path, door.valid(), {"Content-Type": "application/json"}).status == 200
    assert_nothing_logged(caplog)

