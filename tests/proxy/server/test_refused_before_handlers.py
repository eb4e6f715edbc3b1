"""What aiohttp used to answer itself, before any handler ran, in plain text: malformed HTTP, a body in a
Content-Encoding without its decoder, an unknown `Expect`, a path or method with no route. Each is now a
JSON error in the endpoint's dialect that says what was wrong, logged as one line without a traceback or
the bytes received.

Raw sockets, because no HTTP client sends malformed HTTP on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import orjson
import pytest
from aiohttp import web

from llmroute_proxy.server.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from llmroute_proxy.server.refusals import unsupported_encoding
from tests.proxy.stack import Stack

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
BODY = orjson.dumps({"model": "openai", "messages": [{"role": "user", "content": "hello"}]})
PLANTED = "sk-planted-0123456789abcdefghij"


def exchange(stack: Stack, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read until the sidecar closes; the final answer's status, headers and body (checked to be
    an HTTP/1.1 answer)."""
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(raw)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    while received.startswith(b"HTTP/1.1 100 "):  # an interim answer
        received = received.split(b"\r\n\r\n", 1)[1]
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), status_line  # the version the sidecar speaks, whatever it refuses
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def post(path: str, headers: str = "", body: bytes = BODY) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body


def error_of(path: str, body: bytes) -> dict[str, Any]:
    """The error object, checked to be in the dialect of the endpoint at `path`."""
    shape = orjson.loads(body)
    if path == MESSAGES:
        assert shape["type"] == "error" and shape["error"]["type"] == "invalid_request_error", shape
        return dict(shape["error"])
    error = shape["error"]
    assert set(error) == {"message", "type", "param", "code"}, shape
    return dict(error)


def assert_logged_cleanly(caplog: pytest.LogCaptureFixture) -> list[str]:
    """No ERROR and no traceback; the sidecar's own lines about the refusal, returned."""
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused a request")]


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_a_body_in_an_encoding_the_sidecar_does_not_decode_is_415_naming_it(
        stack: Stack, encoding: str, path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llmroute.proxy")
    status, headers, body = exchange(stack, post(path, f"Content-Encoding: {encoding}\r\n"))
    assert status == 415
    assert headers["content-type"].startswith("application/json")
    assert headers["accept-encoding"] == "gzip, deflate"
    error = error_of(path, body)
    assert f"Content-Encoding '{encoding}'" in error["message"] and "gzip or deflate" in error["message"]
    if path == CHAT:
        assert error["param"] == "content-encoding" and error["code"] == "unsupported_content_encoding"
    logged = assert_logged_cleanly(caplog)
    assert len(logged) == 1 and path in logged[0] and f"'{encoding}'" in logged[0]


@pytest.mark.parametrize("value", ["x-unknown", "gzip, br", "x-gzip"])
def test_every_other_encoding_is_refused_too_while_gzip_and_deflate_are_decoded(value: str) -> None:
    refusal = unsupported_encoding(value)
    assert refusal is not None and refusal.status == 415
    assert all(unsupported_encoding(ok) is None for ok in ("gzip", "deflate", "GZIP", "identity", ""))


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_an_expectation_other_than_100_continue_is_417_naming_the_header(
        stack: Stack, path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llmroute.proxy")
    status, headers, body = exchange(stack, post(path, "Expect: something-else\r\n"))
    assert status == 417
    assert headers["content-type"].startswith("application/json")
    error = error_of(path, body)
    assert "Expect header 'something-else'" in error["message"] and "100-continue" in error["message"]
    if path == CHAT:
        assert error["param"] == "expect" and error["code"] == "expectation_failed"
    assert len(assert_logged_cleanly(caplog)) == 1


def test_expect_100_continue_is_still_honoured(stack: Stack) -> None:
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        head, _, body = post(CHAT, "Expect: 100-continue\r\n").partition(b"\r\n\r\n")
        connection.sendall(head + b"\r\n\r\n")
        assert connection.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        connection.sendall(body)
    status, _, _ = exchange(stack, post(CHAT, "Expect: 100-continue\r\n"))
    assert status == 200


MALFORMED = {
    "a control character in a header that holds a key": (
        f"POST {MESSAGES} HTTP/1.1\r\nHost: x\r\nx-api-key: {PLANTED}\x00\r\nContent-Length: 0\r\n\r\n".encode(),
        400, "malformed_request", "header value"),
    "a bad request line": (f"POST {CHAT} HTTP/1.1 {PLANTED}\r\nHost: x\r\n\r\n".encode(), 400,
                           "malformed_request", "version"),
    "no Host": (f"POST {CHAT} HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode(), 400, "malformed_request", "Host"),
    "a header field over 8190 bytes": (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PLANTED}{'a' * 9000}\r\n\r\n".encode(), 431,
        "header_fields_too_large", "8190"),
    "a request line over 8190 bytes": (f"GET /v1/{'a' * 9000}?key={PLANTED} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                                       414, "uri_too_long", "8190"),
    "more than 128 header fields": (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, PLANTED.encode()) for i in range(200))
        + b"\r\n",
        431, "header_fields_too_large", "128"),
    "TLS to the plain-HTTP port": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + PLANTED.encode(), 400,
                                   "malformed_request", "HTTPS"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_http_is_a_json_error_saying_what_and_logged_without_bytes_or_traceback(
        stack: Stack, case: str, caplog: pytest.LogCaptureFixture) -> None:
    raw, expected_status, code, words = MALFORMED[case]
    caplog.set_level(logging.DEBUG, logger="llmroute.proxy")
    status, headers, body = exchange(stack, raw)
    assert status == expected_status
    assert headers["content-type"].startswith("application/json")
    path = MESSAGES if raw.startswith(f"POST {MESSAGES} ".encode()) else CHAT
    error = error_of(path, body)
    assert words in error["message"]
    if path == CHAT:
        assert error["code"] == code
    assert PLANTED not in body.decode("latin-1")
    logged = assert_logged_cleanly(caplog)
    assert len(logged) == 1 and f" with {expected_status} " in logged[0]
    assert not [r for r in caplog.records if PLANTED in r.getMessage()]


@pytest.mark.parametrize(("raw", "status", "path"), [
    (b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, CHAT),
    (f"GET {CHAT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), 405, CHAT),
    (f"GET {MESSAGES} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), 405, MESSAGES),
])
def test_a_path_or_method_without_an_endpoint_is_a_json_error_in_the_dialect(
        stack: Stack, raw: bytes, status: int, path: str, caplog: pytest.LogCaptureFixture) -> None:
    answer, headers, body = exchange(stack, raw)
    assert answer == status
    error = error_of(path, body)
    if status == 405:
        assert headers["allow"] == "POST" and "allowed: POST" in error["message"]
    else:
        assert "/nowhere" in error["message"]
    assert_logged_cleanly(caplog)


async def test_a_handler_that_raises_is_a_json_500_and_its_traceback_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """A bug, unlike bad input: the traceback is what a developer needs; the client still gets JSON."""
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application()
    app.router.add_post(MESSAGES, broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await GuardedSite(runner, "127.0.0.1", 0, ConnectionGuard(ConnectionLimits())).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(post(MESSAGES))
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 500 ")
    shape = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert shape["type"] == "error" and shape["error"]["type"] == "api_error"
    assert [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]


def test_a_flood_of_refusals_logs_a_warning_the_first_time_and_every_thousandth(
        caplog: pytest.LogCaptureFixture) -> None:
    guard = ConnectionGuard(ConnectionLimits())
    refusal = unsupported_encoding("br")
    assert refusal is not None
    caplog.set_level(logging.DEBUG, logger="llmroute.proxy")
    for _ in range(1999):
        guard.request_refused(refusal, "127.0.0.1:1", CHAT)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "(1000 of this kind so far)" in warnings[1]
    assert guard.requests_refused == {"content_encoding": 1999}
