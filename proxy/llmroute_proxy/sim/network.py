"""The network between a simulator and its client, as real networks deliver bytes.

Loopback hands a client each response in the one piece the server wrote; the internet and TLS
do not. `Delivery` says how a response is cut up on its way: into fragments of a fixed size (1:
at every byte boundary, inside SSE events, UTF-8 characters, chunk framing and headers alike) or
of sizes drawn from a seeded generator, with a pause between fragments. `DeliveryFront` is a
loopback TCP (optionally TLS) front that relays to the simulator's own port and applies it;
the simulator's FIN and RST reach the client as FIN and RST, and a client hanging up hangs up
on the simulator too.

Nothing here may import `llmroute_proxy.server`: the simulators stand in for the outside world.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass

READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the bytes a simulator writes reach its client."""

    fragment: int = 0
    """Largest write to the client in bytes; 0 keeps the simulator's own writes whole."""
    jitter: bool = False
    """Fragment sizes drawn from 1..`fragment` (seeded), so cuts fall at arbitrary offsets."""
    gap: float = 0.0
    """Seconds between fragments, or between the simulator's own writes when `fragment` is 0
    (0 with fragments: still two event-loop turns, so that a client on the same loop reads each
    fragment on its own)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fragment < 0:
            raise ValueError("fragment must be ≥ 0")
        if not math.isfinite(self.gap) or self.gap < 0:
            raise ValueError("gap must be a finite number ≥ 0")

    def fragments(self, data: bytes, rng: random.Random) -> Iterator[bytes]:
        """`data` cut as this delivery cuts it (pure apart from drawing sizes from `rng`)."""
        if self.fragment == 0:
            yield data
            return
        start = 0
        while start < len(data):
            size = rng.randint(1, self.fragment) if self.jitter else self.fragment
            yield data[start:start + size]
            start += size


class DeliveryFront:
    """Listens on a loopback port (TLS with `ssl`) and relays every connection to `backend_port`,
    delivering the backend's bytes as `delivery` says."""

    def __init__(self, backend_port: int, delivery: Delivery, ssl_context: ssl.SSLContext | None) -> None:
        self._backend_port = backend_port
        self._delivery = delivery
        self._ssl = ssl_context
        self._rng = random.Random(delivery.seed)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> int:
        """Start listening; the port actually bound."""
        self._server = await asyncio.start_server(self._relay, host, port, ssl=self._ssl, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, *, drop_open: bool = True) -> None:
        """Stop listening; drop every open connection, or with `drop_open=False` leave each to end
        when its backend ends it."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if not drop_open:
            return
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        backend_writer: asyncio.StreamWriter | None = None
        try:
            backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", self._backend_port)
            upward = asyncio.create_task(_pipe_up(client_reader, backend_writer))
            try:
                await self._deliver(backend_reader, client_writer)
            finally:
                upward.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await upward
        except ConnectionResetError:
            _reset(client_writer)
        except (OSError, asyncio.CancelledError):
            client_writer.transport.abort()
        finally:
            if backend_writer is not None:
                backend_writer.transport.abort()
            self._connections.discard(task)

    async def _deliver(self, backend: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        """Backend → client in fragments until the backend ends (FIN: the client gets FIN)."""
        gap = self._delivery.gap
        first = True
        while data := await backend.read(READ_SIZE):
            for piece in self._delivery.fragments(data, self._rng):
                if not first and (self._delivery.fragment or gap):
                    await _pause(gap)
                first = False
                client.write(piece)
                await client.drain()
        client.close()
        with contextlib.suppress(OSError):
            await client.wait_closed()


async def _pause(gap: float) -> None:
    if gap > 0:
        await asyncio.sleep(gap)
        return
    # one turn lets the client's socket become readable, the next lets it read before we write again
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def _pipe_up(client: asyncio.StreamReader, backend: asyncio.StreamWriter) -> None:
    """Client → backend as it comes; when the client hangs up, so does the backend's client."""
    try:
        while data := await client.read(READ_SIZE):
            backend.write(data)
            await backend.drain()
    finally:
        backend.transport.abort()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Pass a reset on: RST to the client, not FIN."""
    sock = writer.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
