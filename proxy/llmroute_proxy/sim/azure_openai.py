"""A simulated Azure OpenAI resource: OpenAI's answers (the handlers of `sim/openai.py`) behind
Azure's URLs in both forms, its `api-key` header, its error shapes and its content-filter
annotations (providers.md §4.1), for `AzureOpenAI` and for the stock client on the v1 URLs.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Unpack

from aiohttp import web

from llmroute_proxy.sim.faults import Fault
from llmroute_proxy.sim.openai import (
    CONTENT_FILTERS,
    SAFE_FILTER_RESULTS,
    ContentFilters,
    OpenAIDialect,
    bad_request,
    chat_completions,
    embeddings,
)
from llmroute_proxy.sim.responses import add_routes as add_responses_routes
from llmroute_proxy.sim.runtime import SIM_CALL, SimCall, SimOptions, sim_app


@dataclass(frozen=True, slots=True)
class AzureOptions:
    """What makes an OpenAI simulator an Azure OpenAI resource (see `azure_openai_app`)."""

    api_versions: frozenset[str]
    deployments: frozenset[str] | None


_AZURE = web.AppKey("llmroute_sim_azure", AzureOptions)


# --- Azure OpenAI ------------------------------------------------------------------------------

AZURE_API_VERSIONS = ("2023-05-15", "2024-02-01", "2024-06-01", "2024-10-21", "2024-12-01-preview",
                      "2025-01-01-preview", "2025-03-01-preview", "2025-04-01-preview")
"""The dated api-versions the classic URL form accepts by default."""
AZURE_V1_API_VERSIONS = frozenset({"preview", "latest", "v1"})
"""The v1 form needs no api-version; these are the ones it tolerates."""
STREAM_OPTIONS_SINCE = "2024-09-01"
"""Older dated api-versions reject `stream_options` as an unknown argument."""
RESPONSES_SINCE = "2025-03-01-preview"
"""The first dated api-version with the Responses API on `/openai/responses`."""
_V1_PREFIX = "/openai/v1/"

_MISSING_KEY = ("Access denied due to missing subscription key. Make sure to include subscription key "
                "when making requests to an API.")
_INVALID_KEY = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
                "a valid key for an active subscription and use a correct regional API endpoint for your resource.")
_NO_DEPLOYMENT = ("The API deployment for this resource does not exist. If you created the deployment "
                  "within the last 5 minutes, please wait a moment and try again.")
_FILTERED_PROMPT = ("The response was filtered due to the prompt triggering Azure OpenAI's content management "
                    "policy. Please modify your prompt and retry.")
_AZURE_ERRORS: dict[int, tuple[str, str]] = {
    401: ("401", _INVALID_KEY),
    403: ("403", "Public access is disabled. Please configure private endpoint."),
    404: ("DeploymentNotFound", _NO_DEPLOYMENT),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request. Please try again later."),
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _azure_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _content_filter_error(status: int, message: str | None) -> dict[str, Any]:
    return {"error": {
        "message": message or _FILTERED_PROMPT, "type": None, "param": "prompt", "code": "content_filter",
        "status": status, "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
            **SAFE_FILTER_RESULTS, "jailbreak": {"filtered": True, "detected": True}}}}}


def _hint_seconds(fault: Fault | None) -> float | None:
    if fault is None:
        return None
    if fault.retry_after_ms is not None:
        return fault.retry_after_ms / 1000
    return fault.retry_after


def _rate_limited(fault: Fault | None) -> dict[str, Any]:
    seconds = math.ceil(_hint_seconds(fault) or 1)
    return _azure_error("429", (
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API have exceeded call rate limit "
        f"of your current OpenAI S0 pricing tier. Please retry after {seconds} second{'s' * (seconds != 1)}."))


class AzureOpenAIDialect(OpenAIDialect):
    """Azure's key header and error shapes; body errors are OpenAI's, which Azure passes through."""

    prompt_blocked_code: ClassVar[str] = "content_filter"

    static_headers: ClassVar[dict[str, str]] = {
        "x-ms-region": "Sim Central",
        "x-ms-rai-invoked": "true",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-remaining-tokens": "9999000",
    }

    def authorized(self, request: web.Request, api_key: str) -> bool:
        """The `api-key` header; the v1 form also takes the key as a bearer token (the stock OpenAI SDK)."""
        sent = request.headers.get("api-key")
        if sent is None and request.path.startswith(_V1_PREFIX):
            bearer = request.headers.get("Authorization", "")
            sent = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else None
        return sent is not None and hmac.compare_digest(sent.encode(), api_key.encode())

    def unauthorized(self, request: web.Request) -> web.Response:
        missing = "api-key" not in request.headers and "Authorization" not in request.headers
        return request[SIM_CALL].state.json(_azure_error("401", _MISSING_KEY if missing else _INVALID_KEY), 401)

    def error_body(self, status: int, code: str | None, message: str | None,
                   fault: Fault | None) -> dict[str, Any]:
        if code == "content_filter":
            return _content_filter_error(status, message)
        if code is None and status == 429:
            return _rate_limited(fault) if message is None else _azure_error("429", message)
        if code is None and status in _AZURE_ERRORS:
            azure_code, default_message = _AZURE_ERRORS[status]
            return _azure_error(azure_code, message or default_message)
        return super().error_body(status, code, message, fault)

    def error_headers(self, fault: Fault) -> dict[str, str]:
        """Azure sends both back-off headers whenever it sends one."""
        headers = super().error_headers(fault)
        seconds = _hint_seconds(fault)
        if seconds is not None:
            headers.setdefault("retry-after", str(math.ceil(seconds)))
            headers.setdefault("retry-after-ms", str(round(seconds * 1000)))
        return headers


def _version_refusal(call: SimCall, options: AzureOptions, version: str | None,
                     classic: bool) -> web.Response | None:
    """Azure answers a classic URL without api-version with a bare 404, not a 400."""
    if classic and version is None:
        return call.state.json(_azure_error("404", "Resource not found"), 404)
    accepted = options.api_versions if classic else AZURE_V1_API_VERSIONS
    if version is not None and version not in accepted:
        return call.state.json(_azure_error("BadRequest", "API version not supported"), 400)
    return None


def _azure_refusal(call: SimCall, options: AzureOptions, version: str | None,
                   deployment: str | None) -> web.Response | None:
    """What Azure answers before the model sees the request, or None."""
    classic = deployment is not None
    refused = _version_refusal(call, options, version, classic)
    if refused is not None:
        return refused
    body = call.body if isinstance(call.body, dict) else {}
    name = deployment if classic else body.get("model")
    if options.deployments is not None and isinstance(name, str) and name not in options.deployments:
        return call.state.json(_azure_error("DeploymentNotFound", _NO_DEPLOYMENT), 404)
    if classic and version is not None and version < STREAM_OPTIONS_SINCE and "stream_options" in body:
        return bad_request(call, "Unrecognized request argument supplied: stream_options")
    return None


def _azure_route(serve: _Handler) -> _Handler:
    """An OpenAI handler behind Azure's addressing; in the classic form the path's deployment is the model."""
    async def handler(request: web.Request) -> web.StreamResponse:
        call = request[SIM_CALL]
        deployment = request.match_info.get("deployment")
        refused = _azure_refusal(call, request.app[_AZURE], request.query.get("api-version"), deployment)
        if refused is not None:
            return refused
        if deployment is not None and isinstance(call.body, dict):
            request[SIM_CALL] = replace(call, body={**call.body, "model": deployment})
        return await serve(request)
    return handler


def _azure_responses_route(serve: _Handler) -> _Handler:
    """A Responses API handler behind Azure's addressing: `/openai/v1/responses` as the v1 chat route,
    `/openai/responses` (the preview form) only with an api-version that has the Responses API.
    The model is the deployment name in the body either way."""
    async def handler(request: web.Request) -> web.StreamResponse:
        call = request[SIM_CALL]
        options = request.app[_AZURE]
        version = request.query.get("api-version")
        if request.path.startswith(_V1_PREFIX):
            refused = _version_refusal(call, options, version, classic=False)
        elif version is None:
            refused = call.state.json(_azure_error("404", "Resource not found"), 404)
        elif version not in options.api_versions | AZURE_V1_API_VERSIONS:
            refused = call.state.json(_azure_error("BadRequest", "API version not supported"), 400)
        elif version not in AZURE_V1_API_VERSIONS and version < RESPONSES_SINCE:
            refused = bad_request(call, f"Azure OpenAI Responses API is enabled only for api-version "
                                        f"{RESPONSES_SINCE} and later")
        else:
            refused = None
        if refused is not None:
            return refused
        body = call.body if isinstance(call.body, dict) else {}
        model = body.get("model")
        if request.method == "POST" and options.deployments is not None and isinstance(model, str) \
                and model not in options.deployments:
            return bad_request(call, f"The requested model '{model}' with deployment name {model} does not exist.",
                               "model", "model_not_found")
        return await serve(request)
    return handler


def azure_openai_app(api_key: str | None = None, *, deployments: Sequence[str] | None = None,
                     api_versions: Sequence[str] = AZURE_API_VERSIONS, async_filter: bool = False,
                     **options: Unpack[SimOptions]) -> web.Application:
    """An Azure OpenAI resource, in both URL forms (providers.md §4.1).

    `api_key` None accepts any key; `deployments` None serves any deployment name. Answers carry
    Azure's content-filter results; `async_filter` moves them from the content chunks of a stream
    to an annotation chunk after the finish chunk, as Azure's asynchronous filter does. A prompt
    block is the fault `Fault(FaultKind.STATUS, status=400, code="content_filter")` (or
    `FaultKind.PROMPT_BLOCKED`). `quirks` adds OpenAI's (see `openai_app`) and the asynchronous filter.
    """
    options["models"] = tuple(deployments or ())
    app = sim_app(api_key, options, AzureOpenAIDialect(), name="sim-azure", models=())
    app[_AZURE] = AzureOptions(frozenset(api_versions), None if deployments is None else frozenset(deployments))
    app[CONTENT_FILTERS] = ContentFilters(async_filter)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", _azure_route(chat_completions))
    app.router.add_post("/openai/deployments/{deployment}/embeddings", _azure_route(embeddings))
    app.router.add_post(_V1_PREFIX + "chat/completions", _azure_route(chat_completions))
    app.router.add_post(_V1_PREFIX + "embeddings", _azure_route(embeddings))
    for prefix in ("/openai", _V1_PREFIX.rstrip("/")):
        add_responses_routes(app, prefix, _azure_responses_route)
    return app
