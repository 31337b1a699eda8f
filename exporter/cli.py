"""``scout-exporter``: command-line flags in the Prometheus exporter-toolkit spelling."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from exporter.app import DEFAULT_PORT, create_app, reload_config
from exporter.clients.snmp.speedups import compiled
from exporter.collectors import COLLECTORS, HostView
from exporter.common.gctime import GC_TIMER
from exporter.common.listen import format_address, parse_listen_address
from exporter.common.logs import LOG_LEVELS, configure_logging
from exporter.common.version import __version__
from exporter.common.web import serve_on
from exporter.common.webconfig import WebConfigError, WebSecurity
from exporter.config import load_config
from exporter.errors import ConfigError, ListenError
from exporter.live import Settings

log = logging.getLogger("exporter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scout-exporter",
        description="Prometheus exporter for networks, firewalls and servers.",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        type=parse_listen_address,
        action="append",
        metavar="HOST:PORT",
        help=f"address to serve on; repeat it to serve on several, each with the same TLS"
        f" and authentication (default :{DEFAULT_PORT}, every interface)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        metavar="FILE",
        help="TLS, basic auth and response headers, in exporter-toolkit's format"
        " (docs/security.md); without it, plain HTTP with no authentication",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="allow POST /-/reload (SIGHUP reloads either way)",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        type=Path,
        metavar="FILE",
        help="YAML config; without it, built-in defaults are used",
    )
    parser.add_argument(
        "--config.expand-env",
        dest="expand_env",
        action="store_true",
        help="expand ${VAR} references in the config file",
    )
    parser.add_argument(
        "--scrape.timeout-offset",
        dest="timeout_offset",
        type=seconds,
        default=0.5,
        metavar="SECONDS",
        help="subtracted from Prometheus's scrape timeout (default 0.5)",
    )
    parser.add_argument(
        "--path.rootfs",
        dest="rootfs",
        type=Path,
        metavar="DIR",
        help="where the host's / is mounted when running in a container (e.g. /host)",
    )
    parser.add_argument(
        "--collector.disable-defaults",
        dest="disable_defaults",
        action="store_true",
        help="start with every collector disabled",
    )
    for spec in COLLECTORS:
        parser.add_argument(
            f"--collector.{spec.name}",
            dest=f"collector_{spec.name}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{spec.help} (default {'on' if spec.enabled_by_default else 'off'})",
        )
    parser.add_argument(
        "--snmp.wrap-large-counters",
        dest="snmp_wrap_large_counters",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wrap 64-bit counters modulo 2^53 so float64 keeps them exact under rate(),"
        " as snmp_exporter does (default on)",
    )
    parser.add_argument("--log.level", dest="log_level", choices=list(LOG_LEVELS), default="info")
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=["auto", "logfmt", "json"],
        default="auto",
        help="auto: logfmt on a terminal, JSON otherwise",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the config file (and the web config file) and exit: 0 if valid, 1 if not",
    )
    parser.add_argument("--version", action="version", version=f"scout-exporter {__version__}")
    return parser


def seconds(text: str) -> float:
    """A flag's duration in seconds: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    # float() takes nan and inf; a nan offset would make every scrape's deadline nan.
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a finite number of seconds, 0 or more, got {text!r}"
        )
    return value


def enabled_collectors(args: argparse.Namespace) -> frozenset[str]:
    enabled = set()
    for spec in COLLECTORS:
        choice = getattr(args, f"collector_{spec.name}")
        default = spec.enabled_by_default and not args.disable_defaults
        if choice if choice is not None else default:
            enabled.add(spec.name)
    return frozenset(enabled)


def _install_sighup(app: web.Application) -> None:
    reloads: set[asyncio.Task[str | None]] = set()

    def on_sighup() -> None:
        # Held until done: the loop keeps only a weak reference to a task.
        task = asyncio.ensure_future(reload_config(app))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    async def on_startup(app: web.Application) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)

    app.on_startup.append(on_startup)


# Python's cyclic garbage collector, set for an exporter that keeps a cache per device.
# At the defaults (700, 10, 10), the objects of scrapes in flight survive two young
# collections and are promoted to the oldest generation, and every 25% of promotions
# triggers a full collection that walks every device's cache: at 10,000 devices one
# full pass took about a second, every few seconds (py-spy in benchmarks/snmp_fleet.py),
# and the exporter fell further behind the more it was behind. With a young
# generation of many allocations a scrape's objects are freed (by reference
# counting: they form no cycles) before anything examines them, so little is promoted
# and full collections are rare. What exists at start (modules, config) is frozen out
# of them altogether. At 5,000 devices with 200 scrapes in flight, 50,000 still
# meant a young collection every 20 scrapes examining the objects of those in flight;
# 250,000 cut the collector's time about threefold and the CPU per scrape by 5-13%
# (in-process A/B on the same responders, docs/benchmarks.md), at no cost in memory.
GC_THRESHOLDS = (250_000, 20, 10)


def tune_garbage_collector() -> None:
    GC_TIMER.install()  # what the collector then costs is on /metrics
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    settings = Settings(
        config_file=args.config_file,
        expand_env=args.expand_env,
        enabled_collectors=enabled_collectors(args),
        timeout_offset_seconds=args.timeout_offset,
        snmp_wrap_large_counters=args.snmp_wrap_large_counters,
        host_view=HostView(rootfs=args.rootfs),
        web_config_file=args.web_config_file,
        enable_lifecycle=args.enable_lifecycle,
    )
    try:
        config = load_config(settings.config_file, expand_env=settings.expand_env)
    except ConfigError as exc:
        print(f"scout-exporter: invalid config:\n{exc}", file=sys.stderr)
        return 1
    try:
        # Certificates and keys are loaded here too, so --dry-run checks them.
        security = WebSecurity(settings.web_config_file)
    except WebConfigError as exc:
        print(f"scout-exporter: invalid web config:\n{exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        where = settings.config_file or "built-in defaults"
        print(f"config OK: {where} ({len(config.auths)} auths)")
        if settings.web_config_file is not None:
            print(f"web config OK: {settings.web_config_file} ({_web_summary(security)})")
        return 0
    app = create_app(settings, config, security=security)
    _install_sighup(app)
    tune_garbage_collector()
    # An address given twice (in the same spelling) is served, and logged, once.
    addresses = list(dict.fromkeys(args.listen or [parse_listen_address(f":{DEFAULT_PORT}")]))
    log.info(
        "starting",
        extra={
            "version": __version__,
            "address": ",".join(format_address(host, port) for host, port in addresses),
            "tls": security.config.tls_server_config is not None,
            "collectors": ",".join(sorted(settings.enabled_collectors)),
            # Whether the SNMP scrape runs the optional compiled loops (setup.py).
            "snmp_loops": "python" if compiled is None else "compiled",
        },
    )
    try:
        status = serve_on(app, addresses, "scout-exporter", ssl_context=security.ssl_context())
    except ListenError as exc:
        # A collector's port (the flow listener's) is told as the HTTP port's is.
        print(f"scout-exporter: {exc}", file=sys.stderr)
        return 1
    if not _worker_threads_finish(timeout=2.0):
        # A collector stuck in a system call, or a lookup on a dead DNS server,
        # would block interpreter exit forever.
        log.warning("a worker thread is still busy; exiting without waiting for it")
        logging.shutdown()
        os._exit(status)
    return status


def _web_summary(security: WebSecurity) -> str:
    tls = security.config.tls_server_config
    shown = "TLS off" if tls is None else f"TLS on, client certificates: {tls.client_auth_type}"
    return f"{shown}, {len(security.config.basic_auth_users)} basic auth users"


def _worker_threads_finish(timeout: float) -> bool:
    """Wait for the worker pools' threads to end; idle ones end at once after shutdown."""
    deadline = time.monotonic() + timeout
    workers = [
        t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    for thread in workers:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in workers)


if __name__ == "__main__":
    sys.exit(main())
