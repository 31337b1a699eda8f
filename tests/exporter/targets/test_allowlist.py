"""Allow-list entries and matching: networks, names, spellings that must not slip through."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import pytest

from exporter.clients.probe_net import Resolved, ResolveError
from exporter.config import parse_config
from exporter.errors import BadRequestError, ConfigError
from exporter.targets import allowlist
from exporter.targets.allowlist import (
    AddressNotAllowedError,
    AllowList,
    TargetRefusedError,
    admit,
    canonical_host,
)
from exporter.targets.probe.icmp import IcmpModule, IcmpProber
from exporter.targets.refusals import LOG_BURST, LOG_EVERY_SECONDS, TargetRefusals

LIST = AllowList.parse(
    [
        "10.0.0.0/8",
        "192.0.2.7",
        "2001:db8:100::/48",
        "*.core.example.net",
        "edge1.example.net",
        "*.Bücher.example",
    ]
)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("text", "admitted"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("2001:db8:100::1", True),
        ("2001:db8:100:ffff::1", True),
        ("2001:db8:101::1", False),
        # IPv4-mapped IPv6 reaches the IPv4 host, so it is judged as that host.
        ("::ffff:10.1.2.3", True),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_addresses_are_judged_by_the_networks(text, admitted):
    address = canonical_host(text)
    assert not isinstance(address, str)
    assert LIST.admits_address(address) is admitted


@pytest.mark.parametrize(
    ("name", "admitted"),
    [
        ("sw1.core.example.net", True),
        ("a.b.core.example.net", True),  # any depth below
        ("core.example.net", False),  # not the zone itself
        ("evilcore.example.net", False),  # a label boundary, not a string suffix
        ("sw1.core.example.net.evil.org", False),
        ("edge1.example.net", True),
        ("x.edge1.example.net", False),  # an exact name has nothing below it
        ("edge2.example.net", False),
        ("SW1.Core.Example.NET", True),  # case-insensitive
        ("edge1.example.net.", True),  # trailing dot
        ("shop.bücher.example", True),  # IDN, as its xn-- form
        ("shop.xn--bcher-kva.example", True),
        ("shop.BÜCHER.example", True),
    ],
)
def test_names_are_judged_by_the_patterns(name, admitted):
    canonical = canonical_host(name)
    assert isinstance(canonical, str)
    assert LIST.admits_name(canonical) is admitted


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("[2001:db8::1]", "2001:db8::1"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("2130706433", "127.0.0.1"),  # what the C resolver makes of these
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
    ],
)
def test_other_spellings_of_an_address_become_the_address(text, address):
    assert canonical_host(text) == ip(address)


@pytest.mark.parametrize("text", ["2130706433", "0x7f.1", "127.1", "0177.0.0.1", "[::1]"])
def test_numeric_spellings_do_not_pass_as_names(text):
    # Even with a pattern for every name, a loopback spelling is judged as an address.
    names_only = AllowList.parse(["*.example.net", "localhost"])
    assert not names_only.admits(text, ip("127.0.0.1"))


def test_a_numeric_spelling_inet_aton_refuses_is_not_a_host():
    with pytest.raises(ValueError, match="neither an IP address nor a host name"):
        canonical_host("999.1.1.1")


@pytest.mark.parametrize("text", ["a b", "evil.example/x", "a..b", "-x.example", "*.example"])
def test_non_hosts_are_errors(text):
    with pytest.raises(ValueError, match="host name"):
        canonical_host(text)


def test_connect_time_check_takes_the_name_or_the_address():
    assert LIST.admits("sw9.core.example.net", ip("203.0.113.9"))  # the name is listed
    assert LIST.admits("unlisted.example.org", ip("10.9.9.9"))  # the address is
    assert not LIST.admits("unlisted.example.org", ip("203.0.113.9"))
    assert not LIST.admits("10.0.0.1", ip("203.0.113.9"))  # what was connected to counts
    with pytest.raises(AddressNotAllowedError, match=r"203\.0\.113\.9 \(for x\.org\)"):
        LIST.check("x.org", ip("203.0.113.9"))


def test_any_admits_everything_and_shows_as_written():
    everything = AllowList.parse(["any"])
    assert everything.admits("anything.example", ip("203.0.113.1"))
    assert everything.entries() == ["any"]
    assert LIST.entries() == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "2001:db8:100::/48",
        "*.core.example.net",
        "edge1.example.net",
        "*.xn--bcher-kva.example",
    ]


def test_a_mapped_network_entry_is_an_ipv4_network():
    mapped = AllowList.parse(["::ffff:10.1.0.0/112"])
    assert mapped.entries() == ["10.1.0.0/16"]
    assert mapped.admits_address(ip("10.1.2.3"))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "an empty list admits no target"),
        (["any", "10.0.0.0/8"], "'any' admits every target, so it must stand alone"),
        (["10.0.0.1/8"], r"'10\.0\.0\.1/8' has host bits set \(did you mean 10\.0\.0\.0/8\?\)"),
        (["10.0.0.0/33"], "is not a network"),
        (["*"], r"'\*' alone is no pattern: 'any' admits every target"),
        (["a b"], "'a b' is not a network, an address or a host name"),
        (["a.*.example.net"], "'\\*' may only be the whole first label"),
        (["**.example.net"], "'\\*' may only be the whole first label"),
        (["*.1"], "ends in a number"),
        (["0x7f.1"], "ends in a number"),
        (["host.0x10"], "ends in a number"),
    ],
)
def test_bad_entries_are_named(entries, message):
    with pytest.raises(ValueError, match=message):
        AllowList.parse(entries)


def answers(*addresses: str):
    async def fake_lookup(host: str, deadline: float | None = None):
        return [ip(a) for a in addresses]

    return fake_lookup


async def test_a_name_passes_only_if_every_address_is_listed(monkeypatch):
    lists = [("modules.api", LIST)]
    monkeypatch.setattr(allowlist, "lookup", answers("10.0.0.5", "2001:db8:100::5"))
    admission = await admit("api.example.org", lists)
    assert admission.addresses == (ip("10.0.0.5"), ip("2001:db8:100::5"))
    monkeypatch.setattr(allowlist, "lookup", answers("10.0.0.5", "203.0.113.5"))
    with pytest.raises(TargetRefusedError) as refused:
        await admit("api.example.org", lists)
    assert refused.value.http_status == 403
    assert refused.value.allow_list == "modules.api"
    assert str(refused.value) == (
        "target 'api.example.org' is not allowed by modules.api.allowed_targets: "
        "it resolves to 203.0.113.5, which is not listed"
    )


async def test_a_listed_name_is_not_looked_up(monkeypatch):
    async def no_lookup(host: str, deadline: float | None = None):
        raise AssertionError("looked up")

    monkeypatch.setattr(allowlist, "lookup", no_lookup)
    admission = await admit("SW1.core.example.net.", [("auths.core", LIST)])
    assert admission == allowlist.Admission("sw1.core.example.net")


async def test_every_list_must_admit(monkeypatch):
    monkeypatch.setattr(allowlist, "lookup", answers("10.0.0.5"))
    lists = [("modules.if_mib", LIST), ("auths.core", AllowList.parse(["192.0.2.0/24"]))]
    with pytest.raises(TargetRefusedError) as refused:
        await admit("10.0.0.5", lists)
    assert refused.value.allow_list == "auths.core"
    assert (await admit("sw1.core.example.net", lists[:1])).addresses == ()


async def test_an_unresolvable_name_is_a_resolve_error_and_a_non_host_a_bad_request():
    with pytest.raises(ResolveError):
        await admit("no-such-host.invalid", [("modules.api", LIST)])
    with pytest.raises(BadRequestError, match="not a valid host name"):
        await admit("a b", [("modules.api", LIST)])


def test_refusals_are_counted_and_logged_once_per_host_per_period(caplog):
    now = [1000.0]
    refusals = TargetRefusals(clock=lambda: now[0])

    def refusal(host: str) -> TargetRefusedError:
        return TargetRefusedError(f"{host} no", allow_list="modules.api", host=host)

    caplog.set_level(logging.WARNING, logger="exporter.targets.refusals")
    for _ in range(3):
        refusals.record("probe", refusal("evil.example"))
    refusals.record("probe", refusal("other.example"))
    assert [r.target for r in caplog.records] == ["evil.example", "other.example"]
    now[0] += LOG_EVERY_SECONDS
    refusals.record("probe", refusal("evil.example"))
    assert len(caplog.records) == 3
    [family] = refusals.families()
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        (
            "scout_exporter_target_refused_total",
            {"endpoint": "probe", "allow_list": "modules.api"},
            5.0,
        )
    ]


class OneAddress:
    """A resolver that answers every name with one address."""

    def __init__(self, address: str) -> None:
        self.address = ip(address)

    async def resolve(self, host, preferred, fallback, deadline):
        return Resolved(self.address, 0.001)


class NoPings:
    """A pinger that must not be used."""

    async def ping(self, address, **settings):
        raise AssertionError(f"pinged {address}")


async def test_the_icmp_prober_checks_the_address_it_resolved():
    loop = asyncio.get_running_loop()
    prober = IcmpProber(pinger=NoPings(), resolver=OneAddress("203.0.113.9"))
    module = IcmpModule(allowed_targets=["198.51.100.0/24"])
    result = await prober.probe("rebound.test", module, loop.time() + 2)
    assert not result.success
    assert result.error == (
        "203.0.113.9 (for rebound.test) is not in the module's allowed_targets; not connecting"
    )


def test_a_sweep_of_many_hosts_logs_a_burst_then_says_how_many_it_left_out(caplog):
    now = [1000.0]
    refusals = TargetRefusals(clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="exporter.targets.refusals")
    for i in range(LOG_BURST + 5):
        host = f"10.9.0.{i}"
        refusals.record("snmp", TargetRefusedError("no", allow_list="auths.core", host=host))
    assert len(caplog.records) == LOG_BURST
    now[0] += 60.0
    refusals.record("snmp", TargetRefusedError("no", allow_list="auths.core", host="10.9.1.1"))
    assert caplog.records[-1].getMessage() == "refused: no (5 more refusals were not logged)"
    [family] = refusals.families()
    assert family.samples[0].value == LOG_BURST + 6


def test_an_entry_yaml_read_as_a_number_is_named():
    text = "modules: {ping: {prober: icmp, allowed_targets: [1:2:3:4:5:6:7:8]}}"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.yml")
    assert str(caught.value) == (
        "x.yml:1: modules.ping.allowed_targets: entry 2895057742028 is not text: put it in quotes"
    )
