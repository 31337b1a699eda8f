"""Discovery through the real parts: snmpsim -> the exporter's lldp/cdp modules -> Prometheus
-> the sidecar's topology refresher.

Two recordings describe one cable from both ends: ``cdp-dist-long`` is a Cisco
distribution switch that sees its neighbours over CDP, which names their ports
in full (``TenGigabitEthernet1/1/1``) and their devices by configured hostname
(``acc-8.corp.example``); ``lldp-access-short`` is the access switch at the far
end, which names ports short over LLDP (``Te1/0/1``) and its neighbour in upper
case (``DIST-7.corp.example``). Prometheus scrapes the distribution switch by
name and the access switch by address, as file_sd estates do, so only the
devices' own identities (``scout_lldp_local_info``) say that ``10.20.0.8`` is
``acc-8``. The graph must hold one link per cable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml

from ai_sidecar.clock import utc_now
from ai_sidecar.config import parse_config as parse_sidecar_config
from ai_sidecar.correlate import TopologyRefresher
from ai_sidecar.promql import HttpPromQLClient
from exporter.app import create_app
from exporter.config import parse_config as parse_exporter_config
from exporter.live import Settings
from scripts.localstack import free_port, prometheus_service
from tests.peers.snmp import SnmpsimDevices

pytestmark = pytest.mark.peers

RECORDINGS = Path(__file__).parents[1] / "exporter" / "targets" / "snmp" / "recordings"
# Scrape target (the instance label) -> the recording (community) answering for it.
TARGETS = {"dist-7.corp.example": "cdp-dist-long", "10.20.0.8": "lldp-access-short"}
BOX = timedelta(seconds=10)


def prometheus_config(exporter: str, agent: str) -> str:
    """Each device scraped through the exporter's /snmp, its instance the name in TARGETS."""
    return yaml.safe_dump(
        {
            "global": {"scrape_interval": "2s", "scrape_timeout": "2s"},
            "scrape_configs": [
                {
                    "job_name": "snmp",
                    "metrics_path": "/snmp",
                    "params": {"module": ["lldp,cdp"]},
                    "static_configs": [
                        {"targets": [instance], "labels": {"__param_auth": auth}}
                        for instance, auth in TARGETS.items()
                    ],
                    "relabel_configs": [
                        {"source_labels": ["__address__"], "target_label": "instance"},
                        {"target_label": "__param_target", "replacement": agent},
                        {"target_label": "__address__", "replacement": exporter},
                    ],
                }
            ],
        }
    )


async def until(check: Callable[[], Awaitable[bool]], within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "Prometheus never had every device's neighbours"
        await asyncio.sleep(0.5)


async def test_cdp_long_and_lldp_short_names_of_one_cable_make_one_link(aiohttp_server, tmp_path):
    recordings = [RECORDINGS / f"{auth}.snmprec" for auth in TARGETS.values()]
    auths = ", ".join(
        f"{auth}: {{type: snmp, community: {auth}, allowed_targets: [127.0.0.0/8]}}"
        for auth in TARGETS.values()
    )
    exporter_config = parse_exporter_config(f"auths: {{{auths}}}\n", "exporter.yml")
    with SnmpsimDevices(tmp_path, devices={}, recordings=recordings) as agent:
        exporter = await aiohttp_server(
            create_app(Settings(enabled_collectors=frozenset()), exporter_config)
        )
        config = tmp_path / "prometheus.yml"
        config.write_text(prometheus_config(f"127.0.0.1:{exporter.port}", agent.target))
        prometheus = prometheus_service(config, tmp_path, free_port())
        prometheus.start()
        try:
            await asyncio.to_thread(prometheus.wait_ready)
            base = prometheus.ready_url.removesuffix("/-/ready")
            async with aiohttp.ClientSession() as session:
                client = HttpPromQLClient(base, session)

                async def scraped() -> bool:
                    neighbours = await client.instant(
                        "scout_lldp_neighbor_info", utc_now(), time_box=BOX
                    )
                    identities = await client.instant(
                        "scout_lldp_local_info", utc_now(), time_box=BOX
                    )
                    return len(neighbours) == 3 and len(identities) == 2

                await until(scraped)
                sidecar = parse_sidecar_config("{}", "sidecar.yml").correlation
                refresher = TopologyRefresher(client, sidecar)
                assert await refresher.refresh_once()
        finally:
            await asyncio.to_thread(prometheus.stop, 5)
    graph = refresher.current()
    cable = "link:acc-8|Te1/1/1~dist-7|Te1/0/1"
    # One link per cable: the one both switches report, and the access point's.
    assert {node for node in graph.parents if node.startswith("link:")} == {
        cable,
        "link:ap-3|GigabitEthernet0~dist-7|Gi1/0/2",
    }
    # The scrape target by address is the sysname its neighbour reports.
    assert graph.device("10.20.0.8") == graph.device("acc-8.corp.example") == "dev:acc-8"
    # An interface alert finds the cable from either end, in either spelling.
    assert graph.node_of({"instance": "10.20.0.8", "ifDescr": "TenGigabitEthernet1/1/1"}) == cable
    assert graph.node_of({"instance": "dist-7.corp.example", "ifName": "Te1/0/1"}) == cable
    # The cabling is oriented from its centre, the distribution switch.
    assert "dev:dist-7" in graph.ancestors(graph.device("10.20.0.8"))
