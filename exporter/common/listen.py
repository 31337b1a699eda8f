"""Where and how a daemon serves, as its command line says, without importing aiohttp.

The address parser and the server limits' defaults are here, apart from
:mod:`exporter.common.web` and :mod:`exporter.common.serving`, so that a
command line builds its parser (``--help``, a quick subcommand) without the
web server it may never start.
"""

from __future__ import annotations

import argparse

# Go's net/http leaves these to the caller; these are what Scout's peers need:
# Alertmanager and Prometheus send a request head in one packet and a body of
# a few megabytes at most, on the local network.
HEADER_READ_TIMEOUT = 10.0
BODY_READ_TIMEOUT = 30.0
# Prometheus's own --web.max-connections default.
MAX_CONNECTIONS = 512


def parse_listen_address(value: str) -> tuple[str | None, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (every interface)."""
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT, got {value!r}; write an IPv6 address in brackets: [{host}]:{port}"
        )
    return (host or None), int(port)


def format_address(host: str | None, port: int) -> str:
    if host is None:
        return f"*:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
