"""``/snmp`` against real agents: snmpd, snmpsim devices, and snmp_exporter as the reference."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import psutil
import pytest
from pydantic import SecretStr

from exporter.app import create_app
from exporter.clients.snmp import Credentials, Oid, SnmpSession, VarBind
from exporter.config import SnmpAuth, parse_config
from exporter.live import Settings
from exporter.targets.kind import ScrapeJob
from exporter.targets.snmp import scraper as scraper_module
from exporter.targets.snmp.exposition import Family
from exporter.targets.snmp.modules import SnmpModule, builtin_modules
from exporter.targets.snmp.scraper import SessionFactory, SnmpScraper, Target
from tests.peers.snmp import (
    RealSnmpd,
    SilentDevice,
    SimulatedDevice,
    SnmpExporter,
    SnmpsimDevices,
    TooBigProxy,
    V3User,
    parse_exposition,
    promtool_check_metrics,
)

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers


SHA_AES = V3User("scout-authpriv", auth_key="v3-auth-secret-1", priv_key="v3-priv-secret-1")
SHA256_AES = V3User(
    "scout-sha256",
    auth_key="v3-auth-secret-2",
    priv_key="v3-priv-secret-2",
    auth_protocol="SHA-256",
)
AUTH_ONLY = V3User("scout-authnopriv", auth_key="v3-auth-secret-3", priv_protocol=None)

# The simulated agents listen on loopback; a community other than public needs a list.
LOOPBACK_ONLY = "allowed_targets: [127.0.0.0/8]"

CONFIG = f"""
auths:
  private_v2:
    {{type: snmp, community: private-community-secret, allowed_targets: [127.0.0.0/8]}}
  v3_sha_aes:
    type: snmp
    version: 3
    username: {SHA_AES.name}
    security_level: authPriv
    auth_protocol: SHA
    auth_password: {SHA_AES.auth_key}
    priv_protocol: AES
    priv_password: {SHA_AES.priv_key}
    allowed_targets: [127.0.0.0/8]
  v3_sha256_aes:
    type: snmp
    version: 3
    username: {SHA256_AES.name}
    security_level: authPriv
    auth_protocol: SHA256
    auth_password: {SHA256_AES.auth_key}
    priv_protocol: AES
    priv_password: {SHA256_AES.priv_key}
    allowed_targets: [127.0.0.0/8]
  v3_auth_only:
    type: snmp
    version: 3
    username: {AUTH_ONLY.name}
    security_level: authNoPriv
    auth_protocol: SHA
    auth_password: {AUTH_ONLY.auth_key}
    allowed_targets: [127.0.0.0/8]
  v3_wrong_password:
    type: snmp
    version: 3
    username: {SHA_AES.name}
    security_level: authPriv
    auth_protocol: SHA
    auth_password: not-the-right-password
    priv_protocol: AES
    priv_password: {SHA_AES.priv_key}
    allowed_targets: [127.0.0.0/8]
modules:
  big_bulk:
    prober: snmp
    max_repetitions: 500
    metrics:
      - name: ifHCInOctets
        oid: 1.3.6.1.2.1.31.1.1.1.6
        type: counter
        indexes: [{{labelname: ifIndex}}]
"""
SECRETS = (
    "private-community-secret",
    "v3-auth-secret-1",
    "v3-priv-secret-1",
    "v3-auth-secret-2",
    "not-the-right-password",
)


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory) -> Iterator[RealSnmpd]:
    with RealSnmpd(
        tmp_path_factory.mktemp("snmpd"),
        communities=("public", "private-community-secret"),
        v3_users=(SHA_AES, SHA256_AES, AUTH_ONLY),
    ) as agent:
        yield agent


@pytest.fixture(scope="module")
def snmpsim(tmp_path_factory) -> Iterator[SnmpsimDevices]:
    with SnmpsimDevices(tmp_path_factory.mktemp("snmpsim")) as devices:
        yield devices


@pytest.fixture(scope="module")
def snmp_exporter(tmp_path_factory) -> Iterator[SnmpExporter]:
    with SnmpExporter(
        tmp_path_factory.mktemp("snmp_exporter"), communities=("public", "sim48", "sim260")
    ) as exporter:
        yield exporter


@pytest.fixture
async def client(aiohttp_client):
    settings = Settings(enabled_collectors=frozenset())
    return await aiohttp_client(create_app(settings, parse_config(CONFIG, "test.yml")))


# snmpsim answers about 2k OIDs/s, slower still on a loaded machine: its 260-port
# device takes 6-9 s to walk here with both test workers busy, too close to the
# usual 10 s. Scrapes of it get Prometheus's longest usual timeout; what they
# check is what is read, not how fast.
SNMPSIM_SCRAPE_TIMEOUT = "60"


async def scrape(client, scrape_timeout: str = "10", **params: str) -> tuple[int, str]:
    response = await client.get(
        "/snmp", params=params, headers={"X-Prometheus-Scrape-Timeout-Seconds": scrape_timeout}
    )
    return response.status, await response.text()


async def scrape_simulated(client, target: str, **params: str) -> tuple[int, str]:
    """A scrape given the time snmpsim's slow answers need (any agent: what is read counts)."""
    return await scrape(client, scrape_timeout=SNMPSIM_SCRAPE_TIMEOUT, target=target, **params)


def sample(text: str, name: str, **labels: str) -> float | None:
    for (metric, found), value in parse_exposition(text).items():
        if metric == name and set(labels.items()) <= found:
            return value
    return None


def device_series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The device's series, without either exporter's own scrape metrics."""
    return {
        key: value
        for key, value in parse_exposition(text).items()
        if not key[0].startswith(("snmp_scrape_", "scout_snmp_"))
    }


# Counters and clocks move between two reads; the rest must be equal.
MOVING = ("sysUpTime",)
WRAP_53 = 2**53  # both wrap Counter64 values at 2^53 unless told not to


async def assert_same_as_snmp_exporter(client, snmp_exporter, target: str, community: str):
    before = device_series(snmp_exporter.scrape(target, community=community))
    auth = {"public": "public_v2"}.get(community)
    params = {"target": target, **({"auth": auth} if auth else {})}
    if community != "public":
        params["auth"] = f"sim_{community}"
    status, text = await scrape_simulated(client, **params)
    assert status == 200, text
    assert sample(text, "scout_snmp_module_success", module="if_mib") == 1, text
    ours = device_series(text)
    after = device_series(snmp_exporter.scrape(target, community=community))
    assert set(ours) == set(before) == set(after)
    counters = {
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE") and "counter" in line
    }
    for key, value in ours.items():
        low, high = before[key], after[key]
        # Both wrap Counter64 values at 2^53 (--snmp.wrap-large-counters, on by default),
        # so even the 2^64 - 616 counters of the simulated devices compare exactly.
        assert value < WRAP_53, key
        assert low < WRAP_53, key
        if key[0] in counters and not key[0].startswith("ifHC"):
            # A 32-bit counter on a 10-100 Gb/s port wraps in under a second, so it
            # cannot be bracketed between two reads; its presence is what is compared.
            continue
        if key[0] in counters or key[0] in MOVING:
            assert low <= value <= high, (key, low, value, high)
        else:
            assert value == low == high, (key, low, value, high)


async def test_if_mib_matches_snmp_exporter_on_real_snmpd(client, snmpd, snmp_exporter):
    await assert_same_as_snmp_exporter(client, snmp_exporter, snmpd.target, "public")


@pytest.mark.parametrize("device", ["sim48", "sim260"])
async def test_if_mib_matches_snmp_exporter_on_simulated_devices(
    aiohttp_client, snmpsim, snmp_exporter, device
):
    config = parse_config(
        f"auths: {{sim_{device}: {{type: snmp, community: {device}, {LOOPBACK_ONLY}}}}}",
        "sim.yml",
    )
    client = await aiohttp_client(create_app(Settings(enabled_collectors=frozenset()), config))
    await assert_same_as_snmp_exporter(client, snmp_exporter, snmpsim.target, device)


def huge_counters_shown(text: str, device: SimulatedDevice, *, wrap: bool) -> int:
    """Check each ifHCInOctets at or above 2^53 is shown exactly, or wrapped; count them."""
    huge = 0
    for oid, value in device.static.items():
        if isinstance(value, int) and value >= 2**53 and oid.startswith("1.3.6.1.2.1.31.1.1.1.6."):
            huge += 1
            shown = value % 2**53 if wrap else value
            line = next(
                line
                for line in text.splitlines()
                if line.startswith("ifHCInOctets{") and f'ifIndex="{oid.rsplit(".", 1)[1]}"' in line
            )
            assert line.endswith(f"}} {shown}")
    return huge


async def test_simulated_device_with_260_interfaces_and_fast_links(aiohttp_client, snmpsim):
    config = parse_config(
        f"auths: {{sim: {{type: snmp, community: sim260, {LOOPBACK_ONLY}}}}}", "sim.yml"
    )
    client = await aiohttp_client(create_app(Settings(enabled_collectors=frozenset()), config))
    status, text = await scrape_simulated(client, snmpsim.target, auth="sim")
    assert status == 200
    device = snmpsim.devices["sim260"]
    rows = [k for k in parse_exposition(text) if k[0] == "ifHCInOctets"]
    assert len(rows) == len(device.interfaces) >= 260
    speeds = {int(v) for (name, _), v in parse_exposition(text).items() if name == "ifHighSpeed"}
    assert {100000, 40000, 10000} <= speeds  # beyond ifSpeed's 4.29 Gb/s ceiling
    # 2^64 - 616 wraps to (2^64 - 616) mod 2^53 by default, as snmp_exporter's does.
    assert huge_counters_shown(text, device, wrap=True)
    aliases = {
        dict(labels)["ifIndex"]: dict(labels)["ifAlias"]
        for name, labels in parse_exposition(text)
        if name == "ifHighSpeed"
    }
    for index, row in device.interfaces.items():
        alias = row["ifAlias"]
        assert aliases[str(index)] == (alias.decode() if isinstance(alias, bytes) else str(alias))


async def test_without_wrapping_64_bit_counters_are_exact_integers(aiohttp_client, snmpsim):
    config = parse_config(
        f"auths: {{sim: {{type: snmp, community: sim260, {LOOPBACK_ONLY}}}}}\n"
        "modules: {hc_in: {prober: snmp, metrics: [{name: ifHCInOctets,"
        " oid: 1.3.6.1.2.1.31.1.1.1.6, type: counter, indexes: [{labelname: ifIndex}]}]}}",
        "sim.yml",
    )
    settings = Settings(enabled_collectors=frozenset(), snmp_wrap_large_counters=False)
    client = await aiohttp_client(create_app(settings, config))
    status, text = await scrape_simulated(
        client,
        snmpsim.target,
        auth="sim",
        module="hc_in",
    )
    assert status == 200
    assert sample(text, "scout_snmp_module_success", module="hc_in") == 1, text
    # --no-snmp.wrap-large-counters: 2^64 - 616 stays as it is, not a rounded float.
    assert huge_counters_shown(text, snmpsim.devices["sim260"], wrap=False)


@pytest.mark.parametrize("auth", ["v3_sha_aes", "v3_sha256_aes", "v3_auth_only", "private_v2"])
async def test_credentials_from_config(client, snmpd, auth):
    status, text = await scrape(client, target=snmpd.target, auth=auth, module="system")
    assert status == 200
    assert sample(text, "scout_snmp_module_success", module="system") == 1, text
    assert sample(text, "sysName", sysName="scout-snmpd") == 1


async def test_wrong_v3_password_fails_the_module_and_leaks_nothing(client, snmpd, caplog):
    caplog.set_level(logging.WARNING)
    status, text = await scrape(client, target=snmpd.target, auth="v3_wrong_password")
    assert status == 200
    assert sample(text, "scout_snmp_module_success", module="if_mib") == 0
    # It answered (with a report), so it is not the unreachable-device alert's.
    assert sample(text, "scout_snmp_device_reachable") == 1, text
    assert "snmp module failed" in caplog.text
    config_view = await (await client.get("/config")).text()
    for secret in SECRETS:
        assert secret not in text + caplog.text + config_view


async def test_several_modules_in_one_scrape(client, snmpd):
    status, text = await scrape(client, target=snmpd.target, module="if_mib,system")
    assert status == 200
    assert sample(text, "scout_snmp_module_success", module="if_mib") == 1
    assert sample(text, "scout_snmp_module_success", module="system") == 1
    assert sample(text, "sysName", sysName="scout-snmpd") == 1


async def test_dead_device_costs_only_its_own_deadline(client, snmpd):
    with SilentDevice() as silent:
        started = asyncio.get_running_loop().time()
        (dead_status, dead), (live_status, live) = await asyncio.gather(
            scrape(client, scrape_timeout="2", target=silent.target),
            scrape(client, scrape_timeout="2", target=snmpd.target),
        )
        elapsed = asyncio.get_running_loop().time() - started
    assert dead_status == live_status == 200
    assert sample(dead, "scout_snmp_module_success", module="if_mib") == 0
    assert sample(live, "scout_snmp_module_success", module="if_mib") == 1
    assert sample(dead, "scout_snmp_pdus_sent") >= 1
    assert sample(dead, "scout_snmp_device_reachable") == 0, dead
    assert sample(live, "scout_snmp_device_reachable") == 1, live
    # Bounded by the 1.5 s deadline (2 s header minus 0.5 s), with room for a slow machine.
    assert elapsed < 6


async def test_too_big_agent_lowers_and_remembers_max_repetitions(client, snmpd):
    with TooBigProxy(snmpd.target, max_repetitions=6) as proxy:
        status, first = await scrape(client, target=proxy.target)
        assert status == 200
        assert sample(first, "scout_snmp_module_success", module="if_mib") == 1, first
        assert proxy.too_big_replies >= 1
        learned = sample(first, "scout_snmp_max_repetitions", module="if_mib")
        assert learned is not None
        assert learned <= 6
        refused = proxy.too_big_replies
        _, second = await scrape(client, target=proxy.target)
        assert sample(second, "scout_snmp_module_success", module="if_mib") == 1
        assert proxy.too_big_replies == refused  # started at the remembered value
    assert sample(second, "ifHCInOctets", ifDescr="lo") is not None


async def test_huge_max_repetitions_is_handled(client, snmpd):
    status, text = await scrape(client, target=snmpd.target, module="big_bulk")
    assert status == 200
    assert sample(text, "scout_snmp_module_success", module="big_bulk") == 1, text
    assert sample(text, "ifHCInOctets", ifIndex="1") is not None


async def test_lookup_cache_is_used_then_dropped_when_the_agent_restarts(client, tmp_path):
    with RealSnmpd(tmp_path / "a") as agent:
        port = int(agent.target.rsplit(":", 1)[1])
        # Let the agent's clock run, so a restarted one is clearly behind it.
        await asyncio.sleep(3)
        _, first = await scrape(client, target=agent.target)
        _, second = await scrape(client, target=agent.target)
        assert sample(first, "scout_snmp_cache_used", module="if_mib") == 0
        assert sample(second, "scout_snmp_cache_used", module="if_mib") == 1
        assert sample(second, "scout_snmp_pdus_sent") < sample(first, "scout_snmp_pdus_sent")
    with RealSnmpd(tmp_path / "b", port=port) as restarted:
        _, third = await scrape(client, target=restarted.target)
    assert sample(third, "scout_snmp_cache_used", module="if_mib") == 0
    assert sample(third, "scout_snmp_module_success", module="if_mib") == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "'target' parameter must be specified"),
        ({"target": "127.0.0.1", "module": "nope"}, "unknown module 'nope'; known: "),
        ({"target": "127.0.0.1", "auth": "nope"}, "unknown auth 'nope'"),
        ({"target": "bad target!"}, "invalid target 'bad target!'"),
        ({"target": "127.0.0.1:99999"}, "invalid port in target '127.0.0.1:99999'"),
        ({"target": "tcp://127.0.0.1"}, "unsupported transport 'tcp'"),
        ({"target": "x" * 300}, "target longer than 260 characters"),
        ({"target": "-badhost"}, "invalid target '-badhost': expected host or host:port"),
        ({"target": "127.0.0.1:\u0661\u0666\u0661"}, "invalid port in target"),
        ({"target": "[::1"}, "invalid target '[::1': expected [ipv6]:port"),
    ],
)
async def test_bad_parameters_are_400_with_a_message(client, params, message):
    status, text = await scrape(client, **params)
    assert status == 400
    assert text.startswith(message)


async def test_unresolvable_host_fails_the_module_not_the_exporter(client, snmpd):
    status, text = await scrape(client, target="no-such-host.invalid")
    assert status == 200
    assert sample(text, "scout_snmp_module_success", module="if_mib") == 0
    assert sample(text, "scout_snmp_device_reachable") == 0
    status, text = await scrape(client, target=snmpd.target)
    assert sample(text, "scout_snmp_module_success", module="if_mib") == 1


async def test_host_resources_module_on_a_simulated_server(aiohttp_client, snmpsim):
    config = parse_config(
        f"auths: {{sim: {{type: snmp, community: sim48, {LOOPBACK_ONLY}}}}}", "sim.yml"
    )
    client = await aiohttp_client(create_app(Settings(enabled_collectors=frozenset()), config))
    status, text = await scrape_simulated(
        client,
        snmpsim.target,
        auth="sim",
        module="host_resources",
    )
    assert status == 200
    assert sample(text, "scout_snmp_module_success", module="host_resources") == 1, text
    device = snmpsim.devices["sim48"]
    assert device.storage, "the simulated device has hrStorage rows"
    for index, row in device.storage.items():
        labels = {"hrStorageIndex": str(index), "hrStorageDescr": row["hrStorageDescr"]}
        assert sample(text, "hrStorageSize", **labels) == row["hrStorageSize"]
        assert sample(text, "hrStorageUsed", **labels) == row["hrStorageUsed"]
    loads = {
        dict(labels)["hrDeviceIndex"]: value
        for (name, labels), value in parse_exposition(text).items()
        if name == "hrProcessorLoad"
    }
    assert loads == {str(i): float(v) for i, v in device.processors.items()}
    assert sample(text, "hrMemorySize") == device.static["1.3.6.1.2.1.25.2.2.0"]


async def test_parameters_as_snmp_exporter_reads_them(client, snmpd):
    # module may repeat (a scrape config's params: {module: [if_mib, system]}) ...
    response = await client.get(f"/snmp?target={snmpd.target}&module=system&module=if_mib")
    text = await response.text()
    assert sample(text, "scout_snmp_module_success", module="system") == 1
    assert sample(text, "scout_snmp_module_success", module="if_mib") == 1
    # ... both read sysUpTime, which must still appear once (promtool rejects a second HELP).
    assert text.count("# HELP sysUpTime ") == 1
    assert len([line for line in text.splitlines() if line.startswith("sysUpTime ")]) == 1
    # Empty module and auth mean the defaults.
    response = await client.get(f"/snmp?target={snmpd.target}&module=&auth=")
    text = await response.text()
    assert sample(text, "scout_snmp_module_success", module="if_mib") == 1
    # A second target or auth is ambiguous: refused.
    for query in (
        f"target={snmpd.target}&target=127.0.0.2",
        f"target={snmpd.target}&auth=a&auth=b",
    ):
        response = await client.get(f"/snmp?{query}")
        assert response.status == 400
        assert "given 2 times; give it once" in await response.text()


async def test_concurrent_scrapes_of_one_device_count_their_own_pdus(client, snmpd):
    results = await asyncio.gather(
        *(scrape(client, target=snmpd.target, module="system") for _ in range(8))
    )
    for status, text in results:
        assert status == 200
        assert sample(text, "scout_snmp_module_success", module="system") == 1
        assert sample(text, "scout_snmp_pdus_sent") == 1  # one GET: the system group


async def test_reload_drops_sessions_and_caches_built_from_the_old_config(
    aiohttp_client, snmpd, tmp_path
):
    config = tmp_path / "scout.yml"
    config.write_text("auths: {lab: {type: snmp, community: public}}\n")
    settings = Settings(config_file=config, enabled_collectors=frozenset(), enable_lifecycle=True)
    app = create_app(settings)
    client = await aiohttp_client(app)
    await scrape(client, target=snmpd.target, auth="lab")
    _, cached = await scrape(client, target=snmpd.target, auth="lab")
    assert sample(cached, "scout_snmp_cache_used", module="if_mib") == 1
    # The community changes: the old session (and its secret) must not be reused.
    config.write_text(
        f"auths: {{lab: {{type: snmp, community: wrong-community-now, {LOOPBACK_ONLY}}}}}\n"
    )
    assert (await client.post("/-/reload")).status == 200
    _, after = await scrape(client, scrape_timeout="3", target=snmpd.target, auth="lab")
    assert sample(after, "scout_snmp_module_success", module="if_mib") == 0
    assert sample(after, "scout_snmp_cache_used", module="if_mib") == 0


async def test_snmp_output_passes_promtool_parsing(client, snmpd):
    _, text = await scrape(client, target=snmpd.target, module="if_mib,system,host_resources")
    # snmp_exporter's names (camelCase, counters without _total) are linted by design;
    # a parse error (a second HELP line, a bad label) starts with "error" and is ours.
    output = await asyncio.to_thread(promtool_check_metrics, text)
    assert "ifHCInOctets counter metrics should have" in output  # promtool did read it
    assert [line for line in output.splitlines() if line.startswith("error")] == []


def address_rows(text: str) -> set[str]:
    return {
        dict(labels)["address"]
        for (name, labels), _ in parse_exposition(text).items()
        if name == "scout_target_address_info"
    }


async def test_a_device_by_name_exports_the_addresses_its_name_resolves_to(client, snmpd):
    status, by_name = await scrape(client, target=f"localhost:{snmpd.port}", module="system")
    assert status == 200
    assert sample(by_name, "scout_snmp_module_success", module="system") == 1, by_name
    here = {sockaddr[0] for *_, sockaddr in socket.getaddrinfo("localhost", None)}
    assert address_rows(by_name) == here
    output = await asyncio.to_thread(promtool_check_metrics, by_name)
    assert [line for line in output.splitlines() if line.startswith("error")] == []
    # By address: the same series but the address rows, which the instance makes needless.
    _, by_address = await scrape(client, target=snmpd.target, module="system")
    assert "scout_target_address_info" not in by_address
    assert {
        name for name, _ in parse_exposition(by_name) if name != "scout_target_address_info"
    } == {name for name, _ in parse_exposition(by_address)}


def recording_sessions(opened: list[ClosingSession], asked: asyncio.Event) -> SessionFactory:
    """A session factory keeping each session it opens in ``opened``; each sets ``asked``."""

    def open_session(
        host: str, port: int, credentials: Credentials, *, timeout: float, retries: int
    ) -> ClosingSession:
        opened.append(ClosingSession(host, port, credentials, timeout=timeout, retries=retries))
        opened[-1].asked = asked
        return opened[-1]

    return open_session


def if_mib_job(snmpd, auth_name: str) -> ScrapeJob[Target, SnmpModule, SnmpAuth]:
    """An if_mib scrape of ``snmpd`` under ``auth_name``, due within 10 s."""
    host, port = snmpd.target.rsplit(":", 1)
    return ScrapeJob(
        Target(host, int(port)),
        (("if_mib", builtin_modules()["if_mib"]),),
        auth_name,
        SnmpAuth(type="snmp", community=SecretStr("public")),
        asyncio.get_running_loop().time() + 10,
    )


async def test_the_session_cap_never_closes_a_session_a_scrape_is_using(snmpd, monkeypatch):
    # One session allowed (a small open-files limit), two scrapes of one device
    # with two auths (two sessions) at once: the second must not close the
    # first's socket under it; the first is closed when it is done instead.
    monkeypatch.setattr(scraper_module, "MAX_SESSIONS", 1)
    opened: list[ClosingSession] = []
    asked = asyncio.Event()
    scraper = SnmpScraper(session_factory=recording_sessions(opened, asked))
    first_families: list[Family] = []
    first = asyncio.create_task(scraper.scrape(if_mib_job(snmpd, "a"), first_families))
    await asked.wait()
    second_families: list[Family] = []
    second = asyncio.create_task(scraper.scrape(if_mib_job(snmpd, "b"), second_families))
    await asyncio.sleep(0)  # the second scrape opens its session
    assert len(opened) == 2
    assert not first.done()  # the first scrape was still reading through its session
    assert await first == (True, None)
    assert await second == (True, None)
    for families in (first_families, second_families):
        [success] = [f for f in families if f.name == "scout_snmp_module_success"]
        assert success.samples == [((("module", "if_mib"),), 1)]
    # Released over the cap, the first session is closed; the second stays.
    for _ in range(3):
        await asyncio.sleep(0)
    assert [session.closed for session in opened] == [True, False]
    await scraper.close()
    assert opened[1].closed


async def test_closing_the_scraper_lets_a_scrape_in_flight_finish_on_its_session(snmpd):
    # A reload closes the old scraper while scrapes may be reading through it: they
    # must finish (not fail on a closed socket), and their sessions close after them.
    opened: list[ClosingSession] = []
    asked = asyncio.Event()
    scraper = SnmpScraper(session_factory=recording_sessions(opened, asked))
    families: list[Family] = []
    scrape = asyncio.create_task(scraper.scrape(if_mib_job(snmpd, "a"), families))
    await asked.wait()
    await scraper.close()  # as a reload does, mid-scrape
    assert not opened[0].closed  # still in use
    assert await scrape == (True, None)
    [success] = [f for f in families if f.name == "scout_snmp_module_success"]
    assert success.samples == [((("module", "if_mib"),), 1)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert opened[0].closed  # closed once its scrape let go of it


class ClosingSession(SnmpSession):
    """A real session that says when it is first asked for something, and remembers being closed."""

    closed = False
    asked: asyncio.Event | None = None

    async def get(self, oids: Sequence[Oid], *, deadline: float | None = None) -> list[VarBind]:
        if self.asked is not None:
            self.asked.set()
        return await super().get(oids, deadline=deadline)

    async def close(self) -> None:
        self.closed = True
        await super().close()


class GatedRelay(asyncio.DatagramProtocol):
    """A UDP relay in front of a real agent that holds requests until ``release()``.

    It keeps scrapes in flight for as long as a test needs, without timing:
    ``held`` counts the requests waiting, ``clients`` the exporter sockets seen
    (one per SNMP session). Answers go back as the agent sends them.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.clients: set[tuple[str, int]] = set()
        self.held: list[tuple[bytes, tuple[str, int]]] = []
        self.arrived = asyncio.Event()
        self._open = False
        self._listener: asyncio.DatagramTransport | None = None
        self._upstreams: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        # One socket opening per client: a retransmission held with the first
        # try must not open a second one (which nothing would close).
        self._opening: dict[tuple[str, int], asyncio.Task[asyncio.DatagramTransport]] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None
        host, port = self._listener.get_extra_info("sockname")[:2]
        return host, port

    @property
    def target(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        client = (str(addr[0]), int(addr[1]))
        self.clients.add(client)
        if self._open:
            self._forward(data, client)
        else:
            self.held.append((data, client))
            self.arrived.set()

    def release(self) -> None:
        """Let every held request through, and every later one straight away."""
        self._open = True
        held, self.held = self.held, []
        for data, client in held:
            self._forward(data, client)

    def _forward(self, data: bytes, client: tuple[str, int]) -> None:
        upstream = self._upstreams.get(client)
        if upstream is not None:
            upstream.sendto(data)
            return
        opening = self._opening.get(client)
        if opening is None:
            opening = self._opening[client] = asyncio.ensure_future(self._open_upstream(client))

        def send(task: asyncio.Task[asyncio.DatagramTransport]) -> None:
            if not task.cancelled() and task.exception() is None:
                task.result().sendto(data)

        opening.add_done_callback(send)  # callbacks run in order: so do the datagrams

    async def _open_upstream(self, client: tuple[str, int]) -> asyncio.DatagramTransport:
        listener = self._listener
        assert listener is not None

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, addr: Any) -> None:
                listener.sendto(reply, client)

        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.upstream)
        self._upstreams[client] = upstream
        return upstream

    def close(self) -> None:
        for task in self._opening.values():
            task.cancel()
        for upstream in self._upstreams.values():
            upstream.close()
        if self._listener is not None:
            self._listener.close()


def sockets_to(address: tuple[str, int]) -> int:
    """This process's UDP sockets connected to ``address``: the SNMP sessions to it."""
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="udp")
        if conn.raddr and (conn.raddr.ip, conn.raddr.port) == address
    )


async def test_a_reload_during_scrapes_lets_them_finish_and_closes_their_sessions_after(
    aiohttp_client, snmpd, tmp_path
):
    # POST /-/reload (or SIGHUP) while scrapes are reading through their sessions:
    # they must finish on them (not fail with "session closed"), the sessions must
    # close once they are done, and the next scrape must use the new config.
    relay = GatedRelay(snmpd.target)
    await relay.start()
    try:
        config = tmp_path / "scout.yml"
        two_auths = (
            f"auths: {{one: {{type: snmp, community: public}},"
            f" two: {{type: snmp, community: public, {LOOPBACK_ONLY}}}}}\n"
        )
        config.write_text(two_auths)
        settings = Settings(
            config_file=config, enabled_collectors=frozenset(), enable_lifecycle=True
        )
        client = await aiohttp_client(create_app(settings))
        # A long deadline: the relay, not the deadline, decides when they end.
        modules = ["if_mib", "system", "if_mib,system"] * 2
        in_flight = [
            asyncio.create_task(scrape(client, "60", target=relay.target, auth=auth, module=module))
            for auth in ("one", "two")
            for module in modules[:3]
        ]
        # One session per auth (the modules share timeout and retries): both asking.
        async with asyncio.timeout(60):
            while len(relay.clients) < 2:
                relay.arrived.clear()
                await relay.arrived.wait()
        assert sockets_to(relay.address) == 2
        # The new config takes the second auth's secret away: a scrape after the
        # reload must use it, not a session (or secret) kept from before.
        config.write_text(
            "auths: {one: {type: snmp, community: public},"
            f" two: {{type: snmp, community: no-longer-public, {LOOPBACK_ONLY}}}}}\n"
        )
        reloaded = await client.post("/-/reload")
        assert reloaded.status == 200, await reloaded.text()
        assert not any(task.done() for task in in_flight)
        assert sockets_to(relay.address) == 2  # still in use: not closed under the scrapes
        relay.release()
        for asked, (status, text) in zip(modules, await asyncio.gather(*in_flight), strict=True):
            assert status == 200
            for module in asked.split(","):
                assert sample(text, "scout_snmp_module_success", module=module) == 1, text
            assert sample(text, "scout_snmp_device_reachable") == 1, text
        # Their scrapes done, the old sessions close (on the loop's next turns).
        for _ in range(100):
            if sockets_to(relay.address) == 0:
                break
            await asyncio.sleep(0)
        assert sockets_to(relay.address) == 0
        clients_before = set(relay.clients)
        _, after = await scrape(client, target=relay.target, auth="one", module="system")
        assert sample(after, "scout_snmp_module_success", module="system") == 1
        assert relay.clients - clients_before  # a fresh session, from a new socket
        _, changed = await scrape(
            client, scrape_timeout="2", target=relay.target, auth="two", module="system"
        )
        assert sample(changed, "scout_snmp_module_success", module="system") == 0
        # Closing the app (as at exit) closes the sessions the new scraper opened.
        await client.close()
        assert sockets_to(relay.address) == 0
    finally:
        relay.close()
