"""NetFlow v9 (RFC 3954): a 20-byte header, then template, options template and data flowsets.

Templates are keyed by exporter address, source id and template id. Options
templates (flowset 1) describe records that carry sampling rates: they update
the exporter's sampling state and never count as flows.
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
    VARIABLE_LENGTH,
    FieldSpec,
    Layout,
    TemplateStore,
    check_field_count,
    data_template_from_wire,
    options_template,
)

VERSION: Final = 9
HEADER: Final = struct.Struct("!HHIIII")
TEMPLATE_FLOWSET: Final = 0
OPTIONS_FLOWSET: Final = 1
_PAIR: Final = struct.Struct("!HH")
_OPTIONS_HEADER: Final = struct.Struct("!HHH")


def _fields(
    data: memoryview, offset: int, count: int, enterprise: int = 0
) -> tuple[FieldSpec, ...]:
    fields = tuple(
        FieldSpec(element, length, enterprise)
        for element, length in (_PAIR.unpack_from(data, offset + 4 * i) for i in range(count))
    )
    # v9 has no variable-length fields: 65535 is a length no record in a datagram can have,
    # and read as IPFIX's variable-length marker it would make up records from a few bytes.
    if any(spec.length == VARIABLE_LENGTH for spec in fields):
        raise BadPacketError(MALFORMED, "v9 field of length 65535")
    return fields


def _templates(
    data: memoryview, start: int, end: int, exporter: str, domain: int, store: TemplateStore
) -> None:
    offset = start
    while end - offset >= _PAIR.size:
        template_id, count = _PAIR.unpack_from(data, offset)
        if template_id == 0 == count:
            break  # padding to the flowset's end
        offset += _PAIR.size
        if template_id < FIRST_DATA_SET_ID or count == 0:
            raise BadPacketError(MALFORMED, f"v9 template {template_id} with {count} fields")
        check_field_count(count, f"v9 template {template_id}")
        if offset + 4 * count > end:
            raise BadPacketError(TRUNCATED, f"v9 template {template_id}")
        wire = bytes(data[offset : offset + 4 * count])
        template = data_template_from_wire(
            VERSION, wire, partial(_data_layout, data, offset, count, template_id)
        )
        offset += 4 * count
        store.put(exporter, (VERSION, domain, template_id), template)


def _data_layout(data: memoryview, offset: int, count: int, template_id: int) -> Layout:
    layout = _fields(data, offset, count)
    if sum(spec.length for spec in layout) == 0:
        raise BadPacketError(MALFORMED, f"v9 template {template_id} has zero-length records")
    return layout


def _options_templates(
    data: memoryview, start: int, end: int, exporter: str, domain: int, store: TemplateStore
) -> None:
    offset = start
    # Options templates are padded to 4 bytes, so a short tail is padding.
    while end - offset >= _OPTIONS_HEADER.size + 4:
        template_id, scope_length, option_length = _OPTIONS_HEADER.unpack_from(data, offset)
        if template_id == 0 == scope_length:
            break
        offset += _OPTIONS_HEADER.size
        if template_id < FIRST_DATA_SET_ID or scope_length % 4 or option_length % 4:
            raise BadPacketError(MALFORMED, f"v9 options template {template_id}")
        check_field_count((scope_length + option_length) // 4, f"v9 options template {template_id}")
        if offset + scope_length + option_length > end:
            raise BadPacketError(TRUNCATED, f"v9 options template {template_id}")
        # v9 scope field types are a namespace of their own (system, interface, ...):
        # only their lengths matter here, so they are recorded as enterprise-like fields.
        scopes = _fields(data, offset, scope_length // 4, enterprise=1)
        layout = scopes + _fields(data, offset + scope_length, option_length // 4)
        offset += scope_length + option_length
        if sum(spec.length for spec in layout) == 0:
            raise BadPacketError(MALFORMED, f"v9 options template {template_id} is empty")
        store.put(exporter, (VERSION, domain, template_id), options_template(layout))


def _header(data: bytes | memoryview) -> tuple[memoryview, int]:
    """The packet as a view and its source id; ``BadPacketError`` if the header is cut."""
    if len(data) < HEADER.size:
        raise BadPacketError(TRUNCATED, "v9 header")
    view = memoryview(data)
    return view, HEADER.unpack_from(view)[5]


def parse_v9(
    data: bytes | memoryview, exporter: str, store: TemplateStore, sampling: SamplingStates
) -> DecodedFlows:
    """The flow records of one v9 packet and the first problem met (an unknown template, say).

    A packet whose structure lies raises ``BadPacketError``; a set whose template
    is unknown (or cannot be stored) is skipped and reported as the problem.
    """
    view, domain = _header(data)
    readers = {TEMPLATE_FLOWSET: _templates, OPTIONS_FLOWSET: _options_templates}
    return read_sets(
        view, HEADER.size, len(view), (exporter, VERSION, domain), store, sampling, readers
    )


def v9_columns(
    data: bytes | memoryview, exporter: str, store: TemplateStore, sampling: SamplingStates
) -> list[RawFlows] | None:
    """A v9 packet of data sets only, read quickly (see ``sets.data_set_columns``); else None."""
    view, domain = _header(data)
    key = (exporter, VERSION, domain)
    return data_set_columns(view, HEADER.size, len(view), key, store, sampling)
