"""Browser-originated requests to the data plane are refused, unless their origin is allowed.

The data plane spends money on the caller's behalf and has no credentials of its own to check: anything
that can reach localhost may use it. A web page in a browser on the same machine can reach it too — a
`text/plain` POST needs no CORS preflight, and a DNS-rebinding page even counts as same-origin — so a
page could spend the keys' money. Applications and the official SDKs send neither `Origin` nor
`Sec-Fetch-Site`; browsers send `Origin` on every POST and `Sec-Fetch-Site` on every request. So:

- `Origin` present: allowed only when listed (`--allow-origins`); the answer then carries CORS headers
  and a preflight is answered, so that a listed browser app can really use the sidecar.
- no `Origin`, `Sec-Fetch-Site` present: allowed only when it is `none` (a person typed the URL).
  `same-origin` is refused too: the sidecar serves no pages, so a "same-origin" request can only come
  from a page whose host name was rebound to the sidecar's address.
- neither: not a browser (curl, the SDKs, any HTTP library) — allowed. `Sec-Fetch-Mode` alone is
  ignored: Node's built-in fetch sends it on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest

from llmroute_proxy.errors import LLMRouteError

# What the client's code may read from an answer to an allowed origin: the routing report.
_EXPOSED = ("x-llmroute-route, x-llmroute-tier, x-llmroute-provider, x-llmroute-model, x-llmroute-attempts, "
            "x-llmroute-cost-usd, x-llmroute-experiment, retry-after, x-should-retry")
_PREFLIGHT_MAX_AGE_S = 600


class BrowserOriginRefused(LLMRouteError):
    status = 403
    error_type = "permission_error"
    code = "browser_origin_refused"

    def __init__(self, header: str, value: str) -> None:
        if header == hdrs.ORIGIN:
            why = (f"it carries the header Origin: {value!r}, which is not an allowed origin "
                   "(see --allow-origins / LLMROUTE_ALLOW_ORIGINS)")
        else:
            why = f"it carries the header Sec-Fetch-Site: {value!r}, so a web page sent it"
        super().__init__(f"This llmroute sidecar refuses requests from web browsers: {why}.")
        self.param = header


def parse_origins(items: Iterable[str]) -> frozenset[str]:
    """Origins as browsers write them (`https://app.example.com`, `http://localhost:3000`).

    Raises ValueError for anything that is not `scheme://host[:port]`, so that a path or a wildcard is
    refused at start-up instead of silently never matching.
    """
    origins = set()
    for item in items:
        text = item.strip().rstrip("/")
        if not text:
            continue
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query \
                or parts.fragment or "@" in parts.netloc or "*" in parts.netloc:
            raise ValueError(f"not an origin (scheme://host[:port]): {item!r}")
        origins.add(normal_origin(text))
    return frozenset(origins)


def normal_origin(origin: str) -> str:
    """Scheme and host are case-insensitive, and browsers leave out the default port."""
    text = origin.strip().lower()
    for scheme, port in (("http://", ":80"), ("https://", ":443")):
        if text.startswith(scheme) and text.endswith(port):
            return text[: -len(port)]
    return text


def refused_header(headers: Mapping[str, str], allowed: frozenset[str]) -> tuple[str, str] | None:
    """The header (name, value) that shows a browser sent the request and it is not allowed, or None."""
    origin = headers.get(hdrs.ORIGIN)
    if origin is not None:
        return None if normal_origin(origin) in allowed else (hdrs.ORIGIN, origin)
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() != "none":
        return ("Sec-Fetch-Site", site)
    return None


Refuse = Callable[[BaseRequest, LLMRouteError], web.StreamResponse]
Screen = Callable[[BaseRequest], web.StreamResponse | None]


def protect(app: web.Application, allowed: frozenset[str]) -> None:
    """Give the allowed origins' answers CORS headers (the refusals and preflights are `screen`'s)."""
    if allowed:  # without allowed origins no answer gets CORS headers: no signal to send per response
        app.on_response_prepare.append(_CorsHeaders(allowed))


def screen(allowed: frozenset[str], refuse: Refuse) -> Screen:
    """The answer to a browser-originated request that is not allowed (`refuse` answers in the
    endpoint's own error dialect) or to an allowed origin's preflight; None for the others.

    The connection layer's front door calls it before aiohttp's router, not a middleware: a
    middleware costs every request two more calls and frames (~2 % of a request's instructions).
    """
    cors = _CorsHeaders(allowed)

    def screened(request: BaseRequest) -> web.StreamResponse | None:
        headers = request.headers
        refused = refused_header(headers, allowed)
        if refused is not None:
            return refuse(request, BrowserOriginRefused(*refused))
        if hdrs.ORIGIN in headers and request.method == hdrs.METH_OPTIONS \
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in headers:
            preflight = _preflight(request)
            cors.add_to(request, preflight)  # answered before the router: no app signal reaches it
            return preflight
        return None

    return screened


def _preflight(request: BaseRequest) -> web.Response:
    headers = {
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, POST, DELETE, OPTIONS",
        hdrs.ACCESS_CONTROL_MAX_AGE: str(_PREFLIGHT_MAX_AGE_S),
    }
    asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
    if asked:
        headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = asked
    return web.Response(status=204, headers=headers)


class _CorsHeaders:
    """A signal, not the screen: streams are prepared inside handlers, after the screen has run."""

    __slots__ = ("_allowed",)

    def __init__(self, allowed: frozenset[str]) -> None:
        self._allowed = allowed

    async def __call__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.add_to(request, response)

    def add_to(self, request: BaseRequest, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or normal_origin(origin) not in self._allowed:
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = _EXPOSED
        response.headers.add(hdrs.VARY, hdrs.ORIGIN)
