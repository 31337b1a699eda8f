"""Running an aiohttp app on a port with limits a hostile client cannot get around.

Both daemons serve through :func:`run`, which adds what aiohttp's ``run_app``
leaves out, the way Go's ``http.Server`` and ``netutil.LimitListener`` do for
Prometheus and its exporters:

- **A connection cap.** At most :attr:`ServerLimits.max_connections` connections
  are open at once, and never more than half the open-files limit: beyond it
  the listening socket is not read, so new connections wait in the kernel's
  backlog until one closes, instead of the process running out of file
  descriptors (after which asyncio logs a traceback on every accept).
- **A header read timeout.** A connection must deliver a complete request head
  within :attr:`ServerLimits.header_timeout` of opening (or of its previous
  response): a client that sends nothing, or trickles header bytes, is cut
  off. An idle keep-alive connection closes after the same time. With TLS the
  handshake has the same bound, and a client that speaks plain HTTP to the TLS
  port gets Go's answer, a 400 saying so, instead of a silent close.
- **A body read timeout.** Once the head has arrived, the whole body must
  arrive within :attr:`ServerLimits.body_timeout`; otherwise the request's
  handler is cancelled and the connection closed. A body the handler leaves
  unread is drained for at most as long, then the connection closes.
- **A write stall timeout.** A client that stops reading its answer is cut
  off once the answer has sat in a full write buffer for
  :attr:`ServerLimits.body_timeout`, so it cannot keep its connection slot
  for ever.
- **No request bytes in the log.** aiohttp logs a request its parser refuses
  with the offending bytes, which may be credentials
  (:class:`RedactParserErrors`).
- **The open-files limit** is raised to the hard limit at start
  (:func:`raise_open_files_limit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import resource
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from exporter.common.listen import BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS

log = logging.getLogger("exporter.common.serving")

# Seconds between two tries to accept after the process ran out of descriptors.
ACCEPT_RETRY_DELAY = 1.0
# Seconds in-flight requests get to finish at shutdown.
SHUTDOWN_TIMEOUT = 10.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Go's net/http answers this, word for word, to plain HTTP on a TLS port.
PLAIN_HTTP_TO_TLS_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
# The first byte of every TLS handshake record (a ClientHello included).
_TLS_HANDSHAKE = 0x16


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client may hold of the server; see the module docstring."""

    header_timeout: float = HEADER_READ_TIMEOUT
    body_timeout: float = BODY_READ_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    backlog: int = 128

    def connection_cap(self) -> int:
        """``max_connections``, or half the open-files limit if that is lower:
        the other half stays for the store, clients and the accept loop itself."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft // 2))


def raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard one.

    Every SNMP device keeps a UDP socket, and every HTTP client a connection:
    systemd's default soft limit (1024) would run out at about a thousand of
    either. Go programs do the same at start.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listening_sockets(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening sockets for ``host`` (None: every interface, IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # a family this kernel lacks (IPv6 switched off), as asyncio does
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # The IPv4 socket, if any, serves IPv4; as asyncio does.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Guard(asyncio.Protocol):
    """Stands between a transport and aiohttp's protocol to see the connection
    end, and to abort it when the client stops reading for ``stall_timeout``."""

    def __init__(self, release: Callable[[], None], stall_timeout: float) -> None:
        self._release: Callable[[], None] | None = release
        self._inner: asyncio.Protocol | None = None
        self._stall_timeout = stall_timeout
        self._transport: asyncio.Transport | None = None
        self._stalled: asyncio.TimerHandle | None = None

    def wrap(self, inner: asyncio.Protocol) -> _Guard:
        self._inner = inner
        return self

    def release(self) -> None:
        """Give the connection's slot back; only the first call counts."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert self._inner is not None
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self._inner is not None
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        assert self._inner is not None
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        assert self._inner is not None
        # The write buffer is full: the client reads slower than we answer,
        # or not at all. If it stays full, the connection is given up.
        if self._stalled is None:
            self._stalled = asyncio.get_running_loop().call_later(
                self._stall_timeout, self._abort_stalled
            )
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        assert self._inner is not None
        self._cancel_stall_timer()
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_stall_timer()
        self.release()
        assert self._inner is not None
        self._inner.connection_lost(exc)

    def _cancel_stall_timer(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _abort_stalled(self) -> None:
        self._stalled = None
        log.debug("client stopped reading its answer; closing")
        assert self._transport is not None
        self._transport.abort()


class _Listener:
    """Accepts connections on ``sockets`` while fewer than ``cap`` are open."""

    def __init__(
        self,
        sockets: list[socket.socket],
        protocol: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext | None,
        limits: ServerLimits,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = sockets
        self._protocol = protocol
        self._ssl = ssl_context
        self._limits = limits
        self._cap = limits.connection_cap()
        self._open = 0
        self._reading = False
        self._retry: asyncio.TimerHandle | None = None
        self._starting: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        return self._open

    def start(self) -> None:
        self._reading = True
        for sock in self._sockets:
            self._loop.add_reader(sock, self._accept, sock)

    def stop(self) -> None:
        """Stop accepting and close the listening sockets; open connections stay."""
        self._pause()
        if self._retry is not None:
            self._retry.cancel()
        for sock in self._sockets:
            sock.close()
        for task in self._starting:
            task.cancel()

    def _pause(self) -> None:
        if self._reading:
            self._reading = False
            for sock in self._sockets:
                self._loop.remove_reader(sock)

    def _resume(self) -> None:
        self._retry = None
        if not self._reading and self._open < self._cap and self._sockets[0].fileno() >= 0:
            self.start()

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._limits.backlog):
            if self._open >= self._cap:
                log.warning(
                    "connection limit reached; new connections wait",
                    extra={"max_connections": self._cap},
                )
                self._pause()
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    # The connection went wrong before it was ours; the next may not.
                    log.warning("accepting a connection failed", extra={"error": str(exc)})
                    continue
                log.error(
                    "cannot accept connections; trying again shortly",
                    extra={"error": exc.strerror, "open_connections": self._open},
                )
                self._pause()
                if self._retry is None:
                    self._retry = self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume)
                return
            conn.setblocking(False)
            self._open += 1
            task = self._loop.create_task(self._connect(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        guard = _Guard(self._released, self._limits.body_timeout)
        handshake_timeout = None
        try:
            if self._ssl is not None:
                deadline = self._loop.time() + self._limits.header_timeout
                if await self._answered_plain_http(conn, deadline):
                    conn.close()
                    guard.release()
                    return
                handshake_timeout = max(deadline - self._loop.time(), 0.001)
            await self._loop.connect_accepted_socket(
                lambda: guard.wrap(self._protocol()),
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=handshake_timeout,
            )
        except BaseException as exc:
            # A failed TLS handshake: the transport closed the socket already.
            conn.close()
            guard.release()
            if not isinstance(exc, Exception):
                raise
            log.debug("connection dropped before its first request", exc_info=exc)

    async def _answered_plain_http(self, conn: socket.socket, deadline: float) -> bool:
        """Whether ``conn`` (on the TLS port) began in plain HTTP, and was answered so.

        The first byte is only peeked at: a TLS client's stays for the handshake.
        """
        readable: asyncio.Future[None] = self._loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        self._loop.add_reader(conn, ready)
        try:
            async with asyncio.timeout_at(deadline):
                await readable
        finally:
            self._loop.remove_reader(conn)
        first = conn.recv(1, socket.MSG_PEEK)
        if not first or first[0] == _TLS_HANDSHAKE or not first.isalpha():
            return False  # not HTTP (or gone): the handshake fails as it would have
        # Take in what came, so the close is a FIN, not a reset that can wipe the answer.
        conn.recv(65536)
        await self._loop.sock_sendall(conn, PLAIN_HTTP_TO_TLS_ANSWER)
        return True

    def _released(self) -> None:
        self._open -= 1
        if not self._reading and self._retry is None:
            self._resume()


# The words that name a parser error's problem ("Invalid header token"); what
# follows them (a colon, a quote, b'...') may be raw request bytes.
_PARSER_PROBLEM = re.compile(r"[A-Za-z](?:[\w -]|'(?=t\b))*")


class RedactParserErrors(logging.Filter):
    """Keeps raw request bytes out of aiohttp's "Error handling request" records.

    aiohttp logs a request its parser refuses with the offending bytes, and
    they may be the Authorization header: "Authorization : Bearer ..." is an
    invalid header name, and a request with bare LF line ends is quoted from
    the request line through the headers. The record keeps the client, the
    status and the problem, and drops the bytes and the traceback. So does a
    body that does not decode as its headers say: the client's error, which
    aiohttp logs with a traceback as an "Unhandled exception".
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, web.RequestPayloadError):
            # A body that does not decode (a Content-Encoding it does not have):
            # aiohttp logs it again when it drains the body after the answer.
            error = error.__cause__
        if isinstance(error, HttpProcessingError):
            found = _PARSER_PROBLEM.match(error.message)
            problem = found.group(0).strip() if found else "malformed request"
            record.msg = (
                f"{record.getMessage()}: {error.code} {problem}"
                " (request not logged: it may hold credentials)"
            )
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def body_deadline(timeout: float) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: a request whose body has not all arrived ``timeout`` seconds
    after its head is cut off (handler cancelled, connection closed); one whose
    client hangs up before its body ends is let go without an error logged."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.content.is_eof():
            return await handler(request)

        def cut_off() -> None:
            if not request.content.is_eof():
                log.debug("request body too slow; closing", extra={"remote": request.remote})
                # The connection's task: cancelling it cancels the handler and
                # closes the connection, with no error logged (a client gone).
                request.task.cancel()

        timer = asyncio.get_running_loop().call_later(timeout, cut_off)
        try:
            return await handler(request)
        except ConnectionResetError:
            if request.transport is not None and not request.transport.is_closing():
                raise
            # The client hung up before its body ended: aiohttp would log an
            # error with a traceback, each time anyone does so. An answer nobody
            # receives ends the request quietly, as a client gone is.
            log.debug("client gone before its body ended", extra={"remote": request.remote})
            return web.Response(status=400)
        finally:
            timer.cancel()

    return middleware


@contextlib.asynccontextmanager
async def serving(
    app: web.Application,
    sockets: list[socket.socket],
    *,
    ssl_context: ssl.SSLContext | None = None,
    limits: ServerLimits | None = None,
) -> AsyncIterator[None]:
    """Serve ``app`` on ``sockets`` (listening, non-blocking) inside the block.

    On leaving, the sockets close and in-flight requests get
    :data:`SHUTDOWN_TIMEOUT` to finish before the app's cleanup runs.
    """
    limits = limits or ServerLimits()
    app.middlewares.insert(0, body_deadline(limits.body_timeout))
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        # aiohttp's keep-alive timer runs from a connection's start and from
        # each response until a full request head arrives: a header timeout.
        keepalive_timeout=limits.header_timeout,
        # After a handler that left its body unread, aiohttp drains the rest
        # for up to 10 s: no longer than a body may take to arrive at all.
        lingering_time=min(10.0, limits.body_timeout),
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    # On the logger, not a handler: pytest's log capture sees it too.
    server_log = logging.getLogger("aiohttp.server")
    redact = RedactParserErrors()
    server_log.addFilter(redact)
    try:
        await runner.setup()
        server = runner.server
        assert server is not None
        listener = _Listener(sockets, server, ssl_context, limits)
        try:
            listener.start()
            yield
        finally:
            listener.stop()
            await runner.cleanup()
    finally:
        server_log.removeFilter(redact)


async def _serve_until_signalled(
    app: web.Application,
    sockets: list[socket.socket],
    ssl_context: ssl.SSLContext | None,
    limits: ServerLimits,
    on_stop_signal: Callable[[], None] | None,
    before_closing: Callable[[], Awaitable[None]] | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        try:
            if on_stop_signal is not None:
                on_stop_signal()
        finally:
            stop.set()

    # Before start-up, not after: a signal while the app starts (its children
    # too) is then a stop like any other once start-up is done, instead of
    # Python's default (killed at once, or start-up cut short half done).
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping)
    async with serving(app, sockets, ssl_context=ssl_context, limits=limits):
        await stop.wait()
        if before_closing is not None:
            await before_closing()


def run(
    app: web.Application,
    sockets: list[socket.socket],
    *,
    ssl_context: ssl.SSLContext | None = None,
    limits: ServerLimits = ServerLimits(),
    on_stop_signal: Callable[[], None] | None = None,
    before_closing: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve ``app`` on ``sockets`` until SIGINT or SIGTERM, then shut down gracefully.

    ``on_stop_signal`` runs in the signal's handler, before anything stops (the
    whole process group may have had the signal: tell child watchers not to
    restart what ends now). ``before_closing`` is awaited after the signal while
    the sockets still accept. Errors of the app's start-up (its ``cleanup_ctx``)
    propagate.
    """
    try:
        asyncio.run(
            _serve_until_signalled(
                app, sockets, ssl_context, limits, on_stop_signal, before_closing
            )
        )
    finally:
        for sock in sockets:
            sock.close()
