"""Flow records as columns: a data set decoded by ``numpy.frombuffer`` and counted per key.

The common case (IPv4 flows from a fixed-size template, NetFlow v5 or a
router's v9/IPFIX template, sampling per exporter) needs no Python per record:
a data set becomes ``RawFlows`` (a view of its records in the datagram); the
aggregation copies those bytes into ``PendingFlows`` (one ``bytearray`` per
layout and rate), turns a few thousand records at a time into ``FlowColumns``
(one ``numpy.frombuffer`` per group; each column converted to native uint64
when first read) and reduces them per distinct key (``reduce_by_key``), so
its Python loop runs once per key.
Everything else (IPv6, variable-length fields, per-flow sampling) takes the
tuple path in ``templates``; both give the same counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

Column = npt.NDArray[np.uint64]

# The columns, in FlowRecord order after the two addresses.
NAMES = ("source", "destination", "octets", "packets", "inputs", "outputs", "protocol", "port")
# Keys below this are reduced through a dense table (see ``reduce_by_key``).
_DENSE_KEYS: Final = 1 << 16
# Keys and positions of up to 32 bits are sorted packed in one uint64 (see ``reduce_by_key``).
_INDEX_BITS: Final = np.uint64(32)
_INDEX_MASK: Final = np.uint64(0xFFFFFFFF)
_INDEX_LIMIT: Final = 0xFFFFFFFF
# The columns the sampling rate multiplies.
_COUNTERS = frozenset(("octets", "packets"))


class FlowColumns:
    """Flows of one or more data sets, a column per record field (native uint64).

    Each column is converted from the records' bytes when first read, so
    columns nobody reads (protocol and port, unless conversations are
    counted) cost nothing.
    """

    __slots__ = ("_converted", "_length", "_parts")

    def __init__(self, parts: Sequence[tuple[ColumnLayout, npt.NDArray[np.void], int]]) -> None:
        # (layout, its records as a structured array, sampling rate) per group.
        self._parts = parts
        self._length = sum(len(records) for _, records, _ in parts)
        self._converted: dict[str, Column] = {}

    def __len__(self) -> int:
        return self._length

    def column(self, name: str) -> Column:
        """The ``name`` column of every part, sampling rate applied to counters."""
        found = self._converted.get(name)
        if found is None:
            pieces = [layout.column(records, name, rate) for layout, records, rate in self._parts]
            found = self._converted[name] = (
                pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
            )
        return found

    @property
    def source(self) -> Column:
        return self.column("source")

    @property
    def destination(self) -> Column:
        return self.column("destination")

    @property
    def octets(self) -> Column:
        return self.column("octets")

    @property
    def packets(self) -> Column:
        return self.column("packets")

    @property
    def inputs(self) -> Column:
        return self.column("inputs")

    @property
    def outputs(self) -> Column:
        return self.column("outputs")

    @property
    def protocol(self) -> Column:
        return self.column("protocol")

    @property
    def port(self) -> Column:
        return self.column("port")

    def records(self) -> list[tuple[int, int, int, int, int, int, int, int]]:
        """The same flows as ``FlowRecord`` tuples (for tests and the odd caller)."""
        return list(zip(*(self.column(name).tolist() for name in NAMES), strict=True))


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
        parts = [
            (layout, np.frombuffer(data, dtype=layout.dtype), rate)
            for layout, rate, data in self.groups.values()
        ]
        self.groups = {}
        self.records = self.size = 0
        return FlowColumns(parts)


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
        """The flows of ``data`` (whole records of this layout) as columns."""
        return FlowColumns([(self, np.frombuffer(data, dtype=self.dtype), rate)])

    def column(self, records: npt.NDArray[np.void], name: str, rate: int) -> Column:
        """One column of ``records`` (a structured array of this layout) as native uint64."""
        if name in self.missing:
            return np.zeros(len(records), dtype=np.uint64)
        column = records[name].astype(np.uint64)
        if rate != 1 and name in _COUNTERS:
            column *= np.uint64(rate)
        return column


def reduce_by_key(keys: Column, *values: Column) -> tuple[Column, list[Column], Column]:
    """Distinct keys (sorted), the sum of each of ``values`` per key, and the records per key.

    ``keys`` must not be empty. Sums stay exact in uint64 (``bincount`` weights
    would go through float64): small keys (ifIndexes) are summed into a dense
    table with ``add.at``, others sorted and summed with ``add.reduceat``.
    """
    largest = int(keys.max())
    if largest < _DENSE_KEYS:
        slots = keys.astype(np.intp)
        per_key = np.bincount(slots)
        present = np.flatnonzero(per_key)
        sums = []
        for value in values:
            table = np.zeros(len(per_key), dtype=np.uint64)
            np.add.at(table, slots, value)
            sums.append(table[present])
        return present.astype(np.uint64), sums, per_key[present].astype(np.uint64)
    if len(keys) <= _INDEX_LIMIT and largest <= _INDEX_LIMIT:
        # Keys of 32 bits (IPv4 addresses, conversations) with their positions packed in
        # the low half: one plain sort orders both, cheaper than argsort and a gather.
        packed = np.sort((keys << _INDEX_BITS) | np.arange(len(keys), dtype=np.uint64))
        ordered = packed >> _INDEX_BITS
        order = (packed & _INDEX_MASK).astype(np.intp)
    else:
        order = np.argsort(keys)
        ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, len(ordered))).astype(np.uint64)
    sums = [np.add.reduceat(value[order], starts) for value in values]
    return ordered[starts], sums, counts
