"""What every flow parser hands the aggregation: records as plain tuples; bad-packet errors.

A record is the tuple ``(source, destination, bytes, packets, input_ifindex,
output_ifindex, protocol, destination_port)``, with the sampling rate already
applied to bytes and packets. Addresses are ``int`` for IPv4 and 16 ``bytes``
for IPv6 (the two never compare equal, so one dict holds both), ``None`` when
the record carries none. Records are tuples rather than dataclasses because
the ingest path builds about a hundred thousand of them a second straight
from ``struct.iter_unpack``: a tuple costs one allocation and no ``__init__``.
"""

from __future__ import annotations

import ipaddress
from typing import Final

# (source, destination, bytes, packets, input ifIndex, output ifIndex, protocol, destination port)
FlowRecord = tuple[int | bytes | None, int | bytes | None, int, int, int, int, int, int]
Address = int | bytes

SOURCE: Final = 0
DESTINATION: Final = 1
BYTES: Final = 2
PACKETS: Final = 3
INPUT_IFINDEX: Final = 4
OUTPUT_IFINDEX: Final = 5
PROTOCOL: Final = 6
DESTINATION_PORT: Final = 7

# The ``version`` label of each wire version.
VERSION_LABELS: Final = {5: "v5", 9: "v9", 10: "ipfix"}

# Why a packet (or part of one) was dropped: the values of scout_flow_bad_packets_total{reason}.
TRUNCATED: Final = "truncated"  # shorter than its own header or a length field says
MALFORMED: Final = "malformed"  # impossible field values (zero-length records, bad set ids)
UNKNOWN_VERSION: Final = "unknown_version"
UNKNOWN_TEMPLATE: Final = "unknown_template"  # data before (or without) its template
TEMPLATE_CHURN: Final = "template_churn"  # a new template from an exporter over its share
NOT_ALLOWED: Final = "not_allowed"  # from an address outside collectors.flows.exporters
SERIES_BUDGET: Final = "series_budget"  # a new exporter the series budget has no room for
BAD_PACKET_REASONS: Final = (
    TRUNCATED,
    MALFORMED,
    UNKNOWN_VERSION,
    UNKNOWN_TEMPLATE,
    TEMPLATE_CHURN,
    NOT_ALLOWED,
    SERIES_BUDGET,
)


class BadPacketError(ValueError):
    """A flow packet that cannot be read; ``reason`` is one of ``BAD_PACKET_REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def scale(record: FlowRecord, rate: int) -> FlowRecord:
    """``record`` with bytes and packets multiplied by the sampling rate (1 in ``rate``)."""
    s, d, b, p, i, o, pr, dp = record
    return (s, d, b * rate, p * rate, i, o, pr, dp)


def format_address(address: Address) -> str:
    """The text form of a record address (``int`` IPv4, 16-byte IPv6)."""
    if isinstance(address, int):
        return str(ipaddress.IPv4Address(address))
    return str(ipaddress.IPv6Address(address))
