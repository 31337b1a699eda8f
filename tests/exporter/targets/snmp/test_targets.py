"""Target parsing for /snmp: what a person may type, and clear errors for the rest."""

from __future__ import annotations

import pytest

from exporter.errors import BadRequestError
from exporter.targets.snmp.params import parse_target
from exporter.targets.snmp.scraper import Target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", Target("192.0.2.1", 161)),
        ("192.0.2.1:1161", Target("192.0.2.1", 1161)),
        ("switch-01.example.net", Target("switch-01.example.net", 161)),
        ("udp://core1:162", Target("core1", 162)),
        ("[2001:db8::1]:1161", Target("2001:db8::1", 1161)),
        ("2001:db8::1", Target("2001:db8::1", 161)),
        ("[::1]", Target("::1", 161)),
    ],
)
def test_valid_targets(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tcp://core1:161", "unsupported transport 'tcp' in target: SNMP runs over udp"),
        ("core1:0", "invalid port in target 'core1:0'"),
        ("core1:99999", "invalid port in target 'core1:99999'"),
        ("core1:abc", "invalid port in target 'core1:abc'"),
        ("core 1", "invalid target 'core 1': expected host or host:port"),
        ("a/b", "invalid target 'a/b': expected host or host:port"),
        ("[2001:db8::1]x", "invalid target '[2001:db8::1]x': expected [ipv6]:port"),
        ("2001:db8::zz", "invalid target '2001:db8::zz'"),
    ],
)
def test_invalid_targets(text, message):
    with pytest.raises(BadRequestError) as caught:
        parse_target(text)
    assert str(caught.value).startswith(message)
