"""Templates for NetFlow v9 and IPFIX: compiled record decoders, a bounded store, sampling state.

A data template is compiled once into a ``struct.Struct`` that unpacks only the
fields Scout reads (the others become pad bytes) and an ``itemgetter`` that puts
them in ``FlowRecord`` order, so a data set is decoded by ``iter_unpack`` at C
speed. Templates with variable-length (IPFIX) or odd-sized fields take a
per-record slow path that gives the same records.

Options templates are compiled too, but their records never become flows:
they only feed the sampling state (``samplingInterval``,
``samplerRandomInterval``, PSAMP interval/space and size/population), per
sampler id when the record names one, else for the whole exporter and domain.

The store holds at most ``max_templates`` templates over all exporters. When it
is full, a new template evicts the least recently used one of the exporter that
holds the most; an exporter that already holds its fair share
(``max_templates`` / exporters) cannot push out others, so a flood of template
churn from one exporter only recycles its own entries, and its excess is
reported as ``template_churn`` (the new template is kept; the rest of its set is
skipped). A template of more than ``MAX_TEMPLATE_FIELDS``
fields is malformed, so each one held stays small.
"""

from __future__ import annotations

import operator
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from exporter.collectors.flows.columns import NAMES, ColumnLayout
from exporter.collectors.flows.records import (
    MALFORMED,
    TEMPLATE_CHURN,
    TRUNCATED,
    BadPacketError,
    FlowRecord,
    scale,
)

# Information elements (the same numbers in NetFlow v9 and IPFIX for these).
OCTETS: Final = 1
PACKETS: Final = 2
PROTOCOL: Final = 4
DESTINATION_PORT: Final = 11
IPV4_SOURCE: Final = 8
IPV4_DESTINATION: Final = 12
INPUT_IFINDEX: Final = 10
OUTPUT_IFINDEX: Final = 14
OUT_OCTETS: Final = 23  # postOctetDeltaCount
OUT_PACKETS: Final = 24  # postPacketDeltaCount
IPV6_SOURCE: Final = 27
IPV6_DESTINATION: Final = 28
SAMPLING_INTERVAL: Final = 34
SAMPLER_ID: Final = 48
SAMPLER_RANDOM_INTERVAL: Final = 50
SELECTOR_ID: Final = 302
SAMPLING_PACKET_INTERVAL: Final = 305
SAMPLING_PACKET_SPACE: Final = 306
SAMPLING_SIZE: Final = 309
SAMPLING_POPULATION: Final = 310

VARIABLE_LENGTH: Final = 0xFFFF
# Fields a template may have. Real ones have a few dozen; without a cap one 64 KB datagram
# holds a 16,000-field template that costs ~1.7 MB compiled, so ``max_templates`` of them
# would hold gigabytes. A template with more is malformed.
MAX_TEMPLATE_FIELDS: Final = 512
# Sampler ids remembered per exporter and domain; more are ignored (rate 1).
MAX_SAMPLERS: Final = 256
# Compiled decoders kept by field layout, so churn between known layouts costs no compiling.
_DECODER_CACHE_SIZE: Final = 512

_UINT_CODES: Final = {1: "B", 2: "H", 4: "I", 8: "Q"}
# The first 12 bytes of an IPv4-mapped IPv6 address (RFC 4291 2.5.5.2).
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"
# The record's fields, each with the elements that may carry it (first found wins).
_RECORD_FIELDS: Final = (
    (IPV4_SOURCE, IPV6_SOURCE),
    (IPV4_DESTINATION, IPV6_DESTINATION),
    (OCTETS, OUT_OCTETS),
    (PACKETS, OUT_PACKETS),
    (INPUT_IFINDEX,),
    (OUTPUT_IFINDEX,),
    (PROTOCOL,),
    (DESTINATION_PORT,),
)
_ADDRESS_SIZES: Final = {IPV4_SOURCE: 4, IPV4_DESTINATION: 4, IPV6_SOURCE: 16, IPV6_DESTINATION: 16}
# What a record field is when its template does not carry it.
_MISSING: Final = (None, None, 0, 0, 0, 0, 0, 0)
_INTERVAL_ELEMENTS: Final = (SAMPLING_INTERVAL, SAMPLER_RANDOM_INTERVAL)
_SAMPLER_ELEMENTS: Final = (SAMPLER_ID, SELECTOR_ID)
_OPTION_ELEMENTS: Final = frozenset(
    (
        *_INTERVAL_ELEMENTS,
        *_SAMPLER_ELEMENTS,
        SAMPLING_PACKET_INTERVAL,
        SAMPLING_PACKET_SPACE,
        SAMPLING_SIZE,
        SAMPLING_POPULATION,
    )
)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One template field: element id, length (``VARIABLE_LENGTH`` for IPFIX varlen), enterprise."""

    element: int
    length: int
    enterprise: int = 0


Layout = tuple[FieldSpec, ...]


def _walk(
    data: memoryview, offset: int, end: int, layout: Layout
) -> tuple[dict[int, memoryview], int]:
    """One record's standard fields by element id, and where the next record starts."""
    values: dict[int, memoryview] = {}
    for spec in layout:
        length = spec.length
        if length == VARIABLE_LENGTH:
            if offset >= end:
                raise BadPacketError(TRUNCATED, "variable-length field")
            length = data[offset]
            offset += 1
            if length == 255:
                if offset + 2 > end:
                    raise BadPacketError(TRUNCATED, "variable-length field")
                length = int.from_bytes(data[offset : offset + 2])
                offset += 2
        if offset + length > end:
            raise BadPacketError(TRUNCATED, "record runs past its set")
        if not spec.enterprise:
            values[spec.element] = data[offset : offset + length]
        offset += length
    return values, offset


def _unsigned(raw: memoryview | None) -> int:
    return int.from_bytes(raw) if raw is not None and len(raw) <= 8 else 0


def _address(raw: memoryview | None) -> int | bytes | None:
    if raw is None:
        return None
    if len(raw) == 4:
        return int.from_bytes(raw)
    if len(raw) == 16:
        return unmapped(bytes(raw))
    return None


def unmapped(address: int | bytes | None) -> int | bytes | None:
    """An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) as the IPv4 address it carries.

    Only ``::ffff:0:0/96``: dual-stack sockets, and so some exporters, report IPv4
    peers so in IPv6 fields; ranked as IPv6 they would all fall into
    ``::/ipv6_prefix`` together, and apart from the same hosts' plain IPv4 flows.
    NAT64's ``64:ff9b::/96`` and the others that embed an IPv4 address are the
    addresses of IPv6 hosts, and stay IPv6.
    """
    if isinstance(address, bytes) and address[:12] == _V4_MAPPED:
        return int.from_bytes(address[12:])
    return address


def _unmap_row(row: tuple[object, ...]) -> tuple[object, ...]:
    source, destination = row[0], row[1]
    return (unmapped(source), unmapped(destination), *row[2:])  # type: ignore[arg-type]


class SamplingState:
    """The sampling rates (1 in N) one exporter and domain announced in options records.

    Mutable on purpose: options records update it in place as they arrive.
    """

    __slots__ = ("default", "samplers")

    def __init__(self) -> None:
        self.default = 1
        self.samplers: dict[int, int] = {}

    def rate_of(self, sampler: int) -> int:
        return self.samplers.get(sampler, self.default)


def _rate_from_options(values: dict[int, memoryview]) -> int | None:
    """The sampling rate an options record states (1 in N), if it states one."""
    for element in _INTERVAL_ELEMENTS:
        if element in values:
            return max(1, _unsigned(values[element]))
    interval = _unsigned(values.get(SAMPLING_PACKET_INTERVAL))
    if interval:
        return max(1, (interval + _unsigned(values.get(SAMPLING_PACKET_SPACE))) // interval)
    size = _unsigned(values.get(SAMPLING_SIZE))
    if size:
        return max(1, _unsigned(values.get(SAMPLING_POPULATION)) // size)
    return None


@dataclass(frozen=True, slots=True)
class OptionsTemplate:
    """An options template: its records update sampling rates and are never flows."""

    layout: Layout
    min_size: int

    def apply(self, data: memoryview, offset: int, end: int, sampling: SamplingState) -> int:
        """Take the rates the set's records state; how many records it held."""
        count = 0
        while end - offset >= self.min_size:
            values, offset = _walk(data, offset, end, self.layout)
            count += 1
            rate = _rate_from_options(values)
            if rate is None:
                continue
            sampler = next((values[e] for e in _SAMPLER_ELEMENTS if e in values), None)
            if sampler is None:
                sampling.default = rate
            elif len(sampling.samplers) < MAX_SAMPLERS or _unsigned(sampler) in sampling.samplers:
                sampling.samplers[_unsigned(sampler)] = rate
        return count


@dataclass(frozen=True, slots=True)
class DataTemplate:
    """A compiled data template: ``decode`` turns a data set into records."""

    layout: Layout
    min_size: int
    # Fast path: every record the same size, unpacked at C speed; None for the slow path.
    fixed: struct.Struct | None
    getter: Callable[[tuple[object, ...]], tuple[object, ...]] | None
    # A tail of constants appended before ``getter`` for fields the template lacks.
    tail: tuple[object, ...]
    # Per-flow sampling: the element holding an interval or a sampler id, if any.
    per_flow_interval: int | None
    per_flow_sampler: int | None
    # Columnar path (IPv4, fixed size, sampling per exporter): see ``columns``.
    columns: ColumnLayout | None = None
    # The fast path unpacks IPv6 addresses, which may be IPv4-mapped (see ``unmapped``).
    ipv6: bool = False

    def decode(
        self, data: memoryview, offset: int, end: int, sampling: SamplingState
    ) -> list[FlowRecord]:
        if self.fixed is None or self.getter is None:
            return self._decode_slowly(data, offset, end, sampling)
        size = self.fixed.size
        stop = offset + (end - offset) // size * size
        unpacked = self.fixed.iter_unpack(data[offset:stop])
        getter, tail = self.getter, self.tail
        rows = map(getter, unpacked) if not tail else (getter(row + tail) for row in unpacked)
        if self.ipv6:
            rows = map(_unmap_row, rows)
        if self.per_flow_interval is not None:
            return [_scale(row, max(1, row[8])) for row in rows]  # type: ignore[call-overload]
        if self.per_flow_sampler is not None:
            return [_scale(row, sampling.rate_of(row[8])) for row in rows]  # type: ignore[arg-type]
        records: list[FlowRecord] = list(rows)  # type: ignore[arg-type]
        rate = sampling.default
        if rate != 1:
            records = [scale(record, rate) for record in records]
        return records

    def _decode_slowly(
        self, data: memoryview, offset: int, end: int, sampling: SamplingState
    ) -> list[FlowRecord]:
        records: list[FlowRecord] = []
        while end - offset >= self.min_size:
            values, offset = _walk(data, offset, end, self.layout)
            if self.per_flow_interval is not None:
                rate = max(1, _unsigned(values.get(self.per_flow_interval)))
            elif self.per_flow_sampler is not None:
                rate = sampling.rate_of(_unsigned(values.get(self.per_flow_sampler)))
            else:
                rate = sampling.default
            pick = [
                next((values[e] for e in elements if e in values), None)
                for elements in _RECORD_FIELDS
            ]
            records.append(
                (
                    _address(pick[0]),
                    _address(pick[1]),
                    _unsigned(pick[2]) * rate,
                    _unsigned(pick[3]) * rate,
                    _unsigned(pick[4]),
                    _unsigned(pick[5]),
                    _unsigned(pick[6]),
                    _unsigned(pick[7]),
                )
            )
        return records


def _scale(row: tuple[object, ...], rate: int) -> FlowRecord:
    s, d, b, p, i, o, pr, dp = row[:8]
    return (s, d, b * rate, p * rate, i, o, pr, dp)  # type: ignore[return-value,operator]


def _first(values: dict[int, memoryview], elements: Sequence[int]) -> memoryview | None:
    return next((values[e] for e in elements if e in values), None)


def _min_size(layout: Layout) -> int:
    return sum(1 if spec.length == VARIABLE_LENGTH else spec.length for spec in layout)


def _fast_code(spec: FieldSpec) -> str | None:
    """The struct code for a field Scout reads, if the fast path can read it."""
    if spec.element in _ADDRESS_SIZES:
        size = _ADDRESS_SIZES[spec.element]
        if spec.length != size:
            return None
        return "I" if size == 4 else "16s"
    return _UINT_CODES.get(spec.length)


def compile_data_template(layout: Layout) -> DataTemplate:
    """Compile a data template's field list (cached by layout)."""
    return _compile_data(layout)


def _chosen(layout: Layout, elements: Sequence[int]) -> int | None:
    """Position in ``layout`` of the first of ``elements`` present (standard fields only)."""
    for element in elements:
        for position, spec in enumerate(layout):
            if spec.element == element and not spec.enterprise:
                return position
    return None


def _compile_data(layout: Layout) -> DataTemplate:
    min_size = _min_size(layout)
    interval_at = _chosen(layout, _INTERVAL_ELEMENTS)
    sampler_at = None if interval_at is not None else _chosen(layout, _SAMPLER_ELEMENTS)
    per_flow_interval = layout[interval_at].element if interval_at is not None else None
    per_flow_sampler = layout[sampler_at].element if sampler_at is not None else None
    wanted: list[int | None] = [_chosen(layout, elements) for elements in _RECORD_FIELDS]
    sampling_at = interval_at if interval_at is not None else sampler_at
    if sampling_at is not None:
        wanted.append(sampling_at)
    slow = DataTemplate(layout, min_size, None, None, (), per_flow_interval, per_flow_sampler)
    if any(spec.length == VARIABLE_LENGTH for spec in layout):
        return slow
    codes: list[str] = ["!"]
    index_of: dict[int, int] = {}
    for position, spec in enumerate(layout):
        if position in wanted:
            code = _fast_code(spec)
            if code is None:
                return slow
            index_of[position] = len(index_of)
            codes.append(code)
        else:
            codes.append(f"{spec.length}x")
    unpacked_width = len(index_of)
    tail: list[object] = []
    indices: list[int] = []
    for slot, chosen in enumerate(wanted):
        if chosen is not None:
            indices.append(index_of[chosen])
        else:
            indices.append(unpacked_width + len(tail))
            tail.append(_MISSING[slot])
    return DataTemplate(
        layout,
        min_size,
        struct.Struct("".join(codes)),
        operator.itemgetter(*indices),
        tuple(tail),
        per_flow_interval,
        per_flow_sampler,
        _column_layout(layout, wanted) if sampling_at is None else None,
        "16s" in codes,
    )


def _column_layout(layout: Layout, wanted: Sequence[int | None]) -> ColumnLayout | None:
    """The columnar decoder for a template whose flows are IPv4 with plain integer fields."""
    source, destination = wanted[0], wanted[1]
    if source is None or destination is None:
        return None
    if layout[source].element != IPV4_SOURCE or layout[destination].element != IPV4_DESTINATION:
        return None
    offsets = []
    offset = 0
    for spec in layout:
        offsets.append(offset)
        offset += spec.length
    fields = {
        name: (offsets[position], layout[position].length)
        for name, position in zip(NAMES, wanted, strict=False)
        if position is not None
    }
    if any(length not in _UINT_CODES for _, length in fields.values()):
        return None
    return ColumnLayout.build(offset, fields)


_compiled: OrderedDict[Layout, DataTemplate] = OrderedDict()


def cached_data_template(layout: Layout) -> DataTemplate:
    """``compile_data_template`` through a small LRU cache keyed by layout."""
    template = _compiled.get(layout)
    if template is None:
        template = _compile_data(layout)
        _compiled[layout] = template
        if len(_compiled) > _DECODER_CACHE_SIZE:
            _compiled.popitem(last=False)
    else:
        _compiled.move_to_end(layout)
    return template


# Data templates by the wire bytes of their field list, per version: routers re-send
# the same templates every few packets, and a known field list is not read again.
_by_wire: OrderedDict[tuple[int, bytes], DataTemplate] = OrderedDict()


def data_template_from_wire(version: int, wire: bytes, read: Callable[[], Layout]) -> DataTemplate:
    """The data template whose field list is ``wire``; ``read()`` reads and checks the
    fields (raising ``BadPacketError``) when these bytes were not seen before.

    Only field lists that passed ``read`` are remembered, so a hit needs no check.
    """
    key = (version, wire)
    template = _by_wire.get(key)
    if template is None:
        template = cached_data_template(read())
        _by_wire[key] = template
        if len(_by_wire) > _DECODER_CACHE_SIZE:
            _by_wire.popitem(last=False)
    else:
        _by_wire.move_to_end(key)
    return template


def options_template(layout: Layout) -> OptionsTemplate:
    if not layout:
        raise BadPacketError(MALFORMED, "options template without fields")
    return OptionsTemplate(layout, max(1, _min_size(layout)))


def check_field_count(count: int, what: str) -> None:
    """Refuse a template of more than ``MAX_TEMPLATE_FIELDS`` fields before reading them."""
    if count > MAX_TEMPLATE_FIELDS:
        raise BadPacketError(MALFORMED, f"{what} has {count} fields (most {MAX_TEMPLATE_FIELDS})")


# (version, observation domain or source id, template id) inside one exporter.
TemplateKey = tuple[int, int, int]
Template = DataTemplate | OptionsTemplate


class TemplateStore:
    """Templates per exporter address, ``max_templates`` in all (see the module docstring)."""

    def __init__(self, max_templates: int) -> None:
        self._max = max_templates
        self._by_exporter: dict[str, OrderedDict[TemplateKey, Template]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def count(self, exporter: str) -> int:
        templates = self._by_exporter.get(exporter)
        return len(templates) if templates else 0

    def get(self, exporter: str, key: TemplateKey) -> Template | None:
        templates = self._by_exporter.get(exporter)
        if templates is None:
            return None
        template = templates.get(key)
        if template is not None:
            templates.move_to_end(key)
        return template

    def put(self, exporter: str, key: TemplateKey, template: Template) -> None:
        templates = self._by_exporter.get(exporter)
        if templates is not None and key in templates:
            templates[key] = template
            templates.move_to_end(key)
            return
        churn = False
        if self._count >= self._max:
            holders = len(self._by_exporter) + (templates is None)
            if templates is not None and len(templates) >= max(1, self._max // holders):
                # Over its share: the exporter's own least recently used template makes room.
                templates.popitem(last=False)
                self._count -= 1
                churn = True
            else:
                self._evict_from_largest()
        if templates is None:
            templates = self._by_exporter[exporter] = OrderedDict()
        templates[key] = template
        self._count += 1
        if churn:
            raise BadPacketError(TEMPLATE_CHURN, f"{exporter} holds its share of templates")

    def items(self) -> Iterator[tuple[str, TemplateKey, Template]]:
        """Every template held, as (exporter, key, template): each exporter's least
        recently used first, so ``put`` in this order keeps their recency."""
        for exporter, templates in self._by_exporter.items():
            for key, template in templates.items():
                yield exporter, key, template

    def withdraw(self, exporter: str, key: TemplateKey) -> None:
        templates = self._by_exporter.get(exporter)
        if templates is not None and templates.pop(key, None) is not None:
            self._count -= 1
            if not templates:
                del self._by_exporter[exporter]

    def _evict_from_largest(self) -> None:
        exporter = max(self._by_exporter, key=lambda name: len(self._by_exporter[name]))
        templates = self._by_exporter[exporter]
        templates.popitem(last=False)
        self._count -= 1
        if not templates:
            del self._by_exporter[exporter]
