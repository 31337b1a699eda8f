"""Neighbour tables (LLDP, CDP) read over SNMP and exported as one info family.

A neighbour row joins several tables (the remote system, its management
addresses, the local port it was heard on, the interface names), and its ids are
encoded by subtype; the declarative metrics of a module cannot say that, so the
tables named in a module's ``neighbours:`` are decoded here, in code::

    scout_lldp_neighbor_info{protocol="lldp", local_port="Gi1/0/24",
        remote_sysname="sw-dist-3", remote_port="Te1/1/1",
        remote_address="10.0.3.1", remote_chassis_id="00:1b:54:aa:bb:01",
        remote_platform=""} 1

``instance`` is added by Prometheus. This is the contract the sidecar's topology
refresh reads (docs/correlation.md, "The contract for discovered edges").

A module's rows are capped (``max_neighbours``, 1024 by default): a host on an
access port can send a new LLDP identity every few seconds, and each would be a
new series. Rows past the cap, in local port order, are dropped and counted
(``scout_snmp_neighbours_dropped{module}``, added by the scraper).

The device's own identity is exported too, so a device polled by address can be
joined to the name its neighbours know it by::

    scout_lldp_local_info{protocol="lldp", local_sysname="sw-access-1",
        local_chassis_id="00:1b:54:00:00:01"} 1

- ``lldp``: LLDP-MIB (IEEE 802.1AB-2005, 1.0.8802.1.1.2);
- ``lldp_v2``: LLDP-V2-MIB (IEEE 802.1AB-2009, 1.3.111.2.802.1.1.13), used only
  when the LLDP-MIB table of the same scrape is empty, so a device serving both
  does not list each neighbour twice; a module naming both walks it only then
  (a second walk, see ``fallback_tables``);
- ``cdp``: CISCO-CDP-MIB's cdpCacheTable, and cdpGlobalDeviceId for the local name.

Every text a device sends is cleaned (control characters dropped, length
capped): these values end up in label values, alert reasons and summaries.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from exporter.clients.snmp import Oid, VarBind
from exporter.targets.snmp.exposition import Family

NEIGHBOUR_METRIC = "scout_lldp_neighbor_info"
NEIGHBOUR_HELP = "A neighbour the device hears on a local port (LLDP or CDP); value 1."
LOCAL_METRIC = "scout_lldp_local_info"
LOCAL_HELP = "The device's own name and chassis id as its neighbours hear them; value 1."
# Rows per module and scrape, unless the module says otherwise (SnmpModule.max_neighbours).
DEFAULT_MAX_NEIGHBOURS = 1024
# Longer values are cut: a label is for matching and reading, not for a whole sysDescr.
MAX_TEXT = 128

TableName = Literal["lldp", "lldp_v2", "cdp"]

# IF-MIB columns naming the local port.
IF_DESCR: Oid = (1, 3, 6, 1, 2, 1, 2, 2, 1, 2)
IF_NAME: Oid = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1)

# LldpChassisIdSubtype and LldpPortIdSubtype (the same in both LLDP MIBs).
CHASSIS_MAC, CHASSIS_NETWORK_ADDRESS = 4, 5
PORT_INTERFACE_ALIAS, PORT_MAC, PORT_NETWORK_ADDRESS, PORT_INTERFACE_NAME, PORT_LOCAL = (
    1,
    3,
    4,
    5,
    7,
)
# IANA AddressFamilyNumbers, as in LLDP management and network addresses.
FAMILY_IPV4, FAMILY_IPV6 = 1, 2
ADDRESS_SIZES: Mapping[int, int] = {FAMILY_IPV4: 4, FAMILY_IPV6: 16}
# CiscoNetworkProtocol values of cdpCacheAddressType.
CDP_IP, CDP_IPV6 = 1, 20


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One row of ``scout_lldp_neighbor_info``."""

    protocol: str
    local_port: str
    remote_sysname: str
    remote_port: str
    remote_address: str = ""
    remote_chassis_id: str = ""
    remote_platform: str = ""

    def labels(self) -> tuple[tuple[str, str], ...]:
        return (
            ("protocol", self.protocol),
            ("local_port", self.local_port),
            ("remote_sysname", self.remote_sysname),
            ("remote_port", self.remote_port),
            ("remote_address", self.remote_address),
            ("remote_chassis_id", self.remote_chassis_id),
            ("remote_platform", self.remote_platform),
        )


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """One row of ``scout_lldp_local_info``: the device as its neighbours know it."""

    protocol: str
    local_sysname: str
    local_chassis_id: str = ""

    def labels(self) -> tuple[tuple[str, str], ...]:
        return (
            ("protocol", self.protocol),
            ("local_sysname", self.local_sysname),
            ("local_chassis_id", self.local_chassis_id),
        )


@dataclass(frozen=True, slots=True)
class NeighbourFamilies:
    """What one module's neighbour tables export, and how many rows the cap dropped."""

    families: list[Family]
    dropped: int = 0


# --------------------------------------------------------------------------------------
# Decoders


def clean_text(data: bytes | str) -> str:
    """Printable text for a label: no control or format characters, at most ``MAX_TEXT``.

    Bytes that are not UTF-8 are read as Latin-1 (every byte is a character), so
    a hostile or legacy value is shown, never lost or allowed to break a line.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    else:
        text = data
    # Line and paragraph separators are spaces to isspace(); every other control,
    # format, private-use or unassigned character (category C*) goes.
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    return " ".join(kept.split())[:MAX_TEXT]


def is_text(data: bytes) -> bool:
    """True when ``data`` reads as printable UTF-8 (trailing NULs of C strings allowed)."""
    try:
        text = data.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and text.isprintable()


def mac_text(data: bytes) -> str:
    """A MAC address as lower-case colon hex; ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{b:02x}" for b in data)


def hex_text(data: bytes) -> str:
    return "0x" + data.hex()


def address_text(family: int, data: bytes) -> str:
    """An address of an IANA family (IPv4, IPv6 by length when valid), else hex."""
    if family == FAMILY_IPV4 and len(data) == 4:
        return str(ipaddress.IPv4Address(data))
    if family == FAMILY_IPV6 and len(data) == 16:
        return str(ipaddress.IPv6Address(data))
    return hex_text(data)


def network_address_text(data: bytes) -> str:
    """A ``networkAddress`` id: one octet of IANA address family, then the address."""
    if not data:
        return ""
    return address_text(data[0], data[1:])


def _id_text(data: bytes, *, is_mac: bool, is_address: bool) -> str:
    """An id that is a MAC, a network address, or text (hex when it is not text)."""
    if is_mac and len(data) == 6:
        return mac_text(data)
    if is_address:
        return network_address_text(data)
    return clean_text(data.rstrip(b"\0")) if is_text(data) else hex_text(data)


def chassis_id_text(subtype: int | None, data: bytes) -> str:
    """An LLDP chassis id per LldpChassisIdSubtype."""
    return _id_text(
        data, is_mac=subtype == CHASSIS_MAC, is_address=subtype == CHASSIS_NETWORK_ADDRESS
    )


def port_id_text(subtype: int | None, data: bytes) -> str:
    """An LLDP port id per LldpPortIdSubtype."""
    return _id_text(data, is_mac=subtype == PORT_MAC, is_address=subtype == PORT_NETWORK_ADDRESS)


def remote_port_name(subtype: int | None, port_id: bytes, port_desc: bytes) -> str:
    """The neighbour's port as its own ifName where it can be told.

    An ``interfaceName`` id is the ifName. Other ids (a MAC, a local number such
    as Junos' ifIndex) name the port worse than its description, which most
    devices fill with the interface name, so the description wins for them.
    """
    if subtype == PORT_INTERFACE_NAME and is_text(port_id):
        return port_id_text(subtype, port_id)
    description = clean_text(port_desc)
    return description or port_id_text(subtype, port_id)


def man_addr_from_index(suffix: Oid) -> tuple[int, str] | None:
    """The (family, address) in a management-address index: subtype, length, octets.

    The index is ``lldpRemManAddrSubtype.length.octets`` (an OCTET STRING index
    carries its length). Some agents leave the length out; an IPv4 or IPv6
    address of the right size is read that way too. For those two families the
    length is believed only when it is the family's size and that many octets
    follow, since ``1.3.1.2.3`` is the length-less 3.1.2.3, not a 3-octet value.
    ``None`` if it is neither.
    """
    if len(suffix) < 2 or any(part > 255 for part in suffix[1:]):
        return None
    family, rest = suffix[0], suffix[1:]
    size = ADDRESS_SIZES.get(family)
    if rest[0] == len(rest) - 1 and size in (None, rest[0]):
        octets = bytes(rest[1:])
    elif len(rest) == size:
        octets = bytes(rest)
    else:
        return None
    return family, address_text(family, octets)


def best_address(addresses: Sequence[tuple[int, str]]) -> str:
    """The address to show: the first IPv4 (what file_sd targets use), else IPv6, else any."""
    for wanted in (FAMILY_IPV4, FAMILY_IPV6):
        for family, text in addresses:
            if family == wanted:
                return text
    return addresses[0][1] if addresses else ""


def cdp_address_text(kind: int | None, data: bytes) -> str:
    """cdpCacheAddress per cdpCacheAddressType (CiscoNetworkProtocol)."""
    if kind == CDP_IP and len(data) == 4:
        return str(ipaddress.IPv4Address(data))
    if kind == CDP_IPV6 and len(data) == 16:
        return str(ipaddress.IPv6Address(data))
    return hex_text(data) if data else ""


def cdp_device_name(data: bytes) -> str:
    """cdpCacheDeviceId without the ``(serial)`` NX-OS appends: ``sw-1(FOX123)`` is ``sw-1``."""
    text = clean_text(data)
    if text.endswith(")") and "(" in text:
        name = text[: text.rindex("(")].rstrip()
        if name:
            return name
    return text


# --------------------------------------------------------------------------------------
# Tables


Columns = Mapping[Oid, Sequence[VarBind]]


def _column(columns: Columns, oid: Oid, width: int) -> dict[Oid, VarBind]:
    """A column's varbinds by their index (the OID suffix), when it has ``width`` parts."""
    out: dict[Oid, VarBind] = {}
    for varbind in columns.get(oid, ()):
        suffix = varbind.oid[len(oid) :]
        if width == 0 or len(suffix) == width:
            out[suffix] = varbind
    return out


def _scalar(columns: Columns, oid: Oid) -> VarBind | None:
    """The value of scalar ``oid`` (``...0``), stored under its object like a column."""
    return _column(columns, oid[:-1], 1).get(oid[-1:])


def _octets(varbind: VarBind | None) -> bytes:
    return varbind.value if varbind is not None and isinstance(varbind.value, bytes) else b""


def _integer(varbind: VarBind | None) -> int | None:
    return varbind.value if varbind is not None and isinstance(varbind.value, int) else None


class InterfaceNames:
    """ifName and ifDescr by ifIndex, to name local ports as alerts do (``ifName``)."""

    def __init__(self, columns: Columns) -> None:
        self.names = {s[0]: clean_text(_octets(v)) for s, v in _column(columns, IF_NAME, 1).items()}
        self.descriptions = {
            s[0]: clean_text(_octets(v)) for s, v in _column(columns, IF_DESCR, 1).items()
        }
        self._by_descr = {text: index for index, text in self.descriptions.items() if text}
        self._names = frozenset(text for text in self.names.values() if text)

    def of_index(self, if_index: int) -> str:
        return self.names.get(if_index) or self.descriptions.get(if_index, "")

    def has_name(self, text: str) -> bool:
        return text in self._names

    def of_description(self, text: str) -> str:
        index = self._by_descr.get(text)
        return "" if index is None else self.of_index(index)


class NeighbourTable(Protocol):
    """One MIB's neighbour table: the columns to walk and the rows they make."""

    @property
    def name(self) -> TableName:
        """The name a module's ``neighbours:`` gives it."""
        ...

    @property
    def columns(self) -> tuple[Oid, ...]:
        """The columns to walk, the interface names among them."""
        ...

    @property
    def local_scalars(self) -> tuple[Oid, ...]:
        """The scalars (``.0``) naming the device itself, read with GET."""
        ...

    @property
    def fallback_for(self) -> TableName | None:
        """The table this one stands in for: walked only when that one has no rows."""
        ...

    def has_rows(self, columns: Columns) -> bool:
        """True when the walked ``columns`` hold at least one neighbour row."""
        ...

    def neighbours(self, columns: Columns, interfaces: InterfaceNames) -> list[Neighbour]:
        """The rows of the walked ``columns``; ``interfaces`` names the local ports."""
        ...

    def local_identity(self, columns: Columns) -> LocalIdentity | None:
        """The device's own identity from ``local_scalars`` (stored by column), if sent."""
        ...


@dataclass(frozen=True, slots=True)
class LldpTable:
    """LLDP-MIB or LLDP-V2-MIB: the remote table, its management addresses, local ports.

    The MIBs differ in where things are: LLDP-MIB indexes remote rows by
    (time mark, lldpLocPortNum, index) and names local ports in lldpLocPortTable;
    LLDP-V2-MIB by (time mark, ifIndex, destination-address index, index).
    """

    name: TableName
    remote: Oid  # the remote table's entry
    management: Oid  # lldpRemManAddrEntry
    local_ports: Oid  # lldpLocPortEntry
    local_system: Oid  # lldpLocalSystemData: chassis id subtype .1.0, chassis id .2.0, name .3.0
    first_remote_column: int  # lldpRemChassisIdSubtype's column number
    index_width: int  # sub-identifiers in a remote row's index
    local_is_if_index: bool
    fallback_for: TableName | None = None

    @property
    def columns(self) -> tuple[Oid, ...]:
        remote = tuple((*self.remote, self.first_remote_column + n) for n in range(6))
        local = tuple((*self.local_ports, column) for column in (2, 3, 4))
        # Any column of the address table will do: the address is in its index.
        return (*remote, (*self.management, 3), *local, IF_NAME, IF_DESCR)

    @property
    def local_scalars(self) -> tuple[Oid, ...]:
        return tuple((*self.local_system, n, 0) for n in (1, 2, 3))

    def has_rows(self, columns: Columns) -> bool:
        identities = (self.first_remote_column + n for n in (1, 3, 5))  # chassis, port, name
        return any(_column(columns, (*self.remote, c), self.index_width) for c in identities)

    def local_identity(self, columns: Columns) -> LocalIdentity | None:
        subtype, chassis, name = (_scalar(columns, oid) for oid in self.local_scalars)
        chassis_id = _octets(chassis)
        identity = LocalIdentity(
            protocol="lldp",
            local_sysname=clean_text(_octets(name)),
            local_chassis_id=chassis_id_text(_integer(subtype), chassis_id) if chassis_id else "",
        )
        return identity if identity.local_sysname or identity.local_chassis_id else None

    def neighbours(self, columns: Columns, interfaces: InterfaceNames) -> list[Neighbour]:
        first, width = self.first_remote_column, self.index_width
        chassis_subtype, chassis, port_subtype, port, port_desc, sysname = (
            _column(columns, (*self.remote, first + n), width) for n in range(6)
        )
        addresses: dict[Oid, list[tuple[int, str]]] = {}
        for suffix in _column(columns, (*self.management, 3), 0):
            found = man_addr_from_index(suffix[width:])
            if found is not None:
                addresses.setdefault(_row_key(suffix[:width]), []).append(found)
        local = self._local_port_names(columns, interfaces)
        out: list[Neighbour] = []
        rows = {*chassis, *port, *sysname}
        for index in sorted(rows):
            local_number = index[1]
            out.append(
                Neighbour(
                    protocol="lldp",
                    local_port=local.get(local_number)
                    or (interfaces.of_index(local_number) if self.local_is_if_index else "")
                    or str(local_number),
                    remote_sysname=clean_text(_octets(sysname.get(index))),
                    remote_port=remote_port_name(
                        _integer(port_subtype.get(index)),
                        _octets(port.get(index)),
                        _octets(port_desc.get(index)),
                    ),
                    remote_address=best_address(addresses.get(_row_key(index), [])),
                    remote_chassis_id=chassis_id_text(
                        _integer(chassis_subtype.get(index)), _octets(chassis.get(index))
                    ),
                )
            )
        return out

    def _local_port_names(self, columns: Columns, interfaces: InterfaceNames) -> dict[int, str]:
        subtypes = _column(columns, (*self.local_ports, 2), 1)
        ids = _column(columns, (*self.local_ports, 3), 1)
        descriptions = _column(columns, (*self.local_ports, 4), 1)
        names: dict[int, str] = {}
        for suffix in {*subtypes, *ids, *descriptions}:
            name = local_port_name(
                suffix[0],
                _integer(subtypes.get(suffix)),
                _octets(ids.get(suffix)),
                clean_text(_octets(descriptions.get(suffix))),
                interfaces,
                port_is_if_index=self.local_is_if_index,
            )
            if name:
                names[suffix[0]] = name
        return names


def _row_key(index: Oid) -> Oid:
    """A remote row without its time mark: the address table may carry another one."""
    return index[1:]


def local_port_name(
    number: int,
    subtype: int | None,
    port_id: bytes,
    description: str,
    interfaces: InterfaceNames,
    *,
    port_is_if_index: bool = False,
) -> str:
    """The local port as its ifName, the name alerts carry.

    In order: an ``interfaceName`` id is the ifName; a ``local`` id that is a
    number is taken as an ifIndex (Junos sends one); an id or description that
    is an ifName, or a description that is an ifDescr (Cisco sends the long
    form), gives that interface's ifName; an LLDP-V2 port number is an ifIndex.
    Otherwise the id as text, or the description.
    """
    text = port_id_text(subtype, port_id)
    if subtype == PORT_INTERFACE_NAME and text:
        return text
    if subtype == PORT_LOCAL and text.isdigit() and interfaces.of_index(int(text)):
        return interfaces.of_index(int(text))
    for candidate in (text, description):
        if candidate and interfaces.has_name(candidate):
            return candidate
    by_description = interfaces.of_description(description) if description else ""
    if by_description:
        return by_description
    if port_is_if_index and interfaces.of_index(number):
        return interfaces.of_index(number)
    if subtype in (PORT_INTERFACE_ALIAS, PORT_LOCAL) or subtype is None:
        return text or description
    # A MAC or an address names the port worse than its description.
    return description or text


@dataclass(frozen=True, slots=True)
class CdpTable:
    """CISCO-CDP-MIB cdpCacheTable, indexed by (ifIndex, device index)."""

    name: TableName = "cdp"
    entry: Oid = (1, 3, 6, 1, 4, 1, 9, 9, 23, 1, 2, 1, 1)
    global_device_id: Oid = (1, 3, 6, 1, 4, 1, 9, 9, 23, 1, 3, 4, 0)
    fallback_for: TableName | None = None

    @property
    def columns(self) -> tuple[Oid, ...]:
        # cdpCacheAddressType, Address, DeviceId, DevicePort, Platform.
        return (*((*self.entry, c) for c in (3, 4, 6, 7, 8)), IF_NAME, IF_DESCR)

    @property
    def local_scalars(self) -> tuple[Oid, ...]:
        return (self.global_device_id,)

    def has_rows(self, columns: Columns) -> bool:
        return any(_column(columns, (*self.entry, c), 2) for c in (6, 7))

    def local_identity(self, columns: Columns) -> LocalIdentity | None:
        # The same cleaning as a neighbour's device id, so the two join.
        name = cdp_device_name(_octets(_scalar(columns, self.global_device_id)))
        return LocalIdentity(protocol="cdp", local_sysname=name) if name else None

    def neighbours(self, columns: Columns, interfaces: InterfaceNames) -> list[Neighbour]:
        kind, address, device, port, platform = (
            _column(columns, (*self.entry, c), 2) for c in (3, 4, 6, 7, 8)
        )
        out: list[Neighbour] = []
        for index in sorted({*device, *port}):
            out.append(
                Neighbour(
                    protocol="cdp",
                    local_port=interfaces.of_index(index[0]) or str(index[0]),
                    remote_sysname=cdp_device_name(_octets(device.get(index))),
                    remote_port=clean_text(_octets(port.get(index))),
                    remote_address=cdp_address_text(
                        _integer(kind.get(index)), _octets(address.get(index))
                    ),
                    remote_platform=clean_text(_octets(platform.get(index))),
                )
            )
        return out


LLDP = LldpTable(
    name="lldp",
    remote=(1, 0, 8802, 1, 1, 2, 1, 4, 1, 1),
    management=(1, 0, 8802, 1, 1, 2, 1, 4, 2, 1),
    local_ports=(1, 0, 8802, 1, 1, 2, 1, 3, 7, 1),
    local_system=(1, 0, 8802, 1, 1, 2, 1, 3),
    first_remote_column=4,
    index_width=3,
    local_is_if_index=False,
)
LLDP_V2 = LldpTable(
    name="lldp_v2",
    remote=(1, 3, 111, 2, 802, 1, 1, 13, 1, 4, 1, 1),
    management=(1, 3, 111, 2, 802, 1, 1, 13, 1, 4, 2, 1),
    local_ports=(1, 3, 111, 2, 802, 1, 1, 13, 1, 3, 7, 1),
    local_system=(1, 3, 111, 2, 802, 1, 1, 13, 1, 3),
    first_remote_column=5,
    index_width=4,
    local_is_if_index=True,
    fallback_for="lldp",
)
CDP = CdpTable()
TABLES: Mapping[TableName, NeighbourTable] = {"lldp": LLDP, "lldp_v2": LLDP_V2, "cdp": CDP}


def fallback_tables(tables: Sequence[NeighbourTable]) -> list[NeighbourTable]:
    """The tables of ``tables`` that stand in for another one of them (walked second)."""
    names = {table.name for table in tables}
    return [table for table in tables if table.fallback_for in names]


def fallback_columns(tables: Sequence[NeighbourTable], walked: Columns) -> list[Oid]:
    """The columns still to walk: those of fallbacks whose table came back empty.

    Columns already in ``walked`` (the interface names) are not walked again.
    """
    by_name = {table.name: table for table in tables}
    wanted: dict[Oid, None] = {}
    for table in fallback_tables(tables):
        primary = by_name[table.fallback_for] if table.fallback_for else None
        if primary is not None and not primary.has_rows(walked):
            wanted.update(dict.fromkeys(c for c in table.columns if c not in walked))
    return list(wanted)


def neighbour_families(
    tables: Sequence[NeighbourTable],
    columns: Columns,
    max_neighbours: int = DEFAULT_MAX_NEIGHBOURS,
) -> NeighbourFamilies:
    """The neighbour and local identity families of one module's reads.

    At most ``max_neighbours`` rows are kept, the first in (local port, labels)
    order, so the same rows survive every scrape of the same tables.
    """
    if not tables:
        return NeighbourFamilies([])
    interfaces = InterfaceNames(columns)
    rows: dict[str, list[Neighbour]] = {
        table.name: table.neighbours(columns, interfaces) for table in tables
    }
    if rows.get("lldp"):
        rows.pop("lldp_v2", None)  # the same neighbours, seen through the older MIB
    unique = {neighbour.labels(): neighbour for found in rows.values() for neighbour in found}
    ordered = sorted(unique.items(), key=lambda item: (item[1].local_port, item[0]))
    family = Family(NEIGHBOUR_METRIC, NEIGHBOUR_HELP, "gauge")
    for labels, _ in ordered[:max_neighbours]:
        family.add(labels, 1)
    families = [family]
    identities: dict[str, LocalIdentity] = {}
    # The table a fallback stands in for speaks first.
    for table in sorted(tables, key=lambda table: table.fallback_for is not None):
        identity = table.local_identity(columns)
        if identity is not None:
            identities.setdefault(identity.protocol, identity)
    if identities:
        local = Family(LOCAL_METRIC, LOCAL_HELP, "gauge")
        for identity in identities.values():
            local.add(identity.labels(), 1)
        families.append(local)
    return NeighbourFamilies(families, dropped=max(0, len(ordered) - max_neighbours))
