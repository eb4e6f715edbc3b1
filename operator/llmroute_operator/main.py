"""`llmroute-operator`: kopf, the hub, limit leases, the status writer and the admin plane, in one process.

kopf watches LLMProviders, LLMRoutes, Pods and Nodes into the cluster index (handlers.py); the hub serves
each authenticated sidecar its pod's table from that index and hands out limit leases; the sidecars'
reports feed the status book, from which the status writer patches `/status` and posts Events. Every
setting is a flag with an environment default (docs/configuration.md lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import kopf
from aiohttp import web
from kopf._core.engines.peering import Identity  # kopf does not export it (a NewType of str)

from llmroute_operator.admin import Live, admin_app
from llmroute_operator.certs import CertFiles, write_self_signed
from llmroute_operator.handlers import register
from llmroute_operator.hub import CertificateReloader, Hub, hub_ssl_context
from llmroute_operator.index import ClusterIndex
from llmroute_operator.k8s import KubernetesApi, connection, login
from llmroute_operator.leases import DEFAULT_TTL_S, LeaseBook
from llmroute_operator.status import StatusBook
from llmroute_operator.tokenreview import CachedReviewer, KubernetesTokenReviewer, TokenReviewer
from llmroute_operator.webhook import ConfigError, Webhook, load_settings
from llmroute_operator.writer import SecretApi, SecretReader, StatusApi, StatusWriter
from llmroute_proxy.arguments import from_env, log_level, port, positive_seconds, seconds

log = logging.getLogger("llmroute.operator")

LISTING_PATIENCE_S = 30.0  # how long kopf's initial listing may take before the operator says it waits
LAST_STATUS_S = 5.0  # the status pass on the way out: well within the pod's termination grace period


@dataclass(frozen=True, slots=True)
class Settings:
    hub_host: str = "0.0.0.0"
    hub_port: int = 15443
    hub_cert: Path | None = None
    hub_key: Path | None = None
    dev_certs: Path | None = None
    admin_host: str = "0.0.0.0"
    admin_port: int = 15444
    namespaces: tuple[str, ...] = ()
    status_debounce_s: float = 1.0
    status_resync_s: float = 30.0
    secret_refresh_s: float = 30.0
    lease_ttl_s: float = DEFAULT_TTL_S
    log_level: str = "INFO"
    webhook_host: str = "0.0.0.0"
    webhook_port: int = 15445
    webhook_cert: Path | None = None
    webhook_key: Path | None = None
    inject_config: Path | None = None
    inject_operator_url: str = ""


def _namespaces(flags: list[str] | None, variable: str) -> tuple[str, ...]:
    """The `--namespace` flags when any is given, else the variable's comma-separated names."""
    names = flags if flags is not None else variable.split(",")
    return tuple(name.strip() for name in names if name.strip())


def parse(argv: list[str] | None = None) -> Settings:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="llmroute-operator", description="The llmroute Kubernetes operator.")
    p.add_argument("--hub-host", default=env("LLMROUTE_HUB_HOST", "0.0.0.0"), metavar="ADDR",
                   help="the hub's address (default 0.0.0.0)")
    p.add_argument("--hub-port", **from_env("LLMROUTE_HUB_PORT", port, "15443"),
                   metavar="PORT",
                   help="the hub's TLS port, where sidecars connect (default 15443)")
    p.add_argument("--hub-cert", type=Path, default=_path(env("LLMROUTE_HUB_CERT")), metavar="FILE",
                   help="the hub's certificate chain (PEM)")
    p.add_argument("--hub-key", type=Path, default=_path(env("LLMROUTE_HUB_KEY")), metavar="FILE",
                   help="the hub certificate's private key (PEM)")
    p.add_argument("--dev-certs", type=Path, default=_path(env("LLMROUTE_DEV_CERTS")), metavar="DIR",
                   help="development only: make a CA (ca.pem) and a hub certificate in DIR instead")
    p.add_argument("--admin-host", default=env("LLMROUTE_OPERATOR_ADMIN_HOST", "0.0.0.0"), metavar="ADDR",
                   help="address of /healthz, /readyz and /metrics (default 0.0.0.0)")
    p.add_argument("--admin-port", **from_env("LLMROUTE_OPERATOR_ADMIN_PORT", port, "15444"), metavar="PORT",
                   help="port of /healthz, /readyz and /metrics (default 15444)")
    p.add_argument("--namespace", action="append", dest="namespaces", metavar="NS",
                   help="watch only this namespace (repeatable; replaces $LLMROUTE_NAMESPACES; "
                        "default: the whole cluster)")
    p.add_argument("--status-debounce", **from_env("LLMROUTE_STATUS_DEBOUNCE_SECONDS", seconds, "1"), metavar="SECONDS",
                   help="wait this long after a change before writing status, so bursts make one write (default 1)")
    p.add_argument("--status-resync", **from_env("LLMROUTE_STATUS_RESYNC_SECONDS", positive_seconds, "30"),
                   metavar="SECONDS",
                   help="recompute status at least this often (budget periods, failure windows) (default 30)")
    p.add_argument("--secret-refresh", **from_env("LLMROUTE_SECRET_REFRESH_SECONDS", positive_seconds, "30"),
                   metavar="SECONDS",
                   help="read the Secrets that providers name again this often (key rotation) (default 30)")
    p.add_argument("--lease-ttl", **from_env("LLMROUTE_LEASE_TTL_SECONDS", positive_seconds, str(DEFAULT_TTL_S)),
                   metavar="SECONDS",
                   help="how long a sidecar's share of global limits holds without renewal (default 30)")
    p.add_argument("--log-level", **from_env("LLMROUTE_LOG_LEVEL", log_level, "INFO"),
                   metavar="LEVEL",
                   help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument("--webhook-host", default=env("LLMROUTE_WEBHOOK_HOST", "0.0.0.0"), metavar="ADDR",
                   help="the injection webhook's address (default 0.0.0.0)")
    p.add_argument("--webhook-port", **from_env("LLMROUTE_WEBHOOK_PORT", port, "15445"), metavar="PORT",
                   help="the injection webhook's TLS port (default 15445)")
    p.add_argument("--webhook-cert", type=Path, default=_path(env("LLMROUTE_WEBHOOK_CERT")), metavar="FILE",
                   help="the webhook's certificate chain (PEM); without it there is no webhook")
    p.add_argument("--webhook-key", type=Path, default=_path(env("LLMROUTE_WEBHOOK_KEY")), metavar="FILE",
                   help="the webhook certificate's private key (PEM)")
    p.add_argument("--inject-config", type=Path, default=_path(env("LLMROUTE_INJECT_CONFIG")), metavar="FILE",
                   help="the injected sidecar's settings (JSON; the chart's ConfigMap)")
    p.add_argument("--inject-operator-url", default=env("LLMROUTE_INJECT_OPERATOR_URL", ""), metavar="URL",
                   help="the hub's wss:// URL as injected sidecars dial it (the hub Service's cluster IP)")
    a = p.parse_args(argv)
    if a.dev_certs is None and (a.hub_cert is None or a.hub_key is None):
        p.error("the hub needs --hub-cert and --hub-key (or --dev-certs DIR for development)")
    if a.webhook_cert is not None and (a.webhook_key is None or a.inject_config is None):
        p.error("the webhook needs --webhook-cert, --webhook-key and --inject-config")
    return Settings(a.hub_host, a.hub_port, a.hub_cert, a.hub_key, a.dev_certs, a.admin_host, a.admin_port,
                    _namespaces(a.namespaces, env("LLMROUTE_NAMESPACES", "")), a.status_debounce, a.status_resync,
                    a.secret_refresh, a.lease_ttl, a.log_level, a.webhook_host, a.webhook_port, a.webhook_cert,
                    a.webhook_key, a.inject_config, a.inject_operator_url)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def identity() -> Identity:
    """kopf's name for this operator: the pod's name (POD_NAME, else the hostname, which is the pod's name).

    Given explicitly because kopf's own guess asks `getpass.getuser()` even in standalone mode, where the
    identity names no peer: under a UID with no passwd entry and no $USER (OpenShift's arbitrary UIDs, a
    `runAsUser` the image does not know) that raises, and the operator would die before it starts.
    """
    return Identity(f"llmroute-operator@{os.environ.get('POD_NAME') or socket.gethostname()}")


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True  # one replica; no KopfPeering resources, no RBAC for them
    settings.posting.enabled = False  # Events are ours, with reasons, not kopf's log lines
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


class Operator:
    def __init__(self, settings: Settings, api: StatusApi, secret_api: SecretApi, reviewer: TokenReviewer,
                 *, events_posted: Callable[[], int] = lambda: 0, clock: Callable[[], float] = time.time,
                 webhook: Webhook | None = None) -> None:
        self.settings = settings
        self.webhook = webhook
        self.index = ClusterIndex()
        self.book = StatusBook(clock)
        self.writer = StatusWriter(self.index, self.book, api, clock=clock, debounce_s=settings.status_debounce_s,
                                   resync_s=settings.status_resync_s)
        self.secrets = SecretReader(self.index, secret_api, refresh_s=settings.secret_refresh_s)
        self.index.listeners.append(self.writer.poke)
        self.book.listeners.append(self.writer.poke)
        self.listed = asyncio.Event()  # kopf's initial listing of every kind is in the index
        self.synced = asyncio.Event()  # and the Secrets its providers name were read once
        self.writer.ready = self.synced
        leases = LeaseBook(settings.lease_ttl_s)
        self.writer.spend_seeded.append(leases.seed_spend)  # after a restart, shares count the spend of before
        self.hub = Hub(self.index, self.book, reviewer, leases=leases, synced=self.synced)
        self.registry = kopf.OperatorRegistry()
        register(self.registry, self.index, self.writer, self.secrets, listed=self.listed.set)
        self.live = Live(self.index, self.book, self.hub, self.writer, self.secrets, events_posted)
        self.ready = asyncio.Event()
        self.hub_port = 0
        self.admin_port = 0
        self.webhook_port = 0

    async def run(self, info: kopf.ConnectionInfo | Callable[[], kopf.ConnectionInfo], *,
                  stop_flag: asyncio.Event | None = None, hub_ssl: ssl.SSLContext | None = None) -> None:
        """Until `stop_flag` is set (or SIGINT/SIGTERM when it is None). `info` may be a function: kopf
        calls it again whenever the API server refuses its credentials (a rotated projected token)."""
        kopf.on.login(registry=self.registry)(lambda **_: info() if callable(info) else info)
        reloaders: list[CertificateReloader] = []
        hub = await self._serve(self.hub.app(), self.settings.hub_host, self.settings.hub_port,
                                hub_ssl or self._hub_ssl(reloaders))
        admin = await self._serve(admin_app(self.live, self.ready.is_set), self.settings.admin_host,
                                  self.settings.admin_port, None)
        self.hub_port, self.admin_port = hub.addresses[0][1], admin.addresses[0][1]
        webhook = None
        if self.webhook is not None and self.settings.webhook_cert and self.settings.webhook_key:
            context = hub_ssl_context(str(self.settings.webhook_cert), str(self.settings.webhook_key))
            reloaders.append(CertificateReloader(context, str(self.settings.webhook_cert),
                                                 str(self.settings.webhook_key)))
            webhook = await self._serve(self.webhook.app(), self.settings.webhook_host, self.settings.webhook_port,
                                        context)
            self.webhook_port = webhook.addresses[0][1]
            log.info("injection webhook on %s:%d (API server %s)", self.settings.webhook_host, self.webhook_port,
                     self.webhook.server_version)
        loops = [asyncio.create_task(self.writer.run()), asyncio.create_task(self.secrets.run()),
                 asyncio.create_task(self.sync()), *(asyncio.create_task(r.run()) for r in reloaders)]
        log.info("hub on %s:%d, admin on %s:%d, watching %s", self.settings.hub_host, self.hub_port,
                 self.settings.admin_host, self.admin_port, ", ".join(self.settings.namespaces) or "the cluster")
        try:
            tasks = await kopf.spawn_tasks(registry=self.registry, settings=kopf_settings(), standalone=True,
                                           identity=identity(), clusterwide=not self.settings.namespaces,
                                           namespaces=self.settings.namespaces, stop_flag=stop_flag,
                                           ready_flag=self.ready)
            await run_until_first_exits(tasks)
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.write_last_status()
            await hub.cleanup()
            await admin.cleanup()
            if webhook is not None:
                await webhook.cleanup()

    async def write_last_status(self) -> None:
        """One more status pass on the way out (an upgrade, a node drain), while the sidecars are still
        connected: the spend of the reports that came since the last pass, which the debounce held back,
        is in the routes' status when the next operator reads it back. Skipped before the index was
        synced: a status made from a half-filled index would be wrong."""
        if not self.synced.is_set():
            return
        try:
            async with asyncio.timeout(LAST_STATUS_S):
                await self.writer.write_once()
        except Exception as error:  # the process is ending: say so, and end it
            log.warning("the last status pass did not complete: %r", error)

    async def sync(self) -> None:
        """`synced` once the index holds the cluster and the Secrets its providers name. Until then the hub
        serves no table and no lease, and no status is written: after a restart the index fills object by
        object, and a table made meanwhile would lack the routes whose provider or key is not in yet (the
        sidecar would swap its whole table for it); shares would be divided among the few pods seen."""
        while not self.listed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.listed.wait(), LISTING_PATIENCE_S)
            if not self.listed.is_set():  # kopf could not list a kind (RBAC?): nothing is served meanwhile
                log.warning("kopf has not listed LLMProviders, LLMRoutes, Pods and Nodes yet; no table is served "
                            "until it has (check its log and the operator's RBAC)")
        while True:
            try:
                await self.secrets.read(self.index.missing_secrets())
                break
            except Exception as error:  # the API server is unavailable: the sidecars keep what they run
                log.warning("reading the providers' Secrets failed, trying again: %s", error)
                await asyncio.sleep(1.0)
        self.synced.set()
        log.info("cluster listed and Secrets read: serving tables (%d pods)", len(self.index.pods()))

    def _hub_ssl(self, reloaders: list[CertificateReloader]) -> ssl.SSLContext:
        s = self.settings
        if s.hub_cert is not None and s.hub_key is not None:
            context = hub_ssl_context(str(s.hub_cert), str(s.hub_key))
            reloaders.append(CertificateReloader(context, str(s.hub_cert), str(s.hub_key)))
            return context
        assert s.dev_certs is not None
        s.dev_certs.mkdir(parents=True, exist_ok=True)
        files = CertFiles(s.dev_certs / "ca.pem", s.dev_certs / "tls.crt", s.dev_certs / "tls.key")
        if not all(f.exists() for f in (files.ca, files.cert, files.key)):  # kept across restarts: sidecars trust ca.pem
            files = write_self_signed(s.dev_certs)
        log.warning("development certificates in %s (sidecars trust %s)", s.dev_certs, files.ca)
        return hub_ssl_context(str(files.cert), str(files.key))

    @staticmethod
    async def _serve(app: web.Application, host: str, port: int, context: ssl.SSLContext | None) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=context, backlog=2048).start()
        return runner


async def run_until_first_exits(tasks: Collection[asyncio.Task[None]]) -> None:
    """kopf's root tasks until one ends (the stop flag, a signal, a failure), then all of them.

    Not `kopf.run_tasks`: after its root tasks it waits for, then cancels, every task of the loop that
    started after it — here the hub's sidecar streams, which the hub closes itself on the way out, and in
    tests the fake API server's watch streams.
    """
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def serve(settings: Settings) -> None:
    info = login(settings=kopf_settings())
    conn = connection(info)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=conn.ssl),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        api = KubernetesApi(session, conn)
        reviewer = CachedReviewer(KubernetesTokenReviewer(session, conn.server, conn.headers))
        webhook = None
        if settings.webhook_cert is not None and settings.inject_config is not None:
            webhook = Webhook(load_settings(settings.inject_config, settings.inject_operator_url),
                              await api.server_version())
        operator = Operator(settings, api, api, reviewer, events_posted=lambda: api.events_posted, webhook=webhook)
        await operator.run(lambda: login(settings=kopf_settings()))


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    logging.basicConfig(level=getattr(logging, settings.log_level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if settings.log_level != "DEBUG":  # kopf says INFO for every watch event handled: a line per pod change
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings))
    except ConfigError as error:
        log.error("%s", error)
        return 2
    return 0
