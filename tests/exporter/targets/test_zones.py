"""IPv6 zones (``fe80::1%eth0``): how every kind reads them, and what allow-lists make of them.

Pure functions and the real app with no peer: an unknown interface fails
before anything is sent, so these need no link. Probing across a real
link-local link is in ``probe/test_link_local.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket

import pytest
from aiohttp import hdrs, web
from aiohttp.abc import AbstractResolver, ResolveResult
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from exporter.app import create_app
from exporter.clients.firewall_api import AiohttpApiClient, ApiError, ApiRequest
from exporter.clients.icmp import SocketPinger, _Exchange
from exporter.clients.probe_net import (
    LinkLocalCheckingResolver,
    ResolveError,
    SystemResolver,
    TargetError,
    ZonedHostRequest,
    _PreferringResolver,
    _zoneless_host,
    interface_index,
    needs_zone,
    parse_ip,
    split_host_port,
    unzoned,
    url_address,
)
from exporter.clients.snmp import Credentials, SnmpError, SnmpSession
from exporter.config import parse_config
from exporter.errors import BadRequestError
from exporter.live import Settings
from exporter.targets.allowlist import AllowList, admit, canonical_host
from exporter.targets.firewall.modules import FortiGateModule
from exporter.targets.firewall.scraper import FirewallScraper, FirewallTarget
from exporter.targets.firewall.scraper import parse_target as firewall_target
from exporter.targets.kind import ScrapeJob, preferred_address
from exporter.targets.probe.http import HttpModule, HttpProber, target_url
from exporter.targets.probe.icmp import IcmpModule, IcmpProber
from exporter.targets.probe.tcp import TcpModule, TcpProber
from exporter.targets.snmp.params import parse_target as snmp_target
from exporter.targets.snmp.scraper import Target
from tests.exporter.targets.probe.test_icmp import icmp_allowed

# An interface every Linux network namespace has, and a name none has.
LOOPBACK = "lo"
NO_SUCH = "nosuchif0"
needs_icmp = pytest.mark.skipif(
    not icmp_allowed(), reason="no ICMP socket may be opened here (not root, no ping group)"
)


def zoned_request(url: URL) -> ZonedHostRequest:
    """The request aiohttp would make for ``url``: what it connects to, sends and checks."""
    return ZonedHostRequest("GET", url, loop=asyncio.get_running_loop())


# --- reading a zone -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "shown", "zone"),
    [
        ("fe80::1%eth0", "fe80::1%eth0", "eth0"),
        ("FE80:0:0::0001%Eth0", "fe80::1%Eth0", "Eth0"),  # the zone's case is the kernel's
        ("fe80::1%2", "fe80::1%2", "2"),  # an interface index
        ("fe80::1%br-lan.10", "fe80::1%br-lan.10", "br-lan.10"),
        ("fe80::1", "fe80::1", None),
        ("192.0.2.1", "192.0.2.1", None),
    ],
)
def test_an_address_keeps_its_zone(host, shown, zone):
    address = parse_ip(host)
    assert address is not None
    assert str(address) == shown
    assert getattr(address, "scope_id", None) == zone
    assert unzoned(address) == ipaddress.ip_address(shown.partition("%")[0])


@pytest.mark.parametrize(
    "host",
    [
        "fe80::1%a b",  # ipaddress takes any text after '%'
        "fe80::1%eth0:443",  # a port without brackets
        "fe80::1%eth0\r\nHost: elsewhere",
        "fe80::1%../../x",
        "fe80::1%..",
        "fe80::1%averyveryverylongname",  # past IFNAMSIZ
        "fe80::1%",
        "192.0.2.1%eth0",  # IPv4 has no zones
    ],
)
def test_a_zone_that_names_no_interface_is_refused(host):
    with pytest.raises(TargetError):
        parse_ip(host)


def test_a_port_after_a_zone_without_brackets_says_how_to_write_it():
    with pytest.raises(TargetError, match=r"a port goes after brackets: \[fe80::1%\.\.\.\]:port"):
        split_host_port("fe80::1%eth0:443")


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("[fe80::1%eth0]:443", "fe80::1%eth0", 443),
        ("[fe80::1%eth0]", "fe80::1%eth0", None),
        ("fe80::1%eth0", "fe80::1%eth0", None),
    ],
)
def test_tcp_and_icmp_targets_keep_the_zone(target, host, port):
    parsed = split_host_port(target)
    assert (parsed.host, parsed.port) == (host, port)


def test_the_interface_is_looked_up_and_an_unknown_one_is_said_so():
    index = socket.if_nametoindex(LOOPBACK)
    assert interface_index(ipaddress.ip_address(f"fe80::1%{LOOPBACK}")) == index
    assert interface_index(ipaddress.ip_address(f"fe80::1%{index}")) == index
    with pytest.raises(ResolveError, match=f"no network interface '{NO_SUCH}'"):
        interface_index(ipaddress.ip_address(f"fe80::1%{NO_SUCH}"))
    with pytest.raises(ResolveError, match="no network interface '999999'"):
        interface_index(ipaddress.ip_address("fe80::1%999999"))


def test_a_link_local_address_without_a_zone_is_said_to_need_one():
    with pytest.raises(ResolveError, match=r"fe80::1 is link-local.*as in fe80::1%eth0"):
        interface_index(ipaddress.ip_address("fe80::1"))
    assert interface_index(ipaddress.ip_address("2001:db8::1")) == 0


def test_echo_requests_go_out_on_the_zones_interface():
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        exchange = _Exchange(sock, "datagram", ipaddress.ip_address(f"fe80::1%{LOOPBACK}"), 8)
    # The scope id, not the text: the kernel ignores a zone in the address string.
    assert exchange.sockaddr == ("fe80::1", 0, 0, socket.if_nametoindex(LOOPBACK))


# --- HTTP: RFC 6874's %25 ---------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "http://[fe80::1%25eth0]:8080/health",
        "http://[fe80::1%eth0]:8080/health",
        "[fe80::1%25eth0]:8080/health",
        "HTTP://[FE80::1%25eth0]:8080/health",
    ],
)
async def test_an_http_target_reads_a_zone_written_either_way(target):
    url = target_url(target)
    assert url_address(url) == ipaddress.ip_address("fe80::1%eth0")
    request = zoned_request(url)
    assert request.url.raw_host == "fe80::1%eth0"  # what aiohttp connects to
    assert str(request.url) == "http://[fe80::1%eth0]:8080/health"
    assert HttpModule().target_host(target) == "fe80::1%eth0"


@pytest.mark.parametrize(
    "target",
    [
        "http://[fe80::1%25eth0%0d%0aX]/",
        "http://[fe80::1%25a%20b]/",
        "http://[fe80::1%25]/",
    ],
)
def test_an_http_target_with_a_bad_zone_is_refused(target):
    with pytest.raises(TargetError, match=r"is not a host name or IP address|zone"):
        target_url(target)


@pytest.mark.parametrize(
    ("host", "sent"),
    [
        ("[fe80::1%eth0]:8080", "[fe80::1]:8080"),
        ("[fe80::1%eth0]", "[fe80::1]"),
        ("[2001:db8::1]:80", "[2001:db8::1]:80"),
        ("example.net:80", "example.net:80"),
    ],
)
def test_the_host_header_carries_no_zone(host, sent):
    assert _zoneless_host(host) == sent


# --- allow-lists ------------------------------------------------------------------------


LINK_LOCAL = AllowList.parse(["fe80::/10"])
DOCUMENTATION = AllowList.parse(["2001:db8::/32"])


def test_a_zone_is_judged_as_the_address_without_it():
    assert canonical_host("[fe80::1%eth0]") == ipaddress.ip_address("fe80::1")
    zoned = ipaddress.ip_address("fe80::1%eth0")
    assert LINK_LOCAL.admits("fe80::1%eth0", zoned)
    assert not DOCUMENTATION.admits("fe80::1%eth0", zoned)
    with pytest.raises(Exception, match="not in the module's allowed_targets"):
        DOCUMENTATION.check("fe80::1%eth0", zoned)


@pytest.mark.parametrize("host", ["fe80::1%a b", "[fe80::1%eth0/1]", "fe80::1%..", "10.0.0.1%eth0"])
def test_a_bad_zone_is_no_way_past_a_list(host):
    with pytest.raises(ValueError, match="zone"):
        canonical_host(host)


async def test_admit_judges_the_address_and_refuses_a_bad_zone():
    admission = await admit("fe80::1%eth0", [("modules.m", LINK_LOCAL)])
    assert admission.host == ipaddress.ip_address("fe80::1")
    with pytest.raises(BadRequestError, match="zone"):
        await admit("fe80::1%a b", [("modules.m", LINK_LOCAL)])
    with pytest.raises(BadRequestError, match=r"not allowed by modules\.m"):
        await admit("fe80::1%eth0", [("modules.m", DOCUMENTATION)])


def test_a_list_entry_takes_no_zone():
    with pytest.raises(ValueError, match="takes no zone"):
        AllowList.parse(["fe80::1%eth0"])
    with pytest.raises(ValueError, match="takes no zone"):
        AllowList.parse(["fe80::%eth0/10"])


# --- SNMP and firewall targets ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("[FE80::0001%eth0]:1161", "fe80::1%eth0", 1161, "[fe80::1%eth0]:1161"),
        ("fe80::1%eth0", "fe80::1%eth0", 161, "[fe80::1%eth0]:161"),
        ("udp://[fe80::1%2]:161", "fe80::1%2", 161, "[fe80::1%2]:161"),
    ],
)
def test_an_snmp_target_keeps_its_zone_in_canonical_form(text, host, port, shown):
    target = snmp_target(text)
    assert target == Target(host, port)
    assert str(target) == shown


@pytest.mark.parametrize("text", ["[fe80::1%a b]:161", "fe80::1%eth0:161", "[fe80::1%]:161"])
def test_an_snmp_target_with_a_bad_zone_is_a_bad_request(text):
    with pytest.raises(BadRequestError, match="zone"):
        snmp_target(text)


class RecordingClient:
    """A firewall API client that records the requests and answers none."""

    def __init__(self) -> None:
        self.requests: list[ApiRequest] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get_json(self, request: ApiRequest) -> object:
        self.requests.append(request)
        return {}


def firewall_auth():
    yaml = "auths:\n  a: {type: http, bearer_token: tok, allowed_targets: [any]}\n"
    return parse_config(yaml, "auth.yml").auths["a"]


async def scrape_firewall(target: FirewallTarget) -> tuple[RecordingClient, bool, str | None]:
    client = RecordingClient()
    loop = asyncio.get_running_loop()
    module = FortiGateModule(scheme="https")
    job = ScrapeJob(target, (("fortigate", module),), "a", firewall_auth(), loop.time() + 2)
    success, error = await FirewallScraper(client).scrape(job, [])
    return client, success, error


async def test_a_firewall_is_asked_at_its_zoned_address():
    target = firewall_target(f"[fe80::1%{LOOPBACK}]:8443")
    assert target.host == f"fe80::1%{LOOPBACK}"
    client, _, _ = await scrape_firewall(target)
    assert client.requests
    for request in client.requests:
        # The zone stays in the URL connected to; the client leaves it out of Host and SNI.
        assert url_address(request.url) == ipaddress.ip_address(f"fe80::1%{LOOPBACK}")
        assert zoned_request(request.url).url.raw_host == f"fe80::1%{LOOPBACK}"
        assert request.url.port == 8443


async def test_a_firewall_on_an_unknown_interface_is_down_and_says_why():
    client, success, error = await scrape_firewall(FirewallTarget(f"fe80::1%{NO_SUCH}", 443))
    assert not success
    assert error is not None
    assert f"no network interface '{NO_SUCH}'" in error
    assert client.requests == []


def test_a_firewall_target_with_a_bad_zone_is_a_bad_request():
    with pytest.raises(BadRequestError, match="zone"):
        firewall_target("[fe80::1%a b]:443")


# --- through the app: an unknown interface is a failed scrape, with the reason logged ---


CONFIG = """
modules:
  tcp_ll: {prober: tcp, count: 1, allowed_targets: ["fe80::/10"]}
  http_ll: {prober: http, allowed_targets: ["fe80::/10"]}
  icmp_ll: {prober: icmp, count: 1, allowed_targets: ["fe80::/10"]}
  fgt_ll: {prober: fortigate, scheme: http}
  uptime: {prober: snmp, metrics: [{name: sysUpTime, oid: 1.3.6.1.2.1.1.3}], retries: 0}
auths:
  fgt: {type: http, bearer_token: tok, allowed_targets: ["fe80::/10"]}
  snmp_ll: {type: snmp, community: public, allowed_targets: ["fe80::/10"]}
"""


@pytest.fixture
async def client(aiohttp_client):
    settings = Settings(enabled_collectors=frozenset())
    return await aiohttp_client(create_app(settings, parse_config(CONFIG, "zones.yml")))


def value(text: str, name: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


@pytest.mark.parametrize(
    ("path", "params", "success"),
    [
        (
            "/probe",
            {"module": "tcp_ll", "target": f"[fe80::1%{NO_SUCH}]:443"},
            "scout_probe_success",
        ),
        ("/probe", {"module": "icmp_ll", "target": f"fe80::1%{NO_SUCH}"}, "scout_probe_success"),
        (
            "/probe",
            {"module": "http_ll", "target": f"http://[fe80::1%25{NO_SUCH}]:8080/"},
            "scout_probe_success",
        ),
        (
            "/firewall",
            {"module": "fgt_ll", "auth": "fgt", "target": f"[fe80::1%{NO_SUCH}]:443"},
            "scout_firewall_up",
        ),
        (
            "/snmp",
            {"module": "uptime", "auth": "snmp_ll", "target": f"[fe80::1%{NO_SUCH}]:161"},
            "scout_snmp_module_success",
        ),
    ],
)
async def test_an_unknown_interface_fails_the_scrape_saying_so(
    client, caplog, path, params, success
):
    caplog.set_level(logging.DEBUG)
    response = await client.get(path, params=params)
    text = await response.text()
    assert response.status == 200, text
    assert value(text, success) == 0
    said = [r for r in caplog.records if f"no network interface '{NO_SUCH}'" in r.getMessage()]
    assert said, [r.getMessage() for r in caplog.records]
    assert all(record.exc_info is None for record in caplog.records)


@pytest.mark.parametrize(
    ("module", "target"),
    [("tcp_ll", "[fe80::1]:443"), ("icmp_ll", "fe80::1"), ("http_ll", "http://[fe80::1]:8080/")],
)
async def test_a_link_local_target_without_a_zone_fails_saying_what_is_missing(
    client, caplog, module, target
):
    response = await client.get("/probe", params={"module": module, "target": target})
    assert value(await response.text(), "scout_probe_success") == 0
    said = [r.getMessage() for r in caplog.records if "fe80::1 is link-local" in r.getMessage()]
    assert said, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/probe", {"module": "tcp_ll", "target": "[fe80::1%a b]:443"}),
        ("/probe", {"module": "http_ll", "target": "http://[fe80::1%25a%20b]/"}),
        ("/firewall", {"module": "fgt_ll", "auth": "fgt", "target": "[fe80::1%a b]:443"}),
        ("/snmp", {"module": "uptime", "auth": "snmp_ll", "target": "[fe80::1%a b]:161"}),
    ],
)
async def test_a_bad_zone_is_a_bad_request_under_an_allow_list(client, path, params):
    response = await client.get(path, params=params)
    assert response.status == 400
    assert "zone" in await response.text()


async def test_a_zone_does_not_take_a_target_past_a_list(client):
    response = await client.get(
        "/probe", params={"module": "tcp_ll", "target": f"[2001:db8::1%{LOOPBACK}]:443"}
    )
    assert response.status == 403


# --- a zone on an address that needs none: dropped, as before and as Go does ----------------


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("::1%lo", "::1"),
        ("::1%1", "::1"),
        ("2001:db8::1%eth0", "2001:db8::1"),
        ("ff05::1%eth0", "ff05::1"),  # site-local multicast: one group whatever the link
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("ff02::1%eth0", "ff02::1%eth0"),  # link-local multicast
        ("ff01::1%lo", "ff01::1%lo"),  # interface-local multicast
        ("ff12::1%eth0", "ff12::1%eth0"),  # link-local, with the transient flag
        ("ff32::1%eth0", "ff32::1%eth0"),  # link-local, prefix-based
        ("ff15::1%eth0", "ff15::1"),  # site-local, with the transient flag
    ],
)
def test_only_an_address_of_one_link_keeps_its_zone(host, shown):
    address = parse_ip(host)
    assert str(address) == shown
    assert needs_zone(address) == ("%" in shown)


def test_a_dropped_zone_is_still_refused_when_it_is_no_interface_name():
    with pytest.raises(TargetError, match="zone"):
        parse_ip("::1%a b")


@pytest.mark.parametrize("target", [f"[::1%{LOOPBACK}]", "[::1%1]"])
async def test_tcp_reaches_loopback_written_with_a_zone(target):
    server = await asyncio.start_server(lambda _r, w: w.close(), "::1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        result = await TcpProber().probe(f"{target}:{port}", TcpModule(count=1), loop.time() + 5)
    finally:
        server.close()
        await server.wait_closed()
    assert result.success, result.error


@needs_icmp
@pytest.mark.parametrize("target", [f"::1%{LOOPBACK}", "::1%1"])
async def test_icmp_reaches_loopback_written_with_a_zone(target):
    loop = asyncio.get_running_loop()
    result = await IcmpProber().probe(target, IcmpModule(count=1), loop.time() + 5)
    assert result.success, result.error


@needs_icmp
async def test_an_echo_reply_from_an_address_needing_no_zone_is_taken_whatever_the_zone():
    # The kernel gives a reply's scope id for a link-local source only: ::1's comes with 0.
    loop = asyncio.get_running_loop()
    result = await SocketPinger().ping(
        ipaddress.IPv6Address(f"::1%{LOOPBACK}"),
        count=1,
        interval=0.01,
        reply_timeout=2.0,
        deadline=loop.time() + 5,
        payload_size=8,
        dont_fragment=False,
    )
    assert all(rtt is not None for rtt in result.rtts), result


async def test_a_firewall_and_an_http_target_drop_a_zone_their_address_needs_not():
    target = firewall_target(f"[::1%{LOOPBACK}]:8443")
    assert target.host == "::1"
    client, _, _ = await scrape_firewall(target)
    assert client.requests
    assert all(zoned_request(r.url).url.raw_host == "::1" for r in client.requests)
    request = zoned_request(target_url(f"http://[::1%25{LOOPBACK}]:8080/"))
    assert request.url.raw_host == "::1"
    assert request.headers[hdrs.HOST] == "[::1]:8080"


async def test_http_reaches_loopback_written_with_a_zone():
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "::1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        target = f"http://[::1%25{LOOPBACK}]:{port}/"
        result = await HttpProber().probe(target, HttpModule(), loop.time() + 5)
    finally:
        await runner.cleanup()
    assert result.success, result.error


# --- ZonedHostRequest: only an IPv6 address with a zone is touched ---------------------------


@pytest.mark.parametrize(
    ("url", "connect", "server_hostname", "host"),
    [
        ("http://[fe80::1%25lo]:8080/", "fe80::1%lo", "fe80::1", "[fe80::1]:8080"),
        ("https://[fe80::1%lo]/", "fe80::1%lo", "fe80::1", "[fe80::1]"),
        ("http://[2001:db8::1]:8080/", "2001:db8::1", None, "[2001:db8::1]:8080"),
        ("https://example.net/", "example.net", None, "example.net"),
        # A redirect's host name with '%' in it is a name, never an address and a zone:
        # neither SNI nor the certificate check may be cut down to its first part.
        (
            "https://a.example.com%25b.attacker.com/",
            "a.example.com%25b.attacker.com",
            None,
            "a.example.com%25b.attacker.com",
        ),
    ],
)
async def test_a_request_leaves_out_only_an_addresss_zone(url, connect, server_hostname, host):
    request = zoned_request(URL(url))
    assert request.url.raw_host == connect
    assert request.server_hostname == server_hostname
    assert request.headers[hdrs.HOST] == host


# --- %25 is read once: the interface checked is the one connected through -----------------


async def test_an_escaped_percent_in_an_http_zone_is_read_once():
    url = target_url(f"http://[fe80::1%2525{LOOPBACK}]:1/")
    # RFC 6874 reads %2525lo as the zone "25lo", not "lo": checked and connected alike.
    assert url_address(url) == ipaddress.IPv6Address(f"fe80::1%25{LOOPBACK}")
    assert zoned_request(url).url.raw_host == f"fe80::1%25{LOOPBACK}"
    loop = asyncio.get_running_loop()
    result = await HttpProber().probe(str(url), HttpModule(), loop.time() + 5)
    assert not result.success
    assert f"no network interface '25{LOOPBACK}'" in (result.error or "")


async def test_a_firewall_zone_is_connected_through_as_it_was_checked(monkeypatch):
    target = firewall_target(f"[fe80::1%25{LOOPBACK}]:8443")
    _, success, error = await scrape_firewall(target)
    assert not success
    assert f"no network interface '25{LOOPBACK}'" in (error or "")
    # Were there such an interface, the request would go through it, not through lo.
    monkeypatch.setattr("exporter.targets.firewall.scraper.interface_index", lambda _a: 99)
    client, _, _ = await scrape_firewall(target)
    assert client.requests
    for request in client.requests:
        assert url_address(request.url) == parse_ip(target.host)
        assert zoned_request(request.url).url.raw_host == f"fe80::1%25{LOOPBACK}"


# --- a name resolving to a link-local address says a zone is needed, for every kind --------


LINK_LOCAL_SAID = r"fe80::1 is link-local.*as in fe80::1%eth0"


async def resolves_to_link_local(_host: str, _deadline: float | None = None):
    return [ipaddress.ip_address("fe80::1")]


class FixedResolver(AbstractResolver):
    """aiohttp's resolver hook, answering every name with ``addresses``."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_an_http_probe_of_a_name_with_a_link_local_address_says_so(monkeypatch):
    monkeypatch.setattr("exporter.clients.probe_net.lookup", resolves_to_link_local)
    with pytest.raises(OSError, match=LINK_LOCAL_SAID):
        await _PreferringResolver("ip6", True).resolve("ll.example")
    loop = asyncio.get_running_loop()
    result = await HttpProber().probe("http://ll.example:8080/", HttpModule(), loop.time() + 5)
    assert not result.success
    assert re.search(LINK_LOCAL_SAID, result.error or ""), result.error


async def test_a_resolver_leaves_out_link_local_addresses_without_a_zone():
    mixed = await LinkLocalCheckingResolver(FixedResolver("fe80::1", "2001:db8::1")).resolve("x")
    assert [r["host"] for r in mixed] == ["2001:db8::1"]
    zoned = await LinkLocalCheckingResolver(FixedResolver(f"fe80::1%{LOOPBACK}")).resolve("x")
    assert [r["host"] for r in zoned] == [f"fe80::1%{LOOPBACK}"]
    with pytest.raises(OSError, match=LINK_LOCAL_SAID):
        await LinkLocalCheckingResolver(FixedResolver("fe80::1")).resolve("x")


async def test_a_firewall_name_with_a_link_local_address_says_so(monkeypatch):
    monkeypatch.setattr(
        "exporter.clients.firewall_api.LinkLocalCheckingResolver",
        lambda: LinkLocalCheckingResolver(FixedResolver("fe80::1")),
    )
    client = AiohttpApiClient()
    await client.start()
    try:
        loop = asyncio.get_running_loop()
        request = ApiRequest(
            url=URL("http://fw.example:8443/api"),
            headers={},
            tls=None,
            server_hostname=None,
            max_bytes=1000,
            deadline=loop.time() + 5,
        )
        with pytest.raises(ApiError, match=LINK_LOCAL_SAID):
            await client.get_json(request)
    finally:
        await client.close()


class LinkLocalDns:
    """The SNMP transport's resolver, answering every name with ``addresses``."""

    addresses: tuple[str, ...] = ("fe80::1",)

    async def getaddrinfo(self, host, port, **_kwargs):
        return [
            (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", (a, port, 0, 0)) for a in self.addresses
        ]


async def test_an_snmp_name_with_a_link_local_address_says_so(monkeypatch):
    monkeypatch.setattr("exporter.clients.snmp.transport.shared_resolver", LinkLocalDns)
    async with SnmpSession("ll.example", 161, Credentials(2, community="public")) as session:
        with pytest.raises(SnmpError, match=LINK_LOCAL_SAID):
            await session.get([(1, 3, 6, 1, 2, 1, 1, 5, 0)])


# --- a name with a link-local address and others is reached at the others ------------------


async def resolves_to_both(_host: str, _deadline: float | None = None):
    return [ipaddress.ip_address("fe80::1"), ipaddress.ip_address("2001:db8::1")]


async def test_tcp_and_http_reach_a_name_at_its_address_that_needs_no_zone(monkeypatch):
    monkeypatch.setattr("exporter.clients.probe_net.lookup", resolves_to_both)
    loop = asyncio.get_running_loop()
    resolved = await SystemResolver().resolve("both.example", "ip6", True, loop.time() + 5)
    assert resolved.address == ipaddress.ip_address("2001:db8::1")
    offered = await _PreferringResolver("ip6", True).resolve("both.example")
    assert [r["host"] for r in offered] == ["2001:db8::1"]


async def test_snmp_reaches_a_name_at_its_address_that_needs_no_zone(monkeypatch):
    class BothDns(LinkLocalDns):
        addresses = ("fe80::1", "::1")

    monkeypatch.setattr("exporter.clients.snmp.transport.shared_resolver", BothDns)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as agent:
        agent.bind(("::1", 0))
        port = agent.getsockname()[1]
        credentials = Credentials(2, community="public")
        async with SnmpSession("both.example", port, credentials, timeout=0.2, retries=0) as s:
            with contextlib.suppress(SnmpError):  # nothing answers: what matters is where it went
                await s.get([(1, 3, 6, 1, 2, 1, 1, 5, 0)])
        agent.settimeout(5)
        _, sender = agent.recvfrom(65535)  # the request reached ::1
        assert sender[0] == "::1"


def test_a_pinned_target_is_never_a_link_local_address_given_without_a_zone():
    # A name the allow-lists admitted by its addresses is pinned to one of them;
    # the resolver gives its link-local address no zone, so it is never that one.
    link_local, loopback = ipaddress.ip_address("fe80::1"), ipaddress.ip_address("::1")
    assert preferred_address([link_local, loopback]) == loopback
    assert preferred_address([link_local, ipaddress.ip_address("192.0.2.1")]).version == 4
    with pytest.raises(ResolveError, match="link-local"):
        preferred_address([link_local])
