"""The yardstick: a bare aiohttp pass-through proxy, the practical limit of a Python aiohttp proxy.

Any request goes to UPSTREAM + the same path with its body unchanged, over one shared keep-alive
session; a sized answer is read whole and returned, a streamed one is relayed chunk by chunk.
No parsing, routing, telemetry or logging: what llmroute costs beyond this is its own.

Run: `python bench/_bare_proxy.py --port 9100 --upstream http://127.0.0.1:9000`.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

FORWARDED = frozenset({"content-type", "authorization", "accept"})
HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"})
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
    url = request.app[UPSTREAM] + request.rel_url.raw_path_qs
    async with request.app[SESSION].request(request.method, url, data=body, headers=headers) as up:
        out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
        if up.content_length is not None and up.content_type != "text/event-stream":
            return web.Response(status=up.status, body=await up.read(), headers=out_headers)
        response = web.StreamResponse(status=up.status, headers=out_headers)
        await response.prepare(request)
        async for chunk in up.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def open_session(app: web.Application) -> None:
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=None),
        timeout=aiohttp.ClientTimeout(total=600), auto_decompress=False, skip_auto_headers=("User-Agent",))


async def close_session(app: web.Application) -> None:
    await app[SESSION].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--upstream", default="http://127.0.0.1:9000")
    args = parser.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", relay)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, backlog=2048)


if __name__ == "__main__":
    main()
