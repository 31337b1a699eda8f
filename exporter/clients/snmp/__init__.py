"""An asyncio SNMP client (v1, v2c, v3 USM) built for fast table walks.

Collectors read devices through ``SnmpSession``: ``get`` for scalars and
``bulk_walk`` for tables. ``bulk_walk`` walks several subtrees (typically the
columns of a table) in lock-step, one varbind per subtree in each GetBulk, so
a table of R rows and C columns costs about R / max-repetitions round trips,
not C times that. It sends each next request before decoding the last reply,
so the agent works while we decode, and the decoder keeps OIDs as raw BER
bytes on the hot path. That is why this client exists instead of pysnmp
(multi-varbind, but slow) or gufo-snmp (fast, one OID per request).

Max-repetitions adapts: a tooBig answer, or a GetBulk that goes unanswered,
halves it (down to 1) and the request is sent again. The value a walk ended
with is left in ``SnmpSession.max_repetitions_used`` for the caller to start
from on the next scrape of that device.

One session is one UDP socket, connected to one agent; concurrent coroutines
may share it (replies are matched by request id, or msgID in SNMPv3).
Community strings, passwords and keys never appear in reprs, logs or errors.

The modules, by job:

* ``session``: ``SnmpSession``, the public class, and the ``SnmpClient`` protocol;
* ``transport``: the UDP socket, request ids, retries and reply matching;
* ``usm``: SNMPv3 security (keys, digests, privacy, the agent's engine);
* ``walk``: the multi-column GETBULK walk;
* ``pdu``: reading a reply (error-status, values); ``ber``: the codec;
* ``values``, ``credentials``, ``errors``: what callers pass and get back
  (the exception tree is in ``errors``).

Import from this package, not from the modules: the names below are its API.
"""

from exporter.clients.snmp.credentials import Credentials
from exporter.clients.snmp.errors import (
    SnmpAuthError,
    SnmpError,
    SnmpProtocolError,
    SnmpTimeout,
    SnmpTooBig,
)
from exporter.clients.snmp.session import MAX_REPETITIONS, SnmpClient, SnmpSession
from exporter.clients.snmp.transport import SessionStats, undecodable_note
from exporter.clients.snmp.usm import KeyCache
from exporter.clients.snmp.values import Oid, ValueKind, VarBind, format_oid, parse_oid

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
    "undecodable_note",
]
