"""The one PowerShell script a ``/winrm`` scrape runs, and the reading of its answer.

The script gathers every enabled collector in one process: each collector is a
block that queries CIM with the properties it needs, never ``SELECT *``
(event logs are read with ``Get-WinEvent``'s filter, which the event log
service answers from its index; the CIM class for them scans the whole log).
A block that fails reports its error instead of its rows, so one broken WMI
provider costs one collector, not the scrape.

The answer is UTF-8 JSON, gzipped and base64-encoded between two marker lines:
the console code page of a remote shell would mangle non-ASCII names (services
in any language), and a missing end marker tells a truncated answer from a
short one. Shape of the decoded JSON::

    {"v": 1, "collectors": {
        "cpu": {"ok": true, "seconds": 0.05, "rows": [{"Name": "0,0", ...}]},
        "update": {"ok": false, "seconds": 0.2, "error": "Access denied"}}}

Rows carry the CIM property names as they are; ``exporter.targets.winrm.metrics``
maps them to metric families.

The script is sent on the command's stdin, read by a short bootstrap given as
``-EncodedCommand``: a command line is limited to 8191 characters, and
``-Command -`` would run stdin line by line, which breaks multi-line blocks.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from exporter.clients.winrm import MAX_TEXT_SHOWN, one_line
from exporter.targets.winrm.modules import CollectorName, WinrmModule

BEGIN_MARKER = "SCOUT-WINRM-BEGIN"
END_MARKER = "SCOUT-WINRM-END"
FORMAT_VERSION = 1
# Events counted per log and level in one window: Get-WinEvent builds an object
# per event, so a storm would take the scrape past its deadline uncapped.
MAX_EVENTS_COUNTED = 1000
# The most the answer's JSON may inflate to: a few megabytes on the busiest
# server; a gzip bomb from a hostile host stops here, not in the exporter's memory.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class ScriptOutputError(Exception):
    """The answer is not what the script writes: truncated, garbled or of another version."""


# One CIM query per entry: class and the properties read (the metrics' contract with Windows).
CIM_QUERIES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "cpu": (
        "Win32_PerfRawData_Counters_ProcessorInformation",
        (
            "Name",
            "PercentUserTime",
            "PercentPrivilegedTime",
            "PercentIdleTime",
            "PercentInterruptTime",
            "PercentDPCTime",
        ),
    ),
    "memory_os": (
        "Win32_OperatingSystem",
        ("TotalVisibleMemorySize", "FreePhysicalMemory"),
    ),
    "memory_perf": (
        "Win32_PerfRawData_PerfOS_Memory",
        ("AvailableBytes", "CommittedBytes", "CommitLimit", "CacheBytes"),
    ),
    "pagefile": ("Win32_PageFileUsage", ("Name", "AllocatedBaseSize", "CurrentUsage")),
    "logical_disk": (
        "Win32_PerfRawData_PerfDisk_LogicalDisk",
        (
            "Name",
            "FreeMegabytes",
            "PercentFreeSpace_Base",
            "DiskReadBytesPerSec",
            "DiskWriteBytesPerSec",
            "DiskReadsPerSec",
            "DiskWritesPerSec",
            "PercentDiskReadTime",
            "PercentDiskWriteTime",
            "PercentIdleTime",
            "CurrentDiskQueueLength",
        ),
    ),
    "net": (
        "Win32_PerfRawData_Tcpip_NetworkInterface",
        (
            "Name",
            "BytesReceivedPersec",
            "BytesSentPersec",
            "PacketsReceivedPersec",
            "PacketsSentPersec",
            "PacketsReceivedErrors",
            "PacketsOutboundErrors",
            "PacketsReceivedDiscarded",
            "PacketsOutboundDiscarded",
            "PacketsReceivedUnknown",
            "BytesTotalPersec",
            "PacketsPersec",
            "CurrentBandwidth",
        ),
    ),
    "os": (
        "Win32_OperatingSystem",
        ("Caption", "Version", "BuildNumber", "InstallDate"),
    ),
    "computer": ("Win32_ComputerSystem", ("DNSHostName", "Domain")),
    "system": (
        "Win32_PerfRawData_PerfOS_System",
        (
            "Processes",
            "Threads",
            "ContextSwitchesPersec",
            "SystemCallsPersec",
            "ProcessorQueueLength",
        ),
    ),
    "boot": ("Win32_OperatingSystem", ("LastBootUpTime",)),
    "service": (
        "Win32_Service",
        ("Name", "DisplayName", "State", "StartMode", "StartName", "PathName", "ProcessId"),
    ),
    # When each service's process started (windows_service_process).
    "service_process": ("Win32_Process", ("ProcessId", "CreationDate")),
    "hotfix": ("Win32_QuickFixEngineering", ("HotFixID", "InstalledOn")),
    "process": (
        "Win32_PerfRawData_PerfProc_Process",
        ("Name", "IDProcess", "PercentProcessorTime", "WorkingSetPrivate", "Timestamp_Sys100NS"),
    ),
}

# Registry values whose presence means Windows waits for a reboot to finish an install.
_REBOOT_KEYS = (
    r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending",
    r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired",
)
_SESSION_MANAGER = r"HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager"
_CURRENT_VERSION = r"HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion"

# Helpers every block may use: a CIM query with explicit properties, and the
# block runner that times a block and catches its error.
_PRELUDE = r"""$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
function Q($class, $props, $filter) {
  $a = @{ClassName = $class; Property = $props}
  if ($filter) { $a.Filter = $filter }
  @(Get-CimInstance @a | Select-Object -Property $props)
}
function T($d) { if ($d) { ([DateTimeOffset]$d).ToUnixTimeMilliseconds() / 1000 } else { $null } }
$out = [ordered]@{}
function Run($name, [scriptblock]$block) {
  $w = [Diagnostics.Stopwatch]::StartNew()
  try { $r = [ordered]@{ok = $true; rows = @(& $block)} }
  catch { $r = [ordered]@{ok = $false; error = $_.Exception.Message} }
  $r.seconds = $w.Elapsed.TotalSeconds
  $out[$name] = $r
}
"""

_EPILOGUE = r"""$doc = [ordered]@{v = %(version)d; collectors = $out}
$json = ConvertTo-Json -InputObject $doc -Depth 5 -Compress
$bytes = [Text.Encoding]::UTF8.GetBytes($json)
$ms = New-Object IO.MemoryStream
$gz = New-Object IO.Compression.GZipStream($ms, [IO.Compression.CompressionMode]::Compress)
$gz.Write($bytes, 0, $bytes.Length); $gz.Close()
[Console]::Out.Write("%(begin)s`n" + [Convert]::ToBase64String($ms.ToArray()) + "`n%(end)s`n")
"""


def _ps_list(items: Sequence[str]) -> str:
    return ",".join(f"'{item}'" for item in items)


def _query(key: str, filter_: str = "") -> str:
    cim_class, properties = CIM_QUERIES[key]
    tail = f' "{filter_}"' if filter_ else ""
    return f"Q '{cim_class}' @({_ps_list(properties)}){tail}"


def _block(name: CollectorName, module: WinrmModule) -> str:
    """The script block of one collector: what it returns is that collector's rows."""
    if name == "cpu":
        return _query("cpu", "NOT Name LIKE '%_Total'")
    if name == "memory":
        return f"({_query('memory_os')}) + ({_query('memory_perf')})"
    if name == "pagefile":
        return _query("pagefile")
    if name == "logical_disk":
        return _query("logical_disk", "Name <> '_Total'")
    if name == "net":
        return _query("net")
    if name == "os":
        return (
            f"$o = ({_query('os')})[0]; $c = ({_query('computer')})[0]\n"
            f"  $cv = Get-ItemProperty -Path '{_CURRENT_VERSION}' -ErrorAction SilentlyContinue\n"
            "  [ordered]@{Caption = $o.Caption; Version = $o.Version; BuildNumber = $o.BuildNumber;"
            " UBR = $cv.UBR; InstallationType = $cv.InstallationType;"
            " InstallTime = T $o.InstallDate; Hostname = $c.DNSHostName; Domain = $c.Domain}"
        )
    if name == "system":
        return (
            f"$s = ({_query('system')})[0]; $b = ({_query('boot')})[0]\n"
            "  [ordered]@{Processes = $s.Processes; Threads = $s.Threads;"
            " ContextSwitches = $s.ContextSwitchesPersec; SystemCalls = $s.SystemCallsPersec;"
            " ProcessorQueueLength = $s.ProcessorQueueLength; BootTime = T $b.LastBootUpTime}"
        )
    if name == "service":
        return (
            f"$started = @{{}}; foreach ($p in ({_query('service_process')})) {{"
            " $started[[int]$p.ProcessId] = T $p.CreationDate }\n"
            f"  {_query('service')} | ForEach-Object {{ $_ | Add-Member -PassThru"
            " -NotePropertyName ProcessStart -NotePropertyValue"
            " $(if ($_.ProcessId) { $started[[int]$_.ProcessId] } else { $null }) }"
        )
    if name == "update":
        keys = _ps_list(_REBOOT_KEYS)
        return (
            f"$pending = [bool](@({keys}) | Where-Object {{ Test-Path $_ }})\n"
            f"  $rename = Get-ItemProperty -Path '{_SESSION_MANAGER}'"
            " -Name PendingFileRenameOperations -ErrorAction SilentlyContinue\n"
            # InstalledOn is a string, written M/d/yyyy whatever the locale, or
            # on some hotfixes a FILETIME in hex; one that is neither is skipped,
            # not allowed to fail the block (and the reboot flag with it).
            f"  $last = {_query('hotfix')} | Where-Object {{ $_.InstalledOn }} | ForEach-Object"
            " { $on = $_.InstalledOn; try { if ($on -match '^[0-9a-fA-F]{16}$')"
            " { [datetime]::FromFileTime([Convert]::ToInt64($on, 16)) } else"
            " { [datetime]::Parse($on, [Globalization.CultureInfo]::InvariantCulture) } }"
            " catch { } } | Sort-Object | Select-Object -Last 1\n"
            "  [ordered]@{RebootPending = ($pending -or [bool]$rename);"
            " LastInstalled = T $last}"
        )
    if name == "event_log":
        # As scout_windows_event_log_window_seconds says it: 1.5 s is not 1 s.
        seconds = f"{module.event_log_window.total_seconds():.3f}".rstrip("0").rstrip(".")
        # Get-WinEvent reports an empty answer as the error NoMatchingEventsFound:
        # that is a count of 0; any other (access denied) fails the block.
        # Each level on its own (1 critical, 2 error), so errors cannot crowd the
        # critical events out of the bound.
        return (
            f"$since = (Get-Date).AddSeconds(-{seconds})\n"
            "  foreach ($log in 'System', 'Application') {\n"
            "    $n = @{}\n"
            "    foreach ($level in 1, 2) {\n"
            "      $n[$level] = try { @(Get-WinEvent -FilterHashtable @{LogName = $log;"
            f" Level = $level; StartTime = $since}} -MaxEvents {MAX_EVENTS_COUNTED}"
            " -ErrorAction Stop).Count }"
            " catch { if ($_.FullyQualifiedErrorId -like 'NoMatchingEventsFound*') { 0 }"
            " else { throw } }\n"
            "    }\n"
            "    [ordered]@{Log = $log; Critical = $n[1]; Error = $n[2]}\n"
            "  }"
        )
    if name == "process":
        return _query("process", "Name <> '_Total' AND Name <> 'Idle'")
    raise AssertionError(f"no script block for collector {name!r}")


def build_script(module: WinrmModule) -> str:
    """The whole script for ``module``'s collectors, in ASCII."""
    blocks = "".join(
        f"Run '{name}' {{\n  {_block(name, module)}\n}}\n" for name in module.collectors
    )
    epilogue = _EPILOGUE % {"version": FORMAT_VERSION, "begin": BEGIN_MARKER, "end": END_MARKER}
    script = _PRELUDE + blocks + epilogue
    script.encode("ascii")  # the script travels through the console code page
    return script


# Reads the script from stdin and runs it as one block (see the module docstring).
_BOOTSTRAP = "$s = [Console]::In.ReadToEnd(); & ([scriptblock]::Create($s))"


def bootstrap_arguments() -> list[str]:
    """``powershell.exe``'s arguments: no profile, no prompt, the bootstrap encoded."""
    encoded = base64.b64encode(_BOOTSTRAP.encode("utf-16-le")).decode("ascii")
    return ["-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]


def _inflate(compressed: bytes) -> bytes:
    """The gzip member ``compressed`` holds, at most ``MAX_ANSWER_BYTES`` of it."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer
    raw = inflater.decompress(compressed, MAX_ANSWER_BYTES)
    if inflater.eof:
        return raw
    if len(raw) >= MAX_ANSWER_BYTES:
        raise ScriptOutputError(f"the answer inflates to more than {MAX_ANSWER_BYTES} bytes")
    raise ValueError("the compressed data ends early")


# PowerShell's stderr over a remote shell is CLIXML: error records as <S S="Error">
# strings, with characters outside XML's comfort escaped as _xHHHH_.
_CLIXML_ERROR = re.compile(r'<S S="Error">(.*?)</S>', re.DOTALL)
_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
MAX_STDERR_SHOWN = MAX_TEXT_SHOWN


def powershell_errors(stderr: bytes) -> str:
    """What PowerShell wrote on stderr, as one line of at most ``MAX_STDERR_SHOWN`` characters."""
    text = stderr.decode("utf-8", errors="replace")
    if text.lstrip().startswith("#< CLIXML"):
        records = _CLIXML_ERROR.findall(text)
        text = " ".join(
            html.unescape(_CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), record))
            for record in records
        )
    return one_line(text, MAX_STDERR_SHOWN)


def parse_output(stdout: bytes, stderr: bytes = b"") -> dict[str, dict[str, Any]]:
    """The collectors' results from the script's stdout; raises ``ScriptOutputError``.

    The error names what PowerShell wrote on ``stderr``, if anything: when the
    script did not run (a language mode, a policy), that is the reason.
    """
    try:
        return _parse(stdout)
    except ScriptOutputError as exc:
        said = powershell_errors(stderr)
        if not said:
            raise
        raise ScriptOutputError(f"{exc}; PowerShell said: {said}") from None


# JSON may escape half of a surrogate pair alone (\ud800; a Windows name may hold one):
# Python keeps it, and the exposition could not be encoded as UTF-8. Escaped
# backslashes are matched too, so that "\\ud800" (a backslash, then text) stays.
_ESCAPES = re.compile(
    r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _without_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate's escape replaced by U+FFFD's."""
    # PowerShell escapes <, >, ' and & as \u003c and so on: look for a surrogate's
    # escape, not any escape, before the substitution calls back for each backslash.
    if _SURROGATE_ESCAPE.search(text) is None:
        return text
    return _ESCAPES.sub(lambda m: "\\ufffd" if len(m.group()) == 6 else m.group(), text)


def _parse(stdout: bytes) -> dict[str, dict[str, Any]]:
    text = stdout.decode("ascii", errors="replace")
    start = text.find(BEGIN_MARKER)
    if start < 0:
        raise ScriptOutputError("the answer has no begin marker (not the script's output)")
    body = text[start + len(BEGIN_MARKER) :]
    end = body.find(END_MARKER)
    if end < 0:
        raise ScriptOutputError(f"the answer was cut short ({len(stdout)} bytes, no end marker)")
    try:
        raw = _inflate(base64.b64decode("".join(body[:end].split()), validate=True))
        document = json.loads(_without_lone_surrogates(raw.decode("utf-8")))
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ScriptOutputError(f"the answer is garbled: {exc}") from None
    if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION:
        raise ScriptOutputError("the answer is not in the format this exporter reads")
    collectors = document.get("collectors")
    if not isinstance(collectors, dict) or not all(
        isinstance(result, dict) for result in collectors.values()
    ):
        raise ScriptOutputError("the answer has no collectors")
    return collectors
