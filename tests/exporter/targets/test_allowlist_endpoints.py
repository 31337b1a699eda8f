"""Allow-lists through the real ``/probe`` and ``/snmp``, against listeners on 127.0.0.1.

The listeners record what reaches them: an HTTP server the credential headers
of every request, a UDP socket every SNMP datagram. A refused target must get
nothing, not even a connection; a listed one gets the secret as before.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import create_app
from exporter.clients import probe_net
from exporter.config import parse_config
from exporter.live import Settings
from exporter.targets import allowlist

TOKEN = "Bearer canary-token-secret"
API_KEY = "canary-api-key-secret"
COMMUNITY = "canary-community-secret"
SECRET_HEADERS = f'{{Authorization: "{TOKEN}", X-Api-Key: {API_KEY}}}'

CONFIG = f"""
modules:
  api: {{prober: http, headers: {SECRET_HEADERS}, allowed_targets: [127.0.0.0/8]}}
  api_elsewhere:
    prober: http
    headers: {SECRET_HEADERS}
    allowed_targets: [192.0.2.0/24, "*.example.net", "localhost.example.net"]
  api_by_name: {{prober: http, headers: {SECRET_HEADERS}, allowed_targets: [localhost]}}
  api_rebound: {{prober: http, headers: {SECRET_HEADERS}, allowed_targets: [198.51.100.7]}}
  api_anywhere: {{prober: http, headers: {SECRET_HEADERS}, allowed_targets: [any]}}
  plain: {{prober: http}}
  tcp_rebound: {{prober: tcp, count: 1, allowed_targets: [198.51.100.7]}}
  uptime_lab:
    prober: snmp
    metrics: [{{name: sysUpTime, oid: 1.3.6.1.2.1.1.3}}]
    allowed_targets: [192.0.2.0/24]
auths:
  loopback: {{type: snmp, community: {COMMUNITY}, allowed_targets: [127.0.0.0/8]}}
  elsewhere: {{type: snmp, community: {COMMUNITY}, allowed_targets: [192.0.2.0/24]}}
  link_local: {{type: snmp, community: {COMMUNITY}, allowed_targets: ["fe80::/10"]}}
"""


@dataclass
class Seen:
    """What reached the HTTP server: (path, Authorization, X-Api-Key) per request."""

    requests: list[tuple[str, str, str]] = field(default_factory=list)
    port: int = 0


@pytest.fixture
async def seen(aiohttp_server) -> Seen:
    record = Seen()

    async def anything(request: web.Request) -> web.Response:
        headers = request.headers
        record.requests.append(
            (request.path, headers.get("Authorization", ""), headers.get("X-Api-Key", ""))
        )
        if request.path == "/redirect":
            # To the same server under another host: one the module does not list.
            raise web.HTTPFound(f"http://127.0.0.1:{record.port}/stolen")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{path:.*}", anything)
    server = await aiohttp_server(app)
    record.port = server.port
    return record


@pytest.fixture
async def client(aiohttp_client):
    settings = Settings(enabled_collectors=frozenset())
    return await aiohttp_client(create_app(settings, parse_config(CONFIG, "allow.yml")))


async def get(client, path: str, **params: str) -> tuple[int, str]:
    # A short deadline: an SNMP scrape of the silent recorder ends when it passes.
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}
    response = await client.get(path, params=params, headers=headers)
    return response.status, await response.text()


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


def fake_lookup(answers: dict[str, str]):
    async def lookup(host: str, deadline: float | None = None):
        if host not in answers:
            raise probe_net.ResolveError(f"cannot resolve {host!r}")
        return [ipaddress.ip_address(answers[host])]

    return lookup


async def test_a_listed_target_gets_the_secret(client, seen):
    status, text = await get(
        client, "/probe", module="api", target=f"http://127.0.0.1:{seen.port}/health"
    )
    assert status == 200
    assert value(text, "scout_probe_success") == 1
    assert seen.requests == [("/health", TOKEN, API_KEY)]


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/health",
        "127.0.0.1:{port}/health",  # no scheme: http:// is implied
        "http://localhost:{port}/health",  # a name: judged by what it resolves to
        "http://LOCALHOST.:{port}/health",
        "http://2130706433:{port}/health",  # 127.0.0.1 to the C resolver
        "http://0x7f.1:{port}/health",
        "http://127.1:{port}/health",
        "http://[::ffff:127.0.0.1]:{port}/health",
    ],
)
async def test_an_unlisted_target_is_refused_before_anything_is_sent(client, seen, target):
    status, text = await get(
        client, "/probe", module="api_elsewhere", target=target.format(port=seen.port)
    )
    assert status == 403
    assert "is not allowed by modules.api_elsewhere.allowed_targets" in text
    assert "canary" not in text
    assert seen.requests == []
    _, metrics = await get(client, "/metrics")
    refused = value(
        metrics,
        "scout_exporter_target_refused_total",
        endpoint="probe",
        allow_list="modules.api_elsewhere",
    )
    assert refused == 1


async def test_a_redirect_to_an_unlisted_host_gets_no_connection(client, seen):
    target = f"http://localhost:{seen.port}/redirect"
    status, text = await get(client, "/probe", module="api_by_name", target=target)
    assert status == 200
    assert value(text, "scout_probe_success") == 0
    # The listed name got its secret; the address it redirected to got nothing.
    assert seen.requests == [("/redirect", TOKEN, API_KEY)]


async def test_a_name_that_resolves_elsewhere_at_connect_time_gets_nothing(
    client, seen, monkeypatch
):
    # DNS rebinding: a listed address when checked, the recorder when connected to.
    monkeypatch.setattr(allowlist, "lookup", fake_lookup({"rebound.test": "198.51.100.7"}))
    monkeypatch.setattr(probe_net, "lookup", fake_lookup({"rebound.test": "127.0.0.1"}))
    target = f"http://rebound.test:{seen.port}/health"
    status, text = await get(client, "/probe", module="api_rebound", target=target)
    assert status == 200
    assert value(text, "scout_probe_success") == 0
    assert seen.requests == []


async def test_the_tcp_prober_checks_the_address_it_connects_to(client, monkeypatch):
    connections: list[object] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(allowlist, "lookup", fake_lookup({"rebound.test": "198.51.100.7"}))
    monkeypatch.setattr(probe_net, "lookup", fake_lookup({"rebound.test": "127.0.0.1"}))
    async with server:
        status, text = await get(
            client, "/probe", module="tcp_rebound", target=f"rebound.test:{port}"
        )
        await asyncio.sleep(0.05)
    assert status == 200
    assert value(text, "scout_probe_success") == 0
    assert connections == []


async def test_user_info_in_the_url_is_refused_without_echoing_the_password(client, seen):
    target = f"http://probe:canary-password@127.0.0.1:{seen.port}/health"
    status, text = await get(client, "/probe", module="api", target=target)
    assert status == 400
    assert "user info" in text
    assert "canary-password" not in text
    assert seen.requests == []


async def test_a_module_without_a_secret_or_a_list_probes_any_target(client, seen):
    target = f"http://127.0.0.1:{seen.port}/open"
    status, text = await get(client, "/probe", module="plain", target=target)
    assert status == 200
    assert value(text, "scout_probe_success") == 1
    assert seen.requests == [("/open", "", "")]


async def test_any_sends_the_secret_wherever_the_caller_says(client, seen):
    target = f"http://127.0.0.1:{seen.port}/anywhere"
    status, _ = await get(client, "/probe", module="api_anywhere", target=target)
    assert status == 200
    assert seen.requests == [("/anywhere", TOKEN, API_KEY)]


class Datagrams(asyncio.DatagramProtocol):
    """A silent SNMP agent: it keeps what it receives and never answers."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)


@pytest.fixture
async def agent() -> AsyncIterator[tuple[Datagrams, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Datagrams, local_addr=("127.0.0.1", 0)
    )
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f.1"])
async def test_snmp_refuses_an_unlisted_agent_before_sending_the_community(client, agent, host):
    datagrams, port = agent
    status, text = await get(client, "/snmp", auth="elsewhere", target=f"{host}:{port}")
    assert status == 403
    assert "is not allowed by auths.elsewhere.allowed_targets" in text
    assert COMMUNITY not in text
    await asyncio.sleep(0.05)
    assert datagrams.received == []


async def test_snmp_sends_the_community_to_a_listed_agent(client, agent):
    datagrams, port = agent
    status, text = await get(client, "/snmp", auth="loopback", target=f"localhost:{port}")
    assert status == 200
    assert value(text, "scout_snmp_module_success", module="if_mib") == 0  # it never answers
    assert datagrams.received
    assert all(COMMUNITY.encode() in data for data in datagrams.received)


async def test_snmp_is_pinned_to_the_address_it_checked(client, agent, monkeypatch):
    # Only the allow-list can resolve this name: if the session looked it up
    # again, nothing would be sent at all.
    monkeypatch.setattr(allowlist, "lookup", fake_lookup({"pinned.test": "127.0.0.1"}))
    datagrams, port = agent
    status, _ = await get(client, "/snmp", auth="loopback", target=f"pinned.test:{port}")
    assert status == 200
    assert datagrams.received


async def test_snmp_name_that_does_not_resolve_fails_every_module(client):
    status, text = await get(
        client, "/snmp", auth="loopback", module="if_mib,system", target="no-such-host.invalid"
    )
    assert status == 200
    assert value(text, "scout_snmp_module_success", module="if_mib") == 0
    assert value(text, "scout_snmp_module_success", module="system") == 0
    assert value(text, "scout_snmp_device_reachable") == 0, text


async def test_snmp_module_and_auth_lists_must_both_admit(client, agent):
    datagrams, port = agent
    target = f"127.0.0.1:{port}"
    status, text = await get(client, "/snmp", auth="loopback", module="uptime_lab", target=target)
    assert status == 403
    assert "is not allowed by modules.uptime_lab.allowed_targets" in text
    # The module without a list, asked for with it, does not make it pass.
    status, text = await get(
        client, "/snmp", auth="loopback", module="system,uptime_lab", target=target
    )
    assert status == 403
    await asyncio.sleep(0.05)
    assert datagrams.received == []


def link_local_address() -> tuple[str, str] | None:
    """An IPv6 link-local address of this machine and its interface's name, if any."""
    try:
        with open("/proc/net/if_inet6") as table:  # address, index, prefix, scope, flags, name
            rows = [line.split() for line in table]
    except OSError:
        return None
    for row in rows:
        if row[0].startswith("fe80"):
            return str(ipaddress.IPv6Address(int(row[0], 16))), row[5]
    return None


async def test_snmp_to_a_listed_link_local_address_keeps_its_zone(client):
    """``[fe80::...%eth0]`` names the link; pinned to the checked address without the
    zone, the session's socket could not even be connected (EINVAL)."""
    found = link_local_address()
    if found is None:
        pytest.skip("no IPv6 link-local address on this machine")
    address, interface = found
    loop = asyncio.get_running_loop()
    transport, datagrams = await loop.create_datagram_endpoint(
        Datagrams, local_addr=(f"{address}%{interface}", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        target = f"[{address}%{interface}]:{port}"
        status, _ = await get(client, "/snmp", auth="link_local", target=target)
        assert status == 200
        assert datagrams.received
    finally:
        transport.close()
