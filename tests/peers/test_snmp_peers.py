"""The SNMP peers in tests.peers.snmp, checked from outside with net-snmp's tools and HTTP.

These tests keep the helpers honest: if a peer served something other than what it
claims, every test built on it would check the wrong thing. Expensive peers (snmpsim,
the 150-pair namespace) are shared per module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_for
from tests.peers.snmp import (
    IF_ALIAS,
    IF_DESCR,
    IF_HC_IN_OCTETS,
    IF_INDEX,
    IF_MIB_MODULE_FILE,
    IF_NAME,
    IF_NUMBER,
    IF_TABLE,
    IF_X_TABLE,
    SYS_UPTIME,
    NetnsSnmpd,
    RealSnmpd,
    SilentDevice,
    SnmpCliError,
    SnmpExporter,
    SnmpPeerError,
    SnmpsimDevices,
    TooBigProxy,
    V3User,
    column,
    parse_exposition,
    series_named,
    snmp_command,
    snmpbulkwalk,
    snmpget,
    write_if_mib_device,
)

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


SYS_NAME = "1.3.6.1.2.1.1.5.0"
IF_IN_OCTETS = f"{IF_TABLE}.10"
IF_HIGH_SPEED = f"{IF_X_TABLE}.15"
PRIV_USER = V3User("scout-priv")
AUTH_USER = V3User("scout-auth", priv_protocol=None)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealSnmpd]:
    with RealSnmpd(
        tmp_path_factory.mktemp("snmpd"),
        communities=("public", "second"),
        v3_users=(PRIV_USER, AUTH_USER),
    ) as agent:
        yield agent


@pytest.fixture(scope="module")
def netns_snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsSnmpd]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with NetnsSnmpd(tmp_path_factory.mktemp("netns"), pairs=150) as agent:
        yield agent


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpsimDevices]:
    # Two endpoints on 127.0.0.1 exercise the multi-endpoint path without other addresses.
    with SnmpsimDevices(
        tmp_path_factory.mktemp("snmpsim"),
        {"sim48": 48, "sim260": 260},
        endpoints=("127.0.0.1", "127.0.0.1"),
    ) as devices:
        yield devices


@pytest.fixture(scope="module")
def snmp_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpExporter]:
    with SnmpExporter(
        tmp_path_factory.mktemp("snmp_exporter"), communities=("public", "sim48")
    ) as exporter:
        yield exporter


# RealSnmpd ---------------------------------------------------------------------------


def test_real_snmpd_answers_each_community_and_v3_user(snmpd: RealSnmpd) -> None:
    for auth in ({"community": "public"}, {"community": "second"}, {"user": PRIV_USER}):
        assert snmpget(snmpd.target, SYS_NAME, **auth) == {SYS_NAME: b"scout-snmpd"}
    assert snmpget(snmpd.target, SYS_NAME, user=AUTH_USER) == {SYS_NAME: b"scout-snmpd"}

    with pytest.raises(SnmpCliError, match="Timeout"):
        snmpget(snmpd.target, SYS_NAME, community="not-configured", timeout=0.3, retries=0)


def test_real_snmpd_keeps_state_in_workdir_and_is_reaped_on_exit(tmp_path: Path) -> None:
    user = V3User(f"scout-state-{os.getpid()}")  # unique, so other runs cannot interfere

    with RealSnmpd(tmp_path, v3_users=(user,)) as agent:
        assert snmpget(agent.target, SYS_NAME, user=user) == {SYS_NAME: b"scout-snmpd"}
        process = agent.service.process if agent.service else None
        assert process is not None
        assert process.poll() is None

    assert process.returncode is not None, "snmpd was not reaped"
    assert not snmp_command("snmpget", agent.target, SYS_UPTIME, timeout=0.3, retries=0).stdout
    # snmpd saves the localised v3 keys on shutdown: into the helper's dir, not /var/lib.
    saved = (agent.persistent_dir / "snmpd.conf").read_text()
    assert f"usmUser 1 3 0x{agent_engine_id(saved)} 0x{user.name.encode().hex()}" in saved
    system_file = Path("/var/lib/snmp/snmpd.conf")
    if system_file.exists():
        assert user.name.encode().hex() not in system_file.read_text()


def agent_engine_id(persistent_config: str) -> str:
    """The engine ID snmpd saved (``oldEngineID 0x...``), as lower-case hex."""
    for line in persistent_config.splitlines():
        if line.startswith("oldEngineID "):
            return line.split()[1].removeprefix("0x").lower()
    raise AssertionError(f"no oldEngineID in {persistent_config!r}")


def test_real_snmpd_that_cannot_bind_fails_with_its_log(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with (
            pytest.raises(SnmpPeerError, match="exited at start-up"),
            RealSnmpd(tmp_path, port=port),
        ):
            pass  # pragma: no cover - start-up fails


# NetnsSnmpd --------------------------------------------------------------------------


def test_netns_snmpd_lists_2n_plus_1_interfaces(netns_snmpd: NetnsSnmpd) -> None:
    walk = snmpbulkwalk(netns_snmpd.target, f"{IF_TABLE}.2", max_repetitions=50)
    assert len(walk) == netns_snmpd.if_rows == 301
    assert sorted(v.decode() for v in walk.values() if isinstance(v, bytes)) == sorted(
        netns_snmpd.interface_names
    )
    assert snmpget(netns_snmpd.target, IF_NUMBER) == {IF_NUMBER: 301}


def test_netns_snmpd_answers_a_client_inside_on_loopback(netns_snmpd: NetnsSnmpd) -> None:
    result = snmp_command(
        "snmpget",
        netns_snmpd.inner_target,
        SYS_NAME,
        prefix=netns_snmpd.exec_argv([]),
    )
    assert result.returncode == 0, result.stderr
    assert netns_snmpd.name.encode().hex(" ").upper() in result.stdout


def _netns_exists(name: str) -> bool:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return any(line.split()[0] == name for line in listing.stdout.splitlines() if line)


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@needs_root
def test_netns_snmpd_deletes_namespace_and_links_on_exit(tmp_path: Path) -> None:
    with NetnsSnmpd(tmp_path, pairs=2) as agent:
        assert _netns_exists(agent.name)
        assert _link_exists(agent.uplink)
        assert len(snmpbulkwalk(agent.target, IF_INDEX)) == 5
    assert not _netns_exists(agent.name)
    assert not _link_exists(agent.uplink)


@needs_root
def test_netns_snmpd_cleans_up_when_snmpd_cannot_start(tmp_path: Path) -> None:
    # An address the namespace does not have: snmpd cannot bind and exits.
    broken = NetnsSnmpd(tmp_path, pairs=2, extra_config="agentAddress udp:192.0.2.77:161")
    with pytest.raises(SnmpPeerError, match="exited at start-up"), broken:
        pass  # pragma: no cover - start-up fails
    assert not _netns_exists(broken.name)
    assert not _link_exists(broken.uplink)


# write_if_mib_device and SnmpsimDevices ---------------------------------------------


def test_generated_device_covers_the_edge_cases(tmp_path: Path) -> None:
    device = write_if_mib_device(tmp_path / "edge.snmprec", 48, seed=7)
    rows = device.interfaces.values()

    assert {10_000, 40_000, 100_000} <= {row["ifHighSpeed"] for row in rows}
    for row in rows:
        assert row["ifSpeed"] == min(row["ifHighSpeed"] * 1_000_000, 4_294_967_295)
    assert any(row["ifAdminStatus"] == 2 for row in rows)
    assert any(row["ifAdminStatus"] == 1 and row["ifOperStatus"] == 2 for row in rows)
    assert any(row["ifOperStatus"] == 1 for row in rows)
    assert "" in {row["ifAlias"] for row in rows}
    assert any(not row["ifAlias"].isascii() for row in rows)
    assert len(device.interfaces) == 48
    assert device.interfaces.keys() >= {5001, 10001, 20001}
    huge = device.static[f"{IF_HC_IN_OCTETS}.5"]  # static, so exact: beyond float precision
    assert isinstance(huge, int)
    assert huge > 2**53
    assert device.processors
    assert all(0 <= load <= 100 for load in device.processors.values())
    assert any(
        r["hrStorageSize"] * r["hrStorageAllocationUnits"] > 2**40 for r in device.storage.values()
    )

    again = write_if_mib_device(tmp_path / "again.snmprec", 48, seed=7)
    other = write_if_mib_device(tmp_path / "other.snmprec", 48, seed=8)
    assert again.interfaces == device.interfaces
    assert other.interfaces != device.interfaces


def test_snmpsim_260_interface_device_walks_to_260_rows(sim: SnmpsimDevices) -> None:
    expected = sim.devices["sim260"]
    walk = snmpbulkwalk(sim.target, IF_INDEX, community="sim260")
    assert len(walk) == 260
    assert column(walk, IF_INDEX) == {index: index for index in expected.interfaces}
    assert snmpget(sim.target, IF_NUMBER, community="sim260") == {IF_NUMBER: 260}


def test_snmpsim_serves_exactly_the_generated_values(sim: SnmpsimDevices) -> None:
    expected = sim.devices["sim48"]
    walk = snmpbulkwalk(sim.target, "1.3.6.1.2.1", community="sim48", max_repetitions=50)

    assert walk.keys() == expected.static.keys() | expected.counters.keys()
    assert {oid: walk[oid] for oid in expected.static} == expected.static
    aliases = column(walk, IF_ALIAS)
    assert {i: v.decode() for i, v in aliases.items() if isinstance(v, bytes)} == {
        i: row["ifAlias"] for i, row in expected.interfaces.items()
    }


def test_snmpsim_counters_grow_at_their_rates(sim: SnmpsimDevices) -> None:
    device = sim.devices["sim48"]
    # snmpsim reads its clock as it answers each OID, somewhere inside each walk:
    # the time between its two readings is at least the gap between the walks and
    # at most the span of both, however long a loaded machine makes each walk.
    first_sent = time.monotonic()
    first = snmpbulkwalk(sim.target, IF_HC_IN_OCTETS, community="sim48")
    first_answered = time.monotonic()
    time.sleep(1.0)
    second_sent = time.monotonic()
    second = snmpbulkwalk(sim.target, IF_HC_IN_OCTETS, community="sim48")
    second_answered = time.monotonic()
    shortest, longest = second_sent - first_answered, second_answered - first_sent

    growing = device.counters_of(IF_HC_IN_OCTETS)
    assert len(growing) >= 10
    for index, spec in growing.items():
        oid = f"{IF_HC_IN_OCTETS}.{index}"
        delta = second[oid] - first[oid]  # type: ignore[operator]
        assert 0.5 * spec.rate * shortest < delta < 2 * spec.rate * longest, (index, spec)
    for oid, value in device.static.items():
        if oid.startswith(IF_HC_IN_OCTETS + "."):
            assert first[oid] == second[oid] == value


def test_snmpsim_counter32_is_the_low_half_of_its_hc_twin(sim: SnmpsimDevices) -> None:
    device = sim.devices["sim48"]
    for index in device.counters_of(IF_HC_IN_OCTETS):
        pair = snmpget(
            sim.target, f"{IF_HC_IN_OCTETS}.{index}", f"{IF_IN_OCTETS}.{index}", community="sim48"
        )
        hc, low = pair[f"{IF_HC_IN_OCTETS}.{index}"], pair[f"{IF_IN_OCTETS}.{index}"]
        assert isinstance(hc, int)
        assert isinstance(low, int)
        assert low < 2**32
        drift = device.counters[f"{IF_HC_IN_OCTETS}.{index}"].rate * 0.05  # same request
        assert min((low - hc) % 2**32, (hc - low) % 2**32) <= drift


def test_snmpsim_every_endpoint_serves_every_device(sim: SnmpsimDevices) -> None:
    assert len(set(sim.endpoints)) == 2
    for endpoint in sim.endpoints:
        for name in ("sim48", "sim260"):
            assert snmpget(endpoint, SYS_NAME, community=name) == {SYS_NAME: name.encode()}


# SilentDevice and TooBigProxy --------------------------------------------------------


def test_silent_device_makes_snmpget_time_out() -> None:
    with SilentDevice() as silent:
        started = time.monotonic()
        result = snmp_command("snmpget", silent.target, SYS_UPTIME, timeout=0.3, retries=2)
        elapsed = time.monotonic() - started
        assert result.returncode != 0
        assert "Timeout: No Response" in result.stderr
        # The reader thread counts the last datagram when it is scheduled.
        wait_for(lambda: silent.received >= 3, timeout=10, what="the last retry to be read")
        assert silent.received == 3  # the request and two retries
        assert elapsed >= 0.9


@pytest.mark.parametrize("echo_varbinds", [False, True])
def test_too_big_proxy_refuses_big_getbulks_only(snmpd: RealSnmpd, echo_varbinds: bool) -> None:
    direct = snmpbulkwalk(snmpd.target, IF_INDEX)
    with TooBigProxy(snmpd.target, max_repetitions=10, echo_varbinds=echo_varbinds) as proxy:
        refused = snmp_command("snmpbulkwalk", proxy.target, IF_INDEX, options=["-Cr50"])
        assert refused.returncode != 0
        assert "(tooBig) Response message would have been too large" in refused.stderr
        assert proxy.too_big_replies == 1

        assert snmpbulkwalk(proxy.target, IF_INDEX, max_repetitions=5) == direct
        assert snmpget(proxy.target, SYS_NAME) == {SYS_NAME: b"scout-snmpd"}
        assert proxy.too_big_replies == 1
        assert proxy.max_repetitions_seen[0] == 50
        assert 5 in proxy.max_repetitions_seen
        assert not proxy.errors


def test_too_big_proxy_relays_a_long_walk(sim: SnmpsimDevices) -> None:
    with TooBigProxy(sim.target, max_repetitions=10) as proxy:
        walk = snmpbulkwalk(proxy.target, IF_INDEX, community="sim260", max_repetitions=10)
    assert len(walk) == 260
    assert proxy.forwarded >= 26
    assert proxy.too_big_replies == 0


# SnmpExporter and parse_exposition ---------------------------------------------------

REQUIRED_IF_MIB_METRICS = {
    "ifNumber", "ifIndex", "ifType", "ifMtu", "ifSpeed",
    "ifHighSpeed", "ifPhysAddress", "ifAdminStatus", "ifOperStatus", "ifLastChange",
    "ifInOctets", "ifOutOctets", "ifHCInOctets", "ifHCOutOctets", "ifHCInUcastPkts",
    "ifHCOutUcastPkts", "ifHCInMulticastPkts", "ifHCOutMulticastPkts", "ifHCInBroadcastPkts",
    "ifHCOutBroadcastPkts", "ifInErrors", "ifOutErrors", "ifInDiscards", "ifOutDiscards",
    "ifInUnknownProtos", "ifOutQLen", "ifPromiscuousMode", "ifConnectorPresent",
    "ifCounterDiscontinuityTime",
}  # fmt: skip
LOOKUP_ONLY = {"ifDescr", "ifName", "ifAlias"}


def test_if_mib_module_file_has_the_generator_metrics() -> None:
    modules = yaml.safe_load(IF_MIB_MODULE_FILE.read_text())
    module = modules["if_mib"]
    assert module["version"] == 2
    assert module["auth"] == {"community": "public"}
    assert module["walk"] == ["1.3.6.1.2.1.2", "1.3.6.1.2.1.31.1.1"]
    metrics = {metric["name"]: metric for metric in module["metrics"]}
    assert metrics.keys() >= REQUIRED_IF_MIB_METRICS
    # The generator keeps these three as lookup labels only, not series of their own.
    assert not metrics.keys() & LOOKUP_ONLY
    assert metrics["ifPhysAddress"]["type"] == "PhysAddress48"
    assert metrics["ifType"]["enum_values"][161] == "ieee8023adLag"
    assert metrics["ifType"]["enum_values"][245] == "voiceEBS"
    for metric in metrics.values():
        if metric.get("indexes"):
            assert metric["indexes"] == [{"labelname": "ifIndex", "type": "gauge"}]
            assert {
                (tuple(lookup["labels"]), lookup["labelname"]) for lookup in metric["lookups"]
            } == {
                (("ifIndex",), "ifAlias"),
                (("ifIndex",), "ifDescr"),
                (("ifIndex",), "ifName"),
            }


def test_snmp_exporter_scrape_of_snmpd_labels_every_interface(
    snmpd: RealSnmpd, snmp_exporter: SnmpExporter
) -> None:
    series = parse_exposition(snmp_exporter.scrape(snmpd.target))
    names = column(snmpbulkwalk(snmpd.target, IF_NAME), IF_NAME)
    descrs = column(snmpbulkwalk(snmpd.target, IF_DESCR), IF_DESCR)

    hc_in = series_named(series, "ifHCInOctets")
    assert len(hc_in) == len(names) > 0
    for labels in hc_in:
        label = dict(labels)
        assert label.keys() == {"ifIndex", "ifName", "ifDescr", "ifAlias"}
        index = int(label["ifIndex"])
        assert label["ifName"].encode() == names[index]
        assert label["ifDescr"].encode() == descrs[index]
    assert series[("snmp_scrape_pdus_returned", frozenset())] > 0


def test_snmp_exporter_sees_the_simulated_device_as_generated(
    sim: SnmpsimDevices, snmp_exporter: SnmpExporter
) -> None:
    device = sim.devices["sim48"]
    series = parse_exposition(snmp_exporter.scrape(sim.target, community="sim48"))

    assert series[("ifNumber", frozenset())] == 48
    by_index = {
        int(dict(labels)["ifIndex"]): (dict(labels), value)
        for labels, value in series_named(series, "ifHighSpeed").items()
    }
    assert by_index.keys() == device.interfaces.keys()
    for index, row in device.interfaces.items():
        labels, high_speed = by_index[index]
        assert high_speed == row["ifHighSpeed"]
        assert labels["ifAlias"] == row["ifAlias"]  # non-ASCII and empty ones included
        assert labels["ifName"] == row["ifName"]
    mac = device.interfaces[1]["ifPhysAddress"].hex(":").upper()
    assert any(
        dict(labels)["ifPhysAddress"] == mac for labels in series_named(series, "ifPhysAddress")
    )
    types = {dict(labels)["ifType"] for labels in series_named(series, "ifType_info")}
    assert types == {"ethernetCsmacd", "ieee8023adLag", "l3ipvlan", "softwareLoopback"}
    # 0.21 wraps Counter64 values at 2**53 unless --no-snmp.wrap-large-counters.
    huge = device.static[f"{IF_HC_IN_OCTETS}.5"]
    assert isinstance(huge, int)
    hc_in = {
        int(dict(labels)["ifIndex"]): v
        for labels, v in series_named(series, "ifHCInOctets").items()
    }
    assert hc_in[5] == huge % 2**53


def test_parse_exposition_keeps_names_as_exposed_and_unescapes_labels() -> None:
    text = (
        "# HELP ifHCInOctets Octets.\n"
        "# TYPE ifHCInOctets counter\n"
        'ifHCInOctets{ifAlias="Büro \\"A\\" \\\\ 1",ifIndex="2"} 1.8446744073709552e+19\n'
        "# TYPE up gauge\n"
        "up 1\n"
    )
    assert parse_exposition(text) == {
        ("ifHCInOctets", frozenset({("ifAlias", 'Büro "A" \\ 1'), ("ifIndex", "2")})): 2.0**64,
        ("up", frozenset()): 1.0,
    }
    with pytest.raises(ValueError, match="could not convert"):
        parse_exposition('up{job="a"} x\n')
    with pytest.raises(ValueError, match="labels"):
        parse_exposition("up{job=a} 1\n")
