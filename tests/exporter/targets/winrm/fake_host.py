"""A Windows Server as the scrape script sees it: CIM rows per collector, and its answer.

The rows are what ``Get-CimInstance ... | Select-Object`` gives for the
properties the script names, on a two-core file server with a German and a
Japanese service name (non-ASCII must survive the trip). ``answer`` builds
stdout the way the script writes it, for the collectors the script asks for.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import re
from typing import Any

from exporter.targets.winrm.script import BEGIN_MARKER, END_MARKER, FORMAT_VERSION

# Seconds as the script reports them, and 100 ns ticks as the raw counters count.
TICKS = 10_000_000


def _core(name: str, user: int, privileged: int, idle: int) -> dict[str, Any]:
    return {
        "Name": name,
        "PercentUserTime": user * TICKS,
        "PercentPrivilegedTime": privileged * TICKS,
        "PercentIdleTime": idle * TICKS,
        "PercentInterruptTime": 3 * TICKS,
        "PercentDPCTime": 2 * TICKS,
    }


def _service(
    name: str, display: str, state: str, mode: str, run_as: str, path: str, pid: int = 0
) -> dict[str, Any]:
    return {
        "Name": name,
        "DisplayName": display,
        "State": state,
        "StartMode": mode,
        "StartName": run_as,
        "PathName": path,
        "ProcessId": pid,
        # The script's join with Win32_Process: null for a service with no process.
        "ProcessStart": 1764000000 + pid if pid else None,
    }


_SVCHOST = "C:\\Windows\\system32\\svchost.exe -k netsvcs -p"


ROWS: dict[str, list[dict[str, Any]]] = {
    "cpu": [_core("0,0", 1200, 300, 86000), _core("0,1", 900, 250, 86500)],
    "memory": [
        {"TotalVisibleMemorySize": 16777216, "FreePhysicalMemory": 6291456},
        {
            "AvailableBytes": 6442450944,
            "CommittedBytes": 9663676416,
            "CommitLimit": 21474836480,
            "CacheBytes": 536870912,
        },
    ],
    "pagefile": [{"Name": "C:\\pagefile.sys", "AllocatedBaseSize": 4096, "CurrentUsage": 512}],
    "logical_disk": [
        {
            "Name": "C:",
            "FreeMegabytes": 20480,
            "PercentFreeSpace_Base": 102400,
            "DiskReadBytesPerSec": 12_000_000_000,
            "DiskWriteBytesPerSec": 34_000_000_000,
            "DiskReadsPerSec": 1_500_000,
            "DiskWritesPerSec": 2_500_000,
            "PercentDiskReadTime": 321 * TICKS,
            "PercentDiskWriteTime": 654 * TICKS,
            "PercentIdleTime": 86000 * TICKS,
            "CurrentDiskQueueLength": 1,
        },
        {
            "Name": "HarddiskVolume1",
            "FreeMegabytes": 80,
            "PercentFreeSpace_Base": 500,
            "DiskReadBytesPerSec": 1000,
            "DiskWriteBytesPerSec": 0,
            "DiskReadsPerSec": 10,
            "DiskWritesPerSec": 0,
            "PercentDiskReadTime": 0,
            "PercentDiskWriteTime": 0,
            "PercentIdleTime": 87000 * TICKS,
            "CurrentDiskQueueLength": 0,
        },
    ],
    "net": [
        {
            # The counters write "(" as "[" in instance names.
            "Name": "Intel[R] Ethernet Connection I219-LM",
            "BytesReceivedPersec": 91_000_000_000,
            "BytesSentPersec": 45_000_000_000,
            "PacketsReceivedPersec": 80_000_000,
            "PacketsSentPersec": 60_000_000,
            "PacketsReceivedErrors": 3,
            "PacketsOutboundErrors": 0,
            "PacketsReceivedDiscarded": 12,
            "PacketsOutboundDiscarded": 0,
            "PacketsReceivedUnknown": 5,
            "BytesTotalPersec": 136_000_000_000,
            "PacketsPersec": 140_000_000,
            "CurrentBandwidth": 1_000_000_000,
        }
    ],
    "os": [
        {
            "Caption": "Microsoft Windows Server 2022 Standard",
            "Version": "10.0.20348",
            "BuildNumber": "20348",
            "UBR": 2849,
            "InstallationType": "Server",
            "InstallTime": 1690000000,
            "Hostname": "fs01",
            "Domain": "corp.example.net",
        }
    ],
    "system": [
        {
            "Processes": 142,
            "Threads": 1830,
            "ContextSwitches": 987654321,
            "SystemCalls": 1234567890,
            "ProcessorQueueLength": 0,
            "BootTime": 1764000000.5,
        }
    ],
    "service": [
        _service(
            "Spooler",
            "Print Spooler",
            "Running",
            "Auto",
            "LocalSystem",
            "C:\\Windows\\System32\\spoolsv.exe",
            2480,
        ),
        _service("LanmanServer", "Server", "Running", "Auto", "LocalSystem", _SVCHOST, 880),
        _service("wuauserv", "Windows Update", "Stopped", "Manual", "LocalSystem", _SVCHOST),
        _service(
            "Überwachung",
            "Dienst-Überwachung",
            "Start Pending",
            "Auto",
            "NT AUTHORITY\\LocalService",
            '"C:\\Program Files\\Überwachung\\dienst.exe" --dienst',
        ),
        _service(
            "監視サービス",
            "監視サービス (表示名)",
            "Stopped",
            "Disabled",
            "LocalSystem",
            "C:\\監視\\monitor.exe",
        ),
    ],
    "update": [{"RebootPending": True, "LastInstalled": 1763596800}],
    "event_log": [
        {"Log": "System", "Critical": 1, "Error": 3},
        {"Log": "Application", "Critical": 0, "Error": 7},
    ],
    "process": [
        {
            "Name": "sqlservr",
            "IDProcess": 2212,
            "PercentProcessorTime": 5000 * TICKS,
            "WorkingSetPrivate": 4_200_000_000,
            "Timestamp_Sys100NS": 1000 * TICKS,
        },
        {
            "Name": "svchost",
            "IDProcess": 880,
            "PercentProcessorTime": 700 * TICKS,
            "WorkingSetPrivate": 90_000_000,
            "Timestamp_Sys100NS": 1000 * TICKS,
        },
        {
            # The counters number a second process of one name.
            "Name": "svchost#1",
            "IDProcess": 1024,
            "PercentProcessorTime": 900 * TICKS,
            "WorkingSetPrivate": 70_000_000,
            "Timestamp_Sys100NS": 1000 * TICKS,
        },
    ],
}

_RUN = re.compile(r"^Run '(\w+)' \{", re.MULTILINE)


class FakeHost:
    """What a Windows host answers to the scrape script; tests change ``rows`` or ``failing``."""

    def __init__(self) -> None:
        self.rows = copy.deepcopy(ROWS)
        self.failing: dict[str, str] = {}
        self.scripts: list[str] = []

    def collectors_asked(self, script: str) -> list[str]:
        return _RUN.findall(script)

    def document(self, script: str) -> dict[str, Any]:
        self.scripts.append(script)
        # The script names its properties: a wildcard query would be a defect.
        assert "SELECT *" not in script.upper()
        collectors: dict[str, Any] = {}
        for name in self.collectors_asked(script):
            if name in self.failing:
                collectors[name] = {"ok": False, "error": self.failing[name], "seconds": 0.01}
            else:
                collectors[name] = {"ok": True, "rows": self.rows[name], "seconds": 0.02}
        return {"v": FORMAT_VERSION, "collectors": collectors}

    def answer(self, script: str) -> bytes:
        return encode_answer(self.document(script))


def encode_answer(document: dict[str, Any]) -> bytes:
    """stdout as the script writes it: gzipped UTF-8 JSON in base64 between the markers."""
    # A lone surrogate (a Windows name may hold one) goes out as the \ud800 escape
    # a JSON writer gives it; everything else as UTF-8.
    text = json.dumps(document, ensure_ascii=False)
    packed = gzip.compress(text.encode("utf-8", errors="backslashreplace"))
    body = base64.b64encode(packed).decode("ascii")
    return f"{BEGIN_MARKER}\n{body}\n{END_MARKER}\n".encode("ascii")
