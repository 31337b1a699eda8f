"""``scout-sidecar``: the sidecar's commands; ``serve`` runs it and is the default.

Each command is a subparser with its own flags and a ``run`` function; the root
parser takes only ``--version``, so a later group (``anomaly ...``) adds one
subparser and nothing else. ``scout-sidecar --flag ...`` with no command means
``scout-sidecar serve --flag ...``.

Everything an operator must set can come from flags or ``SCOUT_*`` environment
variables, so the sidecar runs without a config file:

- ``SCOUT_WEBHOOK_TOKEN``: the bearer token Alertmanager sends (required unless
  ``--web.insecure-no-auth``; 16 characters or more), or
  ``SCOUT_WEBHOOK_TOKEN_FILE`` naming a file that holds it;
- ``SCOUT_PROMETHEUS_URL``: where the analyst reads context, and
  ``SCOUT_PROMETHEUS_BEARER_TOKEN`` (or ``..._FILE``) if that engine wants a token;
- ``SCOUT_ALERTMANAGER_URLS``: every Alertmanager peer, comma-separated;
- ``SCOUT_DATA_DIR``: where the SQLite store lives (default ``./data``);
- ``SCOUT_STORE_URL``: a PostgreSQL DSN (``postgresql://scout@db:5432/scout`` or
  ``host=db dbname=scout user=scout``) to use instead of SQLite, shared by two
  or more replicas; its password only in ``SCOUT_STORE_PASSWORD`` or the file
  ``SCOUT_STORE_PASSWORD_FILE`` names (or libpq's own ``PGPASSFILE``), never
  in the DSN.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from ai_sidecar import __version__
from ai_sidecar.anomaly.cli import add_anomaly_commands
from ai_sidecar.anomaly.model_commands import add_model_commands
from ai_sidecar.credentials import read_secret
from ai_sidecar.errors import ConfigError
from ai_sidecar.pipes import run_command
from ai_sidecar.settings import DEFAULT_PORT, SidecarSettings
from ai_sidecar.subcommands import add_llm_commands, add_report_command, add_user_commands
from exporter.common.durations import parse_duration
from exporter.common.listen import (
    BODY_READ_TIMEOUT,
    HEADER_READ_TIMEOUT,
    MAX_CONNECTIONS,
    format_address,
    parse_listen_address,
)
from exporter.common.logs import LOG_LEVELS, configure_logging

# What serving needs (the config, the store, the pipeline, the web server) is
# imported when serve runs, and psycopg when a DSN is parsed: every command builds this
# module's parser, and the others need none of it.

log = logging.getLogger("ai_sidecar")

TOKEN_ENV = "SCOUT_WEBHOOK_TOKEN"
# The webhook token guards the API and every alert: shorter ones can be guessed.
MIN_TOKEN_LENGTH = 16
# The same token read from a file: Docker secrets, or the file Alertmanager's
# credentials_file reads, so the two can never disagree.
TOKEN_FILE_ENV = "SCOUT_WEBHOOK_TOKEN_FILE"
PROMETHEUS_ENV = "SCOUT_PROMETHEUS_URL"
ALERTMANAGERS_ENV = "SCOUT_ALERTMANAGER_URLS"
DATA_DIR_ENV = "SCOUT_DATA_DIR"
# A bearer token for Prometheus-compatible engines behind an authenticating proxy
# (Thanos, Mimir, VictoriaMetrics with vmauth).
PROMETHEUS_TOKEN_ENV = "SCOUT_PROMETHEUS_BEARER_TOKEN"
PROMETHEUS_TOKEN_FILE_ENV = "SCOUT_PROMETHEUS_BEARER_TOKEN_FILE"
STORE_URL_ENV = "SCOUT_STORE_URL"
STORE_PASSWORD_ENV = "SCOUT_STORE_PASSWORD"
STORE_PASSWORD_FILE_ENV = "SCOUT_STORE_PASSWORD_FILE"
SWITCH_INTERVAL = 0.0005


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scout-sidecar",
        description="Scout AI sidecar: correlates alerts into explained incidents.",
    )
    parser.add_argument("--version", action="version", version=f"scout-sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve_command = commands.add_parser(
        "serve",
        help="run the HTTP service and its worker (the default command)",
        description="Run the webhook, the incidents API and the worker.",
        epilog=(
            f"Environment: {TOKEN_ENV} or {TOKEN_FILE_ENV} (bearer token for the webhook "
            "and API), "
            f"{PROMETHEUS_ENV} with {PROMETHEUS_TOKEN_ENV} or {PROMETHEUS_TOKEN_FILE_ENV}, "
            f"{ALERTMANAGERS_ENV} (comma-separated peers), "
            f"{DATA_DIR_ENV} (default ./data), "
            f"{STORE_URL_ENV} (PostgreSQL DSN, instead of SQLite) with "
            f"{STORE_PASSWORD_ENV} or {STORE_PASSWORD_FILE_ENV}."
        ),
    )
    add_serve_arguments(serve_command)
    serve_command.set_defaults(run=run_serve)
    add_model_commands(add_anomaly_commands(commands))
    add_llm_commands(commands)
    add_user_commands(commands)
    add_report_command(commands)
    return parser


def with_default_command(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``serve`` in front when it names no command: serve is the default."""
    root_only = ("-h", "--help", "--version")
    if not argv or (argv[0].startswith("-") and argv[0] not in root_only):
        return ["serve", *argv]
    return list(argv)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        type=parse_listen_address,
        default=parse_listen_address(f":{DEFAULT_PORT}"),
        metavar="HOST:PORT",
        help=f"address to serve on (default :{DEFAULT_PORT}, every interface)",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=_positive_int,
        default=MAX_CONNECTIONS,
        metavar="N",
        help=(
            f"connections served at once by each HTTP process (default {MAX_CONNECTIONS}, "
            "at most half the open-files limit); more wait until one closes"
        ),
    )
    parser.add_argument(
        "--web.processes",
        dest="web_processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help=(
            "HTTP processes on the port (default 1); with more, the others answer webhook "
            "deliveries and pass every other request to the first (raise it to 2 on 2 cores "
            "or more for over about 3,000 single-alert deliveries a second)"
        ),
    )
    parser.add_argument(
        "--web.read-header-timeout",
        dest="header_timeout",
        type=_positive_duration,
        default=HEADER_READ_TIMEOUT,
        metavar="DURATION",
        help=(
            f"time a client has to send a request's headers, from connecting or from its "
            f"previous response (default {HEADER_READ_TIMEOUT:g}s)"
        ),
    )
    parser.add_argument(
        "--web.read-timeout",
        dest="body_timeout",
        type=_positive_duration,
        default=BODY_READ_TIMEOUT,
        metavar="DURATION",
        help=f"time a client has to send a request's body (default {BODY_READ_TIMEOUT:g}s)",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML with correlation, priority, runbooks and return-trip settings",
    )
    parser.add_argument(
        "--web.insecure-no-auth",
        dest="insecure_no_auth",
        action="store_true",
        default=False,
        help=f"serve the webhook and API without a token when {TOKEN_ENV} is unset",
    )
    parser.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        default=False,
        help="validate the settings and config file, then exit",
    )
    parser.add_argument("--log.level", dest="log_level", choices=list(LOG_LEVELS), default="info")
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=["auto", "logfmt", "json"],
        default="auto",
        help="auto: logfmt on a terminal, JSON otherwise",
    )


def _positive_int(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {value!r}")
    return int(value)


def _positive_duration(value: str) -> float:
    """A Prometheus duration (``10s``, ``1m``) as seconds, above zero."""
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above 0, got {value!r}")
    return seconds


def parse_url(value: str, variable: str) -> str:
    """An http(s) URL without a trailing slash; credentials in it are refused.

    The URL shows up in logs, metric labels and (Prometheus's) in the links of
    enriched alerts, so neither a user:password part nor a query string (which
    often carries a token) is accepted, and a rejected URL is never echoed:
    it may be one of those.
    """
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:
        raise ConfigError(f"{variable}: not a valid URL") from None
    # Anywhere in the value: "admin:pw@host:9090" parses as the scheme "admin".
    if "@" in value:
        raise ConfigError(f"{variable}: remove the user:password part from the URL")
    if parts.scheme not in ("http", "https") or not hostname:
        raise ConfigError(f"{variable}: expected an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ConfigError(f"{variable}: remove the ?query (or #fragment) from the URL")
    return value.rstrip("/")


def parse_store_url(value: str) -> str:
    """A PostgreSQL DSN (URL or key=value) without a secret; never echoed.

    A password in the DSN would show up wherever the DSN does (a process
    listing, a support bundle), so it must come from the environment or a file.
    So would ``sslpassword`` (the passphrase of the client's TLS key): the key
    must then be one without a passphrase, readable by the sidecar alone.
    """
    scheme = value.split("://", 1)[0] if "://" in value else None
    if scheme is not None and scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{STORE_URL_ENV}: expected a postgresql:// URL or key=value pairs")
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        raise ConfigError(f"{STORE_URL_ENV}: not a valid PostgreSQL connection string") from None
    if "password" in params:
        raise ConfigError(
            f"{STORE_URL_ENV}: remove the password from the connection string; "
            f"set {STORE_PASSWORD_ENV} or {STORE_PASSWORD_FILE_ENV} instead"
        )
    if "sslpassword" in params:
        raise ConfigError(
            f"{STORE_URL_ENV}: remove sslpassword from the connection string; "
            "use a client key without a passphrase, readable only by the sidecar"
        )
    return value


def prepare_data_dir(path: Path, *, create: bool = True) -> None:
    """Check (and create) the store's directory now: a bad path is one clear line.

    With ``create`` False (``--dry-run``) nothing is made; the nearest existing
    directory on the way must then be writable.
    """
    if not create:
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        if not existing.is_dir():
            raise ConfigError(
                f"{DATA_DIR_ENV}: cannot create {path}: {existing} is not a directory"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{DATA_DIR_ENV}: {existing} is not writable by this user")
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{DATA_DIR_ENV}: cannot create {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{DATA_DIR_ENV}: {path} is not writable by this user")


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> SidecarSettings:
    token = read_secret(environ, TOKEN_ENV, TOKEN_FILE_ENV)
    if token is None and not args.insecure_no_auth:
        raise ConfigError(
            f"{TOKEN_ENV} is not set: the webhook and API need a bearer token. "
            f"Set it or {TOKEN_FILE_ENV} "
            "(and the same token in Alertmanager's webhook credentials), "
            "or pass --web.insecure-no-auth to run without one."
        )
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        # The length only, never the token: the message ends up in logs.
        source = TOKEN_FILE_ENV if environ.get(TOKEN_FILE_ENV, "").strip() else TOKEN_ENV
        raise ConfigError(
            f"{source}: the webhook token has {len(token)} characters, fewer than "
            f"{MIN_TOKEN_LENGTH}: a short token can be guessed; make a random one, "
            "e.g. `openssl rand -base64 24`"
        )
    prometheus = environ.get(PROMETHEUS_ENV, "").strip()
    prometheus_token = read_secret(environ, PROMETHEUS_TOKEN_ENV, PROMETHEUS_TOKEN_FILE_ENV)
    if prometheus_token is not None and not prometheus:
        raise ConfigError(f"a Prometheus token is set but {PROMETHEUS_ENV} is not")
    peers = [p.strip() for p in environ.get(ALERTMANAGERS_ENV, "").split(",") if p.strip()]
    host, port = args.listen
    return replace(
        store_settings_from(environ),
        listen_host=host,
        listen_port=port,
        webhook_token=token,
        prometheus_url=parse_url(prometheus, PROMETHEUS_ENV) if prometheus else None,
        prometheus_bearer_token=prometheus_token,
        alertmanager_urls=tuple(dict.fromkeys(parse_url(p, ALERTMANAGERS_ENV) for p in peers)),
        config_file=args.config_file,
        log_level=args.log_level,
        log_format=args.log_format,
    )


def store_settings_from(environ: Mapping[str, str]) -> SidecarSettings:
    """Settings naming only the store (data directory, or PostgreSQL URL and password),
    for commands that read it without serving (``llm audit``)."""
    store_url = environ.get(STORE_URL_ENV, "").strip() or None
    store_password = read_secret(environ, STORE_PASSWORD_ENV, STORE_PASSWORD_FILE_ENV)
    if store_password is not None and store_url is None:
        raise ConfigError(f"a store password is set but {STORE_URL_ENV} is not")
    return SidecarSettings(
        data_dir=Path(environ.get(DATA_DIR_ENV, "").strip() or "data"),
        store_url=None if store_url is None else parse_store_url(store_url),
        store_password=store_password,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(with_default_command(sys.argv[1:] if argv is None else argv))
    run: Callable[[argparse.Namespace], int] = args.run
    return run_command(run, args)


def run_serve(args: argparse.Namespace) -> int:
    from ai_sidecar.config import SidecarConfig, load_config
    from ai_sidecar.console.login.users import load_users_file
    from ai_sidecar.console.reports.digest import smtp_password
    from ai_sidecar.enrichment.llm.providers import provider_key
    from ai_sidecar.intake.processes import serve_with_intake_processes
    from ai_sidecar.notify.signing import load_graph_key
    from ai_sidecar.store import StoreError
    from ai_sidecar.worker_process import stop_restarting_children
    from exporter.common.serving import ServerLimits
    from exporter.common.web import serve

    configure_logging(args.log_level, args.log_format)
    try:
        settings = settings_from(args, os.environ)
        config: SidecarConfig = load_config(settings.config_file)
        if config.console.users_file is not None:
            load_users_file(config.console.users_file)
        if config.llm.provider != "none":
            provider_key(config.llm, environ=os.environ)
        if config.reports.digest.enabled:
            smtp_password(config.reports.digest.smtp)
        # A set key file is checked here; the data directory's default key is
        # left for the first run to create, so a dry run writes nothing.
        if config.graphs.enabled and config.graphs.key_file is not None:
            load_graph_key(config.graphs, settings.data_dir)
        prepare_data_dir(settings.data_dir, create=not args.dry_run)
    except ConfigError as exc:
        print(f"scout-sidecar: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        print("scout-sidecar: settings and config are valid")
        return 0
    if settings.webhook_token is None:
        log.warning("serving the webhook and API without authentication")
    if not settings.alertmanager_urls:
        log.warning(f"{ALERTMANAGERS_ENV} is not set: incidents will not be sent back")
    location = settings.store_location
    log.info(
        "starting",
        extra={
            "version": __version__,
            "address": format_address(settings.listen_host, settings.listen_port),
            "data_dir": str(settings.data_dir),
            "store": "sqlite" if location is None else location.name,
            "alertmanagers": ",".join(settings.alertmanager_urls),
        },
    )
    # The store's threads run Python too (JSON, row decoding). With the default
    # 5 ms switch interval, the event loop waits up to that long for the GIL
    # after every socket call while they work, which is what sets the
    # webhook's tail latency in a storm; a shorter interval cuts that wait.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Imported here: the worker and intake processes start by importing this
    # module (multiprocessing runs the parent's main module in each), and the
    # app brings in the console and the anomaly models, which they never use.
    from ai_sidecar.app import create_app

    app = create_app(settings, config, worker_process=True, reload_on_sighup=True)
    limits = ServerLimits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
    )
    try:
        if args.web_processes > 1:
            return serve_with_intake_processes(
                app, settings, args.web_processes, "scout-sidecar", limits
            )
        return serve(
            app,
            settings.listen_host,
            settings.listen_port,
            "scout-sidecar",
            limits=limits,
            on_stop_signal=partial(stop_restarting_children, app),
        )
    except StoreError as exc:
        # At start-up: a full disk, a read-only file system, a file of a newer
        # Scout. The message names the file and the reason; a traceback adds nothing.
        print(f"scout-sidecar: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
