"""The generic handler's parameter checks, the same for every kind in the table."""

from __future__ import annotations

import pytest

from exporter.app import create_app
from exporter.config import parse_config
from exporter.live import Settings
from exporter.targets.registry import TARGET_KINDS

CONFIG = """
auths:
  web: {type: http, bearer_token: not-for-snmp, allowed_targets: [any]}
modules:
  icmp_fast: {prober: icmp, count: 2}
"""


@pytest.fixture
async def client(aiohttp_client):
    settings = Settings(enabled_collectors=frozenset())
    return await aiohttp_client(create_app(settings, parse_config(CONFIG, "handler.yml")))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        # A module of another kind, built in or configured, says where it belongs.
        ("/snmp?target=192.0.2.1&module=icmp", "module 'icmp' is for /probe, not /snmp"),
        ("/snmp?target=192.0.2.1&module=icmp_fast", "module 'icmp_fast' is for /probe, not /snmp"),
        ("/probe?target=192.0.2.1&module=if_mib", "module 'if_mib' is for /snmp, not /probe"),
        # An auth must be one the kind takes.
        (
            "/snmp?target=192.0.2.1&auth=web",
            "auth 'web' is of type http, which /snmp does not take",
        ),
        # /probe runs one module per scrape; /snmp up to 20.
        ("/probe?target=192.0.2.1&module=icmp,tcp", "too many modules: 2 (at most 1)"),
        ("/probe?target=192.0.2.1&module=icmp&module=tcp", "too many modules: 2 (at most 1)"),
        (
            "/snmp?target=192.0.2.1&module=" + ",".join(f"m{i}" for i in range(21)),
            "too many modules: 21 (at most 20)",
        ),
        # A target given twice is ambiguous for every kind.
        ("/probe?target=a&target=b&module=icmp", "'target' parameter given 2 times; give it once"),
        ("/probe?target=&module=icmp", "'target' parameter must be specified"),
    ],
)
async def test_bad_parameters_are_400_with_the_reason(client, path, message):
    response = await client.get(path)
    assert response.status == 400
    assert await response.text() == f"{message}\n"


async def test_every_kind_in_the_table_has_a_route_and_a_landing_link(client):
    landing = await (await client.get("/")).text()
    for kind in TARGET_KINDS:
        assert f'href="/{kind.name}?' in landing
        response = await client.get(f"/{kind.name}")
        assert response.status == 400
        assert await response.text() == "'target' parameter must be specified\n"
