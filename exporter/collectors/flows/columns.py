"""Flow records as columns: a data set decoded by ``numpy.frombuffer`` and counted per key.

The common case (IPv4 flows from a fixed-size template, NetFlow v5 or a
router's v9/IPFIX template, sampling per exporter) needs no Python per record:
a data set becomes ``RawFlows`` (a view of its records in the datagram); the
aggregation copies those bytes into ``PendingFlows`` (one ``bytearray`` per
layout and rate), turns a few thousand records at a time into ``FlowColumns``
(native uint64 arrays, one ``numpy.frombuffer`` per group) and reduces them
per distinct key (``reduce_by_key``), so its Python loop runs once per key.
Everything else (IPv6, variable-length fields, per-flow sampling) takes the
tuple path in ``templates``; both give the same counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Column = npt.NDArray[np.uint64]

# The columns, in FlowRecord order after the two addresses.
NAMES = ("source", "destination", "octets", "packets", "inputs", "outputs", "protocol", "port")


@dataclass(frozen=True, slots=True)
class FlowColumns:
    """Flows of one or more data sets, a column per record field (native uint64)."""

    source: Column
    destination: Column
    octets: Column
    packets: Column
    inputs: Column
    outputs: Column
    protocol: Column
    port: Column

    def __len__(self) -> int:
        return len(self.source)

    def records(self) -> list[tuple[int, int, int, int, int, int, int, int]]:
        """The same flows as ``FlowRecord`` tuples (for tests and the odd caller)."""
        return list(zip(*(getattr(self, name).tolist() for name in NAMES), strict=True))

    @classmethod
    def concatenate(cls, parts: Sequence[FlowColumns]) -> FlowColumns:
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(part, name) for part in parts]) for name in NAMES))


# One data set as it came: (layout, its records' bytes as a view of the datagram, record
# count, sampling rate). A plain tuple: one is built per data set, the cheapest object there is.
RawFlows = tuple["ColumnLayout", memoryview, int, int]


def raw_records(raw: RawFlows) -> list[tuple[int, int, int, int, int, int, int, int]]:
    """The flows of a data set as ``FlowRecord`` tuples (tests compare these)."""
    layout, data, _, rate = raw
    return layout.columns(data, rate).records()


class PendingFlows:
    """Columnar flows not counted yet: record bytes copied out of their datagrams.

    Data sets of one layout and sampling rate are appended to one ``bytearray``
    (a copy of their records only, so no datagram stays alive), and become
    columns in one ``numpy.frombuffer`` per group when ``take`` is called.
    """

    __slots__ = ("groups", "records", "size")

    def __init__(self) -> None:
        # (id of the layout, rate) -> (layout, rate, record bytes); the layout is held, so
        # its id is not reused while the group exists.
        self.groups: dict[tuple[int, int], tuple[ColumnLayout, int, bytearray]] = {}
        self.records = 0
        self.size = 0

    def add(self, raw: RawFlows) -> None:
        layout, data, count, rate = raw
        group = self.groups.get((id(layout), rate))
        if group is None:
            group = self.groups[id(layout), rate] = (layout, rate, bytearray())
        group[2].extend(data)
        self.records += count
        self.size += len(data)

    def take(self) -> FlowColumns | None:
        """Every pending flow as columns (None if there is none); empties the buffer."""
        if not self.groups:
            return None
        parts = [layout.columns(data, rate) for layout, rate, data in self.groups.values()]
        self.groups = {}
        self.records = self.size = 0
        return FlowColumns.concatenate(parts)


@dataclass(frozen=True, slots=True)
class ColumnLayout:
    """Where each column sits in a fixed-size record: a numpy dtype over the raw bytes."""

    dtype: np.dtype[np.void]
    # Columns the template lacks (filled with zeros).
    missing: tuple[str, ...]

    @classmethod
    def build(cls, record_size: int, fields: dict[str, tuple[int, int]]) -> ColumnLayout:
        """``fields``: column name -> (offset, length in 1, 2, 4 or 8 bytes), big-endian."""
        names = [name for name in NAMES if name in fields]
        dtype = np.dtype(
            {
                "names": names,
                "formats": [f">u{fields[name][1]}" for name in names],
                "offsets": [fields[name][0] for name in names],
                "itemsize": record_size,
            }
        )
        return cls(dtype, tuple(name for name in NAMES if name not in fields))

    def decode(self, data: memoryview, offset: int, end: int, rate: int) -> RawFlows:
        """The data set's whole records, as a view: no copy, nothing per record."""
        size = self.dtype.itemsize
        count = (end - offset) // size
        return (self, data[offset : offset + count * size], count, rate)

    def columns(self, data: bytes | bytearray | memoryview, rate: int) -> FlowColumns:
        raw = np.frombuffer(data, dtype=self.dtype)
        count = len(raw)
        columns = {name: raw[name].astype(np.uint64) for name in NAMES if name not in self.missing}
        for name in self.missing:
            columns[name] = np.zeros(count, dtype=np.uint64)
        if rate != 1:
            columns["octets"] *= np.uint64(rate)
            columns["packets"] *= np.uint64(rate)
        return FlowColumns(**columns)


def reduce_by_key(keys: Column, *values: Column) -> tuple[Column, list[Column], Column]:
    """Distinct keys (sorted), the sum of each of ``values`` per key, and the records per key.

    ``keys`` must not be empty. Sorting and ``add.reduceat`` keep the sums
    exact in uint64 (``bincount`` would go through float64).
    """
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, len(ordered))).astype(np.uint64)
    sums = [np.add.reduceat(value[order], starts) for value in values]
    return ordered[starts], sums, counts
