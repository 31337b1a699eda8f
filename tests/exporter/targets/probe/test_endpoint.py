"""``/probe`` through the exporter's app, against real listeners on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from aiohttp import web

from exporter.app import create_app
from exporter.clients.probe_net import lookup
from exporter.config import parse_config
from exporter.keys import TARGET_ADDRESSES
from exporter.live import Settings
from exporter.targets.addresses import AddressCache, IPAddress

CONFIG = """
modules:
  icmp_fast: {prober: icmp, count: 4, interval_seconds: 0.05}
  http_teapot: {prober: http, valid_status_codes: [418]}
  http_local: {prober: http, allowed_targets: [127.0.0.0/8, "::1/128"]}
  snmp_only:
    prober: snmp
    metrics: [{name: sysUpTime, oid: 1.3.6.1.2.1.1.3}]
"""


@pytest.fixture
async def client(aiohttp_client):
    settings = Settings(enabled_collectors=frozenset())
    return await aiohttp_client(create_app(settings, parse_config(CONFIG, "probe.yml")))


async def probe(client, **params: str) -> tuple[int, str]:
    response = await client.get(
        "/probe", params=params, headers={"X-Prometheus-Scrape-Timeout-Seconds": "5"}
    )
    return response.status, await response.text()


def value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name} ") or line.startswith(f"{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in:\n{text}")


async def test_icmp_probe_of_loopback_from_a_configured_module(client):
    status, text = await probe(client, target="127.0.0.1", module="icmp_fast")
    assert status == 200
    assert value(text, "scout_probe_success") == 1
    assert value(text, "scout_probe_packets_sent") == 4
    assert value(text, "scout_probe_loss_ratio") == 0
    assert value(text, "scout_probe_rtt_min_seconds") <= value(text, "scout_probe_rtt_max_seconds")


async def test_tcp_probe_open_and_closed_port(client):
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, open_text = await probe(client, target=f"127.0.0.1:{port}", module="tcp")
    _, closed_text = await probe(client, target=f"127.0.0.1:{port}", module="tcp")
    assert value(open_text, "scout_probe_success") == 1
    assert value(closed_text, "scout_probe_success") == 0


async def test_http_probe_with_configured_status_codes(client, aiohttp_server):
    async def teapot(_: web.Request) -> web.Response:
        return web.Response(status=418, text="short and stout")

    app = web.Application()
    app.router.add_get("/", teapot)
    server = await aiohttp_server(app)
    url = f"http://127.0.0.1:{server.port}/"
    _, teapot = await probe(client, target=url, module="http_teapot")
    _, default = await probe(client, target=url, module="http")
    assert value(teapot, "scout_probe_success") == 1
    assert value(teapot, "scout_probe_http_status_code") == 418
    assert value(default, "scout_probe_success") == 0  # 418 is not 2xx


async def test_unresolvable_target_is_a_failed_probe_not_an_error(client):
    status, text = await probe(client, target="no-such-host.invalid", module="icmp_fast")
    assert status == 200
    assert value(text, "scout_probe_success") == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"module": "icmp"}, "'target' parameter must be specified"),
        ({"target": "127.0.0.1"}, "'module' parameter must be one of: "),
        ({"target": "127.0.0.1", "module": "nope"}, "unknown module 'nope'; known: "),
        ({"target": "127.0.0.1", "module": "snmp_only"}, "module 'snmp_only' is for /snmp"),
        ({"target": "x" * 3000, "module": "icmp"}, "target longer than 2048"),
    ],
)
async def test_bad_parameters_are_400(client, params, message):
    status, text = await probe(client, **params)
    assert status == 400
    assert text.startswith(message)


async def test_password_in_a_probe_url_is_never_logged(client, caplog):
    import logging

    caplog.set_level(logging.INFO)
    status, text = await probe(
        client, target="http://monitor:hunter2pw@127.0.0.1:1/health", module="http"
    )
    assert status == 200
    assert value(text, "scout_probe_success") == 0
    # The exporter's own records; its access log is off (cli passes access_log=None).
    ours = "\n".join(
        f"{r.getMessage()} {vars(r)}" for r in caplog.records if r.name.startswith("exporter")
    )
    assert "probe:" in ours
    assert "hunter2pw" not in ours
    assert "<secret>" in ours


def address_rows(text: str) -> list[str]:
    """The addresses ``scout_target_address_info`` names, in the order exported."""
    prefix = 'scout_target_address_info{address="'
    return [
        line[len(prefix) :].split('"')[0] for line in text.splitlines() if line.startswith(prefix)
    ]


def resolved_here(name: str) -> list[str]:
    """What the system resolver says ``name`` is on this machine, IPv4 first."""
    found = {
        ipaddress.ip_address(sockaddr[0])
        for family, _, _, _, sockaddr in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        if family in (socket.AF_INET, socket.AF_INET6)
    }
    return [str(a) for a in sorted(found, key=lambda a: (a.version, a))]


@pytest.fixture
async def web_server(aiohttp_server):
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    return await aiohttp_server(app, host="127.0.0.1")


async def test_a_target_by_name_exports_the_addresses_the_name_resolves_to(client, web_server):
    _, by_name = await probe(client, target=f"http://localhost:{web_server.port}/", module="http")
    assert value(by_name, "scout_probe_success") == 1
    assert "# TYPE scout_target_address_info gauge" in by_name
    assert address_rows(by_name) == resolved_here("localhost")
    # An address literal: the instance says the address already, so no row.
    _, by_address = await probe(
        client, target=f"http://127.0.0.1:{web_server.port}/", module="http"
    )
    assert value(by_address, "scout_probe_success") == 1
    assert "scout_target_address_info" not in by_address


async def test_a_failed_probe_of_a_name_still_exports_its_addresses(client):
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    _, text = await probe(client, target=f"localhost:{port}", module="tcp")
    assert value(text, "scout_probe_success") == 0
    assert address_rows(text) == resolved_here("localhost")


@pytest.fixture
async def recording(aiohttp_client):
    """A client of an exporter whose address cache records every name it looks up."""
    looked_up: list[str] = []

    async def recorded(name: str) -> list[IPAddress]:
        looked_up.append(name)
        return await lookup(name)

    app = create_app(Settings(enabled_collectors=frozenset()), parse_config(CONFIG, "probe.yml"))
    app[TARGET_ADDRESSES] = AddressCache(recorded)
    return await aiohttp_client(app), looked_up


async def test_addresses_the_allow_lists_resolved_are_used_without_a_lookup(recording, web_server):
    client, looked_up = recording
    url = f"http://localhost:{web_server.port}/"
    _, admitted = await probe(client, target=url, module="http_local")
    assert value(admitted, "scout_probe_success") == 1
    assert address_rows(admitted) == resolved_here("localhost")
    _, unlisted = await probe(client, target=url, module="http")
    assert address_rows(unlisted) == resolved_here("localhost")
    assert looked_up == []  # the allow-lists' lookup filled the cache for both


async def test_one_name_however_written_is_looked_up_once(recording, web_server):
    client, looked_up = recording
    for host in ("localhost", "LocalHost", "localhost."):
        _, text = await probe(client, target=f"http://{host}:{web_server.port}/", module="http")
        assert address_rows(text) == resolved_here("localhost")
    assert looked_up == ["localhost"]
