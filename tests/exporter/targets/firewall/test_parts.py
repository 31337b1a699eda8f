"""The parts under ``/firewall``: defensive JSON, targets, credentials, HA and gateways."""

from __future__ import annotations

import asyncio
import base64
import ipaddress

import pytest
from prometheus_client.metrics_core import Metric

from exporter.clients.firewall_api import ApiRequest
from exporter.config import parse_config
from exporter.errors import BadRequestError
from exporter.schema.firewall import HaState
from exporter.targets.exposition import METRIC_EXPOSITION
from exporter.targets.firewall import fortigate
from exporter.targets.firewall.modules import FortiGateModule
from exporter.targets.firewall.scraper import (
    FIREWALL_STATUS,
    FirewallScraper,
    FirewallTarget,
    credential_headers,
    parse_target,
    pin_target,
)
from exporter.targets.firewall.values import Node, counter, milliseconds, percent_ratio
from exporter.targets.firewall.vendor import carp_state, first_line, gateway_state, gateway_up
from exporter.targets.kind import ScrapeJob, measure


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        (12, 12.0),
        (4.5, 4.5),
        ("1534", 1534.0),
        ("4.2 ms", 4.2),
        ("0.0 %", 0.0),
        ("12%", 12.0),
        ("1e3", 1000.0),
        ("~", None),
        ("", None),
        ("4.2 s", None),
        (True, None),
        (None, None),
        ([1], None),
        (float("nan"), None),
        ("inf", None),
    ],
)
def test_numbers_are_read_from_what_vendors_write(raw, number):
    assert Node(raw).number() == number


def test_a_node_of_the_wrong_shape_reads_as_missing():
    node = Node({"a": [{"b": "x"}], "n": 3})
    assert node.get("a", 0, "b").text() == "x"
    assert not node.get("a", 1, "b").present
    assert not node.get("a", "b").present  # a key into a list
    assert not node.get("n", 0).present  # an index into a number
    assert list(Node("text").items()) == []
    assert list(Node({"k": 1}).elements()) == []
    assert Node(7).text() == "7"
    assert Node(False).text() == ""
    assert Node(1).flag() is True
    assert Node(2).flag() is None
    assert Node("true").flag() is None


def test_units_become_the_schema_units():
    assert percent_ratio(Node("50 %")) == 0.5
    assert percent_ratio(Node(101)) is None
    assert milliseconds(Node("4.2 ms")) == pytest.approx(0.0042)
    assert milliseconds(Node(-1)) is None
    assert counter(Node(-5)) is None
    assert counter(Node("77777")) == 77777


@pytest.mark.parametrize(
    ("status", "up"),
    [
        ("none", True),  # dpinger: no alarm
        ("online", True),
        ("delay", True),
        ("loss", True),
        ("delay+loss", True),
        ("down", False),
        ("force_down", False),
        ("Offline", False),
        ("pending", None),
        ("", None),
    ],
)
def test_gateway_states(status, up):
    assert gateway_up(status) is up


@pytest.mark.parametrize(
    ("status", "up"),
    [
        ("up", True),
        ("down", False),
        ("error", None),  # FortiOS: the member takes no part in the check
        ("unknown", None),
        ("lkskdlf", None),  # a word FortiOS never wrote here
        ("", None),
    ],
)
def test_gateway_states_of_a_monitor_with_a_word_for_up(status, up):
    assert gateway_up(status, up_words={"up"}) is up


def test_a_gateway_down_with_no_reply_has_no_round_trip_but_its_loss():
    down = gateway_state("WAN2", "down", 0.0, 1.0)
    assert (down.up, down.rtt_seconds, down.loss_ratio) == (False, None, 1.0)
    measured = gateway_state("WAN2", "offline", 0.0128, 0.0)
    assert (measured.up, measured.rtt_seconds, measured.loss_ratio) == (False, 0.0128, 0.0)
    up = gateway_state("WAN", "none", 0.0, 0.0)
    assert (up.up, up.rtt_seconds, up.loss_ratio) == (True, 0.0, 0.0)


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        ([], HaState(mode="standalone", role="standalone")),
        (["MASTER", "MASTER"], HaState(mode="carp", role="primary")),
        (["backup"], HaState(mode="carp", role="secondary")),
        (["MASTER", "BACKUP"], HaState(mode="carp", role="mixed")),
        (["INIT", "MASTER"], HaState(mode="carp", role="")),
        (["DISABLED"], HaState(mode="carp", role="")),
    ],
)
def test_carp_roles(statuses, state):
    assert carp_state(statuses) == state


def test_a_comment_becomes_a_bounded_label():
    assert first_line("  allow dns\nticket 4711") == "allow dns"
    assert first_line("x" * 500) == "x" * 128
    assert first_line("   ") == ""


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("fw-hq.example.net", FirewallTarget("fw-hq.example.net")),
        ("192.0.2.1:8443", FirewallTarget("192.0.2.1", 8443)),
        ("[2001:db8::1]:10443", FirewallTarget("2001:db8::1", 10443)),
        ("2001:db8::1", FirewallTarget("2001:db8::1")),
    ],
)
def test_targets_are_host_and_optional_port(text, target):
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["https://fw", "fw/api", "u:p@fw", "fw:0", "fw:https", "a b"])
def test_anything_else_is_a_bad_request(text):
    with pytest.raises(BadRequestError):
        parse_target(text)


def test_a_pinned_target_keeps_its_name_and_prefers_ipv4():
    addresses = [ipaddress.ip_address("2001:db8::7"), ipaddress.ip_address("192.0.2.7")]
    pinned = pin_target(FirewallTarget("fw.example.net", 8443), addresses)
    assert pinned == FirewallTarget("fw.example.net", 8443, "192.0.2.7")
    assert not pinned.host_is_address


def auth(yaml: str):
    return parse_config(f"auths:\n  a: {yaml}\n", "auth.yml").auths["a"]


def test_each_scheme_travels_in_its_header():
    bearer = auth("{type: http, bearer_token: tok, allowed_targets: [any]}")
    assert bearer.scheme == "bearer"
    assert credential_headers(bearer) == {"Authorization": "Bearer tok"}
    key = auth("{type: http, api_key: k, allowed_targets: [any]}")
    assert key.scheme == "api_key"
    assert credential_headers(key) == {"X-API-Key": "k"}
    basic = auth("{type: http, username: key, password: 's:ecret', allowed_targets: [any]}")
    assert basic.scheme == "basic"
    encoded = credential_headers(basic)["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(encoded) == b"key:s:ecret"


def test_a_user_name_alone_is_no_secret_and_needs_no_list():
    alone = auth("{type: http, username: monitor}")
    assert alone.secret_kind is None
    assert alone.allowed_targets is None


class StuckClient:
    """An API client that never answers, deadline or not."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get_json(self, request: ApiRequest) -> object:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_scrape_cut_short_by_the_handler_still_says_the_firewall_is_down():
    loop = asyncio.get_running_loop()
    module = FortiGateModule(scheme="http")
    token = auth("{type: http, bearer_token: tok, allowed_targets: [any]}")
    job = ScrapeJob(
        FirewallTarget("192.0.2.1"), (("fortigate", module),), "a", token, loop.time() + 0.2
    )
    families: list[Metric] = []
    outcome = await measure(
        FirewallScraper(StuckClient()).scrape(job, families),
        families,
        deadline=job.deadline,
        status=FIREWALL_STATUS,
        exposition=METRIC_EXPOSITION,
        noun="firewall scrape",
        subject="'192.0.2.1'",
    )
    assert outcome.error == "the firewall scrape did not finish by the deadline"
    assert [(f.name, f.samples[0].value) for f in outcome.families[1:]] == [
        ("scout_firewall_up", 0.0)
    ]


def test_a_dial_up_template_named_like_a_client_is_not_taken_for_one():
    # FortiOS names clients PARENT_0, PARENT_1...; a template that happens to be
    # named so, waiting with no phase 2 and no client address, is a template.
    answer = Node(
        [
            {"name": "FCT_1", "type": "dialup", "rgwy": "0.0.0.0", "proxyid": []},
            {
                "name": "FCT_1_0",
                "type": "dialup",
                "rgwy": "203.0.113.9",
                "proxyid": [{"status": "up"}],
            },
        ]
    )
    [template] = fortigate._tunnels(answer)
    assert (template.tunnel, template.remote, template.up) == ("FCT_1", "", True)
