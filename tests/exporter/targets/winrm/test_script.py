"""The scrape script as text, and the reading of its answer."""

from __future__ import annotations

import base64
import gzip
import re

import pytest

from exporter.targets.winrm import script as script_module
from exporter.targets.winrm.modules import COLLECTORS, WinrmModule
from exporter.targets.winrm.script import (
    CIM_QUERIES,
    MAX_EVENTS_COUNTED,
    MAX_STDERR_SHOWN,
    ScriptOutputError,
    bootstrap_arguments,
    build_script,
    parse_output,
    powershell_errors,
)
from tests.exporter.targets.winrm.fake_host import FakeHost, encode_answer


def test_every_cim_query_names_its_properties():
    script = build_script(WinrmModule())
    queries = re.findall(r"\bQ '(\w+)' @\(([^)]*)\)", script)
    assert {cim_class for cim_class, _ in queries} == {c for c, _ in CIM_QUERIES.values()}
    for _, properties in queries:
        assert properties.strip(), "a query without properties would read every one"
    assert "*" not in "".join(p for _, p in queries)


def test_the_script_has_one_block_per_enabled_collector_in_order():
    script = build_script(WinrmModule(collectors=["service", "cpu"]))
    assert re.findall(r"^Run '(\w+)'", script, re.MULTILINE) == ["service", "cpu"]
    full = build_script(WinrmModule())
    assert re.findall(r"^Run '(\w+)'", full, re.MULTILINE) == list(COLLECTORS)


def test_the_event_log_window_goes_into_the_script():
    module = WinrmModule.model_validate({"prober": "winrm", "event_log_window": "5m"})
    assert "AddSeconds(-300)" in build_script(module)


def test_the_bootstrap_reads_the_script_from_stdin():
    arguments = bootstrap_arguments()
    assert arguments[:3] == ["-NoLogo", "-NoProfile", "-NonInteractive"]
    assert arguments[3] == "-EncodedCommand"
    decoded = base64.b64decode(arguments[4]).decode("utf-16-le")
    assert "[Console]::In.ReadToEnd()" in decoded
    # A command line stops at 8191 characters: the script itself cannot travel there.
    assert len(" ".join(arguments)) < 1000


def test_the_answer_round_trips_with_noise_around_it():
    host = FakeHost()
    script = build_script(WinrmModule(collectors=["service"]))
    stdout = b"#< CLIXML\r\n" + host.answer(script) + b"\r\n"
    collectors = parse_output(stdout)
    assert [row["Name"] for row in collectors["service"]["rows"]][-1] == "監視サービス"


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        (b"", "no begin marker"),
        (b"SCOUT-WINRM-BEGIN\nH4sIAAAA", "cut short"),
        (b"SCOUT-WINRM-BEGIN\n%%%%\nSCOUT-WINRM-END\n", "garbled"),
        (
            b"SCOUT-WINRM-BEGIN\n"
            + base64.b64encode(gzip.compress(b"{not json"))
            + b"\nSCOUT-WINRM-END\n",
            "garbled",
        ),
        (encode_answer({"v": 99, "collectors": {}}), "not in the format"),
        (encode_answer({"v": 1, "collectors": []}), "no collectors"),
        (encode_answer({"v": 1, "collectors": {"cpu": "ok"}}), "no collectors"),
    ],
    ids=["empty", "truncated", "not-base64", "not-json", "version", "list", "not-mapping"],
)
def test_bad_answers_raise_with_what_is_wrong(stdout, message):
    with pytest.raises(ScriptOutputError, match=message):
        parse_output(stdout)


def test_an_answer_that_inflates_past_the_bound_is_refused(monkeypatch):
    # A gzip bomb from a hostile host: a few kilobytes that would inflate to
    # whatever the host likes. Valid JSON (trailing blanks), so only the bound stops it.
    monkeypatch.setattr(script_module, "MAX_ANSWER_BYTES", 1024 * 1024)
    bomb = gzip.compress(b'{"v": 1, "collectors": {}}' + b" " * (2 * 1024 * 1024))
    assert len(bomb) < 10_000
    stdout = b"SCOUT-WINRM-BEGIN\n" + base64.b64encode(bomb) + b"\nSCOUT-WINRM-END\n"
    with pytest.raises(ScriptOutputError, match="inflates to more than 1048576 bytes"):
        parse_output(stdout)


def test_a_gzip_stream_cut_short_is_garbled():
    whole = gzip.compress(b'{"v": 1, "collectors": {}}')
    stdout = b"SCOUT-WINRM-BEGIN\n" + base64.b64encode(whole[:-6]) + b"\nSCOUT-WINRM-END\n"
    with pytest.raises(ScriptOutputError, match="garbled"):
        parse_output(stdout)


def _block_of(script: str, name: str) -> str:
    return script.split(f"Run '{name}' {{\n", 1)[1].split("\n}\n", 1)[0]


def test_one_unreadable_hotfix_date_costs_that_date_not_the_reboot_flag():
    # Win32_QuickFixEngineering.InstalledOn is M/d/yyyy, or on some hotfixes a
    # FILETIME in hex (01d0b8ab3a4c4000), or anything an installer wrote. Under
    # $ErrorActionPreference Stop, one Parse that throws would fail the whole
    # update block, reboot-pending flag included.
    block = _block_of(build_script(WinrmModule(collectors=["update"])), "update")
    assert "try {" in block, "the dates are read unguarded"
    guarded = block.split("try {", 1)[1].split("catch {", 1)[0]
    assert "[datetime]::Parse($on, [Globalization.CultureInfo]::InvariantCulture)" in guarded
    assert "[datetime]::FromFileTime([Convert]::ToInt64($on, 16))" in guarded
    assert "$on -match '^[0-9a-fA-F]{16}$'" in guarded


def test_an_event_log_the_user_cannot_read_fails_the_collector_instead_of_counting_zero():
    # Get-WinEvent reports "no events found" as an error: that one is a count
    # of 0. Any other (the user is not in Event Log Readers) must fail the
    # block, or a server full of errors would show none.
    block = _block_of(build_script(WinrmModule(collectors=["event_log"])), "event_log")
    assert "SilentlyContinue" not in block
    assert "-ErrorAction Stop" in block
    assert "$_.FullyQualifiedErrorId -like 'NoMatchingEventsFound*'" in block
    assert "else { throw }" in block


def test_an_event_storm_is_counted_up_to_a_bound_each_level_on_its_own():
    # Get-WinEvent builds an object per event: 100 000 errors a minute would
    # take the whole scrape past its deadline, just when the server is in
    # trouble. Counted per level, errors cannot crowd the critical ones out.
    block = _block_of(build_script(WinrmModule(collectors=["event_log"])), "event_log")
    [query] = re.findall(r"Get-WinEvent [^\n]*", block)
    assert f"-MaxEvents {MAX_EVENTS_COUNTED}" in query
    assert "Level = $level;" in query
    assert "foreach ($level in 1, 2)" in block
    assert MAX_EVENTS_COUNTED <= 10_000


def test_what_powershell_said_is_shown_on_one_bounded_line():
    plain = b"powershell.exe : The term 'x' is not recognized\r\n" + b"y" * 10_000
    shown = powershell_errors(plain)
    assert shown.startswith("powershell.exe : The term 'x' is not recognized y")
    assert len(shown) == MAX_STDERR_SHOWN
    with pytest.raises(ScriptOutputError, match=r"no begin marker .*; PowerShell said: powershell"):
        parse_output(b"", plain)
    with pytest.raises(ScriptOutputError, match=r"no begin marker \(not the script's output\)$"):
        parse_output(b"", b"")


def test_an_event_log_window_in_fractions_of_a_second_is_counted_as_written():
    # scout_windows_event_log_window_seconds says 1.5: the script must count
    # 1.5 s too, not 1 (nor 0 for 500ms, which would count nothing ever).
    for window, written in (("1500ms", "AddSeconds(-1.5)"), ("500ms", "AddSeconds(-0.5)")):
        module = WinrmModule.model_validate({"prober": "winrm", "event_log_window": window})
        assert written in build_script(module)


def _answer_of(json_text: str) -> bytes:
    body = base64.b64encode(gzip.compress(json_text.encode("utf-8"))).decode("ascii")
    return f"SCOUT-WINRM-BEGIN\n{body}\nSCOUT-WINRM-END\n".encode("ascii")


@pytest.mark.parametrize(
    ("escaped", "name"),
    [
        (r"a\ud800b", "a\ufffdb"),
        (r"\uDFFF\ud800", "\ufffd\ufffd"),
        (r"\ud800\ud83d\ude00", "\ufffd\U0001f600"),  # a lone half, then a whole pair
        (r"\\ud800", "\\ud800"),  # an escaped backslash, then text
        (r"\\\ud800", "\\\ufffd"),
    ],
)
def test_a_lone_surrogate_in_the_answer_becomes_the_replacement_character(escaped, name):
    """Valid JSON, but a string UTF-8 cannot encode: the exposition failed (a 500)."""
    document = '{"v": 1, "collectors": {"service": {"ok": true, "rows": [{"Name": "%s"}]}}}'
    collectors = parse_output(_answer_of(document % escaped))
    assert collectors["service"]["rows"][0]["Name"] == name


def test_an_answer_nested_past_the_recursion_limit_is_garbled():
    """Not an internal error from deep inside the JSON decoder."""
    with pytest.raises(ScriptOutputError, match="garbled"):
        parse_output(_answer_of("[" * 100_000 + "]" * 100_000))
