"""The canonical form every dialect translates to and from, and the two interfaces dialects implement.

The canonical form inside llmroute is OpenAI Chat Completions: a request is the client's
OpenAI body (a dict), a response is an OpenAI `chat.completion` dict, a stream is a
sequence of OpenAI `chat.completion.chunk` dicts. A provider's dialect translates the canonical
request into its native HTTP request, and its native response or SSE stream back
(`StreamTranslator`); a front door's dialect writes canonical answers in the client's own
shape (`Encoder`).

Dialects are pure: bytes and dicts in and out, no network I/O, no clock. The server's
dispatch loop sends the `UpstreamRequest` and feeds what comes back to the provider.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from llmroute_proxy.dialects.thinking import unsigned
from llmroute_proxy.errors import BadRequest, LLMRouteError, RequestError, UpstreamError
from llmroute_proxy.table import ProviderType, Target


@dataclass(slots=True)
class Usage:
    """Token counts in OpenAI's semantics: cached (read) ⊂ input, cache writes ⊂ input (writes kept an
    hour ⊂ writes), reasoning ⊂ output; the web searches the provider ran for the answer (its
    server-side tool, billed per search); and the service tier the answer says served it, as the
    provider names it (OpenAI's `default`, `flex`, `priority`; Anthropic's `standard`, `priority`),
    None when it said none (`dialects/service_tiers.py`)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0
    service_tier: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_input_tokens,
                                      "cache_write_tokens": self.cache_write_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None, service_tier: Any = None) -> Usage:
        """`usage` of a chat completion or chunk; `service_tier`: that object's own (OpenAI reports it
        beside `usage`, not in it)."""
        if not usage:
            return cls(service_tier=reported_tier(service_tier))
        prompt = usage.get("prompt_tokens_details") or {}
        completion = usage.get("completion_tokens_details") or {}
        return cls(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cached_input_tokens=int(prompt.get("cached_tokens") or 0),
            cache_write_tokens=int(prompt.get("cache_write_tokens") or 0),
            reasoning_tokens=int(completion.get("reasoning_tokens") or 0),
            service_tier=reported_tier(service_tier),
        )


def reported_tier(value: Any) -> str | None:
    """The service tier an answer reports, None when it reports none (or not as a name)."""
    return value if type(value) is str and value else None


@dataclass(eq=False)
class BilledFailure(UpstreamError):
    """A failed answer that its provider charged for: Gemini's empty or malformed answer (200, its
    prompt read and its thoughts generated, no text and no call). The attempt fails over as any other
    does, and what it was billed (`billed`: the answer's own usage) is spent all the same."""

    billed: Usage | None = None


DIALECT_NAMES = {ProviderType.ANTHROPIC: "Anthropic", ProviderType.GEMINI: "Gemini", ProviderType.OPENAI: "OpenAI",
                 ProviderType.AZURE_OPENAI: "Azure OpenAI", ProviderType.OPENAI_COMPATIBLE: "OpenAI-compatible",
                 ProviderType.VERTEX: "Vertex AI", ProviderType.BEDROCK: "Amazon Bedrock"}
"""The name a message gives each provider type's dialect."""


class NativeDialect(Enum):
    """A front door's API that some providers also speak, so its requests can be forwarded as sent."""

    ANTHROPIC_MESSAGES = "Anthropic Messages"
    OPENAI_RESPONSES = "OpenAI Responses"

    @property
    def speakers(self) -> frozenset[ProviderType]:
        """The provider types that take this dialect's requests natively."""
        return _SPEAKERS[self]


_SPEAKERS = {NativeDialect.ANTHROPIC_MESSAGES: frozenset({ProviderType.ANTHROPIC}),
             NativeDialect.OPENAI_RESPONSES: frozenset({ProviderType.OPENAI, ProviderType.AZURE_OPENAI})}


ANSWERED_BY = "llmroute_answered_by"
"""The member a reasoning item the sidecar keeps carries: the provider whose answer it came from, the
only one that can be sent it again (its encrypted content is that provider's). Never sent anywhere."""


class NativeBody:
    """A client's request as it sent it, in the dialect of its front door.

    A provider that speaks that dialect forwards it (lossless: what the canonical form cannot
    say survives); the others are sent the canonical `ChatRequest.body`. `only` is set when the
    request uses what only that dialect can say (it names the field): then only providers that
    speak it may take the request, and the canonical body is just a summary to route by.
    `unserved`, when set, is the answer when no target speaks it (instead of a 400 naming `only`'s
    field): a conversation the sidecar does not hold is a 404 unless a provider may hold it; and
    `held_by`, when known, the one provider's store that holds it (`Target.response_store`: a provider
    at one endpoint): only targets of that store may go. `betas`: the client's `anthropic-beta` header
    (Anthropic Messages), sent on with its body: the beta features a body may use.
    """

    __slots__ = ("betas", "body", "dialect", "held_by", "only", "unserved")

    def __init__(self, dialect: NativeDialect, body: dict[str, Any], only: BadRequest | None = None,
                 unserved: RequestError | None = None, held_by: str = "", betas: str = "") -> None:
        self.dialect = dialect
        self.body = body
        self.only = only
        self.unserved = unserved
        self.held_by = held_by
        self.betas = betas

    def spoken_by(self, target: Target) -> bool:
        """Whether the target takes this dialect natively: the API it speaks does (a Vertex AI target's
        Claude speaks Anthropic Messages), or it is an OpenAI-compatible server configured as speaking
        the Responses API too."""
        return target.dialect in self.dialect.speakers or (
            self.dialect is NativeDialect.OPENAI_RESPONSES and target.options.get("responses_api") == "native")


DEFAULT_SEARCH_ESTIMATE = 5
"""Web searches a budget reserves for a search tool the request does not bound."""


class ChatRequest:
    """A chat request in canonical (OpenAI) form, with what the sidecar derived from it.

    `body` is the client's OpenAI request (or the canonical translation of what it sent) and is
    never mutated: providers copy what they change. `native` is the client's own body when its
    front door speaks another dialect.
    """

    __slots__ = ("body", "client_wants_usage", "native", "stream")

    def __init__(self, body: dict[str, Any], native: NativeBody | None = None) -> None:
        self.body = body
        self.native = native
        self.stream = body.get("stream") is True
        options = body.get("stream_options")
        self.client_wants_usage = self.stream and isinstance(options, dict) and options.get("include_usage") is True

    @property
    def max_output_tokens(self) -> int | None:
        """The output cap the client set, for each of its answers (`choices`)."""
        value = self.body.get("max_completion_tokens") or self.body.get("max_tokens")
        return value if isinstance(value, int) else None

    @property
    def choices(self) -> int:
        """How many answers the client asked for (`n`; Gemini's `candidateCount`): each may use the
        whole output cap, and the provider bills them all."""
        n = self.body.get("n")
        return n if type(n) is int and n > 1 else 1

    @property
    def web_searches(self) -> int:
        """The most web searches a provider's server-side search tool may run for it (for a budget's
        reservation): a Messages search tool's `max_uses`, a Responses request's `max_tool_calls`, or
        `DEFAULT_SEARCH_ESTIMATE` per search tool without a bound; 0 without such a tool (only a
        provider that takes the client's body natively runs one)."""
        native = self.native
        if native is None:
            return 0
        tools = [tool for tool in native.body.get("tools") or () if isinstance(tool, dict)
                 and str(tool.get("type", "")).startswith("web_search")]
        if not tools:
            return 0
        if native.dialect is NativeDialect.OPENAI_RESPONSES:
            most = native.body.get("max_tool_calls")
            return most if type(most) is int and most >= 0 else DEFAULT_SEARCH_ESTIMATE
        return sum(tool["max_uses"] if type(tool.get("max_uses")) is int else DEFAULT_SEARCH_ESTIMATE
                   for tool in tools)

    @property
    def service_tier(self) -> str | None:
        """The service tier the client asked for, in OpenAI's terms (`auto`, `default`, `flex`,
        `priority`, `scale`); None when it asked for none. What each target is sent, and may be
        served at, is `dialects/service_tiers.py`'s business."""
        tier = self.body.get("service_tier")
        return tier if type(tier) is str else None

    @property
    def translated_reasoning_hint(self) -> bool:
        """Whether `reasoning_effort` is the sidecar's translation of another dialect's thinking control
        (Anthropic's `thinking`, a translated Responses `reasoning.effort`), not the client's own field."""
        return self.native is not None and "reasoning_effort" in self.body

    def with_output_limit(self, most: int) -> ChatRequest:
        """The request asking for at most `most` output tokens; itself when it asks for no more."""
        asked = self.max_output_tokens
        if asked is None or asked <= most:
            return self
        field = "max_completion_tokens" if "max_completion_tokens" in self.body else "max_tokens"
        return ChatRequest({**self.body, field: most}, self.native)

    def without_reasoning_hint(self) -> ChatRequest:
        return ChatRequest({k: v for k, v in self.body.items() if k != "reasoning_effort"}, self.native)

    def without_thinking_blocks(self) -> ChatRequest:
        """The request without Claude's signed thinking blocks (`dialects/thinking.py`); itself when it has none."""
        body = unsigned(self.body)
        return self if body is self.body else ChatRequest(body, self.native)


@dataclass(frozen=True, slots=True)
class Quota:
    """One rate-limit window as a provider's answer headers state it; None where a figure is not stated.
    `reset_s` counts from when the answer was received until `remaining` is back to `limit`."""

    limit: float | None = None
    remaining: float | None = None
    reset_s: float | None = None


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What a provider's answer said of its limits: requests and tokens per window, and a back-off."""

    requests: Quota | None = None
    tokens: Quota | None = None
    retry_after_s: float | None = None


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str] = field(repr=False)  # carries the credential: never printed
    body: bytes | None = field(default=None, repr=False)


@dataclass(slots=True)
class ChatResult:
    """A complete (non-streamed) answer.

    `data` is the OpenAI `chat.completion` dict. `raw` is set when the upstream's body already
    is exactly that, so it can be forwarded without re-encoding. `native` carries the provider's
    own response when the client spoke the same dialect (Anthropic in, Anthropic out; Responses in,
    OpenAI's Responses out: then `raw` is that response's own bytes, relayed as they came).
    """

    data: dict[str, Any]
    usage: Usage
    raw: bytes | None = None
    native: dict[str, Any] | None = None


class StreamChunk:
    """One OpenAI `chat.completion.chunk`, with its original JSON bytes when unchanged."""

    __slots__ = ("data", "native", "raw")

    def __init__(self, data: dict[str, Any], raw: bytes | None = None, native: bytes | None = None) -> None:
        self.data = data
        self.raw = raw
        self.native = native  # the provider's own SSE event bytes, for same-dialect pass-through


class WholeStream:
    """An OpenAI stream that arrived whole and was judged by its bytes, to be forwarded as they are.

    `body` is the upstream's SSE body, ending with `data: [DONE]`; the events before
    `usage_start` show output, the one from there to `[DONE]` is the usage event
    (`usage_start` is where `[DONE]` begins when there is none), and `usage` what it says
    (the translator's `usage`: an encoder that writes it anew need not parse it again).
    `finish` is the event with the last finish reason as the judge parsed it, and `finish_at` where
    that event (its `data: `) begins, -1 when there is none: an encoder reading the events need not
    parse it again.
    """

    __slots__ = ("body", "finish", "finish_at", "usage", "usage_start")

    def __init__(self, body: bytes, usage_start: int, usage: Usage | None = None,
                 finish: dict[str, Any] | None = None, finish_at: int = -1) -> None:
        self.body = body
        self.usage_start = usage_start
        self.usage = usage
        self.finish = finish
        self.finish_at = finish_at


class WholeRelayedStream(WholeStream):
    """A stream in the client's own dialect that arrived whole and was judged by its bytes, to be
    relayed as it came (a Responses stream from OpenAI or Azure): `final` is the object its last event
    carried (the Response as it ended), the one event the judge parsed."""

    __slots__ = ("final",)

    def __init__(self, body: bytes, final: dict[str, Any]) -> None:
        super().__init__(body, len(body))
        self.final = final


class WholeStreamReader(Protocol):
    """What a stream translator may also do: judge a stream that arrived whole, in one read, without
    translating it event by event. None when it cannot vouch for it that way: then `feed` and
    `close` read it, as any other. Sets `usage` and `finish_reason` as they would, and nothing that
    keeps `feed` from reading the same body after all (when the encoder cannot write it whole)."""

    def judge_whole(self, body: bytes) -> WholeStream | None: ...


class WholeStreamWriter(Protocol):
    """What an encoder may also do: answer with a `WholeStream` (its client speaks OpenAI)."""

    def write_whole(self, stream: WholeStream) -> bytes: ...


class AttemptAware(Protocol):
    """What an encoder may also want: the target each attempt is sent to (the last one answers)."""

    def attempting(self, target: Target) -> None: ...


class WholeStreamRelayer(Protocol):
    """What an encoder may also do: answer with a `WholeRelayedStream` (its client speaks the
    upstream's dialect): the stream as it came, kept as the encoder keeps a finished one."""

    def relay_whole(self, stream: WholeRelayedStream) -> bytes: ...


def relayed_chunks(produced: list[dict[str, Any]], carrier: dict[str, Any], native: bytes) -> list[StreamChunk]:
    """The chunks one upstream event produced, its own bytes (`native`) riding on the first, so a relay
    never re-encodes; `carrier` (a chunk that shows nothing) carries them when it produced none."""
    first = StreamChunk(produced[0] if produced else carrier, native=native)
    return [first, *(StreamChunk(chunk, native=b"") for chunk in produced[1:])]


def is_usage_chunk(chunk: Mapping[str, Any]) -> bool:
    return not chunk.get("choices") and chunk.get("usage") is not None


def carries_output(chunk: Mapping[str, Any]) -> bool:
    """Whether a chunk shows the client any output (text, tool call, refusal, finish)."""
    for choice in chunk.get("choices") or ():
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
            return True
    return False


class StreamTranslator(Protocol):
    """Turns a provider's streamed body into OpenAI chunks, incrementally.

    `feed` takes raw body bytes as they arrive (any split, even mid-line) and returns the
    chunks completed so far. An in-band error raises `UpstreamError`. `close` is called at
    the end of the body: it returns what remains, ending with exactly one usage chunk
    (`choices: []`, `usage` set) when the provider reported usage, and raises `UpstreamError`
    (`STREAM_BROKEN`) when the stream ended before it was complete. Translators never emit
    `[DONE]`: the server writes it after a clean `close`.
    """

    usage: Usage | None
    finish_reason: str | None  # the last finish seen: whether the stream finished
    @property
    def service_tier(self) -> str | None:
        """The service tier the stream's chunks reported before its usage came (OpenAI's, on every chunk),
        for the estimate of a stream cut before it; None where chunks report none."""
        ...

    @property
    def finish_reasons(self) -> Mapping[int, str]:
        """Every choice's finish reason so far, by the choice's index (several with `n` > 1)."""
        ...

    def feed(self, data: bytes) -> list[StreamChunk]: ...

    def close(self) -> list[StreamChunk]: ...


class OneChoiceFinish:
    """For the translator of a dialect that streams one choice: its finish is choice 0's."""

    __slots__ = ()

    service_tier: str | None = None  # its usage carries the tier from the stream's start (Anthropic's)

    finish_reason: str | None

    @property
    def finish_reasons(self) -> Mapping[int, str]:
        return {} if self.finish_reason is None else {0: self.finish_reason}


def choice_index(choice: Mapping[str, Any], position: int) -> int:
    """A streamed choice's (or Gemini candidate's) `index`, else its position among its chunk's."""
    index = choice.get("index")
    return index if type(index) is int else position


def in_choice_order(finish_reasons: Mapping[int, str]) -> tuple[str, ...]:
    """A stream's finish reasons (`StreamTranslator.finish_reasons`) in the order of its choices, as an
    answer's `choices` list them."""
    return tuple(finish_reasons[index] for index in sorted(finish_reasons))


class Encoder(Protocol):
    """One response's encoding: a fresh encoder per request (streams keep state)."""

    def error_body(self, error: LLMRouteError, status: int) -> bytes: ...

    def unary(self, result: ChatResult) -> bytes: ...

    def chunks(self, chunks: Iterable[StreamChunk]) -> bytes: ...

    def end(self, usage: Usage | None) -> bytes: ...

    def stream_error(self, error: LLMRouteError) -> bytes: ...
