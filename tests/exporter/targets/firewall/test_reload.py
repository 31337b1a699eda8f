"""A reload while ``/firewall`` scrapes are in flight: they finish, and new ones are served."""

from __future__ import annotations

import asyncio

from exporter.app import create_app
from exporter.live import Settings
from tests.exporter.targets.firewall.conftest import AUTHS, MODULES
from tests.exporter.targets.firewall.exposition import families, scrape, value
from tests.exporter.targets.firewall.test_failures import logged
from tests.peers.firewall_api import Misbehaviour

STATUS = "/api/v2/monitor/system/status"


async def test_a_reload_lets_scrapes_in_flight_finish(start_fake, aiohttp_client, tmp_path, caplog):
    fake = await start_fake("fortigate")
    # The status endpoint answers a second late: the reload lands while it is awaited.
    arrived = asyncio.Event()
    fake.misbehaviours[STATUS] = Misbehaviour(delay=1.0, arrived=arrived)
    config = tmp_path / "scout.yml"
    config.write_text(AUTHS + MODULES)
    settings = Settings(config_file=config, enabled_collectors=frozenset(), enable_lifecycle=True)
    client = await aiohttp_client(create_app(settings))
    in_flight = asyncio.create_task(
        scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt", "10")
    )
    await asyncio.wait_for(arrived.wait(), 10)
    assert (await client.post("/-/reload")).status == 200
    status, text = await in_flight
    assert status == 200
    assert value(text, "scout_firewall_up") == 1
    assert "endpoints failed" not in logged(caplog)
    # The new config's client serves the next scrape; the one in flight read as
    # much, the late endpoint included, through the client of the old config.
    fake.misbehaviours.clear()
    _, after = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt", "10")
    assert value(after, "scout_firewall_up") == 1
    assert families(text) == families(after)
