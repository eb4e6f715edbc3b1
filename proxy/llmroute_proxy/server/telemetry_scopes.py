"""The per-request half of telemetry: a request's SERVER span and each attempt's CLIENT span.

`Telemetry.start_request` opens a `RequestScope`; the server drives it and its `AttemptScope`s
at the points listed in `llmroute_proxy.server.telemetry`, which re-exports both classes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from llmroute_proxy.dialects.base import Usage
from llmroute_proxy.errors import UpstreamError
from llmroute_proxy.server.metrics_local import Histogram, Key, Tally
from llmroute_proxy.table import ProviderType, Target, TargetId


class TelemetrySink(Protocol):
    """What a scope records into: the instruments and tracer of `llmroute_proxy.server.telemetry`
    (its `Telemetry` is the one implementation; scopes import nothing from it)."""

    clock: Callable[[], float]
    capture_content: bool
    in_flight: int
    tracer: Tracer | None
    propagator: TextMapPropagator
    requests: Tally
    request_duration: Histogram
    failovers: Tally
    attempts: Tally
    cost: Tally
    time_to_first_chunk: Histogram
    operation_duration: Histogram
    token_usage: Histogram

PROVIDER_NAMES = {
    ProviderType.OPENAI: "openai",
    ProviderType.ANTHROPIC: "anthropic",
    ProviderType.GEMINI: "gcp.gemini",
    ProviderType.AZURE_OPENAI: "azure.ai.openai",
    ProviderType.VERTEX: "gcp.vertex_ai",
    ProviderType.BEDROCK: "aws.bedrock",
}
"""`gen_ai.provider.name` per provider type; openai-compatible targets use their LLMProvider's name."""

ATTEMPT_ATTRIBUTES = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "server.address",
            "server.port", "llmroute.target")
"""The attributes of every GenAI client metric point, in the order of an attempt's key."""
ATTEMPT_END_ATTRIBUTES = (*ATTEMPT_ATTRIBUTES, "gen_ai.response.model", "error.type")
PASSED_OVER = "passed_over"
"""The `llmroute.failover_reason` of a target passed over: its provider cannot translate the request."""
TOKEN_ATTRIBUTES = (*ATTEMPT_END_ATTRIBUTES, "gen_ai.token.type")


@functools.lru_cache(maxsize=1024)
def _server(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def provider_name(target: Target) -> str:
    return PROVIDER_NAMES.get(target.provider_type, target.provider)


def error_type(error: BaseException) -> str:
    """Low-cardinality `error.type`: the failure kind for upstream errors, else the class name."""
    return error.kind.value if isinstance(error, UpstreamError) else type(error).__qualname__


def _incoming_trace_id(headers: Mapping[str, str]) -> str:
    parent = headers.get("traceparent")
    if not parent:
        return ""
    parts = parent.strip().split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1].lower()
    return ""


class RequestScope:
    """One client request: the SERVER span, the in-flight gauge and the request's metrics.

    An unmetered scope (`metered=False`: a token count, which is no request) makes its spans and
    touches no metric, its attempts' included.
    """

    __slots__ = ("_attempt_context", "_duration", "_ended", "_failure", "_input", "_last_target", "_metered", "_span",
                 "_started", "_telemetry", "attempts", "experiment", "operation", "route", "rule", "tier",
                 "trace_id")

    def __init__(self, telemetry: TelemetrySink, operation: str, headers: Mapping[str, str], method: str,
                 path: str, metered: bool = True) -> None:
        self._telemetry = telemetry
        self._metered = metered
        self.operation = operation
        self.route = ""
        self.tier = ""
        self.rule: str | None = None
        self.experiment: str | None = None
        self.attempts = 0
        self._input: str | None = None
        self._failure: str | None = None
        self._last_target: str | None = None
        self._ended = False
        self._started = telemetry.clock()
        self._duration: float | None = None
        self._span: Span | None = None
        self._attempt_context: Context | None = None
        tracer = telemetry.tracer
        if tracer is None:
            self.trace_id = _incoming_trace_id(headers)
        else:
            parent = telemetry.propagator.extract(headers) if "traceparent" in headers else None
            self._span = tracer.start_span(f"{method} {path}", parent, SpanKind.SERVER, {
                "http.request.method": method, "http.route": path, "gen_ai.operation.name": operation})
            self._attempt_context = trace.set_span_in_context(self._span)
            self.trace_id = format(self._span.get_span_context().trace_id, "032x")
        if metered:
            telemetry.in_flight += 1

    def routed(self, route: str, tier: str, rule: str | None, experiment: str | None = None,
               input_messages: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Routing decided. `input_messages` (OpenAI form) is kept only when content capture is on."""
        self.route, self.tier, self.rule, self.experiment = route, tier, rule, experiment
        if input_messages is not None and self._telemetry.capture_content:
            self._input = orjson.dumps([_message_parts(m) for m in input_messages]).decode()
        if self._span is not None:
            self._span.set_attributes(_routing_attributes(self))

    def attempt(self, target: Target, number: int, requested_model: str = "", stream: bool = False,
                tier: str | None = None) -> AttemptScope:
        """An upstream attempt starts. `requested_model` is what the client asked for (an alias);
        the span's `gen_ai.request.model` is the model actually sent upstream. `tier` is the tier the
        target was taken from (default: the routed one), which its span and its cost name. An attempt
        after a failure carries that failure as `llmroute.failover_reason`; `llmroute.failovers` counts
        only moves to another target (a retry of the same target is an attempt, not a failover)."""
        self.attempts += 1
        reason, previous = self._failure, self._last_target
        if self._metered and reason is not None and previous is not None and previous != target.id:
            self._telemetry.failovers.add(1.0, self.route, previous, reason)
        self._last_target = target.id
        return AttemptScope(self, target, number, requested_model, stream, reason, tier or self.tier)

    def passed_over(self, target: TargetId) -> None:
        """The request moved past a target whose provider cannot translate it (`dispatch`): counted in
        `llmroute.failovers` with the reason `passed_over`, as a move away from that target."""
        if self._metered:
            self._telemetry.failovers.add(1.0, self.route, target, PASSED_OVER)

    def counted(self, how: str) -> None:
        """How a token count was answered: `exact` (its target counted it), `estimated` (the sidecar
        did), or `none` (it was refused)."""
        if self._span is not None:
            self._span.set_attribute("llmroute.token_count", how)

    def stop(self) -> float:
        """The request's duration in seconds, from the handler's start to now, fixed at the first call:
        what `end` records, so that the access line and the duration metric say the same."""
        if self._duration is None:
            self._duration = self._telemetry.clock() - self._started
        return self._duration

    def end(self, status: int, error_type: str | None = None, usage: Usage | None = None,
            cost_usd: float | None = None, tier: str | None = None) -> None:
        """The response is complete (streams: after the last byte). Calling it again does nothing.
        `tier`: the tier the request ended in, when it is not the routed one (a fallback tier answered,
        or was the last tried): the request's metric and span name it, and the span the routed one as
        `llmroute.fallback_from`."""
        if self._ended:
            return
        self._ended = True
        telemetry = self._telemetry
        fallback_from = None
        if tier is not None and tier != self.tier:
            fallback_from, self.tier = self.tier, tier
        if self._metered:
            telemetry.in_flight -= 1
            telemetry.requests.add(1.0, self.route, self.tier, status, error_type or "")
            telemetry.request_duration.record(self.stop(), (self.route, status, error_type or ""))
        span = self._span
        if span is None:
            return
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("llmroute.attempts", self.attempts)
        if fallback_from is not None:
            span.set_attributes({"llmroute.tier": self.tier, "llmroute.fallback_from": fallback_from})
        if error_type:
            span.set_attribute("error.type", error_type)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, error_type))
        if usage is not None:
            span.set_attributes(_usage_attributes(usage))
        if cost_usd is not None:
            span.set_attribute("llmroute.cost_usd", cost_usd)
        span.end()


class AttemptScope:
    """One upstream attempt: the CLIENT span and the GenAI client metrics."""

    __slots__ = ("_ended", "_first_chunk", "_key", "_scope", "_span", "_started", "stream", "target", "tier")

    def __init__(self, scope: RequestScope, target: Target, number: int, requested_model: str, stream: bool,
                 failover_reason: str | None, tier: str) -> None:
        self._scope = scope
        self.target = target
        self.stream = stream
        self.tier = tier
        self._ended = False
        self._first_chunk: float | None = None
        address, port = _server(target.url)
        self._key: Key = (scope.operation, provider_name(target), target.model, address, port, target.id)
        self._span: Span | None = None
        telemetry = scope._telemetry
        if telemetry.tracer is not None:
            attributes: dict[str, Any] = {**dict(zip(ATTEMPT_ATTRIBUTES, self._key, strict=True)),
                                          **_routing_attributes(scope, tier),
                                          "llmroute.attempt": number, "llmroute.region": target.region}
            if requested_model:
                attributes["llmroute.requested_model"] = requested_model
            if failover_reason is not None:
                attributes["llmroute.failover_reason"] = failover_reason
            if scope._input is not None:
                attributes["gen_ai.input.messages"] = scope._input
            self._span = telemetry.tracer.start_span(f"{scope.operation} {target.model}",
                                                      scope._attempt_context, SpanKind.CLIENT, attributes)
        self._started = telemetry.clock()

    def first_chunk(self) -> None:
        """The first streamed chunk with output arrived (time to first chunk; streams only)."""
        if self._first_chunk is not None or self._ended:
            return
        telemetry = self._scope._telemetry
        self._first_chunk = telemetry.clock()
        if self._scope._metered:
            telemetry.time_to_first_chunk.record(self._first_chunk - self._started, self._key)

    def end(self, usage: Usage | None = None, cost_usd: float | None = None, finish_reasons: Sequence[str] = (),
            response_model: str | None = None, error: BaseException | None = None,
            output_messages: Sequence[Mapping[str, Any]] | None = None) -> None:
        """The attempt is over: success when `error` is None. Calling it again does nothing."""
        if self._ended:
            return
        self._ended = True
        kind = error_type(error) if error is not None else None
        if kind is not None:
            self._scope._failure = kind
        if self._scope._metered:
            self._record(usage, cost_usd, response_model, kind)
        if self._span is not None:
            self._end_span(self._span, usage, cost_usd, finish_reasons, response_model, error, kind,
                           output_messages)

    def _record(self, usage: Usage | None, cost_usd: float | None, response_model: str | None,
                kind: str | None) -> None:
        scope = self._scope
        telemetry = scope._telemetry
        key = (*self._key, response_model or "", kind or "")
        telemetry.operation_duration.record(telemetry.clock() - self._started, key)
        telemetry.attempts.add(1.0, scope.route, self.target.id, kind or "ok")
        if usage is not None:
            telemetry.token_usage.record(usage.input_tokens, (*key, "input"))
            telemetry.token_usage.record(usage.output_tokens, (*key, "output"))
        if cost_usd:
            telemetry.cost.add(cost_usd, scope.route, self.tier, self.target.id, scope.experiment or "")
    def _end_span(self, span: Span, usage: Usage | None, cost_usd: float | None, finish_reasons: Sequence[str],
                  response_model: str | None, error: BaseException | None, kind: str | None,
                  output_messages: Sequence[Mapping[str, Any]] | None) -> None:
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)
        if usage is not None:
            span.set_attributes(_usage_attributes(usage))
        if finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
        if cost_usd is not None:
            span.set_attribute("llmroute.cost_usd", cost_usd)
        if kind is not None:
            span.set_attribute("error.type", kind)
            if isinstance(error, UpstreamError) and error.status is not None:
                span.set_attribute("http.response.status_code", error.status)
            span.set_status(Status(StatusCode.ERROR, kind))
        if output_messages is not None and self._scope._telemetry.capture_content:
            outputs = [_message_parts(m, finish_reasons[i] if i < len(finish_reasons) else "")
                       for i, m in enumerate(output_messages)]
            span.set_attribute("gen_ai.output.messages", orjson.dumps(outputs).decode())
        span.end()


def _routing_attributes(scope: RequestScope, tier: str | None = None) -> dict[str, str]:
    attributes = {"llmroute.route": scope.route, "llmroute.tier": scope.tier if tier is None else tier}
    if scope.rule:
        attributes["llmroute.rule"] = scope.rule
    if scope.experiment:
        attributes["llmroute.experiment"] = scope.experiment
    return attributes


def _usage_attributes(usage: Usage) -> dict[str, int]:
    attributes = {"gen_ai.usage.input_tokens": usage.input_tokens,
                  "gen_ai.usage.output_tokens": usage.output_tokens}
    if usage.cached_input_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
    if usage.cache_write_tokens:
        attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
    return attributes


def _message_parts(message: Mapping[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """An OpenAI chat message in the spec's `{role, parts}` shape (text, tool calls, tool results)."""
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        parts.extend({"type": "text", "content": item.get("text", "")} for item in content
                     if isinstance(item, Mapping) and item.get("type") == "text")
    if message.get("role") == "tool":
        parts = [{"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content}]
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                      "arguments": function.get("arguments")})
    out: dict[str, Any] = {"role": message.get("role", "user"), "parts": parts}
    if finish_reason is not None:
        out["finish_reason"] = finish_reason
    return out
