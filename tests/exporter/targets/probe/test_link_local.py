"""Zoned link-local targets across a real link: every kind through the real app.

The far end of a veth pair has ``fe80::5c:2`` and no other address; from here
it is reached only as ``fe80::5c:2%<this end>`` (see ``link_local_netns``).
Each module's allow-list is ``fe80::/10``, so the zone must also get through
the lists' checks, which judge the address without it.
"""

from __future__ import annotations

import json
import os
import shutil
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import create_app
from exporter.config import parse_config
from exporter.live import Settings
from tests.peers.firewall_api import FORTIGATE_TOKEN

from .conftest import (
    LINK_LOCAL_THERE,
    SNMP_PORT,
    LinkLocal,
    _add_veth,
    _create,
    _require_netns,
    _run,
)

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


def config(link: LinkLocal) -> str:
    # The echo server answers {"host": <Host header>, ...}: the body check passes
    # only if the request went out with the address, and no zone, in Host.
    host = f'"host": "\\[{LINK_LOCAL_THERE}\\]:\\d+"'
    return f"""
modules:
  tcp_ll: {{prober: tcp, count: 2, interval_seconds: 0.05, allowed_targets: ["fe80::/10"]}}
  tcp_elsewhere: {{prober: tcp, count: 1, allowed_targets: ["2001:db8::/32"]}}
  tls_ll:
    prober: tcp
    tls: true
    tls_ca_file: {link.ca_file}
    allowed_targets: ["fe80::/10"]
  icmp_ll: {{prober: icmp, count: 2, interval_seconds: 0.05, allowed_targets: ["fe80::/10"]}}
  http_ll:
    prober: http
    allowed_targets: ["fe80::/10"]
    fail_if_body_not_matches_regexp: ['{host}']
  https_ll:
    prober: http
    tls_ca_file: {link.ca_file}
    allowed_targets: ["fe80::/10"]
    fail_if_body_not_matches_regexp: ['{host}']
  fgt_ll: {{prober: fortigate, scheme: http}}
  uptime: {{prober: snmp, metrics: [{{name: sysUpTime, oid: 1.3.6.1.2.1.1.3}}]}}
auths:
  fgt: {{type: http, bearer_token: {FORTIGATE_TOKEN}, allowed_targets: ["fe80::/10"]}}
  snmp_ll: {{type: snmp, community: public, allowed_targets: ["fe80::/10"]}}
"""


@pytest.fixture
async def client(aiohttp_client, link_local_netns):
    settings = Settings(enabled_collectors=frozenset())
    app = create_app(settings, parse_config(config(link_local_netns), "link-local.yml"))
    return await aiohttp_client(app)


async def scrape(client, path: str, **params: str) -> dict[str, float]:
    response = await client.get(
        path, params=params, headers={"X-Prometheus-Scrape-Timeout-Seconds": "5"}
    )
    text = await response.text()
    assert response.status == 200, text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_tcp_connects_through_the_zone(client, link_local_netns):
    target = f"[{link_local_netns.zoned}]:{link_local_netns.ports['echo']}"
    values = await scrape(client, "/probe", module="tcp_ll", target=target)
    assert values["scout_probe_success"] == 1
    assert values["scout_probe_packets_received"] == 2
    assert values["scout_probe_ip_protocol"] == 6


async def test_tls_over_tcp_checks_the_certificate_against_the_address(client, link_local_netns):
    target = f"[{link_local_netns.zoned}]:{link_local_netns.ports['tls']}"
    values = await scrape(client, "/probe", module="tls_ll", target=target)
    assert values["scout_probe_success"] == 1
    assert "scout_probe_tls_handshake_seconds" in values


async def test_icmp_echoes_through_the_zone(client, link_local_netns):
    values = await scrape(client, "/probe", module="icmp_ll", target=link_local_netns.zoned)
    assert values["scout_probe_success"] == 1
    assert values["scout_probe_packets_received"] == 2


@pytest.mark.parametrize(
    "form",
    [
        "http://[{address}%{zone}]:{port}/health",
        "http://[{address}%25{zone}]:{port}/health",  # RFC 6874, as blackbox_exporter takes it
        "[{address}%25{zone}]:{port}/health",
    ],
)
async def test_http_requests_through_the_zone_without_sending_it(client, link_local_netns, form):
    target = form.format(
        address=LINK_LOCAL_THERE,
        zone=link_local_netns.netns.host_if,
        port=link_local_netns.ports["echo"],
    )
    values = await scrape(client, "/probe", module="http_ll", target=target)
    assert values["scout_probe_http_status_code"] == 200
    assert values["scout_probe_success"] == 1  # the Host header named the address alone


async def test_a_redirect_to_a_zoned_url_is_followed(client, link_local_netns):
    """The Location writes the zone as RFC 6874 does; the hop is judged like the first."""
    port = link_local_netns.ports["echo"]
    final = f"http://[{LINK_LOCAL_THERE}%25{link_local_netns.netns.host_if}]:{port}/final"
    target = f"http://[{link_local_netns.zoned}]:{port}/redirect?to={quote(final, safe='')}"
    values = await scrape(client, "/probe", module="http_ll", target=target)
    assert values["scout_probe_http_redirects"] == 1
    assert values["scout_probe_success"] == 1


async def test_https_checks_the_certificate_against_the_address(client, link_local_netns):
    target = f"https://[{link_local_netns.zoned}]:{link_local_netns.ports['tls']}/"
    values = await scrape(client, "/probe", module="https_ll", target=target)
    assert values["scout_probe_success"] == 1
    assert "scout_probe_tls_cert_expiry_timestamp_seconds" in values


async def test_a_zone_gets_no_target_past_another_list(client, link_local_netns):
    target = f"[{link_local_netns.zoned}]:{link_local_netns.ports['echo']}"
    response = await client.get("/probe", params={"module": "tcp_elsewhere", "target": target})
    assert response.status == 403


async def test_a_firewall_api_is_read_through_the_zone(client, link_local_netns):
    target = f"[{link_local_netns.zoned}]:{link_local_netns.ports['fortigate']}"
    values = await scrape(client, "/firewall", module="fgt_ll", auth="fgt", target=target)
    assert values["scout_firewall_up"] == 1


async def test_snmp_reads_the_agent_through_the_zone(client, link_local_netns):
    target = f"[{link_local_netns.zoned}]:{SNMP_PORT}"
    values = await scrape(client, "/snmp", module="uptime", auth="snmp_ll", target=target)
    assert values["scout_snmp_module_success"] == 1
    assert values["sysUpTime"] > 0


async def test_the_host_header_is_the_address_alone(link_local_netns):
    """What the servers see, read directly: RFC 6874 keeps the zone on this host."""
    from exporter.clients.probe_net import AiohttpFetcher, HttpRequest, tls_context
    from exporter.targets.probe.http import target_url

    port = link_local_netns.ports["echo"]
    request = HttpRequest(
        url=target_url(f"http://[{LINK_LOCAL_THERE}%25{link_local_netns.netns.host_if}]:{port}/"),
        method="GET",
        headers={},
        follow_redirects=True,
        tls=tls_context(True),
        preferred_ip_protocol="ip6",
        ip_protocol_fallback=True,
    )
    reply = await AiohttpFetcher().fetch(request)
    assert json.loads(reply.body) == {"host": f"[{LINK_LOCAL_THERE}]:{port}", "path": "/"}


# --- the fixture itself ---------------------------------------------------------------


def test_the_namespace_tests_skip_saying_sysctl_is_missing(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the check for sysctl comes after the one for root")
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "sysctl" else real(tool))
    with pytest.raises(pytest.skip.Exception, match=r"need sysctl \(procps\)"):
        _require_netns()


@pytest.mark.parametrize("left", ["namespace and link", "interface"])
def test_what_a_crashed_run_left_does_not_stop_the_next(left):
    _require_netns()
    tag = f"{os.getpid()}"
    name, host_if, ns_if = f"scoutzone-{tag}-left", f"szl{tag}h"[-15:], f"szl{tag}n"[-15:]
    try:
        if left == "interface":
            # The namespace went, the link here stayed (its peer, here too, with it).
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        else:
            crashed = _create(name)
            crashed.host_if, crashed.ns_if = host_if, ns_if
            _add_veth(crashed)  # and the run dies here: namespace and link stay behind
        try:
            again = _create(name)
        except pytest.skip.Exception as skipped:  # a leftover must not turn into a skip
            pytest.fail(f"what the crashed run left stopped the next: {skipped}")
        again.host_if, again.ns_if = host_if, ns_if
        _add_veth(again)
        assert again.exec("ip", "link", "show", ns_if).returncode == 0
    finally:
        _run("ip", "netns", "del", name, check=False)
        _run("ip", "link", "del", host_if, check=False)
