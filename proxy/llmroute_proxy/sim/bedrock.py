"""A simulated Amazon Bedrock runtime: Claude through InvokeModel, `/model/{modelId}/invoke` and
`/model/{modelId}/invoke-with-response-stream` (providers.md §2.7, §4.2), Titan's and Cohere's text
embeddings through InvokeModel (`sim/bedrock_embeddings.py`), and any chat model through Converse,
`/model/{modelId}/converse` and `/converse-stream` (`sim/bedrock_converse.py`).

Claude answers as the Anthropic simulator does (its handler, its checks, its answers); what is
Bedrock's is around it: an Amazon Bedrock API key as `Authorization: Bearer`, or a SigV4 signature
(service `bedrock`, the simulator's region) with an access key `aws_keys` knows, checked as AWS checks it
(`sim/aws_identity.sigv4_refusal`: 403 `UnrecognizedClientException`, `ExpiredTokenException`,
`InvalidSignatureException`, `IncompleteSignatureException`, with `{"message": …}`), the model in the path,
a body with `anthropic_version: bedrock-2023-05-31`, no `model` and no `stream` (betas in
`anthropic_beta`), and AWS's shapes for what goes wrong: errors as `{"message": …}` with their type in
the `x-amzn-ErrorType` header, and streams as AWS event-stream frames (real CRC32s) whose `chunk`
events carry Anthropic's stream events, base64 in `{"bytes": …}`, and whose failures are exception
frames (`:exception-type` `throttlingException`, `modelStreamErrorException`…).
"""

from __future__ import annotations

import base64
import hmac
import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any, Unpack
from urllib.parse import unquote

import orjson
from aiohttp import web

from llmroute_proxy.sim.anthropic import API_HEADERS, messages, with_prompt_cache
from llmroute_proxy.sim.aws_identity import AwsKeys, sigv4_refusal
from llmroute_proxy.sim.bedrock_converse import SERVICE_TIERS, converse
from llmroute_proxy.sim.bedrock_embeddings import embed, embedding_model
from llmroute_proxy.sim.faults import Fault
from llmroute_proxy.sim.runtime import SIM_CALL, Dialect, SimCall, SimOptions, sim_app
from llmroute_proxy.sim.streaming import STREAM_FRAMING, StreamFraming

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
DEFAULT_MODELS = ("anthropic.claude-sonnet-4-5-20250929-v1:0", "us.anthropic.claude-haiku-4-5-20251001-v1:0",
                  "meta.llama3-3-70b-instruct-v1:0", "us.amazon.nova-pro-v1:0")
_CLAUDE = re.compile(r"(?:[a-z]{2,6}\.)?anthropic\.(claude-[A-Za-z0-9.-]+?)(?:-v[0-9]+(?::[0-9]+)?)?")
EVENT_STREAM = "application/vnd.amazon.eventstream"

_ERROR_TYPES = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
                408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
                500: "InternalServerException", 503: "ServiceUnavailableException"}
_MESSAGES = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "InternalServerException": "The server encountered an internal error while processing the request.",
    "ModelStreamErrorException": "The model encountered an error while streaming the response.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
}
_STREAM_ONLY = {"ModelErrorException": "ModelStreamErrorException"}
"""What an HTTP error type is as an exception frame (a model failing mid-stream)."""
_INVALID_TOKEN = "The security token included in the request is invalid."
_TYPE = "__type"  # the error type, between `error_body` and where it goes on the wire


_REFUSAL = web.RequestKey("llmroute_sim_sigv4_refusal", tuple)


class BedrockDialect(Dialect):
    overloaded_status = 503
    request_id_header = "x-amzn-RequestId"

    def __init__(self, aws_keys: AwsKeys | None = None, region: str = "us-east-1") -> None:
        self.aws_keys = aws_keys
        self.region = region

    def authorized(self, request: web.Request, api_key: str) -> bool:
        given = request.headers.get("Authorization", "")
        if self.aws_keys is not None and given.startswith("AWS4-"):
            refusal = sigv4_refusal(request, request[SIM_CALL].raw, self.aws_keys, self.region, "bedrock")
            if refusal is not None:
                request[_REFUSAL] = refusal
            return refusal is None
        return bool(api_key) and hmac.compare_digest(given.encode(), b"Bearer " + api_key.encode())

    def unauthorized(self, request: web.Request) -> web.Response:
        kind, message = request.get(_REFUSAL) or ("UnrecognizedClientException", _INVALID_TOKEN)
        return aws_error(request[SIM_CALL], 403, kind, message)

    def error_body(self, status: int, code: str | None, message: str | None,
                   fault: Fault | None) -> dict[str, Any]:
        kind = code or _ERROR_TYPES.get(status, "InternalServerException" if status >= 500 else "ValidationException")
        return {"message": message or _MESSAGES.get(kind, f"Error {status}"), _TYPE: kind}

    def error_payload(self, body: dict[str, Any], path: str, quirks: bool) -> Any:
        return {name: value for name, value in body.items() if name != _TYPE}

    def error_headers(self, fault: Fault) -> dict[str, str]:
        kind = self.error_body(fault.status or self.overloaded_status, fault.code, None, fault)[_TYPE]
        return {**super().error_headers(fault), "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}

    def in_band_error(self, body: dict[str, Any]) -> bytes:
        kind = str(body.get(_TYPE) or "InternalServerException")
        kind = _STREAM_ONLY.get(kind, kind)
        return encode_frame({":exception-type": kind[:1].lower() + kind[1:], ":content-type": "application/json",
                             ":message-type": "exception"}, orjson.dumps({"message": body.get("message")}))


def aws_error(call: SimCall, status: int, kind: str, message: str) -> web.Response:
    return call.state.json({"message": message}, status, {"x-amzn-ErrorType": kind})


def encode_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream frame with string headers (type 7), as Bedrock writes them."""
    encoded = b"".join(struct.pack(">B", len(name)) + name.encode() + struct.pack(">BH", 7, len(value.encode()))
                       + value.encode() for name, value in headers.items())
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return head + struct.pack(">I", zlib.crc32(head))


def chunk_frame(event: bytes) -> bytes:
    """An Anthropic stream event (SSE, as the Anthropic simulator writes it) as a Bedrock `chunk` frame."""
    data = event[event.index(b"data: ") + 6:].strip()
    return encode_frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                        orjson.dumps({"bytes": base64.b64encode(data).decode()}))


async def invoke(request: web.Request) -> web.StreamResponse:
    call = request[SIM_CALL]
    model_id = unquote(request.match_info["model"])
    claude = _CLAUDE.fullmatch(model_id)
    body = call.body
    if claude is None and embedding_model(model_id) and request.match_info["operation"] == "invoke":
        return embed(call, model_id)
    if claude is None:
        return aws_error(call, 400, "ValidationException", f"The provided model identifier is invalid: {model_id}")
    if not isinstance(body, dict):
        return aws_error(call, 400, "ValidationException", "Malformed input request, please reformat your input and try again.")
    problem = _bedrock_problem(body)
    if problem is not None:
        return aws_error(call, 400, "ValidationException", problem)
    asked = request.headers.get(TIER_HEADER)
    if asked is not None:
        if asked not in SERVICE_TIERS:
            return aws_error(call, 400, "ValidationException",
                             "1 validation error detected: Value at 'serviceTier' failed to satisfy constraint: Member "
                             f"must satisfy enum value set: [{', '.join(SERVICE_TIERS)}]")
        priority_out = asked == "priority" and not call.state.config.priority_capacity
        request[SERVED_TIER] = "default" if priority_out else asked
    streamed = request.match_info["operation"] == "invoke-with-response-stream"
    betas = body.get("anthropic_beta") or []
    request[API_HEADERS] = {"anthropic-version": "2023-06-01",
                                 "anthropic-beta": ",".join(b for b in betas if isinstance(b, str))}
    messages_body = {name: value for name, value in body.items() if name not in ("anthropic_version", "anthropic_beta")}
    request[SIM_CALL] = SimCall(call.state, {**messages_body, "model": claude.group(1), "stream": streamed}, call.fault)
    if streamed:
        request[STREAM_FRAMING] = StreamFraming(EVENT_STREAM, chunk_frame, call.state.dialect.in_band_error)
    response = await messages(request)
    if isinstance(response, web.Response) and response.status == 400 and not response.prepared:
        refused = orjson.loads(response.body) if isinstance(response.body, bytes) else {}
        return aws_error(call, 400, "ValidationException", str((refused.get("error") or {}).get("message")))
    return response


async def converse_any_model(request: web.Request) -> web.StreamResponse:
    return await converse(request, encode_frame)


def _bedrock_problem(body: dict[str, Any]) -> str | None:
    """What Bedrock refuses before Claude sees the body."""
    if body.get("anthropic_version") != BEDROCK_ANTHROPIC_VERSION:
        return f"anthropic_version: expected '{BEDROCK_ANTHROPIC_VERSION}', found {body.get('anthropic_version')!r}"
    extra = next((name for name in ("model", "stream") if name in body), None)
    if extra is not None:
        return f"Malformed input request: #: extraneous key [{extra}] is not permitted, please reformat your input and try again."
    betas = body.get("anthropic_beta")
    if betas is not None and not (isinstance(betas, list) and all(isinstance(b, str) for b in betas)):
        return "Malformed input request: #/anthropic_beta: expected type: JSONArray"
    return None


TIER_HEADER = "X-Amzn-Bedrock-Service-Tier"
"""InvokeModel's service tier, asked for and reported in this header (botocore's model: `serviceTier`)."""
SERVED_TIER = web.RequestKey("llmroute_sim_bedrock_served_tier", str)


async def _tier_header(request: web.Request, response: web.StreamResponse) -> None:
    """The tier that served an InvokeModel request that named one, on its answer or stream's headers."""
    served = request.get(SERVED_TIER)
    if served is not None:
        response.headers[TIER_HEADER] = served


def bedrock_app(api_key: str | None = None, *, aws_keys: AwsKeys | None = None, region: str = "us-east-1",
                **options: Unpack[SimOptions]) -> web.Application:
    """A Bedrock runtime of `region` serving Claude through InvokeModel and any model through Converse; it takes the API key `api_key` and
    requests signed with the access keys `aws_keys` knows (on its clock); no `api_key` and no `aws_keys`
    accepts any request."""
    key = api_key if api_key is not None or aws_keys is None else ""  # "": signed requests only
    app = with_prompt_cache(sim_app(key, options, BedrockDialect(aws_keys, region), name="sim-bedrock",
                                    models=DEFAULT_MODELS))
    app.router.add_post(r"/model/{model}/{operation:invoke|invoke-with-response-stream}", invoke)
    app.router.add_post(r"/model/{model}/{operation:converse|converse-stream}", converse_any_model)
    app.on_response_prepare.append(_tier_header)
    return app
