"""What the SNMP client speaks in: OIDs, typed values and variable bindings.

OIDs are tuples of ints for callers; on the wire (and in the walk's hot loop)
they stay BER bytes (see ``ber``). A value's type is its BER tag, as ``ValueKind``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType

from exporter.clients.snmp import ber

Oid = tuple[int, ...]

format_oid = ber.format_oid


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


KINDS = MappingProxyType({kind.value: kind for kind in ValueKind})
UNSIGNED_TAGS = frozenset(
    {ValueKind.COUNTER32, ValueKind.GAUGE32, ValueKind.TIMETICKS, ValueKind.COUNTER64}
)
EXCEPTION_TAGS = frozenset(
    {ValueKind.NO_SUCH_OBJECT, ValueKind.NO_SUCH_INSTANCE, ValueKind.END_OF_MIB_VIEW}
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


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made
# creating one three times as slow (about 1 us against 0.3), and a scrape of a 48-port
# switch creates over a thousand. Hashable all the same; nothing changes one once made.
@dataclass(slots=True, unsafe_hash=True)
class VarBind:
    """One OID and its value (treat as immutable: it is hashed and shared).

    ``value`` is an ``int`` for INTEGER, counters, gauges and TimeTicks; ``bytes``
    for OCTET STRING, Opaque and IpAddress (4 bytes); an ``Oid`` for OBJECT
    IDENTIFIER; ``None`` for NULL and the noSuch*/endOfMibView exceptions.
    """

    oid: Oid
    kind: ValueKind
    value: int | bytes | Oid | None


def decode_value(tag: int, raw: bytes) -> int | bytes | Oid | None:
    """A value's contents octets as Python: ``int``, ``bytes``, an ``Oid`` or ``None``.

    An integer past 64 bits (signed for INTEGER) is a ``ValueError``: no SNMP type
    holds one, and its sample would be a number of any length (gosnmp refuses it too).
    """
    if tag in UNSIGNED_TAGS:
        value = int.from_bytes(raw, "big")
        if value >> 64:
            raise ValueError(f"a {len(raw)}-octet integer, past 64 bits")
        return value
    if tag == ber.INTEGER:
        value = int.from_bytes(raw, "big", signed=True)
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"a {len(raw)}-octet integer, past 64 bits")
        return value
    if tag == ber.OBJECT_IDENTIFIER:
        return ber.decode_oid(raw)
    if tag == ber.NULL or tag in EXCEPTION_TAGS:
        return None
    return raw
