"""HTTP pieces both daemons share: exposition rendering, health answers, listen addresses."""

from __future__ import annotations

import html
import os
import socket
import ssl
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from exporter.common.listen import format_address
from exporter.common.serving import ServerLimits, listening_sockets, raise_open_files_limit, run


class _Families:
    """Adapter so prometheus_client's encoders can render a list of families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


# gzip level for expositions. Level 1 takes about a third of the CPU of zlib's default
# (6) for a 150 kB SNMP exposition (1.2 ms against 3.3 ms) and sends 26 kB instead of
# 19 kB: at thousands of scrapes a minute the CPU matters, the bytes hardly do.
GZIP_LEVEL = 1


def exposition_response(request: web.Request, body: bytes, content_type: str) -> web.Response:
    """``body`` as the response, gzipped when the scraper accepts it (Prometheus does)."""
    headers = {"Content-Type": content_type}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        # A large SNMP or flow exposition shrinks about sixfold.
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return web.Response(body=body, headers=headers)


def render_registry(request: web.Request, registry: CollectorRegistry) -> web.Response:
    """The exposition in the format the scraper asked for (OpenMetrics or text 0.0.4)."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return exposition_response(request, encoder(registry), content_type)


def render_families(request: web.Request, families: Iterable[Metric]) -> web.Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return render_registry(request, registry)


async def healthy(_: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="Ready.\n")


def landing_page(
    title: str,
    intro: str,
    links: Iterable[tuple[str, str]],
    unlinked: Iterable[tuple[str, str]] = (),
) -> web.Response:
    """A small accessible page; ``unlinked`` paths are named, not linked (a browser
    following them would only get a 401, as with a token-protected API)."""
    items = "".join(
        f'<li><a href="{html.escape(href)}">{html.escape(href)}</a> {html.escape(text)}</li>'
        for href, text in links
    ) + "".join(
        f"<li><code>{html.escape(path)}</code> {html.escape(text)}</li>" for path, text in unlinked
    )
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head><body><main>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><ul>{items}</ul>"
        "</main></body></html>"
    )
    return web.Response(text=body, content_type="text/html")


def serve(
    app: web.Application,
    host: str | None,
    port: int,
    prog: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    limits: ServerLimits | None = None,
    on_stop_signal: Callable[[], None] | None = None,
) -> int:
    """Run ``app`` until SIGINT/SIGTERM; 1 with a one-line reason if it cannot listen.

    With ``ssl_context`` the port speaks only TLS. Middlewares (basic auth, say)
    belong to ``app``: they are fixed when it is built. The open-files limit is
    raised first, and ``limits`` (:mod:`exporter.common.serving`) bound what
    one client can hold.
    """
    return serve_on(
        app,
        [(host, port)],
        prog,
        ssl_context=ssl_context,
        limits=limits,
        on_stop_signal=on_stop_signal,
    )


def serve_on(
    app: web.Application,
    addresses: Sequence[tuple[str | None, int]],
    prog: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    limits: ServerLimits | None = None,
    on_stop_signal: Callable[[], None] | None = None,
) -> int:
    """``serve`` on every one of ``addresses``, with the same TLS, limits and middlewares
    on each (as exporter-toolkit serves each ``--web.listen-address``); 1 with a
    one-line reason if any cannot be listened on."""
    limits = limits or ServerLimits()
    sockets: list[socket.socket] = []
    # An address given twice in the same spelling is served once.
    for host, port in dict.fromkeys(addresses):
        opened = open_listening_sockets(host, port, prog, limits)
        if opened is None:
            for sock in sockets:
                sock.close()
            return 1
        sockets += opened
    run(app, sockets, ssl_context=ssl_context, limits=limits, on_stop_signal=on_stop_signal)
    return 0


def open_listening_sockets(
    host: str | None, port: int, prog: str, limits: ServerLimits
) -> list[socket.socket] | None:
    """Raise the open-files limit and listen on ``host``:``port``; None, with the
    one-line reason printed, if it cannot listen."""
    raise_open_files_limit()
    try:
        return listening_sockets(host, port, limits.backlog)
    except OSError as exc:
        reason = socket_error_reason(exc)
        print(f"{prog}: cannot listen on {format_address(host, port)}: {reason}", file=sys.stderr)
        return None


def socket_error_reason(exc: OSError) -> str:
    """Why a bind failed, in a few words ("Address already in use")."""
    # Name resolution errors carry no errno, only a message.
    plain = exc.errno is not None and exc.errno > 0
    return os.strerror(exc.errno) if plain and exc.errno else exc.strerror or str(exc)
