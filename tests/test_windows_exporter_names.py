"""The shipped dashboards and rules query no metric windows_exporter no longer exports.

windows_exporter deprecated the ``cs`` collector and the ``os`` collector's
memory, process and time metrics in v0.29 (their values moved to the
``memory``, ``cpu``, ``system``, ``time`` and ``pagefile`` collectors) and has
since removed them (the ``cs`` collector in v0.31). A panel querying one of
those names shows "No data" on every current Windows server, without an error.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Removed name -> what to query instead.
REMOVED = {
    "windows_cs_physical_memory_bytes": "windows_memory_physical_total_bytes",
    "windows_cs_logical_processors": "windows_cpu_logical_processor",
    "windows_cs_hostname": "windows_os_hostname",
    "windows_os_physical_memory_free_bytes": "windows_memory_physical_free_bytes",
    "windows_os_visible_memory_bytes": "windows_memory_physical_total_bytes",
    "windows_os_virtual_memory_bytes": "windows_memory_commit_limit",
    "windows_os_virtual_memory_free_bytes": (
        "windows_memory_commit_limit - windows_memory_committed_bytes"
    ),
    "windows_os_process_memory_limit_bytes": "windows_memory_process_memory_limit_bytes",
    "windows_os_processes": "windows_system_processes",
    "windows_os_processes_limit": "windows_system_process_limit",
    "windows_os_time": "windows_time_current_timestamp_seconds",
    "windows_os_timezone": "windows_time_timezone",
    "windows_os_users": "count(windows_logon_logon_type)",
    "windows_os_paging_free_bytes": "windows_pagefile_free_bytes",
    "windows_os_paging_limit_bytes": "windows_pagefile_limit_bytes",
    # Renamed in the system collector (v0.31).
    "windows_system_boot_time_timestamp_seconds": "windows_system_boot_time_timestamp",
}
SHIPPED = sorted(
    [
        *(REPO / "grafana" / "dashboards").glob("*.json"),
        *(REPO / "prometheus").rglob("*.yml"),
    ]
)


def removed_names(text: str) -> dict[str, str]:
    """The removed metric names ``text`` mentions, each with its replacement."""
    return {name: REMOVED[name] for name in re.findall(r"\bwindows_\w+", text) if name in REMOVED}


def test_the_check_sees_a_removed_name_in_a_query():
    query = (
        '1 - windows_os_physical_memory_free_bytes{job=~"$job"} / windows_cs_physical_memory_bytes'
    )
    assert removed_names(query) == {
        "windows_os_physical_memory_free_bytes": "windows_memory_physical_free_bytes",
        "windows_cs_physical_memory_bytes": "windows_memory_physical_total_bytes",
    }
    assert removed_names("windows_memory_physical_free_bytes / windows_os_processes_total") == {}


def test_the_servers_dashboard_is_among_the_files_checked():
    assert REPO / "grafana" / "dashboards" / "servers.json" in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: str(path.relative_to(REPO)))
def test_no_shipped_query_uses_a_removed_windows_exporter_metric(path: Path):
    assert removed_names(path.read_text()) == {}
