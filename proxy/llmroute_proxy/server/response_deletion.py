"""`DELETE /v1/responses/{id}`: the sidecar's copy, and the provider's own when it keeps one.

A response an OpenAI or Azure OpenAI target answered natively, with the client's `store`, is kept
by that provider too (OpenAI: 30 days), under the same id. Deleting only the sidecar's copy would
answer `deleted: true` while the provider still holds the conversation, and a later turn could
continue from it there (`previous_response_id` is looked for at the provider when the sidecar has
none). So the provider's copy is deleted first, with the provider's credentials, and the sidecar's
only once that succeeded (or the provider no longer had it): a failure leaves both, and the client
can try again.
"""

from __future__ import annotations

import asyncio

from llmroute_proxy.errors import FailureKind, LLMRouteError, UpstreamError
from llmroute_proxy.providers.registry import provider_for
from llmroute_proxy.server.response_store import ResponseNotFound
from llmroute_proxy.server.state import Sidecar
from llmroute_proxy.server.upstream import MAX_ERROR_BODY
from llmroute_proxy.table import Target

PROVIDER_DELETE_TIMEOUT_S = 10.0


class ProviderCopyNotDeleted(LLMRouteError):
    status = 502
    error_type = "api_error"
    code = "provider_delete_failed"

    def __init__(self, response_id: str, provider: str, why: str) -> None:
        super().__init__(f"Response '{response_id}' was not deleted: provider '{provider}', which keeps its own "
                         f"copy, could not delete it ({why}). Nothing was deleted; try again.")


async def delete_response(sidecar: Sidecar, response_id: str) -> None:
    """Delete a stored response everywhere it is kept; `ResponseNotFound` when the sidecar holds none,
    `ProviderCopyNotDeleted` when the provider's copy could not be deleted (the sidecar's is kept)."""
    holder = sidecar.responses.held_by(response_id, sidecar.clock())
    if not holder:
        sidecar.responses.delete(response_id, sidecar.clock())
        return
    await _delete_at_provider(sidecar, holder, response_id)
    try:
        sidecar.responses.delete(response_id, sidecar.clock())
    except ResponseNotFound:
        pass  # it left the store (expiry, eviction, another DELETE) while the provider was asked: gone


async def _delete_at_provider(sidecar: Sidecar, provider_name: str, response_id: str) -> None:
    target = _a_target_of(sidecar, provider_name)
    if target is None:
        raise ProviderCopyNotDeleted(response_id, provider_name, "it is no longer in the routing table")
    provider = provider_for(target.provider_type)
    request = provider.delete_response_request(target, response_id)
    if request is None:
        return
    try:
        async with asyncio.timeout(PROVIDER_DELETE_TIMEOUT_S):
            upstream = await sidecar.upstream.send(request, target.id, ca_bundle=target.ca_bundle)
            async with upstream:
                if upstream.status < 300 or upstream.status == 404:  # 404: it is gone there already
                    return
                error = provider.classify_error(upstream.status, upstream.headers,
                                                await upstream.read_head(MAX_ERROR_BODY))
    except TimeoutError:
        error = UpstreamError(FailureKind.TIMEOUT, f"no answer within {PROVIDER_DELETE_TIMEOUT_S:g}s")
    except UpstreamError as failed:
        error = failed
    raise ProviderCopyNotDeleted(response_id, provider_name, sidecar.scrubber.error(error).message)


def _a_target_of(sidecar: Sidecar, provider_name: str) -> Target | None:
    """Any of the provider's targets: they share its endpoint (for this sidecar's region) and key."""
    if sidecar.table is None:
        return None
    return next((t for t in sidecar.table.targets().values() if t.provider == provider_name), None)
