"""The public session: one agent, one set of credentials, one UDP socket.

``SnmpSession`` puts the pieces together: the transport sends and matches
datagrams, USM secures SNMPv3 messages, the walk reads tables, and this module
builds the requests (GET, GetNext, GetBulk) and handles what an agent answers
instead of data (tooBig, SNMPv1's noSuchName, v3 reports). ``SnmpClient`` is
the protocol collectors depend on, so tests can replay an agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from exporter.clients.snmp import ber
from exporter.clients.snmp.credentials import Credentials
from exporter.clients.snmp.errors import SnmpProtocolError, SnmpTooBig
from exporter.clients.snmp.pdu import (
    NO_SUCH_NAME,
    TOO_BIG,
    Reply,
    check_status,
    convert,
    encode_root,
    oid_text,
)
from exporter.clients.snmp.transport import Repetitions, SessionStats, Transport
from exporter.clients.snmp.usm import KeyCache, Usm, discovery_message
from exporter.clients.snmp.values import KINDS, Oid, ValueKind, VarBind, format_oid
from exporter.clients.snmp.walk import walk_columns

log = logging.getLogger(__name__)

# Requests ask for at most this many repetitions. No agent answers more rows than
# fit in one datagram (64 KiB, a few thousand varbinds at best), and net-snmp
# caps a response at 100 varbinds unless configured otherwise.
MAX_REPETITIONS = 1000

_PDU_NAMES = {
    ber.GET_REQUEST: "GetRequest",
    ber.GET_NEXT_REQUEST: "GetNextRequest",
    0xA3: "SetRequest",
    0xA4: "Trap",
    ber.GET_BULK_REQUEST: "GetBulkRequest",
    0xA6: "InformRequest",
    0xA7: "SNMPv2-Trap",
}


class SnmpClient(Protocol):
    """What collectors need from an agent connection; ``SnmpSession`` is the real one."""

    @property
    def stats(self) -> SessionStats: ...

    @property
    def max_repetitions_used(self) -> int: ...

    async def get(self, oids: Sequence[Oid], *, deadline: float | None = None) -> list[VarBind]:
        """The values of ``oids``, in order; missing ones come back as NO_SUCH_*."""
        ...

    async def bulk_walk(
        self,
        roots: Sequence[Oid],
        *,
        max_repetitions: int,
        max_oids: int = 1_000_000,
        deadline: float | None = None,
    ) -> dict[Oid, list[VarBind]]:
        """Every OID under each root, in order, keyed by root."""
        ...

    async def close(self) -> None:
        """Let go of the socket; the client is not used after this."""
        ...


class SnmpSession:
    """One agent, one set of credentials, one UDP socket.

    The socket is opened (and the host resolved) on first use; ``close()`` it,
    or use the session as ``async with``. ``timeout`` is per try; a request is
    tried ``retries + 1`` times. ``deadline`` arguments are absolute
    ``loop.time()`` values capping a whole call.

    ``max_repetitions_used`` is the max-repetitions the last ``bulk_walk`` on
    this session ended with (0 before any): set when a walk returns or raises,
    so the caller reads it right after awaiting its walk.
    """

    def __init__(
        self,
        host: str,
        port: int,
        credentials: Credentials,
        *,
        timeout: float = 1.0,
        retries: int = 2,
        key_cache: KeyCache | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if retries < 0:
            raise ValueError(f"retries cannot be negative, not {retries}")
        self.host = host.removeprefix("[").removesuffix("]")
        self.port = port
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.stats = SessionStats()
        self.max_repetitions_used = 0
        self._where = f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"
        self._community = credentials.community.encode()
        self._usm: Usm | None = None
        if credentials.version == 3:
            keys = key_cache if key_cache is not None else KeyCache()
            self._usm = Usm(credentials, keys, self._where)
        self._engine_lock = asyncio.Lock()
        self._transport = Transport(
            self.host,
            port,
            where=self._where,
            timeout=timeout,
            retries=retries,
            stats=self.stats,
            match=self._match,
            timeout_hint=self._timeout_hint,
        )

    def __repr__(self) -> str:
        return f"SnmpSession({self._where}, {self.credentials!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the socket; waiting requests fail with ``SnmpError``."""
        await self._transport.close()

    # Public requests.

    async def get(self, oids: Sequence[Oid], *, deadline: float | None = None) -> list[VarBind]:
        """GET ``oids``; the result has one VarBind per OID, in the same order.

        A missing object comes back with kind NO_SUCH_OBJECT/NO_SUCH_INSTANCE
        (SNMPv1's noSuchName is translated to NO_SUCH_OBJECT). A request the
        agent finds tooBig is split in halves.
        """
        if not oids:
            return []
        encoded = [encode_root(oid) for oid in oids]
        return await self._get(list(oids), encoded, deadline)

    async def bulk_walk(
        self,
        roots: Sequence[Oid],
        *,
        max_repetitions: int,
        max_oids: int = 1_000_000,
        deadline: float | None = None,
    ) -> dict[Oid, list[VarBind]]:
        """Every OID under each root, in OID order, keyed by root (all roots are keys).

        The roots are walked in lock-step (see ``walk``). ``max_repetitions`` is
        the starting value (above ``MAX_REPETITIONS`` it is lowered to that);
        tooBig or an unanswered try halves it, and ``self.max_repetitions_used``
        holds the final value.

        Raises ``SnmpProtocolError`` if the agent returns an OID that is not
        after the previous one of that root, or more than ``max_oids`` OIDs
        in all; ``SnmpTimeout`` when ``deadline`` passes.
        """
        if max_repetitions < 1:
            raise ValueError(f"max_repetitions must be at least 1, not {max_repetitions}")
        repetitions = Repetitions(min(max_repetitions, MAX_REPETITIONS))
        getnext = self.credentials.version == 1

        async def send(oids: list[bytes]) -> Reply:
            if getnext:
                return await self._request(ber.GET_NEXT_REQUEST, oids, deadline)
            return await self._bulk_request(oids, repetitions, deadline)

        try:
            return await walk_columns(
                roots, send, getnext=getnext, max_oids=max_oids, where=self._where
            )
        finally:
            self.max_repetitions_used = repetitions.value

    async def _get(
        self, oids: list[Oid], encoded: list[bytes], deadline: float | None
    ) -> list[VarBind]:
        found: dict[int, VarBind] = {}  # by position in ``oids``
        asked = list(range(len(oids)))
        while asked:
            request = [encoded[i] for i in asked]
            reply = await self._request(ber.GET_REQUEST, request, deadline)
            if reply.error_status == TOO_BIG:
                if len(asked) == 1:
                    raise SnmpTooBig(f"{self._where} answered tooBig for a single OID")
                half = len(asked) // 2
                first = await self._get([oids[i] for i in asked[:half]], request[:half], deadline)
                second = await self._get([oids[i] for i in asked[half:]], request[half:], deadline)
                for i, vb in zip(asked, first + second, strict=True):
                    found[i] = vb
                break
            if reply.error_status == NO_SUCH_NAME and 1 <= reply.error_index <= len(asked):
                i = asked.pop(reply.error_index - 1)
                found[i] = VarBind(oids[i], ValueKind.NO_SUCH_OBJECT, None)
                continue
            check_status(reply, request, self._where)
            if len(reply.varbinds) != len(request):
                raise SnmpProtocolError(
                    f"{self._where} answered {len(reply.varbinds)} varbinds"
                    f" to a GET of {len(request)}"
                )
            for i, (oid, tag, raw) in zip(asked, reply.varbinds, strict=True):
                if oid != encoded[i]:
                    raise SnmpProtocolError(
                        f"{self._where} answered a GET of {format_oid(oids[i])}"
                        f" with {oid_text(oid)}"
                    )
                kind = KINDS.get(tag)
                if kind is None:
                    raise SnmpProtocolError(
                        f"{self._where} returned unknown type 0x{tag:02x} for {format_oid(oids[i])}"
                    )
                found[i] = VarBind(oids[i], kind, convert(tag, raw, oids[i], self._where))
            break
        return [found[i] for i in range(len(oids))]

    # Requests and retries.

    async def _bulk_request(
        self, oids: list[bytes], repetitions: Repetitions, deadline: float | None
    ) -> Reply:
        """A GetBulk, halving max-repetitions on tooBig (and, in the transport, on timeouts)."""
        while True:
            reply = await self._exchange(ber.GET_BULK_REQUEST, oids, 0, repetitions, deadline)
            if reply.error_status != TOO_BIG or repetitions.value == 1:
                return reply
            repetitions.value = max(1, repetitions.value // 2)
            log.debug("%s: tooBig, max-repetitions now %d", self._where, repetitions.value)

    async def _request(self, tag: int, oids: list[bytes], deadline: float | None) -> Reply:
        return await self._exchange(tag, oids, 0, None, deadline)

    async def _exchange(
        self,
        tag: int,
        oids: list[bytes],
        non_repeaters: int,
        repetitions: Repetitions | None,
        deadline: float | None,
    ) -> Reply:
        """Send one request (with retries) and handle SNMPv3 reports.

        ``repetitions`` is given for GetBulk only; unanswered tries halve it.
        """
        await self._transport.open(deadline)

        def pdu(request_id: int) -> bytes:
            reps = 0 if repetitions is None else repetitions.value
            return ber.encode_request_pdu(tag, request_id, non_repeaters, reps, oids)

        usm = self._usm
        if usm is None:
            version, community = self.credentials.version - 1, self._community

            def community_message(request_id: int) -> bytes:
                return ber.encode_community_message(version, community, pdu(request_id))

            return await self._transport.send(community_message, repetitions, deadline)

        def v3_message(request_id: int) -> bytes:
            return usm.message(request_id, pdu(request_id))

        await self._discover(usm, deadline)
        resynced = rediscovered = False
        while True:
            reply = await self._transport.send(v3_message, repetitions, deadline)
            if reply.tag != ber.REPORT:
                return reply
            report = usm.report_name(reply)
            if report == "usmStatsNotInTimeWindows" and reply.authenticated and not resynced:
                # The agent rebooted or its clock moved: adopt its boots/time, once.
                resynced = True
                usm.set_engine(reply.engine_id, reply.boots, reply.engine_time)
                continue
            if report == "usmStatsUnknownEngineIDs" and not rediscovered:
                # Another agent now answers at this address (or it was reset).
                rediscovered = True
                usm.set_engine(reply.engine_id, reply.boots, reply.engine_time)
                continue
            raise usm.report_error(report)

    async def _discover(self, usm: Usm, deadline: float | None) -> None:
        """Learn the agent's engine id, boots and time (RFC 3414 4), once per session."""
        if usm.engine is not None:
            return
        async with self._engine_lock:
            if usm.engine is not None:
                return
            usm.learn(await self._transport.send(discovery_message, None, deadline))

    def _timeout_hint(self) -> str:
        usm = self._usm
        if usm is not None and usm.discovered and usm.wants_priv:
            # snmpd drops what it cannot decrypt without a report, so say so.
            return (
                " (the agent answered engine discovery; with authPriv a wrong"
                " priv_password or priv_protocol makes it drop requests silently)"
            )
        return ""

    def _match(self, data: bytes) -> tuple[int, Callable[[], Reply | None]]:
        """The id a datagram answers, and how to decode the rest of it.

        Only what identifies the request is read here, so strays cost little
        and a malformed answer to a real request fails that request.
        """
        usm = self._usm
        if usm is not None:
            message = ber.V3Message(data)
            return message.msg_id, lambda: self._answer(usm.decode(data, message))
        version, community, pos = ber.decode_community_message(data)
        if version != self.credentials.version - 1 or community != self._community:
            raise ValueError("not for this session (version or community differ)")
        _, request_id = ber.peek_request_id(data, pos)
        return request_id, lambda: self._answer(Reply(*ber.decode_pdu(data, pos)))

    def _answer(self, reply: Reply | None) -> Reply | None:
        """``reply``, if it is one: our own request sent back (a UDP echo service) is
        not, and read as a Response it gave every value as NULL."""
        if reply is not None and reply.tag not in (ber.RESPONSE, ber.REPORT):
            name = _PDU_NAMES.get(reply.tag, f"0x{reply.tag:02x}")
            raise SnmpProtocolError(
                f"{self._where} answered with a {name} PDU, not a Response"
                " (is an SNMP agent listening there?)"
            )
        return reply


if TYPE_CHECKING:

    def _session_is_a_client(session: SnmpSession) -> SnmpClient:
        return session  # mypy checks that SnmpSession satisfies the protocol
