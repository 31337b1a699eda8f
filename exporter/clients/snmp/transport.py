"""One UDP socket to one agent: resolving, request ids, retries, matching replies.

The transport knows nothing of SNMP versions: the session gives it a way to
build each try's datagram for a request id, and a way to tell which request an
incoming datagram answers (by request id, or msgID in SNMPv3) and to decode it.
Concurrent requests share the socket; each waits for its own answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.clients.dns import shared_resolver
from exporter.clients.probe_net import (
    IPAddress,
    ProbeError,
    interface_index,
    parse_ip,
    reachable_answers,
)
from exporter.clients.snmp import ber
from exporter.clients.snmp.errors import SnmpError, SnmpProtocolError, SnmpTimeout
from exporter.clients.snmp.pdu import Reply

log = logging.getLogger(__name__)

# Request ids and msgIDs are 31-bit positive integers (RFC 3412: 0..2^31-1).
ID_LIMIT = 2**31 - 1

# Which pending request a datagram answers, and how to decode the rest of it
# (``None`` drops it); raises ValueError or IndexError for what is not ours.
Matcher = Callable[[bytes], tuple[int, Callable[[], Reply | None]]]


@dataclass
class SessionStats:
    """Counters since the session was created.

    ``pdus_sent`` counts every datagram sent (first tries, retries and v3 engine
    discovery); ``retries`` the resends after an unanswered one; ``timeouts``
    the tries that went unanswered, whether or not a retry then succeeded;
    ``replies`` the answers received, reports included, which is what tells a
    device that answers (even "wrong password") from one that is unreachable;
    ``undecodable`` the datagrams from the agent's address that could not be
    matched to a request (not SNMP, cut short, another version or community),
    and ``undecodable_reason`` what was wrong with the last one. They are not
    replies: anyone who can forge the agent's source address can send one, so
    they never make an agent count as answering; they only explain a timeout.
    An answer that carries a waiting request's id (and the session's version and
    community) but does not decode past it is a reply that fails its request.
    """

    pdus_sent: int = 0
    retries: int = 0
    timeouts: int = 0
    replies: int = 0
    undecodable: int = 0
    undecodable_reason: str = ""


def undecodable_note(stats: SessionStats) -> str:
    """What a timeout's error adds when junk came from the agent's address."""
    return (
        "; datagrams from its address were no SNMP reply to this session"
        f" ({stats.undecodable_reason})"
    )


@dataclass(slots=True)
class Repetitions:
    """Max-repetitions of one walk, lowered in place by the requests that find it too big."""

    value: int


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes], None]) -> None:
        self._on_datagram = on_datagram
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) on a connected socket: the request that
        # caused it times out as if unanswered, as with net-snmp.
        log.debug("SNMP socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _address_of(info: tuple[Any, ...]) -> IPAddress:
    """The address of one ``getaddrinfo`` answer, its scope id as the zone."""
    family, sockaddr = info[0], info[4]
    if family == socket.AF_INET6 and sockaddr[3]:
        return ipaddress.IPv6Address(f"{sockaddr[0]}%{sockaddr[3]}")
    return ipaddress.ip_address(sockaddr[0])


class Transport:
    """The socket (opened, and the host resolved, on first use) and the requests waiting on it.

    ``timeout`` is per try; a request is tried ``retries + 1`` times.
    ``timeout_hint`` adds what the session knows about why an agent stays silent.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        where: str,
        timeout: float,
        retries: int,
        stats: SessionStats,
        match: Matcher,
        timeout_hint: Callable[[], str],
    ) -> None:
        self.host = host
        self.port = port
        self.where = where
        self.timeout = timeout
        self.retries = retries
        self.stats = stats
        self._match = match
        self._timeout_hint = timeout_hint
        self._transport: asyncio.DatagramTransport | None = None
        self._endpoint: _Endpoint | None = None
        self._closed = False
        self._open_lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._next_id = secrets.randbelow(ID_LIMIT - 1) + 1

    async def close(self) -> None:
        """Close the socket; waiting requests fail with ``SnmpError``."""
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SnmpError(f"SNMP session to {self.where} was closed"))
        self._pending.clear()
        transport, endpoint = self._transport, self._endpoint
        self._transport = self._endpoint = None
        if transport is not None and endpoint is not None:
            transport.close()
            await endpoint.closed

    async def send(
        self,
        build: Callable[[int], bytes],
        repetitions: Repetitions | None,
        deadline: float | None,
    ) -> Reply:
        """Send ``build(request_id)`` until answered or out of tries.

        Each try has a new request id, but a late answer to an earlier try is
        accepted too. A datagram that matches no request (see ``_on_datagram``)
        ends nothing: the real answer may follow it. An unanswered GetBulk is
        resent with half the repetitions: a reply too big for the path (or for
        the agent to build in time) is the usual reason a bulk request goes
        unanswered while small ones do not.
        """
        transport = self._transport
        if transport is None:
            raise SnmpError(f"SNMP session to {self.where} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        ids: list[int] = []
        undecodable = self.stats.undecodable
        try:
            for attempt in range(self.retries + 1):
                now = loop.time()
                if deadline is not None and now >= deadline:
                    raise SnmpTimeout(
                        self._timeout_message(attempt, undecodable, deadline_passed=True)
                    )
                wait_until = now + self.timeout
                if deadline is not None:
                    wait_until = min(wait_until, deadline)
                request_id = self.new_id()
                ids.append(request_id)
                self._pending[request_id] = future
                transport.sendto(build(request_id))
                self.stats.pdus_sent += 1
                if attempt:
                    self.stats.retries += 1
                try:
                    async with asyncio.timeout_at(wait_until):
                        reply = await asyncio.shield(future)
                except TimeoutError:
                    if not future.done():
                        self.stats.timeouts += 1
                        if repetitions is not None and repetitions.value > 1:
                            repetitions.value //= 2
                        continue
                    # Answered in the loop turn the try timed out in: the agent was in
                    # time, this process was late (a busy event loop reads the reply and
                    # fires the timer together). Resending, and halving max-repetitions,
                    # would only make an overloaded exporter slower still.
                    reply = future.result()
                self.stats.replies += 1
                if reply.request_id not in ids and reply.tag != ber.REPORT:
                    raise SnmpProtocolError(
                        f"{self.where} answered request {ids[-1]} with request-id"
                        f" {reply.request_id}"
                    )
                return reply
            passed = deadline is not None and loop.time() >= deadline
            raise SnmpTimeout(
                self._timeout_message(self.retries + 1, undecodable, deadline_passed=passed)
            )
        finally:
            for request_id in ids:
                self._pending.pop(request_id, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: asyncio must not log it as forgotten

    def _timeout_message(self, tries: int, undecodable: int, *, deadline_passed: bool) -> str:
        """Why a request went unanswered; ``undecodable`` is the count when it began."""
        if deadline_passed:
            message = f"deadline passed waiting for {self.where}"
        else:
            message = f"no response from {self.where} after {tries} tries of {self.timeout:g}s"
        if self.stats.undecodable > undecodable:
            message += undecodable_note(self.stats)
        return message + self._timeout_hint()

    def new_id(self) -> int:
        request_id = self._next_id
        self._next_id = request_id + 1 if request_id < ID_LIMIT else 1
        return request_id

    async def open(self, deadline: float | None) -> None:
        if self._transport is not None:
            return
        async with self._open_lock:
            if self._closed:
                raise SnmpError(f"SNMP session to {self.where} is closed")
            if self._transport is not None:
                return
            loop = asyncio.get_running_loop()
            budget = self.timeout * (self.retries + 1)
            until = (
                loop.time() + budget if deadline is None else min(deadline, loop.time() + budget)
            )
            try:
                # An unknown zone would otherwise be a lookup failing with no word of why.
                address = parse_ip(self.host)
                if address is not None:
                    interface_index(address)
            except ProbeError as exc:
                raise SnmpError(str(exc)) from None  # it names the host already
            try:
                async with asyncio.timeout_at(until):
                    infos = await shared_resolver().getaddrinfo(
                        self.host, self.port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP
                    )
            except TimeoutError:
                raise SnmpTimeout(f"resolving SNMP host {self.host!r} timed out") from None
            except (socket.gaierror, UnicodeError) as exc:
                reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
                raise SnmpError(f"cannot resolve SNMP host {self.host!r}: {reason}") from None
            if not infos:
                raise SnmpError(f"cannot resolve SNMP host {self.host!r}: no addresses")
            # A name's link-local address comes without a zone, and cannot be sent
            # to: left out, and said to need one if it is all the name has.
            try:
                infos = reachable_answers(infos, _address_of)
            except ProbeError as exc:
                raise SnmpError(f"SNMP host {self.host!r} resolved to {exc}") from None
            # Prefer IPv4, as net-snmp does: dual-stack devices often only listen there.
            infos.sort(key=lambda info: info[0] != socket.AF_INET)
            family, _, _, _, address = infos[0]
            # A socket of our own, connected before asyncio gets it: asyncio's
            # remote_addr takes only 2-tuples, and IPv6 addresses are 4-tuples.
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect(address)
                transport, endpoint = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(self._on_datagram), sock=sock
                )
            except OSError as exc:
                sock.close()
                raise SnmpError(f"cannot open a UDP socket to {self.where}: {exc}") from None
            if self._closed:  # close() ran while we were resolving
                transport.close()
                await endpoint.closed
                raise SnmpError(f"SNMP session to {self.where} is closed")
            self._transport, self._endpoint = transport, endpoint

    def _on_datagram(self, data: bytes) -> None:
        try:
            key, decode = self._match(data)
        except (ValueError, IndexError) as exc:
            # The socket is connected, so this bears the agent's address, which anyone
            # can forge: it answers no request and ends none (the real answer may
            # follow, as gosnmp waits for it too). Counted, and its reason kept, to
            # explain the timeout if no answer comes.
            self.stats.undecodable += 1
            self.stats.undecodable_reason = str(exc)
            log.debug("%s: an undecodable datagram: %s", self.where, exc)
            return
        future = self._pending.get(key)
        if future is None or future.done():
            log.debug("%s: dropped a stray or late datagram (id %d)", self.where, key)
            return
        try:
            reply = decode()
        except SnmpError as exc:
            # Its version, community (or msgID) and request id are a waiting request's:
            # as hard to forge as a good answer, so the agent answered, if badly.
            self.stats.replies += 1
            future.set_exception(exc)
            return
        except (ValueError, IndexError) as exc:
            self.stats.replies += 1
            future.set_exception(
                SnmpProtocolError(f"{self.where} sent a malformed response: {exc}")
            )
            return
        if reply is not None:
            future.set_result(reply)
