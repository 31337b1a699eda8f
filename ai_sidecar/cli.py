"""``scout-sidecar``: run the sidecar (``serve``, the default command)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ai_sidecar import __version__
from ai_sidecar.app import create_app
from ai_sidecar.settings import DEFAULT_PORT, SidecarSettings
from exporter.logs import LOG_LEVELS, configure_logging
from exporter.web import format_address, parse_listen_address, serve

log = logging.getLogger("ai_sidecar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scout-sidecar",
        description="Scout AI sidecar: correlates alerts into explained incidents.",
    )
    parser.add_argument("--version", action="version", version=f"scout-sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP service (the default)")
    add_serve_arguments(parser)
    # SUPPRESS keeps the subcommand from overwriting flags given before its name.
    add_serve_arguments(serve, argument_default=argparse.SUPPRESS)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser, argument_default: object = None) -> None:
    def default(value: object) -> object:
        return value if argument_default is None else argument_default

    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        type=parse_listen_address,
        default=default(parse_listen_address(f":{DEFAULT_PORT}")),
        metavar="HOST:PORT",
        help=f"address to serve on (default :{DEFAULT_PORT}, every interface)",
    )
    parser.add_argument(
        "--log.level", dest="log_level", choices=list(LOG_LEVELS), default=default("info")
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=["auto", "logfmt", "json"],
        default=default("auto"),
        help="auto: logfmt on a terminal, JSON otherwise",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    host, port = args.listen
    settings = SidecarSettings(listen_host=host, listen_port=port)
    log.info("starting", extra={"version": __version__, "address": format_address(host, port)})
    return serve(create_app(settings), host, port, "scout-sidecar")


if __name__ == "__main__":
    sys.exit(main())
