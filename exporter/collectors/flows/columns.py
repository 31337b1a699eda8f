"""Flow records as columns: a data set decoded by ``numpy.frombuffer`` and counted per key.

The common case (IPv4 flows from a fixed-size template, NetFlow v5 or a
router's v9/IPFIX template, sampling per exporter) needs no Python per record:
a data set becomes ``RawFlows`` (a numpy view of the datagram, no copy); the
aggregation gathers a few thousand records into ``FlowColumns`` (native
uint64 arrays) and reduces them per distinct key (``reduce_by_key``), so its
Python loop runs once per key.
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
    """One or more data sets of IPv4 flows, a column per record field (native uint64)."""

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

    @classmethod
    def gather(cls, raws: Sequence[RawFlows]) -> FlowColumns:
        """The columns of many data sets: those of one layout and rate are joined first,
        so the per-column work is done once per batch rather than once per data set."""
        groups: dict[tuple[int, int], list[RawFlows]] = {}
        for raw in raws:
            groups.setdefault((id(raw.layout), raw.rate), []).append(raw)
        parts = []
        for group in groups.values():
            first = group[0]
            joined = group[0].array if len(group) == 1 else np.concatenate([r.array for r in group])
            parts.append(first.layout.columns(joined, first.rate))
        return cls.concatenate(parts)


@dataclass(frozen=True, slots=True)
class RawFlows:
    """One data set as it came: a numpy view of the datagram, its layout and sampling rate."""

    layout: ColumnLayout
    array: npt.NDArray[np.void]
    rate: int

    def __len__(self) -> int:
        return len(self.array)

    def records(self) -> list[tuple[int, int, int, int, int, int, int, int]]:
        return self.layout.columns(self.array, self.rate).records()


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
        """A view of the data set's records: no copy, nothing per record."""
        count = (end - offset) // self.dtype.itemsize
        return RawFlows(
            self, np.frombuffer(data, dtype=self.dtype, count=count, offset=offset), rate
        )

    def columns(self, raw: npt.NDArray[np.void], rate: int) -> FlowColumns:
        count = len(raw)
        columns = {name: raw[name].astype(np.uint64) for name in NAMES if name not in self.missing}
        for name in self.missing:
            columns[name] = np.zeros(count, dtype=np.uint64)
        if rate != 1:
            columns["octets"] *= np.uint64(rate)
            columns["packets"] *= np.uint64(rate)
        return FlowColumns(**columns)


def reduce_by_key(keys: Column, *values: Column) -> tuple[list[int], list[list[int]], list[int]]:
    """Distinct keys, the sum of each of ``values`` per key, and the records per key.

    Sorting and ``add.reduceat`` keep the sums exact in uint64 (``bincount``
    would go through float64).
    """
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, len(ordered)))
    sums = [np.add.reduceat(value[order], starts).tolist() for value in values]
    return ordered[starts].tolist(), sums, counts.tolist()
