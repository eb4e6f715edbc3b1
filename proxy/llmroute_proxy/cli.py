"""`llmroute-proxy`: serve, demo, validate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from llmroute_proxy import __version__
from llmroute_proxy.arguments import (
    from_env,
    log_level,
    positive_int,
    positive_seconds,
    seconds,
    whole_number,
)
from llmroute_proxy.server.accesslog import LINE_FORMAT
from llmroute_proxy.server.aws_credentials import aws_environment
from llmroute_proxy.server.connections import ConnectionLimits
from llmroute_proxy.server.google_tokens import METADATA_HOST
from llmroute_proxy.server.origins import parse_origins
from llmroute_proxy.server.runner import Listen
from llmroute_proxy.server.state import RESPONSES_STORE_BYTES, Settings


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level if "log_level" in args else "INFO"), format=LINE_FORMAT)
    if args.command == "validate":
        return _validate(args.file)
    if args.command == "demo":
        from llmroute_proxy.demo import run_demo

        return asyncio.run(run_demo(listen(args), flaky=not args.no_flaky, settings=settings(args),
                                    sim_port_base=args.sim_port_base))
    return _serve(args)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmroute-proxy", description="The llmroute LLM routing sidecar.")
    parser.add_argument("--version", action="version", version=f"llmroute-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", type=Path, help="a file of LLMProvider and LLMRoute documents (standalone)")
    _listen_arguments(serve)
    serve.add_argument("--region", default=os.environ.get("LLMROUTE_REGION", ""),
                       help="this sidecar's region, preferred when routing (default: $LLMROUTE_REGION)")

    demo = commands.add_parser("demo", help="the sidecar plus three simulated providers, to try it out")
    _listen_arguments(demo)
    demo.add_argument("--no-flaky", action="store_true", help="make every simulated provider reliable")
    demo.add_argument("--sim-port-base", type=int, default=15410,
                      help="the simulated providers listen on this port and the next two (default 15410)")

    validate = commands.add_parser("validate", help="check a config file; list every error")
    validate.add_argument("file", type=Path)
    return parser


def _listen_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--host", default="127.0.0.1", help="data plane address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=15400, help="data plane port (default 15400)")
    parser.add_argument("--admin-host", default="127.0.0.1", help="admin plane address (default 127.0.0.1)")
    parser.add_argument("--admin-port", type=int, default=15401, help="admin plane port (default 15401)")
    parser.add_argument("--log-level", **from_env("LLMROUTE_LOG_LEVEL", log_level, "INFO"),
                        metavar="{DEBUG,INFO,WARNING,ERROR}",
                        help="(default INFO; $LLMROUTE_LOG_LEVEL; any case)")
    parser.add_argument("--max-body-bytes", **from_env("LLMROUTE_MAX_BODY_BYTES", positive_int, str(16 * 1024 * 1024)),
                        help="largest accepted request body (default 16 MiB; larger gets 413)")
    parser.add_argument("--drain-seconds", **from_env("LLMROUTE_DRAIN_SECONDS", seconds, "25"),
                        help="on SIGTERM, how long requests in flight may take to finish (default 25)")
    parser.add_argument("--max-connections", **from_env("LLMROUTE_MAX_CONNECTIONS", positive_int, "1024"),
                        help="open data-plane connections at most; more are answered 503 and closed "
                             "(default 1024; the admin plane takes at most 64)")
    parser.add_argument("--header-read-seconds", **from_env("LLMROUTE_HEADER_READ_SECONDS", positive_seconds, "10"),
                        help="a request's line and headers must arrive within this, from the connection's "
                             "accept or the request's first byte; else 408 and close (default 10)")
    parser.add_argument("--body-read-seconds", **from_env("LLMROUTE_BODY_READ_SECONDS", positive_seconds, "30"),
                        help="a request's body must arrive within this after its headers; else 408 and close "
                             "(default 30)")
    parser.add_argument("--keepalive-seconds", **from_env("LLMROUTE_KEEPALIVE_SECONDS", positive_seconds, "75"),
                        help="an idle connection between requests is closed after this (default 75)")
    parser.add_argument("--allow-origins", **from_env("LLMROUTE_ALLOW_ORIGINS", _origins, ""),
                        metavar="ORIGIN,...",
                        help="browser origins (scheme://host[:port]) whose requests the data plane serves; "
                             "requests from any other web page are refused with 403 (default: none; "
                             "$LLMROUTE_ALLOW_ORIGINS)")
    parser.add_argument("--responses-store-bytes",
                        **from_env("LLMROUTE_RESPONSES_STORE_BYTES", whole_number, str(RESPONSES_STORE_BYTES)),
                        help="memory cap of the store behind previous_response_id and GET /v1/responses/{id}; "
                             "the oldest responses leave first (default 32 MiB; 0 keeps none)")
    parser.add_argument("--responses-ttl-seconds",
                        **from_env("LLMROUTE_RESPONSES_TTL_SECONDS", positive_seconds, "3600"),
                        help="how long a stored response can be read or continued (default 3600)")
    parser.add_argument("--admin-hosts", type=_names, default=env("LLMROUTE_ADMIN_HOSTS", ""),
                        metavar="HOST,...",
                        help="Host names besides localhost, 127.0.0.1 and ::1 under which the admin plane shows "
                             "/status and its page, e.g. the pod IP (default: none; $LLMROUTE_ADMIN_HOSTS)")


def _names(text: str) -> frozenset[str]:
    return frozenset(item.strip() for item in text.split(",") if item.strip())


def _origins(text: str) -> frozenset[str]:
    try:
        return parse_origins(text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def listen(args: argparse.Namespace) -> Listen:
    limits = ConnectionLimits(max_connections=args.max_connections, head_s=args.header_read_seconds,
                              body_s=args.body_read_seconds, keepalive_s=args.keepalive_seconds)
    return Listen(args.host, args.port, args.admin_host, args.admin_port, args.drain_seconds,
                  admin_hosts=args.admin_hosts, limits=limits)


def settings(args: argparse.Namespace) -> Settings:
    return Settings(max_body_bytes=args.max_body_bytes, allow_origins=args.allow_origins,
                    responses_store_bytes=args.responses_store_bytes, responses_ttl_s=args.responses_ttl_seconds,
                    gcp_metadata_host=os.environ.get("GCE_METADATA_HOST") or METADATA_HOST,
                    aws=aws_environment(os.environ))


def _without_key_shapes(text: str) -> str:
    """A config error quotes what it found (a URL, say): a key pasted there must not reach a CI log."""
    from llmroute_proxy.scrubbing import Scrubber

    return Scrubber()(text)


def _validate(path: Path) -> int:
    from llmroute_proxy.config import check_file

    errors, warnings = check_file(path)
    for error in errors:
        print(_without_key_shapes(str(error)), file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: ok")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from llmroute_proxy.config import ConfigError, load_table
    from llmroute_proxy.server.runner import build_sidecar, serve_until_stopped, watch_config

    if os.environ.get("LLMROUTE_OPERATOR_URL"):
        if args.config is not None:
            print("--config and LLMROUTE_OPERATOR_URL exclude each other: the table comes from one source",
                  file=sys.stderr)
            return 2
        return _serve_cluster(args)
    if args.config is None:
        print("serve needs --config FILE (standalone mode)", file=sys.stderr)
        return 2
    try:
        table = load_table(args.config, region=args.region)
    except ConfigError as error:  # a file that cannot be read too: its error says so
        print(f"{args.config}: refused:\n{_without_key_shapes(str(error))}", file=sys.stderr)
        return 1

    async def run() -> None:
        sidecar = build_sidecar(settings(args))
        sidecar.install(table)
        await serve_until_stopped(
            sidecar, listen(args),
            background=[lambda: watch_config(sidecar, args.config, args.region)],
        )

    asyncio.run(run())
    return 0


def _serve_cluster(args: argparse.Namespace) -> int:
    from llmroute_proxy.server.runner import build_sidecar, serve_until_stopped
    from llmroute_proxy.sync.client import (
        ClusterConfigError,
        ClusterSettings,
        OperatorClient,
        restore_persisted,
    )
    from llmroute_proxy.sync.persist import TableStore

    try:
        cluster = ClusterSettings.from_env(os.environ)
    except ClusterConfigError as error:
        print(error, file=sys.stderr)
        return 2

    async def run() -> None:
        sidecar = build_sidecar(settings(args))
        store = TableStore(cluster.state_dir)
        restore_persisted(sidecar, store)
        client = OperatorClient(cluster, sidecar, store)
        await serve_until_stopped(sidecar, listen(args), background=[client.run],
                                  on_drained=client.send_final_report)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
