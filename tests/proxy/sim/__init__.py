"""Tests of the simulated providers, driven through the official SDKs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from llmroute_proxy.sim import Delivery, SimServer
from tests.proxy.stack import NETWORK


class SimPool:
    """Starts simulators on loopback for one test and closes them (and SDK clients) after it.

    Their answers reach the SDKs cut at arbitrary offsets (`NETWORK`), as a real network delivers them.
    """

    def __init__(self) -> None:
        self._servers: list[SimServer] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def start(self, app: web.Application, delivery: Delivery | None = NETWORK) -> SimServer:
        server = await SimServer.start(app, delivery=delivery)
        self._servers.append(server)
        return server

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Close an SDK client before the servers (and the event loop) go away."""
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in self._closers:
            await closer()
        for server in self._servers:
            await server.close()
