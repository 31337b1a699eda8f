"""``/firewall`` against answers a broken or hostile firewall could send.

Each answer here is valid JSON that the happy-path replays never hold: a
string with an unpaired surrogate escape, a number too large for a float,
the same name twice. One such field may cost its own series, never the rest
of the scrape or the exposition.
"""

from __future__ import annotations

from exporter.targets.firewall.values import Node
from tests.exporter.targets.firewall.exposition import scrape, value
from tests.peers.firewall_api import Misbehaviour

STATUS = "/api/v2/monitor/system/status"
VDOM_RESOURCE = "/api/v2/monitor/system/vdom-resource"


def test_a_number_too_large_for_a_float_reads_as_missing():
    assert Node(10**400).number() is None
    assert Node(-(10**400)).number() is None
    assert Node(2**64).number() == float(2**64)


def test_an_unpaired_surrogate_is_replaced_in_text_and_in_keys():
    assert Node("fw\ud800-hq").text() == "fw\ufffd-hq"
    assert list(Node({"wan\udfff": 1}).items()) == [("wan\ufffd", Node(1))]
    assert Node("fw\U0001f525").text() == "fw\U0001f525"  # a paired one is a real character


async def test_an_unpaired_surrogate_in_a_name_keeps_the_exposition(start_fake, scout):
    fake = await start_fake("fortigate")
    fake.misbehaviours[STATUS] = Misbehaviour(
        body=b'{"status": "success", "version": "v7.4.4", "serial": "FGT1",'
        b' "results": {"model": "FGT100F", "hostname": "fw-\\ud83d"}}'
    )
    client = await scout()
    status, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert status == 200
    assert value(text, "scout_firewall_up") == 1
    assert value(text, "scout_firewall_info", hostname="fw-\ufffd", model="FGT100F") == 1


async def test_a_number_too_large_for_a_float_costs_only_its_series(start_fake, scout, caplog):
    fake = await start_fake("fortigate")
    huge = b"1" + b"0" * 400
    fake.misbehaviours[VDOM_RESOURCE] = Misbehaviour(
        body=b'{"status": "success", "results": {"session": {"current_usage": '
        + huge
        + b', "custom_max": 2000000}}}'
    )
    client = await scout()
    _, text = await scrape(client, "fortigate_http", f"127.0.0.1:{fake.port}", "fgt")
    assert value(text, "scout_firewall_up") == 1
    assert value(text, "scout_firewall_sessions_limit") == 2_000_000
    assert value(text, "scout_firewall_cpu_ratio") is not None
    assert "internal error" not in caplog.text


def sample_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith((name + "{", name + " "))]


async def test_a_name_listed_twice_gives_one_series_the_first(start_fake, scout):
    fake = await start_fake("pfsense")
    answer = fake.table["/api/v2/status/interfaces"]
    wan = answer["data"][0]
    fake.table["/api/v2/status/interfaces"] = {
        **answer,
        "data": [*answer["data"], {**wan, "status": "down", "inbytes": 5}],
    }
    client = await scout()
    _, text = await scrape(client, "pfsense_http", f"127.0.0.1:{fake.port}", "pf")
    assert len(sample_lines(text, "scout_firewall_interface_up")) == 2
    assert value(text, "scout_firewall_interface_up", interface="WAN") == 1
    received = "scout_firewall_interface_receive_bytes_total"
    assert value(text, received, interface="WAN") == wan["inbytes"]


async def test_opnsense_split_connections_of_one_phase1_are_one_tunnel(start_fake, scout):
    # One phase 1 with its phase 2s as separate connections: con1-000, con1-001.
    fake = await start_fake("opnsense")
    answer = fake.table["/api/ipsec/sessions/search_phase1"]
    first = answer["rows"][0]
    rows = [
        {**first, "name": "con1-000", "connected": False},
        {**first, "name": "con1-001", "connected": True},
    ]
    fake.table["/api/ipsec/sessions/search_phase1"] = {**answer, "rows": rows}
    client = await scout()
    _, text = await scrape(client, "opnsense_http", f"127.0.0.1:{fake.port}", "opn")
    assert sample_lines(text, "scout_firewall_vpn_tunnel_up") == [
        'scout_firewall_vpn_tunnel_up{remote="198.51.100.7",tunnel="branch-a",type="ipsec"} 1.0'
    ]
