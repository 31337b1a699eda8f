"""A module copied from snmp_exporter's generated ``snmp.yml`` loads and reads as it does there.

Its index types for addresses (``InetAddressIPv4``, and ``InetAddress``, into
which its generator folds the ``InetAddressType`` index before it) are read
from real snmpd's ipAddrTable and ipAddressTable, and compared series by series
with what snmp_exporter itself exports from the same agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from exporter.app import create_app
from exporter.config import parse_config
from exporter.live import Settings
from tests.peers import snmp as peers

pytestmark = pytest.mark.peers

# As snmp_exporter's generator writes them (IP-MIB; numeric OIDs: Debian ships no MIB text).
METRICS = [
    {
        "name": "ipAdEntIfIndex",
        "oid": "1.3.6.1.2.1.4.20.1.2",
        "type": "gauge",
        "help": "The index value which uniquely identifies the interface - 1.3.6.1.2.1.4.20.1.2",
        "indexes": [{"labelname": "ipAdEntAddr", "type": "InetAddressIPv4"}],
    },
    {
        "name": "ipAddressIfIndex",
        "oid": "1.3.6.1.2.1.4.34.1.3",
        "type": "gauge",
        "help": "The index value that uniquely identifies the interface - 1.3.6.1.2.1.4.34.1.3",
        "indexes": [{"labelname": "ipAddressAddr", "type": "InetAddress"}],
    },
]


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory) -> Iterator[peers.RealSnmpd]:
    with peers.RealSnmpd(tmp_path_factory.mktemp("snmpd")) as agent:
        yield agent


@pytest.fixture(scope="module")
def snmp_exporter(tmp_path_factory) -> Iterator[peers.SnmpExporter]:
    workdir: Path = tmp_path_factory.mktemp("snmp_exporter")
    module_file = workdir / "ip_addresses.yml"
    walk = [metric["oid"] for metric in METRICS]
    module_file.write_text(yaml.safe_dump({"ip_addresses": {"walk": walk, "metrics": METRICS}}))
    with peers.SnmpExporter(workdir, module_file=module_file) as exporter:
        yield exporter


async def test_address_indexes_read_as_snmp_exporter_reads_them(
    aiohttp_client, snmpd, snmp_exporter
):
    config = parse_config(
        yaml.safe_dump({"modules": {"ip_addresses": {"prober": "snmp", "metrics": METRICS}}}),
        "scout.yml",
    )
    client = await aiohttp_client(create_app(Settings(enabled_collectors=frozenset()), config))
    response = await client.get(
        "/snmp",
        params={"target": snmpd.target, "module": "ip_addresses"},
        headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"},
    )
    assert response.status == 200
    ours = peers.parse_exposition(await response.text())
    theirs = peers.parse_exposition(snmp_exporter.scrape(snmpd.target, module="ip_addresses"))
    assert ours[("scout_snmp_module_success", frozenset({("module", "ip_addresses")}))] == 1

    def device(series: dict) -> dict:
        return {k: v for k, v in series.items() if k[0].startswith("ip")}

    assert device(ours) == device(theirs)
    addresses = {dict(labels).get("ipAddressAddr") for name, labels in device(ours)}
    assert "127.0.0.1" in addresses  # ipv4(1), read as an address, not as hex
    assert any(a and a.count(":") == 7 for a in addresses), addresses  # ::1, ipv6(2)
