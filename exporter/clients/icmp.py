"""ICMP and ICMPv6 echo ("ping") over the kernel's sockets, without the ping binary.

Two kinds of socket can send an echo request:

- a *datagram* ICMP socket (``SOCK_DGRAM``, ``IPPROTO_ICMP``), open to any
  process whose group is inside ``net.ipv4.ping_group_range`` (the same sysctl
  governs ICMPv6). The kernel picks the echo identifier, fills in checksums and
  hands the socket only the replies that carry its identifier;
- a *raw* socket (``SOCK_RAW``), which needs root or ``CAP_NET_RAW`` and sees
  every ICMP packet the host receives (on Linux a filter narrows that to every
  echo reply), so replies are matched here by identifier, sequence, source
  address and a random cookie in the payload.

``auto`` tries the datagram socket first: it needs no privilege and the kernel
does the demultiplexing, which matters when many probes run at once. When
neither can be opened, ``IcmpPermissionError`` says exactly what is missing.

Round-trip times come from kernel receive timestamps (``SO_TIMESTAMPNS``) where
the platform has them, so a busy event loop does not inflate them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from exporter.clients.probe_net import (
    IPAddress,
    ProbeError,
    interface_index,
    needs_zone,
    unzoned,
)

SocketKind = Literal["datagram", "raw"]
IcmpMode = Literal["auto", "datagram", "raw"]

ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129

# Linux values that Python's socket module does not export on every version.
_SO_TIMESTAMPNS = 35
_IP_MTU_DISCOVER, _IP_PMTUDISC_DO = 10, 2
_IPV6_DONTFRAG = 62
# A raw ICMP socket's filter of the types the kernel queues on it (a set bit
# blocks that type): <linux/icmp.h> ICMP_FILTER at SOL_RAW, <netinet/icmp6.h>
# ICMP6_FILTER at IPPROTO_ICMPV6.
_SOL_RAW, _ICMP_FILTER, _ICMP6_FILTER = 255, 1, 1
# Every raw socket is still handed every echo reply of the host: room for those
# of many concurrent probes while the event loop is busy elsewhere.
_RAW_RECEIVE_BUFFER_BYTES = 1 << 20

_PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
_COOKIE_BYTES = 8
# Refused for want of privilege, or (datagram) not built into this kernel.
_NOT_ALLOWED = frozenset({errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT})


class IcmpPermissionError(ProbeError):
    """Neither a datagram nor a raw ICMP socket may be opened by this process."""


def permission_message(gid: int, ping_group_range: str) -> str:
    return (
        f"ICMP needs root, CAP_NET_RAW, or net.ipv4.ping_group_range covering gid {gid};"
        f" it is currently {ping_group_range!r}"
    )


def read_ping_group_range(path: Path = _PING_GROUP_RANGE) -> str:
    """The sysctl as seen from this process's network namespace, tabs made spaces."""
    try:
        return " ".join(path.read_text(encoding="ascii").split())
    except OSError:
        return "unknown"


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) over ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request; the ICMPv6 checksum is left to the kernel, as it must be."""
    kind = ICMP_ECHO_REQUEST if version == 4 else ICMP6_ECHO_REQUEST
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if version == 6:
        return header + payload
    return struct.pack("!BBHHH", kind, 0, checksum(header + payload), ident, seq) + payload


@dataclass(frozen=True, slots=True)
class EchoReply:
    ident: int
    seq: int
    payload: bytes


def parse_echo_reply(data: bytes, version: int, kind: SocketKind) -> EchoReply | None:
    """The echo reply in ``data``, or ``None`` for any other packet.

    Only a raw IPv4 socket hands over the IP header as well.
    """
    if version == 4 and kind == "raw":
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < 8:
        return None
    icmp_type, code, _, ident, seq = struct.unpack("!BBHHH", data[:8])
    if code != 0 or icmp_type != (ICMP_ECHO_REPLY if version == 4 else ICMP6_ECHO_REPLY):
        return None
    return EchoReply(ident, seq, data[8:])


@dataclass(frozen=True, slots=True)
class PingResult:
    kind: SocketKind
    # One entry per request sent, in order: the round trip, or None if no reply
    # came within the per-packet timeout.
    rtts: tuple[float | None, ...]
    # How many requests were asked for; fewer are sent when they would not fit
    # before the deadline, each with its full timeout.
    planned: int
    # The first error sending a request, if any (such a request counts as lost).
    send_error: str | None = None

    @property
    def sent(self) -> int:
        return len(self.rtts)


class Pinger(Protocol):
    """Sends echo requests to one address and times the replies."""

    async def ping(
        self,
        address: IPAddress,
        *,
        count: int,
        interval: float,
        reply_timeout: float,
        deadline: float,
        payload_size: int,
        dont_fragment: bool,
    ) -> PingResult:
        """Send up to ``count`` requests, ``interval`` seconds apart, each given
        ``reply_timeout`` seconds to be answered, all done by ``deadline`` (``loop.time()``).

        Raises ``IcmpPermissionError`` when no ICMP socket may be opened.
        """
        ...


def open_icmp_socket(version: int, mode: IcmpMode) -> tuple[socket.socket, SocketKind]:
    """A non-blocking ICMP socket of the first kind ``mode`` allows that this process may open."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    proto = socket.IPPROTO_ICMP if version == 4 else socket.IPPROTO_ICMPV6
    kinds: tuple[SocketKind, ...] = ("datagram", "raw") if mode == "auto" else (mode,)
    for kind in kinds:
        sock_type = socket.SOCK_DGRAM if kind == "datagram" else socket.SOCK_RAW
        try:
            sock = socket.socket(family, sock_type, proto)
        except OSError as exc:
            if exc.errno in _NOT_ALLOWED:
                continue
            raise
        sock.setblocking(False)
        return sock, kind
    raise IcmpPermissionError(permission_message(os.getegid(), read_ping_group_range()))


class _Exchange:
    """The requests of one ping run and the replies matched to them."""

    def __init__(
        self, sock: socket.socket, kind: SocketKind, address: IPAddress, payload_size: int
    ) -> None:
        self.sock = sock
        self.kind = kind
        self.address = address
        # A link-local address is reached through the interface its zone names, given
        # to the kernel as the scope id (an address string's zone would be ignored).
        self.interface = interface_index(address)
        self.peer = str(unzoned(address))
        self.sockaddr: tuple[str, int] | tuple[str, int, int, int] = (
            (self.peer, 0) if address.version == 4 else (self.peer, 0, 0, self.interface)
        )
        # A datagram socket's identifier is the kernel's; a raw one's must tell
        # this run apart from every other ping on the host.
        self.ident = int.from_bytes(os.urandom(2), "big")
        cookie = os.urandom(_COOKIE_BYTES)
        self.payload = (cookie + bytes(range(256)) * (payload_size // 256 + 1))[:payload_size]
        self.cookie = self.payload[:_COOKIE_BYTES]
        self.sent_ns: list[int] = []
        self.sent_at: list[float] = []
        self.rtts: list[float | None] = []
        self.answered = 0
        self.sending_done = False
        self.all_answered = asyncio.Event()
        self.send_error: str | None = None

    def send(self, seq: int, now: float) -> None:
        packet = echo_request(self.address.version, self.ident, seq, self.payload)
        self.sent_ns.append(time.time_ns())
        self.sent_at.append(now)
        self.rtts.append(None)
        try:
            self.sock.sendto(packet, self.sockaddr)
        except OSError as exc:
            # Counted as sent and lost, as ping does: the path failed, not the probe.
            self.send_error = self.send_error or f"sending to {self.address} failed: {exc}"

    def on_readable(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        while True:
            try:
                data, ancdata, _, source = self.sock.recvmsg(65535, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # A queued ICMP error on a datagram socket, reported once and cleared;
                # the request stays unanswered. The reader fires again if more is queued.
                return
            received_ns = _kernel_timestamp(ancdata) or time.time_ns()
            self._match(data, source, received_ns, loop_now)

    def _match(self, data: bytes, source: object, received_ns: int, loop_now: float) -> None:
        reply = parse_echo_reply(data, self.address.version, self.kind)
        if reply is None or not isinstance(source, tuple):
            return
        if str(source[0]).partition("%")[0] != self.peer:
            return
        if self.interface and needs_zone(self.address) and source[3:4] != (self.interface,):
            # The same link-local address, on another link. The kernel gives a
            # reply's scope id for a link-local source only, so no other is held to it.
            return
        if self.kind == "raw" and reply.ident != self.ident:
            return
        seq = reply.seq
        if seq >= len(self.rtts) or self.rtts[seq] is not None:
            return  # not ours, or a duplicate
        if not reply.payload.startswith(self.cookie):
            return
        rtt = (received_ns - self.sent_ns[seq]) / 1e9
        if rtt < 0:  # the wall clock stepped back: fall back to the loop's clock
            rtt = loop_now - self.sent_at[seq]
        self.rtts[seq] = rtt
        self.answered += 1
        if self.sending_done and self.answered == len(self.rtts):
            self.all_answered.set()


def _kernel_timestamp(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("@ll", data[:16])
            return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


def _configure(sock: socket.socket, version: int, dont_fragment: bool) -> None:
    if sys.platform != "linux":
        if dont_fragment:
            raise ProbeError("dont_fragment is supported on Linux only")
        return
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    if dont_fragment:
        if version == 4:
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_DONTFRAG, 1)


def _queue_only_echo_replies(sock: socket.socket, version: int) -> None:
    """Have the kernel queue nothing but echo replies on a raw socket.

    Unfiltered, each probe's raw socket gets a copy of every ICMP packet the host
    receives (a loopback probe's own requests too): with many probes at once and
    a busy event loop, its buffer filled with other packets and the kernel
    dropped its own replies, reported as loss.
    """
    if sys.platform != "linux":
        return
    # Both only spare the buffer: replies are matched here whatever arrives, so a
    # kernel or sandbox refusing either option costs room, never a probe.
    with contextlib.suppress(OSError):
        if version == 4:
            blocked = struct.pack("=I", 0xFFFFFFFF & ~(1 << ICMP_ECHO_REPLY))
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, blocked)
        else:
            words = [0xFFFFFFFF] * 8
            words[ICMP6_ECHO_REPLY >> 5] &= ~(1 << (ICMP6_ECHO_REPLY & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))
    with contextlib.suppress(OSError):
        # Capped by net.core.rmem_max; the default is still better than nothing.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RAW_RECEIVE_BUFFER_BYTES)


class SocketPinger:
    """Pings through a socket of its own per run; ``mode`` forces one kind of socket."""

    def __init__(self, mode: IcmpMode = "auto") -> None:
        self.mode: IcmpMode = mode

    async def ping(
        self,
        address: IPAddress,
        *,
        count: int,
        interval: float,
        reply_timeout: float,
        deadline: float,
        payload_size: int,
        dont_fragment: bool,
    ) -> PingResult:
        loop = asyncio.get_running_loop()
        sock, kind = open_icmp_socket(address.version, self.mode)
        with sock:
            _configure(sock, address.version, dont_fragment)
            if kind == "raw":
                _queue_only_echo_replies(sock, address.version)
            exchange = _Exchange(sock, kind, address, payload_size)
            start = loop.time()
            # Every request gets the same time to be answered, so the loss ratio
            # is fair; a request that would not get it before the deadline is not
            # sent. The first is always sent.
            wait = min(reply_timeout, max(deadline - start, 0.0))
            fitting = sum(1 for i in range(count) if start + i * interval + wait <= deadline)
            loop.add_reader(sock.fileno(), exchange.on_readable)
            try:
                for seq in range(max(fitting, 1)):
                    delay = start + seq * interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    exchange.send(seq, loop.time())
                exchange.sending_done = True
                if exchange.answered < len(exchange.rtts):
                    remaining = exchange.sent_at[-1] + wait - loop.time()
                    try:
                        async with asyncio.timeout(max(remaining, 0.0)):
                            await exchange.all_answered.wait()
                    except TimeoutError:
                        pass
                # Replies still waiting in the socket may have arrived in time.
                exchange.on_readable()
            finally:
                loop.remove_reader(sock.fileno())
        rtts = tuple(r if r is not None and r <= wait else None for r in exchange.rtts)
        return PingResult(kind, rtts, count, exchange.send_error)
