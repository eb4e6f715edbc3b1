"""The attempt loop: carry out the planner's decisions against real upstreams.

The planner (pure) says which target to try next; this module sends the request, bounds it
with the per-attempt deadlines (first token, idle gap between chunks, total) and the overall
request deadline, feeds each outcome back, and writes the answer in the client's dialect.

A target whose provider cannot translate the request (a field it has no equivalent for: `seed` for
Claude, an embeddings request for Anthropic) is passed over before anything is sent to it, as if it were
not in the tier: the request goes to the next target that can take it, and only when none can is the
client answered the first target's refusal, a 400 naming the field.

Streams are primed: nothing reaches the client before the first chunk that carries output,
so a stream that fails before its first token fails over invisibly. After that the response
is committed, and a failure ends it with an explicit in-band error, never with a clean end.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from aiohttp import web

from llmroute_proxy.dialects.base import (
    BilledFailure,
    ChatRequest,
    ChatResult,
    Encoder,
    NativeDialect,
    StreamChunk,
    StreamTranslator,
    UpstreamRequest,
    Usage,
    WholeRelayedStream,
    WholeStream,
    carries_output,
    in_choice_order,
)
from llmroute_proxy.dialects.service_tiers import BEDROCK_TIER_HEADER
from llmroute_proxy.dialects.thinking import refuses_signature
from llmroute_proxy.errors import (
    AttemptRecord,
    BadRequest,
    FailureKind,
    UpstreamError,
)
from llmroute_proxy.providers.base import Provider
from llmroute_proxy.providers.registry import provider_for
from llmroute_proxy.routing.cost import answer_usage, cost_usd, streamed_usage
from llmroute_proxy.routing.failover import Attempt, AttemptPlanner, Stop, StopReason
from llmroute_proxy.routing.rules import RequestFacts, TierChoice
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.server.telemetry import AttemptScope, RequestScope
from llmroute_proxy.server.upstream import MAX_ERROR_BODY, UpstreamResponse
from llmroute_proxy.table import (
    ACCESS_KEY_AUTH,
    METADATA_AUTH,
    Experiment,
    ProviderType,
    Route,
    Target,
    TargetId,
)

log = logging.getLogger("llmroute.proxy")

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(slots=True)
class Exchange:
    """One client request on its way through the attempt loop, and what it has cost so far."""

    http: web.Request
    chat: ChatRequest
    route: Route
    choice: TierChoice
    experiment: Experiment | None
    encoder: Encoder
    scope: RequestScope
    deadline: float
    prompt_tokens: int
    attempts: list[AttemptRecord] = field(default_factory=list)
    usage: Usage | None = None
    cost: float | None = None
    target: Target | None = None
    embeddings: bool = False
    targets: tuple[Target, ...] | None = None  # the decision's candidates, when not the tier's own
    usage_estimated: bool = False  # `usage` and `cost` are the sidecar's estimate (a stream stopped, an unmetered answer)
    error: str | None = None  # the code of the error it was answered, in its status or in its stream (`label`)
    attempt_tier: str | None = None  # the tier of the latest attempt's target (a fallback tier's, or the chosen one)
    passed_over: list[tuple[TargetId, str | None]] = field(default_factory=list)
    """The targets that could not take the request (their provider refused to translate it), each with
    the field it named, in the order the plan came to them."""

    @property
    def tier(self) -> str:
        """The tier the request is reported in (its header, access line, /status and metrics): the one
        whose target answered, or, when none did, the one last tried; the chosen one before any attempt.
        A fallback tier's answer is that tier's, as its cost is."""
        return self.attempt_tier or self.choice.tier

    @property
    def admitted_tokens(self) -> int:
        """What the TPM admission charges an attempt: the prompt's estimate plus the output cap the
        client set for each answer it asked for (`n`), as OpenAI's own limiter counts a request, so
        concurrent requests cannot overrun a tokens-per-minute limit by their answers. Settled with
        the real usage when it is known."""
        chat = self.chat
        return self.prompt_tokens + (chat.max_output_tokens or 0) * chat.choices if self.prompt_tokens else 0

    def prompt_estimate(self) -> int:
        """The prompt's estimated tokens: the one the decision made, or made now when it needed none."""
        if self.prompt_tokens:
            return self.prompt_tokens
        return RequestFacts(self.requested_model, self.chat.body.get("messages") or [], {}, False, None,
                            embedding_input=self.chat.body.get("input") if self.embeddings else None).prompt_tokens

    @property
    def requested_model(self) -> str:
        model = self.chat.body.get("model")
        return model if isinstance(model, str) else ""

    def headers(self, attempt_in_progress: bool = False) -> dict[str, str]:
        """The x-llmroute-* headers; a stream sends them while its attempt is still running."""
        out = {
            "x-llmroute-route": self.route.name,
            "x-llmroute-tier": self.tier,
            "x-llmroute-attempts": str(len(self.attempts) + attempt_in_progress),
        }
        if self.target is not None:
            out["x-llmroute-provider"] = self.target.provider
            out["x-llmroute-model"] = self.target.model
        if self.experiment is not None:
            out["x-llmroute-experiment"] = self.experiment.name
        return out


def format_usd(amount: float) -> str:
    """Decimal USD, unrounded and without exponent (the float's shortest exact repr).

    Costs of a call are small (1.5e-05) and print with an exponent; moving the point in the
    string is ~20× cheaper than going through `Decimal`."""
    text = repr(amount)
    mantissa, e, exponent = text.partition("e")
    if not e:
        return text
    sign = "-" if mantissa[0] == "-" else ""
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    digits, point = whole + fraction, len(whole) + int(exponent)
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


@dataclass(slots=True)
class _Run:
    """One attempt in progress."""

    attempt: Attempt
    provider: Provider
    scope: AttemptScope
    started: float
    ttft: float | None = None
    header_tier: str | None = None
    """The service tier the answer's headers said served it (Bedrock's InvokeModel:
    `service_tiers.BEDROCK_TIER_HEADER`): the one it is priced at."""
    header_input_tokens: int | None = None
    """The input tokens the answer's headers counted (Bedrock's `X-Amzn-Bedrock-Input-Token-Count`), for an
    answer whose body counts none (Cohere's embeddings)."""


class _NativeRequests:
    """The request as each target's provider takes it, built when the planner first comes to the target
    (`takes`) and sent by its attempts (`request`). A provider's refusal to translate it (a `BadRequest`)
    passes the target over; the first refusal is kept for when no target could take the request."""

    __slots__ = ("_built", "_ex", "refusal")

    def __init__(self, ex: Exchange) -> None:
        self._ex = ex
        self._built: dict[TargetId, UpstreamRequest | None] = {}
        self.refusal: BadRequest | None = None

    def takes(self, target: Target) -> bool:
        built = self._built
        if target.id not in built:
            ex = self._ex
            provider = provider_for(target.provider_type)
            try:
                built[target.id] = (provider.embeddings_request(ex.chat.body, target) if ex.embeddings
                                    else provider.chat_request(ex.chat, target))
            except BadRequest as refusal:
                built[target.id] = None
                ex.passed_over.append((target.id, refusal.param if isinstance(refusal.param, str) else None))
                ex.scope.passed_over(target.id)
                if self.refusal is None:
                    self.refusal = refusal.with_traceback(None)  # a traceback would hold this frame
        return built[target.id] is not None

    def take_refusal(self) -> BadRequest | None:
        """The first refusal, no longer kept here (raised, its traceback holds the raising frame)."""
        refusal, self.refusal = self.refusal, None
        return refusal

    def request(self, target: Target) -> UpstreamRequest:
        upstream_request = self._built[target.id]
        assert upstream_request is not None, "the planner chose a target that cannot take the request"
        return upstream_request


async def dispatch_chat(sidecar: Sidecar, ex: Exchange) -> web.StreamResponse:
    """Carry out the planner's attempts until one answers or the plan stops."""
    natives = _NativeRequests(ex)
    planner = AttemptPlanner(
        ex.route, ex.choice.tier,
        targets=ex.targets,
        health=sidecar.health, load=sidecar.load, limits=sidecar.limits,
        retry_budget=sidecar.retry_budget, rng=sidecar.rng,
        local_region=sidecar.table.region if sidecar.table else "",
        tokens=ex.admitted_tokens, unanswered_tokens=ex.prompt_tokens, now=sidecar.clock(), deadline=ex.deadline,
        takes=natives.takes,
    )
    last_error: UpstreamError | None = None
    while True:
        now = sidecar.clock()
        attempt = planner.next_attempt(now)
        if isinstance(attempt, Stop):
            # `last_error` held by this frame while the raised error's traceback holds the frame
            # would be a reference cycle keeping the attempt's state alive (issue 11, defect 2).
            # no target could take the request: the first one's refusal says why
            refusal = natives.take_refusal() if not ex.attempts and attempt.reason is StopReason.EXHAUSTED else None
            try:
                raise refusal if refusal is not None else attempt.error(ex.attempts, last_error)
            finally:
                del last_error, refusal
        target = attempt.target
        ex.attempt_tier = attempt.tier
        run = _Run(attempt, provider_for(target.provider_type),
                   ex.scope.attempt(target, attempt.number, ex.requested_model, ex.chat.stream, attempt.tier), now)
        sidecar.load.started(target.id)
        try:
            if attempt.delay_s > 0:
                await asyncio.sleep(attempt.delay_s)
                run.started = sidecar.clock()
            upstream_request = natives.request(target)
            if ex.chat.stream:
                return await _stream_attempt(sidecar, ex, planner, run, upstream_request)
            result = await _unary_attempt(sidecar, ex, run, upstream_request)
        except UpstreamError as upstream_error:
            # the one kept has no traceback: a traceback holds this frame (issue 11, defect 2)
            last_error = _failed(sidecar, ex, planner, run, upstream_error).with_traceback(None)
            continue
        except BaseException as exc:
            planner.record_abandoned(attempt, sidecar.clock())
            run.scope.end(None, None, (), None, exc)  # type: ignore[arg-type]
            raise
        finally:
            sidecar.load.finished(target.id, sidecar.clock(), run.ttft)
        return _unary_response(sidecar, ex, planner, run, result)


def _stopped(sidecar: Sidecar, ex: Exchange, planner: AttemptPlanner, run: _Run, usage: Usage, estimated: bool,
             why: str, error: BaseException) -> None:
    """A committed stream ended midway by no fault of its target (its client went away, the drain's
    deadline cut it): what was streamed is paid for. Its TPM charge, the budget (settled from
    `ex.cost` when the request ends), the spend reported and the metrics all take the same usage."""
    target = run.attempt.target
    now = sidecar.clock()
    usage = _at_header_tier(usage, run)
    planner.record_abandoned(run.attempt, now, usage.total_tokens)
    ex.attempts.append(AttemptRecord(target.id, 200, None, why, now - run.started))
    ex.usage, ex.usage_estimated = usage, estimated
    run.scope.end(usage, _charge(sidecar, ex, run.attempt, usage), (), None, error)


def _streamed(ex: Exchange, translator: StreamTranslator, received: int,
              seen: list[StreamChunk]) -> tuple[Usage, bool]:
    """A stream's usage when it ended midway (stopped, cut or broken) or without usage, and whether it
    is an estimate (not the stream's own final usage)."""
    final = translator.usage is not None and translator.finish_reason is not None
    usage = streamed_usage(translator.usage, final, ex.prompt_estimate(), received, seen)
    if usage.service_tier is None and translator.service_tier is not None:  # priced at the tier the chunks said
        usage = replace(usage, service_tier=translator.service_tier)
    return usage, not final


def _stream_usage(ex: Exchange, translator: StreamTranslator, received: int,
                  *seen: list[StreamChunk]) -> tuple[Usage, bool]:
    """A stream that ended: its own usage, or (a server that sends none) `_streamed`'s estimate from
    the `received` chunks and those still at hand (`seen`, joined only then)."""
    if translator.usage is not None:
        return translator.usage, False
    return _streamed(ex, translator, received, [chunk for chunks in seen for chunk in chunks])


_SIGNED = (METADATA_AUTH, ACCESS_KEY_AUTH)  # Bedrock targets signed with the pod's credentials, or an access key


async def _send(sidecar: Sidecar, run: _Run, upstream_request: UpstreamRequest) -> UpstreamResponse:
    """Send the attempt's request (with its bearer token, for a provider that signs one: Vertex AI; signed
    with its access key or the pod's AWS credentials, for Bedrock without an API key); the provider's
    rate-limit headers are kept for the usage reports."""
    target = run.attempt.target
    if target.provider_type is ProviderType.VERTEX:  # a coroutine less for every other attempt
        upstream_request = await sidecar.google_tokens.with_token(upstream_request, target)
    elif target.provider_type is ProviderType.BEDROCK and target.options.get("auth") in _SIGNED:
        upstream_request = await sidecar.aws_credentials.signed(upstream_request, target)
    upstream = await sidecar.upstream.send(upstream_request, target.id, ca_bundle=target.ca_bundle)
    sidecar.rate_limits_seen.seen(target.provider, run.provider.rate_limits, upstream.headers, sidecar.clock())
    if target.provider_type is ProviderType.BEDROCK:
        run.header_tier = upstream.headers.get(BEDROCK_TIER_HEADER) or None
        run.header_input_tokens = _count(upstream.headers.get(BEDROCK_INPUT_TOKENS_HEADER))
    return upstream


BEDROCK_INPUT_TOKENS_HEADER = "x-amzn-bedrock-input-token-count"


def _count(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


async def _answering(sidecar: Sidecar, ex: Exchange, run: _Run, upstream_request: UpstreamRequest) -> UpstreamResponse:
    """The attempt's answer (a 2xx), or its error, classified. A target that refuses what the sidecar
    carried or translated for the client, not the client's own request, is asked again at once without it,
    within the attempt (`_mended`); what a target refused once is not sent it again (`_as_target_takes`)."""
    target = run.attempt.target
    chat = _as_target_takes(sidecar, ex.chat, target)
    if chat is not ex.chat:
        upstream_request = run.provider.chat_request(chat, target)
    for _ in range(_MENDS):  # each kind of mending takes away what was refused: it is not refused again
        upstream = await _send(sidecar, run, upstream_request)
        if upstream.status < 300:
            return upstream
        error = await _classified(run.provider, upstream)
        mended = _mended(sidecar, chat, target, error)
        if mended is None:
            raise error
        chat, upstream_request = mended, run.provider.chat_request(mended, target)
    return await _answered(sidecar, run, upstream_request)


_MENDS = 3
"""The kinds of mending `_mended` knows: a request may need each once (Claude Code's to gpt-4o: its
reasoning hint, then its output limit)."""


def _as_target_takes(sidecar: Sidecar, chat: ChatRequest, target: Target) -> ChatRequest:
    """The request without what the target refused before or cannot take: a translated reasoning hint,
    more output tokens than it gives (its model's `maxOutputTokens`, or what it stated when it refused)."""
    if target.id in sidecar.refuses_reasoning_hint and chat.translated_reasoning_hint:
        chat = chat.without_reasoning_hint()
    most = _output_limit(sidecar.output_limits.get(target.id), target.max_output_tokens)
    if most is not None and _translated_for(chat, target):
        chat = chat.with_output_limit(most)
    return chat


def _output_limit(stated: int | None, configured: int | None) -> int | None:
    return min((most for most in (stated, configured) if most is not None), default=None)


def _mended(sidecar: Sidecar, chat: ChatRequest, target: Target, error: UpstreamError) -> ChatRequest | None:
    """The request to ask the target again at once, when it refused only what the sidecar carried or
    translated for the client; None when the refusal is the client's own.

    - A Claude that refuses thinking blocks another account signed (`_refuses_foreign_thinking`):
      without them, thinking off for this turn.
    - A target that refuses a reasoning hint translated from the client's own thinking control (OpenAI's
      gpt-4o refuses `reasoning_effort`): without it. The client asked for thinking where the model has
      it, not for a model that has it; failing over on that would fail every target alike.
    - A target that gives fewer output tokens than a translated request asks (Claude Code asks 32,000 of
      whatever answers; gpt-4o gives 16,384): with the most it states. "Up to N" was asked of a model
      family the client chose, not of this one.
    The last two are remembered for the target until the next table."""
    if _refuses_foreign_thinking(chat, error):
        log.info("%s refused the signature of a thinking block another account wrote; asked again without the "
                 "blocks, thinking off for this turn", target.id)
        return chat.without_thinking_blocks()
    if chat.translated_reasoning_hint and _refuses_reasoning_hint(error):
        log.info("%s refused the reasoning hint translated from the client's request; asked again without it, "
                 "and will send it none from now on", target.id)
        sidecar.refuses_reasoning_hint.add(target.id)
        return chat.without_reasoning_hint()
    most = stated_output_limit(error) if _translated_for(chat, target) else None
    if most is not None and chat.with_output_limit(most) is not chat:
        log.info("%s gives at most %d output tokens, fewer than the translated request asked; asked again for "
                 "%d, and will be from now on", target.id, most, most)
        sidecar.output_limits[target.id] = most
        return chat.with_output_limit(most)
    return None


def _translated_for(chat: ChatRequest, target: Target) -> bool:
    """Whether the target is sent the sidecar's translation of the client's request, not its own body."""
    return chat.native is not None and not chat.native.spoken_by(target)


async def _answered(sidecar: Sidecar, run: _Run, upstream_request: UpstreamRequest) -> UpstreamResponse:
    """The answer (a 2xx) to a request sent as it is, or its error, classified."""
    upstream = await _send(sidecar, run, upstream_request)
    if upstream.status >= 300:
        raise await _classified(run.provider, upstream)
    return upstream


def _refuses_foreign_thinking(chat: ChatRequest, error: UpstreamError) -> bool:
    """Whether Claude refused thinking blocks the sidecar carried for the client (`thinking_blocks`, a
    Responses token) because another account signed them: the conversation failed over from it. Asked
    again without them, the turn is answered, as it would have been had the client never kept them. A
    client on `/v1/messages` sent its own blocks, which are relayed as they are: its 400 is its own."""
    native = chat.native
    if native is not None and native.dialect is NativeDialect.ANTHROPIC_MESSAGES:
        return False
    return (error.kind is FailureKind.CLIENT_ERROR and refuses_signature(error.message)
            and chat.without_thinking_blocks() is not chat)


_OPENAI_OUTPUT_LIMIT = re.compile(r"supports at most (\d+) completion tokens")
_ANTHROPIC_OUTPUT_LIMIT = re.compile(r"^max_tokens: \d+ > (\d+), which is the maximum allowed number of output tokens")
_GEMINI_OUTPUT_RANGE = re.compile(r"^Unable to submit request because it has a maxOutputTokens value of \d+ but the "
                                  r"supported range is from 1 \(inclusive\) to (\d+) \(exclusive\)")
_UNNAMED_OUTPUT_LIMITS = ((_ANTHROPIC_OUTPUT_LIMIT, 0), (_GEMINI_OUTPUT_RANGE, 1))
"""The refusals that name no `param`: each pattern, and how far its number is past the most."""


def stated_output_limit(error: UpstreamError) -> int | None:
    """The most output tokens a target says it gives, when it refused a request for asking more
    (OpenAI: 400 `max_tokens is too large: N. This model supports at most M completion tokens…`;
    Anthropic: 400 `max_tokens: N > M, which is the maximum allowed number of output tokens for …`;
    Gemini: 400 `… a maxOutputTokens value of N but the supported range is from 1 (inclusive) to M+1
    (exclusive)…`)."""
    if error.kind is not FailureKind.CLIENT_ERROR:
        return None
    openai = error.param in ("max_tokens", "max_completion_tokens")
    for pattern, past_the_most in ((_OPENAI_OUTPUT_LIMIT, 0),) if openai else _UNNAMED_OUTPUT_LIMITS:
        if found := pattern.search(error.message):
            most = int(found.group(1)) - past_the_most
            return most if most > 0 else None
    return None


def _refuses_reasoning_hint(error: UpstreamError) -> bool:
    return error.kind is FailureKind.CLIENT_ERROR and (
        error.param == "reasoning_effort" or "reasoning_effort" in error.message)


async def _unary_attempt(sidecar: Sidecar, ex: Exchange, run: _Run,
                         upstream_request: UpstreamRequest) -> ChatResult:
    target = run.attempt.target
    budget = min(ex.route.fallback.per_try_timeout, ex.deadline - run.started)
    try:
        async with asyncio.timeout(budget):
            upstream = await _answering(sidecar, ex, run, upstream_request)
            async with upstream:
                body = await upstream.read()
    except TimeoutError:
        raise UpstreamError(FailureKind.TIMEOUT, f"no answer within {budget:.3g}s") from None
    run.ttft = sidecar.clock() - run.started
    if ex.embeddings:
        data, usage = run.provider.embeddings_response(body, ex.chat.body, target)
        return ChatResult(data, usage)
    return run.provider.chat_response(body, ex.chat, target)


def _attempting(ex: Exchange, target: Target) -> None:
    """Tell an encoder that wants to know (`AttemptAware`) which provider this attempt goes to."""
    tell: Callable[[Target], None] | None = getattr(ex.encoder, "attempting", None)
    if tell is not None:
        tell(target)


def _unary_response(sidecar: Sidecar, ex: Exchange, planner: AttemptPlanner, run: _Run,
                    result: ChatResult) -> web.Response:
    _attempting(ex, run.attempt.target)
    usage, estimated = result.usage, False
    if not (usage.input_tokens or usage.output_tokens):  # an answer without usage (Gemini's embeddings never have one)
        if ex.embeddings and run.header_input_tokens:  # counted in its headers (Bedrock's Cohere)
            usage = Usage(input_tokens=run.header_input_tokens)
        else:
            prompt = ex.prompt_estimate()
            usage, estimated = (Usage(input_tokens=prompt) if ex.embeddings else answer_usage(prompt, result.data)), True
    _succeeded(sidecar, ex, planner, run, (usage, estimated), _finish_reasons(result), result.data.get("model"))
    headers = ex.headers()
    if ex.cost is not None:
        headers["x-llmroute-cost-usd"] = format_usd(ex.cost)
    headers["Content-Type"] = "application/json"
    return web.Response(body=ex.encoder.unary(result), headers=headers)


async def _stream_attempt(sidecar: Sidecar, ex: Exchange, planner: AttemptPlanner, run: _Run,
                          upstream_request: UpstreamRequest) -> web.StreamResponse:
    target = run.attempt.target
    policy = ex.route.fallback
    attempt_deadline = min(run.started + policy.per_try_timeout, ex.deadline)
    first_token_budget = min(policy.first_byte_timeout, attempt_deadline - run.started)
    translator = run.provider.chat_stream(ex.chat, target)
    _attempting(ex, target)
    upstream: UpstreamResponse | None = None
    try:
        try:
            async with asyncio.timeout(first_token_budget):
                upstream = await _answering(sidecar, ex, run, upstream_request)
                body = upstream.chunks()
                primed, ended, whole = await _prime(body, upstream.at_eof, translator, ex.encoder)
                upstream.idle_timeout = policy.idle_timeout
        except TimeoutError:
            raise UpstreamError(FailureKind.TIMEOUT, f"no first token within {first_token_budget:.3g}s") from None
        run.ttft = sidecar.clock() - run.started
        run.scope.first_chunk()
        ex.target = target
        headers = {**SSE_HEADERS, **ex.headers(attempt_in_progress=True)}
        if ended:
            # The whole stream came in the first reads: one answer with its length, in one write
            # (writes are syscalls), judged whole before anything was sent.
            _succeeded(sidecar, ex, planner, run, _stream_usage(ex, translator, len(primed), primed),
                       _stream_finish_reasons(translator), None)
            if whole is None:
                whole = ex.encoder.chunks(primed) + ex.encoder.end(translator.usage)
            return web.Response(body=whole, headers=headers)
        response = _EventStream(headers=headers)
        received = len(primed)  # chunks read: with the last ones, what a stopped stream cost (`_streamed`)
        out: list[StreamChunk] = []
        try:
            await response.prepare(ex.http)
            await response.write(ex.encoder.chunks(primed))  # the head with the first token, at once
            async with asyncio.timeout(attempt_deadline - sidecar.clock()):
                async for data in body:
                    out = translator.feed(data)
                    if out:
                        received += len(out)
                        await response.write(ex.encoder.chunks(out))
            last = translator.close()
            tail = ex.encoder.chunks(last)
        except (UpstreamError, TimeoutError) as exc:
            # No local outlives this block: a caught exception held by its own frame is a cycle.
            await _broken(sidecar, ex, planner, run, response, _streamed(ex, translator, received, [*primed, *out]),
                          exc if isinstance(exc, UpstreamError) else UpstreamError(
                              FailureKind.TIMEOUT, f"stream exceeded its {policy.per_try_timeout:g}s attempt deadline"))
            return response
        except (asyncio.CancelledError, ConnectionError) as exc:
            # a ConnectionError here is the client's: upstream reads raise UpstreamError
            usage, estimated = _streamed(ex, translator, received, [*primed, *out])
            if isinstance(exc, ConnectionError) or (cut := sidecar.take_drain_cut()) is None:
                _stopped(sidecar, ex, planner, run, usage, estimated, "the client went away mid-stream", exc)
                raise
            _stopped(sidecar, ex, planner, run, usage, estimated, "the drain's deadline cut the stream", cut)
            ex.error = cut.label
            await response.write(ex.encoder.stream_error(cut))
            return response
        _succeeded(sidecar, ex, planner, run, _stream_usage(ex, translator, received + len(last), primed, out, last),
                   _stream_finish_reasons(translator), None)
        await response.write_eof(tail + ex.encoder.end(translator.usage))
        return response
    finally:
        if upstream is not None:
            upstream.close()


class _EventStream(web.StreamResponse):
    """An SSE answer whose head waits for its first write (aiohttp ≥ 3.12 reads this flag;
    older versions send the head at `prepare`, as before)."""

    _send_headers_immediately = False


async def _broken(sidecar: Sidecar, ex: Exchange, planner: AttemptPlanner, run: _Run,
                  response: web.StreamResponse, streamed: tuple[Usage, bool], error: UpstreamError) -> None:
    """A committed stream failed: the target's failure, and an in-band error for the client. What it
    streamed is paid for, as for a stream its client stopped (`streamed`: `_streamed`'s usage)."""
    usage, ex.usage_estimated = streamed
    scrubbed = _failed(sidecar, ex, planner, run, error, committed=True, usage=usage)
    ex.error = scrubbed.label
    await response.write(ex.encoder.stream_error(scrubbed))


async def _prime(body: AsyncIterator[bytes], at_eof: Callable[[], bool], translator: StreamTranslator,
                 encoder: Encoder) -> tuple[list[StreamChunk], bool, bytes | None]:
    """Read until the first chunk that shows output, or to the end when it has all arrived.
    Returns (chunks so far, stream ended, None), or ([], True, the whole answer) for a stream that
    arrived whole in the first read and that its translator vouched for by its bytes (the common
    case: a short answer, a fast model): an OpenAI chat stream written for the client by the
    encoder's `write_whole`, or a stream in the client's own dialect relayed by its `relay_whole`."""
    primed: list[StreamChunk] = []
    whole: bytes | None = None
    reader: Callable[[bytes], WholeStream | None] | None = getattr(translator, "judge_whole", None)
    writer: Callable[[WholeStream], bytes] | None = getattr(encoder, "write_whole", None)
    relayer: Callable[[WholeRelayedStream], bytes] | None = getattr(encoder, "relay_whole", None)
    lane = reader if reader is not None and (writer is not None or relayer is not None) else None  # first read only
    async for data in body:
        if lane is not None:
            judged = lane(data) if at_eof() else None
            lane = None
            if isinstance(judged, WholeRelayedStream):
                whole = relayer(judged) if relayer is not None else None
            elif judged is not None and writer is not None:
                whole = writer(judged)
            if whole is not None:
                continue  # the next read finds the end
        out = translator.feed(data)
        primed.extend(out)
        if not at_eof() and any(carries_output(chunk.data) for chunk in out):
            return primed, False, None
    if whole is not None:
        return primed, True, whole
    primed.extend(translator.close())
    if not any(carries_output(chunk.data) for chunk in primed):
        raise UpstreamError(FailureKind.STREAM_BROKEN, "stream ended without any output")
    return primed, True, None


async def _classified(provider: Provider, upstream: UpstreamResponse) -> UpstreamError:
    """A refused answer's error; the answer is done with (closed) once read."""
    try:
        body = await upstream.read_head(MAX_ERROR_BODY)
    finally:
        upstream.close()
    return provider.classify_error(upstream.status, upstream.headers, body)


def _stream_finish_reasons(translator: StreamTranslator) -> tuple[str, ...]:
    """Every choice's finish reason, in choice order, as `_finish_reasons` gives an answer's."""
    return in_choice_order(translator.finish_reasons)


def _finish_reasons(result: ChatResult) -> tuple[str, ...]:
    return tuple([c.get("finish_reason") or "" for c in result.data.get("choices") or ()])


def _succeeded(sidecar: Sidecar, ex: Exchange, planner: AttemptPlanner, run: _Run, used: tuple[Usage, bool],
               finish_reasons: tuple[str, ...], response_model: object) -> None:
    """An answer: its usage (`used`: the usage, and whether it is the sidecar's estimate of an answer
    that came without any) settles its TPM charge and is priced, recorded and reported, as a stopped
    stream's is."""
    target = run.attempt.target
    now = sidecar.clock()
    usage, ex.usage_estimated = used
    usage = _at_header_tier(usage, run)
    planner.record_success(run.attempt, now, usage.total_tokens)
    ex.target = target
    ex.attempts.append(AttemptRecord(target.id, 200, None, "ok", now - run.started))
    ex.usage = usage
    cost = _charge(sidecar, ex, run.attempt, usage)
    sidecar.counters_for(target.id).requests += 1
    run.scope.end(usage, cost, finish_reasons, response_model if isinstance(response_model, str) else None,
                  None)


def _at_header_tier(usage: Usage, run: _Run) -> Usage:
    """`usage` at the tier the answer's headers said served it. Those are Bedrock's, in Bedrock's terms,
    and win over what Claude's body says in Anthropic's (`usage.service_tier`: Anthropic's own tiers)."""
    if run.header_tier is None or usage.service_tier == run.header_tier:
        return usage
    return replace(usage, service_tier=run.header_tier)


def _charge(sidecar: Sidecar, ex: Exchange, attempt: Attempt, usage: Usage) -> float:
    """What `usage` on the attempt's target costs, added to the request's cost (`ex.cost`: its answer's,
    and what failed attempts were billed) and to the spend reported, under the tier the target was
    taken from (a fallback tier's answer is that tier's spend). Returns the attempt's own cost."""
    target = attempt.target
    cost = cost_usd(usage, target.pricing)
    ex.cost = cost if ex.cost is None else ex.cost + cost
    sidecar.record_spend(usage, cost, ex.route.name, attempt.tier, target.id,
                         ex.experiment.name if ex.experiment else None)
    return cost


def _failed(sidecar: Sidecar, ex: Exchange, planner: AttemptPlanner, run: _Run, upstream_error: UpstreamError,
            committed: bool = False, usage: Usage | None = None) -> UpstreamError:
    """Record a failed attempt. Every upstream error passes here first, and leaves scrubbed of
    every key the sidecar holds: what the client, /status, the logs and the traces get. `usage`: what
    a committed stream used; a failure before it, unless its provider billed it, used nothing. What
    was used is spent, settled against the TPM limit and metered."""
    error = sidecar.scrubber.error(upstream_error)
    target = run.attempt.target
    now = sidecar.clock()
    if isinstance(upstream_error, BilledFailure) and not committed:
        usage = upstream_error.billed  # an answer that failed, charged for all the same
    if planner.record_failure(run.attempt, error, now, usage.total_tokens if usage is not None else None):
        sidecar.telemetry.ejected(target.id, error.kind.value)
    ex.attempts.append(AttemptRecord(target.id, error.status, error.kind, error.message, now - run.started))
    counters = sidecar.counters_for(target.id)
    counters.requests += 1
    if error.kind.counts_against_target:
        counters.failures += 1
        counters.errors[error.kind.value] = counters.errors.get(error.kind.value, 0) + 1
        counters.last_error = f"{error.kind.value}: {error.message}"[:300]
    if committed:
        ex.usage = usage
    cost = _charge(sidecar, ex, run.attempt, usage) if usage is not None else None
    if error.kind.ejects_for_long:
        log.error("target %s failed with %s (%s): ejected; check its credentials, quota and model",
                  target.id, error.kind.value, error.message)
    else:
        log.info("attempt %d on %s failed: %s %s", run.attempt.number, target.id, error.kind.value, error.message)
    run.scope.end(usage, cost, (), None, error)
    return error
