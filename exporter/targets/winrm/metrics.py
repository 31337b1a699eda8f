"""The script's rows as metric families: windows_exporter's names and labels, plus Scout's own.

The windows_* families are named, labelled and typed as windows_exporter
(v0.31) exports them, so its community dashboards and rules work unchanged;
the counters are the raw performance counters it reads, in base units
(100 ns ticks become seconds). Sample exposition (the metric contract)::

    windows_cpu_time_total{core="0,0",mode="idle"} 812345.5
    windows_memory_physical_total_bytes 1.7179869184e+10
    windows_memory_physical_free_bytes 6.442450944e+09
    windows_memory_committed_bytes 9.6e+09
    windows_memory_commit_limit 2.0e+10
    windows_pagefile_limit_bytes{file="C:\\\\pagefile.sys"} 4.294967296e+09
    windows_pagefile_free_bytes{file="C:\\\\pagefile.sys"} 3.8e+09
    windows_logical_disk_size_bytes{volume="C:"} 1.073741824e+11
    windows_logical_disk_free_bytes{volume="C:"} 2.147483648e+10
    windows_logical_disk_read_bytes_total{volume="C:"} 1.2e+10
    windows_logical_disk_read_seconds_total{volume="C:"} 321.5
    windows_net_bytes_received_total{nic="Intel[R] Ethernet"} 9.1e+10
    windows_net_bytes_total{nic="Intel[R] Ethernet"} 1.36e+11
    windows_os_info{build_number="20348",installation_type="Server",...,version="10.0.20348"} 1
    windows_os_hostname{domain="corp.example.net",fqdn="fs01.corp.example.net",hostname="fs01"} 1
    windows_os_install_time_timestamp_seconds 1.69e+09
    windows_system_boot_time_timestamp 1.7e+09
    windows_system_processes 142
    windows_system_threads 1830
    windows_service_state{name="Spooler",state="running"} 1
    windows_service_start_mode{name="Spooler",start_mode="auto"} 1
    windows_service_info{display_name="Print Spooler",name="Spooler",path_name="...",run_as="..."} 1
    windows_service_process{name="Spooler",process_id="2480"} 1.764000012e+09

Beyond windows_exporter (``scout_windows_*``)::

    scout_windows_service_critical{name="Spooler"} 1
    scout_windows_reboot_pending 0
    scout_windows_update_last_installed_timestamp_seconds 1.76e+09
    scout_windows_event_log_events{level="error",log="System"} 3
    scout_windows_event_log_window_seconds 60
    scout_windows_top_process_cpu_ratio{process="sqlservr",process_id="2212"} 0.41
    scout_windows_top_process_working_set_bytes{process="sqlservr",process_id="2212"} 4.2e+09

and per collector, from the script's own timing, under windows_exporter's
names for its own collectors' health (so its scrape-health panels work too)::

    windows_exporter_collector_success{collector="cpu"} 1
    windows_exporter_collector_duration_seconds{collector="cpu"} 0.05

Service names are written as the host spells them, as windows_exporter does
since v0.29 (it lower-cased them before). Network adapters are named as the
counters name their instances (``Intel[R] Ethernet _2``), as windows_exporter
writes ``nic`` since v0.30 (it replaced all but ``[A-Za-z0-9]`` before); process
names lose the counters' ``#N`` instance suffix, as windows_exporter's
``process`` label does. The top processes are ranked by CPU between this scrape
and the last (by CPU time since start on the first), and by private working
set, N of each.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.targets.winrm.modules import WinrmModule
from exporter.targets.winrm.script import MAX_EVENTS_COUNTED

TICKS_PER_SECOND = 1e7  # performance counters of type PERF_100NSEC_TIMER
MIB = 1024 * 1024
KIB = 1024

# Win32_Service.State as windows_exporter writes it; every service gets a series for each.
SERVICE_STATES = (
    "stopped",
    "start pending",
    "stop pending",
    "running",
    "continue pending",
    "pause pending",
    "paused",
    "unknown",
)
START_MODES = ("boot", "system", "auto", "manual", "disabled")
CPU_MODES = (
    ("PercentUserTime", "user"),
    ("PercentPrivilegedTime", "privileged"),
    ("PercentIdleTime", "idle"),
    ("PercentInterruptTime", "interrupt"),
    ("PercentDPCTime", "dpc"),
)
# The perf counters' instance suffix for processes of one name (svchost#3): the
# number moves when an earlier one exits, so the name is kept without it.
_PROCESS_INSTANCE = re.compile(r"#\d+$")


@dataclass(slots=True)
class ProcessSample:
    """A host's per-process CPU ticks at the last scrape, to rank by CPU since then."""

    timestamp: float = 0.0
    ticks: dict[tuple[str, int], float] = field(default_factory=dict)


def _number(row: Mapping[str, Any], key: str) -> float | None:
    """A finite number from a JSON number or a numeric string; ``None`` for anything else.

    JSON's NaN and Infinity (and 1e999, or an integer past a float's range) are no
    reading: int() of one would fail the scrape, and a gauge of one says nothing.
    """
    value = row.get(key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, int | float | str):
            number = float(value)
            return number if math.isfinite(number) else None
    except (OverflowError, ValueError):
        return None
    return None


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value)


def _rows(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rows = result.get("rows")
    if not isinstance(rows, list):
        return []
    return [row for row in rows if isinstance(row, dict)]


def _first(result: Mapping[str, Any]) -> Mapping[str, Any]:
    rows = _rows(result)
    return rows[0] if rows else {}


def _labelled(
    family: GaugeMetricFamily | CounterMetricFamily,
    rows: Iterable[Mapping[str, Any]],
    labels: Callable[[Mapping[str, Any]], list[str]],
    value: Callable[[Mapping[str, Any]], float | None],
) -> GaugeMetricFamily | CounterMetricFamily:
    for row in rows:
        number = value(row)
        if number is not None and math.isfinite(number):
            family.add_metric(labels(row), number)
    return family


def _single(name: str, documentation: str, value: float | None) -> list[Metric]:
    if value is None:
        return []
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return [family]


def cpu(result: Mapping[str, Any], _module: WinrmModule, _state: ProcessSample) -> list[Metric]:
    family = CounterMetricFamily(
        "windows_cpu_time_total",
        "Time that processor spent in different modes (dpc, idle, interrupt, privileged, user)",
        labels=["core", "mode"],
    )
    for row in _rows(result):
        core = _text(row, "Name")
        if not core or core.endswith("_Total"):
            continue
        for key, mode in CPU_MODES:
            ticks = _number(row, key)
            if ticks is not None:
                family.add_metric([core, mode], ticks / TICKS_PER_SECOND)
    return [family]


def memory(result: Mapping[str, Any], _module: WinrmModule, _state: ProcessSample) -> list[Metric]:
    merged: dict[str, Any] = {}
    for row in _rows(result):
        merged.update(row)
    total_kib = _number(merged, "TotalVisibleMemorySize")
    free_kib = _number(merged, "FreePhysicalMemory")
    return [
        *_single(
            "windows_memory_physical_total_bytes",
            "Total physical memory in bytes",
            None if total_kib is None else total_kib * KIB,
        ),
        *_single(
            "windows_memory_physical_free_bytes",
            "Physical memory in bytes available to processes without paging",
            None if free_kib is None else free_kib * KIB,
        ),
        *_single(
            "windows_memory_available_bytes",
            "Physical memory in bytes immediately available (standby, free and zero lists)",
            _number(merged, "AvailableBytes"),
        ),
        *_single(
            "windows_memory_committed_bytes",
            "Committed virtual memory in bytes",
            _number(merged, "CommittedBytes"),
        ),
        *_single(
            "windows_memory_commit_limit",
            "Virtual memory in bytes that can be committed without extending the paging files",
            _number(merged, "CommitLimit"),
        ),
        *_single(
            "windows_memory_cache_bytes",
            "Bytes used by the file system cache",
            _number(merged, "CacheBytes"),
        ),
    ]


def pagefile(
    result: Mapping[str, Any], _module: WinrmModule, _state: ProcessSample
) -> list[Metric]:
    rows = _rows(result)
    limit = _labelled(
        GaugeMetricFamily(
            "windows_pagefile_limit_bytes",
            "Number of bytes that can be stored in the paging file",
            labels=["file"],
        ),
        rows,
        lambda row: [_text(row, "Name")],
        lambda row: _scaled(_number(row, "AllocatedBaseSize"), MIB),
    )

    def free(row: Mapping[str, Any]) -> float | None:
        allocated, used = _number(row, "AllocatedBaseSize"), _number(row, "CurrentUsage")
        return None if allocated is None or used is None else (allocated - used) * MIB

    free_family = _labelled(
        GaugeMetricFamily(
            "windows_pagefile_free_bytes",
            "Number of bytes of the paging file not in use",
            labels=["file"],
        ),
        rows,
        lambda row: [_text(row, "Name")],
        free,
    )
    return [limit, free_family]


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


_DISK: Sequence[tuple[str, str, str, type[GaugeMetricFamily | CounterMetricFamily], float]] = (
    (
        "size_bytes",
        "PercentFreeSpace_Base",
        "Total size of the volume in bytes",
        GaugeMetricFamily,
        MIB,
    ),
    ("free_bytes", "FreeMegabytes", "Free space on the volume in bytes", GaugeMetricFamily, MIB),
    (
        "read_bytes_total",
        "DiskReadBytesPerSec",
        "Bytes read from the volume",
        CounterMetricFamily,
        1,
    ),
    (
        "write_bytes_total",
        "DiskWriteBytesPerSec",
        "Bytes written to the volume",
        CounterMetricFamily,
        1,
    ),
    ("reads_total", "DiskReadsPerSec", "Read operations on the volume", CounterMetricFamily, 1),
    ("writes_total", "DiskWritesPerSec", "Write operations on the volume", CounterMetricFamily, 1),
    (
        "read_seconds_total",
        "PercentDiskReadTime",
        "Seconds the volume was busy with reads",
        CounterMetricFamily,
        1 / TICKS_PER_SECOND,
    ),
    (
        "write_seconds_total",
        "PercentDiskWriteTime",
        "Seconds the volume was busy with writes",
        CounterMetricFamily,
        1 / TICKS_PER_SECOND,
    ),
    (
        "idle_seconds_total",
        "PercentIdleTime",
        "Seconds the volume was idle",
        CounterMetricFamily,
        1 / TICKS_PER_SECOND,
    ),
    (
        "requests_queued",
        "CurrentDiskQueueLength",
        "Requests outstanding on the volume",
        GaugeMetricFamily,
        1,
    ),
)


def _reader(key: str, factor: float) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda row: _scaled(_number(row, key), factor)


def _per_row(
    prefix: str,
    label: str,
    label_of: Callable[[Mapping[str, Any]], str],
    table: Sequence[tuple[str, str, str, type[GaugeMetricFamily | CounterMetricFamily], float]],
    rows: list[Mapping[str, Any]],
) -> list[Metric]:
    families: list[Metric] = []
    for suffix, key, documentation, family_type, factor in table:
        name = f"{prefix}_{suffix}"
        if family_type is CounterMetricFamily:
            name = name.removesuffix("_total")
        family = family_type(name, documentation, labels=[label])
        families.append(
            _labelled(
                family,
                rows,
                lambda row: [label_of(row)],
                _reader(key, factor),
            )
        )
    return families


def logical_disk(
    result: Mapping[str, Any], _module: WinrmModule, _state: ProcessSample
) -> list[Metric]:
    rows = [row for row in _rows(result) if _text(row, "Name") not in ("", "_Total")]
    return _per_row("windows_logical_disk", "volume", lambda row: _text(row, "Name"), _DISK, rows)


_NET: Sequence[tuple[str, str, str, type[GaugeMetricFamily | CounterMetricFamily], float]] = (
    (
        "bytes_received_total",
        "BytesReceivedPersec",
        "Bytes received by the adapter",
        CounterMetricFamily,
        1,
    ),
    ("bytes_sent_total", "BytesSentPersec", "Bytes sent by the adapter", CounterMetricFamily, 1),
    (
        "packets_received_total",
        "PacketsReceivedPersec",
        "Packets received by the adapter",
        CounterMetricFamily,
        1,
    ),
    (
        "packets_sent_total",
        "PacketsSentPersec",
        "Packets sent by the adapter",
        CounterMetricFamily,
        1,
    ),
    (
        "packets_received_errors_total",
        "PacketsReceivedErrors",
        "Inbound packets with errors",
        CounterMetricFamily,
        1,
    ),
    (
        "packets_outbound_errors_total",
        "PacketsOutboundErrors",
        "Outbound packets not sent because of errors",
        CounterMetricFamily,
        1,
    ),
    (
        "packets_received_discarded_total",
        "PacketsReceivedDiscarded",
        "Inbound packets discarded without an error",
        CounterMetricFamily,
        1,
    ),
    (
        "packets_outbound_discarded_total",
        "PacketsOutboundDiscarded",
        "Outbound packets discarded without an error",
        CounterMetricFamily,
        1,
    ),
    (
        "packets_received_unknown_total",
        "PacketsReceivedUnknown",
        "Inbound packets discarded for an unknown or unsupported protocol",
        CounterMetricFamily,
        1,
    ),
    (
        "bytes_total",
        "BytesTotalPersec",
        "Bytes received and sent by the adapter",
        CounterMetricFamily,
        1,
    ),
    (
        "packets_total",
        "PacketsPersec",
        "Packets received and sent by the adapter",
        CounterMetricFamily,
        1,
    ),
    (
        "current_bandwidth_bytes",
        "CurrentBandwidth",
        "Estimated current bandwidth of the adapter in bytes per second",
        GaugeMetricFamily,
        1 / 8,
    ),
)


def net(result: Mapping[str, Any], _module: WinrmModule, _state: ProcessSample) -> list[Metric]:
    rows = [row for row in _rows(result) if _text(row, "Name")]
    return _per_row("windows_net", "nic", lambda row: _text(row, "Name"), _NET, rows)


def os_info(result: Mapping[str, Any], _module: WinrmModule, _state: ProcessSample) -> list[Metric]:
    row = _first(result)
    if not row:
        return []
    version = _text(row, "Version")
    major, _, rest = version.partition(".")
    minor = rest.partition(".")[0]
    info = GaugeMetricFamily(
        "windows_os_info",
        "Product name and version of the operating system",
        labels=[
            "product",
            "version",
            "major_version",
            "minor_version",
            "build_number",
            "revision",
            "installation_type",
        ],
    )
    info.add_metric(
        [
            _text(row, "Caption"),
            version,
            major,
            minor,
            _text(row, "BuildNumber"),
            _text(row, "UBR"),
            _text(row, "InstallationType"),
        ],
        1,
    )
    hostname = _text(row, "Hostname")
    domain = _text(row, "Domain")
    names = GaugeMetricFamily(
        "windows_os_hostname",
        "Host name and domain of the computer",
        labels=["domain", "fqdn", "hostname"],
    )
    fqdn = f"{hostname}.{domain}" if domain and domain.upper() != "WORKGROUP" else hostname
    names.add_metric([domain, fqdn, hostname], 1)
    installed = _single(
        "windows_os_install_time_timestamp_seconds",
        "Unix time the operating system was installed",
        _number(row, "InstallTime"),
    )
    return [info, names, *installed]


def system(result: Mapping[str, Any], _module: WinrmModule, _state: ProcessSample) -> list[Metric]:
    row = _first(result)
    families = [
        *_single(
            "windows_system_boot_time_timestamp",
            "Unix time of the last boot",
            _number(row, "BootTime"),
        ),
        *_single("windows_system_processes", "Processes loaded", _number(row, "Processes")),
        *_single("windows_system_threads", "Threads in the system", _number(row, "Threads")),
        *_single(
            "windows_system_processor_queue_length",
            "Threads waiting in the processor queue",
            _number(row, "ProcessorQueueLength"),
        ),
    ]
    for name, key, documentation in (
        ("windows_system_context_switches", "ContextSwitches", "Context switches"),
        ("windows_system_system_calls", "SystemCalls", "System service calls"),
    ):
        value = _number(row, key)
        if value is not None:
            counter = CounterMetricFamily(name, documentation)
            counter.add_metric([], value)
            families.append(counter)
    return families


def service(result: Mapping[str, Any], module: WinrmModule, _state: ProcessSample) -> list[Metric]:
    state = GaugeMetricFamily(
        "windows_service_state",
        "The state of the service, 1 if the current state, 0 otherwise",
        labels=["name", "state"],
    )
    start_mode = GaugeMetricFamily(
        "windows_service_start_mode",
        "The start mode of the service, 1 if the current start mode, 0 otherwise",
        labels=["name", "start_mode"],
    )
    info = GaugeMetricFamily(
        "windows_service_info",
        "Service information in labels, constant 1",
        labels=["display_name", "name", "path_name", "run_as"],
    )
    process = GaugeMetricFamily(
        "windows_service_process",
        "Process of the started service; the value is when the process started (Unix time)",
        labels=["name", "process_id"],
    )
    # The critical ones pass the filter whatever it says: WindowsServiceStopped
    # reads their state series, and without it could never fire. Names are
    # compared without case, as Windows does; labels keep the host's spelling.
    critical_names = {name.casefold(): name for name in module.critical_services}
    seen: dict[str, str] = {}  # casefolded: as the host spells it
    for row in _rows(result):
        name = _text(row, "Name")
        folded = name.casefold()
        kept = folded in critical_names or module.services.keeps(name)
        if not name or folded in seen or not kept:
            continue
        seen[folded] = name
        current = _text(row, "State").lower()
        for candidate in SERVICE_STATES:
            state.add_metric([name, candidate], 1.0 if candidate == current else 0.0)
        mode = _text(row, "StartMode").lower()
        for candidate in START_MODES:
            start_mode.add_metric([name, candidate], 1.0 if candidate == mode else 0.0)
        info.add_metric(
            [_text(row, "DisplayName"), name, _text(row, "PathName"), _text(row, "StartName")], 1
        )
        pid, started = _number(row, "ProcessId"), _number(row, "ProcessStart")
        if pid and started is not None:
            process.add_metric([name, str(int(pid))], started)
    critical = GaugeMetricFamily(
        "scout_windows_service_critical",
        "1 for a service the module marks critical (the WindowsServiceStopped rule watches it)",
        labels=["name"],
    )
    for name in sorted({seen.get(folded, name) for folded, name in critical_names.items()}):
        critical.add_metric([name], 1)
    return [state, start_mode, info, process, critical]


def update(result: Mapping[str, Any], _module: WinrmModule, _state: ProcessSample) -> list[Metric]:
    row = _first(result)
    pending = row.get("RebootPending")
    return [
        *_single(
            "scout_windows_reboot_pending",
            "1 if Windows waits for a reboot to finish installing updates or renaming files",
            None if not isinstance(pending, bool) else float(pending),
        ),
        *_single(
            "scout_windows_update_last_installed_timestamp_seconds",
            "Unix time (day resolution) the most recent update (hotfix) was installed",
            _number(row, "LastInstalled"),
        ),
    ]


def event_log(
    result: Mapping[str, Any], module: WinrmModule, _state: ProcessSample
) -> list[Metric]:
    events = GaugeMetricFamily(
        "scout_windows_event_log_events",
        "Events of the level logged in the last scout_windows_event_log_window_seconds"
        f" (counted up to {MAX_EVENTS_COUNTED})",
        labels=["level", "log"],
    )
    for row in _rows(result):
        log = _text(row, "Log")
        for key, level in (("Critical", "critical"), ("Error", "error")):
            count = _number(row, key)
            if log and count is not None:
                events.add_metric([level, log], count)
    return [
        events,
        *_single(
            "scout_windows_event_log_window_seconds",
            "How far back scout_windows_event_log_events counts",
            module.event_log_window.total_seconds(),
        ),
    ]


def process(result: Mapping[str, Any], module: WinrmModule, state: ProcessSample) -> list[Metric]:
    rows = [row for row in _rows(result) if _text(row, "Name") not in ("", "_Total", "Idle")]
    timestamps = [t for row in rows if (t := _number(row, "Timestamp_Sys100NS")) is not None]
    now = max(timestamps) / TICKS_PER_SECOND if timestamps else 0.0
    elapsed = now - state.timestamp if state.timestamp else 0.0
    ticks: dict[tuple[str, int], float] = {}
    cpu_share: list[tuple[float, str, int]] = []
    memory_rank: list[tuple[float, str, int]] = []
    for row in rows:
        name = _PROCESS_INSTANCE.sub("", _text(row, "Name"))
        pid = int(_number(row, "IDProcess") or 0)
        used = _number(row, "PercentProcessorTime")
        working_set = _number(row, "WorkingSetPrivate")
        if used is not None:
            ticks[(name, pid)] = used
            before = state.ticks.get((name, pid))
            if elapsed > 0 and before is not None:
                # CPU seconds per wall second: 1.0 is one core busy (as windows_exporter's rate).
                cpu_share.append((max(0.0, used - before) / TICKS_PER_SECOND / elapsed, name, pid))
            elif elapsed <= 0:
                cpu_share.append((used / TICKS_PER_SECOND, name, pid))
        if working_set is not None:
            memory_rank.append((working_set, name, pid))
    first_scrape = elapsed <= 0
    state.timestamp, state.ticks = now, ticks
    top = module.top_processes
    cpu_family = GaugeMetricFamily(
        "scout_windows_top_process_cpu_ratio",
        "CPU seconds per second of the busiest processes since the last scrape"
        " (1 is one core; absent on a host's first scrape)",
        labels=["process", "process_id"],
    )
    if not first_scrape:
        for value, name, pid in sorted(cpu_share, key=lambda item: (-item[0], item[2]))[:top]:
            cpu_family.add_metric([name, str(pid)], value)
    memory_family = GaugeMetricFamily(
        "scout_windows_top_process_working_set_bytes",
        "Private working set of the processes using the most memory",
        labels=["process", "process_id"],
    )
    for value, name, pid in sorted(memory_rank, key=lambda item: (-item[0], item[2]))[:top]:
        memory_family.add_metric([name, str(pid)], value)
    return [cpu_family, memory_family]


Mapper = Callable[[Mapping[str, Any], WinrmModule, ProcessSample], list[Metric]]
MAPPERS: Mapping[str, Mapper] = {
    "cpu": cpu,
    "memory": memory,
    "pagefile": pagefile,
    "logical_disk": logical_disk,
    "net": net,
    "os": os_info,
    "system": system,
    "service": service,
    "update": update,
    "event_log": event_log,
    "process": process,
}


def collector_families(
    collectors: Mapping[str, Mapping[str, Any]], module: WinrmModule, state: ProcessSample
) -> tuple[list[Metric], list[str]]:
    """Every enabled collector's families, then their success and duration; and the failures."""
    families: list[Metric] = []
    failures: list[str] = []
    success = GaugeMetricFamily(
        "windows_exporter_collector_success",
        "1 if the collector's queries succeeded on the host",
        labels=["collector"],
    )
    duration = GaugeMetricFamily(
        "windows_exporter_collector_duration_seconds",
        "Seconds the collector's queries took on the host",
        labels=["collector"],
    )
    for name in module.collectors:
        result = collectors.get(name)
        ok = isinstance(result, Mapping) and result.get("ok") is True
        if ok and result is not None:
            families.extend(MAPPERS[name](result, module, state))
        else:
            error = (
                result.get("error") if isinstance(result, Mapping) else "missing from the answer"
            )
            failures.append(f"{name}: {' '.join(str(error).split())[:200]}")
        success.add_metric([name], 1.0 if ok else 0.0)
        seconds = _number(result, "seconds") if isinstance(result, Mapping) else None
        if seconds is not None:
            duration.add_metric([name], seconds)
    return [*families, success, duration], failures
