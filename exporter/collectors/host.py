"""The local host: CPU, load, memory, swap, filesystems, disks, network, boot, processes.

Sample exposition (the metric contract; units are bytes and seconds)::

    # HELP scout_host_cpu_seconds_total Seconds each CPU spent in each mode.
    # TYPE scout_host_cpu_seconds_total counter
    scout_host_cpu_seconds_total{cpu="0",mode="idle"} 81234.5
    # HELP scout_host_load1 1-minute load average.
    # TYPE scout_host_load1 gauge
    scout_host_load1 0.42
    # HELP scout_host_memory_available_bytes Memory available for new work without swapping.
    # TYPE scout_host_memory_available_bytes gauge
    scout_host_memory_available_bytes 1.2e+10
    # HELP scout_host_filesystem_avail_bytes Bytes available to unprivileged users.
    # TYPE scout_host_filesystem_avail_bytes gauge
    scout_host_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"} 5.0e+10
    # HELP scout_host_disk_read_bytes_total Bytes read from the disk.
    # TYPE scout_host_disk_read_bytes_total counter
    scout_host_disk_read_bytes_total{device="sda"} 3.2e+09
    # HELP scout_host_network_receive_bytes_total Bytes received on the interface.
    # TYPE scout_host_network_receive_bytes_total counter
    scout_host_network_receive_bytes_total{device="eth0"} 7.7e+08
    # HELP scout_host_boot_time_seconds Unix time the host booted.
    # TYPE scout_host_boot_time_seconds gauge
    scout_host_boot_time_seconds 1.7e+09
    # HELP scout_host_processes Processes running on the host.
    # TYPE scout_host_processes gauge
    scout_host_processes 213

The full list, with every label, is the golden file
``tests/exporter/golden/host.prom``.

Label sets are bounded: pseudo filesystems, per-container mounts, partitions and
virtual network devices are left out by default (see ``exporter.config``); the
filters are configurable under ``collectors.host``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.clients.host import (
    DiskIO,
    FilesystemUsage,
    HostSource,
    Partition,
    PsutilHostSource,
)
from exporter.collectors.base import BaseCollector, HostView
from exporter.config import ExporterConfig, HostCollectorConfig

# (field, metric suffix, help) for the per-device counters.
_DISK_COUNTERS = (
    ("read_bytes", "read_bytes_total", "Bytes read from the disk."),
    ("written_bytes", "written_bytes_total", "Bytes written to the disk."),
    ("reads_completed", "reads_completed_total", "Reads completed."),
    ("writes_completed", "writes_completed_total", "Writes completed."),
    ("read_time_seconds", "read_time_seconds_total", "Seconds spent on reads."),
    ("write_time_seconds", "write_time_seconds_total", "Seconds spent on writes."),
    ("io_time_seconds", "io_time_seconds_total", "Seconds the disk was busy with I/O."),
)
_NET_COUNTERS = (
    ("receive_bytes", "receive_bytes_total", "Bytes received on the interface."),
    ("transmit_bytes", "transmit_bytes_total", "Bytes sent on the interface."),
    ("receive_packets", "receive_packets_total", "Packets received on the interface."),
    ("transmit_packets", "transmit_packets_total", "Packets sent on the interface."),
    ("receive_errors", "receive_errors_total", "Receive errors on the interface."),
    ("transmit_errors", "transmit_errors_total", "Transmit errors on the interface."),
    ("receive_drop", "receive_drop_total", "Received packets dropped on the interface."),
    ("transmit_drop", "transmit_drop_total", "Outgoing packets dropped on the interface."),
)
_FS_GAUGES = (
    ("size_bytes", "size_bytes", "Filesystem size in bytes."),
    ("free_bytes", "free_bytes", "Free bytes, including those reserved for root."),
    ("avail_bytes", "avail_bytes", "Bytes available to unprivileged users."),
    ("files", "files", "Inodes in total."),
    ("files_free", "files_free", "Free inodes."),
    ("readonly", "readonly", "1 if the filesystem is mounted read-only."),
)
_MEMORY_GAUGES = (
    ("total", "Physical memory in total."),
    ("available", "Memory available for new work without swapping."),
    ("free", "Memory not used for anything."),
    ("used", "Memory in use, as the OS counts it."),
    ("buffers", "Memory used by kernel buffers."),
    ("cached", "Memory used by the page cache."),
    ("shared", "Memory shared between processes (tmpfs included)."),
)


class HostCollector(BaseCollector):
    def __init__(self, settings: HostCollectorConfig, source: HostSource) -> None:
        self._settings = settings
        self._source = source

    @classmethod
    def from_config(cls, config: ExporterConfig, view: HostView) -> HostCollector:
        return cls(config.collectors.host, PsutilHostSource(rootfs=view.rootfs))

    def collect(self) -> Iterator[Metric]:
        yield from self._cpu()
        yield from self._memory()
        yield from self._filesystems()
        yield from self._disks()
        yield from self._network()
        boot = GaugeMetricFamily("scout_host_boot_time_seconds", "Unix time the host booted.")
        boot.add_metric([], self._source.boot_time())
        yield boot
        procs = GaugeMetricFamily("scout_host_processes", "Processes running on the host.")
        procs.add_metric([], self._source.process_count())
        yield procs

    def _cpu(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily(
            "scout_host_cpu_seconds", "Seconds each CPU spent in each mode.", labels=["cpu", "mode"]
        )
        for times in self._source.cpu_times():
            for mode, seconds in times.seconds_by_mode.items():
                cpu.add_metric([times.cpu, mode], seconds)
        yield cpu
        for minutes, value in zip((1, 5, 15), self._source.load_average(), strict=True):
            load = GaugeMetricFamily(f"scout_host_load{minutes}", f"{minutes}-minute load average.")
            load.add_metric([], value)
            yield load

    def _memory(self) -> Iterator[Metric]:
        memory = self._source.memory()
        for name, help_text in _MEMORY_GAUGES:
            value = getattr(memory, name)
            if value is not None:
                family = GaugeMetricFamily(f"scout_host_memory_{name}_bytes", help_text)
                family.add_metric([], value)
                yield family
        swap = self._source.swap()
        for name, help_text in (
            ("total", "Swap space in total."),
            ("free", "Swap space free."),
            ("used", "Swap space in use."),
        ):
            family = GaugeMetricFamily(f"scout_host_swap_{name}_bytes", help_text)
            family.add_metric([], getattr(swap, name))
            yield family
        for direction, value in (("in", swap.swapped_in_bytes), ("out", swap.swapped_out_bytes)):
            counter = CounterMetricFamily(
                f"scout_host_swap_{direction}_bytes", f"Bytes swapped {direction} from disk."
            )
            counter.add_metric([], value)
            yield counter

    def _kept_partitions(self) -> list[Partition]:
        settings = self._settings
        # A mountpoint mounted over twice shows the last mount, so the last entry wins.
        by_mountpoint = {
            p.mountpoint: p
            for p in self._source.partitions()
            if settings.fstypes.keeps(p.fstype) and settings.mountpoints.keeps(p.mountpoint)
        }
        return sorted(by_mountpoint.values(), key=lambda p: p.mountpoint)

    def _filesystems(self) -> Iterator[Metric]:
        labels = ["device", "mountpoint", "fstype"]
        families = {
            field: GaugeMetricFamily(f"scout_host_filesystem_{suffix}", help_text, labels=labels)
            for field, suffix, help_text in _FS_GAUGES
        }
        errors = GaugeMetricFamily(
            "scout_host_filesystem_device_error",
            "1 if the filesystem could not be read on this scrape.",
            labels=labels,
        )
        for part in self._kept_partitions():
            label_values = [part.device, part.mountpoint, part.fstype]
            try:
                usage: FilesystemUsage = self._source.filesystem_usage(part.mountpoint)
            except OSError:
                errors.add_metric(label_values, 1)
                continue
            errors.add_metric(label_values, 0)
            for field, family in families.items():
                family.add_metric(label_values, float(getattr(usage, field)))
        yield from families.values()
        yield errors

    def _disks(self) -> Iterator[Metric]:
        disks: list[DiskIO] = sorted(
            (d for d in self._source.disk_io() if self._settings.disks.keeps(d.device)),
            key=lambda d: d.device,
        )
        for field, suffix, help_text in _DISK_COUNTERS:
            family = CounterMetricFamily(f"scout_host_disk_{suffix}", help_text, labels=["device"])
            for disk in disks:
                value = getattr(disk, field)
                if value is not None:
                    family.add_metric([disk.device], value)
            yield family

    def _network(self) -> Iterator[Metric]:
        devices = sorted(
            (n for n in self._source.net_io() if self._settings.network_devices.keeps(n.device)),
            key=lambda n: n.device,
        )
        for field, suffix, help_text in _NET_COUNTERS:
            family = CounterMetricFamily(
                f"scout_host_network_{suffix}", help_text, labels=["device"]
            )
            for dev in devices:
                family.add_metric([dev.device], getattr(dev, field))
            yield family
