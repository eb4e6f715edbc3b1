"""A simulated Vertex AI: Gemini and Claude at their publishers' paths, behind Google's front end.

Each publisher's answers are the Gemini and Anthropic simulators' own (their handlers serve the
requests); this module is the front end, and checks what Vertex checks before a model sees a request:

- the path: `/{v1|v1beta1}/projects/P/locations/L/publishers/{google|anthropic}/models/{model}:{method}`,
  with the simulator's project and one of its locations (else 403 `PERMISSION_DENIED`, as Vertex
  answers for a project the caller may not use);
- the caller: `Authorization: Bearer` a JWT the service account signed itself (RS256, verified with
  its public key), issued by its e-mail, with the cloud-platform scope, not expired by the
  simulator's clock, or an access token a metadata server gave (`access_tokens`); else 401
  `UNAUTHENTICATED` in Google's error shape;
- Gemini: `role` on every content, and `countTokens` takes `contents` (with `systemInstruction`,
  `tools`) directly: the Developer API's `generateContentRequest` is an unknown field here; no
  embeddings on `publishers/google` methods of the Developer API;
- Claude: `anthropic_version` `vertex-2023-10-16` in the body, no `model` in a `:rawPredict` body
  (it is in the URL; a `count-tokens:rawPredict` body names it), betas in the `anthropic-beta` header, as
  Anthropic's own Vertex client sends them.

Gemini's answers report `trafficType` in `usageMetadata`, not the Developer API's `serviceTier`: Flex and
Priority PayGo (the `X-Vertex-AI-LLM-Shared-Request-Type` header) on the global location only, else on
demand.

Errors of the front end (faults included) are Google's `{"error": {"code", "message", "status"}}`;
Claude's own refusals stay Anthropic's.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Sequence
from typing import Any, Unpack

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from llmroute_proxy.sim import anthropic, gemini
from llmroute_proxy.sim.runtime import SIM_CALL, SimCall, SimConfig, SimOptions, sim_app

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
DEFAULT_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "claude-sonnet-4-5@20250929", "claude-haiku-4-5@20251001")
CLOCK_SKEW_S = 10
SHARED_REQUEST_TYPE = "X-Vertex-AI-LLM-Shared-Request-Type"
_TRAFFIC_TYPES = {"flex": "ON_DEMAND_FLEX", "priority": "ON_DEMAND_PRIORITY"}
_UNAUTHENTICATED = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                    "or other valid authentication credential.")


class VertexDialect(gemini.GeminiDialect):
    """Google's front end: a service account's self-signed JWT, errors as Google RPC statuses."""

    def __init__(self, client_email: str, public_key: rsa.RSAPublicKey, key_id: str,
                 access_tokens: Callable[[str], bool] | None = None) -> None:
        self.client_email = client_email
        self.public_key = public_key
        self.key_id = key_id
        self.access_tokens = access_tokens

    def served(self, request: web.Request, body: dict[str, Any], config: SimConfig
               ) -> tuple[dict[str, Any], dict[str, str]]:
        """Vertex AI reports no `serviceTier`: its `usageMetadata` says `trafficType`. Flex and Priority PayGo
        are asked for by `X-Vertex-AI-LLM-Shared-Request-Type`, and served on the global endpoint only
        (elsewhere the request is served on demand); Priority falls back to on demand once its capacity ran
        out (`SimConfig.priority_capacity`)."""
        asked = request.headers.get(SHARED_REQUEST_TYPE, "").lower()
        if request.match_info.get("location") != "global" or (asked == "priority" and not config.priority_capacity):
            asked = ""
        return {"trafficType": _TRAFFIC_TYPES.get(asked, "ON_DEMAND")}, {}

    def authorized(self, request: web.Request, api_key: str) -> bool:
        bearer = request.headers.get("Authorization", "")
        if not bearer.startswith("Bearer "):
            return False
        if self.access_tokens is not None and self.access_tokens(bearer.removeprefix("Bearer ")):
            return True  # an access token the metadata server gave (sim/gcp_metadata)
        claims = self._verified(bearer.removeprefix("Bearer "))
        if claims is None:
            return False
        now = request[SIM_CALL].state.config.clock()
        exp, iat = claims.get("exp"), claims.get("iat")
        return (hmac.compare_digest(str(claims.get("iss")), self.client_email)
                and SCOPE in str(claims.get("scope", "")).split()
                and isinstance(exp, int) and isinstance(iat, int)
                and iat - CLOCK_SKEW_S <= now < exp + CLOCK_SKEW_S and exp - iat <= 3600)

    def _verified(self, token: str) -> dict[str, Any] | None:
        """The claims of a token whose RS256 signature the service account's key made; None otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header, claims, signature = (orjson.loads(_unb64(parts[0])), orjson.loads(_unb64(parts[1])),
                                         _unb64(parts[2]))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(header, dict) or header.get("alg") != "RS256" or header.get("kid") != self.key_id:
            return None
        try:
            self.public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(),
                                   hashes.SHA256())
        except InvalidSignature:
            return None
        return claims if isinstance(claims, dict) else None

    def unauthorized(self, request: web.Request) -> web.Response:
        return request[SIM_CALL].state.json({"error": {"code": 401, "message": _UNAUTHENTICATED,
                                                       "status": "UNAUTHENTICATED"}}, 401)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _google_error(call: SimCall, status: int, message: str) -> web.Response:
    return call.state.error(status, message=message)


def _refused_place(request: web.Request, project: str, locations: Sequence[str]) -> web.Response | None:
    info = request.match_info
    if info["project"] == project and info["location"] in locations:
        return None
    where = f"projects/{info['project']}/locations/{info['location']}"
    return _google_error(request[SIM_CALL], 403, f"Permission 'aiplatform.endpoints.predict' denied on resource "
                                                 f"'//aiplatform.googleapis.com/{where}' (or it may not exist).")


async def google_model_action(request: web.Request) -> web.StreamResponse:
    call = request[SIM_CALL]
    action = request.match_info["target"].rpartition(":")[2]
    body = call.body if isinstance(call.body, dict) else {}
    if action not in ("generateContent", "streamGenerateContent", "countTokens"):
        return _google_error(call, 404, f"Method not found: {action}. (Vertex AI embeds through :predict)")
    if action == "countTokens" and "generateContentRequest" in body:
        return _google_error(call, 400, 'Invalid JSON payload received. Unknown name "generateContentRequest": '
                                        "Cannot find field.")
    contents = body.get("contents")
    for index, content in enumerate(contents if isinstance(contents, list) else ()):
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            return _google_error(call, 400, f"Please use a valid role: user, model. (contents[{index}])")
    return await gemini.model_action(request)


async def anthropic_model_action(request: web.Request) -> web.StreamResponse:
    call = request[SIM_CALL]
    model, _, action = request.match_info["target"].rpartition(":")
    body = call.body
    if action not in ("rawPredict", "streamRawPredict") or not isinstance(body, dict):
        return _google_error(call, 400, "Invalid request: expected a JSON body and :rawPredict or :streamRawPredict.")
    version = body.get("anthropic_version")
    if version != VERTEX_ANTHROPIC_VERSION:
        problem = "anthropic_version: Field required" if version is None else \
            f"anthropic_version: Input should be '{VERTEX_ANTHROPIC_VERSION}'"
        return call.state.json({"type": "error", "error": {"type": "invalid_request_error", "message": problem}}, 400)
    counting = model == "count-tokens"
    if not counting and "model" in body:
        return call.state.json({"type": "error", "error": {
            "type": "invalid_request_error", "message": "model: Extra inputs are not permitted"}}, 400)
    betas = request.headers.get("anthropic-beta")
    messages_body = {name: value for name, value in body.items() if name != "anthropic_version"}
    if not counting:
        messages_body["model"] = model
    headers = {"anthropic-version": "2023-06-01"}
    if betas:
        headers["anthropic-beta"] = betas
    request[anthropic.API_HEADERS] = headers
    request[SIM_CALL] = SimCall(call.state, messages_body, call.fault)
    if counting:
        return await anthropic.count_message_tokens(request)
    return await anthropic.messages(request)


def vertex_app(client_email: str, public_key: rsa.RSAPublicKey, key_id: str, *, project: str = "sim-project",
               locations: Sequence[str] = ("us-east5", "europe-west1", "global"),
               access_tokens: Callable[[str], bool] | None = None,
               **options: Unpack[SimOptions]) -> web.Application:
    """A Vertex AI front end for one project that admits the service account `client_email` (its public
    key and key id: tests make a throwaway pair), and the access tokens `access_tokens` says are live (a
    metadata server's, `sim/gcp_metadata.MetadataTokens.valid`); `options.clock` is the clock tokens expire by."""
    dialect = VertexDialect(client_email, public_key, key_id, access_tokens)
    app = anthropic.with_prompt_cache(sim_app(client_email, options, dialect,
                                              name="sim-vertex", models=DEFAULT_MODELS))
    prefix = "/{version:v1|v1beta1}/projects/{project}/locations/{location}/publishers"

    def placed(handler: Any) -> Any:
        async def checked(request: web.Request) -> web.StreamResponse:
            refused = _refused_place(request, project, locations)
            return refused if refused is not None else await handler(request)
        return checked

    app.router.add_post(prefix + "/google/models/{target}", placed(google_model_action))
    app.router.add_post(prefix + "/anthropic/models/{target}", placed(anthropic_model_action))
    return app
