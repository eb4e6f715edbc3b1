"""Service tiers: the capacity a request asks its provider for, and the one its answer says served it.

Providers bill one model at several prices by the capacity that served a request, and say in the
answer which it was:

- OpenAI (Azure OpenAI and the servers that copy its API alike) takes `service_tier` on a request
  (`auto`, `default`, `flex`, `priority`, `scale`) and reports the tier that served it on the chat
  completion, on every chunk of a stream and on a Response (`default`, `flex`, `priority`,
  `scale`). `auto`, or no value, is the project's default tier, which its owner may have set to
  Priority; a `priority` (or `scale`) request is served at `default` when that capacity runs out;
  a `flex` one is served at `flex` or refused (429), never moved.
- Anthropic takes `auto` (the default: Priority Tier while the organisation's committed capacity
  lasts, else standard) or `standard_only`, and reports `usage.service_tier` (`standard`,
  `priority`; `batch` only for the Batches API, which the sidecar does not call).
- Gemini (the Gemini API) takes `serviceTier` on a request (`standard`, the default, `flex`, `priority`)
  and reports the tier that served it in `usageMetadata.serviceTier`, whole answers and streams alike
  (and, on whole answers, in the `x-gemini-service-tier` header). A `priority` request is served at
  `standard` when its Priority capacity runs out; a `flex` one is best-effort: served at `flex` or
  refused, never moved.
- Vertex AI serves Gemini's Flex and Priority PayGo on its global endpoint only, asked for by the
  `X-Vertex-AI-LLM-Shared-Request-Type` header (`flex`, `priority`: Provisioned Throughput first, when the
  project has some, then that tier), and reports what served it as `usageMetadata.trafficType`
  (`ON_DEMAND`, `ON_DEMAND_FLEX`, `ON_DEMAND_PRIORITY`, `PROVISIONED_THROUGHPUT`), read as `standard`,
  `flex` and `priority` (Provisioned Throughput as none: the base list). A regional endpoint, and Claude on
  Vertex, is sent no tier.
- Amazon Bedrock's Converse API takes `serviceTier: {"type": …}` (`default`, `flex`, `priority`,
  `reserved`) and reports the tier that served it the same way, on a whole answer and in a stream's
  `metadata` event; InvokeModel (Claude) takes and reports it in the `X-Amzn-Bedrock-Service-Tier`
  header (`BEDROCK_TIER_HEADER`, read where the answer arrives: `server/dispatch._send`).

Google's and Amazon's tiers are asked for only where the target's model prices them (`priced_tier`):
not every project or model has them, and asking one that does not is a 400 the client would get.

The names each provider type reports are `table.REPORTED_SERVICE_TIERS`. The sidecar prices an answer
at the list of the tier it reports (`Pricing.service_tiers`,
`routing/cost.py`), and reserves a budget at the dearest list among the tiers the request may be
served at (`landing_tiers`). A request sent to another provider's API has its tier translated
(`anthropic_request_tier`, `openai_request_tier`, `gemini_request_tier`), as the nearest the other provider offers: the tier
decides what is billed, never what is answered, so it is mapped rather than refused.
"""

from __future__ import annotations

from llmroute_proxy.dialects.base import NativeBody
from llmroute_proxy.table import ProviderType, Target, vertex_location, vertex_publisher

STANDARD_TIERS = frozenset({"default", "standard"})
"""Each provider's name for its ordinary tier: an answer served there is no news (the access line omits it)."""

_FALLS_BACK = ("priority", "scale")  # OpenAI serves these at `default` when their capacity runs out
_BEDROCK_TIERS = {"default": "default", "flex": "flex", "priority": "priority", "scale": "priority"}
_VERTEX_TRAFFIC = {"ON_DEMAND": "standard", "ON_DEMAND_FLEX": "flex", "ON_DEMAND_PRIORITY": "priority"}
_GEMINI_TIERS = {"default": "standard", "flex": "flex", "priority": "priority", "scale": "priority"}


def anthropic_request_tier(openai_tier: str | None) -> str | None:
    """An OpenAI request's `service_tier` as an Anthropic request's: `default` and `flex` ask for the
    ordinary price or less, and Anthropic's nearest is `standard_only` (it has no cheaper tier); `priority`,
    `scale` and `auto` are left to Anthropic's own default, `auto`, which uses Priority Tier capacity
    when the organisation has committed some."""
    return "standard_only" if openai_tier in ("default", "flex") else None


def openai_request_tier(anthropic_tier: object) -> str | None:
    """An Anthropic request's `service_tier` as an OpenAI request's: `standard_only` is `default`;
    `auto` is left out, OpenAI's own default (`auto`: the project's default tier)."""
    return "default" if anthropic_tier == "standard_only" else None


def gemini_request_tier(target: Target, openai_tier: str | None) -> str | None:
    """An OpenAI request's `service_tier` as a Gemini request's `serviceTier`: `default` is `standard`,
    `flex` and `priority` are Gemini's own, and `scale` (OpenAI's reserved capacity, above the ordinary)
    is `priority`, the nearest; `auto` or none is left to Gemini's default, `standard`. Sent only when the
    target's model prices that tier (`priced_tier`)."""
    return priced_tier(target, _GEMINI_TIERS.get(openai_tier) if openai_tier is not None else None)


def priced_tier(target: Target, tier: str | None) -> str | None:
    """`tier` when the target's model prices it (`pricing.serviceTiers`), else None.

    Google's and Amazon's Flex and Priority capacity is not every project's or every model's: Gemini's
    Priority is for its paid tiers 2 and 3, Vertex AI serves both for some models on its global endpoint,
    Bedrock for some models. A request for a tier the project or model lacks is refused with a 400, which
    is the client's to see, not a failover. So a cloud target is asked for a tier only when its model's
    prices name it: listing the tier is how its owner says the project has it (and how it is billed). An
    OpenAI client that always asks for `priority` keeps being served elsewhere as before."""
    return tier if tier is not None and tier in target.pricing.service_tiers else None


def gemini_reported_tier(value: object) -> str | None:
    """The tier a Gemini answer's `usageMetadata.serviceTier` names, as `REPORTED_SERVICE_TIERS` spells it:
    the API writes the enum's value (`priority`); its proto name (`SERVICE_TIER_PRIORITY`) and any case are
    read alike. None for none, or `unspecified`."""
    if type(value) is not str:
        return None
    tier = value.lower().removeprefix("service_tier_")
    return tier if tier and tier != "unspecified" else None


def vertex_request_tier(target: Target, openai_tier: str | None) -> str | None:
    """The Shared-Request-Type a Vertex AI target is asked for (`flex`, `priority`): Gemini's nearest to the
    OpenAI tier, where Vertex serves it (a Gemini model, the global endpoint); none elsewhere, or for the
    standard tier."""
    if vertex_publisher(target.model) != "google" or vertex_location(target.url) != "global":
        return None
    tier = gemini_request_tier(target, openai_tier)
    return tier if tier in ("flex", "priority") else None


def bedrock_request_tier(target: Target, openai_tier: str | None) -> str | None:
    """The service tier a Bedrock target is sent: OpenAI's tier where Bedrock has it, `scale`
    (OpenAI's reserved capacity) as `priority` (Bedrock's `reserved` needs a reservation of its own); none
    for `auto` or none. Sent only when the target's model prices that tier (`priced_tier`): in the body
    to a Converse model, in `BEDROCK_TIER_HEADER` to Claude through InvokeModel."""
    if openai_tier is None:
        return None
    return priced_tier(target, _BEDROCK_TIERS.get(openai_tier))


BEDROCK_TIER_HEADER = "x-amzn-bedrock-service-tier"
"""InvokeModel's service tier, in a request's and its answer's headers."""


def bedrock_reported_tier(service_tier: object) -> str | None:
    """The tier a Converse answer's `serviceTier` (`{"type": …}`) says served it."""
    tier = service_tier.get("type") if isinstance(service_tier, dict) else None
    return tier if type(tier) is str and tier else None


def vertex_reported_tier(traffic_type: object) -> str | None:
    """The tier a Vertex AI answer's `usageMetadata.trafficType` says served it; None for Provisioned
    Throughput (bought ahead, not per token) or none."""
    return _VERTEX_TRAFFIC.get(traffic_type) if type(traffic_type) is str else None


def sent_tier(target: Target, canonical: str | None, native: NativeBody | None) -> str | None:
    """The `service_tier` the target's provider is sent: the client's own when the target takes its
    body natively, else the canonical request's (`canonical`, OpenAI's terms) translated for its API;
    none to Vertex AI or Bedrock but where they serve tiers."""
    if target.provider_type is ProviderType.BEDROCK:  # Claude's native body loses its tier there (`_NOT_SENT`)
        return bedrock_request_tier(target, canonical)
    if native is not None and native.spoken_by(target):
        tier = native.body.get("service_tier")
        return tier if type(tier) is str else None
    if target.provider_type is ProviderType.ANTHROPIC:
        return anthropic_request_tier(canonical)
    if target.provider_type is ProviderType.GEMINI:
        return gemini_request_tier(target, canonical)
    if target.provider_type is ProviderType.VERTEX:
        return vertex_request_tier(target, canonical)
    return canonical


def landing_tiers(provider_type: ProviderType, sent: str | None) -> tuple[str, ...] | None:
    """The tiers an answer to a request sent `sent` may report: None when it may be any (the provider
    chooses: OpenAI's `auto`, Anthropic's `auto`)."""
    if provider_type is ProviderType.BEDROCK:  # how Bedrock falls back from flex or priority is not documented
        return (sent, "default") if sent and sent != "default" else ("default",)
    if provider_type is ProviderType.GEMINI:
        return ("priority", "standard") if sent == "priority" else (sent or "standard",)
    if provider_type is ProviderType.VERTEX:  # how Vertex falls back from either is not documented: standard too
        return (sent, "standard") if sent else ("standard",)
    if provider_type is ProviderType.ANTHROPIC:
        return ("standard",) if sent == "standard_only" else None
    if sent in ("default", "flex"):
        return (sent,)
    if sent in _FALLS_BACK:
        return (sent, "default")
    return None
