"""The simulators' runner: `SimServer` runs an app on a real loopback port and can stop
listening and resume on the same port, so callers see refused and dropped connections exactly
as they would from a provider that is down; `main` runs one simulator from the command line.

The shared runtime lives in `runtime`, streaming in `streaming` and the deterministic answers
in `answers`; their names are re-exported here for callers that import them from this module.

Nothing here may import `llmroute_proxy.server`: the simulators stand in for the outside world.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
from collections.abc import Callable

from aiohttp import web

from llmroute_proxy.sim.answers import (
    count_tokens,
    embedding_vector,
    fit_tokens,
    reply_text,
    split_even,
    split_words,
    tool_arguments,
    tool_reply_text,
)
from llmroute_proxy.sim.network import Delivery, DeliveryFront
from llmroute_proxy.sim.runtime import (
    SIM_CALL,
    SIM_STATE,
    Dialect,
    RecordedRequest,
    SimCall,
    SimConfig,
    SimState,
    SimStats,
    StreamStopped,
    build_app,
    close_connection,
    redact,
    reset_connection,
    sim_state,
)
from llmroute_proxy.sim.streaming import SimStream, sse_data, sse_event

__all__ = [
    "SIM_CALL",
    "SIM_STATE",
    "Dialect",
    "RecordedRequest",
    "SimCall",
    "SimConfig",
    "SimServer",
    "SimState",
    "SimStats",
    "SimStream",
    "StreamStopped",
    "build_app",
    "close_connection",
    "count_tokens",
    "embedding_vector",
    "fit_tokens",
    "main",
    "redact",
    "reply_text",
    "reset_connection",
    "sim_state",
    "split_even",
    "split_words",
    "sse_data",
    "sse_event",
    "tool_arguments",
    "tool_reply_text",
]


# --- the runner --------------------------------------------------------------------------------

IN_FLIGHT_GRACE_S = 30.0  # how long a request in flight may still run once the port stops taking work

class SimServer:
    """A simulator on a real loopback port that can refuse connections and come back.

    With `delivery` its answers cross a `DeliveryFront` that fragments and delays them as real
    networks do; with `ssl_context` it serves HTTPS (see `sim.tls.LocalCA`).
    """

    def __init__(self, runner: web.AppRunner, host: str, port: int, delivery: Delivery | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._runner = runner
        self._site: web.TCPSite | None = None
        self._front: DeliveryFront | None = None
        self._delivery = delivery
        self._ssl = ssl_context
        self._closing: set[asyncio.Task[None]] = set()
        self.host = host
        self.port = port

    @classmethod
    async def start(cls, app: web.Application, host: str = "127.0.0.1", port: int = 0, *,
                    delivery: Delivery | None = None, ssl_context: ssl.SSLContext | None = None) -> SimServer:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        server = cls(runner, host, port, delivery, ssl_context)
        try:
            await server.resume()
        except BaseException:
            await runner.cleanup()
            raise
        return server

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl is not None else 'http'}://{self.host}:{self.port}"

    @property
    def app(self) -> web.Application:
        return self._runner.app

    @property
    def listening(self) -> bool:
        return self._site is not None

    async def stop_listening(self, *, finish_in_flight: bool = False) -> None:
        """The provider goes down: the port refuses connections and open ones are dropped,
        keep-alive connections in a client's pool and requests in flight alike.

        With `finish_in_flight`, the provider stops taking work instead (a load balancer taking it
        out of rotation): new connections are refused and idle ones closed, while each request
        already in flight ends normally and then closes its connection."""
        if self._site is None:
            return
        await self._site.stop()
        self._site = None
        if self._front is not None:
            await self._front.stop(drop_open=not finish_in_flight)
            self._front = None
        if self._runner.server is not None:
            for connection in self._runner.server.connections:
                if finish_in_flight:
                    # close() wakes an idle connection; shutdown() lets a request in progress end, then closes
                    connection.close()
                    closing = asyncio.create_task(connection.shutdown(IN_FLIGHT_GRACE_S))
                    self._closing.add(closing)
                    closing.add_done_callback(self._closing.discard)
                else:
                    connection.force_close()

    async def resume(self) -> None:
        """Listen again, on the same port."""
        if self._site is not None:
            return
        if self._delivery is None:
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, ssl_context=self._ssl)
            await site.start()
            self._site = site
            if self.port == 0:
                self.port = int(self._runner.addresses[0][1])
            return
        # the app listens on a port of its own; the front takes the public one and relays to it
        site = web.TCPSite(self._runner, "127.0.0.1", 0, reuse_address=True)
        await site.start()
        self._site = site
        self._front = DeliveryFront(int(self._runner.addresses[0][1]), self._delivery, self._ssl)
        self.port = await self._front.listen(self.host, self.port)

    async def close(self) -> None:
        self._site = None
        if self._front is not None:
            await self._front.stop()
            self._front = None
        await self._runner.cleanup()

    async def __aenter__(self) -> SimServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def main(argv: list[str] | None = None) -> None:
    """Run one simulator until interrupted (for benchmarks and manual runs), e.g. arguments
    `openai --port 9001 --api-key-env SIM_KEY`; a CLI subcommand or `sim/__main__.py` can call this."""
    from llmroute_proxy import sim

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kind", choices=("openai", "azure-openai", "anthropic", "gemini"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key-env", help="environment variable holding the expected API key")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--cached-tokens", type=int, default=0)
    parser.add_argument("--answer-bytes", type=int, default=0, help="pad answers to at least this many bytes")
    parser.add_argument("--fragment", type=int, default=0, help="largest write in bytes (0: whole writes)")
    parser.add_argument("--jitter", action="store_true", help="fragment sizes drawn from 1..--fragment")
    parser.add_argument("--gap", type=float, default=0.0, help="seconds between fragments")
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = parser.parse_args(argv)
    factories: dict[str, Callable[..., web.Application]] = {
        "openai": sim.openai_app, "azure-openai": sim.azure_openai_app, "anthropic": sim.anthropic_app,
        "gemini": sim.gemini_app}
    factory = factories[args.kind]
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    app = factory(api_key, chunks=args.chunks, cached_tokens=args.cached_tokens, answer_bytes=args.answer_bytes)
    delivery = Delivery(args.fragment, args.jitter, args.gap) if args.fragment or args.gap else None
    context: ssl.SSLContext | None = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)

    async def serve() -> None:
        server = await SimServer.start(app, args.host, args.port, delivery=delivery, ssl_context=context)
        print(f"sim-{args.kind} listening on {server.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
