"""NetFlow v5: a fixed 24-byte header and up to 30 fixed 48-byte records.

The header's last field carries the sampling mode (2 bits) and interval (14
bits); an interval above 1 multiplies every record's bytes and packets.
"""

from __future__ import annotations

import struct
from typing import Final

from exporter.collectors.flows.columns import ColumnLayout, RawFlows
from exporter.collectors.flows.records import MALFORMED, TRUNCATED, BadPacketError

HEADER: Final = struct.Struct("!HHIIIIBBH")
# The two header fields read: count and sampling (the rest is skipped, not unpacked).
_COUNT_AND_SAMPLING: Final = struct.Struct("!2xH18xH")
# srcaddr, dstaddr, (nexthop), input, output, dPkts, dOctets, (First, Last, srcport),
# dstport, (pad1, tcp_flags), prot, (tos, src_as, dst_as, masks, pad2): read as columns.
RECORD: Final = struct.Struct("!II4xHHII10xH2xB9x")
MAX_RECORDS: Final = 30
_COLUMNS: Final = ColumnLayout.build(
    RECORD.size,
    {
        "source": (0, 4),
        "destination": (4, 4),
        "inputs": (12, 2),
        "outputs": (14, 2),
        "packets": (16, 4),
        "octets": (20, 4),
        "port": (34, 2),
        "protocol": (38, 1),
    },
)
_SAMPLING_INTERVAL_MASK: Final = 0x3FFF

assert HEADER.size == 24
assert RECORD.size == 48
assert _COUNT_AND_SAMPLING.size == HEADER.size


def parse_v5(data: bytes | memoryview) -> RawFlows:
    """The records of one v5 packet, sampling applied; ``BadPacketError`` if it lies."""
    if len(data) < HEADER.size:
        raise BadPacketError(TRUNCATED, "v5 header")
    count, sampling = _COUNT_AND_SAMPLING.unpack_from(data)
    if not 0 < count <= MAX_RECORDS:
        raise BadPacketError(MALFORMED, f"v5 record count {count}")
    end = HEADER.size + count * RECORD.size
    if len(data) < end:
        raise BadPacketError(TRUNCATED, f"v5 count {count} needs {end} bytes, got {len(data)}")
    rate = sampling & _SAMPLING_INTERVAL_MASK
    # What ``_COLUMNS.decode`` gives, written out: this runs once per datagram.
    view = data if isinstance(data, memoryview) else memoryview(data)
    return (_COLUMNS, view[HEADER.size : end], count, rate or 1)
