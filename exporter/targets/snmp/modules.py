"""SNMP modules: what to read from a device and how to name it, as data.

A module lists metrics by OID, with their type, index labels and lookups, in the
same vocabulary as snmp_exporter's generated ``snmp.yml`` (``metrics``, ``indexes``,
``lookups``, ``type: counter|gauge|DisplayString|...``), so a module from there
carries over with few edits. The built-in modules live in ``modules/*.yml`` next
to this file; a config's ``modules:`` adds to them or replaces one by name.

Beyond snmp_exporter's vocabulary (``scale`` and ``offset`` are its own), a
metric may map values (``value_map``), drop values that mean "unknown"
(``absent_values``), name the label a text value goes in
(``value_label``), add fixed labels (``static_labels``), read one cell of a
table (``instance``), fold a table into one sample (``aggregate``), and take
labels from scalars (a lookup without ``labels``). The firewall modules
(``fortigate``, ``paloalto``, ``cisco_asa``, ``checkpoint``, ``pf``) use them to
name what they read in the one firewall schema (``exporter.schema.firewall``).

A module may also name ``neighbours:`` tables (``lldp``, ``lldp_v2``, ``cdp``):
rows that join several tables and decode ids by subtype, which metrics cannot
say, so they are decoded in code (exporter.targets.snmp.neighbours) into the
``scout_lldp_neighbor_info`` family (and ``scout_lldp_local_info``, the device's
own identity). The built-in ``lldp`` and ``cdp`` modules are made of them.
``max_neighbours`` caps the rows a scrape exports (a hostile host can invent
neighbours); the rest are counted in ``scout_snmp_neighbours_dropped``.

A module may declare a ``cache``: label lookups and metrics marked ``cached``
(descriptions, speeds) are then read once and reused until the device reboots
(``uptime`` goes backwards), a ``validators`` value changes (ifNumber,
ifTableLastChange), or ``max_age_seconds`` passes. Everything else, counters
above all, is read fresh on every scrape.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Annotated, Literal, Self, get_args

import yaml
from pydantic import AfterValidator, Field, model_validator

from exporter.common.models import StrictModel, drop_extension_keys
from exporter.targets.allowlist import AllowedTargets
from exporter.targets.snmp.neighbours import DEFAULT_MAX_NEIGHBOURS

_OID = re.compile(r"\.?\d+(\.\d+)*")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _check_oid(value: str) -> str:
    if not _OID.fullmatch(value):
        raise ValueError(f"not a numeric OID: {value!r} (write it as 1.3.6.1...)")
    arcs = [int(arc) for arc in value.removeprefix(".").split(".")]
    # What BER can encode and SNMP allows (RFC 2578: sub-identifiers are 32-bit).
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"not a valid OID: {value!r} (it must start 0.x, 1.x or 2.x)")
    if any(arc >= 2**32 for arc in arcs):
        raise ValueError(f"not a valid OID: {value!r} (sub-identifiers stop at 4294967295)")
    return value.removeprefix(".")


def _check_metric_name(value: str) -> str:
    if not _METRIC_NAME.fullmatch(value):
        raise ValueError(f"not a valid metric name: {value!r}")
    return value


def _check_label_name(value: str) -> str:
    if not _LABEL_NAME.fullmatch(value) or value.startswith("__"):
        raise ValueError(f"not a valid label name: {value!r}")
    return value


OidText = Annotated[str, AfterValidator(_check_oid)]
MetricName = Annotated[str, AfterValidator(_check_metric_name)]
LabelName = Annotated[str, AfterValidator(_check_label_name)]

# How an index is encoded in the OID, and how a value is rendered as a label.
# IpAddr is Scout's own name for snmp_exporter's InetAddressIPv4 (4 sub-ids, dotted);
# InetAddressIPv6 is 16, shown as snmp_exporter shows it (FE80:0000:...:0001);
# InetAddress (and InetAddressMissingSize) read the address type first, as in a
# module snmp_exporter's generator made (see mapping.decode_index).
OctetType = Literal[
    "DisplayString",
    "OctetString",
    "PhysAddress48",
    "IpAddr",
    "InetAddressIPv4",
    "InetAddressIPv6",
    "InetAddress",
]
IndexType = Literal["gauge", OctetType, "InetAddressMissingSize"]
MetricType = Literal["gauge", "counter", OctetType, "EnumAsInfo", "EnumAsStateSet"]
# Types whose value becomes a label (an info series) rather than the sample value.
LABEL_VALUED = frozenset(get_args(OctetType)) | {"EnumAsInfo", "EnumAsStateSet"}
# How an aggregated table becomes one sample; ``count`` counts the rows with a value.
Aggregate = Literal["sum", "min", "max", "mean", "count"]


class SnmpIndex(StrictModel):
    labelname: LabelName
    type: IndexType = "gauge"
    # Strings in an index are length-prefixed unless fixed-size or implied (last index only).
    fixed_size: int | None = Field(default=None, ge=1, le=255)
    implied: bool = False


class SnmpLookup(StrictModel):
    """Adds label ``labelname`` from the value at ``oid`` + the indexes named in ``labels``.

    With no ``labels``, ``oid`` names one instance (``1.3.6.1.2.1.1.5.0``, sysName),
    read with a GET: a device-wide value such as a model name on every sample.
    """

    labels: list[LabelName] = Field(default_factory=list)
    labelname: LabelName
    oid: OidText
    type: IndexType = "DisplayString"


# snmp_exporter metric keys Scout does not implement, and what to use instead.
UNSUPPORTED_METRIC_KEYS = {
    "regex_extracts": "derive the value with value_map, or a recording rule",
    "datetime_pattern": "export the raw value and convert it in a recording rule",
}


class SnmpMetric(StrictModel):
    name: MetricName
    oid: OidText
    type: MetricType = "gauge"
    help: str = ""
    indexes: list[SnmpIndex] = Field(default_factory=list)
    lookups: list[SnmpLookup] = Field(default_factory=list)
    enum_values: dict[int, str] = Field(default_factory=dict)
    # Static per interface (speed, type): read when the cache is refreshed, not every scrape.
    cached: bool = False
    # value * scale + offset, as snmp_exporter's generator overrides say (45 % -> 0.45).
    scale: float = 1.0
    offset: float = 0.0
    # A value (number, or text matched without regard to case) -> the sample's value;
    # values not listed give no sample (fgVpnTunEntStatus down(1)/up(2) -> 0/1).
    value_map: dict[int | str, float] = Field(default_factory=dict)
    # Raw values that mean "not known", giving no sample (fwConnTableLimit 0: automatic).
    absent_values: list[int] = Field(default_factory=list)
    # The label a text or enum value goes in; by default the metric's own name.
    value_label: LabelName | None = None
    # Labels every sample carries as they are (vendor="fortinet").
    static_labels: dict[LabelName, str] = Field(default_factory=dict)
    # Without indexes, the one instance read, by GET: "0" for a scalar, "40.6" for a cell.
    instance: str = "0"
    # A table folded into one sample without index labels (the mean CPU of all cores).
    aggregate: Aggregate | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported_keys(cls, data: object) -> object:
        # Named, rather than "extra inputs are not permitted": a module copied from
        # snmp_exporter's snmp.yml gets a reason and a way out.
        if isinstance(data, dict):
            for key, instead in UNSUPPORTED_METRIC_KEYS.items():
                if key in data:
                    raise ValueError(
                        f"{key} (snmp_exporter's) is not supported by Scout: {instead}"
                    )
        return data

    @model_validator(mode="after")
    def _lookups_name_known_indexes(self) -> Self:
        known = {index.labelname for index in self.indexes}
        for lookup in self.lookups:
            unknown = [label for label in lookup.labels if label not in known]
            if unknown:
                raise ValueError(
                    f"lookup {lookup.labelname!r} refers to {', '.join(unknown)}, "
                    f"which is not an index of {self.name!r}"
                )
        if self.type in ("EnumAsInfo", "EnumAsStateSet") and not self.enum_values:
            raise ValueError(f"{self.name!r} is {self.type} and needs enum_values")
        implied = [i for i in self.indexes[:-1] if i.implied]
        if implied:
            raise ValueError("only the last index can be implied")
        self._check_value_options()
        return self

    def _check_value_options(self) -> None:
        numeric = self.type in ("gauge", "counter")
        if self.value_map and (self.scale != 1 or self.offset != 0):
            raise ValueError(f"{self.name!r}: value_map replaces the value; scale it in the map")
        if (self.value_map or self.absent_values or self.scale != 1 or self.offset != 0) and (
            not numeric
        ):
            raise ValueError(
                f"{self.name!r}: value_map, absent_values, scale and offset need a gauge or counter"
            )
        if self.value_label is not None and self.type not in LABEL_VALUED:
            raise ValueError(f"{self.name!r}: value_label needs a text or enum type")
        if self.aggregate is not None and (not self.indexes or not numeric):
            raise ValueError(f"{self.name!r}: aggregate needs a gauge or counter with indexes")
        if self.instance != "0" and self.indexes:
            raise ValueError(f"{self.name!r}: instance is for a metric without indexes")
        if not _OID.fullmatch(self.instance) or self.instance.startswith("."):
            raise ValueError(f"{self.name!r}: instance must be dotted numbers, like 40.6")


class SnmpCache(StrictModel):
    uptime: OidText = "1.3.6.1.2.1.1.3.0"
    validators: list[OidText] = Field(default_factory=list)
    # Descriptions (ifAlias) change without touching any validator; re-read them this often.
    max_age_seconds: float = Field(default=900, gt=0)


class SnmpModule(StrictModel):
    """One module. Keys starting with ``x-`` are ignored, so they can hold YAML anchors."""

    prober: Literal["snmp"] = "snmp"
    metrics: list[SnmpMetric] = Field(default_factory=list)
    # Neighbour tables decoded in code (exporter.targets.snmp.neighbours), read every scrape.
    neighbours: list[Literal["lldp", "lldp_v2", "cdp"]] = Field(default_factory=list)
    # Rows kept per scrape, in local port order; the rest are dropped and counted.
    max_neighbours: int = Field(default=DEFAULT_MAX_NEIGHBOURS, ge=1, le=65536)
    max_repetitions: int = Field(default=25, ge=1, le=500)
    retries: int = Field(default=2, ge=0, le=10)
    timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    cache: SnmpCache | None = None
    # The devices this module may read (see exporter.targets.allowlist); None: any.
    allowed_targets: AllowedTargets | None = None

    @model_validator(mode="after")
    def _reads_something(self) -> Self:
        if not self.metrics and not self.neighbours:
            raise ValueError("a module needs metrics, neighbours or both")
        if len(set(self.neighbours)) != len(self.neighbours):
            raise ValueError("each neighbours table may be named once")
        return self

    @model_validator(mode="before")
    @classmethod
    def _drop_extension_keys(cls, data: object) -> object:
        return drop_extension_keys(data)


def _module_files() -> dict[str, str]:
    folder = resources.files("exporter.targets.snmp") / "modules"
    return {
        entry.name.removesuffix(".yml"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".yml")
    }


@cache
def builtin_modules() -> dict[str, SnmpModule]:
    """The modules shipped with Scout, parsed once."""
    return {
        name: SnmpModule.model_validate(yaml.safe_load(text))
        for name, text in sorted(_module_files().items())
    }
