"""The UDP socket flow exporters send to, read by one thread that hands datagrams on in batches.

A thread rather than an asyncio endpoint: decoding and counting is CPU work
(a busy router sends tens of thousands of records a second), and on the event
loop it would delay every HTTP scrape.

The thread blocks on a blocking socket. On Linux it reads with ``recvmmsg(2)``
(through ``ctypes``, so no compiled module): one system call takes up to
``BATCH_DATAGRAMS`` datagrams that are queued, into one buffer allocated once
(handed on as views, not copied), and ``MSG_WAITFORONE`` makes it wait for the
first only. Routers send in bursts, so one wake-up, one call and one release of
the GIL serve a whole burst, and the handler is called once per batch (one
lock, one clock read). Elsewhere,
or where the call is refused (``ENOSYS`` in some sandboxes), ``recvfrom_into``
reads one datagram per call into the same kind of buffer; the handler then gets
batches of one. Both beat a selector on a non-blocking socket (a ``select`` per
burst and a raised ``BlockingIOError`` at its end) and ``recvfrom`` (64 KiB
allocated per datagram): benchmarks/flow_ingest.py.

``stop`` wakes the thread with ``shutdown(SHUT_RD)``: Linux then ends a
blocked receive at once with a message that has no sender address, which no
datagram has.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import mmap
import os
import socket
import sys
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Final, Protocol, TypeVar

import numpy as np

log = logging.getLogger(__name__)

# Large enough for any UDP datagram (NetFlow/IPFIX messages fit in 65535 bytes).
MAX_DATAGRAM: Final = 65535
# Datagrams read by one recvmmsg call: a burst from a few routers. The buffer is
# BATCH_DATAGRAMS * MAX_DATAGRAM bytes of address space, touched only where
# datagrams land.
BATCH_DATAGRAMS: Final = 64
# Bursts from many routers at once: ask the kernel for a deep queue (it may give less).
RECEIVE_BUFFER_BYTES: Final = 8 * 1024 * 1024
# After a receive error that is not a stop, wait this long before the next try,
# so a persistent error cannot spin the thread.
_ERROR_PAUSE_SECONDS: Final = 0.1
# Peer names remembered; spoofed sources cannot grow the cache past this.
_MAX_PEER_NAMES: Final = 4096
# Room for any socket address (sockaddr_storage is 128 bytes).
_SOCKADDR_SIZE: Final = 128
_MSG_WAITFORONE: Final = 0x10000

# (datagram, exporter address): what the handler gets, in arrival order. The datagram
# is a view of the receiver's buffer, valid until the handler returns: the next
# receive writes over it, so a handler copies what it keeps (the flow aggregation
# copies record bytes out at once). No copy per datagram on the way in.
Datagram = tuple[memoryview, str]
BatchHandler = Callable[[Sequence[Datagram]], None]
KeyT = TypeVar("KeyT", bound=Hashable)


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


def _peer_label(address: object) -> str:
    """The label of the host part of an address tuple from ``recvfrom_into``."""
    return _peer(str(address))


class StoppedError(Exception):
    """The socket was shut down by ``stop``: the receive loop ends."""


class Receiver(Protocol):
    """Reads the datagrams waiting on a blocking socket (at least one; blocks for it).

    Raises ``StoppedError`` once the socket is shut down (datagrams read in the
    same call before that are returned by the call before), ``OSError`` on a
    receive error.
    """

    def receive(self) -> list[Datagram]: ...


class _PeerNames:
    """Peer address as the socket gives it -> the exporter label.

    A few routers send everything, so the string work is done once per router.
    """

    def __init__(self) -> None:
        self._names: dict[Hashable, str] = {}

    def name(self, key: KeyT, make: Callable[[KeyT], str]) -> str:
        """The label for ``key``, made by ``make(key)`` the first time."""
        names = self._names
        name = names.get(key)
        if name is None:
            if len(names) >= _MAX_PEER_NAMES:
                names.clear()
            name = names[key] = make(key)
        return name


class SingleReceiver:
    """One ``recvfrom_into`` per datagram: the portable reader."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._buffer = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buffer)
        self._names = _PeerNames()

    def receive(self) -> list[Datagram]:
        size, peer = self._socket.recvfrom_into(self._buffer)
        if peer is None:  # shut down by stop(), the queue drained
            raise StoppedError
        name = self._names.name(peer[0], _peer_label)
        return [(self._view[:size], name)]


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint32))


def _recvmmsg() -> Callable[..., int] | None:
    """libc's ``recvmmsg``, or None off Linux or with a libc that lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    )
    function.restype = ctypes.c_int
    return function


def _sockaddr_name(raw: bytes) -> str:
    """The address of a ``sockaddr_in`` or ``sockaddr_in6`` (family in native byte order)."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6:
        return _peer(socket.inet_ntop(socket.AF_INET6, raw[8:24]))
    return raw.hex()


class BatchReceiver:
    """``recvmmsg`` into ``BATCH_DATAGRAMS`` slots of one buffer; ``create`` gives None
    where the call does not exist."""

    def __init__(self, sock: socket.socket, recvmmsg: Callable[..., int]) -> None:
        self._socket = sock
        self._recvmmsg = recvmmsg
        count = BATCH_DATAGRAMS
        # Anonymous memory rather than a bytearray (which is zero-filled at once): only
        # the pages datagrams are written to become resident, not 4 MiB up front.
        self._buffer = mmap.mmap(-1, count * MAX_DATAGRAM)
        self._view = memoryview(self._buffer)
        self._addresses = bytearray(count * _SOCKADDR_SIZE)
        self._address_view = memoryview(self._addresses)
        base = ctypes.addressof((ctypes.c_char * len(self._buffer)).from_buffer(self._buffer))
        names = ctypes.addressof(
            (ctypes.c_char * len(self._addresses)).from_buffer(self._addresses)
        )
        self._iovecs = (_IoVec * count)()
        self._messages = (_MMsgHdr * count)()
        for index in range(count):
            self._iovecs[index].iov_base = base + index * MAX_DATAGRAM
            self._iovecs[index].iov_len = MAX_DATAGRAM
            header = self._messages[index].msg_hdr
            header.msg_name = names + index * _SOCKADDR_SIZE
            header.msg_namelen = _SOCKADDR_SIZE
            header.msg_iov = ctypes.pointer(self._iovecs[index])
            header.msg_iovlen = 1
        # The fields read back, as a (message, 32-bit word) table over the mmsghdr array:
        # a batch's lengths and sender sizes come out in one step each.
        words = ctypes.sizeof(_MMsgHdr) // 4
        raw = memoryview(self._messages).cast("B")
        self._table = np.frombuffer(raw, dtype=np.uint32).reshape(count, words)
        self._namelen_at = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_namelen.offset) // 4
        self._length_at = _MMsgHdr.msg_len.offset // 4
        self._messages_address = ctypes.addressof(self._messages)
        self._names = _PeerNames()

    @classmethod
    def create(cls, sock: socket.socket) -> BatchReceiver | None:
        recvmmsg = _recvmmsg()
        return None if recvmmsg is None else cls(sock, recvmmsg)

    def receive(self) -> list[Datagram]:
        count = self._recvmmsg(
            self._socket.fileno(),
            self._messages_address,
            BATCH_DATAGRAMS,
            _MSG_WAITFORONE,
            None,
        )
        if count < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        table = self._table[:count]
        lengths = table[:, self._length_at].tolist()
        name_sizes = table[:, self._namelen_at].tolist()
        table[:, self._namelen_at] = _SOCKADDR_SIZE  # value-result: reset for the next call
        view, addresses, names = self._view, self._address_view, self._names
        received: list[Datagram] = []
        last_sender, name = b"", ""
        for index, (length, name_size) in enumerate(zip(lengths, name_sizes, strict=True)):
            if name_size == 0:  # shut down by stop(): no datagram has no sender
                if received:
                    return received
                raise StoppedError
            start = index * _SOCKADDR_SIZE
            sender = bytes(addresses[start : start + name_size])
            if sender != last_sender:  # a burst mostly comes from one router
                last_sender, name = sender, names.name(sender, _sockaddr_name)
            offset = index * MAX_DATAGRAM
            received.append((view[offset : offset + length], name))
        return received


def receiver_for(sock: socket.socket) -> Receiver:
    """The batch receiver where ``recvmmsg`` exists, else one datagram per call."""
    return BatchReceiver.create(sock) or SingleReceiver(sock)


class UdpListener:
    """Binds ``listen`` and calls ``handle(datagrams)`` for each batch of ``(datagram, peer)``.

    Each datagram is a view valid only during the call (see ``Datagram``).
    """

    def __init__(
        self,
        listen: str,
        handle: BatchHandler,
        receiver: Callable[[socket.socket], Receiver] = receiver_for,
    ) -> None:
        self._listen = listen
        self._handle = handle
        self._make_receiver = receiver
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
        self._thread = threading.Thread(
            target=self._run, args=(self._make_receiver(sock),), name="flow-listener", daemon=True
        )
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

    def _run(self, receiver: Receiver) -> None:
        assert self._socket is not None
        handle, stopping = self._handle, self._stopping
        while True:
            try:
                datagrams = receiver.receive()
            except StoppedError:
                return
            except OSError as error:
                if stopping.is_set():
                    return
                if error.errno == errno.EINTR:
                    continue
                if error.errno == errno.ENOSYS and isinstance(receiver, BatchReceiver):
                    log.info("recvmmsg is refused here: reading one datagram per call")
                    receiver = SingleReceiver(self._socket)
                    continue
                log.exception("flow socket receive failed")
                stopping.wait(_ERROR_PAUSE_SECONDS)
                continue
            # A flood still queued when stop() comes is not read to its end.
            if stopping.is_set():
                return
            handle(datagrams)
