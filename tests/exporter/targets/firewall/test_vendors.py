"""Each vendor's API, replayed by a fake on 127.0.0.1, scraped through the real ``/firewall``."""

from __future__ import annotations

import pytest

from exporter.schema.firewall import SPECS
from tests.exporter.targets.firewall.exposition import families, samples, scrape, value
from tests.peers.firewall_api import CREDENTIALS
from tests.peers.firewall_payloads import RULE_A, RULE_B

POLICY = "/api/v2/monitor/firewall/policy"


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
    # Named rules by default: policy 1 (a name), 2 (a comment), 0 (the implicit deny),
    # each IP version's counters apart.
    hits = samples(text, "scout_firewall_rule_hits_total")
    assert {
        (dict(k)["table"], dict(k)["rule_id"]): (dict(k)["rule"], dict(k)["action"], v)
        for k, v in hits.items()
    } == {
        ("ipv4", "0"): ("implicit-deny", "deny", 1200.0),
        ("ipv4", "1"): ("web-out", "accept", 310.0),
        ("ipv4", "2"): ("dns to resolvers", "accept", 25.0),
        ("ipv6", "0"): ("implicit-deny", "deny", 40.0),
        ("ipv6", "1"): ("web-out", "accept", 9.0),
        # Listed without hit_count and with no traffic: never hit, so the first hit
        # is an increase from 0.
        ("ipv6", "2"): ("dns to resolvers", "accept", 0.0),
    }
    assert value(text, "scout_firewall_rule_bytes_total", rule_id="1", table="ipv4") == 900_000
    assert value(text, "scout_firewall_rule_bytes_total", rule_id="1", table="ipv6") == 64_000
    assert value(text, "scout_firewall_rule_packets_total", rule_id="2", table="ipv4") == 50
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
    # Down with a latency of 0: nothing was measured, so no 0 s round trip.
    assert value(text, "scout_firewall_gateway_rtt_seconds", interface="wan2") is None
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
    policy_reads = [seen.query for seen in fake.requests if seen.path == POLICY]
    assert sorted(policy_reads, key=lambda query: query["ip_version"]) == [
        {"vdom": "root", "ip_version": "ipv4"},
        {"vdom": "root", "ip_version": "ipv6"},
    ]
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
    # Down, with dpinger's 0 ms: no round trip rather than a 0 ms gateway; its
    # 100 % loss is what was measured.
    assert value(text, "scout_firewall_gateway_rtt_seconds", gateway="WAN2_GW") is None
    assert value(text, "scout_firewall_gateway_loss_ratio", gateway="WAN2_GW") == 1
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
    assert value(text, "scout_firewall_gateway_rtt_seconds", gateway="WAN2_DHCP") is None
    assert value(text, "scout_firewall_gateway_loss_ratio", gateway="WAN2_DHCP") == 1
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
    # Three named rules per IP version, one series allowed: the first in policy order stays.
    assert set(samples(first, "scout_firewall_rule_packets_total")) == {
        (
            ("action", "deny"),
            ("chain", ""),
            ("rule", "implicit-deny"),
            ("rule_id", "0"),
            ("table", "ipv4"),
        )
    }
    assert value(first, "scout_firewall_rules_dropped_total") == 5
    _, second = await scrape(client, "fortigate_budget", target, "fgt")
    assert value(second, "scout_firewall_rules_dropped_total") == 10
    _, elsewhere = await scrape(client, "fortigate_budget", f"127.0.0.1:{other.port}", "fgt")
    assert value(elsewhere, "scout_firewall_rules_dropped_total") == 5


async def test_all_rules_opt_in_exports_unnamed_rules(start_fake, scout):
    fake = await start_fake("fortigate")
    client = await scout()
    _, text = await scrape(client, "fortigate_all_rules", f"127.0.0.1:{fake.port}", "fgt")
    ids = {dict(key)["rule_id"] for key in samples(text, "scout_firewall_rule_packets_total")}
    assert ids == {"0", "1", "2", "3"}
    assert value(text, "scout_firewall_rule_packets_total", rule_id="3", rule="") == 7


def rule_series(text: str, name: str = "scout_firewall_rule_packets_total") -> dict:
    """A family's samples by (table, rule_id)."""
    return {(dict(k)["table"], dict(k)["rule_id"]): v for k, v in samples(text, name).items()}


async def test_fortigate_policy_listed_twice_is_counted_and_logged(start_fake, scout, caplog):
    # The shape FortiOS gives when both versions come in one answer: the same id twice.
    fake = await start_fake("fortigate")
    answer = fake.table[POLICY]
    v6 = fake.table[f"{POLICY}?ip_version=ipv6"]["results"]
    answer["results"] = answer["results"] + v6[:2]
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    # The first entry of each id stays; the repeats are neither merged nor lost unseen.
    assert rule_series(text)[("ipv4", "0")] == 1200
    assert rule_series(text)[("ipv4", "1")] == 1200
    assert value(text, "scout_firewall_rules_dropped_total") == 2
    assert (
        f"{POLICY}?ip_version=ipv4: policies listed more than once (0, 1): the first entry"
        " kept, 2 counted in rules_dropped" in caplog.text
    )
    _, again = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert value(again, "scout_firewall_rules_dropped_total") == 4


async def test_fortigate_before_6_4_reads_no_ipv6_from_the_ignored_parameter(
    start_fake, scout, caplog
):
    # FortiOS 6.2 ignores ip_version: its IPv6 answer is the IPv4 list again.
    fake = await start_fake("fortigate")
    for key in (POLICY, f"{POLICY}?ip_version=ipv6"):
        fake.table[key] = {**fake.table[POLICY], "version": "v6.2.4"}
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert set(rule_series(text)) == {("ipv4", "0"), ("ipv4", "1"), ("ipv4", "2")}
    assert value(text, "scout_firewall_rules_dropped_total") == 0
    assert (
        f"{POLICY}?ip_version=ipv6: FortiOS v6.2.4 keeps IPv6 policies apart and ignores"
        " ip_version" in caplog.text
    )


async def test_fortigate_policy_without_hit_count_is_0_only_with_no_traffic(start_fake, scout):
    fake = await start_fake("fortigate")
    for entry in fake.table[POLICY]["results"]:
        if entry["policyid"] == 2:
            # Traffic but no hit_count (FortiOS's implicit deny on some releases):
            # the hit count is not known, and not made up as 0.
            del entry["hit_count"]
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    hits = rule_series(text, "scout_firewall_rule_hits_total")
    assert ("ipv4", "2") not in hits
    assert rule_series(text)[("ipv4", "2")] == 50
    # The IPv6 answer's policy 2: nothing through it and no hit_count, so never
    # hit, and its first hit is an increase from 0.
    assert hits[("ipv6", "2")] == 0


async def test_fortigate_health_check_member_state_not_known_has_no_series(start_fake, scout):
    # FortiOS's own words for a member: error (not taking part), unknown; and one it never wrote.
    fake = await start_fake("fortigate")
    checks = fake.table["/api/v2/monitor/virtual-wan/health-check"]["results"]
    checks["dns"] = {
        "port3": {"status": "error"},
        "port4": {"status": "unknown"},
        "port5": {"status": "flapping", "latency": 3.0, "packet_loss": 0},
        "port6": {"status": "down", "latency": 2.0, "packet_loss": 60},
    }
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    up = {
        dict(key)["interface"]: number
        for key, number in samples(text, "scout_firewall_gateway_up").items()
        if dict(key)["gateway"] == "dns"
    }
    assert up == {"port6": 0.0}
    assert value(text, "scout_firewall_gateway_up", gateway="internet", interface="wan1") == 1
    # A clear down keeps what its monitor measured.
    assert value(text, "scout_firewall_gateway_loss_ratio", gateway="dns", interface="port6") == 0.6


IPSEC = "/api/v2/monitor/vpn/ipsec"


def dialup_client(name: str, remote: str, status: str, received: int, **more: object) -> dict:
    """A dial-up instance as FortiOS lists it (shape of a recorded 6.0 answer, values made up)."""
    return {
        "proxyid": [
            {
                "proxy_src": [{"subnet": "0.0.0.0-255.255.255.255", "port": 0}],
                "proxy_dst": [{"subnet": "10.9.9.5-10.9.9.5", "port": 0}],
                "status": status,
                "p2name": "remote-users",
                "incoming_bytes": received,
                "outgoing_bytes": 2 * received,
            }
        ],
        "name": name,
        "wizard-type": "dialup-forticlient",
        "type": "dialup",
        "incoming_bytes": received,
        "outgoing_bytes": 2 * received,
        "rgwy": remote,
        "rport": 4500,
        **more,
    }


DIALUP_TEMPLATE = {
    "proxyid": [],
    "name": "remote-users",
    "wizard-type": "dialup-forticlient",
    "type": "",
    "incoming_bytes": 7_000_000,
    "outgoing_bytes": 9_000_000,
    "rgwy": "0.0.0.0",
}


async def test_fortigate_dialup_is_one_tunnel_up_while_a_client_is_connected(start_fake, scout):
    fake = await start_fake("fortigate")
    tunnels = fake.table[IPSEC]["results"]
    tunnels += [
        DIALUP_TEMPLATE,
        dialup_client("remote-users_0", "203.0.113.50", "up", 1000, parent="remote-users"),
        # An instance without the parent field is known by its name.
        dialup_client("remote-users_1", "203.0.113.51", "down", 500),
    ]
    client = await scout()
    target = f"127.0.0.1:{fake.port}"
    _, text = await scrape(client, "fortigate_http", target, "fgt")
    dialup = {
        key: number
        for key, number in samples(text, "scout_firewall_vpn_tunnel_up").items()
        if dict(key)["tunnel"].startswith("remote-users")
    }
    # One series for the phase 1, none per client, no client address as a label.
    assert dialup == {(("remote", ""), ("tunnel", "remote-users"), ("type", "ipsec")): 1.0}
    received = "scout_firewall_vpn_tunnel_receive_bytes_total"
    assert value(text, received, tunnel="remote-users") == 7_000_000
    assert value(text, "scout_firewall_vpn_tunnel_transmit_bytes_total", tunnel="remote-users") == (
        9_000_000
    )
    # Static tunnels are as they were.
    assert value(text, "scout_firewall_vpn_tunnel_up", tunnel="branch2", remote="203.0.113.9") == 0
    # The clients leave: no tunnel down (nobody connected is not a fault), the bytes stay.
    fake.table[IPSEC]["results"] = [*tunnels[:2], DIALUP_TEMPLATE]
    _, idle = await scrape(client, "fortigate_http", target, "fgt")
    assert value(idle, "scout_firewall_vpn_tunnel_up", tunnel="remote-users") is None
    assert value(idle, received, tunnel="remote-users") == 7_000_000


async def test_fortigate_dialup_clients_without_their_template_are_summed(start_fake, scout):
    fake = await start_fake("fortigate")
    fake.table[IPSEC]["results"] = [
        dialup_client("remote-users_0", "203.0.113.50", "up", 1000, parent="remote-users"),
        dialup_client("remote-users_1", "203.0.113.51", "up", 500, parent="remote-users"),
    ]
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert samples(text, "scout_firewall_vpn_tunnel_up") == {
        (("remote", ""), ("tunnel", "remote-users"), ("type", "ipsec")): 1.0
    }
    assert value(text, "scout_firewall_vpn_tunnel_receive_bytes_total") == 1500


async def test_fortigate_ha_mode_the_user_may_not_read_leaves_ha_info_out(
    start_fake, scout, caplog
):
    # A 200 without the mode: what FortiOS answers a profile without system read access.
    fake = await start_fake("fortigate")
    fake.table["/api/v2/cmdb/system/ha"]["results"] = {
        "ha-mgmt-interfaces": [{"id": 1, "interface": "port1", "gateway": "192.0.2.254"}]
    }
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert "scout_firewall_ha_info" not in families(text)
    assert value(text, "scout_firewall_ha_primary") == 1
    assert value(text, "scout_firewall_ha_in_sync") == 1
    notes = [r.getMessage() for r in caplog.records if "partial" in r.getMessage()]
    assert len(notes) == 1
    assert "/api/v2/cmdb/system/ha: no HA mode in the answer" in notes[0]


async def test_fortigate_empty_usage_answer_is_logged_as_no_data(start_fake, scout, caplog):
    fake = await start_fake("fortigate")
    fake.table["/api/v2/monitor/system/resource/usage"]["results"] = {}
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert value(text, "scout_firewall_up") == 1
    assert "scout_firewall_cpu_ratio" not in families(text)
    assert value(text, "scout_firewall_sessions") == 51200
    assert (
        "partial: 1 of 12 endpoints failed: /api/v2/monitor/system/resource/usage:"
        " FortiOS answered with no data" in caplog.text
    )


async def test_pfsense_stock_state_limit_is_the_default(start_fake, scout):
    # maximumstates is null on a box whose limit was never set by hand.
    fake = await start_fake("pfsense")
    states = fake.table["/api/v2/firewall/states/size"]["data"]
    states.update(maximumstates=None, defaultmaximumstates=1_621_000)
    client = await scout()
    _, text = await scrape(client, "pfsense_http", f"127.0.0.1:{fake.port}", "pf")
    assert value(text, "scout_firewall_sessions_limit") == 1_621_000
    assert value(text, "scout_firewall_sessions") == 2345
