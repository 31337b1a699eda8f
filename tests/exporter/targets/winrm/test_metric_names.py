"""/winrm's windows_* families are windows_exporter's: same names, types and label sets.

``WINDOWS_EXPORTER`` is transcribed from windows_exporter's collector
documentation (v0.31: docs/collector.<name>.md), for the families /winrm
exports. A dashboard or rule written for windows_exporter selects and joins on
exactly these, so a renamed family or a missing label would leave its panel
empty without an error.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "winrm.prom"

_VOLUME = frozenset({"volume"})
_NIC = frozenset({"nic"})
WINDOWS_EXPORTER: dict[str, tuple[str, frozenset[str]]] = {
    "windows_cpu_time": ("counter", frozenset({"core", "mode"})),
    "windows_memory_physical_total_bytes": ("gauge", frozenset()),
    "windows_memory_physical_free_bytes": ("gauge", frozenset()),
    "windows_memory_available_bytes": ("gauge", frozenset()),
    "windows_memory_committed_bytes": ("gauge", frozenset()),
    "windows_memory_commit_limit": ("gauge", frozenset()),
    "windows_memory_cache_bytes": ("gauge", frozenset()),
    "windows_pagefile_limit_bytes": ("gauge", frozenset({"file"})),
    "windows_pagefile_free_bytes": ("gauge", frozenset({"file"})),
    "windows_logical_disk_size_bytes": ("gauge", _VOLUME),
    "windows_logical_disk_free_bytes": ("gauge", _VOLUME),
    "windows_logical_disk_read_bytes": ("counter", _VOLUME),
    "windows_logical_disk_write_bytes": ("counter", _VOLUME),
    "windows_logical_disk_reads": ("counter", _VOLUME),
    "windows_logical_disk_writes": ("counter", _VOLUME),
    "windows_logical_disk_read_seconds": ("counter", _VOLUME),
    "windows_logical_disk_write_seconds": ("counter", _VOLUME),
    "windows_logical_disk_idle_seconds": ("counter", _VOLUME),
    "windows_logical_disk_requests_queued": ("gauge", _VOLUME),
    "windows_net_bytes_received": ("counter", _NIC),
    "windows_net_bytes_sent": ("counter", _NIC),
    "windows_net_bytes": ("counter", _NIC),
    "windows_net_packets_received": ("counter", _NIC),
    "windows_net_packets_sent": ("counter", _NIC),
    "windows_net_packets": ("counter", _NIC),
    "windows_net_packets_received_errors": ("counter", _NIC),
    "windows_net_packets_outbound_errors": ("counter", _NIC),
    "windows_net_packets_received_discarded": ("counter", _NIC),
    "windows_net_packets_outbound_discarded": ("counter", _NIC),
    "windows_net_packets_received_unknown": ("counter", _NIC),
    "windows_net_current_bandwidth_bytes": ("gauge", _NIC),
    "windows_os_info": (
        "gauge",
        frozenset(
            {
                "product",
                "version",
                "major_version",
                "minor_version",
                "build_number",
                "revision",
                "installation_type",
            }
        ),
    ),
    "windows_os_hostname": ("gauge", frozenset({"domain", "fqdn", "hostname"})),
    "windows_os_install_time_timestamp_seconds": ("gauge", frozenset()),
    "windows_system_boot_time_timestamp": ("gauge", frozenset()),
    "windows_system_processes": ("gauge", frozenset()),
    "windows_system_threads": ("gauge", frozenset()),
    "windows_system_processor_queue_length": ("gauge", frozenset()),
    "windows_system_context_switches": ("counter", frozenset()),
    "windows_system_system_calls": ("counter", frozenset()),
    "windows_service_state": ("gauge", frozenset({"name", "state"})),
    "windows_service_start_mode": ("gauge", frozenset({"name", "start_mode"})),
    "windows_service_info": ("gauge", frozenset({"name", "display_name", "path_name", "run_as"})),
    "windows_service_process": ("gauge", frozenset({"name", "process_id"})),
    "windows_exporter_collector_success": ("gauge", frozenset({"collector"})),
    "windows_exporter_collector_duration_seconds": ("gauge", frozenset({"collector"})),
}


def exported() -> dict[str, tuple[str, set[frozenset[str]]]]:
    """Each windows_* family of the golden scrape: its type and the label sets of its samples."""
    families = {}
    for family in text_string_to_metric_families(GOLDEN.read_text()):
        if family.name.startswith("windows_"):
            label_sets = {frozenset(sample.labels) for sample in family.samples}
            families[family.name] = (family.type, label_sets)
    return families


def test_every_windows_family_has_windows_exporter_s_type_and_labels():
    mismatched = {
        name: (kind, labels)
        for name, (kind, labels) in exported().items()
        if WINDOWS_EXPORTER.get(name) is None
        or labels != {WINDOWS_EXPORTER[name][1]}
        or kind != WINDOWS_EXPORTER[name][0]
    }
    assert mismatched == {}


def test_a_full_scrape_exports_every_family_of_the_contract():
    assert sorted(set(WINDOWS_EXPORTER) - set(exported())) == []
