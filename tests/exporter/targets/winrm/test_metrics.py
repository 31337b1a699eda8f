"""The script's rows as families: choices the module makes about them."""

from __future__ import annotations

import math

from exporter.targets.winrm.metrics import ProcessSample, net, process, service
from exporter.targets.winrm.modules import WinrmModule
from tests.exporter.targets.winrm.fake_host import ROWS, TICKS


def _running(module: WinrmModule) -> dict[str, float]:
    [state, *_] = service({"ok": True, "rows": ROWS["service"]}, module, ProcessSample())
    return {s.labels["name"]: s.value for s in state.samples if s.labels["state"] == "running"}


def test_a_critical_service_is_reported_even_when_the_filter_leaves_it_out():
    # WindowsServiceStopped joins on the state series: a critical service the
    # filter dropped would have none, and its alert could never fire.
    module = WinrmModule.model_validate(
        {
            "prober": "winrm",
            "services": {"include": "wuauserv"},
            "critical_services": ["LanmanServer"],
        }
    )
    assert _running(module) == {"wuauserv": 0.0, "LanmanServer": 1.0}


def test_service_names_keep_their_case_and_the_critical_mark_joins_them():
    # windows_exporter writes the name as Windows has it since v0.29 (0.28 was
    # the last to lower-case it): rules written for it say name="LanmanServer".
    # Windows' names are case-insensitive, so is critical_services; the mark
    # takes the host's spelling, or WindowsServiceStopped would join nothing.
    module = WinrmModule(critical_services=["lanmanserver", "MSSQLSERVER"])
    families = service({"ok": True, "rows": ROWS["service"]}, module, ProcessSample())
    [state, *_, critical] = families
    assert {s.labels["name"] for s in state.samples} == {
        "Spooler",
        "LanmanServer",
        "wuauserv",
        "Überwachung",
        "監視サービス",
    }
    # A critical service the host lacks keeps the configured spelling.
    assert [s.labels["name"] for s in critical.samples] == ["LanmanServer", "MSSQLSERVER"]


def test_the_filter_still_drops_services_nobody_marked_critical():
    module = WinrmModule.model_validate({"prober": "winrm", "services": {"include": "wuauserv"}})
    assert _running(module) == {"wuauserv": 0.0}


def _process_rows(seconds: int, *rows: tuple[str, int, int]) -> dict:
    return {
        "ok": True,
        "rows": [
            {
                "Name": name,
                "IDProcess": pid,
                "PercentProcessorTime": cpu_seconds * TICKS,
                "WorkingSetPrivate": 1_000_000 * pid,
                "Timestamp_Sys100NS": seconds * TICKS,
            }
            for name, pid, cpu_seconds in rows
        ],
    }


def test_processes_of_one_name_keep_their_name_and_their_rate_when_renumbered():
    # The perf counters tell same-named processes apart as svchost, svchost#1,
    # svchost#2, numbered in the order they run: when one exits, the later ones
    # are renumbered. windows_exporter's process label is the bare name.
    module = WinrmModule(top_processes=2)
    state = ProcessSample()
    first = _process_rows(
        1000, ("svchost", 880, 100), ("svchost#1", 1024, 50), ("svchost#2", 1300, 40)
    )
    process(first, module, state)
    # Ten seconds later 880 has exited: 1024 is now svchost, 1300 svchost#1.
    second = _process_rows(1010, ("svchost", 1024, 52), ("svchost#1", 1300, 55))
    cpu_family, memory_family = process(second, module, state)
    assert [(s.labels["process"], s.labels["process_id"], s.value) for s in cpu_family.samples] == [
        ("svchost", "1300", 1.5),
        ("svchost", "1024", 0.2),
    ]
    assert {s.labels["process"] for s in memory_family.samples} == {"svchost"}


def test_adapters_are_named_as_the_counters_name_them():
    # windows_exporter v0.30 on writes nic as the counter instance is named
    # (its maintainers keep the spaces: two adapters may differ only by one);
    # the underscores everywhere were 0.28's. The counters already spell "("
    # as "[" and "#" as "_" in instance names.
    rows = [{"Name": "vmxnet3 Ethernet Adapter _2", "BytesReceivedPersec": 5}]
    [received, *_] = net({"ok": True, "rows": rows}, WinrmModule(), ProcessSample())
    assert [s.labels["nic"] for s in received.samples] == ["vmxnet3 Ethernet Adapter _2"]


def test_numbers_that_are_not_finite_read_as_missing():
    """JSON's NaN and Infinity (and 1e999) from a host: int() of one failed the whole
    scrape as an internal error, and a gauge of NaN or +Inf is no reading."""
    module = WinrmModule(top_processes=5)
    rows = _process_rows(1000, ("good", 4, 1), ("odd", 8, 1))
    rows["rows"][1].update(IDProcess=float("inf"), WorkingSetPrivate=float("nan"))
    cpu_family, memory_family = process(rows, module, ProcessSample())
    assert [(s.labels["process"], s.labels["process_id"]) for s in memory_family.samples] == [
        ("good", "4")
    ]
    assert {s.labels["process_id"] for s in cpu_family.samples} <= {"4", "0"}
    service_row = dict(ROWS["service"][0], ProcessId=float("-inf"), ProcessStart=float("nan"))
    families = service({"ok": True, "rows": [service_row]}, WinrmModule(), ProcessSample())
    values = [s.value for family in families for s in family.samples]
    assert values
    assert all(math.isfinite(value) for value in values)
