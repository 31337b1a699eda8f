"""One entry point for every flow packet: picks the parser by version, keeps templates bounded."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

from exporter.collectors.flows.columns import RawFlows
from exporter.collectors.flows.ipfix import HEADER as IPFIX_HEADER
from exporter.collectors.flows.ipfix import ipfix_columns, parse_ipfix
from exporter.collectors.flows.records import UNKNOWN_VERSION, BadPacketError
from exporter.collectors.flows.sets import SET_HEADER, DecodedFlows, SamplingStates
from exporter.collectors.flows.templates import TemplateStore
from exporter.collectors.flows.v5 import HEADER as V5_HEADER
from exporter.collectors.flows.v5 import parse_v5
from exporter.collectors.flows.v9 import HEADER as V9_HEADER
from exporter.collectors.flows.v9 import parse_v9, v9_columns

# The bytes of a datagram's start that decide how ``decode_columns`` reads it, per
# version: v5 version, record count, engine and sampling; v9 version, source id and
# first set header; IPFIX version, length, domain and first set header. Clocks and
# sequence numbers are left out. Datagrams of one sender and length that agree on
# these are read alike: the same count of records of the same layout and rate at the
# same place, and one sequence stream (the v5 engine, v9 source id, IPFIX domain).
SIGNATURE_BYTES: Final = 24


def _signature_mask(*spans: tuple[int, int]) -> npt.NDArray[np.uint8]:
    mask = np.zeros(SIGNATURE_BYTES, dtype=np.uint8)
    for start, stop in spans:
        mask[start:stop] = 0xFF
    return mask


# The offsets above are the RFC headers': v5's 24 bytes end with the engine type and id
# and the sampling field,
# v9's 20 with the source id, IPFIX's 16 with the domain; the set header follows.
assert V5_HEADER.size == SIGNATURE_BYTES
assert V9_HEADER.size + SET_HEADER.size == SIGNATURE_BYTES
assert IPFIX_HEADER.size + SET_HEADER.size == 20
# Rows: any other version (its version bytes only), v5, v9, IPFIX.
_SIGNATURE_MASKS: Final = np.stack(
    [
        _signature_mask((0, 2)),
        _signature_mask((0, 4), (20, 24)),
        _signature_mask((0, 2), (16, 24)),
        _signature_mask((0, 4), (12, 20)),
    ]
)
# The mask row of a datagram by the low byte of its version (the high byte must be 0).
_MASK_BY_VERSION: Final = np.zeros(256, dtype=np.intp)
_MASK_BY_VERSION[[5, 9, 10]] = (1, 2, 3)
# A run key: the masked signature as three words, then length and sender in a fourth.
_KEY_WORDS: Final = SIGNATURE_BYTES // 8 + 1
_SHORT: Final = np.uint64(1 << 63)


# Where each version's header carries its sequence number and its sequence stream's
# id (see ``sequence``): v5 flow_sequence and engine type and id; v9 sequence number
# and source id; IPFIX Sequence Number and observation domain.
SEQUENCE_AT: Final = {5: 16, 9: 12, 10: 8}
_STREAM_AT: Final = {5: (20, 22), 9: (16, 20), 10: (12, 16)}
VERSION_NUMBERS: Final = {"v5": 5, "v9": 9, "ipfix": 10}


# v5 and v9 headers carry the exporter's uptime (ms since boot) here; IPFIX has none.
UPTIME_AT: Final = 4


def uptime_of(data: bytes | memoryview, version: int) -> int | None:
    """The exporter's uptime in a v5 or v9 header (a restart sets it back); None for IPFIX."""
    return None if version == 10 else int.from_bytes(data[UPTIME_AT : UPTIME_AT + 4])


def sequence_of(data: bytes | memoryview, version: int) -> tuple[int, int]:
    """(stream id, sequence number) of a datagram of ``version`` that decoded."""
    start, stop = _STREAM_AT[version]
    at = SEQUENCE_AT[version]
    return int.from_bytes(data[start:stop]), int.from_bytes(data[at : at + 4])


def like_runs(
    slots: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64], senders: npt.NDArray[np.int64]
) -> list[int]:
    """Where runs of consecutive like datagrams start, then the count: ``[0, ..., len]``.

    Row ``i`` of ``slots`` holds datagram ``i`` (``lengths[i]`` bytes), sent by
    ``senders[i]`` (equal numbers, one sender). Alike: one sender, one length,
    one signature (``SIGNATURE_BYTES``); a datagram shorter than the signature
    is a run of its own. Whether a run can be read in one step is
    ``FlowDecoder.run_layout``'s to say. A handful of whole-array steps,
    whatever the count: this runs once per received batch.
    """
    count = len(lengths)
    if count < 2 or slots.shape[1] < SIGNATURE_BYTES:
        return list(range(count + 1))
    heads = slots[:, :SIGNATURE_BYTES]
    masks = _MASK_BY_VERSION[heads[:, 1]]
    masks[heads[:, 0] != 0] = 0
    keys = np.empty((count, _KEY_WORDS), dtype=np.uint64)
    keys[:, :-1] = (heads & _SIGNATURE_MASKS[masks]).view(np.uint64)
    keys[:, -1] = lengths.astype(np.uint64) | senders.astype(np.uint64) << np.uint64(32)
    short = np.flatnonzero(lengths < SIGNATURE_BYTES)
    if short.size:  # a key no neighbour has
        keys[short, -1] = short.astype(np.uint64) | _SHORT
    rows = keys.view(f"V{keys.itemsize * _KEY_WORDS}").ravel()
    changes = np.flatnonzero(rows[1:] != rows[:-1])
    return [0, *(changes + 1).tolist(), count]


class FlowDecoder:
    """Decodes NetFlow v5, v9 and IPFIX packets; template state is per exporter address.

    ``decode`` raises ``BadPacketError`` for a packet it cannot read at all. At
    most ``max_templates`` templates are held (see ``templates.TemplateStore``),
    and as many per-domain sampling states. IPv4 flows from fixed-size
    templates come as columns, the rest as tuples (see ``sets.DecodedFlows``).
    """

    def __init__(self, max_templates: int) -> None:
        self.templates = TemplateStore(max_templates)
        self.sampling = SamplingStates(max_templates)

    def carry_from(self, previous: FlowDecoder, keep: Callable[[str], bool]) -> None:
        """Hold the templates and sampling rates ``previous`` learned from the exporters
        ``keep`` admits, within this decoder's limits.

        Both are the exporters' own state, per address and domain (source id),
        whatever the collector's settings: a reload that dropped them would leave
        every data packet ``unknown_template`` until each router sends its
        templates again, which some do only every 30 minutes.
        """
        for exporter, key, template in previous.templates.items():
            if keep(exporter):
                # Past an exporter's share of a smaller store, its oldest make room.
                with contextlib.suppress(BadPacketError):
                    self.templates.put(exporter, key, template)
        for domain, state in previous.sampling.items():
            if keep(domain[0]):
                self.sampling.keep(domain, state)

    def decode(self, data: bytes | memoryview, exporter: str) -> DecodedFlows:
        version = (data[0] << 8 | data[1]) if len(data) >= 2 else 0
        if version == 5:
            return DecodedFlows("v5", [parse_v5(data)])
        if version == 9:
            return parse_v9(data, exporter, self.templates, self.sampling)
        if version == 10:
            return parse_ipfix(data, exporter, self.templates, self.sampling)
        raise BadPacketError(UNKNOWN_VERSION, f"version {version}")

    def decode_columns(
        self, data: bytes | memoryview, exporter: str
    ) -> tuple[str, list[RawFlows]] | None:
        """(version label, flows) of the common packet, read quickly; None: use ``decode``.

        The common packet is NetFlow v5, or v9/IPFIX of data sets whose
        templates are known and columnar. It yields the same flows ``decode``
        would, and changes no template or sampling state; a packet that would
        (templates, options) or may be bad gives None, for ``decode`` to read
        and report. ``BadPacketError`` only where ``decode`` raises the same.
        """
        version = (data[0] << 8 | data[1]) if len(data) >= 2 else 0
        if version == 5:
            return "v5", [parse_v5(data)]
        if version == 9:
            found = v9_columns(data, exporter, self.templates, self.sampling)
            return None if found is None else ("v9", found)
        if version == 10:
            found = ipfix_columns(data, exporter, self.templates, self.sampling)
            return None if found is None else ("ipfix", found)
        return None

    def run_layout(
        self, data: bytes | memoryview, exporter: str
    ) -> tuple[str, RawFlows, int] | None:
        """How to read a run of like datagrams (``like_runs``) that starts with ``data``.

        (version label, the flows of ``data``, where its records start) when
        ``decode_columns`` reads it as exactly one data set that fills it: then
        every datagram alike holds as many records of the same layout and
        sampling rate at the same place, and reading them all is one slice each.
        None otherwise (read each datagram on its own); raises what
        ``decode_columns`` raises.
        """
        quick = self.decode_columns(data, exporter)
        if quick is None or len(quick[1]) != 1:
            return None
        version, (flows,) = quick
        if version == "v5":
            return version, flows, V5_HEADER.size
        header = V9_HEADER.size if version == "v9" else IPFIX_HEADER.size
        # v9 sets run to the datagram's end, IPFIX sets to the message length.
        end = len(data) if version == "v9" else int.from_bytes(data[2:4], "big")
        set_length = int.from_bytes(data[header + 2 : header + 4], "big")
        if end - (header + set_length) >= SET_HEADER.size:  # room for another set
            return None
        return version, flows, header + SET_HEADER.size
