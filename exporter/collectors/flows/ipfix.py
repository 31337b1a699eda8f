"""IPFIX (RFC 7011): a 16-byte header, then template (2), options template (3) and data sets.

Templates are keyed by exporter address, observation domain and template id;
a template record with no fields withdraws its template. Enterprise-specific
fields and variable-length fields are skipped correctly (the latter take the
slow path). Options records only feed the sampling state.
"""

from __future__ import annotations

import struct
from functools import partial
from typing import Final

from exporter.collectors.flows.columns import RawFlows
from exporter.collectors.flows.records import MALFORMED, TRUNCATED, BadPacketError
from exporter.collectors.flows.sets import (
    FIRST_DATA_SET_ID,
    DecodedFlows,
    SamplingStates,
    data_set_columns,
    read_sets,
)
from exporter.collectors.flows.templates import (
    FieldSpec,
    Layout,
    TemplateStore,
    cached_data_template,
    check_field_count,
    data_template_from_wire,
    options_template,
)

VERSION: Final = 10
HEADER: Final = struct.Struct("!HHIII")
TEMPLATE_SET: Final = 2
OPTIONS_SET: Final = 3
_PAIR: Final = struct.Struct("!HH")
_ENTERPRISE_BIT: Final = 0x8000


def _fields(
    data: memoryview, offset: int, end: int, count: int
) -> tuple[tuple[FieldSpec, ...], int]:
    fields = []
    for _ in range(count):
        if offset + 4 > end:
            raise BadPacketError(TRUNCATED, "IPFIX template field")
        element, length = _PAIR.unpack_from(data, offset)
        offset += 4
        enterprise = 0
        if element & _ENTERPRISE_BIT:
            if offset + 4 > end:
                raise BadPacketError(TRUNCATED, "IPFIX enterprise number")
            enterprise = int.from_bytes(data[offset : offset + 4]) or 1
            element &= ~_ENTERPRISE_BIT
            offset += 4
        fields.append(FieldSpec(element, length, enterprise))
    return tuple(fields), offset


def _templates(
    data: memoryview, start: int, end: int, exporter: str, domain: int, store: TemplateStore
) -> None:
    _template_set(data, start, end, exporter, domain, store, options=False)


def _options_templates(
    data: memoryview, start: int, end: int, exporter: str, domain: int, store: TemplateStore
) -> None:
    _template_set(data, start, end, exporter, domain, store, options=True)


def _template_set(
    data: memoryview,
    start: int,
    end: int,
    exporter: str,
    domain: int,
    store: TemplateStore,
    *,
    options: bool,
) -> None:
    header = 6 if options else 4
    offset = start
    while end - offset >= header:
        template_id, count = _PAIR.unpack_from(data, offset)
        if template_id == 0 == count:
            break  # padding to the set's end
        if template_id < FIRST_DATA_SET_ID:
            raise BadPacketError(MALFORMED, f"IPFIX template id {template_id}")
        key = (VERSION, domain, template_id)
        if count == 0:  # a withdrawal: it has no scope count even in an options set
            store.withdraw(exporter, key)
            offset += 4
            continue
        check_field_count(count, f"IPFIX template {template_id}")
        if options:
            scope_count = _PAIR.unpack_from(data, offset + 2)[1]
            if not 0 < scope_count <= count:
                raise BadPacketError(MALFORMED, f"IPFIX options template {template_id} scope")
        fields_at = offset + header
        wire = bytes(data[fields_at : fields_at + 4 * count])
        if not options and len(wire) == 4 * count and max(wire[::4]) < _ENTERPRISE_BIT >> 8:
            # Four bytes a field (no enterprise number): the field list is known by its bytes.
            read = partial(_layout, data, fields_at, end, count, template_id)
            store.put(exporter, key, data_template_from_wire(VERSION, wire, read))
            offset = fields_at + 4 * count
            continue
        layout, offset = _fields(data, fields_at, end, count)
        _check_not_empty(layout, template_id)
        store.put(
            exporter, key, options_template(layout) if options else cached_data_template(layout)
        )


def _check_not_empty(layout: Layout, template_id: int) -> None:
    if all(spec.length == 0 for spec in layout):
        raise BadPacketError(MALFORMED, f"IPFIX template {template_id} has empty records")


def _layout(data: memoryview, offset: int, end: int, count: int, template_id: int) -> Layout:
    layout, _ = _fields(data, offset, end, count)
    _check_not_empty(layout, template_id)
    return layout


def _header(data: bytes | memoryview) -> tuple[memoryview, int, int]:
    """The message as a view, its length and observation domain; raises if they lie."""
    if len(data) < HEADER.size:
        raise BadPacketError(TRUNCATED, "IPFIX header")
    view = memoryview(data)
    _, length, _, _, domain = HEADER.unpack_from(view)
    if length < HEADER.size:
        raise BadPacketError(MALFORMED, f"IPFIX message length {length}")
    if length > len(view):
        raise BadPacketError(TRUNCATED, f"IPFIX message length {length} > {len(view)}")
    return view, length, domain


def parse_ipfix(
    data: bytes | memoryview, exporter: str, store: TemplateStore, sampling: SamplingStates
) -> DecodedFlows:
    """The flow records of one IPFIX message and the first problem met (see ``parse_v9``)."""
    view, length, domain = _header(data)
    readers = {TEMPLATE_SET: _templates, OPTIONS_SET: _options_templates}
    return read_sets(
        view, HEADER.size, length, (exporter, VERSION, domain), store, sampling, readers
    )


def ipfix_columns(
    data: bytes | memoryview, exporter: str, store: TemplateStore, sampling: SamplingStates
) -> list[RawFlows] | None:
    """An IPFIX message of data sets only, read quickly (see ``sets.data_set_columns``)."""
    view, length, domain = _header(data)
    key = (exporter, VERSION, domain)
    return data_set_columns(view, HEADER.size, length, key, store, sampling)
