"""Decoders of the neighbour tables (LLDP, LLDP-V2, CDP) and the rows they make."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from exporter.clients.snmp import Oid, ValueKind, VarBind
from exporter.targets.snmp.exposition import Family
from exporter.targets.snmp.modules import SnmpModule, builtin_modules
from exporter.targets.snmp.neighbours import (
    CDP,
    DEFAULT_MAX_NEIGHBOURS,
    IF_DESCR,
    IF_NAME,
    LLDP,
    LLDP_V2,
    LOCAL_METRIC,
    MAX_TEXT,
    NEIGHBOUR_METRIC,
    TABLES,
    InterfaceNames,
    NeighbourFamilies,
    best_address,
    cdp_address_text,
    cdp_device_name,
    chassis_id_text,
    clean_text,
    local_port_name,
    man_addr_from_index,
    neighbour_families,
    port_id_text,
    remote_port_name,
)
from exporter.targets.snmp.scraper import SessionEntry, SnmpScraper
from tests.exporter.fakes import ReplayedAgent
from tests.exporter.targets.snmp.snmprec_pass_persist import read_snmprec

RECORDINGS = Path(__file__).parent / "recordings"


def octets(oid: Oid, value: bytes) -> VarBind:
    return VarBind(oid, ValueKind.OCTET_STRING, value)


def integer(oid: Oid, value: int) -> VarBind:
    return VarBind(oid, ValueKind.INTEGER, value)


def test_mac_chassis_id_is_colon_hex_and_other_subtypes_by_their_kind():
    assert chassis_id_text(4, bytes.fromhex("001B54AABB01")) == "00:1b:54:aa:bb:01"
    # networkAddress: an IANA family octet, then the address.
    assert chassis_id_text(5, b"\x01" + bytes([10, 0, 0, 1])) == "10.0.0.1"
    assert chassis_id_text(7, b"FDO1234X\x00") == "FDO1234X"
    # A "MAC" of the wrong size, or binary under a text subtype, is shown as hex, not garbled.
    assert chassis_id_text(4, b"\x00\x1b\x54") == "0x001b54"
    assert chassis_id_text(1, b"\xff\xfe\x00\x01") == "0xfffe0001"


def test_port_ids_per_subtype():
    assert port_id_text(3, bytes.fromhex("525400123457")) == "52:54:00:12:34:57"
    assert port_id_text(5, b"Gi1/0/24") == "Gi1/0/24"
    assert port_id_text(7, b"517") == "517"
    v6 = ipaddress.IPv6Address("2001:db8::5")
    assert port_id_text(4, b"\x02" + v6.packed) == "2001:db8::5"


def test_remote_port_prefers_the_interface_name_then_the_description():
    assert remote_port_name(5, b"Te1/1/1", b"TenGigabitEthernet1/1/1") == "Te1/1/1"
    # Junos sends its ifIndex as a local id; the description is the name.
    assert remote_port_name(7, b"517", b"ge-0/0/1") == "ge-0/0/1"
    assert remote_port_name(3, bytes.fromhex("525400123457"), b"") == "52:54:00:12:34:57"


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        pytest.param((1, 4, 10, 0, 3, 1), (1, "10.0.3.1"), id="IPv4 with its length"),
        pytest.param(
            (2, 16, *ipaddress.IPv6Address("2001:db8:3::1").packed),
            (2, "2001:db8:3::1"),
            id="IPv6 with its length",
        ),
        pytest.param((1, 192, 0, 2, 7), (1, "192.0.2.7"), id="IPv4 without a length"),
        pytest.param(
            (2, *ipaddress.IPv6Address("fe80::1").packed), (2, "fe80::1"), id="IPv6 implied"
        ),
        pytest.param((6, 3, 1, 2, 3), (6, "0x010203"), id="another family: hex"),
        pytest.param((1, 3, 1, 2, 3), (1, "3.1.2.3"), id="IPv4 without a length, from 3"),
        pytest.param((1, 4, 1, 2, 3), (1, "4.1.2.3"), id="IPv4 without a length, from 4"),
        pytest.param(
            (2, *ipaddress.IPv6Address("1000::7").packed), (2, "1000::7"), id="IPv6 from 16"
        ),
        pytest.param((1, 4, 10, 0), None, id="too short"),
        pytest.param((1, 4, 10, 0, 3, 300), None, id="not octets"),
        pytest.param((1,), None, id="no address"),
    ],
)
def test_management_address_decoded_from_the_index(suffix, expected):
    assert man_addr_from_index(suffix) == expected


def test_ipv4_management_address_wins_over_ipv6():
    assert best_address([(2, "2001:db8::1"), (1, "10.0.0.1")]) == "10.0.0.1"
    assert best_address([(6, "0x01"), (2, "2001:db8::1")]) == "2001:db8::1"
    assert best_address([]) == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"sw-1\x1b[31m\r\nevil", "sw-1[31m evil", id="escape and newline"),
        pytest.param(b"C string\x00\x00", "C string", id="trailing NULs"),
        pytest.param("a\u2028b\u202ec\u200bd".encode(), "a bcd", id="separators and bidi"),
        pytest.param(b"caf\xe9", "caf\u00e9", id="latin-1, not UTF-8"),
        pytest.param(b"  spaced\t out  ", "spaced out", id="whitespace"),
        pytest.param("Zürich 東京".encode(), "Zürich 東京", id="UTF-8 kept"),
    ],
)
def test_hostile_strings_are_cleaned(raw, expected):
    assert clean_text(raw) == expected


def test_long_values_are_capped():
    assert clean_text(b"x" * 10_000) == "x" * MAX_TEXT


def test_cdp_addresses_and_device_ids():
    assert cdp_address_text(1, bytes([10, 0, 9, 2])) == "10.0.9.2"
    v6 = ipaddress.IPv6Address("2001:db8:9::7")
    assert cdp_address_text(20, v6.packed) == "2001:db8:9::7"
    assert cdp_address_text(1, b"") == ""
    assert cdp_address_text(8, b"\x49\x00\x01") == "0x490001"  # CLNS: shown, not guessed
    assert cdp_device_name(b"nx-core-2(FOX1234ABCD)") == "nx-core-2"
    assert cdp_device_name(b"sw-access-9.example.net") == "sw-access-9.example.net"
    assert cdp_device_name(b"(FOX1234ABCD)") == "(FOX1234ABCD)"  # nothing before it: kept


def interfaces(names: dict[int, tuple[str, str]]) -> InterfaceNames:
    return InterfaceNames(
        {
            IF_DESCR: [octets((*IF_DESCR, i), d.encode()) for i, (d, _) in names.items()],
            IF_NAME: [octets((*IF_NAME, i), n.encode()) for i, (_, n) in names.items()],
        }
    )


def test_local_port_named_as_alerts_name_it():
    ports = interfaces({10102: ("GigabitEthernet1/0/2", "Gi1/0/2"), 7: ("xe-0/0/7", "xe-0/0/7")})
    assert local_port_name(1, 5, b"Gi1/0/1", "", ports) == "Gi1/0/1"
    assert local_port_name(2, 7, b"10102", "uplink", ports) == "Gi1/0/2"  # local: an ifIndex
    mac = bytes.fromhex("001b54000018")
    assert local_port_name(3, 3, mac, "GigabitEthernet1/0/2", ports) == "Gi1/0/2"  # by ifDescr
    assert local_port_name(3, 3, mac, "", ports) == "00:1b:54:00:00:18"
    assert local_port_name(7, 7, b"522", "", ports, port_is_if_index=True) == "xe-0/0/7"
    assert local_port_name(9, 7, b"port 9", "", ports) == "port 9"


def lldp_walk(table, remote_index: Oid, port_number: int) -> dict[Oid, list[VarBind]]:
    """One neighbour in ``table``: MAC chassis, interfaceName port, an IPv4 address."""
    first = table.first_remote_column
    column = {n: (*table.remote, first + n) for n in range(6)}
    address = (*table.management, 3, *remote_index, 1, 4, 10, 0, 0, 11)
    return {
        column[0]: [integer((*column[0], *remote_index), 4)],
        column[1]: [octets((*column[1], *remote_index), bytes.fromhex("3c61040a0b0c"))],
        column[2]: [integer((*column[2], *remote_index), 5)],
        column[3]: [octets((*column[3], *remote_index), b"et-1/0/0")],
        column[5]: [octets((*column[5], *remote_index), b"spine-1")],
        (*table.management, 3): [integer(address, 2)],
        IF_NAME: [octets((*IF_NAME, port_number), b"xe-0/0/7")],
    }


def samples(families: list[Family] | NeighbourFamilies) -> list[dict[str, str]]:
    """The neighbour rows among ``families``."""
    if isinstance(families, NeighbourFamilies):
        families = families.families
    rows = [f for f in families if f.name == NEIGHBOUR_METRIC]
    assert len(rows) == 1, [f.name for f in families]
    return [dict(labels) for labels, value in rows[0].samples if value == 1]


def local_samples(families: list[Family]) -> list[dict[str, str]]:
    """The device's own identity rows among ``families``."""
    return [
        dict(labels)
        for family in families
        if family.name == LOCAL_METRIC
        for labels, value in family.samples
        if value == 1
    ]


# The one neighbour of lldp_walk, and of the lldp-v2-switch recording.
SPINE_1 = {
    "protocol": "lldp",
    "local_port": "xe-0/0/7",
    "remote_sysname": "spine-1",
    "remote_port": "et-1/0/0",
    "remote_address": "10.0.0.11",
    "remote_chassis_id": "3c:61:04:0a:0b:0c",
    "remote_platform": "",
}


def test_lldp_v2_rows_are_keyed_by_if_index():
    rows = samples(neighbour_families([LLDP, LLDP_V2], lldp_walk(LLDP_V2, (0, 7, 1, 4), 7)))
    assert rows == [SPINE_1]


def test_lldp_v2_is_ignored_when_lldp_mib_has_the_neighbours():
    walk = {**lldp_walk(LLDP_V2, (0, 7, 1, 4), 7), **lldp_walk(LLDP, (0, 3, 1), 3)}
    rows = samples(neighbour_families([LLDP, LLDP_V2], walk))
    # lldpLocPortNum 3 has no lldpLocPortTable row and is not taken for an ifIndex.
    assert [(r["local_port"], r["remote_sysname"]) for r in rows] == [("3", "spine-1")]


def test_a_module_needs_metrics_or_neighbours():
    with pytest.raises(ValueError, match="metrics, neighbours or both"):
        SnmpModule.model_validate({"prober": "snmp"})
    with pytest.raises(ValueError, match="named once"):
        SnmpModule.model_validate({"neighbours": ["cdp", "cdp"]})
    with pytest.raises(ValueError, match="neighbours"):
        SnmpModule.model_validate({"neighbours": ["ospf"]})
    own = SnmpModule.model_validate(
        {
            "neighbours": ["lldp", "cdp"],
            "metrics": [{"name": "sysUpTime", "oid": "1.3.6.1.2.1.1.3"}],
        }
    )
    assert own.neighbours == ["lldp", "cdp"]
    assert [m.name for m in own.metrics] == ["sysUpTime"]
    assert own.max_neighbours == DEFAULT_MAX_NEIGHBOURS == 1024
    for bad in (0, -1, 10**6, "many"):
        with pytest.raises(ValueError, match="max_neighbours"):
            SnmpModule.model_validate({"neighbours": ["lldp"], "max_neighbours": bad})
    modules = builtin_modules()
    assert modules["lldp"].neighbours == ["lldp", "lldp_v2"]
    assert modules["cdp"].neighbours == ["cdp"]


def recorded_agent(recording: Path) -> ReplayedAgent:
    """A recording's neighbour and interface columns, served in process (no snmpsim)."""
    agent = ReplayedAgent()
    rows = read_snmprec(recording)
    agent.columns = {
        column: {
            oid[len(column) :]: value
            for oid, (_, value) in rows.items()
            if oid[: len(column)] == column
        }
        for table in TABLES.values()
        for column in table.columns
    }
    agent.text_scalars = {
        oid: value
        for table in TABLES.values()
        for oid in table.local_scalars
        if oid in rows and isinstance(value := rows[oid][1], bytes)
    }
    agent.scalars.update(
        (oid, value)
        for table in TABLES.values()
        for oid in table.local_scalars
        if oid in rows and isinstance(value := rows[oid][1], int)
    )
    return agent


@pytest.mark.parametrize(
    ("recording", "module", "expected", "local", "walks"),
    [
        pytest.param(
            "lldp-switch",
            "lldp",
            [
                ("Gi1/0/1", "sw-dist-3.example.net", "Te1/1/1", "10.0.3.1"),
                ("Gi1/0/2", "edge-1", "ge-0/0/1", "2001:db8::1"),
                ("Gi1/0/24", 'srv-7[31m INJECTED{x="1"} 1', "eth0", ""),
            ],
            [("lldp", "core-1.example.net", "00:1b:54:00:00:01")],
            1,
            id="LLDP-MIB",
        ),
        pytest.param(
            "lldp-v2-switch",
            "lldp",
            [("xe-0/0/7", "spine-1", "et-1/0/0", "10.0.0.11")],
            [("lldp", "agg-5", "3c:61:04:05:05:05")],
            2,
            id="LLDP-V2-MIB",
        ),
        pytest.param(
            "cdp-router",
            "cdp",
            [
                ("Gi0/0", "sw-access-9.example.net", "GigabitEthernet1/0/48", "10.0.9.2"),
                ("Gi0/1", "nx-core-2", "Ethernet1/49", "2001:db8:9::7"),
            ],
            [("cdp", "core-2.example.net", "")],
            1,
            id="CDP",
        ),
    ],
)
async def test_builtin_modules_read_the_recordings(recording, module, expected, local, walks):
    agent = recorded_agent(RECORDINGS / f"{recording}.snmprec")
    result = await SnmpScraper().scrape_module(
        SessionEntry(agent, 0.0), ("dev",), module, builtin_modules()[module], 1e12
    )
    assert result.success, result.error
    rows = sorted(
        (r["local_port"], r["remote_sysname"], r["remote_port"], r["remote_address"])
        for r in samples(result.families)
    )
    assert rows == expected
    identities = [
        (r["protocol"], r["local_sysname"], r["local_chassis_id"])
        for r in local_samples(result.families)
    ]
    assert identities == local
    assert result.neighbours_dropped == 0
    # One walk, every column at once: the neighbour tables and the interface names;
    # LLDP-V2-MIB's columns only in a second walk, when LLDP-MIB had no rows.
    assert len(agent.walked) == walks
    assert {IF_NAME, IF_DESCR} <= agent.walked[0]
    assert not agent.walked[0] & set(LLDP_V2.columns) - {IF_NAME, IF_DESCR}
    if walks == 2:
        assert agent.walked[1] == set(LLDP_V2.columns) - {IF_NAME, IF_DESCR}


def many_neighbours(ports: list[int]) -> dict[Oid, list[VarBind]]:
    """LLDP-MIB rows, one per local port number, each a different chassis."""
    walk: dict[Oid, list[VarBind]] = {}
    for port in ports:
        for column, rows in lldp_walk(LLDP, (0, port, 1), port).items():
            if column == IF_NAME:
                rows = [octets((*IF_NAME, port), f"Gi1/0/{port:02d}".encode())]
            elif column == (*LLDP.remote, 5):
                rows = [octets((*column, 0, port, 1), port.to_bytes(6, "big"))]
            walk.setdefault(column, []).extend(rows)
    return walk


def test_neighbour_rows_are_capped_in_local_port_order():
    ports = [7, 3, 12, 1, 9]
    capped = neighbour_families([LLDP], many_neighbours(ports), max_neighbours=3)
    # lldpLocPortNum is not an ifIndex in LLDP-MIB: the local port is its number.
    assert sorted(r["local_port"] for r in samples(capped)) == ["1", "12", "3"]
    assert capped.dropped == 2
    again = neighbour_families([LLDP], many_neighbours(sorted(ports)), max_neighbours=3)
    assert samples(again) == samples(capped)
    whole = neighbour_families([LLDP], many_neighbours(ports))
    assert (len(samples(whole)), whole.dropped) == (5, 0)


async def test_the_scrape_says_how_many_rows_were_dropped():
    agent = recorded_agent(RECORDINGS / "lldp-switch.snmprec")
    module = builtin_modules()["lldp"].model_copy(update={"max_neighbours": 1})
    result = await SnmpScraper().scrape_module(
        SessionEntry(agent, 0.0), ("dev",), "lldp", module, 1e12
    )
    assert result.success, result.error
    assert [r["local_port"] for r in samples(result.families)] == ["Gi1/0/1"]
    assert result.neighbours_dropped == 2


def test_local_identity_needs_a_value_and_lldp_mib_speaks_first():
    assert neighbour_families([LLDP, LLDP_V2, CDP], {}).families[1:] == []
    v1_name = (1, 0, 8802, 1, 1, 2, 1, 3, 3)
    v2_name = (1, 3, 111, 2, 802, 1, 1, 13, 1, 3, 3)
    walk = {
        v2_name: [octets((*v2_name, 0), b"from-v2")],
        v1_name: [octets((*v1_name, 0), b"from-v1\x00")],
    }
    rows = local_samples(neighbour_families([LLDP_V2, LLDP], walk).families)
    assert rows == [{"protocol": "lldp", "local_sysname": "from-v1", "local_chassis_id": ""}]
