"""``/winrm`` end to end: the exporter, pypsrp and a local WS-Man listener over HTTPS.

The listener (``wsman_server``) answers as Windows does; the host behind it
(``fake_host``) answers the scrape script with CIM rows. Every fault the issue
names is provoked at the listener: refused credentials, an unreachable port, a
host slower than the deadline, a spent shell quota, garbled and truncated
output, a host that forgot the shell, an untrusted certificate.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import socket
from pathlib import Path

import pytest

from exporter.clients import winrm as winrm_client
from scripts.localstack import free_port
from tests.exporter.golden_files import assert_matches_golden, assert_promtool_clean
from tests.exporter.targets.winrm.conftest import PASSWORD
from tests.exporter.targets.winrm.fake_host import TICKS

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "winrm.prom"
# Values that change from run to run, replaced before comparing with the golden file.
_VARYING = re.compile(r"^(scout_winrm_scrape_duration_seconds) \S+$", re.MULTILINE)


def path(target: str, auth: str = "windows", module: str = "fileserver") -> str:
    return f"/winrm?target={target}&auth={auth}&module={module}"


def sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start!r} in:\n{text}")


async def test_a_full_scrape_matches_the_golden_exposition(exporter_client, wsman):
    client = await exporter_client()
    response = await client.get(path(wsman.target))
    assert response.status == 200
    assert_matches_golden(_VARYING.sub(r"\1 0.0", await response.text()), GOLDEN)


def test_the_golden_exposition_passes_promtool_check_metrics():
    assert_promtool_clean(GOLDEN.read_bytes())


async def test_the_shell_is_created_once_used_per_scrape_and_deleted_at_close(
    exporter_client, wsman
):
    client = await exporter_client()
    for _ in range(2):
        text = await (await client.get(path(wsman.target))).text()
        assert sample(text, "scout_winrm_success") == 1.0
    one_command = ["Command", "Send", "Receive", "Receive", "Receive", "Signal"]
    assert wsman.server.actions() == ["Create", *one_command, *one_command]
    assert wsman.server.shells_created == 1
    await client.close()
    assert wsman.server.actions()[-1] == "Delete"
    assert wsman.server.shells == {}


async def test_the_script_asks_only_for_the_module_s_collectors(exporter_client, wsman):
    module = "  small: {prober: winrm, collectors: [memory, service]}"
    client = await exporter_client(module=module)
    text = await (await client.get(path(wsman.target, module="small"))).text()
    [script] = wsman.server.host.scripts
    assert wsman.server.host.collectors_asked(script) == ["memory", "service"]
    assert sample(text, "windows_memory_physical_total_bytes") == 16777216 * 1024
    assert "windows_cpu_time_total" not in text


async def test_non_ascii_service_names_survive_the_trip(exporter_client, wsman):
    client = await exporter_client()
    text = await (await client.get(path(wsman.target))).text()
    assert sample(text, 'windows_service_state{name="監視サービス",state="stopped"}') == 1.0
    assert sample(text, 'windows_service_state{name="Überwachung",state="start pending"}') == 1.0
    assert 'display_name="Dienst-Überwachung"' in text


async def test_hostile_values_cost_only_their_series_and_keep_the_exposition(
    exporter_client, wsman
):
    """A lone surrogate in a name (a 500: UTF-8 cannot encode it) and a number too large
    for a float (the whole scrape failed as an internal error)."""
    rows = wsman.server.host.rows
    lone = dict(rows["service"][0], Name="bad\ud800name", DisplayName="\udfff")
    rows["service"].append(lone)
    rows["memory"][0]["TotalVisibleMemorySize"] = 10**400
    client = await exporter_client()
    response = await client.get(path(wsman.target))
    assert response.status == 200
    exposition = await response.read()
    assert_promtool_clean(exposition)
    text = exposition.decode()
    assert sample(text, "scout_winrm_success") == 1.0
    assert sample(text, 'windows_service_state{name="bad\ufffdname",state="running"}') == 1.0
    assert "windows_memory_physical_total_bytes" not in text
    assert sample(text, 'windows_exporter_collector_success{collector="memory"}') == 1.0


async def test_a_failing_collector_leaves_the_others_and_says_why(exporter_client, wsman, caplog):
    wsman.server.host.failing["update"] = "Access is denied."
    client = await exporter_client()
    with caplog.at_level(logging.INFO):
        text = await (await client.get(path(wsman.target))).text()
    assert sample(text, "scout_winrm_success") == 1.0
    assert sample(text, 'windows_exporter_collector_success{collector="update"}') == 0.0
    assert sample(text, 'windows_exporter_collector_success{collector="cpu"}') == 1.0
    assert "scout_windows_reboot_pending" not in text
    assert "update: Access is denied." in caplog.text


async def test_the_top_processes_are_ranked_by_cpu_since_the_last_scrape(exporter_client, wsman):
    client = await exporter_client()
    first = await (await client.get(path(wsman.target))).text()
    # No rate on the first scrape: only memory ranks.
    assert "scout_windows_top_process_cpu_ratio{" not in first
    rows = {row["IDProcess"]: row for row in wsman.server.host.rows["process"]}
    for row in rows.values():
        row["Timestamp_Sys100NS"] += 10 * TICKS  # ten seconds later
    rows[880]["PercentProcessorTime"] += 15 * TICKS  # 1.5 cores
    rows[2212]["PercentProcessorTime"] += 2 * TICKS  # 0.2 of one
    text = await (await client.get(path(wsman.target))).text()
    busiest = re.findall(r"^scout_windows_top_process_cpu_ratio\{(.*)\} (\S+)$", text, re.M)
    # top_processes: 2 in the module; svchost 1024 used nothing.
    assert busiest == [
        ('process="svchost",process_id="880"', "1.5"),
        ('process="sqlservr",process_id="2212"', "0.2"),
    ]


async def test_wrong_password_fails_with_the_reason_and_never_the_password(
    exporter_client, wsman, caplog
):
    client = await exporter_client(password="not-the-" + PASSWORD)
    with caplog.at_level(logging.DEBUG):
        response = await client.get(path(wsman.target))
        text = await response.text()
    assert response.status == 200
    assert sample(text, "scout_winrm_success") == 0.0
    assert sample(text, 'scout_winrm_scrape_error{reason="auth"}') == 1.0
    assert "auth: the host refused the credentials (HTTP 401)" in caplog.text
    assert PASSWORD not in caplog.text
    assert PASSWORD not in text
    assert wsman.server.actions() == ["401"]


async def test_a_password_basic_cannot_carry_fails_as_auth_and_shows_none_of_it(
    exporter_client, wsman, caplog
):
    # Basic encodes the credentials in Latin-1: the codec's own error names the
    # character it stopped at and where, a piece of the password.
    password = "Pa55" + "\u20ac" + "-wört"
    client = await exporter_client(password=password)
    with caplog.at_level(logging.DEBUG):
        text = await (await client.get(path(wsman.target))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="auth"}') == 1.0
    assert "auth: the credentials hold a character Basic cannot send (Latin-1 only)" in caplog.text
    for piece in ("\u20ac", "\\u20ac", "position", "wört"):
        assert piece not in caplog.text
        assert piece not in text
    assert wsman.server.actions() == []


async def test_an_unreachable_host_fails_as_unreachable(exporter_client, wsman):
    client = await exporter_client()
    closed = f"127.0.0.1:{free_port()}"
    text = await (await client.get(path(closed))).text()
    assert sample(text, "scout_winrm_success") == 0.0
    assert sample(text, 'scout_winrm_scrape_error{reason="unreachable"}') == 1.0


async def test_an_untrusted_certificate_is_refused(exporter_client, wsman, caplog):
    client = await exporter_client()
    text = await (await client.get(path(wsman.target, auth="windows_no_ca"))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="unreachable"}') == 1.0
    assert "TLS failed" in caplog.text
    assert wsman.server.actions() == []


async def test_a_slow_host_costs_only_its_own_deadline(exporter_client, wsman, caplog):
    client = await exporter_client()
    # Longer than the test's own timeout: only a scrape that gives up at its
    # deadline lets this test end, with no clock read here.
    wsman.server.receive_delay = 600.0
    response = await client.get(
        path(wsman.target), headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"}
    )
    text = await response.text()
    assert sample(text, "scout_winrm_success") == 0.0
    # The scrape's Receive was cut at the deadline; the stop waits for nothing.
    await client.close()
    assert "Receive" in wsman.server.actions()
    assert "timeout" in caplog.text


async def test_a_slow_host_does_not_hold_up_another(exporter_client, wsman, named_wsman):
    client = await exporter_client()
    wsman.server.receive_delay = 600.0  # never answers within any deadline
    timeout = {"X-Prometheus-Scrape-Timeout-Seconds": "3"}
    slow, fast = await asyncio.gather(
        client.get(path(wsman.target), headers=timeout),
        client.get(path(named_wsman.target), headers=timeout),
    )
    # Were the fast host queued behind the slow one, it would miss its own deadline.
    assert sample(await fast.text(), "scout_winrm_success") == 1.0
    assert sample(await slow.text(), "scout_winrm_success") == 0.0
    await client.close()


async def test_an_exhausted_shell_quota_fails_as_quota(exporter_client, wsman, caplog):
    wsman.server.max_shells = 0
    client = await exporter_client()
    text = await (await client.get(path(wsman.target))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="quota"}') == 1.0
    assert "maximum number of 0 concurrent shells" in caplog.text


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda out: out[: len(out) // 2], "the answer was cut short"),
        (lambda out: out.replace(b"H4sI", b"!!!!", 1), "the answer is garbled"),
        (lambda _out: b"The term 'Get-CimInstance' is not recognized\r\n", "no begin marker"),
    ],
    ids=["truncated", "garbled", "not-the-script"],
)
async def test_bad_output_fails_as_output(exporter_client, wsman, caplog, mangle, message):
    wsman.server.mangle = mangle
    client = await exporter_client()
    text = await (await client.get(path(wsman.target))).text()
    assert sample(text, "scout_winrm_success") == 0.0
    assert sample(text, 'scout_winrm_scrape_error{reason="output"}') == 1.0
    assert message in caplog.text


async def test_an_endless_answer_is_stopped_at_the_bound(exporter_client, wsman, monkeypatch):
    # A host that writes without end would otherwise fill the exporter's memory.
    monkeypatch.setattr(winrm_client, "MAX_OUTPUT_BYTES", 64 * 1024)
    wsman.server.mangle = lambda out: out + b"\r\n" * 100_000
    client = await exporter_client()
    text = await (await client.get(path(wsman.target))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="output"}') == 1.0
    # Stopped on the host once past the bound, not read to its end (three chunks).
    async with asyncio.timeout(60):  # a hang guard only
        await wsman.server.seen("Delete")
    actions = wsman.server.actions()
    assert actions[-3:] == ["Receive", "Signal", "Delete"]
    assert actions.count("Receive") < wsman.server.chunks


async def test_a_script_powershell_refused_fails_with_powershell_s_reason(
    exporter_client, wsman, caplog
):
    # A hardened server (Constrained Language Mode under AppLocker or WDAC)
    # stops the script before it writes a byte; PowerShell says why on stderr,
    # as CLIXML, and only that tells the admin what to change.
    wsman.server.mangle = lambda _out: b""
    wsman.server.stderr = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        b'<S S="Error">Cannot invoke method. Method invocation is supported only on core types'
        b" in this language mode._x000D__x000A_</S>"
        b'<S S="Error">At line:1 char:1_x000D__x000A_</S></Objs>'
    )
    client = await exporter_client()
    text = await (await client.get(path(wsman.target))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="output"}') == 1.0
    assert (
        "output: the answer has no begin marker (not the script's output); PowerShell said:"
        " Cannot invoke method. Method invocation is supported only on core types in this"
        " language mode. At line:1 char:1"
    ) in caplog.text


async def test_a_host_that_forgot_the_shell_gets_a_new_one(exporter_client, wsman):
    client = await exporter_client()
    await client.get(path(wsman.target))
    wsman.server.forget_shells()  # a reboot, or the shell's idle timeout
    text = await (await client.get(path(wsman.target))).text()
    assert sample(text, "scout_winrm_success") == 1.0
    assert wsman.server.shells_created == 2


async def test_a_target_outside_the_auth_s_allow_list_is_refused_before_sending(
    exporter_client, wsman
):
    client = await exporter_client()
    response = await client.get(path("192.0.2.7"))
    assert response.status == 403
    assert wsman.server.actions() == []


async def test_ntlm_over_http_encrypts_every_message(exporter_client, ntlm_wsman):
    client = await exporter_client()
    text = await (await client.get(path(ntlm_wsman.target, auth="windows_ntlm"))).text()
    assert sample(text, "scout_winrm_success") == 1.0
    assert sample(text, 'windows_service_state{name="監視サービス",state="stopped"}') == 1.0
    server = ntlm_wsman.server
    assert server.actions() == [
        "Create",
        "Command",
        "Send",
        "Receive",
        "Receive",
        "Receive",
        "Signal",
    ]
    # The listener refuses plain messages; every one of these came encrypted.
    assert server.encrypted_messages == len(server.actions())


async def test_ntlm_with_a_wrong_password_fails_as_auth(exporter_client, ntlm_wsman, caplog):
    client = await exporter_client(password="wrong-" + PASSWORD)
    with caplog.at_level(logging.DEBUG):
        text = await (await client.get(path(ntlm_wsman.target, auth="windows_ntlm"))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="auth"}') == 1.0
    assert PASSWORD not in caplog.text
    assert PASSWORD not in text


async def test_a_transport_whose_package_is_missing_says_which(exporter_client, ntlm_wsman, caplog):
    # CredSSP needs requests-credssp, which the exporter does not depend on.
    if importlib.util.find_spec("requests_credssp") is not None:
        pytest.skip("requests-credssp is installed here")
    client = await exporter_client()
    text = await (await client.get(path(ntlm_wsman.target, auth="windows_credssp"))).text()
    assert sample(text, 'scout_winrm_scrape_error{reason="protocol"}') == 1.0
    assert "requests-credssp is not installed" in caplog.text
    assert ntlm_wsman.server.actions() == []
    assert PASSWORD not in caplog.text


async def test_a_name_is_pinned_to_the_checked_address_and_tls_still_checks_the_name(
    exporter_client, named_wsman
):
    client = await exporter_client()
    text = await (await client.get(path(named_wsman.target))).text()
    assert sample(text, "scout_winrm_success") == 1.0
    port = named_wsman.target.rsplit(":", 1)[1]
    # Connected to the address the allow-list admitted, not to a fresh lookup of
    # the name; the certificate (for localhost only, no address) still passed.
    assert {exchange.host for exchange in named_wsman.server.exchanges} == {f"127.0.0.1:{port}"}
    # The addresses the name resolved to are exported, for the sidecar's topology.
    here = {sockaddr[0] for *_, sockaddr in socket.getaddrinfo("localhost", None)}
    exported = re.findall(r'^scout_target_address_info\{address="([^"]+)"\} 1\.0$', text, re.M)
    assert set(exported) == here
    assert len(exported) == len(here)


async def test_a_host_by_name_exports_its_addresses_and_one_by_address_none(
    exporter_client, wsman, named_wsman
):
    client = await exporter_client()
    by_name = await (await client.get(path(named_wsman.target))).text()
    by_address = await (await client.get(path(wsman.target))).text()
    assert sample(by_name, "scout_winrm_success") == sample(by_address, "scout_winrm_success") == 1
    assert "scout_target_address_info{" in by_name
    assert "scout_target_address_info" not in by_address
