"""The ``lldp`` and ``cdp`` modules against snmpsim recordings and real snmpd.

The recordings (``recordings/*.snmprec``, community = file name) are written by
hand: a switch with three LLDP neighbours, a Cisco router with two CDP
neighbours, a switch that serves only LLDP-V2-MIB. snmpd has no LLDP-MIB of its
own, so against it the module succeeds with no rows.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.app import create_app
from exporter.config import parse_config
from exporter.live import Settings
from tests.exporter.targets.snmp.recorded import recording_auths, scrape, served
from tests.exporter.targets.snmp.test_neighbours import SPINE_1
from tests.peers.snmp import RealSnmpd, SnmpsimDevices, parse_exposition, promtool_check_metrics

pytestmark = pytest.mark.peers

RECORDINGS = sorted((Path(__file__).parent / "recordings").glob("*.snmprec"))
NEIGHBOUR = "scout_lldp_neighbor_info"


@pytest.fixture(scope="module")
def devices(tmp_path_factory) -> Iterator[SnmpsimDevices]:
    with served(tmp_path_factory, RECORDINGS) as devices:
        yield devices


@pytest.fixture
async def client(aiohttp_client):
    capped = "lldp_capped: {prober: snmp, neighbours: [lldp], max_neighbours: 2}"
    config = parse_config(
        f"auths: {recording_auths(RECORDINGS)}\nmodules: {{{capped}}}", "neighbours.yml"
    )
    return await aiohttp_client(create_app(Settings(enabled_collectors=frozenset()), config))


def neighbours(text: str) -> list[dict[str, str]]:
    return sorted(
        (
            dict(labels)
            for (name, labels), value in parse_exposition(text).items()
            if name == NEIGHBOUR and value == 1
        ),
        key=lambda row: row["local_port"],
    )


def local_identities(text: str) -> list[dict[str, str]]:
    return [
        dict(labels)
        for (name, labels), value in parse_exposition(text).items()
        if name == "scout_lldp_local_info" and value == 1
    ]


def dropped(text: str, module: str) -> float | None:
    return parse_exposition(text).get(
        ("scout_snmp_neighbours_dropped", frozenset({("module", module)}))
    )


def success(text: str, module: str) -> float | None:
    return parse_exposition(text).get(
        ("scout_snmp_module_success", frozenset({("module", module)}))
    )


async def test_lldp_switch_with_three_neighbours(client, devices):
    text = await scrape(client, devices.target, "lldp-switch", "lldp")
    assert success(text, "lldp") == 1, text
    assert neighbours(text) == [
        {
            "protocol": "lldp",
            # lldpLocPortNum 1: an interfaceName port id.
            "local_port": "Gi1/0/1",
            "remote_sysname": "sw-dist-3.example.net",
            "remote_port": "Te1/1/1",
            # IPv4 is preferred over the IPv6 address the neighbour also sends.
            "remote_address": "10.0.3.1",
            "remote_chassis_id": "00:1b:54:aa:bb:01",
            "remote_platform": "",
        },
        {
            "protocol": "lldp",
            # A local-subtype port id holding an ifIndex (10102), named by its ifName.
            "local_port": "Gi1/0/2",
            "remote_sysname": "edge-1",
            # A local-subtype remote port id (Junos' ifIndex): the description names it.
            "remote_port": "ge-0/0/1",
            "remote_address": "2001:db8::1",
            "remote_chassis_id": "JN11F2A3C0DE",
            "remote_platform": "",
        },
        {
            "protocol": "lldp",
            # A MAC port id; its description is an ifDescr, so the ifName is used.
            "local_port": "Gi1/0/24",
            # Escape, CR LF and NUL are gone; the rest is a label value, escaped.
            "remote_sysname": 'srv-7[31m INJECTED{x="1"} 1',
            "remote_port": "eth0",
            "remote_address": "",
            "remote_chassis_id": "52:54:00:12:34:56",
            "remote_platform": "",
        },
    ]
    assert local_identities(text) == [
        {
            "protocol": "lldp",
            "local_sysname": "core-1.example.net",
            "local_chassis_id": "00:1b:54:00:00:01",
        }
    ]
    assert dropped(text, "lldp") == 0


async def test_a_capped_module_drops_the_last_local_ports_and_says_so(client, devices):
    text = await scrape(client, devices.target, "lldp-switch", "lldp_capped")
    assert success(text, "lldp_capped") == 1, text
    assert [row["local_port"] for row in neighbours(text)] == ["Gi1/0/1", "Gi1/0/2"]
    assert dropped(text, "lldp_capped") == 1


async def test_cisco_router_with_two_cdp_neighbours(client, devices):
    text = await scrape(client, devices.target, "cdp-router", "cdp")
    assert success(text, "cdp") == 1, text
    assert neighbours(text) == [
        {
            "protocol": "cdp",
            "local_port": "Gi0/0",
            "remote_sysname": "sw-access-9.example.net",
            "remote_port": "GigabitEthernet1/0/48",
            "remote_address": "10.0.9.2",
            "remote_chassis_id": "",
            "remote_platform": "cisco WS-C2960X-48FPD-L",
        },
        {
            "protocol": "cdp",
            "local_port": "Gi0/1",
            # NX-OS appends the serial number to the device id.
            "remote_sysname": "nx-core-2",
            "remote_port": "Ethernet1/49",
            "remote_address": "2001:db8:9::7",
            "remote_chassis_id": "",
            "remote_platform": "N9K-C93180YC-EX",
        },
    ]
    assert local_identities(text) == [
        {"protocol": "cdp", "local_sysname": "core-2.example.net", "local_chassis_id": ""}
    ]
    # A Cisco device without LLDP: the lldp module reads it, finds no rows, and succeeds.
    text = await scrape(client, devices.target, "cdp-router", "lldp,cdp")
    assert success(text, "lldp") == 1
    assert {row["protocol"] for row in neighbours(text)} == {"cdp"}


async def test_lldp_v2_switch(client, devices):
    text = await scrape(client, devices.target, "lldp-v2-switch", "lldp")
    assert success(text, "lldp") == 1, text
    assert neighbours(text) == [SPINE_1]


async def promtool_errors(text: str) -> list[str]:
    return (await asyncio.to_thread(promtool_check_metrics, text)).splitlines()


async def test_neighbour_output_passes_promtool(client, devices):
    for recording in RECORDINGS:
        text = await scrape(client, devices.target, recording.stem, "lldp,cdp")
        assert NEIGHBOUR in text
        # The neighbour family follows the naming rules, so promtool has nothing to say.
        assert await promtool_errors(text) == [], text


async def test_snmpd_has_no_lldp_mib_so_the_module_finds_no_rows(aiohttp_client, tmp_path):
    with RealSnmpd(tmp_path) as agent:
        client = await aiohttp_client(create_app(Settings(enabled_collectors=frozenset())))
        text = await scrape(client, agent.target, "public_v2", "lldp,cdp")
    assert success(text, "lldp") == 1
    assert success(text, "cdp") == 1
    assert neighbours(text) == []


def pass_persist(prefix: str, recording: Path) -> str:
    """An snmpd.conf line serving ``prefix`` from ``recording`` (snmprec_pass_persist.py)."""
    script = Path(__file__).with_name("snmprec_pass_persist.py")
    return f"pass_persist .{prefix} {sys.executable} {script} {recording} {prefix}"


async def test_snmpd_serves_neighbour_tables_through_pass_persist(aiohttp_client, tmp_path):
    recordings = {r.stem: r for r in RECORDINGS}
    extra = "\n".join(
        [
            pass_persist("1.0.8802.1.1.2", recordings["lldp-switch"]),
            pass_persist("1.3.6.1.4.1.9.9.23", recordings["cdp-router"]),
        ]
    )
    with RealSnmpd(tmp_path, extra_config=extra) as agent:
        client = await aiohttp_client(create_app(Settings(enabled_collectors=frozenset())))
        text = await scrape(client, agent.target, "public_v2", "lldp,cdp")
    assert success(text, "lldp") == 1, text
    assert success(text, "cdp") == 1, text
    cdp = {row["remote_sysname"]: row for row in neighbours(text) if row["protocol"] == "cdp"}
    assert set(cdp) == {"sw-access-9.example.net", "nx-core-2"}
    # The CDP row on ifIndex 1 is named by snmpd's own ifName of it: the loopback.
    assert cdp["sw-access-9.example.net"]["local_port"] == "lo"
    rows = [row for row in neighbours(text) if row["protocol"] == "lldp"]
    # snmpd's own interfaces are not the recording's: the local port falls back to
    # lldpLocPortTable's interfaceName id, the local id, and the description.
    assert [(r["local_port"], r["remote_sysname"], r["remote_address"]) for r in rows] == [
        ("10102", "edge-1", "2001:db8::1"),
        ("Gi1/0/1", "sw-dist-3.example.net", "10.0.3.1"),
        ("GigabitEthernet1/0/24", 'srv-7[31m INJECTED{x="1"} 1', ""),
    ]
    assert rows[1]["remote_chassis_id"] == "00:1b:54:aa:bb:01"
    assert await promtool_errors(text) == []


async def test_one_cable_seen_by_cdp_in_long_names_and_lldp_in_short_names(client, devices):
    text = await scrape(client, devices.target, "cdp-dist-long", "lldp,cdp")
    assert [(r["local_port"], r["remote_sysname"], r["remote_port"]) for r in neighbours(text)] == [
        ("Gi1/0/2", "ap-3", "GigabitEthernet0"),
        ("Te1/0/1", "acc-8.corp.example", "TenGigabitEthernet1/1/1"),
    ]
    assert local_identities(text) == [
        {"protocol": "cdp", "local_sysname": "DIST-7", "local_chassis_id": ""}
    ]
    text = await scrape(client, devices.target, "lldp-access-short", "lldp,cdp")
    [row] = neighbours(text)
    assert (row["local_port"], row["remote_sysname"], row["remote_port"]) == (
        "Te1/1/1",
        "DIST-7.corp.example",
        "Te1/0/1",
    )
    assert (row["remote_address"], row["remote_chassis_id"]) == ("10.20.0.7", "00:1b:54:00:07:00")
    assert local_identities(text) == [
        {"protocol": "lldp", "local_sysname": "acc-8", "local_chassis_id": "00:1b:54:00:08:00"}
    ]
