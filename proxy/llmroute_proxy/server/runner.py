"""Running the sidecar: both listeners, the table source, and a graceful stop.

On SIGTERM the sidecar stops taking new requests (503), lets the ones in flight finish
within the grace period, then closes. A table source that fails keeps the last good table.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from llmroute_proxy.config import ConfigError, load_table
from llmroute_proxy.errors import DrainDeadlinePassed
from llmroute_proxy.server.accesslog import buffer_access_log
from llmroute_proxy.server.admin import admin_app
from llmroute_proxy.server.app import browser_screen, create_app
from llmroute_proxy.server.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from llmroute_proxy.server.state import Settings, Sidecar
from llmroute_proxy.server.status import status_document
from llmroute_proxy.server.telemetry import Telemetry
from llmroute_proxy.server.upstream import UpstreamClient

log = logging.getLogger("llmroute.proxy")

# After the drain deadline, handlers still running get only this long to finish once cancelled;
# aiohttp's own default (60 s) would let the process outlive the drain by a minute.
SHUTDOWN_MARGIN_S = 0.5
# Probes, the Prometheus scrape and a few people: the admin plane needs few connections.
ADMIN_MAX_CONNECTIONS = 64


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 15400
    admin_host: str = "127.0.0.1"
    admin_port: int = 15401
    grace_s: float = 25.0
    admin_hosts: frozenset[str] = frozenset()  # Host names besides loopback that may read /status
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)  # cap, read deadlines, keep-alive


def build_sidecar(settings: Settings | None = None, telemetry: Telemetry | None = None) -> Sidecar:
    return Sidecar(upstream=UpstreamClient.create(), telemetry=telemetry or Telemetry.from_env(),
                   settings=settings or Settings())


async def start_listeners(sidecar: Sidecar, listen: Listen) -> list[web.AppRunner]:
    limits = listen.limits
    _check_descriptors(limits)
    data_app = create_app(sidecar)
    admin_app_ = admin_app(lambda: status_document(sidecar), sidecar.telemetry,
                           lambda: sidecar.table is not None and not sidecar.draining, extra_hosts=listen.admin_hosts)
    data = web.AppRunner(data_app, handler_cancellation=True, access_log=None,
                         shutdown_timeout=SHUTDOWN_MARGIN_S, keepalive_timeout=limits.keepalive_s)
    admin = web.AppRunner(admin_app_, access_log=None, shutdown_timeout=SHUTDOWN_MARGIN_S,
                          keepalive_timeout=limits.keepalive_s)
    admin_limits = replace(limits, max_connections=min(limits.max_connections, ADMIN_MAX_CONNECTIONS))
    closed = sidecar.telemetry.connections_closed
    data_guard = ConnectionGuard(limits, closed=lambda reason: closed.add(1.0, "data", reason))
    admin_guard = ConnectionGuard(admin_limits, closed=lambda reason: closed.add(1.0, "admin", reason))
    sidecar.telemetry.register_connections(lambda: (("data", data_guard.open), ("admin", admin_guard.open)))
    runners = []
    for runner, host, port, guard, screen in ((data, listen.host, listen.port, data_guard, browser_screen(sidecar)),
                                              (admin, listen.admin_host, listen.admin_port, admin_guard, None)):
        await runner.setup()
        await GuardedSite(runner, host, port, guard, backlog=1024, screen=screen).start()
        runners.append(runner)
    return runners


def _check_descriptors(limits: ConnectionLimits) -> None:
    """Each client connection may need an upstream one too: warn when the cap cannot be reached
    before the process runs out of file descriptors (new connections would then fail at accept)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * limits.max_connections + ADMIN_MAX_CONNECTIONS + 64
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning("the file descriptor limit (%d) is below what %d connections may need (%d): raise it "
                    "(ulimit -n) or lower --max-connections", soft, limits.max_connections, need)


async def watch_config(sidecar: Sidecar, path: Path, region: str, interval_s: float = 1.0) -> None:
    """Re-read the file when it changes; bad content is logged and the old table kept.

    The first look always reads the file, so a change made between the initial load and the
    watcher's start is not missed; an unchanged table (same version) is not reinstalled.
    """
    seen: tuple[float, int] | None = None
    missing = False
    while True:
        current = _stat(path)
        if current is None and not missing:
            log.warning("config %s is gone; keeping table %s until it is back", path,
                        sidecar.table.version if sidecar.table else "none")
        missing = current is None
        if current is not None and current != seen:
            seen = current
            _reload(sidecar, path, region)
        await asyncio.sleep(interval_s)


def _reload(sidecar: Sidecar, path: Path, region: str) -> None:
    try:
        table = load_table(path, region=region)
        if sidecar.table is None or table.version != sidecar.table.version:
            sidecar.install(table)
    except ConfigError as error:
        log.error("config %s refused, keeping table %s:\n%s", path,
                  sidecar.table.version if sidecar.table else "none", error)
    except OSError as error:
        log.error("config %s unreadable (%s), keeping the current table", path, error.strerror)


def _stat(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


async def serve_until_stopped(sidecar: Sidecar, listen: Listen,
                              background: list[Callable[[], Coroutine[Any, Any, None]]] | None = None,
                              on_ready: Callable[[], None] | None = None,
                              on_drained: Callable[[], Coroutine[Any, Any, object]] | None = None) -> None:
    """`on_drained` runs once requests have finished and before background jobs stop
    (cluster mode sends its last usage report there)."""
    runners = await start_listeners(sidecar, listen)
    access_log = buffer_access_log()
    tasks = [asyncio.create_task(job()) for job in background or ()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    _settle_heap()
    log.info("llmroute sidecar serving on http://%s:%d/v1 (admin http://%s:%d/)", listen.host, listen.port,
             listen.admin_host, listen.admin_port)
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        await drain(sidecar, listen.grace_s)
        if on_drained is not None:
            await on_drained()
        for task in tasks:
            task.cancel()
        for runner in runners:
            await runner.cleanup()
        access_log.close()
        await sidecar.upstream.close()
        await asyncio.to_thread(sidecar.telemetry.shutdown)


def _settle_heap() -> None:
    """Move everything start-up allocated out of the collector's way.

    The modules, the table and the SDKs are long-lived; freezing them keeps full collections
    from walking them again and again (15 ms pauses before, ~2 ms after), and a larger first
    generation spends less time collecting the short-lived garbage of each request.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(5000, 20, 20)


async def drain(sidecar: Sidecar, grace_s: float) -> None:
    """Let requests in flight finish within `grace_s`; then end those still open with an error
    in their own dialect (an in-band error event for a stream that has begun)."""
    sidecar.draining = True
    deadline = sidecar.clock() + grace_s
    while sidecar.in_flight > 0 and sidecar.clock() < deadline:
        await asyncio.sleep(0.05)
    if sidecar.in_flight:
        log.warning("the drain time of %gs ran out with %d requests in flight: ending them with an error",
                    grace_s, sidecar.in_flight)
        await _cut(sidecar, DrainDeadlinePassed(grace_s))


async def _cut(sidecar: Sidecar, error: DrainDeadlinePassed) -> None:
    sidecar.drain_cut = error
    for task in list(sidecar.handlers):
        task.cancel()
    deadline = sidecar.clock() + SHUTDOWN_MARGIN_S
    while sidecar.in_flight > 0 and sidecar.clock() < deadline:
        await asyncio.sleep(0.01)
