"""What NetFlow v9 and IPFIX share: walking the sets of a packet and decoding data sets.

Both versions carry a list of sets, each ``(set id, length)`` then a body; a
set id at or above 256 is data for the template of that id. The version
modules parse their own headers and template sets and call ``walk_sets`` and
``decode_data_set`` for the rest.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from exporter.collectors.flows.columns import RawFlows, raw_records
from exporter.collectors.flows.records import (
    MALFORMED,
    TRUNCATED,
    UNKNOWN_TEMPLATE,
    VERSION_LABELS,
    BadPacketError,
    FlowRecord,
)
from exporter.collectors.flows.templates import (
    DataTemplate,
    OptionsTemplate,
    SamplingState,
    TemplateKey,
    TemplateStore,
)

# Reads a template set body: (data, start, end, exporter, domain, store).
TemplateSetReader = Callable[[memoryview, int, int, str, int, TemplateStore], None]
SET_HEADER: Final = struct.Struct("!HH")
FIRST_DATA_SET_ID: Final = 256


def walk_sets(data: memoryview, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(set id, body start, body end)`` for each set; raises on a lying length."""
    while end - offset >= SET_HEADER.size:
        set_id, length = SET_HEADER.unpack_from(data, offset)
        if length < SET_HEADER.size:
            raise BadPacketError(MALFORMED, f"set {set_id} length {length}")
        if offset + length > end:
            raise BadPacketError(TRUNCATED, f"set {set_id} length {length} past the packet")
        yield set_id, offset + SET_HEADER.size, offset + length
        offset += length


class DecodedFlows:
    """What one packet held: its version label, flows as columns (IPv4 fast path) and as
    tuples, the first problem met (a set skipped for an unknown template, say), and
    its data records, options records included (what an IPFIX sequence number
    counts; None when a set of an unknown template left it unknown).

    A plain class with slots: one is built per datagram, so its init is kept cheap.
    """

    __slots__ = ("columns", "data_records", "problem", "records", "version")

    def __init__(self, version: str, columns: list[RawFlows] | None = None) -> None:
        self.version = version
        self.records: list[FlowRecord] = []
        self.columns: list[RawFlows] = columns if columns is not None else []
        self.problem: str | None = None
        self.data_records: int | None = 0

    def all_records(self) -> list[FlowRecord]:
        """Every flow as a tuple, columns first (tests compare these)."""
        found: list[FlowRecord] = []
        for part in self.columns:
            found += raw_records(part)
        return found + self.records


def decode_data_set(
    data: memoryview,
    start: int,
    end: int,
    exporter: str,
    key: TemplateKey,
    store: TemplateStore,
    sampling: SamplingState,
    decoded: DecodedFlows,
) -> str | None:
    """Add a data set's flows to ``decoded`` (options records update ``sampling``); a problem."""
    template = store.get(exporter, key)
    if template is None:
        decoded.data_records = None
        return UNKNOWN_TEMPLATE
    if isinstance(template, OptionsTemplate):
        count = template.apply(data, start, end, sampling)
    elif template.columns is not None:
        count = 0
        if end - start >= template.columns.dtype.itemsize:
            part = template.columns.decode(data, start, end, sampling.default)
            decoded.columns.append(part)
            count = part[2]
    else:
        records = template.decode(data, start, end, sampling)
        decoded.records.extend(records)
        count = len(records)
    if decoded.data_records is not None:
        decoded.data_records += count
    return None


def read_sets(
    view: memoryview,
    offset: int,
    end: int,
    key: tuple[str, int, int],
    store: TemplateStore,
    sampling: SamplingStates,
    template_sets: Mapping[int, TemplateSetReader],
) -> DecodedFlows:
    """Records of every data set from ``offset`` to ``end``, and the first problem met.

    ``key`` is (exporter, version, domain); ``template_sets`` reads the set ids
    the version uses for templates. A lying structure raises ``BadPacketError``;
    a set that needs an unknown template, or brings one the store refuses, is
    skipped and named as the problem. Other ids below 256 are reserved: skipped.
    """
    exporter, version, domain = key
    state = sampling.get(key)
    decoded = DecodedFlows(VERSION_LABELS[version])
    try:
        for set_id, start, stop in walk_sets(view, offset, end):
            try:
                if set_id >= FIRST_DATA_SET_ID:
                    template = (version, domain, set_id)
                    found = decode_data_set(
                        view, start, stop, exporter, template, store, state, decoded
                    )
                    decoded.problem = decoded.problem or found
                elif set_id in template_sets:
                    template_sets[set_id](view, start, stop, exporter, domain, store)
            except BadPacketError as error:
                if error.reason in (MALFORMED, TRUNCATED):
                    raise
                decoded.problem = decoded.problem or error.reason
    finally:
        sampling.keep(key, state)
    return decoded


def data_set_columns(
    view: memoryview,
    offset: int,
    end: int,
    key: tuple[str, int, int],
    store: TemplateStore,
    sampling: SamplingStates,
) -> list[RawFlows] | None:
    """The packet's flows when it holds only data sets of known columnar templates, else None.

    The quick read of the common packet: no template or options set, no
    unknown template, no odd structure, so nothing but its flows to take and
    no state to change. For anything else it returns None without a trace,
    and ``read_sets`` reads the packet again and says what is wrong with it.
    ``key`` is (exporter, version, domain), as for ``read_sets``.
    """
    exporter, version, domain = key
    parts: list[RawFlows] = []
    rate = sampling.default_rate(key)
    while end - offset >= SET_HEADER.size:
        set_id, length = SET_HEADER.unpack_from(view, offset)
        start, stop = offset + SET_HEADER.size, offset + length
        if set_id < FIRST_DATA_SET_ID or length < SET_HEADER.size or stop > end:
            return None
        template = store.get(exporter, (version, domain, set_id))
        if not isinstance(template, DataTemplate) or template.columns is None:
            return None
        if stop - start >= template.columns.dtype.itemsize:
            parts.append(template.columns.decode(view, start, stop, rate))
        offset = stop
    return parts


class SamplingStates:
    """Sampling state per (exporter, version, domain), at most ``limit`` of them.

    A state is kept only once an options record gave it a rate: packets that
    announce none (a flood of made-up domain ids, say) hold no memory and take
    no room. Beyond the limit the least recently used state of the exporter
    holding the most is forgotten (its next options record brings it back), so
    a flood of options from one exporter recycles its own states and cannot
    leave another exporter without its sampling rate.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._states: OrderedDict[tuple[str, int, int], SamplingState] = OrderedDict()
        self._held: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: tuple[str, int, int]) -> SamplingState:
        """The state of (exporter, version, domain): a fresh rate-1 one if none is kept."""
        state = self._states.get(key)
        if state is None:
            return SamplingState()
        self._states.move_to_end(key)
        return state

    def default_rate(self, key: tuple[str, int, int]) -> int:
        """The exporter-wide rate of (exporter, version, domain), as ``get(key).default``."""
        state = self._states.get(key)
        if state is None:
            return 1
        self._states.move_to_end(key)
        return state.default

    def items(self) -> list[tuple[tuple[str, int, int], SamplingState]]:
        """The states held, least recently used first."""
        return list(self._states.items())

    def keep(self, key: tuple[str, int, int], state: SamplingState) -> None:
        """Hold ``state`` (from ``get``) for later packets if options records gave it a rate."""
        if key in self._states or (state.default == 1 and not state.samplers):
            return
        exporter = key[0]
        if len(self._states) >= self._limit:
            largest = max(self._held, key=self._held.__getitem__)
            if self._held.get(exporter, 0) + 1 > self._held[largest]:
                largest = exporter
            oldest = next((held for held in self._states if held[0] == largest), None)
            if oldest is None:  # only with limit 0: nothing is held, nothing is kept
                return
            del self._states[oldest]
            self._held[largest] -= 1
            if not self._held[largest]:
                del self._held[largest]
        self._states[key] = state
        self._held[exporter] = self._held.get(exporter, 0) + 1
