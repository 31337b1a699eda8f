"""Which device and which port a neighbour row or an alert names, however it is written.

Port names are matched in any vendor spelling (CDP's ``GigabitEthernet1/0/24``
is LLDP's ``Gi1/0/24``); a neighbour's sysname, address or chassis id is
resolved to the scrape target that reports the same identity of itself
(``scout_lldp_local_info``).
"""

from __future__ import annotations

import pytest

from ai_sidecar.config import parse_config
from ai_sidecar.correlate import (
    Dependency,
    TopologyRefresher,
    TopologySnapshot,
    build_snapshot,
    ports,
)
from ai_sidecar.correlate.ports import port_key
from tests.ai_sidecar.replay import T0
from tests.ai_sidecar.test_topology import FakePromQL


def row(instance: str, port: str, remote: str, remote_port: str, **more: str) -> dict[str, str]:
    return {
        "instance": instance,
        "local_port": port,
        "remote_sysname": remote,
        "remote_port": remote_port,
        **more,
    }


def identity(instance: str, sysname: str, chassis: str = "") -> dict[str, str]:
    return {"instance": instance, "local_sysname": sysname, "local_chassis_id": chassis}


def links(graph: TopologySnapshot) -> set[str]:
    return {node for node in graph.parents if node.startswith("link:")}


# -- port names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("long", "short"),
    [
        ("GigabitEthernet1/0/24", "Gi1/0/24"),
        ("TenGigabitEthernet1/1/1", "Te1/1/1"),
        ("FastEthernet0/1", "Fa0/1"),
        ("Ethernet1/49", "Eth1/49"),
        ("Ethernet1", "Et1"),
        ("Port-channel12", "Po12"),
        ("port-channel12", "Po12"),
        ("HundredGigE1/0/1", "Hu1/0/1"),
        ("TwentyFiveGigE1/0/3", "Twe1/0/3"),
        ("FortyGigabitEthernet1/1/2", "Fo1/1/2"),
        ("Management0", "mgmt0"),
        ("Management1", "Ma1"),
        ("GigabitEthernet 0/1", "gi0/1"),
    ],
)
def test_long_and_short_port_names_share_a_key(long: str, short: str):
    assert port_key(long) == port_key(short)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Gi1/0/1", "Te1/0/1"),
        ("Fa0/1", "Gi0/1"),
        ("Twe1/0/3", "Tw1/0/3"),
        ("Gi1/0/1", "Gi1/0/10"),
        ("Po1", "Eth1"),
    ],
)
def test_different_ports_keep_different_keys(one: str, other: str):
    assert port_key(one) != port_key(other)


def test_names_without_a_known_type_are_kept_as_written():
    # Junos has one spelling; a description is no port name at all.
    assert port_key("ge-0/0/1") == "ge-0/0/1"
    assert port_key("xe-0/0/7") != port_key("ge-0/0/7")
    assert port_key("Uplink to  Core") == "uplink to core"


def test_a_huge_label_is_no_port_name_and_is_not_kept():
    held = ports._port_key.cache_info().currsize
    huge = "y" * 1_000_000 + "1"
    assert port_key(huge) == huge
    assert port_key("Gi1/0/1" + "x" * 300) == "gi1/0/1" + "x" * 300
    # Not parsed (a lazy scan of a megabyte takes a quarter of a second), not cached.
    assert ports._port_key.cache_info().currsize == held
    graph = build_snapshot(neighbours=[row("core-1", "Gi1/0/1", "sw-a", "Gi0/1")])
    alert = {"instance": "core-1", "ifName": "Gi1/0/1", "ifAlias": huge}
    assert graph.node_of(alert) == "link:core-1|Gi1/0/1~sw-a|Gi0/1"
    assert ports._port_key.cache_info().currsize <= held + 1


# -- links ------------------------------------------------------------------------------


def test_a_cable_reported_by_both_ends_in_cdp_and_lldp_spellings_is_one_link():
    graph = build_snapshot(
        neighbours=[
            # CDP on the core names the far port in full ...
            row("core-1", "Gi1/0/24", "sw-dist-3", "TenGigabitEthernet1/1/1"),
            # ... LLDP on the switch names the core's port short, and LLDP on the
            # core (the same cable again) gives the long form of its own port.
            row("sw-dist-3", "Te1/1/1", "core-1", "GigabitEthernet1/0/24"),
            row("core-1", "GigabitEthernet1/0/24", "sw-dist-3", "Te1/1/1"),
        ],
        roots=["core-1"],
    )
    # Shown as each device names its own port (first report wins).
    assert links(graph) == {"link:core-1|Gi1/0/24~sw-dist-3|Te1/1/1"}


def test_a_neighbours_port_description_gives_way_to_the_devices_own_port_name():
    graph = build_snapshot(
        neighbours=[
            row("core-1", "Gi1/0/24", "sw-dist-3", "uplink to core"),
            row("sw-dist-3", "Te1/1/1", "core-1", "Gi1/0/24"),
        ],
        roots=["core-1"],
    )
    assert links(graph) == {"link:core-1|Gi1/0/24~sw-dist-3|Te1/1/1"}


def test_parallel_cables_between_two_devices_stay_two_links():
    graph = build_snapshot(
        neighbours=[
            row("core-1", "Gi1/0/1", "sw-a", "Te1/1/1"),
            row("core-1", "Gi1/0/2", "sw-a", "Te1/1/2"),
            row("sw-a", "TenGigabitEthernet1/1/1", "core-1", "GigabitEthernet1/0/1"),
            row("sw-a", "TenGigabitEthernet1/1/2", "core-1", "GigabitEthernet1/0/2"),
        ],
        roots=["core-1"],
    )
    # Each end shown as its own device names it.
    both = {
        "link:core-1|Gi1/0/1~sw-a|TenGigabitEthernet1/1/1",
        "link:core-1|Gi1/0/2~sw-a|TenGigabitEthernet1/1/2",
    }
    assert links(graph) == both
    assert set(graph.ancestors("dev:sw-a")) == {*both, "dev:core-1"}


@pytest.mark.parametrize(
    "labels",
    [
        {"ifName": "Gi1/0/24"},
        {"ifName": "GigabitEthernet1/0/24"},
        {"ifDescr": "GigabitEthernet1/0/24"},
        {"interface": "gi1/0/24"},
        # ifAlias counts when it names a known port ...
        {"ifAlias": "Gi1/0/24"},
        # ... and gives way to a label that does.
        {"ifName": "Gi1/0/24", "ifAlias": "uplink to sw-dist-3"},
        {"ifAlias": "uplink to sw-dist-3", "ifDescr": "GigabitEthernet1/0/24"},
    ],
)
def test_an_interface_alert_finds_the_link_in_any_spelling(labels: dict[str, str]):
    graph = build_snapshot(
        neighbours=[
            row("core-1", "Gi1/0/24", "sw-dist-3", "TenGigabitEthernet1/1/1"),
            row("sw-dist-3", "Te1/1/1", "core-1", "GigabitEthernet1/0/24"),
        ]
    )
    link = "link:core-1|Gi1/0/24~sw-dist-3|Te1/1/1"
    assert graph.node_of({"instance": "core-1.corp.example", **labels}) == link
    assert graph.node_of({"instance": "sw-dist-3", "ifDescr": "TenGigabitEthernet1/1/1"}) == link


def test_an_unknown_port_keeps_its_name_and_an_alias_alone_places_on_the_device():
    graph = build_snapshot(neighbours=[row("core-1", "Gi1/0/24", "sw-dist-3", "Te1/1/1")])
    assert graph.node_of({"instance": "core-1", "ifName": "Gi1/0/7"}) == "port:core-1|Gi1/0/7"
    assert graph.node_of({"instance": "core-1", "ifAlias": "spare"}) == "dev:core-1"


def test_an_alias_naming_another_port_does_not_move_an_alert_off_its_own_port():
    graph = build_snapshot(
        neighbours=[
            row("acc-5", "Gi1/0/5", "ap-7", "eth0"),
            # A device whose LLDP names its port by description.
            row("acc-6", "uplink core", "core-1", "Gi1/0/6"),
        ]
    )
    # Gi1/0/7's description names the far end's port, which acc-5 also has.
    alert = {"instance": "acc-5", "ifName": "Gi1/0/7", "ifAlias": "Gi1/0/5"}
    assert graph.node_of(alert) == "port:acc-5|Gi1/0/7"
    # A description that is no port name still finds the port LLDP named by it.
    alert = {"instance": "acc-6", "ifName": "Gi0/3", "ifAlias": "Uplink Core"}
    assert graph.node_of(alert) == "link:acc-6|uplink core~core-1|Gi1/0/6"


def test_a_port_named_by_a_dependency_is_found_in_another_spelling():
    graph = build_snapshot(
        dependencies=[
            Dependency(
                {"instance": "https://crm.example/"}, {"instance": "edge-1", "ifName": "Gi0/1"}
            )
        ]
    )
    port = graph.node_of({"instance": "edge-1", "ifDescr": "GigabitEthernet0/1"})
    assert port == "port:edge-1|Gi0/1"
    crm = graph.node_of({"instance": "https://crm.example/"})
    assert crm is not None
    assert port in graph.ancestors(crm)


# -- devices ----------------------------------------------------------------------------


def test_a_neighbour_name_resolves_to_the_scrape_target_reporting_it_as_its_own():
    neighbours = [
        # Polled by address; its neighbours know it by its sysname only.
        row("core-1", "Gi1/0/5", "ACC-5", "Gi0/1"),
        row("10.1.1.5", "Gi0/1", "core-1", "Gi1/0/5"),
    ]
    identities = [
        identity("10.1.1.5", "acc-5.corp.example"),
        identity("core-1", "core-1"),
    ]
    graph = build_snapshot(neighbours=neighbours, local_identities=identities)
    assert graph.device("10.1.1.5") == graph.device("acc-5") == graph.device("ACC-5.corp.example")
    assert links(graph) == {"link:acc-5|Gi0/1~core-1|Gi1/0/5"}
    # Without the device's own identity the address and the name are two devices.
    assert len(links(build_snapshot(neighbours=neighbours))) == 2


def test_a_device_node_is_named_after_its_scrape_target():
    graph = build_snapshot(
        neighbours=[row("core-1", "Gi1/0/1", "ER1", "ge-0/0/0")],
        local_identities=[identity("edge-router.corp.example:161", "ER1")],
    )
    assert graph.device("ER1") == "dev:edge-router"
    assert links(graph) == {"link:core-1|Gi1/0/1~edge-router|ge-0/0/0"}


def test_a_chassis_id_resolves_a_neighbour_without_a_sysname():
    graph = build_snapshot(
        neighbours=[
            row("core-1", "Gi1/0/9", "", "Gi0/1", remote_chassis_id="00:1B:54:AA:BB:09"),
            row("10.1.1.9", "Gi0/1", "core-1", "Gi1/0/9"),
        ],
        local_identities=[identity("10.1.1.9", "", "00:1b:54:aa:bb:09")],
    )
    assert links(graph) == {"link:10.1.1.9|Gi0/1~core-1|Gi1/0/9"}


def test_a_sysname_two_targets_claim_joins_neither():
    identities = [identity("10.1.1.1", "Switch"), identity("10.1.1.2", "Switch")]
    graph = build_snapshot(
        neighbours=[row("core-1", "Gi1/0/1", "Switch", "Gi0/1")], local_identities=identities
    )
    assert graph.device("10.1.1.1") != graph.device("10.1.1.2")
    assert graph.device("Switch") not in {graph.device("10.1.1.1"), graph.device("10.1.1.2")}
    # The same device polled twice (one chassis) is one device, sysname and all.
    same = build_snapshot(
        local_identities=[
            identity("10.1.1.1", "Switch", "00:00:00:00:00:01"),
            identity("sw-1.corp.example", "Switch", "00:00:00:00:00:01"),
        ]
    )
    assert same.device("10.1.1.1") == same.device("Switch") == "dev:sw-1"


def test_a_sysname_two_targets_claim_joins_neither_through_their_neighbours_either():
    # Two factory-default switches, polled by address; the core hears each by
    # its sysname and advertised address.
    graph = build_snapshot(
        neighbours=[
            row("core-1", "Gi1/0/1", "Switch", "Gi0/1", remote_address="10.1.1.1"),
            row("core-1", "Gi1/0/2", "Switch", "Gi0/1", remote_address="10.1.1.2"),
        ],
        local_identities=[identity("10.1.1.1", "Switch"), identity("10.1.1.2", "Switch")],
        roots=["core-1"],
    )
    assert graph.device("10.1.1.1") != graph.device("10.1.1.2")
    assert links(graph) == {
        "link:10.1.1.1|Gi0/1~core-1|Gi1/0/1",
        "link:10.1.1.2|Gi0/1~core-1|Gi1/0/2",
    }
    assert "link:10.1.1.2|Gi0/1~core-1|Gi1/0/2" not in graph.ancestors("dev:10.1.1.1")


def test_a_sysname_heard_with_two_chassis_ids_names_two_devices():
    graph = build_snapshot(
        neighbours=[
            row("core-1", "Gi1/0/1", "Switch", "Gi0/1", remote_chassis_id="00:00:00:00:00:0a"),
            row("core-2", "Gi1/0/1", "Switch", "Gi0/1", remote_chassis_id="00:00:00:00:00:0b"),
            # One of them also heard over CDP, by name and address only.
            row("core-1", "Gi1/0/1", "Switch", "Gi0/1", remote_address="10.1.1.10"),
        ]
    )
    assert len({graph.device("core-1"), graph.device("core-2")}) == 2
    far_ends = {node.split("~")[0] for node in links(graph)}
    # The switch heard over both protocols on one port is one device, by its address.
    assert far_ends == {"link:10.1.1.10|Gi0/1", "link:chassis:00:00:00:00:00:0b|Gi0/1"}
    chassis = graph.aliases["chassis:00:00:00:00:00:0a"], graph.aliases["chassis:00:00:00:00:00:0b"]
    assert chassis == ("10.1.1.10", "chassis:00:00:00:00:00:0b")
    # One name, one device: the sysname still joins what is heard with it.
    one = build_snapshot(
        neighbours=[
            row("core-1", "Gi1/0/1", "acc-9", "Gi0/1", remote_chassis_id="00:00:00:00:00:0a"),
            row("core-1", "Gi1/0/1", "ACC-9", "Gi0/1", remote_address="10.1.1.10"),
        ]
    )
    assert one.device("10.1.1.10") == one.device("acc-9") == "dev:acc-9"
    assert links(one) == {"link:acc-9|Gi0/1~core-1|Gi1/0/1"}


async def test_the_refresher_reads_the_devices_own_identities():
    client = FakePromQL(
        {
            "max by (instance, local_port, remote_sysname": [
                row("core-1", "Gi1/0/5", "acc-5", "Gi0/1"),
                row("10.1.1.5", "Gi0/1", "core-1", "GigabitEthernet1/0/5"),
            ],
            "max by (instance, local_sysname, local_chassis_id) (scout_lldp_local_info)": [
                identity("10.1.1.5", "acc-5")
            ],
        }
    )
    config = parse_config("correlation:\n  topology: {roots: [core-1]}\n", "t.yml").correlation
    refresher = TopologyRefresher(client, config, clock=lambda: T0)  # type: ignore[arg-type]
    assert await refresher.refresh_once()
    graph = refresher.current()
    assert links(graph) == {"link:acc-5|Gi0/1~core-1|Gi1/0/5"}
    assert "dev:core-1" in graph.ancestors(graph.device("10.1.1.5"))


# -- what the exporter resolved targets' names to (scout_target_address_info) -------------


def resolved(instance: str, address: str) -> dict[str, str]:
    return {"instance": instance, "address": address}


def test_a_host_polled_by_name_is_the_device_its_checks_name_by_address_or_alias():
    targets = [{"job": "winrm", "instance": "win-26"}, {"job": "snmp", "instance": "10.4.0.9"}]
    addresses = [
        resolved("win-26", "10.4.0.172"),
        resolved("https://app39.corp.example/health", "10.4.0.172"),
        # Another job's row of the same name: the same answer, one device.
        resolved("win-26:5985", "10.4.0.172"),
        # A check by a name of a host polled by its address.
        resolved("https://wiki.corp.example/", "10.4.0.9"),
    ]
    graph = build_snapshot(targets=targets, addresses=addresses)
    assert graph.device("10.4.0.172") == graph.device("app39") == "dev:win-26"
    # The device keeps its scrape target's name, not the name of a check on it.
    assert graph.device("wiki.corp.example") == "dev:10.4.0.9"
    # Without the rows, as before: the address and the name are two devices.
    bare = build_snapshot(targets=targets)
    assert bare.device("10.4.0.172") != bare.device("win-26")


@pytest.mark.parametrize(
    "rows",
    [
        # Round-robin DNS, or a host moved within the lookback: which one is it?
        [resolved("web", "10.4.0.1"), resolved("web", "10.4.0.2")],
        # Two hosts whose names share a short form, in two domains.
        [resolved("web.a.example", "10.4.0.1"), resolved("web.b.example:443", "10.4.0.2")],
        # Addresses that name no particular host.
        [resolved("web", "127.0.0.1")],
        [resolved("web", "::1")],
        [resolved("web", "fe80::1")],
        [resolved("web", "0.0.0.0")],
        [resolved("web", "224.0.0.251")],
        [resolved("web", "not an address")],
    ],
)
def test_a_name_without_one_usable_address_joins_none(rows: list[dict[str, str]]):
    graph = build_snapshot(targets=[{"job": "icmp", "instance": "web"}], addresses=rows)
    assert graph.device("web") == "dev:web"
    assert all(
        graph.device(row["address"]) != "dev:web" for row in rows if row["address"][0].isdigit()
    )


def test_an_address_shared_by_two_chassis_does_not_make_them_one_device():
    # Two switches behind one NAT address, each polled by name and reporting its chassis.
    graph = build_snapshot(
        local_identities=[identity("sw-a", "sw-a", "00:0a"), identity("sw-b", "sw-b", "00:0b")],
        addresses=[resolved("sw-a", "192.0.2.7"), resolved("sw-b", "192.0.2.7")],
    )
    assert graph.device("sw-a") != graph.device("sw-b")


def test_rows_of_targets_written_as_addresses_change_nothing():
    rows = [resolved("10.4.0.5", "10.4.0.6"), resolved("http://10.4.0.5/", "10.4.0.6")]
    graph = build_snapshot(targets=[{"job": "icmp", "instance": "10.4.0.5"}], addresses=rows)
    assert graph.device("10.4.0.5") != graph.device("10.4.0.6")


async def test_the_refresher_reads_the_resolved_addresses_over_the_last_hour():
    client = FakePromQL(
        {
            "max by (instance, address) (last_over_time(scout_target_address_info[1h]))": [
                resolved("win-26", "10.4.0.172")
            ],
            "up": [{"job": "winrm", "instance": "win-26"}],
        }
    )
    config = parse_config("correlation:\n  topology: {}\n", "t.yml").correlation
    refresher = TopologyRefresher(client, config, clock=lambda: T0)  # type: ignore[arg-type]
    assert await refresher.refresh_once()
    assert refresher.current().device("10.4.0.172") == "dev:win-26"


def test_a_dual_stack_name_joins_its_ipv4_and_its_ipv6_address():
    rows = [resolved("win-26", "10.4.0.172"), resolved("win-26", "2001:db8::172")]
    graph = build_snapshot(targets=[{"job": "winrm", "instance": "win-26"}], addresses=rows)
    assert graph.device("10.4.0.172") == graph.device("2001:db8::172") == "dev:win-26"
    # An address written in full is the same address.
    assert graph.device("2001:db8:0:0:0:0:0:172") == "dev:win-26"


def test_a_name_sharing_its_short_form_with_a_device_known_elsewhere_joins_nothing():
    # Production esx01 is polled by address and says its sysname; a lab check
    # esx01.lab resolves to another box, pinged by address.
    graph = build_snapshot(
        targets=[{"job": "snmp", "instance": "10.0.0.5"}, {"job": "icmp", "instance": "10.9.9.10"}],
        local_identities=[identity("10.0.0.5", "esx01")],
        addresses=[resolved("https://esx01.lab.corp.example/", "10.9.9.10")],
    )
    assert graph.device("esx01") == graph.device("10.0.0.5")
    assert graph.device("10.9.9.10") != graph.device("10.0.0.5")


def test_an_address_many_names_resolve_to_is_a_front_end_and_joins_none():
    # A reverse proxy's address: the apps behind it fail on their own.
    rows = [resolved(f"https://app{n}.corp.example/", "10.9.9.9") for n in range(40)]
    graph = build_snapshot(targets=[{"job": "icmp", "instance": "10.9.9.9"}], addresses=rows)
    assert graph.device("app1") == "dev:app1"
    assert graph.device("app1") != graph.device("app2")
    # A few virtual hosts on one server are that server.
    few = build_snapshot(targets=[{"job": "icmp", "instance": "10.9.9.9"}], addresses=rows[:3])
    assert few.device("app1") == few.device("app2") == "dev:10.9.9.9"


def test_a_host_known_only_by_its_endpoints_keeps_its_name():
    # srv-1 is scraped only as srv-1:9100: its name still names the device.
    rows = [resolved("srv-1:9100", "10.0.0.5")]
    graph = build_snapshot(targets=[{"job": "node", "instance": "srv-1:9100"}], addresses=rows)
    assert graph.device("10.0.0.5") == graph.device("srv-1") == "dev:srv-1"
