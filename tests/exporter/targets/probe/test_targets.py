"""Targets as Prometheus passes them: parsed, or refused with a message, never raised."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from exporter.clients.probe_net import (
    HostPort,
    ResolveError,
    TargetError,
    pick_address,
    split_host_port,
)
from exporter.targets.probe.http import HttpModule, target_url
from exporter.targets.probe.icmp import IcmpModule
from exporter.targets.probe.registry import run_probe
from exporter.targets.probe.tcp import TcpModule

from .conftest import values_of


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("example.com", HostPort("example.com", None)),
        ("example.com:443", HostPort("example.com", 443)),
        ("10.0.0.1", HostPort("10.0.0.1", None)),
        ("10.0.0.1:22", HostPort("10.0.0.1", 22)),
        ("[2001:db8::1]:443", HostPort("2001:db8::1", 443)),
        ("[2001:db8::1]", HostPort("2001:db8::1", None)),
        ("2001:db8::1", HostPort("2001:db8::1", None)),
        ("  host_name.local.  ", HostPort("host_name.local.", None)),
    ],
)
def test_targets_parse(target, expected):
    assert split_host_port(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "empty target"),
        ("host:0", "target 'host:0': port 0 is out of range 1-65535"),
        ("host:65536", "target 'host:65536': port 65536 is out of range 1-65535"),
        ("host:http", "target 'host:http': port 'http' is not a number"),
        ("host:", "target 'host:': port '' is not a number"),
        (":80", "target ':80' has no host"),
        ("a b", "target 'a b': 'a b' is not a host name or IP address"),
        ("host/path", "target 'host/path': 'host/path' is not a host name or IP address"),
        ("[2001:db8::1", "target '[2001:db8::1' has '[' without a closing ']'"),
        ("[10.0.0.1]:80", "target '[10.0.0.1]:80': '10.0.0.1' in brackets is not an IPv6 address"),
        ("[::1]80", "target '[::1]80': expected ':port' after ']'"),
    ],
)
def test_garbage_targets_are_refused_with_a_reason(target, message):
    with pytest.raises(TargetError) as caught:
        split_host_port(target)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("target", "url"),
    [
        ("example.com", "http://example.com/"),
        ("example.com:8080/health", "http://example.com:8080/health"),
        ("https://example.com/x?y=1", "https://example.com/x?y=1"),
        ("[::1]:8080", "http://[::1]:8080/"),
    ],
)
def test_http_targets_become_urls(target, url):
    assert str(target_url(target)) == url


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ftp://example.com/", "target 'ftp://example.com/': scheme 'ftp' is not http or https"),
        ("http://", "target 'http://' has no host"),
        ("http://a b/", "target 'http://a b/': 'a b' is not a host name or IP address"),
        ("http://host:0/", "target 'http://host:0/': port 0 is out of range 1-65535"),
        ("http://host:70000/", "target 'http://host:70000/' is not a valid URL"),
    ],
)
def test_bad_http_targets_are_refused(target, message):
    with pytest.raises(TargetError) as caught:
        target_url(target)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("module", "target", "error"),
    [
        (IcmpModule(), "no such host", "'no such host' is not a host name or IP address"),
        (IcmpModule(), "127.0.0.1:80", "an ICMP target takes no port"),
        (TcpModule(), "127.0.0.1", "a TCP target needs a port (host:port)"),
        (TcpModule(), "127.0.0.1:99999", "port 99999 is out of range 1-65535"),
        (HttpModule(), "gopher://x/", "scheme 'gopher' is not http or https"),
    ],
)
async def test_probe_of_a_garbage_target_fails_without_raising(module, target, error):
    loop = asyncio.get_running_loop()
    # A deadline far off, so a probe that tried the target anyway and waited for
    # it is told from one refused at once (the ceiling: halfway, for slow machines).
    result = await run_probe(target, module, loop.time() + 20)
    assert not result.success
    assert result.error is not None
    assert error in result.error
    values = values_of(result.families)
    assert values["scout_probe_success"] == 0
    assert values["scout_probe_duration_seconds"] < 10
    assert "scout_probe_packets_sent" not in values


@pytest.mark.parametrize("module", [IcmpModule(), TcpModule(), HttpModule()])
async def test_unresolvable_host_fails_with_the_resolver_message(module):
    loop = asyncio.get_running_loop()
    target = "no-such-host.invalid" + (":443" if isinstance(module, TcpModule) else "")
    result = await run_probe(target, module, loop.time() + 5)
    assert not result.success
    assert result.error is not None
    assert "cannot resolve 'no-such-host.invalid'" in result.error
    assert values_of(result.families)["scout_probe_success"] == 0


async def test_bad_targets_do_not_affect_probes_beside_them(tcp_server_factory):
    server = await tcp_server_factory()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    module = TcpModule(count=1)
    results = await asyncio.gather(
        run_probe("not a host:1", module, deadline),
        run_probe(f"127.0.0.1:{server.port}", module, deadline),
        run_probe("no-such-host.invalid:1", module, deadline),
        run_probe(f"localhost:{server.port}", module, deadline),
    )
    assert [r.success for r in results] == [False, True, False, True]
    assert [r.error is None for r in results] == [False, True, False, True]


V4 = ipaddress.ip_address("192.0.2.1")
V6 = ipaddress.ip_address("2001:db8::1")


def test_preferred_family_first_then_fallback():
    assert pick_address("h", [V6, V4], "ip4", fallback=True) == V4
    assert pick_address("h", [V4, V6], "ip6", fallback=True) == V6
    assert pick_address("h", [V4], "ip6", fallback=True) == V4
    with pytest.raises(ResolveError) as caught:
        pick_address("h", [V4], "ip6", fallback=False)
    assert str(caught.value) == "'h' has no IPv6 address, and ip_protocol_fallback is off"


async def test_ip_family_preference_is_applied_to_names():
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo("localhost", None)
    versions = {ipaddress.ip_address(info[4][0]).version for info in infos}
    for preferred, fallback in (("ip4", True), ("ip6", True), ("ip4", False), ("ip6", False)):
        module = IcmpModule(count=1, preferred_ip_protocol=preferred, ip_protocol_fallback=fallback)
        result = await run_probe("localhost", module, loop.time() + 5)
        want = 4 if preferred == "ip4" else 6
        if want in versions or fallback:
            expected = want if want in versions else next(iter(versions))
            assert values_of(result.families)["scout_probe_ip_protocol"] == expected
        else:
            assert result.error == (
                f"'localhost' has no IPv{want} address, and ip_protocol_fallback is off"
            )
