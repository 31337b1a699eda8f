"""Each vendor's API, replayed by a fake on 127.0.0.1, scraped through the real ``/firewall``."""

from __future__ import annotations

import pytest

from exporter.schema.firewall import SPECS
from tests.exporter.targets.firewall.exposition import families, samples, scrape, value
from tests.peers.firewall_api import CREDENTIALS
from tests.peers.firewall_payloads import RULE_A, RULE_B


async def test_fortigate_maps_to_the_schema(start_fake, scout):
    fake = await start_fake("fortigate")
    client = await scout()
    status, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert status == 200
    assert value(text, "scout_firewall_up") == 1
    info = samples(text, "scout_firewall_info")
    assert info == {
        (
            ("firmware", "v7.4.4"),
            ("hostname", "fw-hq"),
            ("model", "FGT100F"),
            ("vendor", "fortinet"),
        ): 1.0
    }
    # Sessions and their limit come from the VDOM's resource, not the global usage.
    assert value(text, "scout_firewall_sessions") == 51200
    assert value(text, "scout_firewall_sessions_limit") == 2_000_000
    assert value(text, "scout_firewall_session_setup_rate") == 120
    assert value(text, "scout_firewall_cpu_ratio") == pytest.approx(0.23)
    assert value(text, "scout_firewall_memory_ratio") == pytest.approx(0.61)
    assert "scout_firewall_sessions_created" not in families(text)
    # Named rules by default: policy 1 (a name), 2 (a comment), 0 (the implicit deny).
    hits = samples(text, "scout_firewall_rule_hits_total")
    assert {
        dict(k)["rule_id"]: (dict(k)["rule"], dict(k)["action"], v) for k, v in hits.items()
    } == {
        "0": ("implicit-deny", "deny", 1200.0),
        "1": ("web-out", "accept", 310.0),
        "2": ("dns to resolvers", "accept", 25.0),
    }
    assert value(text, "scout_firewall_rule_bytes_total", rule_id="1") == 900_000
    assert value(text, "scout_firewall_rule_packets_total", rule_id="2") == 50
    assert value(text, "scout_firewall_rules_dropped_total") == 0
    assert value(text, "scout_firewall_interface_up", interface="wan1") == 1
    assert value(text, "scout_firewall_interface_up", interface="port2") == 0
    assert value(text, "scout_firewall_interface_receive_bytes_total", interface="wan1") == 77e9
    assert value(text, "scout_firewall_interface_transmit_bytes_total", interface="wan1") == 12e9
    assert value(text, "scout_firewall_vpn_tunnel_up", tunnel="branch1") == 1
    assert value(text, "scout_firewall_vpn_tunnel_up", tunnel="branch2", remote="203.0.113.9") == 0
    assert (
        value(text, "scout_firewall_vpn_tunnel_receive_bytes_total", tunnel="branch1", type="ipsec")
        == 3_000_000
    )
    assert value(text, "scout_firewall_vpn_tunnel_transmit_bytes_total", tunnel="branch1") == 4e6
    # SD-WAN health checks are the gateways; a disabled member has nothing to say.
    assert value(text, "scout_firewall_gateway_up", gateway="internet", interface="wan1") == 1
    assert value(text, "scout_firewall_gateway_up", gateway="internet", interface="wan2") == 0
    assert value(text, "scout_firewall_gateway_rtt_seconds", interface="wan1") == pytest.approx(
        0.0042
    )
    assert value(text, "scout_firewall_gateway_loss_ratio", interface="wan1") == pytest.approx(
        0.005
    )
    assert value(text, "scout_firewall_gateway_up", interface="lte") is None
    assert samples(text, "scout_firewall_ha_info") == {(("mode", "a-p"), ("role", "primary")): 1}
    assert value(text, "scout_firewall_ha_primary") == 1
    assert value(text, "scout_firewall_ha_in_sync") == 1
    assert value(text, "scout_firewall_ha_members") == 2
    # Every family is the schema's, with the schema's help text.
    for family in families(text) - {"scout_firewall_scrape_duration_seconds"}:
        assert family in SPECS, family
    # The token went as a bearer header, the VDOM as a query parameter where it belongs.
    header, expected = CREDENTIALS["fortigate"]
    assert all(seen.headers[header] == expected for seen in fake.requests)
    by_path = {seen.path: seen.query for seen in fake.requests}
    assert by_path["/api/v2/monitor/firewall/policy"]["vdom"] == "root"
    assert by_path["/api/v2/monitor/system/resource/usage"]["scope"] == "global"
    assert "vdom" not in by_path["/api/v2/monitor/system/status"]


async def test_fortigate_reads_the_module_vdom(start_fake, scout):
    fake = await start_fake("fortigate")
    client = await scout()
    await scrape(client, "fortigate_branch", f"127.0.0.1:{fake.port}", "fgt")
    queried = {seen.path: seen.query.get("vdom") for seen in fake.requests}
    assert queried["/api/v2/monitor/vpn/ipsec"] == "branch"
    assert queried["/api/v2/cmdb/firewall/policy"] == "branch"


async def test_fortigate_secondary_out_of_sync(start_fake, scout):
    fake = await start_fake("fortigate")
    peers = fake.table["/api/v2/monitor/system/ha-peer"]["results"]
    peers[0]["primary"], peers[1]["primary"] = False, True
    sums = fake.table["/api/v2/monitor/system/ha-checksums"]["results"]
    sums[1]["checksum"]["all"] = "changed-on-the-peer"
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert samples(text, "scout_firewall_ha_info") == {(("mode", "a-p"), ("role", "secondary")): 1}
    assert value(text, "scout_firewall_ha_primary") == 0
    assert value(text, "scout_firewall_ha_in_sync") == 0


async def test_fortigate_standalone(start_fake, scout):
    fake = await start_fake("fortigate")
    fake.table["/api/v2/cmdb/system/ha"]["results"]["mode"] = "standalone"
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert samples(text, "scout_firewall_ha_info") == {
        (("mode", "standalone"), ("role", "standalone")): 1
    }
    assert value(text, "scout_firewall_ha_members") == 1
    assert value(text, "scout_firewall_ha_in_sync") is None


async def test_opnsense_maps_to_the_schema(start_fake, scout):
    fake = await start_fake("opnsense")
    client = await scout()
    status, text = await scrape(client, "opnsense_http", f"127.0.0.1:{fake.port}", "opn")
    assert status == 200
    assert value(text, "scout_firewall_up") == 1
    assert samples(text, "scout_firewall_info") == {
        (
            ("firmware", "24.7.1_1"),
            ("hostname", "opnsense.lab.example"),
            ("model", ""),
            ("vendor", "opnsense"),
        ): 1.0
    }
    assert value(text, "scout_firewall_sessions") == 1534
    assert value(text, "scout_firewall_sessions_limit") == 800_000
    assert value(text, "scout_firewall_sessions_created_total") == 77777
    assert value(text, "scout_firewall_cpu_ratio") == pytest.approx(0.036)
    assert value(text, "scout_firewall_memory_ratio") == pytest.approx(0.25)
    # Assigned interfaces by description, with the totals of their link row.
    assert value(text, "scout_firewall_interface_up", interface="WAN") == 1
    assert value(text, "scout_firewall_interface_up", interface="LAN") == 0
    assert value(text, "scout_firewall_interface_receive_bytes_total", interface="WAN") == 123456789
    assert value(text, "scout_firewall_interface_transmit_bytes_total", interface="LAN") == 6
    assert value(text, "scout_firewall_interface_up", interface="Unassigned Interface") is None
    assert value(text, "scout_firewall_gateway_up", gateway="WAN_DHCP") == 1
    assert value(text, "scout_firewall_gateway_up", gateway="WAN2_GW") == 0
    assert value(text, "scout_firewall_gateway_rtt_seconds", gateway="WAN_DHCP") == pytest.approx(
        0.0042
    )
    assert value(text, "scout_firewall_gateway_loss_ratio", gateway="WAN2_GW") == 1.0
    # "~" is "not measured": no series, not a zero.
    assert value(text, "scout_firewall_gateway_rtt_seconds", gateway="VPN_GW") is None
    assert value(text, "scout_firewall_gateway_up", gateway="VPN_GW") == 1
    assert value(text, "scout_firewall_vpn_tunnel_up", tunnel="branch-a") == 1
    assert value(text, "scout_firewall_vpn_tunnel_up", tunnel="con2", remote="203.0.113.9") == 0
    assert value(text, "scout_firewall_rule_packets_total", rule_id=RULE_A) == 4000
    assert value(text, "scout_firewall_rule_bytes_total", rule="Allow LAN to any") == 3e6
    # An undescribed rule has no series by default; pf counts no hits.
    assert value(text, "scout_firewall_rule_packets_total", rule_id=RULE_B) is None
    assert "scout_firewall_rule_hits" not in families(text)
    assert samples(text, "scout_firewall_ha_info") == {(("mode", "carp"), ("role", "primary")): 1}
    header, expected = CREDENTIALS["opnsense"]
    assert all(seen.headers[header] == expected for seen in fake.requests)


async def test_pfsense_maps_to_the_schema(start_fake, scout):
    fake = await start_fake("pfsense")
    client = await scout()
    status, text = await scrape(client, "pfsense_http", f"127.0.0.1:{fake.port}", "pf")
    assert status == 200
    assert value(text, "scout_firewall_up") == 1
    assert samples(text, "scout_firewall_info") == {
        (
            ("firmware", "2.7.2-RELEASE"),
            ("hostname", "pfsense.branch.example"),
            ("model", "Netgate 4200"),
            ("vendor", "pfsense"),
        ): 1.0
    }
    assert value(text, "scout_firewall_sessions") == 2345
    assert value(text, "scout_firewall_sessions_limit") == 400_000
    assert value(text, "scout_firewall_cpu_ratio") == pytest.approx(0.0525)
    assert value(text, "scout_firewall_memory_ratio") == pytest.approx(0.34)
    assert value(text, "scout_firewall_interface_up", interface="WAN") == 1
    assert value(text, "scout_firewall_interface_up", interface="LAN") == 0
    assert value(text, "scout_firewall_interface_receive_bytes_total", interface="WAN") == 111_000
    assert value(text, "scout_firewall_gateway_up", gateway="WAN_DHCP") == 1
    assert value(text, "scout_firewall_gateway_up", gateway="WAN2_DHCP") == 0
    assert value(text, "scout_firewall_gateway_rtt_seconds", gateway="WAN_DHCP") == pytest.approx(
        0.0035
    )
    assert value(text, "scout_firewall_gateway_loss_ratio", gateway="WAN2_DHCP") == 1.0
    assert value(text, "scout_firewall_vpn_tunnel_up", tunnel="con1000") == 1
    assert value(text, "scout_firewall_vpn_tunnel_receive_bytes_total", tunnel="con1000") == 1005
    assert value(text, "scout_firewall_vpn_tunnel_transmit_bytes_total", tunnel="con1000") == 2006
    assert samples(text, "scout_firewall_ha_info") == {(("mode", "carp"), ("role", "secondary")): 1}
    assert value(text, "scout_firewall_ha_primary") == 0
    # No rule counters in the package's API: no rule families, no budget counter.
    assert not {"scout_firewall_rule_packets", "scout_firewall_rules_dropped"} & families(text)
    header, expected = CREDENTIALS["pfsense"]
    assert all(seen.headers[header] == expected for seen in fake.requests)
    assert all("Authorization" not in seen.headers for seen in fake.requests)


async def test_rule_budget_counts_what_it_leaves_out_per_target(start_fake, scout):
    fake = await start_fake("fortigate")
    other = await start_fake("fortigate")
    client = await scout()
    target = f"127.0.0.1:{fake.port}"
    _, first = await scrape(client, "fortigate_budget", target, "fgt")
    # Three named rules, one series allowed: the first in policy order stays.
    assert set(samples(first, "scout_firewall_rule_packets_total")) == {
        (
            ("action", "deny"),
            ("chain", ""),
            ("rule", "implicit-deny"),
            ("rule_id", "0"),
            ("table", ""),
        )
    }
    assert value(first, "scout_firewall_rules_dropped_total") == 2
    _, second = await scrape(client, "fortigate_budget", target, "fgt")
    assert value(second, "scout_firewall_rules_dropped_total") == 4
    _, elsewhere = await scrape(client, "fortigate_budget", f"127.0.0.1:{other.port}", "fgt")
    assert value(elsewhere, "scout_firewall_rules_dropped_total") == 2


async def test_all_rules_opt_in_exports_unnamed_rules(start_fake, scout):
    fake = await start_fake("fortigate")
    client = await scout()
    _, text = await scrape(client, "fortigate_all_rules", f"127.0.0.1:{fake.port}", "fgt")
    ids = {dict(key)["rule_id"] for key in samples(text, "scout_firewall_rule_packets_total")}
    assert ids == {"0", "1", "2", "3"}
    assert value(text, "scout_firewall_rule_packets_total", rule_id="3", rule="") == 7
