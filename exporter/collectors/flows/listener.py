"""The UDP socket flow exporters send to, read by one thread that hands each datagram on.

A thread rather than an asyncio endpoint: decoding and counting is CPU work
(a busy router sends tens of thousands of records a second), and on the event
loop it would delay every HTTP scrape.

The thread blocks in ``recvfrom_into`` on a blocking socket: one system call
per datagram, into one buffer allocated once. A selector and a non-blocking
socket cost a ``select`` per burst and a raised ``BlockingIOError`` at its end,
and ``recvfrom`` allocates 64 KiB per datagram: together about as much CPU as
decoding a datagram (benchmarks/flow_ingest.py). ``stop`` wakes the thread with
``shutdown(SHUT_RD)``: Linux then ends a blocked receive at once with no sender
address, which no datagram has.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

# Large enough for any UDP datagram (NetFlow/IPFIX messages fit in 65535 bytes).
MAX_DATAGRAM: Final = 65535
# Bursts from many routers at once: ask the kernel for a deep queue (it may give less).
RECEIVE_BUFFER_BYTES: Final = 8 * 1024 * 1024
# After a receive error that is not a stop, wait this long before the next try,
# so a persistent error cannot spin the thread.
_ERROR_PAUSE_SECONDS: Final = 0.1
# Peer names remembered; spoofed sources cannot grow the cache past this.
_MAX_PEER_NAMES: Final = 4096


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
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self._thread = threading.Thread(target=self._run, name="flow-listener", daemon=True)
        self._thread.start()
        log.info("flow listener on %s:%d", *self.address[:2])

    def stop(self) -> None:
        """Stop the thread and close the socket; safe to call twice or before ``start``."""
        self._stopping.set()
        if self._socket is not None:
            # An unbound-peer UDP socket answers ENOTCONN, but is shut down and
            # its blocked reader woken all the same.
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RD)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._socket is not None:
            self._socket.close()
        self._socket = None

    def _run(self) -> None:
        assert self._socket is not None
        sock, handle, stopping = self._socket, self._handle, self._stopping
        buffer = bytearray(MAX_DATAGRAM)
        view = memoryview(buffer)
        # peer address as the socket gives it -> the exporter label; a few
        # routers send everything, so the string work is done once per router.
        names: dict[str, str] = {}
        while True:
            try:
                size, peer = sock.recvfrom_into(buffer)
            except OSError:
                if stopping.is_set():
                    return
                log.exception("flow socket receive failed")
                stopping.wait(_ERROR_PAUSE_SECONDS)
                continue
            # peer None: shut down by stop(), the queue drained; a flood still
            # queued when stop() comes is not read to its end.
            if peer is None or stopping.is_set():
                return
            address = peer[0]
            name = names.get(address)
            if name is None:
                if len(names) >= _MAX_PEER_NAMES:
                    names.clear()
                name = names[address] = _peer(str(address))
            handle(bytes(view[:size]), name)
