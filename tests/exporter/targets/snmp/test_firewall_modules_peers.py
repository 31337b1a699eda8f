"""The SNMP firewall modules through the real exporter, against snmpsim recordings.

The recordings (``recordings/firewalls/*.snmprec``, community = file name) are
written by hand from the vendors' MIBs: a FortiGate HA pair member with three
IPsec tunnels, a Palo Alto in active/passive HA, a Cisco ASA, two Check Point
cluster members (one with automatic table sizing) and a pfSense box. Each is
scraped with ``/snmp?module=<vendor>`` and must come out in the firewall schema:
percentages as ratios, session fill, tunnels up or down, HA role and sync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.app import create_app
from exporter.config import parse_config
from exporter.live import Settings
from exporter.schema.firewall import SCHEMA
from tests.exporter.targets.snmp.recorded import recording_auths, served
from tests.exporter.targets.snmp.recorded import scrape as scrape_recording
from tests.peers.snmp import SnmpsimDevices, parse_exposition, promtool_check_metrics

pytestmark = pytest.mark.peers

RECORDINGS = sorted((Path(__file__).parent / "recordings" / "firewalls").glob("*.snmprec"))
SCHEMA_NAMES = {spec.sample_name for spec in SCHEMA}
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def devices(tmp_path_factory) -> Iterator[SnmpsimDevices]:
    with served(tmp_path_factory, RECORDINGS) as devices:
        yield devices


def config_text() -> str:
    return f"auths: {recording_auths(RECORDINGS)}\n"


@pytest.fixture
async def client(aiohttp_client):
    config = parse_config(config_text(), "firewalls.yml")
    return await aiohttp_client(create_app(Settings(enabled_collectors=frozenset()), config))


async def scrape(client, devices: SnmpsimDevices, auth: str, module: str) -> str:
    text = await scrape_recording(client, devices.target, auth, module)
    assert f'scout_snmp_module_success{{module="{module}"}} 1' in text, text
    return text


def firewall_series(text: str) -> Series:
    """The scrape's series in the firewall schema, every one of them a schema name, once."""
    samples = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line[:1] not in ("#", "")]
    assert len(samples) == len(set(samples)), text
    series = {
        key: value
        for key, value in parse_exposition(text).items()
        if key[0].startswith("scout_firewall_")
    }
    assert {name for name, _ in series} <= SCHEMA_NAMES
    if series:
        assert series[("scout_firewall_up", frozenset())] == 1
    return series


def value(series: Series, name: str, **labels: str) -> float:
    found = [v for (n, ls), v in series.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, (name, labels, series)
    return found[0]


def labelsets(series: Series, name: str) -> list[dict[str, str]]:
    return sorted((dict(ls) for n, ls in series if n == name), key=lambda ls: sorted(ls.items()))


async def test_fortigate_sessions_cpu_memory_tunnels_and_ha(client, devices):
    series = firewall_series(await scrape(client, devices, "fortigate-hq", "fortigate"))
    assert value(series, "scout_firewall_sessions") == 51234
    assert value(series, "scout_firewall_session_setup_rate") == 120
    assert value(series, "scout_firewall_cpu_ratio") == pytest.approx(0.45)  # 45 %
    assert value(series, "scout_firewall_memory_ratio") == pytest.approx(0.61)
    assert labelsets(series, "scout_firewall_info") == [
        {
            "vendor": "fortinet",
            "model": "FGT60F",
            "firmware": "v7.2.5,build1517,230606 (GA.F)",
            "hostname": "fw-hq",
        }
    ]
    # One row per phase-2 selector: branch2's two selectors stay apart.
    up = {
        dict(ls)["tunnel"]: (dict(ls)["remote"], v)
        for (n, ls), v in series.items()
        if n == "scout_firewall_vpn_tunnel_up"
    }
    assert up == {
        "branch1-lan": ("192.0.2.7", 1),
        "branch2-lan": ("198.51.100.9", 0),
        "branch2-voice": ("198.51.100.9", 1),
    }
    received = "scout_firewall_vpn_tunnel_receive_bytes_total"
    assert value(series, received, tunnel="branch1-lan") == 3_000_000_000
    sent = "scout_firewall_vpn_tunnel_transmit_bytes_total"
    assert value(series, sent, tunnel="branch1-lan") == 1_200_000_000
    # fgVpnTunEntInOctets of 2**53 + 1000 wraps, as snmp_exporter's would.
    assert value(series, received, tunnel="branch2-voice") == 1000
    assert labelsets(series, "scout_firewall_ha_info") == [{"mode": "a-p"}]
    assert value(series, "scout_firewall_ha_members") == 2
    assert value(series, "scout_firewall_ha_in_sync") == 0  # the second member is not


async def test_large_counters_are_exact_without_wrapping(aiohttp_client, devices):
    settings = Settings(enabled_collectors=frozenset(), snmp_wrap_large_counters=False)
    client = await aiohttp_client(
        create_app(settings, parse_config(config_text(), "firewalls.yml"))
    )
    text = await scrape(client, devices, "fortigate-hq", "fortigate")
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("scout_firewall_vpn_tunnel_receive_bytes_total{")
        and 'tunnel="branch2-voice"' in line
    )
    assert line.endswith(f" {2**53 + 1000}")  # an exact integer, not a rounded float


async def test_paloalto_session_fill_cpu_and_ha_role(client, devices):
    series = firewall_series(await scrape(client, devices, "paloalto-edge", "paloalto"))
    sessions = value(series, "scout_firewall_sessions")
    limit = value(series, "scout_firewall_sessions_limit")
    assert (sessions, limit) == (196608, 1048576)
    assert sessions / limit == pytest.approx(0.1875)  # panSessionUtilization says 19 %
    # Management plane 12 %, data plane 45 %: the busier one.
    assert value(series, "scout_firewall_cpu_ratio") == pytest.approx(0.45)
    assert labelsets(series, "scout_firewall_ha_info") == [
        {"mode": "active-passive", "role": "active"}
    ]
    assert value(series, "scout_firewall_ha_primary") == 1
    assert labelsets(series, "scout_firewall_info") == [
        {"vendor": "paloalto", "model": "PA-3220", "firmware": "10.2.4", "hostname": "pa-edge-1"}
    ]


async def test_cisco_asa_connections_rate_and_cpu(client, devices):
    series = firewall_series(await scrape(client, devices, "cisco-asa-dmz", "cisco_asa"))
    # currentInUse, not the high-water mark (30211) of the same table.
    assert value(series, "scout_firewall_sessions") == 5120
    assert not [n for n, _ in series if n == "scout_firewall_sessions_limit"]
    assert value(series, "scout_firewall_session_setup_rate") == 85
    assert value(series, "scout_firewall_cpu_ratio") == pytest.approx(0.45)
    assert labelsets(series, "scout_firewall_info") == [
        {"vendor": "cisco", "model": "ASA5516", "firmware": "9.16(3)", "hostname": "asa-dmz"}
    ]


async def test_checkpoint_active_member_in_sync(client, devices):
    series = firewall_series(await scrape(client, devices, "checkpoint-gw1", "checkpoint"))
    assert value(series, "scout_firewall_sessions") == 1231
    assert value(series, "scout_firewall_sessions_limit") == 25000
    assert value(series, "scout_firewall_session_setup_rate") == 42
    assert value(series, "scout_firewall_cpu_ratio") == pytest.approx(0.37)
    assert labelsets(series, "scout_firewall_ha_info") == [
        {"mode": "High Availability", "role": "active"}
    ]
    assert value(series, "scout_firewall_ha_primary") == 1
    assert value(series, "scout_firewall_ha_in_sync") == 1
    assert labelsets(series, "scout_firewall_info") == [
        {
            "vendor": "checkpoint",
            "model": "Check Point 6200",
            "firmware": "R81.10",
            "hostname": "cp-gw1",
        }
    ]


async def test_checkpoint_standby_member_with_a_problem_and_automatic_table_size(client, devices):
    series = firewall_series(await scrape(client, devices, "checkpoint-gw2", "checkpoint"))
    assert value(series, "scout_firewall_sessions") == 17
    # fwConnTableLimit 0 means automatic sizing: no limit series, so no false fill alert.
    assert not [n for n, _ in series if n == "scout_firewall_sessions_limit"]
    assert value(series, "scout_firewall_ha_primary") == 0
    assert value(series, "scout_firewall_ha_in_sync") == 0
    # An OID the gateway does not serve is left out, not reported as 0.
    assert not [n for n, _ in series if n == "scout_firewall_session_setup_rate"]


async def test_pfsense_state_table_and_cpu(client, devices):
    series = firewall_series(await scrape(client, devices, "pfsense-fw", "pf"))
    assert value(series, "scout_firewall_sessions") == 8000
    assert value(series, "scout_firewall_sessions_limit") == 100000
    assert value(series, "scout_firewall_sessions_created_total") == 9100000
    assert value(series, "scout_firewall_cpu_ratio") == pytest.approx(0.4)  # mean of 30 and 50 %
    assert labelsets(series, "scout_firewall_info") == [{"vendor": "pf", "hostname": "fw-pf"}]


async def test_a_firewall_module_on_a_device_without_its_mib_reports_nothing(client, devices):
    # pfSense has no FORTINET MIB: the module succeeds and reports nothing it cannot know.
    text = await scrape(client, devices, "pfsense-fw", "fortigate")
    # It answered (up), and said nothing of sessions, tunnels or HA it does not have.
    assert firewall_series(text) == {("scout_firewall_up", frozenset()): 1}


async def test_firewall_output_passes_promtool(client, devices):
    modules = {
        "fortigate-hq": "fortigate",
        "paloalto-edge": "paloalto",
        "cisco-asa-dmz": "cisco_asa",
        "checkpoint-gw1": "checkpoint",
        "pfsense-fw": "pf",
    }
    for auth, module in modules.items():
        text = await scrape(client, devices, auth, module)
        output = await asyncio.to_thread(promtool_check_metrics, text)
        # The schema's names follow the naming rules: promtool has nothing to say about them.
        assert [line for line in output.splitlines() if "scout_firewall_" in line] == [], output
        assert [line for line in output.splitlines() if line.startswith("error")] == [], output
