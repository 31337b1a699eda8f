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
allocated per datagram): benchmarks/flow_ingest.py. A batch is a
``DatagramBatch``: the datagrams where they landed, so a handler may read a
whole batch in a few array steps.

After a batch that emptied the queue the thread waits a little before the next
receive (``Pacer``, at most 50 ms), so that what arrives meanwhile is read in
one call and handled in one step instead of one wake-up per datagram or two: a
router's records are counted over minutes, so milliseconds late cost nothing,
while a wake-up costs as much as handling dozens of datagrams. The wait follows
the queue as the kernel reports it: it shrinks when the queue was more than a
quarter full or the kernel dropped anything, and it stays short enough for a
burst to find room even in a small buffer. The kernel's drops are reported
(``UdpListener.socket_drops``).

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
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Final, Protocol, TypeVar, overload

import numpy as np
import numpy.typing as npt

from exporter.common.listen import format_address
from exporter.common.web import socket_error_reason
from exporter.errors import ListenError

log = logging.getLogger(__name__)

# Large enough for any UDP datagram (NetFlow/IPFIX messages fit in 65535 bytes).
MAX_DATAGRAM: Final = 65535
# Datagrams read by one recvmmsg call: what a few routers send during one wait of
# the ``Pacer``, handled in one step. The buffer is BATCH_DATAGRAMS * MAX_DATAGRAM
# bytes (16 MiB) of address space, resident only where datagrams land (a page or
# so each).
BATCH_DATAGRAMS: Final = 256
# Bursts from many routers at once: ask the kernel for a deep queue (it may give less).
RECEIVE_BUFFER_BYTES: Final = 8 * 1024 * 1024
# The longest wait between the receives of a busy socket (see ``Pacer``): flows are
# ranked over minutes, so 50 ms late is nothing, and a wait this long lets a
# moderately busy socket gather a full batch.
MAX_PAUSE_SECONDS: Final = 0.05
# The first wait after an idle spell, and the shortest worth taking.
_MIN_PAUSE_SECONDS: Final = 0.0005
# A receive that blocked this long means the exporters had gone quiet.
_IDLE_SECONDS: Final = 0.1
# The burst a wait must leave room for: 20,000 datagrams of 1.4 kB a second, as
# the queue counts them (payload and the kernel's bookkeeping, ~2.4 kB each).
_BURST_BYTES_PER_SECOND: Final = 48_000_000
# Linux's getsockopt(SOL_SOCKET, SO_MEMINFO): the socket's memory counters, of which
# the first (SK_MEMINFO_RMEM_ALLOC) is the bytes queued and the ninth
# (SK_MEMINFO_DROPS) the datagrams dropped, mostly by a full queue.
_SO_MEMINFO: Final = 55
_MEMINFO_QUEUED: Final = 0
_MEMINFO_DROPS: Final = 8
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

    def receive(self) -> Sequence[Datagram]: ...


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

    slots: Final = 1

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


def _sender_numbers(names: Sequence[str]) -> npt.NDArray[np.int64]:
    """One number per datagram, equal for equal senders (what ``DatagramBatch.senders`` holds)."""
    numbers: dict[str, int] = {}
    return np.array([numbers.setdefault(name, len(numbers)) for name in names], dtype=np.int64)


class DatagramBatch(Sequence[Datagram]):
    """Datagrams received together, kept where they landed: row ``i`` of ``slots`` holds
    datagram ``i`` in its first ``lengths[i]`` bytes.

    A sequence of ``(datagram, sender)`` like any batch, each made only when
    asked for; a handler that reads many datagrams at once (the flow ingest's
    runs of like datagrams) reads ``slots``, ``lengths`` and ``senders``
    instead, with no Python step per datagram. Valid, like every ``Datagram``,
    until the handler returns.
    """

    __slots__ = ("_names", "_view", "lengths", "senders", "slots")

    def __init__(
        self,
        slots: npt.NDArray[np.uint8],
        lengths: npt.NDArray[np.int64],
        names: Sequence[str],
        senders: npt.NDArray[np.int64],
    ) -> None:
        self.slots = slots  # (datagrams, stride) bytes; past each length, stale bytes
        self.lengths = lengths
        self.senders = senders  # equal numbers: the same sender
        self._names = names
        self._view = slots.reshape(-1).data

    @classmethod
    def pack(cls, datagrams: Sequence[tuple[bytes | memoryview, str]]) -> DatagramBatch:
        """A batch holding copies of ``datagrams`` (tests and the in-process benchmark)."""
        stride = max((len(datagram) for datagram, _ in datagrams), default=0) or 1
        slots = np.zeros((len(datagrams), stride), dtype=np.uint8)
        for index, (datagram, _) in enumerate(datagrams):
            slots[index, : len(datagram)] = np.frombuffer(datagram, dtype=np.uint8)
        names = [sender for _, sender in datagrams]
        lengths = np.array([len(datagram) for datagram, _ in datagrams], dtype=np.int64)
        return cls(slots, lengths, names, _sender_numbers(names))

    def __len__(self) -> int:
        return len(self._names)

    @overload
    def __getitem__(self, index: int) -> Datagram: ...

    @overload
    def __getitem__(self, index: slice) -> list[Datagram]: ...

    def __getitem__(self, index: int | slice) -> Datagram | list[Datagram]:
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("datagram index out of range")
        start = index * self.slots.shape[1]
        return self._view[start : start + int(self.lengths[index])], self._names[index]

    def __iter__(self) -> Iterator[Datagram]:
        view, stride = self._view, self.slots.shape[1]
        for index, (length, name) in enumerate(
            zip(self.lengths.tolist(), self._names, strict=True)
        ):
            start = index * stride
            yield view[start : start + length], name


class BatchReceiver:
    """``recvmmsg`` into ``BATCH_DATAGRAMS`` slots of one buffer; ``create`` gives None
    where the call does not exist."""

    slots: Final = BATCH_DATAGRAMS

    def __init__(self, sock: socket.socket, recvmmsg: Callable[..., int]) -> None:
        self._socket = sock
        self._recvmmsg = recvmmsg
        count = BATCH_DATAGRAMS
        # Anonymous memory rather than a bytearray (which is zero-filled at once): only
        # the pages datagrams are written to become resident, not 16 MiB up front (all
        # of it only if every slot once held a datagram near 64 KiB).
        self._buffer = mmap.mmap(-1, count * MAX_DATAGRAM)
        self._slots = np.frombuffer(self._buffer, dtype=np.uint8).reshape(count, MAX_DATAGRAM)
        self._addresses = bytearray(count * _SOCKADDR_SIZE)
        self._address_rows = np.frombuffer(self._addresses, dtype=np.uint8).reshape(
            count, _SOCKADDR_SIZE
        )
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

    def receive(self) -> DatagramBatch:
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
        if count == 0:  # not on a blocking socket, but nothing to name
            return DatagramBatch.pack([])
        table = self._table[:count]
        name_sizes = table[:, self._namelen_at].astype(np.int64)
        lengths = table[:, self._length_at].astype(np.int64)
        table[:, self._namelen_at] = _SOCKADDR_SIZE  # value-result: reset for the next call
        # A message with no sender is the shutdown by stop(): no datagram has none.
        stopped = np.flatnonzero(name_sizes == 0)
        if stopped.size:
            count = int(stopped[0])
            if not count:
                raise StoppedError
            name_sizes, lengths = name_sizes[:count], lengths[:count]
        size = int(name_sizes[0])
        rows = self._address_rows[:count, :size]
        if bool((name_sizes == size).all()) and bool((rows == rows[0]).all()):
            # One router's burst, the common case: one name, nothing per datagram.
            name = self._names.name(bytes(rows[0]), _sockaddr_name)
            return DatagramBatch(
                self._slots[:count], lengths, [name] * count, np.zeros(count, dtype=np.int64)
            )
        return self._mixed(count, lengths, name_sizes.tolist())

    def _mixed(self, count: int, lengths: npt.NDArray[np.int64], sizes: list[int]) -> DatagramBatch:
        """The batch of several senders: each named (once per run of one sender)."""
        addresses, names = memoryview(self._addresses), self._names
        labels: list[str] = []
        last_sender, name = b"", ""
        for index, size in enumerate(sizes):
            start = index * _SOCKADDR_SIZE
            sender = bytes(addresses[start : start + size])
            if sender != last_sender:  # a burst mostly comes from one router
                last_sender, name = sender, names.name(sender, _sockaddr_name)
            labels.append(name)
        return DatagramBatch(self._slots[:count], lengths, labels, _sender_numbers(labels))


class Pacer:
    """How long the receiving thread waits after emptying the queue, from how full the
    kernel says the queue got.

    A drain is the receives from one wait to the next; it ends with a batch
    smaller than the receiver's ``slots`` (the queue is empty). As a drain
    starts, right after a wait let the queue grow, the queue's bytes are read
    from the kernel (``meminfo``: bytes queued and drops so far). Under a
    sixteenth of the receive buffer, the next wait doubles, up to
    ``max_pause``; over a quarter, it shrinks in proportion, down to none; any
    new drop, no wait after that drain, then waits growing again from the
    shortest while the queue stays shallow. ``max_pause`` is
    ``MAX_PAUSE_SECONDS`` or less: the time a burst of
    ``_BURST_BYTES_PER_SECOND`` takes to fill half the buffer, so a burst that
    starts during a wait finds room even in a buffer held to Linux's default
    cap. After an idle spell the wait starts again from the shortest. A
    receiver of one datagram per call is not paced (each call would look like a
    drain), nor is one whose queue the kernel does not describe.
    """

    def __init__(
        self, capacity: int, slots: int, meminfo: Callable[[], tuple[int, int] | None]
    ) -> None:
        self._capacity = max(capacity, 1)
        self._slots = slots
        self._meminfo = meminfo
        self.max_pause = (
            min(MAX_PAUSE_SECONDS, self._capacity / 2 / _BURST_BYTES_PER_SECOND)
            if slots > 1
            else 0.0
        )
        self.pause = min(_MIN_PAUSE_SECONDS, self.max_pause)
        self._drops: int | None = None
        self._drained = True

    def idle(self, waited: float) -> None:
        """The receive that ended the last wait took ``waited`` seconds."""
        if waited >= _IDLE_SECONDS:
            self.pause = min(_MIN_PAUSE_SECONDS, self.max_pause)

    def before_receive(self) -> None:
        """Read the queue's fill if a drain starts, and set the next wait from it."""
        if not self._drained or not self.max_pause:
            return
        self._drained = False
        info = self._meminfo()
        if info is None:
            self.pause = self.max_pause = 0.0
            return
        queued, drops = info
        fill = queued / self._capacity
        if self._drops is not None and drops > self._drops:
            self.pause = 0.0
        elif fill > 0.25:
            self.pause *= 0.25 / fill / 2
        elif fill < 1 / 16:
            self.pause = min(max(self.pause, _MIN_PAUSE_SECONDS) * 2, self.max_pause)
        self._drops = drops

    def after(self, count: int) -> float:
        """The wait after a batch of ``count`` datagrams: none while more may be queued."""
        if count >= self._slots:
            return 0.0
        self._drained = True
        return self.pause if self.pause >= _MIN_PAUSE_SECONDS else 0.0


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
        self._final_drops = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the real port when ``listen`` asked for port 0."""
        if self._socket is None:
            raise RuntimeError("the flow listener is not started")
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and start reading; ``ListenError`` if the address cannot be bound."""
        host, port = parse_listen(self._listen)
        try:
            sock = self._bound(host, port)
        except OSError as exc:
            # A busy port is a mistake in the config, told in one line, not a traceback.
            where = format_address(host, port)
            reason = socket_error_reason(exc)
            raise ListenError(f"cannot listen on {where} (flows, UDP): {reason}") from None
        self._socket = sock
        self._thread = threading.Thread(
            target=self._run, args=(self._make_receiver(sock),), name="flow-listener", daemon=True
        )
        self._thread.start()
        log.info("flow listener on %s:%d", *self.address[:2])

    @staticmethod
    def _bound(host: str, port: int) -> socket.socket:
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
        return sock

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
            info = self._meminfo()
            self._final_drops = 0 if info is None else info[1]
            self._socket.close()
        self._socket = None

    def socket_drops(self) -> int | None:
        """Datagrams the kernel dropped before the thread read them (mostly on a full
        queue): 0 before ``start``, the last count after ``stop``, None where the kernel
        does not tell (off Linux)."""
        sock = self._socket
        if sock is None and sys.platform.startswith("linux"):
            return self._final_drops
        info = self._meminfo()
        if info is None and sock is not None and sock.fileno() == -1:
            # ``stop`` (in another thread: a scrape reads a closing collector) closed
            # the socket meanwhile, having kept the last count first.
            return self._final_drops
        return None if info is None else info[1]

    def _meminfo(self) -> tuple[int, int] | None:
        """(bytes queued, datagrams dropped) from the kernel; None if it does not say."""
        sock = self._socket
        if sock is None or not sys.platform.startswith("linux"):
            return None
        size = 4 * (_MEMINFO_DROPS + 1)
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, size)
        except OSError:
            return None
        if len(raw) < size:
            return None
        words = memoryview(raw).cast("I")
        return int(words[_MEMINFO_QUEUED]), int(words[_MEMINFO_DROPS])

    def _run(self, receiver: Receiver) -> None:
        assert self._socket is not None
        handle, stopping = self._handle, self._stopping
        capacity = self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        pacer = Pacer(capacity, getattr(receiver, "slots", 1), self._meminfo)
        clock = time.monotonic
        while True:
            pacer.before_receive()
            started = clock()
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
                    pacer = Pacer(capacity, receiver.slots, self._meminfo)
                    continue
                log.exception("flow socket receive failed")
                stopping.wait(_ERROR_PAUSE_SECONDS)
                continue
            # A flood still queued when stop() comes is not read to its end.
            if stopping.is_set():
                return
            pacer.idle(clock() - started)
            handle(datagrams)
            pause = pacer.after(len(datagrams))
            if pause and stopping.wait(pause):
                return
