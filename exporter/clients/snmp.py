"""An asyncio SNMP client (v1, v2c, v3 USM) built for fast table walks.

Collectors read devices through ``SnmpSession``: ``get`` for scalars and
``bulk_walk`` for tables. ``bulk_walk`` walks several subtrees (typically the
columns of a table) in lock-step, one varbind per subtree in each GetBulk, so
a table of R rows and C columns costs about R / max-repetitions round trips,
not C times that. It sends each next request before decoding the last reply,
so the agent works while we decode, and the decoder keeps OIDs as raw BER
bytes on the hot path (see ``snmp_ber``). That is why this client exists
instead of pysnmp (multi-varbind, but slow) or gufo-snmp (fast, one OID per
request).

Max-repetitions adapts: a tooBig answer, or a GetBulk that goes unanswered,
halves it (down to 1) and the request is sent again. The value a walk ended
with is left in ``SnmpSession.max_repetitions_used`` for the caller to start
from on the next scrape of that device.

One session is one UDP socket, connected to one agent; concurrent coroutines
may share it (replies are matched by request id, or msgID in SNMPv3).
Community strings, passwords and keys never appear in reprs, logs or errors.

Exceptions::

    ExporterError
     └── SnmpError             the host does not resolve, the session is closed, ...
          ├── SnmpTimeout       no answer within timeout x (retries + 1), or the deadline passed
          ├── SnmpAuthError     a v3 report (unknown user, wrong digest, ...) or authorizationError
          ├── SnmpTooBig        tooBig even with max-repetitions 1 (or for a single-OID GET)
          └── SnmpProtocolError a malformed reply, an error-status, a walk that does not end
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, Self

from exporter.clients import snmp_ber as ber
from exporter.clients import snmp_usm as usm
from exporter.clients.dns import shared_resolver
from exporter.clients.snmp_usm import KeyCache
from exporter.errors import ExporterError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from exporter.config import SnmpAuth

__all__ = [
    "MAX_REPETITIONS",
    "Credentials",
    "KeyCache",
    "Oid",
    "SessionStats",
    "SnmpAuthError",
    "SnmpClient",
    "SnmpError",
    "SnmpProtocolError",
    "SnmpSession",
    "SnmpTimeout",
    "SnmpTooBig",
    "ValueKind",
    "VarBind",
    "format_oid",
    "parse_oid",
]

log = logging.getLogger(__name__)

Oid = tuple[int, ...]

# Requests ask for at most this many repetitions. No agent answers more rows than
# fit in one datagram (64 KiB, a few thousand varbinds at best), and net-snmp
# caps a response at 100 varbinds unless configured otherwise.
MAX_REPETITIONS = 1000
# What we tell v3 agents we can receive: the largest UDP payload over IPv4.
_MSG_MAX_SIZE = 65507
# Request ids and msgIDs are 31-bit positive integers (RFC 3412: 0..2^31-1).
_ID_LIMIT = 2**31 - 1

format_oid = ber.format_oid


class SnmpError(ExporterError):
    """Root of SNMP errors. Messages name the agent, never a secret."""


class SnmpTimeout(SnmpError):
    """The agent did not answer in time, or the caller's deadline passed."""


class SnmpAuthError(SnmpError):
    """An SNMPv3 agent rejected the credentials; the message names its report."""


class SnmpTooBig(SnmpError):
    """The agent answered tooBig even for the smallest request we can make."""


class SnmpProtocolError(SnmpError):
    """The agent's reply is malformed, carries an error-status, or a walk never ends."""


class ValueKind(enum.IntEnum):
    """The type of a value, numbered by its BER tag."""

    INTEGER = 0x02
    OCTET_STRING = 0x04
    NULL = 0x05
    OID = 0x06
    IP_ADDRESS = 0x40
    COUNTER32 = 0x41
    GAUGE32 = 0x42
    TIMETICKS = 0x43
    OPAQUE = 0x44
    COUNTER64 = 0x46
    NO_SUCH_OBJECT = 0x80
    NO_SUCH_INSTANCE = 0x81
    END_OF_MIB_VIEW = 0x82


_KINDS = MappingProxyType({kind.value: kind for kind in ValueKind})
_UNSIGNED_TAGS = frozenset(
    {ValueKind.COUNTER32, ValueKind.GAUGE32, ValueKind.TIMETICKS, ValueKind.COUNTER64}
)
_EXCEPTION_TAGS = frozenset(
    {ValueKind.NO_SUCH_OBJECT, ValueKind.NO_SUCH_INSTANCE, ValueKind.END_OF_MIB_VIEW}
)

ERROR_STATUS_NAMES = (
    "noError",
    "tooBig",
    "noSuchName",
    "badValue",
    "readOnly",
    "genErr",
    "noAccess",
    "wrongType",
    "wrongLength",
    "wrongEncoding",
    "wrongValue",
    "noCreation",
    "inconsistentValue",
    "resourceUnavailable",
    "commitFailed",
    "undoFailed",
    "authorizationError",
    "notWritable",
    "inconsistentName",
)
_TOO_BIG = 1
_NO_SUCH_NAME = 2
_AUTHORIZATION_ERROR = 16

# Counters an SNMPv3 agent reports instead of answering (RFC 3414 and 3411-3413).
_REPORT_NAMES = MappingProxyType(
    {
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 1, 0): "usmStatsUnsupportedSecLevels",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0): "usmStatsNotInTimeWindows",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0): "usmStatsUnknownUserNames",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0): "usmStatsUnknownEngineIDs",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0): "usmStatsWrongDigests",
        (1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0): "usmStatsDecryptionErrors",
        (1, 3, 6, 1, 6, 3, 11, 2, 1, 1, 0): "snmpUnknownSecurityModels",
        (1, 3, 6, 1, 6, 3, 11, 2, 1, 2, 0): "snmpInvalidMsgs",
        (1, 3, 6, 1, 6, 3, 11, 2, 1, 3, 0): "snmpUnknownPDUHandlers",
        (1, 3, 6, 1, 6, 3, 12, 1, 4, 0): "snmpUnavailableContexts",
        (1, 3, 6, 1, 6, 3, 12, 1, 5, 0): "snmpUnknownContexts",
    }
)
# Reports that mean "these credentials or this context are not accepted".
_AUTH_REPORTS = frozenset(
    {
        "usmStatsUnsupportedSecLevels",
        "usmStatsNotInTimeWindows",
        "usmStatsUnknownUserNames",
        "usmStatsUnknownEngineIDs",
        "usmStatsWrongDigests",
        "usmStatsDecryptionErrors",
        "snmpUnavailableContexts",
        "snmpUnknownContexts",
    }
)


def parse_oid(text: str) -> Oid:
    """``"1.3.6.1.2.1.2.2.1.10"`` (a leading dot is allowed) as a tuple of ints."""
    body = text.strip().removeprefix(".")
    try:
        oid = tuple(int(part) for part in body.split("."))
        # Reject what int() accepts but an OID cannot hold ("+1", " 2", "1_0").
        if not all(part.isdigit() and part.isascii() for part in body.split(".")):
            raise ValueError
        ber.encode_oid(oid)
    except ValueError:
        raise ValueError(f"invalid OID {text!r}: expected numbers separated by dots") from None
    return oid


@dataclass(frozen=True, slots=True)
class VarBind:
    """One OID and its value.

    ``value`` is an ``int`` for INTEGER, counters, gauges and TimeTicks; ``bytes``
    for OCTET STRING, Opaque and IpAddress (4 bytes); an ``Oid`` for OBJECT
    IDENTIFIER; ``None`` for NULL and the noSuch*/endOfMibView exceptions.
    """

    oid: Oid
    kind: ValueKind
    value: int | bytes | Oid | None


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who we are to the agent. Secret fields are left out of the repr."""

    version: Literal[1, 2, 3]
    community: str = field(default="", repr=False)
    username: str = ""
    security_level: Literal["noAuthNoPriv", "authNoPriv", "authPriv"] = "noAuthNoPriv"
    auth_protocol: str | None = None
    auth_password: str = field(default="", repr=False)
    priv_protocol: str | None = None
    priv_password: str = field(default="", repr=False)
    context_name: str = ""

    def __post_init__(self) -> None:
        if self.version not in (1, 2, 3):
            raise ValueError(f"SNMP version must be 1, 2 or 3, not {self.version!r}")
        if self.version != 3:
            return
        if not self.username:
            raise ValueError("SNMPv3 needs a username")
        if self.security_level not in ("noAuthNoPriv", "authNoPriv", "authPriv"):
            raise ValueError(f"unknown SNMPv3 security level {self.security_level!r}")
        if self.security_level != "noAuthNoPriv":
            if self.auth_protocol not in usm.AUTH_PROTOCOLS:
                raise ValueError(
                    f"{self.security_level} needs auth_protocol, one of "
                    f"{', '.join(usm.AUTH_PROTOCOLS)}; got {self.auth_protocol!r}"
                )
            if not self.auth_password:
                raise ValueError(f"{self.security_level} needs an auth_password")
        if self.security_level == "authPriv":
            if self.priv_protocol not in usm.PRIV_KEY_SIZES:
                raise ValueError(
                    f"authPriv needs priv_protocol, one of {', '.join(usm.PRIV_KEY_SIZES)};"
                    f" got {self.priv_protocol!r}"
                )
            if not self.priv_password:
                raise ValueError("authPriv needs a priv_password")

    @classmethod
    def from_auth(cls, auth: SnmpAuth) -> Credentials:
        """The credentials of a validated ``auths:`` entry of the config file."""

        def secret(value: SecretStr | None) -> str:
            return "" if value is None else value.get_secret_value()

        return cls(
            version=auth.version,
            community=secret(auth.community),
            username=auth.username or "",
            security_level=auth.security_level or "noAuthNoPriv",
            auth_protocol=auth.auth_protocol,
            auth_password=secret(auth.auth_password),
            priv_protocol=auth.priv_protocol,
            priv_password=secret(auth.priv_password),
            context_name=auth.context_name or "",
        )


@dataclass
class SessionStats:
    """Counters since the session was created.

    ``pdus_sent`` counts every datagram sent (first tries, retries and v3 engine
    discovery); ``retries`` the resends after an unanswered one; ``timeouts``
    the tries that went unanswered, whether or not a retry then succeeded.
    """

    pdus_sent: int = 0
    retries: int = 0
    timeouts: int = 0


class SnmpClient(Protocol):
    """What collectors need from an agent connection; ``SnmpSession`` is the real one."""

    stats: SessionStats
    max_repetitions_used: int

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

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Reply:
    """A decoded answer, matched to a pending request."""

    tag: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[ber.RawVarBind]
    # SNMPv3 only: what the agent said about itself, and whether it signed the reply.
    authenticated: bool = False
    engine_id: bytes = b""
    boots: int = 0
    engine_time: int = 0


@dataclass(slots=True)
class _Repetitions:
    """Max-repetitions of one walk, lowered in place by the requests that find it too big."""

    value: int


@dataclass(slots=True)
class _Engine:
    """The authoritative engine (the agent), as last learnt."""

    engine_id: bytes
    boots: int
    time: int
    synced_at: float  # loop.time() when ``time`` was learnt

    def now(self, loop_time: float) -> tuple[int, int]:
        elapsed = int(loop_time - self.synced_at)
        return self.boots, min(self.time + elapsed, _ID_LIMIT)


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


def _count_in_subtree(share: list[ber.RawVarBind], prefix: bytes) -> int:
    """How many leading varbinds of ``share`` are values inside ``prefix``'s subtree.

    An OID equal to the root itself counts as inside, so that ``_take`` reports
    it as not increasing.
    """
    for k, (oid, tag, _) in enumerate(share):
        # Exceptions (endOfMibView, ...) have tags 0x80 and up.
        if tag >= 0x80 or not oid.startswith(prefix):
            return k
    return len(share)


async def _discard(task: asyncio.Task[_Reply]) -> None:
    """Cancel a request nobody needs any more and wait for it to let go of its id."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: asyncio must not log it as forgotten


def _value(tag: int, raw: bytes) -> int | bytes | Oid | None:
    if tag in _UNSIGNED_TAGS:
        return int.from_bytes(raw, "big")
    if tag == ber.INTEGER:
        return int.from_bytes(raw, "big", signed=True)
    if tag == ber.OBJECT_IDENTIFIER:
        return ber.decode_oid(raw)
    if tag == ber.NULL or tag in _EXCEPTION_TAGS:
        return None
    return raw


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
        self._keys = key_cache if key_cache is not None else KeyCache()
        self._transport: asyncio.DatagramTransport | None = None
        self._endpoint: _Endpoint | None = None
        self._closed = False
        self._open_lock = asyncio.Lock()
        self._engine_lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[_Reply]] = {}
        self._next_id = secrets.randbelow(_ID_LIMIT - 1) + 1
        self._salt = secrets.randbits(64)
        self._community = credentials.community.encode()
        self._v3 = credentials.version == 3
        self._engine: _Engine | None = None
        self._auth = usm.AUTH_PROTOCOLS.get(credentials.auth_protocol or "")
        if credentials.security_level == "noAuthNoPriv":
            self._auth = None
        self._auth_key = b""
        self._privacy: usm.Privacy | None = None
        self._wants_priv = self._v3 and credentials.security_level == "authPriv"
        if self._wants_priv and credentials.priv_protocol == "DES" and not usm.des_available():
            raise SnmpError("DES privacy is not available: this 'cryptography' lacks TripleDES")
        self._discovered = False  # whether the agent answered v3 discovery

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
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SnmpError(f"SNMP session to {self._where} was closed"))
        self._pending.clear()
        transport, endpoint = self._transport, self._endpoint
        self._transport = self._endpoint = None
        if transport is not None and endpoint is not None:
            transport.close()
            await endpoint.closed

    # Public requests.

    async def get(self, oids: Sequence[Oid], *, deadline: float | None = None) -> list[VarBind]:
        """GET ``oids``; the result has one VarBind per OID, in the same order.

        A missing object comes back with kind NO_SUCH_OBJECT/NO_SUCH_INSTANCE
        (SNMPv1's noSuchName is translated to NO_SUCH_OBJECT). A request the
        agent finds tooBig is split in halves.
        """
        if not oids:
            return []
        encoded = [self._encode_root(oid) for oid in oids]
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

        Roots are walked in lock-step: each GetBulk (non-repeaters 0) carries
        one varbind per unfinished root, from that root's last OID. A root is
        finished when a returned OID leaves its subtree or is endOfMibView;
        what a reply holds past that point is ignored. SNMPv1 walks with
        GetNext, one row per request.

        ``max_repetitions`` is the starting value (above ``MAX_REPETITIONS`` it
        is lowered to that); tooBig or an unanswered try halves it, and
        ``self.max_repetitions_used`` holds the final value.

        Raises ``SnmpProtocolError`` if the agent returns an OID that is not
        after the previous one of that root, or more than ``max_oids`` OIDs
        in all; ``SnmpTimeout`` when ``deadline`` passes.

        Only one request is in flight at a time, but the next one is sent as
        soon as a reply shows where each root continues, before the reply's
        values are decoded: the agent builds its next answer while we decode.
        """
        if max_repetitions < 1:
            raise ValueError(f"max_repetitions must be at least 1, not {max_repetitions}")
        repetitions = _Repetitions(min(max_repetitions, MAX_REPETITIONS))
        roots = list(dict.fromkeys(roots))
        results: dict[Oid, list[VarBind]] = {root: [] for root in roots}
        prefixes = [self._encode_root(root) for root in roots]
        last = list(prefixes)  # the OID each root's walk continues from
        last_suffix: list[Oid] = [() for _ in roots]  # the same, below its root
        lists = [results[root] for root in roots]
        indexes: dict[bytes, Oid] = {}  # decoded index suffixes: columns share them
        active = list(range(len(roots)))
        total = 0
        getnext = self.credentials.version == 1
        # SNMPv1 has no GetBulk, and an old agent may find even one varbind per
        # root too big: then fewer roots go in each GetNext.
        getnext_width = len(roots)
        in_flight: asyncio.Task[_Reply] | None = None

        def next_batch() -> list[int]:
            return active[:getnext_width] if getnext else list(active)

        async def request(batch: list[int]) -> _Reply:
            oids = [last[i] for i in batch]
            if getnext:
                return await self._request(ber.GET_NEXT_REQUEST, oids, deadline)
            return await self._bulk_request(oids, repetitions, deadline)

        try:
            batch = next_batch()
            reply = await request(batch) if batch else None
            while reply is not None:
                status, index = reply.error_status, reply.error_index
                if getnext and status == _NO_SUCH_NAME and 1 <= index <= len(batch):
                    # SNMPv1's end of MIB: that root is done; ask again for the others.
                    active.remove(batch[index - 1])
                    batch = next_batch()
                    reply = await request(batch) if batch else None
                    continue
                if getnext and status == _TOO_BIG and len(batch) > 1:
                    getnext_width = len(batch) // 2
                    batch = next_batch()
                    reply = await request(batch)
                    continue
                self._check_status(reply, [last[i] for i in batch])
                varbinds = reply.varbinds
                if not varbinds:
                    raise SnmpProtocolError(f"{self._where} answered a walk with no varbinds")
                # Row-major: varbind k continues the walk of root batch[k % width], so
                # varbinds[j::width] is root j's share. First only find where each
                # share leaves its subtree, which is all the next request needs.
                width = len(batch)
                shares = []
                ended = set()
                for j, i in enumerate(batch):
                    share = varbinds[j::width]
                    kept = _count_in_subtree(share, prefixes[i])
                    if kept < len(share):
                        ended.add(i)
                    if kept:
                        last[i] = share[kept - 1][0]
                        shares.append((i, share, kept))
                        total += kept
                if total > max_oids:
                    raise SnmpProtocolError(
                        f"walk of {self._where} stopped after {max_oids} OIDs (the agent keeps"
                        " returning OIDs; raise max_oids if the tables are really this big)"
                    )
                if ended:
                    active = [i for i in active if i not in ended]
                batch = next_batch()
                if batch:
                    in_flight = asyncio.ensure_future(request(batch))
                    await asyncio.sleep(0)  # let it send before the decoding below
                for i, share, kept in shares:
                    last_suffix[i] = self._take(
                        roots[i], prefixes[i], share, kept, last_suffix[i], lists[i], indexes
                    )
                if in_flight is None:
                    break
                reply, in_flight = await in_flight, None
        finally:
            self.max_repetitions_used = repetitions.value
            if in_flight is not None:
                await _discard(in_flight)
        return results

    def _take(
        self,
        root: Oid,
        prefix: bytes,
        share: list[ber.RawVarBind],
        count: int,
        previous: Oid,
        out: list[VarBind],
        indexes: dict[bytes, Oid],
    ) -> Oid:
        """Decode the first ``count`` varbinds of one root's share of a reply into ``out``.

        The walk's inner loop. Returns the suffix (below ``root``) of the last
        OID taken; ``indexes`` caches suffixes, which repeat in every column.
        """
        kinds, unsigned, integer, octets = _KINDS, _UNSIGNED_TAGS, ber.INTEGER, ber.OCTET_STRING
        cut = len(prefix)
        for k in range(count):
            oid, tag, raw = share[k]
            rest = oid[cut:]
            suffix = indexes.get(rest)
            if suffix is None:
                suffix = indexes[rest] = ber.decode_subids(rest)
            if suffix <= previous:
                raise SnmpProtocolError(
                    f"agent returned non-increasing OID {format_oid(root + suffix)}"
                    f" after {format_oid(root + previous)} ({self._where})"
                )
            previous = suffix
            kind = kinds.get(tag)
            if kind is None:
                raise SnmpProtocolError(
                    f"{self._where} returned unknown type 0x{tag:02x}"
                    f" for {format_oid(root + suffix)}"
                )
            # The common types inline; the rest through _convert().
            if tag in unsigned:
                value: int | bytes | Oid | None = int.from_bytes(raw, "big")
            elif tag == integer:
                value = int.from_bytes(raw, "big", signed=True)
            elif tag == octets:
                value = raw
            else:
                value = self._convert(tag, raw, root + suffix)
            out.append(VarBind(root + suffix, kind, value))
        return previous

    def _encode_root(self, oid: Oid) -> bytes:
        try:
            return ber.encode_oid(oid)
        except ValueError as exc:
            raise ValueError(f"cannot request {format_oid(oid)}: {exc}") from None

    async def _get(
        self, oids: list[Oid], encoded: list[bytes], deadline: float | None
    ) -> list[VarBind]:
        found: dict[int, VarBind] = {}  # by position in ``oids``
        asked = list(range(len(oids)))
        while asked:
            request = [encoded[i] for i in asked]
            reply = await self._request(ber.GET_REQUEST, request, deadline)
            if reply.error_status == _TOO_BIG:
                if len(asked) == 1:
                    raise SnmpTooBig(f"{self._where} answered tooBig for a single OID")
                half = len(asked) // 2
                first = await self._get([oids[i] for i in asked[:half]], request[:half], deadline)
                second = await self._get([oids[i] for i in asked[half:]], request[half:], deadline)
                for i, vb in zip(asked, first + second, strict=True):
                    found[i] = vb
                break
            if reply.error_status == _NO_SUCH_NAME and 1 <= reply.error_index <= len(asked):
                i = asked.pop(reply.error_index - 1)
                found[i] = VarBind(oids[i], ValueKind.NO_SUCH_OBJECT, None)
                continue
            self._check_status(reply, request)
            if len(reply.varbinds) != len(request):
                raise SnmpProtocolError(
                    f"{self._where} answered {len(reply.varbinds)} varbinds"
                    f" to a GET of {len(request)}"
                )
            for i, (oid, tag, raw) in zip(asked, reply.varbinds, strict=True):
                if oid != encoded[i]:
                    raise SnmpProtocolError(
                        f"{self._where} answered a GET of {format_oid(oids[i])}"
                        f" with {self._oid_text(oid)}"
                    )
                kind = _KINDS.get(tag)
                if kind is None:
                    raise SnmpProtocolError(
                        f"{self._where} returned unknown type 0x{tag:02x} for {format_oid(oids[i])}"
                    )
                found[i] = VarBind(oids[i], kind, self._convert(tag, raw, oids[i]))
            break
        return [found[i] for i in range(len(oids))]

    def _convert(self, tag: int, raw: bytes, oid: Oid) -> int | bytes | Oid | None:
        try:
            return _value(tag, raw)
        except (ValueError, IndexError) as exc:
            raise SnmpProtocolError(
                f"{self._where} returned a malformed value for {format_oid(oid)}: {exc}"
            ) from None

    @staticmethod
    def _oid_text(raw: bytes) -> str:
        try:
            return format_oid(ber.decode_oid(raw))
        except (ValueError, IndexError):
            return f"a malformed OID ({raw.hex()})"

    def _check_status(self, reply: _Reply, oids: list[bytes]) -> None:
        status = reply.error_status
        if not status:
            return
        name = ERROR_STATUS_NAMES[status] if 0 <= status < len(ERROR_STATUS_NAMES) else str(status)
        if status == _TOO_BIG:
            raise SnmpTooBig(f"{self._where} answered tooBig")
        where = ""
        if 1 <= reply.error_index <= len(oids):
            where = f" at {self._oid_text(oids[reply.error_index - 1])}"
        if status == _AUTHORIZATION_ERROR:
            raise SnmpAuthError(
                f"{self._where} answered authorizationError{where}: its access control"
                " does not let these credentials read that (for v3, check security_level)"
            )
        raise SnmpProtocolError(f"{self._where} answered error-status {name}{where}")

    # Requests and retries.

    async def _bulk_request(
        self, oids: list[bytes], repetitions: _Repetitions, deadline: float | None
    ) -> _Reply:
        """A GetBulk, halving max-repetitions on tooBig (and, in ``_send``, on timeouts)."""
        while True:
            reply = await self._exchange(ber.GET_BULK_REQUEST, oids, 0, repetitions, deadline)
            if reply.error_status != _TOO_BIG or repetitions.value == 1:
                return reply
            repetitions.value = max(1, repetitions.value // 2)
            log.debug("%s: tooBig, max-repetitions now %d", self._where, repetitions.value)

    async def _request(self, tag: int, oids: list[bytes], deadline: float | None) -> _Reply:
        return await self._exchange(tag, oids, 0, None, deadline)

    async def _exchange(
        self,
        tag: int,
        oids: list[bytes],
        non_repeaters: int,
        repetitions: _Repetitions | None,
        deadline: float | None,
    ) -> _Reply:
        """Send one request (with retries) and handle SNMPv3 reports.

        ``repetitions`` is given for GetBulk only; unanswered tries halve it.
        """
        await self._open(deadline)

        def pdu(request_id: int) -> bytes:
            reps = 0 if repetitions is None else repetitions.value
            return ber.encode_request_pdu(tag, request_id, non_repeaters, reps, oids)

        if not self._v3:
            version, community = self.credentials.version - 1, self._community

            def community_message(request_id: int) -> bytes:
                return ber.encode_community_message(version, community, pdu(request_id))

            return await self._send(community_message, repetitions, deadline)

        def v3_message(request_id: int) -> bytes:
            return self._v3_message(request_id, pdu(request_id))

        await self._discover(deadline)
        resynced = rediscovered = False
        while True:
            reply = await self._send(v3_message, repetitions, deadline)
            if reply.tag != ber.REPORT:
                return reply
            report = self._report_name(reply)
            if report == "usmStatsNotInTimeWindows" and reply.authenticated and not resynced:
                # The agent rebooted or its clock moved: adopt its boots/time, once.
                resynced = True
                self._set_engine(reply.engine_id, reply.boots, reply.engine_time)
                continue
            if report == "usmStatsUnknownEngineIDs" and not rediscovered:
                # Another agent now answers at this address (or it was reset).
                rediscovered = True
                self._set_engine(reply.engine_id, reply.boots, reply.engine_time)
                continue
            raise self._report_error(report)

    def _report_name(self, reply: _Reply) -> str:
        if not reply.varbinds:
            return "an empty report"
        raw = reply.varbinds[0][0]
        try:
            oid = ber.decode_oid(raw)
        except (ValueError, IndexError):
            return "a malformed report"
        return _REPORT_NAMES.get(oid, f"report {format_oid(oid)}")

    def _report_error(self, report: str) -> SnmpError:
        user = self.credentials.username
        if report in _AUTH_REPORTS:
            return SnmpAuthError(f"{self._where} rejected SNMPv3 user {user!r} ({report})")
        return SnmpProtocolError(f"{self._where} answered with {report}")

    async def _send(
        self,
        build: Callable[[int], bytes],
        repetitions: _Repetitions | None,
        deadline: float | None,
    ) -> _Reply:
        """Send ``build(request_id)`` until answered or out of tries.

        Each try has a new request id, but a late answer to an earlier try is
        accepted too. An unanswered GetBulk is resent with half the repetitions:
        a reply too big for the path (or for the agent to build in time) is the
        usual reason a bulk request goes unanswered while small ones do not.
        """
        transport = self._transport
        if transport is None:
            raise SnmpError(f"SNMP session to {self._where} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Reply] = loop.create_future()
        ids: list[int] = []
        try:
            for attempt in range(self.retries + 1):
                now = loop.time()
                if deadline is not None and now >= deadline:
                    raise SnmpTimeout(self._timeout_message(attempt, deadline_passed=True))
                wait_until = now + self.timeout
                if deadline is not None:
                    wait_until = min(wait_until, deadline)
                request_id = self._new_id()
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
                    self.stats.timeouts += 1
                    if repetitions is not None and repetitions.value > 1:
                        repetitions.value //= 2
                    continue
                if reply.request_id not in ids and reply.tag != ber.REPORT:
                    raise SnmpProtocolError(
                        f"{self._where} answered request {ids[-1]} with request-id"
                        f" {reply.request_id}"
                    )
                return reply
            passed = deadline is not None and loop.time() >= deadline
            raise SnmpTimeout(self._timeout_message(self.retries + 1, deadline_passed=passed))
        finally:
            for request_id in ids:
                self._pending.pop(request_id, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: asyncio must not log it as forgotten

    def _timeout_message(self, tries: int, *, deadline_passed: bool) -> str:
        if deadline_passed:
            message = f"deadline passed waiting for {self._where}"
        else:
            message = f"no response from {self._where} after {tries} tries of {self.timeout:g}s"
        if self._v3 and self._discovered and self._wants_priv:
            # snmpd drops what it cannot decrypt without a report, so say so.
            message += (
                " (the agent answered engine discovery; with authPriv a wrong"
                " priv_password or priv_protocol makes it drop requests silently)"
            )
        return message

    def _new_id(self) -> int:
        request_id = self._next_id
        self._next_id = request_id + 1 if request_id < _ID_LIMIT else 1
        return request_id

    # The socket.

    async def _open(self, deadline: float | None) -> None:
        if self._transport is not None:
            return
        async with self._open_lock:
            if self._closed:
                raise SnmpError(f"SNMP session to {self._where} is closed")
            if self._transport is not None:
                return
            loop = asyncio.get_running_loop()
            budget = self.timeout * (self.retries + 1)
            until = (
                loop.time() + budget if deadline is None else min(deadline, loop.time() + budget)
            )
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
                raise SnmpError(f"cannot open a UDP socket to {self._where}: {exc}") from None
            if self._closed:  # close() ran while we were resolving
                transport.close()
                await endpoint.closed
                raise SnmpError(f"SNMP session to {self._where} is closed")
            self._transport, self._endpoint = transport, endpoint

    def _on_datagram(self, data: bytes) -> None:
        try:
            key, decode = self._match(data)
        except (ValueError, IndexError) as exc:
            log.debug("%s: dropped an undecodable datagram: %s", self._where, exc)
            return
        future = self._pending.get(key)
        if future is None or future.done():
            log.debug("%s: dropped a stray or late datagram (id %d)", self._where, key)
            return
        try:
            reply = decode()
        except SnmpError as exc:
            future.set_exception(exc)
            return
        except (ValueError, IndexError) as exc:
            future.set_exception(
                SnmpProtocolError(f"{self._where} sent a malformed response: {exc}")
            )
            return
        if reply is not None:
            future.set_result(reply)

    def _match(self, data: bytes) -> tuple[int, Callable[[], _Reply | None]]:
        """The id a datagram answers, and how to decode the rest of it.

        Only what identifies the request is read here, so strays cost little
        and a malformed answer to a real request fails that request.
        """
        if self._v3:
            message = ber.V3Message(data)
            return message.msg_id, lambda: self._decode_v3(data, message)
        version, community, pos = ber.decode_community_message(data)
        if version != self.credentials.version - 1 or community != self._community:
            raise ValueError("not for this session (version or community differ)")
        _, request_id = ber.peek_request_id(data, pos)
        return request_id, lambda: _Reply(*ber.decode_pdu(data, pos))

    # SNMPv3.

    async def _discover(self, deadline: float | None) -> None:
        """Learn the agent's engine id, boots and time (RFC 3414 4), once per session."""
        if self._engine is not None:
            return
        async with self._engine_lock:
            if self._engine is not None:
                return

            def discovery(request_id: int) -> bytes:
                pdu = ber.encode_request_pdu(ber.GET_REQUEST, request_id, 0, 0, ())
                scoped = ber.encode_scoped_pdu(b"", b"", pdu)
                params, offset = ber.encode_usm_parameters(b"", 0, 0, b"", b"", b"")
                message, _ = ber.encode_v3_message(
                    request_id, _MSG_MAX_SIZE, ber.MSG_FLAG_REPORTABLE, params, offset, scoped
                )
                return message

            reply = await self._send(discovery, None, deadline)
            if reply.tag != ber.REPORT or not reply.engine_id:
                raise SnmpProtocolError(
                    f"{self._where} did not report its engine id to SNMPv3 discovery"
                )
            self._discovered = True
            self._set_engine(reply.engine_id, reply.boots, reply.engine_time)

    def _set_engine(self, engine_id: bytes, boots: int, engine_time: int) -> None:
        loop_time = asyncio.get_running_loop().time()
        if self._engine is None or self._engine.engine_id != engine_id:
            self._localize(engine_id)
        self._engine = _Engine(engine_id, boots, engine_time, loop_time)

    def _localize(self, engine_id: bytes) -> None:
        auth = self._auth
        if auth is None:
            return
        creds = self.credentials
        self._auth_key = self._keys.localized(auth, creds.auth_password.encode(), engine_id)
        if self._wants_priv and creds.priv_protocol is not None:
            kul = self._keys.localized(auth, creds.priv_password.encode(), engine_id)
            self._privacy = usm.Privacy(creds.priv_protocol, auth, kul)

    def _v3_message(self, msg_id: int, pdu: bytes) -> bytes:
        engine = self._engine
        assert engine is not None, "discovery runs before any v3 request"
        boots, engine_time = engine.now(asyncio.get_running_loop().time())
        scoped = ber.encode_scoped_pdu(
            engine.engine_id, self.credentials.context_name.encode(), pdu
        )
        flags = ber.MSG_FLAG_REPORTABLE
        priv_params = b""
        if self._privacy is not None:
            flags |= ber.MSG_FLAG_PRIV
            self._salt = (self._salt + 1) & 0xFFFFFFFFFFFFFFFF
            encrypted, priv_params = self._privacy.encrypt(scoped, boots, engine_time, self._salt)
            data = ber.encode_octets(encrypted)
        else:
            data = scoped
        auth = self._auth
        digest_length = 0
        if auth is not None:
            flags |= ber.MSG_FLAG_AUTH
            digest_length = auth.digest_length
        params, offset = ber.encode_usm_parameters(
            engine.engine_id,
            boots,
            engine_time,
            self.credentials.username.encode(),
            bytes(digest_length),
            priv_params,
        )
        message, offset = ber.encode_v3_message(msg_id, _MSG_MAX_SIZE, flags, params, offset, data)
        if auth is not None:
            digest = usm.sign(auth, self._auth_key, message)
            message = message[:offset] + digest + message[offset + digest_length :]
        return message

    def _decode_v3(self, data: bytes, message: ber.V3Message) -> _Reply | None:
        """Verify, decrypt and decode a v3 reply; ``None`` drops a forged one."""
        if message.security_model != ber.SECURITY_MODEL_USM:
            raise SnmpProtocolError(
                f"{self._where} answered with security model {message.security_model}"
            )
        authenticated = False
        if message.flags & ber.MSG_FLAG_AUTH:
            auth = self._auth
            engine = self._engine
            if auth is None or engine is None or message.engine_id != engine.engine_id:
                log.debug("%s: dropped a signed message we cannot verify", self._where)
                return None
            zeroed = (
                data[: message.auth_start]
                + bytes(message.auth_end - message.auth_start)
                + data[message.auth_end :]
            )
            expected = usm.sign(auth, self._auth_key, zeroed)
            if not secrets.compare_digest(expected, message.auth_params):
                log.debug("%s: dropped a message with a wrong digest", self._where)
                return None
            authenticated = True
        if message.flags & ber.MSG_FLAG_PRIV:
            if not authenticated or self._privacy is None:
                raise SnmpProtocolError(f"{self._where} sent an encrypted message we cannot read")
            encrypted, _ = ber.read_octets(data, message.data_pos, "encryptedPDU")
            try:
                plain = self._privacy.decrypt(
                    encrypted, message.priv_params, message.boots, message.engine_time
                )
                _, _, pdu_pos = ber.decode_scoped_pdu(plain, 0)
                decoded = ber.decode_pdu(plain, pdu_pos)
            except (ValueError, IndexError) as exc:
                raise SnmpAuthError(
                    f"cannot decrypt the response from {self._where} ({exc});"
                    " is the priv_protocol right?"
                ) from None
        else:
            _, _, pdu_pos = ber.decode_scoped_pdu(data, message.data_pos)
            decoded = ber.decode_pdu(data, pdu_pos)
        if authenticated and self._engine is not None:
            engine = self._engine
            # RFC 3414 3.2.7: follow the agent's clock forward, never back.
            if message.boots > engine.boots or (
                message.boots == engine.boots and message.engine_time > engine.time
            ):
                engine.boots, engine.time = message.boots, message.engine_time
                engine.synced_at = asyncio.get_running_loop().time()
        return _Reply(
            *decoded,
            authenticated=authenticated,
            engine_id=message.engine_id,
            boots=message.boots,
            engine_time=message.engine_time,
        )


if TYPE_CHECKING:

    def _session_is_a_client(session: SnmpSession) -> SnmpClient:
        return session  # mypy checks that SnmpSession satisfies the protocol
