"""What the connection layer refuses, and how: in the endpoint's error dialect, never aiohttp's plain text.

aiohttp answers some requests itself, before any handler or middleware of the sidecar runs, with a
plain-text body, and logs the malformed ones at ERROR with a traceback that quotes the bytes received
(a header line may hold a key):

- a request that is not valid HTTP/1.1 (its parser: a bad request line, a control character in a
  header, a line over 8190 bytes, more than 128 headers, no `Host`): 400;
- a body in a Content-Encoding whose optional decoder is not installed (`br`, `zstd`): 400 telling the
  operator to install a package;
- an `Expect` other than `100-continue`: 417, from the route's expect handler, ahead of every middleware;
- no route for the path or method: 404 and 405, from the router.

Each gets a `Refusal` here instead, written in the dialect of the endpoint it was sent to (Anthropic's
on `/v1/messages`, OpenAI's elsewhere and when the path is not known). What a refusal says comes from
the sidecar's own words and the parser's description of the fault, never from the bytes received.

The sidecar decodes a request body sent in `gzip` or `deflate` (what aiohttp decodes without optional
packages); any other Content-Encoding, `br` and `zstd` included, is 415 before the body is read, and
stays so whatever packages are installed.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, InvalidHeader, LineTooLong

from llmroute_proxy.dialects.anthropic.errors import anthropic_error_body
from llmroute_proxy.dialects.openai.errors import openai_error_body
from llmroute_proxy.errors import LLMRouteError

DECODED_ENCODINGS = ("gzip", "deflate")
"""Request bodies in these Content-Encodings are decoded (by aiohttp); `identity` means none."""


class Refusal(LLMRouteError):
    """A request the connection layer answers itself. `reason` names the kind in logs and metrics."""

    def __init__(self, status: int, message: str, *, reason: str, code: str, error_type: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.code = code
        self.error_type = error_type
        self.param = param
        self._headers = headers or {}

    def headers(self) -> dict[str, str]:
        return dict(self._headers)


def body(refusal: Refusal, path: str | None) -> bytes:
    """The error body in the dialect of the endpoint at `path` (OpenAI's when it is not known)."""
    shape: dict[str, Any] = anthropic_error_body(refusal, refusal.status) if path is not None and \
        path.startswith("/v1/messages") else openai_error_body(refusal)
    return orjson.dumps(shape)


def whole_answer(refusal: Refusal, path: str | None) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for writing straight to a transport."""
    content = body(refusal, path)
    head = [f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}", "Content-Type: application/json",
            f"Content-Length: {len(content)}", "Connection: close",
            *(f"{name}: {value}" for name, value in refusal.headers().items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + content


# --- the refusals ----------------------------------------------------------------------------------------

def too_many_connections(cap: int) -> Refusal:
    return Refusal(503, f"This llmroute sidecar already has {cap} connections open; try again shortly.",
                   reason="refused", code="too_many_connections", error_type="service_unavailable",
                   headers={"Retry-After": "1"})


def too_slow(reason: str, why: str) -> Refusal:
    return Refusal(408, f"Request timeout: {why}.", reason=reason, code="request_timeout", error_type="timeout_error")


def unsupported_encoding(value: str) -> Refusal | None:
    """415 for a Content-Encoding other than one the sidecar decodes (a list of codings included)."""
    coding = value.strip().lower()
    if coding in ("", "identity", *DECODED_ENCODINGS):
        return None
    return Refusal(415, f"The request body's Content-Encoding '{_shown(value)}' is not one this sidecar decodes: "
                        f"send it uncompressed, or in {' or '.join(DECODED_ENCODINGS)}.",
                   reason="content_encoding", code="unsupported_content_encoding", param="content-encoding",
                   headers={"Accept-Encoding": ", ".join(DECODED_ENCODINGS)})


def failed_expectation(value: str) -> Refusal:
    return Refusal(417, f"The request's Expect header '{_shown(value)}' asks for what this sidecar cannot do: "
                        "only 100-continue is supported.",
                   reason="expectation", code="expectation_failed", param="expect")


def malformed(exc: HttpProcessingError, request_line_length: int | None) -> Refusal:
    """The refusal for what aiohttp's parser raised; the request line's length (None when its end never
    arrived) tells a request line that is too long from a header field that is."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 8190
        if request_line_length is None or request_line_length > limit:
            return Refusal(414, f"The request line is longer than {limit} bytes.", reason="malformed",
                           code="uri_too_long")
        return Refusal(431, f"A header field of the request is longer than {limit} bytes.", reason="malformed",
                       code="header_fields_too_large")
    if "Too many headers" in exc.message:
        return Refusal(431, "The request has more header fields than this sidecar reads (128).", reason="malformed",
                       code="header_fields_too_large")
    if "content-encoding" in exc.message.lower():  # an encoding aiohttp knows, without its optional decoder
        coding = "zstd" if "(zstd)" in exc.message else "br" if "(br)" in exc.message else "this"
        refusal = unsupported_encoding(coding)
        if refusal is not None:
            return refusal
    if isinstance(exc, InvalidHeader):
        what = "a header field holds a character that HTTP forbids there"
    elif isinstance(exc, BadHttpMethod) and "HTTPS" in exc.message:
        what = "it came as HTTPS to a port that speaks plain HTTP"
    else:
        what = _parser_words(exc.message)
    return Refusal(400, f"The request is not valid HTTP/1.1: {what}.", reason="malformed", code="malformed_request")


def not_routed(status: int, method: str, path: str, allowed: str | None) -> Refusal:
    """404 and 405 from the router."""
    if status == 405:
        message = f"{method} is not allowed on {_shown(path)}" + (f"; allowed: {allowed}." if allowed else ".")
        return Refusal(405, message, reason="not_routed", code="method_not_allowed",
                       headers={"Allow": allowed} if allowed else None)
    return Refusal(status, f"There is no endpoint at {_shown(path)}.", reason="not_routed",
                   code="not_found" if status == 404 else "invalid_request")


def failed(status: int) -> Refusal:
    """A handler that raised (a bug; its traceback is logged) or timed out."""
    if status == 504:
        return Refusal(504, "The sidecar timed out while handling this request.", reason="failed",
                       code="timeout", error_type="timeout_error")
    return Refusal(status, "The sidecar failed while handling this request; its log has the details.",
                   reason="failed", code="internal_error", error_type="api_error")


def _parser_words(message: str) -> str:
    """llhttp's description of the fault, without the bytes it quotes after a blank line."""
    lines = [line.strip().rstrip(":") for line in message.split("\n\n", 1)[0].splitlines() if line.strip()]
    words = lines[-1].rstrip(".") if lines else ""
    if not words or len(words) > 80 or "b'" in words or 'b"' in words or "\\x" in words:
        return "the parser refused it"
    return words[0].lower() + words[1:] if words[:2] != words[:2].upper() else words


def _shown(value: str) -> str:
    """A value the client sent, safe to quote back: printable ASCII, at most 60 characters."""
    text = "".join(c if " " <= c <= "~" else "?" for c in value)
    return text if len(text) <= 60 else text[:57] + "..."
