"""The data plane: the OpenAI- and Anthropic-compatible API that applications call on localhost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest

from llmroute_proxy.dialects.anthropic.encoder import AnthropicEncoder
from llmroute_proxy.dialects.anthropic.request_in import (
    AnthropicOnly,
    beta_features,
    request_to_canonical,
    routing_summary,
)
from llmroute_proxy.dialects.base import ChatRequest, Encoder, NativeBody, NativeDialect
from llmroute_proxy.dialects.openai.encoder import OpenAIEncoder
from llmroute_proxy.dialects.responses import items as responses_items
from llmroute_proxy.dialects.responses import request_in as responses
from llmroute_proxy.dialects.responses.encoder import ResponsesEncoder
from llmroute_proxy.dialects.thinking import check_messages as check_thinking_blocks
from llmroute_proxy.errors import (
    BadRequest,
    BodyTooLarge,
    LLMRouteError,
    LocalLimitExceeded,
    ModelNotFound,
    NoRouteSelects,
    NoTableLoaded,
    UpstreamError,
)
from llmroute_proxy.routing.budget import BudgetDecision, Reservation
from llmroute_proxy.routing.decide import BudgetInputs, decide
from llmroute_proxy.routing.rules import RequestFacts
from llmroute_proxy.scrubbing import ScrubbingFilter
from llmroute_proxy.server.accesslog import log_access
from llmroute_proxy.server.counting import CountLine, count_tokens
from llmroute_proxy.server.dispatch import Exchange, dispatch_chat
from llmroute_proxy.server.kept_responses import delete_response as delete_kept_response
from llmroute_proxy.server.kept_responses import read_input_items as read_kept_input_items
from llmroute_proxy.server.kept_responses import read_response as read_kept_response
from llmroute_proxy.server.origins import Screen, protect, screen
from llmroute_proxy.server.outcome import Outcome
from llmroute_proxy.server.response_store import ResponseNotFound
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.server.telemetry import RequestScope
from llmroute_proxy.table import Route, Table
from llmroute_proxy.validation import validate_chat, validate_embeddings

log = logging.getLogger("llmroute.proxy")

SIDECAR = web.AppKey("sidecar", Sidecar)
ROUTE_HEADER = "x-llmroute-route"
SCRUBBED_LOGGERS = ("llmroute.proxy", "llmroute.access", "llmroute.sync", "aiohttp.access", "aiohttp.client",
                    "aiohttp.internal", "aiohttp.server", "aiohttp.web", "asyncio")
"""The loggers whose records pass the sidecar's scrubber while it serves (a filter sees only its
own logger's records, not those of the loggers below it)."""


def create_app(sidecar: Sidecar) -> web.Application:
    # aiohttp's own limit is set above ours so that we answer 413 in the client's error shape
    app = web.Application(client_max_size=sidecar.settings.max_body_bytes + 1)
    app[SIDECAR] = sidecar
    protect(app, sidecar.settings.allow_origins)  # its refusals and preflights: `browser_screen`
    app.cleanup_ctx.append(_scrubbed_logs)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/messages", anthropic_messages)
    app.router.add_post("/v1/messages/count_tokens", count_message_tokens)
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    app.router.add_get("/v1/responses/{response_id}/input_items", list_input_items)
    app.router.add_post("/v1/responses/{response_id}/cancel", cancel_response)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_get("/", root)
    return app


ROOT_TEXT = "llmroute sidecar: the OpenAI API at /v1, Anthropic's Messages API at /v1/messages.\n"


async def root(request: web.Request) -> web.Response:
    """`GET /` and `HEAD /`: what listens here. Claude Code sends `HEAD /` to its base URL as it starts;
    a 404 would be logged as a refused request the operator can do nothing about."""
    return web.Response(text=ROOT_TEXT)


async def _scrubbed_logs(app: web.Application) -> AsyncIterator[None]:
    sidecar = app[SIDECAR]
    scrubbing = ScrubbingFilter(lambda: sidecar.scrubber)
    for name in SCRUBBED_LOGGERS:
        logging.getLogger(name).addFilter(scrubbing)
    yield
    for name in SCRUBBED_LOGGERS:
        logging.getLogger(name).removeFilter(scrubbing)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    sidecar = request.app[SIDECAR]
    scope = sidecar.telemetry.start_request("chat", request.headers, path=request.path)
    try:
        chat = ChatRequest(check_thinking_blocks(validate_chat(await _read_json(request, sidecar))))
    except BaseException as error:
        return _unrouted(request, sidecar, scope, OpenAIEncoder(None), error)
    return await _serve(request, sidecar, scope, chat, OpenAIEncoder(chat, int(sidecar.wallclock())))


async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    sidecar = request.app[SIDECAR]
    scope = sidecar.telemetry.start_request("chat", request.headers, path=request.path)
    body: Any = None
    try:
        body = await _read_json(request, sidecar)
        chat = _messages_request(body, beta_features(request.headers.get("anthropic-beta")))
    except BaseException as error:
        return _unrouted(request, sidecar, scope, _messages_encoder(body), error)
    return await _serve(request, sidecar, scope, chat, AnthropicEncoder(chat.body["model"]))


COUNTING = "count_tokens"
"""A token count's `gen_ai.operation.name`. The GenAI conventions name no such operation: this is the
endpoint's own name (Anthropic's `count_tokens`), in their snake_case (`text_completion`, `execute_tool`)."""


async def count_message_tokens(request: web.Request) -> web.StreamResponse:
    """A Messages request's input tokens, counted where it would be sent (`server.counting`). Never
    charged; but in flight for the drain once routed, traced, and written to the access log, as every
    request is."""
    sidecar = request.app[SIDECAR]
    scope = sidecar.telemetry.start_request(COUNTING, request.headers, path=request.path, metered=False)
    line = CountLine(_named_route_name(request, sidecar))
    response: web.StreamResponse | None = None
    unanswered = 499
    try:
        response = await _count(request, sidecar, scope, line)
        return response
    except BaseException as error:
        unanswered = _unanswered_status(error)
        raise
    finally:
        outcome = line.outcome(sidecar, response.status if response is not None else unanswered, scope.stop(),
                               scope.trace_id)
        scope.counted(line.how)
        scope.end(outcome.status, outcome.error_type, tier=outcome.tier)
        log_access(outcome)


async def _count(request: web.Request, sidecar: Sidecar, scope: RequestScope, line: CountLine) -> web.Response:
    """The count's answer; `line` learns the model (once routed: a known name, never the client's
    text), the decision and the count as they come. Like a generation request, it is in flight for the
    drain only once its body is read and it is routed: a slow upload does not hold a drain."""
    body: Any = None
    try:
        body = await _read_json(request, sidecar)
        if sidecar.draining:
            raise _Draining()
        chat = _messages_request(body, beta_features(request.headers.get("anthropic-beta")), counting=True)
        route = _route(request, _table(sidecar))
        facts = _facts(request, chat, "chat")
        decision = decide(route, facts, roll=sidecar.rng.random(), native=chat.native)
    except LLMRouteError as error:
        line.refused = error.label
        return _error_response(_messages_encoder(body), error, _early_headers(request, sidecar))
    line.model, line.decision = chat.body["model"], decision
    choice, experiment = decision.choice, decision.experiment
    scope.routed(decision.route.name, choice.tier, choice.rule, experiment.name if experiment else None)
    task = sidecar.request_started()
    try:
        line.count = count = await count_tokens(sidecar, chat, decision, facts.prompt_tokens, scope)
    except asyncio.CancelledError:
        if (cut := sidecar.take_drain_cut()) is None:
            raise
        line.error = cut.label
        return _error_response(AnthropicEncoder(line.model), cut, _early_headers(request, sidecar))
    finally:
        sidecar.request_ended(task)
    headers = count.headers(decision.route)
    if count.error is not None:
        line.error = count.error.label
        return _error_response(_messages_encoder(body), count.error, headers)
    return web.Response(body=count.body, headers=headers, content_type="application/json")


def _messages_request(body: Any, betas: str, counting: bool = False) -> ChatRequest:
    """A Messages request (`counting`: a count-tokens one), canonical; one only Anthropic can serve is
    summed up for the router, and keeps why (`NativeBody.only`)."""
    try:
        canonical = request_to_canonical(body, counting=counting)
        return ChatRequest(validate_chat(canonical), NativeBody(NativeDialect.ANTHROPIC_MESSAGES, body, betas=betas))
    except AnthropicOnly as only:
        return ChatRequest(validate_chat(routing_summary(body)), NativeBody(NativeDialect.ANTHROPIC_MESSAGES, body, only,
                                                                        betas=betas))


def _messages_encoder(body: Any) -> AnthropicEncoder:
    model = body.get("model") if isinstance(body, dict) else None
    return AnthropicEncoder(model if isinstance(model, str) else "")


async def create_response(request: web.Request) -> web.StreamResponse:
    sidecar = request.app[SIDECAR]
    scope = sidecar.telemetry.start_request("chat", request.headers, path=request.path)
    try:
        body = await _read_json(request, sidecar)
        history, unheld = _conversation(sidecar, responses.previous_response_id(body))
        turn = responses.read_turn(body, history, unheld)
        chat = ChatRequest(turn.checked(),
                           NativeBody(NativeDialect.OPENAI_RESPONSES, turn.native_body(), turn.only, turn.unheld,
                                      unheld.held_by if unheld is not None else ""))
    except BaseException as error:
        return _unrouted(request, sidecar, scope, ResponsesEncoder(None), error)
    encoder = ResponsesEncoder(turn, int(sidecar.wallclock()), sidecar.responses, sidecar.clock)
    return await _serve(request, sidecar, scope, chat, encoder)


def _conversation(sidecar: Sidecar, previous: str | None) -> tuple[list[dict[str, Any]], ResponseNotFound | None]:
    """The earlier turns a Responses request continues, or, when the store does not hold them but a
    provider may (never stored here, expired, evicted, or held by a provider only: not deleted), none
    and the store's 404 (naming that provider, when the store knows it)."""
    if previous is None:
        return [], None
    try:
        return sidecar.responses.conversation(previous, sidecar.clock()), None
    except ResponseNotFound as not_found:
        if not_found.deleted:
            raise
        return [], not_found


async def get_response(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    try:
        stored = await read_kept_response(sidecar, request.match_info["response_id"], _keepers_route(request, sidecar))
    except LLMRouteError as error:
        return _error_response(ResponsesEncoder(None), error)
    return web.Response(body=stored, content_type="application/json")


def _keepers_route(request: web.Request, sidecar: Sidecar) -> Route | None:
    """The route whose providers are asked for a response the sidecar does not hold: the one the
    request names (`x-llmroute-route`), else the default; None without a table."""
    return sidecar.table.route(request.headers.get(ROUTE_HEADER)) if sidecar.table is not None else None


async def delete_response(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    response_id = request.match_info["response_id"]
    try:
        await delete_kept_response(sidecar, response_id, _keepers_route(request, sidecar))
    except LLMRouteError as error:
        return _error_response(ResponsesEncoder(None), error)
    return web.json_response({"id": response_id, "object": "response.deleted", "deleted": True}, dumps=_dumps)


async def list_input_items(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    try:
        listed = await read_kept_input_items(sidecar, request.match_info["response_id"],
                                             _keepers_route(request, sidecar), request.query)
    except LLMRouteError as error:
        return _error_response(ResponsesEncoder(None), error)
    return web.Response(body=listed, content_type="application/json")


async def cancel_response(request: web.Request) -> web.Response:
    sidecar = request.app[SIDECAR]
    response_id = request.match_info["response_id"]
    try:
        sidecar.responses.response(response_id, sidecar.clock())  # an unknown id is a 404 that says why
        raise responses_items.not_cancellable(response_id)
    except LLMRouteError as error:
        return _error_response(ResponsesEncoder(None), error)


async def embeddings(request: web.Request) -> web.StreamResponse:
    sidecar = request.app[SIDECAR]
    scope = sidecar.telemetry.start_request("embeddings", request.headers, path=request.path)
    try:
        body = validate_embeddings(await _read_json(request, sidecar))
    except BaseException as error:
        return _unrouted(request, sidecar, scope, OpenAIEncoder(None), error)
    return await _serve(request, sidecar, scope, ChatRequest(body), OpenAIEncoder(None))


async def list_models(request: web.Request) -> web.StreamResponse:
    """The names the `model` field accepts, as OpenAI lists models, or as Anthropic does for an
    Anthropic client (it sends `anthropic-version`): one page that holds them all."""
    sidecar = request.app[SIDECAR]
    anthropic = _anthropic_client(request)
    try:
        names = _model_names(request, sidecar)
    except LLMRouteError as error:
        return _model_error(request, sidecar, error)
    data = [_model(name, sidecar, anthropic) for name in names]
    if anthropic:
        page = {"data": data, "has_more": False, "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None}
        return web.json_response(page, dumps=_dumps)
    return web.json_response({"object": "list", "data": data}, dumps=_dumps)


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    """One of the names `list_models` lists (a provider's model name may hold slashes), else a 404."""
    sidecar = request.app[SIDECAR]
    model = request.match_info["model"]
    try:
        names = _model_names(request, sidecar)
        if model not in names:
            raise ModelNotFound(model, names)
    except LLMRouteError as error:
        return _model_error(request, sidecar, error)
    return web.json_response(_model(model, sidecar, _anthropic_client(request)), dumps=_dumps)


def _anthropic_client(request: web.Request) -> bool:
    return "anthropic-version" in request.headers


def _model_names(request: web.Request, sidecar: Sidecar) -> list[str]:
    """The names the `model` field accepts on the request's route: its tiers, `auto`, its targets' models."""
    route = _route(request, _table(sidecar))
    return [*route.tiers, "auto", *(m for m in route.models() if m not in route.tiers)]


def _model(name: str, sidecar: Sidecar, anthropic: bool) -> dict[str, Any]:
    loaded = int(sidecar.table_loaded_at or 0)
    if anthropic:
        created_at = datetime.fromtimestamp(loaded, UTC).isoformat().replace("+00:00", "Z")
        return {"type": "model", "id": name, "display_name": name, "created_at": created_at}
    return {"id": name, "object": "model", "created": loaded, "owned_by": "llmroute"}


def _model_error(request: web.Request, sidecar: Sidecar, error: LLMRouteError) -> web.StreamResponse:
    encoder = AnthropicEncoder("") if _anthropic_client(request) else OpenAIEncoder(None)
    return _error_response(encoder, error, _early_headers(request, sidecar))


async def _serve(request: web.Request, sidecar: Sidecar, scope: RequestScope, chat: ChatRequest,
                 encoder: Encoder) -> web.StreamResponse:
    """A generation request, read and checked (`scope`: started as the handler began, its operation
    chat or embeddings), routed and dispatched."""
    operation = scope.operation
    try:
        if sidecar.draining:
            raise _Draining()
        route = _route(request, _table(sidecar))
        facts = _facts(request, chat, operation)
        prompt_tokens = facts.prompt_tokens if route.budget is not None or sidecar.tpm_limited else 0
        decision = decide(route, facts, roll=sidecar.rng.random(), native=chat.native,
                          budget=_budget_inputs(sidecar, chat, prompt_tokens))
    except BaseException as error:
        return _unrouted(request, sidecar, scope, encoder, error)
    if decision.budget is not None and decision.budget.alert:
        _log_budget_alert(decision.route)
    route, choice, experiment = decision.route, decision.choice, decision.experiment
    scope.routed(route.name, choice.tier, choice.rule, experiment.name if experiment else None,
                 input_messages=chat.body.get("messages") if sidecar.telemetry.capture_content else None)
    now = sidecar.clock()
    ex = Exchange(request, chat, route, choice, experiment, encoder, scope,
                  deadline=now + route.fallback.overall_timeout, prompt_tokens=prompt_tokens,
                  embeddings=operation == "embeddings", targets=decision.target_override)
    task = sidecar.request_started()
    response: web.StreamResponse | None = None
    unanswered = 499
    reservation = decision.budget
    try:
        if reservation is not None and not reservation.allowed:
            raise _budget_spent(route, reservation)
        response = await dispatch_chat(sidecar, ex)
        return response
    except LLMRouteError as error:
        ex.error = error.label
        response = _error_response(encoder, error, ex.headers())
        return response
    except asyncio.CancelledError:
        # a stream that has begun (a target answered) ends with its own in-band error in dispatch
        if ex.target is not None or (cut := sidecar.take_drain_cut()) is None:
            raise
        ex.error = cut.label
        response = _error_response(encoder, cut, ex.headers())
        return response
    except BaseException as error:
        unanswered = _unanswered_status(error)
        raise
    finally:
        sidecar.request_ended(task)
        if reservation is not None and reservation.reservation is not None:
            _settle_budget(sidecar, reservation.reservation, ex)
        outcome = _outcome(sidecar, ex, response.status if response is not None else unanswered)
        scope.end(outcome.status, outcome.error_type, outcome.usage, outcome.cost_usd, outcome.tier)
        sidecar.decisions.append(outcome)
        log_access(outcome)


def _unrouted(request: web.Request, sidecar: Sidecar, scope: RequestScope, encoder: Encoder,
              error: BaseException) -> web.Response:
    """A generation request that ends before it is routed: refused (an `LLMRouteError`: answered in
    its dialect), or stopped by anything else (the client went away, a bug: raised on, as `_serve`
    does after routing). Seen as every request is: one access line and one point of the request metrics
    (no attempt, token or cost), and its SERVER span."""
    if not isinstance(error, LLMRouteError):
        _end_unrouted(request, sidecar, scope, _unanswered_status(error), None)
        raise error
    response = _error_response(encoder, error, _early_headers(request, sidecar))
    _end_unrouted(request, sidecar, scope, response.status, error.label)
    return response


def _unanswered_status(error: BaseException) -> int:
    """The status a request's line and metrics say when its handler raised: 499 when the client went
    away (its task cancelled, its connection gone), else 500: a bug, which the client is answered as a
    500 (`connections`) and whose traceback is logged."""
    return 499 if isinstance(error, (asyncio.CancelledError, ConnectionError)) else 500


def _end_unrouted(request: web.Request, sidecar: Sidecar, scope: RequestScope, status: int,
                   refused: str | None) -> None:
    """Its scope ended and its line written. Its route is the one the request names when the table has
    it, else the default: a name in `x-llmroute-route` the table lacks is client text, kept out of the
    line and the metric labels (as its model is: written only once a request is routed)."""
    scope.route = _named_route_name(request, sidecar)
    outcome = Outcome(sidecar.wallclock(), scope.route, "", "", "", "", None, False, None, (), status,
                      scope.stop(), None, None, scope.trace_id, refused=refused)
    scope.end(outcome.status, outcome.error_type)
    log_access(outcome)


def _facts(request: web.Request, chat: ChatRequest, operation: str) -> RequestFacts:
    """What the rules read of a request (`operation`: chat or embeddings)."""
    return RequestFacts(chat.body["model"], chat.body.get("messages") or [], request.headers,
                        bool(chat.body.get("tools")), _user(chat.body),
                        embedding_input=chat.body.get("input") if operation == "embeddings" else None)


def _budget_spent(route: Route, decision: BudgetDecision) -> LocalLimitExceeded:
    assert route.budget is not None
    return LocalLimitExceeded(
        f"Route '{route.name}' has spent its {route.budget.period.value} budget of "
        f"{route.budget.limit_usd:g} USD; it resets in {decision.retry_after:.0f}s.",
        decision.retry_after, code="budget_exceeded", should_retry=False)


def _budget_inputs(sidecar: Sidecar, chat: ChatRequest, prompt_tokens: int) -> BudgetInputs:
    max_output = (chat.max_output_tokens or sidecar.settings.default_max_output_tokens) * chat.choices
    return BudgetInputs(sidecar.ledger, sidecar.wallclock(), prompt_tokens, max_output, chat.web_searches,
                        chat.service_tier)


def _log_budget_alert(route: Route) -> None:
    assert route.budget is not None
    log.warning("route %s crossed %g%% of its %s budget of %g USD", route.name,
                route.budget.alert_at_percent, route.budget.period.value, route.budget.limit_usd)


def _settle_budget(sidecar: Sidecar, reservation: Reservation, ex: Exchange) -> None:
    """Real cost when known (for a stream stopped midway or an answer without usage, the estimate of
    what it used); nothing when no answer came; the reserved estimate for an answer with no cost at
    all (none is known: kept so that a budget is never spent for free)."""
    if ex.cost is not None:
        sidecar.ledger.settle(reservation, ex.cost, sidecar.wallclock())
    elif ex.target is not None:
        sidecar.ledger.settle(reservation, reservation.estimate_usd, sidecar.wallclock())
    else:
        sidecar.ledger.release(reservation)


def _outcome(sidecar: Sidecar, ex: Exchange, status: int) -> Outcome:
    choice, target, tier = ex.choice, ex.target, ex.tier
    return Outcome(sidecar.wallclock(), ex.route.name, ex.requested_model, tier, choice.rule, choice.reason,
                   ex.experiment.name if ex.experiment else None, ex.chat.stream, target, ex.attempts, status,
                   ex.scope.stop(), ex.usage, ex.cost, ex.scope.trace_id, ex.usage_estimated, error=ex.error,
                   fallback_from=choice.tier if tier != choice.tier else None, passed_over=ex.passed_over)


class _Draining(LLMRouteError):
    status = 503
    error_type = "service_unavailable"
    code = "draining"

    def __init__(self) -> None:
        super().__init__("This llmroute sidecar is shutting down and takes no new requests.")


async def _read_json(request: web.Request, sidecar: Sidecar) -> Any:
    limit = sidecar.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(limit) from None
    except web.RequestPayloadError:
        # aiohttp decodes a gzip/deflate/br/zstd body itself and reads chunked framing: either can be broken
        encoding = request.headers.get(hdrs.CONTENT_ENCODING)
        if encoding:
            raise BadRequest(f"The request body could not be decoded as its header Content-Encoding: "
                             f"{encoding} says.", param="content-encoding") from None
        raise BadRequest("The request body could not be read: its framing is malformed.") from None
    if len(raw) > limit:
        raise BodyTooLarge(limit)
    if not raw:
        raise BadRequest("The request body is empty; a JSON object was expected.")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "utf-8" in str(exc).lower():
            raise BadRequest("The request body is not valid UTF-8.") from None
        raise BadRequest(f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}.") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING and _too_deep(value):
        raise BadRequest(f"The request body nests JSON arrays and objects more than {MAX_NESTING} levels deep.")
    return value


MAX_NESTING = 255
"""orjson reads JSON nested up to 1024 levels but writes only 255, and every body is written again on
its way upstream; the bracket count (C-fast) spares the exact check to bodies that could be that deep."""


def _too_deep(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return True
    return False


def _table(sidecar: Sidecar) -> Table:
    if sidecar.table is None:
        raise NoTableLoaded()
    return sidecar.table


def _route(request: web.Request, table: Table) -> Route:
    name = request.headers.get(ROUTE_HEADER)
    route = table.route(name)
    if route is None and not table.routes:
        raise NoRouteSelects()
    if route is None:
        known = ", ".join(r.name for r in table.routes) or "none"
        raise BadRequest(f"Unknown route '{name}' in {ROUTE_HEADER}; known routes: {known}.", param=ROUTE_HEADER,
                         code="route_not_found")
    return route


def _user(body: dict[str, Any]) -> str | None:
    user = body.get("user") or body.get("safety_identifier")
    return user if isinstance(user, str) else None


def _named_route(request: BaseRequest, sidecar: Sidecar) -> Route | None:
    """The route the request names (`x-llmroute-route`), else the default; None without a table."""
    return sidecar.table.route(request.headers.get(ROUTE_HEADER)) if sidecar.table is not None else None


def _named_route_name(request: BaseRequest, sidecar: Sidecar) -> str:
    named = _named_route(request, sidecar)
    return named.name if named is not None else ""


def _early_headers(request: BaseRequest, sidecar: Sidecar) -> dict[str, str]:
    """The x-llmroute-* headers known before any attempt: the route, when it can be told."""
    headers = {"x-llmroute-attempts": "0"}
    route = _named_route(request, sidecar)
    if route is not None:
        headers["x-llmroute-route"] = route.name
    return headers


def browser_screen(sidecar: Sidecar) -> Screen:
    """The data plane's browser policy, for its listener's front door (see `origins`)."""

    def refuse(request: BaseRequest, error: LLMRouteError) -> web.Response:
        """An answer before any handler ran, in the dialect of the endpoint asked for."""
        encoder = AnthropicEncoder("") if request.path.startswith("/v1/messages") else OpenAIEncoder(None)
        return _error_response(encoder, error, _early_headers(request, sidecar))

    return screen(sidecar.settings.allow_origins, refuse)


def _error_response(encoder: Encoder, error: LLMRouteError, headers: dict[str, str] | None = None) -> web.Response:
    status = error.client_status if isinstance(error, UpstreamError) else error.status
    out = {**(headers or {}), **error.headers(), "Content-Type": "application/json"}
    return web.Response(status=status, body=encoder.error_body(error, status), headers=out)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
