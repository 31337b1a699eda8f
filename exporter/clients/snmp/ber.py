"""BER encoding and decoding of SNMP messages: the subset of X.690 that SNMP uses.

This is the codec under ``exporter.clients.snmp``; nothing here does I/O. It is
written for speed on the one path that matters, decoding the variable bindings
of a GetBulk response, and for plainness everywhere else.

Conventions:

* OIDs travel as their encoded contents octets (``bytes``), not as tuples. BER
  encodes each sub-identifier as a self-delimiting group of bytes, so the
  encoding of an OID is a prefix of the encoding of every OID below it: "is this
  OID in that subtree" is ``bytes.startswith``. Tuples are built only for
  results (``decode_oid``, ``decode_subids``).
* Values are returned raw (the contents octets) with their tag; the session
  turns them into ``int``/``bytes``/OIDs once it knows it keeps them.
* Decoders raise ``ValueError`` (or ``IndexError`` when the input ends early)
  on malformed input; the session turns both into ``SnmpProtocolError``. The
  hot loops do not check bounds themselves: slicing and indexing past the end
  of ``bytes`` already fail, which is what makes them fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from exporter.clients.snmp.speedups import compiled

# Universal tags.
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30

# PDU tags (context-specific, constructed).
GET_REQUEST = 0xA0
GET_NEXT_REQUEST = 0xA1
RESPONSE = 0xA2
SET_REQUEST = 0xA3
GET_BULK_REQUEST = 0xA5
INFORM_REQUEST = 0xA6
SNMPV2_TRAP = 0xA7
REPORT = 0xA8
PDU_TAGS = frozenset(
    {
        GET_REQUEST,
        GET_NEXT_REQUEST,
        RESPONSE,
        SET_REQUEST,
        GET_BULK_REQUEST,
        INFORM_REQUEST,
        SNMPV2_TRAP,
        REPORT,
    }
)

# A varbind with a NULL value, as requests carry it.
_NULL_VALUE = b"\x05\x00"

# A decoded varbind: (OID contents octets, value tag, value contents octets).
RawVarBind = tuple[bytes, int, bytes]


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    """One element: tag, definite length, contents."""
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    return bytes((tag,)) + encode_length(length) + content


def integer_content(value: int) -> bytes:
    """Two's complement, minimal length (X.690 8.3)."""
    return value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)


def encode_integer(value: int, tag: int = INTEGER) -> bytes:
    return tlv(tag, integer_content(value))


def encode_unsigned(value: int, tag: int) -> bytes:
    """Counter32, Gauge32, TimeTicks, Counter64: unsigned, but still two's complement."""
    if value < 0:
        raise ValueError(f"negative value {value} for an unsigned type")
    return tlv(tag, integer_content(value))


def encode_octets(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


# At most 128 sub-identifiers in an OID (RFC 2578 3.5; net-snmp's MAX_OID_LEN). An agent
# may make its OIDs as long as a datagram holds, each a tuple of tens of thousands of
# arcs: a walk of them took a gigabyte in seconds.
MAX_OID_ARCS = 128
MAX_ARC = 0xFFFFFFFF
MAX_ARC_OCTETS = 5  # 32 bits, 7 a octet


def encode_subids(subids: Sequence[int]) -> bytes:
    """Sub-identifiers as contents octets, with no first-arc packing."""
    if all(0 <= subid < 0x80 for subid in subids):
        return bytes(subids)
    out = bytearray()
    for subid in subids:
        if not 0 <= subid <= 0xFFFFFFFF:
            raise ValueError(f"OID arc {subid} is out of range")
        group = [subid & 0x7F]
        subid >>= 7
        while subid:
            group.append(0x80 | (subid & 0x7F))
            subid >>= 7
        out.extend(reversed(group))
    return bytes(out)


def encode_oid(oid: Sequence[int]) -> bytes:
    """The contents octets of ``oid``; ``ValueError`` if it cannot be encoded.

    An OID needs at least two arcs, the first 0, 1 or 2, and below 40 the second
    when the first is 0 or 1 (X.690 8.19).
    """
    if len(oid) < 2:
        raise ValueError(f"OID {format_oid(oid)} has fewer than two arcs")
    first, second = oid[0], oid[1]
    if first not in (0, 1, 2) or second < 0 or (first < 2 and second >= 40):
        raise ValueError(f"OID {format_oid(oid)} does not start with a valid arc pair")
    try:
        return encode_subids((first * 40 + second, *oid[2:]))
    except ValueError:
        raise ValueError(f"OID {format_oid(oid)} has an arc out of range") from None


def decode_subids(content: bytes) -> tuple[int, ...]:
    """Sub-identifiers encoded in ``content``, with no first-arc packing.

    This decodes the part of an OID after a known prefix (a table index, say).
    More than ``MAX_OID_ARCS`` of them is a ``ValueError``.
    """
    if content.isascii():
        # Every byte below 0x80 is a whole sub-identifier: the common case.
        if len(content) > MAX_OID_ARCS:
            raise ValueError(f"OID has more than {MAX_OID_ARCS} arcs")
        return tuple(content)
    # Each arc takes at most 5 octets: refusing longer contents up front keeps the
    # loop below linear (a long arc's shifts grow with its length).
    if len(content) > MAX_OID_ARCS * MAX_ARC_OCTETS:
        raise ValueError(f"OID of {len(content)} octets, more than {MAX_OID_ARCS} arcs hold")
    subids = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            subids.append(value)
            value = 0
        elif value > MAX_ARC >> 7:
            # SNMP's arcs are 32-bit (RFC 2578 3.5); a longer one is as many digits
            # as the agent likes, past what str() will even write.
            raise ValueError("OID has an arc past 32 bits")
    if content[-1] >= 0x80:
        raise ValueError("OID ends in the middle of a sub-identifier")
    if max(subids) > MAX_ARC:
        raise ValueError("OID has an arc past 32 bits")
    if len(subids) > MAX_OID_ARCS:
        raise ValueError(f"OID has more than {MAX_OID_ARCS} arcs")
    return tuple(subids)


def decode_oid(content: bytes) -> tuple[int, ...]:
    """The arcs of an OID from its contents octets."""
    if not content:
        raise ValueError("empty OID")
    subids = decode_subids(content)
    if len(subids) == MAX_OID_ARCS:  # the first sub-identifier holds two arcs
        raise ValueError(f"OID has more than {MAX_OID_ARCS} arcs")
    first = subids[0]
    if first < 80:
        return (first // 40, first % 40, *subids[1:])
    return (2, first - 80, *subids[1:])


def format_oid(oid: Iterable[int]) -> str:
    return ".".join(map(str, oid))


def read_tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """The element at ``pos``: ``(tag, start of contents, end of contents)``."""
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length >= 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise ValueError(f"unsupported length encoding 0x{length:02x}")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(buf):
        raise ValueError("element runs past the end of the message")
    return tag, pos, end


def expect(buf: bytes, pos: int, tag: int, what: str) -> tuple[int, int]:
    """Like ``read_tlv``, requiring ``tag``; returns ``(start, end)`` of the contents."""
    got, start, end = read_tlv(buf, pos)
    if got != tag:
        raise ValueError(f"expected {what} (tag 0x{tag:02x}), got tag 0x{got:02x}")
    return start, end


def read_integer(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    """The INTEGER at ``pos`` and the position after it."""
    start, end = expect(buf, pos, INTEGER, what)
    if start == end:
        raise ValueError(f"empty INTEGER for {what}")
    # Every INTEGER of a message header holds 32 bits; a longer one would only
    # cost its caller (str() refuses past 4,300 digits).
    if end - start > 9:
        raise ValueError(f"{what} of {end - start} octets")
    return int.from_bytes(buf[start:end], "big", signed=True), end


def read_octets(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    start, end = expect(buf, pos, OCTET_STRING, what)
    return buf[start:end], end


def encode_request_pdu(
    tag: int, request_id: int, field1: int, field2: int, oids: Iterable[bytes]
) -> bytes:
    """A request PDU whose varbinds carry NULL values.

    ``field1``/``field2`` are error-status/error-index, or non-repeaters and
    max-repetitions for GetBulk. ``oids`` are contents octets.
    """
    parts = []
    for oid in oids:
        # A varbind is 30 L 06 L <oid> 05 00; OIDs longer than 123 bytes need
        # long-form lengths, which tlv() handles.
        if len(oid) < 124:
            parts.append(bytes((SEQUENCE, len(oid) + 4, OBJECT_IDENTIFIER, len(oid))))
            parts.append(oid)
            parts.append(_NULL_VALUE)
        else:
            parts.append(tlv(SEQUENCE, tlv(OBJECT_IDENTIFIER, oid) + _NULL_VALUE))
    varbinds = tlv(SEQUENCE, b"".join(parts))
    return tlv(
        tag,
        encode_integer(request_id) + encode_integer(field1) + encode_integer(field2) + varbinds,
    )


def encode_pdu(
    tag: int,
    request_id: int,
    error_status: int,
    error_index: int,
    varbinds: Iterable[tuple[bytes, bytes]],
) -> bytes:
    """A PDU with arbitrary values: ``varbinds`` are (OID contents, encoded value TLV).

    Agents use this; the test suite's fake agents do too.
    """
    body = b"".join(tlv(SEQUENCE, tlv(OBJECT_IDENTIFIER, oid) + value) for oid, value in varbinds)
    return tlv(
        tag,
        encode_integer(request_id)
        + encode_integer(error_status)
        + encode_integer(error_index)
        + tlv(SEQUENCE, body),
    )


def encode_community_message(version: int, community: bytes, pdu: bytes) -> bytes:
    """An SNMPv1 (``version`` 0) or SNMPv2c (``version`` 1) message."""
    return tlv(SEQUENCE, encode_integer(version) + encode_octets(community) + pdu)


def decode_community_message(buf: bytes) -> tuple[int, bytes, int]:
    """``(version, community, position of the PDU)`` of a v1/v2c message."""
    start, end = expect(buf, 0, SEQUENCE, "message")
    if end != len(buf):
        raise ValueError("trailing bytes after the message")
    version, pos = read_integer(buf, start, "version")
    community, pos = read_octets(buf, pos, "community")
    return version, community, pos


def peek_request_id(buf: bytes, pdu_pos: int) -> tuple[int, int]:
    """``(PDU tag, request-id)`` of the PDU at ``pdu_pos``, without decoding it."""
    tag, start, _ = read_tlv(buf, pdu_pos)
    request_id, _ = read_integer(buf, start, "request-id")
    return tag, request_id


def decode_pdu(buf: bytes, pos: int) -> tuple[int, int, int, int, list[RawVarBind]]:
    """``(tag, request-id, error-status, error-index, varbinds)`` of the PDU at ``pos``."""
    tag, start, end = read_tlv(buf, pos)
    if tag not in PDU_TAGS:
        raise ValueError(f"expected a PDU, got tag 0x{tag:02x}")
    request_id, pos = read_integer(buf, start, "request-id")
    error_status, pos = read_integer(buf, pos, "error-status")
    error_index, pos = read_integer(buf, pos, "error-index")
    vb_start, vb_end = expect(buf, pos, SEQUENCE, "varbind list")
    if vb_end > end:
        raise ValueError("varbind list runs past the end of the PDU")
    return tag, request_id, error_status, error_index, decode_varbinds(buf, vb_start, vb_end)


def decode_varbinds(buf: bytes, pos: int, end: int) -> list[RawVarBind]:
    """The varbinds between ``pos`` and ``end``: the hot loop of every walk.

    The compiled loop (``speedups``) reads the well-formed case; whatever it
    does not take, and every error, is :func:`decode_varbinds_python`'s.
    """
    if compiled is not None:
        varbinds = compiled.decode_varbinds(buf, pos, end)
        if varbinds is not None:
            return varbinds
    return decode_varbinds_python(buf, pos, end)


def decode_varbinds_python(buf: bytes, pos: int, end: int) -> list[RawVarBind]:
    """:func:`decode_varbinds` in Python: the reference, and the path without the compiled one.

    Inlined on purpose (no helper calls per element): lengths below 128 take
    one branch, which covers every OID and nearly every value in practice.
    """
    out: list[RawVarBind] = []
    append = out.append
    while pos < end:
        if buf[pos] != SEQUENCE:
            raise ValueError(f"expected a varbind SEQUENCE, got tag 0x{buf[pos]:02x}")
        length = buf[pos + 1]
        if length < 0x80:
            pos += 2
        else:
            count = length & 0x7F
            length = int.from_bytes(buf[pos + 2 : pos + 2 + count], "big")
            pos += 2 + count
        vb_end = pos + length
        if buf[pos] != OBJECT_IDENTIFIER:
            raise ValueError(f"expected an OID in a varbind, got tag 0x{buf[pos]:02x}")
        length = buf[pos + 1]
        if length < 0x80:
            pos += 2
        else:
            count = length & 0x7F
            length = int.from_bytes(buf[pos + 2 : pos + 2 + count], "big")
            pos += 2 + count
        oid = buf[pos : pos + length]
        pos += length
        tag = buf[pos]
        length = buf[pos + 1]
        if length < 0x80:
            pos += 2
        else:
            count = length & 0x7F
            length = int.from_bytes(buf[pos + 2 : pos + 2 + count], "big")
            pos += 2 + count
        if pos + length != vb_end or vb_end > end:
            raise ValueError("varbind lengths are inconsistent")
        append((oid, tag, buf[pos:vb_end]))
        pos = vb_end
    return out


# SNMPv3 (RFC 3412 message, RFC 3414 USM security parameters).

MSG_FLAG_AUTH = 0x01
MSG_FLAG_PRIV = 0x02
MSG_FLAG_REPORTABLE = 0x04
SECURITY_MODEL_USM = 3


def encode_usm_parameters(
    engine_id: bytes,
    boots: int,
    time: int,
    user: bytes,
    auth_params: bytes,
    priv_params: bytes,
) -> tuple[bytes, int]:
    """The msgSecurityParameters OCTET STRING and where ``auth_params`` sits in it.

    The offset (of the contents of msgAuthenticationParameters, from the start
    of the returned bytes) lets the caller write the digest in place after
    computing it over the whole message.
    """
    head = (
        encode_octets(engine_id)
        + encode_integer(boots)
        + encode_integer(time)
        + encode_octets(user)
    )
    auth = encode_octets(auth_params)
    inner = head + auth + encode_octets(priv_params)
    seq = tlv(SEQUENCE, inner)
    outer = tlv(OCTET_STRING, seq)
    # Headers of the OCTET STRING and the SEQUENCE, the fields before, the auth header.
    auth_offset = len(outer) - len(inner) + len(head) + len(auth) - len(auth_params)
    return outer, auth_offset


def encode_v3_message(
    msg_id: int,
    max_size: int,
    flags: int,
    security_parameters: bytes,
    auth_offset: int,
    msg_data: bytes,
) -> tuple[bytes, int]:
    """A whole SNMPv3 message and the absolute offset of its authentication parameters."""
    header = tlv(
        SEQUENCE,
        encode_integer(msg_id)
        + encode_integer(max_size)
        + encode_octets(bytes((flags,)))
        + encode_integer(SECURITY_MODEL_USM),
    )
    before = encode_integer(3) + header
    body = before + security_parameters + msg_data
    message = tlv(SEQUENCE, body)
    return message, len(message) - len(body) + len(before) + auth_offset


def encode_scoped_pdu(context_engine_id: bytes, context_name: bytes, pdu: bytes) -> bytes:
    return tlv(SEQUENCE, encode_octets(context_engine_id) + encode_octets(context_name) + pdu)


class V3Message:
    """The parts of a received SNMPv3 message that the security model needs."""

    __slots__ = (
        "auth_end",
        "auth_params",
        "auth_start",
        "boots",
        "data_pos",
        "engine_id",
        "engine_time",
        "flags",
        "msg_id",
        "priv_params",
        "security_model",
        "user",
    )

    def __init__(self, buf: bytes) -> None:
        start, end = expect(buf, 0, SEQUENCE, "message")
        if end != len(buf):
            raise ValueError("trailing bytes after the message")
        version, pos = read_integer(buf, start, "msgVersion")
        if version != 3:
            raise ValueError(f"not an SNMPv3 message (version {version})")
        h_start, h_end = expect(buf, pos, SEQUENCE, "msgGlobalData")
        self.msg_id, hpos = read_integer(buf, h_start, "msgID")
        _, hpos = read_integer(buf, hpos, "msgMaxSize")
        flags, hpos = read_octets(buf, hpos, "msgFlags")
        if len(flags) != 1:
            raise ValueError("msgFlags is not one byte")
        self.flags = flags[0]
        self.security_model, hpos = read_integer(buf, hpos, "msgSecurityModel")
        if hpos != h_end:
            raise ValueError("msgGlobalData has trailing elements")
        s_start, s_end = expect(buf, h_end, OCTET_STRING, "msgSecurityParameters")
        self.data_pos = s_end
        u_start, u_end = expect(buf, s_start, SEQUENCE, "UsmSecurityParameters")
        self.engine_id, pos = read_octets(buf, u_start, "msgAuthoritativeEngineID")
        self.boots, pos = read_integer(buf, pos, "msgAuthoritativeEngineBoots")
        self.engine_time, pos = read_integer(buf, pos, "msgAuthoritativeEngineTime")
        self.user, pos = read_octets(buf, pos, "msgUserName")
        self.auth_start, self.auth_end = expect(
            buf, pos, OCTET_STRING, "msgAuthenticationParameters"
        )
        self.auth_params = buf[self.auth_start : self.auth_end]
        self.priv_params, pos = read_octets(buf, self.auth_end, "msgPrivacyParameters")
        if pos != u_end or u_end != s_end:
            raise ValueError("UsmSecurityParameters has trailing elements")


def decode_scoped_pdu(buf: bytes, pos: int) -> tuple[bytes, bytes, int]:
    """``(contextEngineID, contextName, position of the PDU)`` of a plaintext ScopedPDU.

    Decrypted ScopedPDUs may carry padding after the SEQUENCE (DES pads to 8
    bytes), so only the SEQUENCE's own length counts.
    """
    start, _ = expect(buf, pos, SEQUENCE, "ScopedPDU")
    engine_id, pos = read_octets(buf, start, "contextEngineID")
    name, pos = read_octets(buf, pos, "contextName")
    return engine_id, name, pos
