"""`GET` and `DELETE /v1/responses/{id}` where the provider keeps a copy: OpenAI and Azure OpenAI.

A response such a target answered natively, with the client's `store`, is kept by that provider too
(OpenAI: 30 days), under the same id.

- DELETE deletes the provider's copy first, with the provider's key, and the sidecar's only once that
  succeeded (or the provider no longer had it): a failure leaves both, and the client can try again.
  Deleting only the sidecar's copy would answer `deleted: true` while the provider still holds the
  conversation, and a later turn could continue from it there.
- An id the sidecar does not hold (after a restart; expired or evicted: not one deleted here) is looked
  for at the route's providers that keep Responses, in tier order, each store asked once (a provider
  at one endpoint: `Target.response_store`; one provider's two regions are two Azure resources, each
  with its own): the first that has it answers a GET with its own object, or deletes it. One that does
  not hold it answers 404, and the next is asked.
- `input_items` of an id the sidecar does not hold is asked of the same stores, the client's query
  (`limit`, `order`, `after`, `include`) passed on: the provider's page is the answer.
- A response the sidecar holds is deleted at the store that answered it, not at another endpoint of
  the same provider, which would answer 404 while the copy lives on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlencode

import orjson

from llmroute_proxy.dialects.responses.items import page
from llmroute_proxy.errors import FailureKind, LLMRouteError, UpstreamError
from llmroute_proxy.providers.registry import provider_for
from llmroute_proxy.server.response_store import ResponseNotFound
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.server.upstream import MAX_ERROR_BODY
from llmroute_proxy.table import Route, Target

PROVIDER_TIMEOUT_S = 10.0


class ProviderNotAnswering(LLMRouteError):
    """A provider that keeps (or may keep) the response could not be asked: nothing was changed."""

    status = 502
    error_type = "api_error"

    def __init__(self, response_id: str, provider: str, why: str, method: str) -> None:
        if method == "DELETE":
            self.code = "provider_delete_failed"
            message = (f"Response '{response_id}' was not deleted: provider '{provider}', which keeps its own copy, "
                       f"could not delete it ({why}). Nothing was deleted; try again.")
        else:
            self.code = "provider_lookup_failed"
            message = (f"Response '{response_id}' is not held by this sidecar, and provider '{provider}', which may "
                       f"keep it, could not be asked ({why}); try again.")
        super().__init__(message)


async def read_response(sidecar: Sidecar, response_id: str, route: Route | None) -> bytes:
    """The stored Response, or the provider's own when the sidecar no longer holds it."""
    try:
        return sidecar.responses.response(response_id, sidecar.clock())
    except ResponseNotFound as not_found:
        return await _asked_of_keepers(sidecar, not_found, route, "GET")


async def read_input_items(sidecar: Sidecar, response_id: str, route: Route | None, query: Mapping[str, str]) -> bytes:
    """A page of the response's input items (`query`: `limit`, `order`, `after`, `include`): from the
    store, or the provider's own page when the sidecar no longer holds the response."""
    try:
        items = sidecar.responses.input_items(response_id, sidecar.clock())
    except ResponseNotFound as not_found:
        return await _asked_of_keepers(sidecar, not_found, route, "GET", urlencode(list(query.items())))
    return orjson.dumps(page(items, query))


async def delete_response(sidecar: Sidecar, response_id: str, route: Route | None) -> None:
    """Delete a response everywhere it is kept; `ResponseNotFound` when neither the sidecar nor a
    provider of the route holds it, `ProviderNotAnswering` when a provider's copy could not be
    deleted (the sidecar's is then kept)."""
    try:
        holder = sidecar.responses.held_by(response_id, sidecar.clock())
    except ResponseNotFound as not_found:
        await _asked_of_keepers(sidecar, not_found, route, "DELETE")
        return
    if holder:
        keeper = _a_target_of(sidecar, holder)
        if keeper is None:
            raise ProviderNotAnswering(response_id, holder, "its endpoint is no longer in the routing table",
                                       "DELETE")
        await _ask(sidecar, keeper, response_id, "DELETE")  # a 404 there: gone already
    try:
        sidecar.responses.delete(response_id, sidecar.clock())
    except ResponseNotFound:
        pass  # it left the store (expiry, eviction, another DELETE) while the provider was asked: gone


async def _asked_of_keepers(sidecar: Sidecar, not_found: ResponseNotFound, route: Route | None, method: str,
                            input_items: str | None = None) -> bytes:
    """What the first of the route's stores that holds a response the sidecar does not (not one deleted
    here) answers; `not_found`, naming every store asked, when none holds it."""
    if not_found.deleted:
        raise not_found
    keepers = _keepers(route)
    for target in keepers:
        found = await _ask(sidecar, target, not_found.response_id, method, input_items)
        if found is not None:
            return found
    raise _nowhere(not_found, keepers) from None


async def _ask(sidecar: Sidecar, target: Target, response_id: str, method: str,
               input_items: str | None = None) -> bytes | None:
    """The provider's answer to a GET or DELETE of its copy (or a GET of a page of its `input_items`, with
    that query); None when it holds none (404)."""
    provider = provider_for(target.provider_type)
    request = provider.stored_response_request(target, response_id, method, input_items)
    if request is None:
        return None
    try:
        async with asyncio.timeout(PROVIDER_TIMEOUT_S):
            upstream = await sidecar.upstream.send(request, target.id, ca_bundle=target.ca_bundle)
            async with upstream:
                if upstream.status < 300:
                    return await upstream.read()
                if upstream.status == 404:
                    return None
                error = provider.classify_error(upstream.status, upstream.headers,
                                                await upstream.read_head(MAX_ERROR_BODY))
    except TimeoutError:
        error = UpstreamError(FailureKind.TIMEOUT, f"no answer within {PROVIDER_TIMEOUT_S:g}s")
    except UpstreamError as failed:
        error = failed
    raise ProviderNotAnswering(response_id, target.provider, sidecar.scrubber.error(error).message, method)


def _keepers(route: Route | None) -> list[Target]:
    """One target of each store of the route's providers that keep Responses, the default tier's first."""
    if route is None:
        return []
    tiers = sorted(route.tiers.values(), key=lambda tier: tier.name != route.default_tier)
    seen: dict[str, Target] = {}
    for tier in tiers:
        for target in tier.targets:
            store = target.response_store
            if store not in seen and provider_for(target.provider_type).stored_response_request(
                    target, "", "GET") is not None:
                seen[store] = target
    return list(seen.values())


def _nowhere(not_found: ResponseNotFound, asked_targets: list[Target]) -> ResponseNotFound:
    asked = sorted(t.response_store for t in asked_targets)  # one target per store
    if not asked:
        return not_found
    return ResponseNotFound(not_found.response_id, f"{not_found.why}; nor does {', '.join(asked)}, asked for it",
                            not_found.param)


def _a_target_of(sidecar: Sidecar, store: str) -> Target | None:
    """Any target of the store: they share its provider's key and its endpoint."""
    if sidecar.table is None:
        return None
    return next((t for t in sidecar.table.targets().values() if t.response_store == store), None)
