"""What an intake process does not serve itself, passed to the main HTTP process.

An intake process (:mod:`ai_sidecar.intake.processes`) answers webhook
deliveries itself; every other request that reaches it (the console, the API,
/metrics, health, reload, graphs) goes, as it came, to the main process over a
private Unix socket, and the answer comes back as it went. So sessions, login
lockout, reloads and /metrics stay in one process, whichever process accepted
the connection.

The client's address travels in :data:`PEER_HEADER`. The main process believes
that header only on a connection that came in on the Unix socket
(:func:`believe_intake_peer`), whose directory only the sidecar's user can
open; on the TCP port it is ignored, so a client cannot choose the address
its failed sign-ins are counted under.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ai_sidecar.keys import SETTINGS
from ai_sidecar.request_errors import UNREADABLE_BODY
from ai_sidecar.webhook import WEBHOOK_PATH, read_body

log = logging.getLogger("ai_sidecar.intake")

PEER_HEADER = "X-Scout-Intake-Peer"
# Headers about one connection (RFC 9110 §7.6.1), not about the request: each
# hop has its own. Content-Length is recomputed from the body read; Expect was
# answered by the intake process already.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
        "content-length",
    }
)
UPSTREAM_CONNECT_TIMEOUT = 5.0
# The longest the main process may go without sending a byte of its answer.
# Its slowest pages (a weekly report over a busy week) take a few seconds; one
# that says nothing for this long is stuck, and a request left waiting on it
# would hold one of this process's connections for good.
UPSTREAM_READ_TIMEOUT = 120.0
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
MAIN_PROCESS_GONE = "the sidecar's main process did not answer; retry later"
MAIN_PROCESS_STUCK = "the sidecar's main process did not answer in time; retry later"
MALFORMED_TARGET = "malformed request target"
_CHUNK = 64 * 1024


def upstream_session(
    socket_path: Path, idle_timeout: float, read_timeout: float = UPSTREAM_READ_TIMEOUT
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context holding the client session to the main process's Unix socket.

    ``idle_timeout``: how long the main process keeps an idle connection open
    (its header timeout). A connection is reused for at most half of that, so a
    request is never sent on one the main process is closing: a POST on it
    would fail, and a POST is not retried. ``read_timeout``: how long the main
    process may be silent while it answers.
    """

    async def session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.UnixConnector(
            path=str(socket_path),
            # No pool limit to wait on: the intake process's own connection cap
            # bounds how many requests it forwards at once.
            limit=0,
            keepalive_timeout=idle_timeout / 2,
        )
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=UPSTREAM_CONNECT_TIMEOUT,
                sock_connect=UPSTREAM_CONNECT_TIMEOUT,
                sock_read=read_timeout,
            ),
            # One jar for every client would hand one user's cookies to the next.
            cookie_jar=aiohttp.DummyCookieJar(),
            # The answer goes back as it came, compressed or not.
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        ) as client:
            app[UPSTREAM] = client
            yield

    return session


# Not passed on with a request: aiohttp has decoded the body already (so the
# main process must not decode it again), and the client's address is ours to say.
_NOT_FORWARDED = _HOP_BY_HOP | {"content-encoding", PEER_HEADER.lower()}


def _connection_options(headers: CIMultiDictProxy[str]) -> set[str]:
    """Headers the Connection header names: about this hop only (RFC 9110 §7.6.1)."""
    named = ",".join(headers.getall("Connection", []))
    return {option.strip().lower() for option in named.split(",") if option.strip()}


def _forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    dropped = _NOT_FORWARDED | _connection_options(request.headers)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        if name.lower() not in dropped:
            headers.add(name, value)
    headers[PEER_HEADER] = request.remote or ""
    return headers


def _bad_request(message: str) -> web.Response:
    """A 400 answered here, for any path (the console's error page needs the main
    process's app). The connection ends: the rest of the request cannot be read,
    or the client would send its next request on it."""
    response = web.json_response({"error": message}, status=400)
    response.force_close()
    return response


async def forward(request: web.Request) -> web.StreamResponse:
    """Pass ``request`` to the main process and its answer back."""
    if request.path == WEBHOOK_PATH:
        # Only POST is served here; anything else gets the main process's answer,
        # which would count the request a second time.
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    # Read whole, within the main process's limit: one past it is a 413 from
    # request_errors, on every path.
    limit = request.app[SETTINGS].max_body_bytes
    try:
        body = await read_body(request, limit) if request.body_exists else None
    except web.RequestPayloadError:
        return _bad_request(UNREADABLE_BODY)
    try:
        # The path and query only: an absolute-form target's scheme and host are
        # the client's business, not the main process's.
        url = URL(f"http://scout-sidecar{request.rel_url.raw_path_qs}", encoded=True)
    except ValueError:
        return _bad_request(MALFORMED_TARGET)
    client = request.app[UPSTREAM]
    response: web.StreamResponse | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            # sock_read starts only once the body is written: a main process
            # that accepts but never reads would hold a large body's write, and
            # this request, for ever. So sending and the answer's head are
            # bounded as a whole; sock_read bounds each pause of the body after.
            async with asyncio.timeout(client.timeout.sock_read):
                upstream = await stack.enter_async_context(
                    client.request(
                        request.method,
                        url,
                        headers=_forwarded_headers(request),
                        # In chunks: raw bytes past 1 MiB would hold the loop (and
                        # aiohttp warns).
                        data=None if body is None else io.BytesIO(body),
                        allow_redirects=False,
                    )
                )
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            dropped = _connection_options(upstream.headers) | (_HOP_BY_HOP - {"content-length"})
            for name, value in upstream.headers.items():
                if name.lower() not in dropped:
                    response.headers.add(name, value)
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientError, OSError) as exc:
        if response is not None and response.prepared:
            # Half an answer is out (the main process stopped, or the client
            # went away): cut the connection, so a client still there sees the
            # answer end short rather than complete.
            log.debug("forwarded answer cut short", extra={"error": str(exc)[:200]})
            if request.transport is not None:
                request.transport.abort()
            return response
        if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
            log.warning("main process silent too long; answering 504")
            return web.json_response({"error": MAIN_PROCESS_STUCK}, status=504)
        log.warning("main process unreachable; answering 503", extra={"error": str(exc)[:200]})
        answer = web.json_response({"error": MAIN_PROCESS_GONE}, status=503)
        answer.headers["Retry-After"] = "5"
        return answer


def _on_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.family == socket.AF_UNIX


@web.middleware
async def believe_intake_peer(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """In the main process: a request an intake process forwarded is the client's,
    from the client's address."""
    if _on_unix_socket(request):
        request = request.clone(remote=request.headers.get(PEER_HEADER, ""))
    return await handler(request)


__all__ = [
    "MAIN_PROCESS_GONE",
    "MAIN_PROCESS_STUCK",
    "PEER_HEADER",
    "believe_intake_peer",
    "forward",
    "upstream_session",
]
