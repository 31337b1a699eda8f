"""What NetFlow v9 and IPFIX share: walking the sets of a packet and decoding data sets.

Both versions carry a list of sets, each ``(set id, length)`` then a body; a
set id at or above 256 is data for the template of that id. The version
modules parse their own headers and template sets and call ``walk_sets`` and
``decode_data_set`` for the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from exporter.collectors.flows.records import (
    MALFORMED,
    TRUNCATED,
    UNKNOWN_TEMPLATE,
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


def decode_data_set(
    data: memoryview,
    start: int,
    end: int,
    exporter: str,
    key: TemplateKey,
    store: TemplateStore,
    sampling: SamplingState,
    records: list[FlowRecord],
) -> str | None:
    """Append a data set's records (options records update ``sampling``); a problem, if any."""
    template = store.get(exporter, key)
    if template is None:
        return UNKNOWN_TEMPLATE
    if isinstance(template, OptionsTemplate):
        template.apply(data, start, end, sampling)
    elif isinstance(template, DataTemplate):
        records += template.decode(data, start, end, sampling)
    return None


class SamplingStates:
    """Sampling state per (exporter, version, domain), at most ``limit`` of them.

    Beyond the limit a new domain shares a throwaway state (rate 1), so a
    flood of made-up domain ids cannot grow memory.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._states: dict[tuple[str, int, int], SamplingState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, exporter: str, version: int, domain: int) -> SamplingState:
        key = (exporter, version, domain)
        state = self._states.get(key)
        if state is None:
            state = SamplingState()
            if len(self._states) < self._limit:
                self._states[key] = state
        return state
