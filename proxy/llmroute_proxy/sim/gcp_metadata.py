"""A simulated GCP metadata server: the pod's access token, as GKE's (Workload Identity) and a GCE VM's give it.

`GET /computeMetadata/v1/instance/service-accounts/default/token` with `Metadata-Flavor: Google` answers
`{"access_token", "expires_in", "token_type": "Bearer"}` and the same header. Like the real server, it
hands out the token it holds, with the seconds it has left, until that token is near its end (five
minutes), and only then a new one; without the header it answers 403, as the real one does. `always_fail`
makes every answer a status (503: the server is down; 404: no Google account is bound to the pod).
The tokens it issued are what the Vertex simulator accepts besides self-signed JWTs (`vertex_app`'s
`access_tokens`), until they expire on the simulator's clock.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
TOKEN_LIFETIME_S = 3599
RENEW_WITHIN_S = 300


@dataclass
class MetadataTokens:
    """The tokens the metadata server issued, by their expiry on `clock`; `fetches` counts its answers."""

    clock: Callable[[], float] = time.time
    lifetime_s: int = TOKEN_LIFETIME_S
    issued: dict[str, float] = field(default_factory=dict)
    fetches: int = 0
    always_fail: int | None = None
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def current(self) -> tuple[str, int]:
        """The token to hand out now, and the whole seconds it has left."""
        now = self.clock()
        held = next(reversed(self.issued), None)
        if held is None or self.issued[held] - now <= RENEW_WITHIN_S:
            held = f"ya29.sim-metadata-{next(self._numbers)}"
            self.issued[held] = now + self.lifetime_s
        return held, int(self.issued[held] - now)

    def valid(self, token: str) -> bool:
        expires = self.issued.get(token)
        return expires is not None and self.clock() < expires


def metadata_app(tokens: MetadataTokens) -> web.Application:
    async def token(request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403, text="Missing required header \"Metadata-Flavor\": \"Google\"\n")
        tokens.fetches += 1
        if tokens.always_fail is not None:
            return web.Response(status=tokens.always_fail, text="unavailable\n", headers={"Metadata-Flavor": "Google"})
        access_token, left = tokens.current()
        return web.json_response({"access_token": access_token, "expires_in": left, "token_type": "Bearer"},
                                 headers={"Metadata-Flavor": "Google"})

    app = web.Application()
    app.router.add_get(TOKEN_PATH, token)
    return app
