"""Turn walked varbinds into metric families, the way snmp_exporter names and labels them.

For each metric of a module, every varbind under its OID becomes a sample: the
OID suffix is decoded into index labels, lookups add labels read from other
columns at the same index (ifName for an ifIndex), and the value is rendered by
the metric's type. A varbind that does not fit (a malformed index, a string where
a number belongs, noSuchInstance) is skipped rather than failing the scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean

from exporter.clients.snmp import Oid, ValueKind, VarBind
from exporter.clients.snmp.speedups import compiled
from exporter.targets.snmp.exposition import Family, Labels, render_labels
from exporter.targets.snmp.modules import SnmpIndex, SnmpLookup, SnmpMetric, SnmpModule

_NUMERIC = frozenset(
    {
        ValueKind.INTEGER,
        ValueKind.COUNTER32,
        ValueKind.GAUGE32,
        ValueKind.TIMETICKS,
        ValueKind.COUNTER64,
    }
)
_ABSENT = frozenset(
    {
        ValueKind.NULL,
        ValueKind.NO_SUCH_OBJECT,
        ValueKind.NO_SUCH_INSTANCE,
        ValueKind.END_OF_MIB_VIEW,
    }
)


# A row whose labels are not worked out yet (None is a row that has none: skipped).
_UNSEEN: Labels = (("", ""),)

# Counter64 values are wrapped here unless told not to (snmp_exporter's float64 mantissa).
WRAP_AT = 2**53


def oid_of(text: str) -> Oid:
    return tuple(int(part) for part in text.split("."))


def _ipv6(data: bytes) -> str:
    # snmp_exporter's form: eight groups of four upper-case hex digits, none left out.
    return ":".join(data[i : i + 2].hex().upper() for i in range(0, 16, 2))


def render_octets(data: bytes, kind: str) -> str:
    """A label value for an octet string, by its declared type."""
    if kind == "PhysAddress48":
        # Short values (loopback has none) are zero-padded to 48 bits, as snmp_exporter
        # shows them; longer ones (EUI-64) are kept whole rather than cut.
        return ":".join(f"{b:02X}" for b in data.ljust(6, b"\0"))
    if kind in ("IpAddr", "InetAddressIPv4") or (kind == "InetAddress" and len(data) == 4):
        return ".".join(str(b) for b in data)
    if kind in ("InetAddressIPv6", "InetAddress") and len(data) == 16:
        return _ipv6(data)
    if kind == "DisplayString":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass  # not text after all: show it losslessly, as OctetString does
    return "0x" + data.hex().upper()


# Sub-identifiers of an index of each fixed-size type.
_FIXED_SIZES = {
    "gauge": 1,
    "PhysAddress48": 6,
    "IpAddr": 4,
    "InetAddressIPv4": 4,
    "InetAddressIPv6": 16,
}
# InetAddressType values snmp_exporter reads an InetAddress index by: ipv4(1), ipv6(2).
_INET_TYPES = {1: "InetAddressIPv4", 2: "InetAddressIPv6"}


def _decode_inet_address(kind: str, suffix: Oid) -> tuple[str, Oid, Oid] | None:
    """snmp_exporter's InetAddress index: the address type, then the length-prefixed address.

    Its generator folds the InetAddressType index before it into this one (it is
    not an index of its own in a generated module), so the type is read here:
    ipv4(1) and ipv6(2) are shown as addresses, anything else (ipv4z, dns, ...)
    as the hex of its sub-identifiers, type and length included. The
    ``InetAddressMissingSize`` variant has no length: an address of an
    unknown type then takes all that is left.
    """
    missing_size = kind == "InetAddressMissingSize"
    head = 1 if missing_size else 2
    if len(suffix) < head:
        return None
    address = _INET_TYPES.get(suffix[0])
    if address is not None:
        decoded = _decode(address, None, False, suffix[head:])
        if decoded is None:
            return None
        label, used, rest = decoded
        return label, suffix[:head] + used, rest
    size = len(suffix) if missing_size else suffix[1] + 2
    if size > len(suffix) or any(part > 255 for part in suffix[:size]):
        return None
    return render_octets(bytes(suffix[:size]), "OctetString"), suffix[:size], suffix[size:]


def decode_index(index: SnmpIndex, suffix: Oid) -> tuple[str, Oid, Oid] | None:
    """Take one index off the front of ``suffix``.

    Returns the label value, the sub-identifiers it used (for lookups) and the
    rest, or ``None`` if the suffix is too short or malformed.
    """
    return _decode(index.type, index.fixed_size, index.implied, suffix)


def _decode(
    kind: str, fixed_size: int | None, implied: bool, suffix: Oid
) -> tuple[str, Oid, Oid] | None:
    size = _FIXED_SIZES.get(kind)
    if size is None:
        if kind in ("InetAddress", "InetAddressMissingSize"):
            return _decode_inet_address(kind, suffix)
        if fixed_size is not None:
            size = fixed_size
        elif implied:
            size = len(suffix)
        else:  # a length-prefixed string
            if not suffix or suffix[0] + 1 > len(suffix):
                return None
            used, rest = suffix[: suffix[0] + 1], suffix[suffix[0] + 1 :]
            if any(part > 255 for part in used[1:]):
                return None
            return render_octets(bytes(used[1:]), kind), used, rest
    if size > len(suffix) or size == 0:
        return None
    used, rest = suffix[:size], suffix[size:]
    if kind == "gauge":
        return str(used[0]), used, rest
    if any(part > 255 for part in used):
        return None
    return render_octets(bytes(used), kind), used, rest


def lookup_label(
    lookup: SnmpLookup, oid: Oid, parts: Mapping[str, Oid], values: Mapping[Oid, VarBind]
) -> str:
    """The label from column ``oid`` (the lookup's, parsed) at the named indexes."""
    for label in lookup.labels:
        oid += parts[label]
    found = values.get(oid)
    if found is None or found.kind in _ABSENT:
        return ""
    return value_text(found, lookup.type)


def value_text(varbind: VarBind, kind: str) -> str:
    value = varbind.value
    if isinstance(value, bytes):
        return render_octets(value, kind)
    if isinstance(value, tuple):
        return ".".join(map(str, value))
    return "" if value is None else str(value)


# How an OID suffix becomes labels: the index declarations and the lookups. Metrics
# of a table share one (if_mib's 40 per-interface metrics all have ifIndex plus the
# same three lookups), so the labels of a row are worked out once per scrape.
_Shape = tuple[tuple[SnmpIndex, ...], tuple[tuple[SnmpLookup, Oid], ...]]


def _shape_key(metric: SnmpMetric) -> tuple[object, ...]:
    indexes = tuple((i.labelname, i.type, i.fixed_size, i.implied) for i in metric.indexes)
    lookups = tuple((tuple(k.labels), k.labelname, k.oid, k.type) for k in metric.lookups)
    return (indexes, lookups)


@dataclass(frozen=True, slots=True)
class _MetricPlan:
    """What ``families`` needs of one metric, worked out once per module."""

    metric: SnmpMetric
    base: Oid
    shape: int
    states: list[tuple[int, str]]
    static: Labels
    instance: Oid | None  # a scalar's instance suffix; None for a table's metric
    # A gauge or counter read as the number it is: no value map, absent values, scale.
    plain_number: bool
    # Samples carry the row's labels tuple itself (gauges and counters; info and
    # state-set metrics add a label, so theirs are new tuples).
    same_labels: bool


class RowLabels:
    """What one device's scrapes share while its lookup columns are cached.

    The labels of a row depend only on its index and the lookup columns' values;
    when those come from the device's cache, every scrape until the cache is
    refilled works out the same labels. ``known`` holds them by shape and index
    suffix (the tuples themselves, so each keeps its identity), and ``texts``
    their exposition text by identity, rendered once when first worked out.

    The metrics read from ``fixed`` columns (the cached ones) have the same
    samples too: their families are built on the cache's first scrape and kept
    in ``samples`` (by the metric's position; labels and values as two tuples,
    which hold a third of the memory of one tuple per sample), so later scrapes
    neither map nor hold those columns' varbinds.
    """

    __slots__ = ("complete", "fixed", "known", "mapper", "samples", "texts")

    def __init__(self, mapper: MetricMapper, fixed: Iterable[Oid] = ()) -> None:
        self.mapper = mapper
        self.fixed = frozenset(fixed)
        self.known: list[dict[Oid, Labels | None]] = [{} for _ in mapper.shapes]
        self.texts: dict[int, str] = {}
        self.samples: dict[int, tuple[tuple[Labels, ...], tuple[int | float, ...]]] = {}
        self.complete = False  # set once a whole pass has filled ``samples``


class MetricMapper:
    """Maps the varbinds of one module into families; built once per module.

    ``wrap_large_counters`` (on by default, as in snmp_exporter) wraps Counter64
    values modulo 2**53 before any scale.
    """

    def __init__(self, module: SnmpModule, *, wrap_large_counters: bool = True) -> None:
        self._wrap = wrap_large_counters
        shape_ids: dict[tuple[object, ...], int] = {}
        self.shapes: list[_Shape] = []
        # Shapes whose lookups replace an index label: two rows may then get the same
        # labels (two FortiGate VDOMs' tunnels of one name and gateway).
        self._may_repeat: list[bool] = []
        self._metrics: list[_MetricPlan] = []
        for metric in module.metrics:
            key = _shape_key(metric)
            if key not in shape_ids:
                shape_ids[key] = len(self.shapes)
                lookups = tuple((k, oid_of(k.oid)) for k in metric.lookups)
                self.shapes.append((tuple(metric.indexes), lookups))
                replaced = {k.labelname for k in metric.lookups}
                self._may_repeat.append(any(i.labelname in replaced for i in metric.indexes))
            plain = (
                metric.type in ("gauge", "counter")
                and not metric.value_map
                and not metric.absent_values
                and metric.scale == 1
                and metric.offset == 0
            )
            self._metrics.append(
                _MetricPlan(
                    metric,
                    oid_of(metric.oid),
                    shape_ids[key],
                    sorted(metric.enum_values.items()),
                    tuple(metric.static_labels.items()),
                    None if metric.indexes else oid_of(metric.instance),
                    plain,
                    metric.type in ("gauge", "counter") and metric.aggregate is None,
                )
            )
        self._value_maps = {id(m): _folded(m.value_map) for m in module.metrics if m.value_map}

    def families(
        self,
        rows: Mapping[Oid, Sequence[VarBind]],
        values: Mapping[Oid, VarBind],
        kept: RowLabels | None = None,
    ) -> list[Family]:
        """``rows`` holds each metric OID's varbinds; ``values`` every varbind by OID.

        The hot path of a scrape: the labels of a row are worked out once per
        shape, and the same tuple is shared by every metric of the row (so the
        exposition renders it once too); plain numbers skip ``_add_sample``.
        ``kept`` holds the labels an earlier scrape worked out from the same
        ``values``, and gains those of new rows; and the families of its fixed
        columns, built the first time from ``rows`` (the caller vouches that
        ``values`` and those columns are what the device's cache holds).
        """
        if kept is not None and kept.mapper is not self:
            raise ValueError("row labels kept for another module's mapper")
        labels_of_row = kept.known if kept is not None else [{} for _ in self.shapes]
        texts = kept.texts if kept is not None else None
        wrap, counter64, numeric, absent = self._wrap, ValueKind.COUNTER64, _NUMERIC, _ABSENT
        out: list[Family] = []
        reuse = kept is not None and kept.complete
        fixed: dict[int, Family] = {}
        for position, plan in enumerate(self._metrics):
            if kept is not None and plan.base in kept.fixed and plan.instance is None:
                family = fixed[position] = _new_family(plan.metric)
                if reuse:
                    # Read from cached columns: the samples of the cache's first scrape.
                    labels_kept, values_kept = kept.samples[position]
                    family.samples = list(zip(labels_kept, values_kept, strict=True))
                    family.rendered = kept if plan.same_labels and not plan.static else None
                    out.append(family)
                    continue
            metric, instance, static, plain = (
                plan.metric,
                plan.instance,
                plan.static,
                plan.plain_number,
            )
            family = fixed.get(position) or _new_family(metric)
            if kept is not None and plan.same_labels and not static:
                family.rendered = kept  # its samples' labels are kept's own tuples
            append = family.samples.append
            known = labels_of_row[plan.shape]
            cut = len(plan.base)
            varbinds = rows.get(plan.base, ())
            if (
                compiled is not None
                and plain
                and not static
                and instance is None
                and type(varbinds) is list
            ):
                # The compiled loop maps every varbind whose row is known already
                # (all of them, once a device's cache is filled); the loop below
                # takes the rest from the first new row on.
                taken = compiled.map_plain(
                    varbinds,
                    cut,
                    known,
                    absent,
                    numeric,
                    WRAP_AT if wrap else None,
                    counter64,
                    family.samples,
                    VarBind,
                )
                varbinds = varbinds[taken:]
            for varbind in varbinds:
                kind = varbind.kind
                if kind in absent:
                    continue
                suffix = varbind.oid[cut:]
                if instance is not None and suffix != instance:
                    continue  # a scalar is read at OID.instance; anything else is not it
                labels = known.get(suffix, _UNSEEN)
                if labels is _UNSEEN:
                    labels = known[suffix] = self._labels(plan.shape, suffix, values)
                    if texts is not None and labels is not None:
                        texts[id(labels)] = render_labels(labels)
                if labels is None:
                    continue
                if static:
                    labels = (*labels, *static)
                if plain:
                    value = varbind.value
                    if kind in numeric and isinstance(value, int):
                        append((labels, value % WRAP_AT if wrap and kind is counter64 else value))
                else:
                    self._add_sample(family, metric, plan.states, labels, varbind)
            if metric.aggregate is not None:
                _aggregate(family, metric.aggregate, static)
            elif self._may_repeat[plan.shape]:
                _keep_first(family)
            out.append(family)
        if kept is not None and not reuse:
            kept.samples = {
                position: (
                    tuple(labels for labels, _ in family.samples),
                    tuple(value for _, value in family.samples),
                )
                for position, family in fixed.items()
            }
            kept.complete = True
        return out

    def _labels(self, shape: int, suffix: Oid, values: Mapping[Oid, VarBind]) -> Labels | None:
        indexes, lookups = self.shapes[shape]
        labels: list[tuple[str, str]] = []
        parts: dict[str, Oid] = {}
        rest = suffix if indexes else ()
        for index in indexes:
            decoded = decode_index(index, rest)
            if decoded is None:
                return None
            text, used, rest = decoded
            labels.append((index.labelname, text))
            parts[index.labelname] = used
        if rest:
            return None
        for lookup, oid in lookups:
            text = lookup_label(lookup, oid, parts, values)
            labels = [(k, v) for k, v in labels if k != lookup.labelname]
            labels.append((lookup.labelname, text))
        return tuple(labels)

    def _add_sample(
        self,
        family: Family,
        metric: SnmpMetric,
        states: list[tuple[int, str]],
        labels: Labels,
        varbind: VarBind,
    ) -> None:
        value = varbind.value
        label = metric.value_label or metric.name
        if metric.type in ("gauge", "counter"):
            number = self._number(metric, varbind)
            if number is not None:
                family.add(labels, number)
        elif metric.type == "EnumAsInfo":
            if isinstance(value, int):
                family.add(_with(labels, label, metric.enum_values.get(value, str(value))), 1)
        elif metric.type == "EnumAsStateSet":
            if isinstance(value, int):
                for number, state in states:
                    family.add(_with(labels, label, state), int(number == value))
        else:
            family.add(_with(labels, label, value_text(varbind, metric.type)), 1)

    def _number(self, metric: SnmpMetric, varbind: VarBind) -> int | float | None:
        """The sample value of a gauge or counter, or ``None`` for no sample."""
        value = varbind.value
        value_map = self._value_maps.get(id(metric))
        if value_map is not None:
            if isinstance(value, bytes):
                return value_map.get(value.decode("utf-8", "replace").strip().casefold())
            return value_map.get(value) if varbind.kind in _NUMERIC else None
        if varbind.kind not in _NUMERIC or not isinstance(value, int):
            return None
        if value in metric.absent_values:
            return None
        if self._wrap and varbind.kind is ValueKind.COUNTER64:
            value %= WRAP_AT
        if metric.scale != 1 or metric.offset != 0:
            return value * metric.scale + metric.offset
        return value


def _folded(value_map: Mapping[int | str, float]) -> dict[object, int | float]:
    """Text keys matched without regard to case; whole values kept as integers."""
    return {
        (key.casefold() if isinstance(key, str) else key): (
            int(value) if value.is_integer() else value
        )
        for key, value in value_map.items()
    }


_FOLDS: Mapping[str, Callable[[list[int | float]], int | float]] = {
    "sum": sum,
    "min": min,
    "max": max,
    "mean": fmean,
    "count": len,
}


def _aggregate(family: Family, how: str, static: Labels) -> None:
    """Fold ``family``'s samples into one, labelled only with the static labels."""
    numbers = [value for _, value in family.samples]
    family.samples.clear()
    if numbers:  # nothing reported: no sample, rather than a made-up zero
        family.add(static, _FOLDS[how](numbers))


def _keep_first(family: Family) -> None:
    """One sample per label set, the first: a series given twice in one exposition is
    dropped by Prometheus with a warning, and fails snmp_exporter's whole scrape."""
    seen: set[Labels] = set()
    kept = []
    for sample in family.samples:
        if sample[0] not in seen:
            seen.add(sample[0])
            kept.append(sample)
    if len(kept) < len(family.samples):
        family.samples = kept


def _with(labels: Labels, name: str, value: str) -> Labels:
    """``labels`` with ``name`` set to ``value``: ifDescr's own value wins over its lookup."""
    for key, _ in labels:
        if key == name:
            return (*((k, v) for k, v in labels if k != name), (name, value))
    return (*labels, (name, value))  # the usual case, once per row of an info metric


def _new_family(metric: SnmpMetric) -> Family:
    if metric.type == "counter":
        return Family(metric.name, metric.help, "counter")
    if metric.type == "EnumAsInfo":
        return Family(f"{metric.name}_info", metric.help, "gauge")
    return Family(metric.name, metric.help, "gauge")
