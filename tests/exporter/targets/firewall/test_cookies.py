"""A firewall's cookies stay with it: the shared HTTP session keeps none.

Firewall APIs answer with session cookies (OPNsense's PHPSESSID, FortiOS's
ccsrftoken). Kept in the session every firewall shares, one firewall's cookie
would be sent to another on the same host name (a NAT forwarding two ports)
or in the domain it names: a firewall could plant a session id in its
neighbour's requests.
"""

from __future__ import annotations

from exporter.app import create_app
from exporter.config import parse_config
from exporter.live import Settings
from tests.exporter.targets.firewall.exposition import scrape, value
from tests.peers.firewall_api import FORTIGATE_TOKEN, Misbehaviour

STATUS = "/api/v2/monitor/system/status"
# Names are not pinned to an address under [any], so the cookie jar would see them.
CONFIG = f"""
auths:
  fgt_anywhere: {{type: http, bearer_token: {FORTIGATE_TOKEN}, allowed_targets: [any]}}
modules:
  fortigate_http: {{prober: fortigate, scheme: http}}
"""


async def test_a_cookie_set_by_one_firewall_is_not_sent_to_another(start_fake, aiohttp_client):
    planting = await start_fake("fortigate")
    planting.misbehaviours[STATUS] = Misbehaviour(
        headers={"Set-Cookie": "PHPSESSID=planted; Path=/; Domain=localhost"}
    )
    neighbour = await start_fake("fortigate")
    settings = Settings(enabled_collectors=frozenset())
    client = await aiohttp_client(create_app(settings, parse_config(CONFIG, "cookies.yml")))
    for fake in (planting, neighbour, planting):
        _, text = await scrape(client, "fortigate_http", f"localhost:{fake.port}", "fgt_anywhere")
        assert value(text, "scout_firewall_up") == 1
    seen = [request.headers.get("Cookie") for request in planting.requests + neighbour.requests]
    assert seen == [None] * len(seen)
