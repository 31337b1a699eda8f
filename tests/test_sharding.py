"""The sharded deployment on loopback: 2 shards behind VictoriaMetrics, real processes.

Simulated devices (snmpsim, one UDP endpoint per device, so each is its own
``host:port`` target) and one real snmpd as the device that fails. Every
config is what scripts/shards.py makes from the shipped prometheus.yml, and
every rule the shipped one (only ``for:`` shortened): see tests/peers/shards.py.
The 200-device version is ``benchmarks/shard_fleet.py``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.peers.alertmanager import Timings
from tests.peers.shards import (
    ShardedStack,
    api,
    device_ports,
    device_views,
    hashmod,
    owners,
)
from tests.peers.snmp import RealSnmpd, SnmpsimDevices

# Starts real daemons (the slow lane) and waits about a minute on scrapes and
# alert timers: collected first (see the markers in pyproject).
pytestmark = [pytest.mark.peers, pytest.mark.waits]

SHARDS = 2
SIMULATED = 10  # plus the real snmpd that fails
FOR = {"SnmpDeviceUnreachable": "4s", "ShardSilent": "4s", "TargetDown": "4s"}
# The sidecar sees raw alerts at once; people after the fail-open delay.
TIMINGS = Timings(enriched_wait="2s", fail_open="6s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir: Path = tmp_path_factory.mktemp("sharded")
    # The failing device on shard 1, the one that stays up to the end.
    ports, victim_port = device_ports(SIMULATED, SHARDS, victim_shard=1)
    endpoints = [f"127.0.0.1:{p}" for p in ports]
    with (
        SnmpsimDevices(workdir, {"public": 2}, endpoints=endpoints) as sim,
        RealSnmpd(workdir, port=victim_port) as victim,
    ):
        devices = [*sim.endpoints, victim.target]
        with ShardedStack(
            workdir, devices, shards=SHARDS, for_overrides=FOR, timings=TIMINGS
        ) as sharded:
            yield {"stack": sharded, "devices": devices, "victim": victim}


def test_every_target_is_scraped_by_exactly_one_shard(stack):
    sharded: ShardedStack = stack["stack"]
    devices = stack["devices"]
    found = wait_for(
        lambda: (o := owners(sharded)) and set(o) == set(devices) and o,
        timeout=90,
        what="every device scraped and up",
    )
    # The shard Prometheus chose is the hashmod of the target's address.
    assert found == {d: hashmod(d, SHARDS) for d in devices}
    assert set(found.values()) == set(range(SHARDS))


def test_the_global_view_holds_each_device_once(stack):
    sharded: ShardedStack = stack["stack"]
    devices = stack["devices"]

    view = wait_for(
        lambda: device_views(sharded, devices),
        timeout=90,
        what="the global view to hold every device's series",
    )
    for device, (shard, local, remote) in view.items():
        # Every series of the device once, as its shard holds it, marked with that shard.
        assert len(remote) == len(local) > 10, device
        assert {s.get("shard") for s in remote} == {str(shard)}, device
        names = Counter(dict(s)["__name__"] for s in local)
        assert names["scout_snmp_device_reachable"] == 1, device
        interfaces = {dict(s)["ifIndex"] for s in local if "ifIndex" in dict(s)}
        assert names["ifHCInOctets"] == len(interfaces) >= 2, device
    # And no shard holds a device it does not own.
    for shard in range(SHARDS):
        scraped = {
            s["instance"] for s in sharded.shard_series(shard, '{job="snmp"}') if "instance" in s
        }
        assert scraped == {d for d in devices if hashmod(d, SHARDS) == shard}


def test_one_device_failure_is_one_alert_and_one_incident(stack):
    sharded: ShardedStack = stack["stack"]
    victim: RealSnmpd = stack["victim"]
    wait_for(lambda: owners(sharded), timeout=90, what="every device up")
    victim.stop()

    def alerted() -> list[list[dict[str, Any]]] | None:
        peers = sharded.firing("SnmpDeviceUnreachable")
        return peers if all(peers) else None

    wait_for(alerted, timeout=90, what="SnmpDeviceUnreachable on both Alertmanagers")

    def incident() -> list[dict[str, Any]]:
        return [
            i
            for i in sharded.sidecar.incidents()
            if any(m["labels"]["alertname"] == "SnmpDeviceUnreachable" for m in i["alerts"])
        ]

    wait_for(incident, timeout=60, what="the sidecar's incident")
    # Time for a duplicate to show: more evaluations, resends and deliveries.
    time.sleep(8)
    for peer in sharded.firing("SnmpDeviceUnreachable"):
        [alert] = peer
        assert alert["labels"]["instance"] == victim.target
        assert alert["labels"]["shard"] == "1"
    [only] = incident()
    [member] = [m for m in only["alerts"] if m["labels"]["alertname"] == "SnmpDeviceUnreachable"]
    assert member["labels"]["instance"] == victim.target


def test_one_watchdog_reaches_alertmanager(stack):
    """Every shard evaluates the Watchdog too; only the global Prometheus's is sent."""
    sharded: ShardedStack = stack["stack"]

    def evaluated_everywhere() -> bool:
        return all(
            any(
                a["labels"]["alertname"] == "Watchdog" for a in api(url, "/api/v1/alerts")["alerts"]
            )
            for url in [*sharded.prometheus_urls, sharded.global_prometheus]
        )

    wait_for(evaluated_everywhere, timeout=60, what="the Watchdog firing on every Prometheus")
    # A Prometheus drops what it evaluates before it has found the Alertmanagers, and
    # sends a firing alert again a minute later (--rules.alert.resend-delay): the
    # shards, started first, have sent theirs by the time the global one arrives.
    wait_for(lambda: all(sharded.firing("Watchdog")), timeout=90, what="a Watchdog at each peer")
    time.sleep(5)
    for peer in sharded.firing("Watchdog"):
        assert [a["labels"]["shard"] for a in peer] == ["global"]


def test_a_killed_shard_raises_shard_silent(stack):
    sharded: ShardedStack = stack["stack"]
    wait_for(
        lambda: (
            {r["metric"]["shard"] for r in sharded.global_query('up{job="prometheus"}')}
            == {"0", "1", "global"}
        ),
        timeout=60,
        what="every shard's heartbeat in the global view",
    )
    assert sharded.firing("ShardSilent") == [[], []]
    sharded.kill_shard(0)
    peers = wait_for(
        lambda: (p := sharded.firing("ShardSilent")) and all(p) and p,
        timeout=90,
        what="ShardSilent on both Alertmanagers",
    )
    time.sleep(5)
    for peer in sharded.firing("ShardSilent"):
        assert [a["labels"]["shard"] for a in peer] == ["0"], peers
    # The global Prometheus's TargetDown for the dead shard says the same: muted, one page.

    def shard_down() -> list[list[dict[str, Any]]]:
        return [
            [a for a in p if a["labels"]["job"] == "scout-shard"]
            for p in sharded.firing("TargetDown")
        ]

    for peer in wait_for(
        lambda: (p := shard_down()) and all(p) and p,
        timeout=60,
        what="TargetDown for the dead shard's Prometheus on both Alertmanagers",
    ):
        [alert] = peer
        assert alert["labels"]["shard"] == "0"
        assert alert["status"]["inhibitedBy"], alert
