"""The UDP socket flow exporters send to, read by one thread that hands each datagram on.

A thread rather than an asyncio endpoint: decoding and counting is CPU work
(a busy router sends tens of thousands of records a second), and on the event
loop it would delay every HTTP scrape. The thread waits on the socket and on a
wake-up socket pair, so ``close`` stops it at once without polling.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

# Large enough for any UDP datagram (NetFlow/IPFIX messages fit in 65535 bytes).
MAX_DATAGRAM: Final = 65535
# Bursts from many routers at once: ask the kernel for a deep queue (it may give less).
RECEIVE_BUFFER_BYTES: Final = 8 * 1024 * 1024
# Datagrams read per wake-up before looking at the wake-up pair again.
_BATCH: Final = 64


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[ipv6]:port`` -> (host, port); raises ``ValueError`` on anything else."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {listen!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


def _peer(address: str) -> str:
    # A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d; the exporter label wants a.b.c.d.
    return address[7:] if address.startswith("::ffff:") and "." in address else address


class UdpListener:
    """Binds ``listen`` and calls ``handle(datagram, peer_address)`` for each datagram."""

    def __init__(self, listen: str, handle: Callable[[bytes, str], None]) -> None:
        self._listen = listen
        self._handle = handle
        self._socket: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the real port when ``listen`` asked for port 0."""
        if self._socket is None:
            raise RuntimeError("the flow listener is not started")
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        host, port = parse_listen(self._listen)
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            except OSError:
                log.warning("could not enlarge the flow socket's receive buffer")
            sock.bind(address)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="flow-listener", daemon=True)
        self._thread.start()
        log.info("flow listener on %s:%d", *self.address[:2])

    def stop(self) -> None:
        """Stop the thread and close the socket; safe to call twice or before ``start``."""
        self._stopping.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for sock in (self._socket, *(self._wake or ())):
            if sock is not None:
                sock.close()
        self._socket = None
        self._wake = None

    def _run(self) -> None:
        assert self._socket is not None
        assert self._wake is not None
        sock, wake = self._socket, self._wake[0]
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                selector.select()
                for _ in range(_BATCH):
                    try:
                        datagram, peer = sock.recvfrom(MAX_DATAGRAM)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        if self._stopping.is_set():
                            return
                        log.exception("flow socket receive failed")
                        break
                    self._handle(datagram, _peer(str(peer[0])))
