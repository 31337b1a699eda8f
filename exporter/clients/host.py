"""The local host's statistics, read through psutil.

Collectors depend on the ``HostSource`` protocol only, so tests can feed fixed
values through a fake and compare the exposition line by line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil


@dataclass(frozen=True, slots=True)
class CpuTimes:
    cpu: str
    seconds_by_mode: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Memory:
    total: int
    available: int
    free: int
    used: int
    # Linux only: absent elsewhere, and then not exported.
    buffers: int | None = None
    cached: int | None = None
    shared: int | None = None


@dataclass(frozen=True, slots=True)
class Swap:
    total: int
    free: int
    used: int
    swapped_in_bytes: int
    swapped_out_bytes: int


@dataclass(frozen=True, slots=True)
class Partition:
    device: str
    mountpoint: str
    fstype: str


@dataclass(frozen=True, slots=True)
class FilesystemUsage:
    size_bytes: int
    free_bytes: int
    avail_bytes: int
    files: int
    files_free: int
    readonly: bool


@dataclass(frozen=True, slots=True)
class DiskIO:
    device: str
    read_bytes: int
    written_bytes: int
    reads_completed: int
    writes_completed: int
    read_time_seconds: float
    write_time_seconds: float
    io_time_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class NetIO:
    device: str
    receive_bytes: int
    transmit_bytes: int
    receive_packets: int
    transmit_packets: int
    receive_errors: int
    transmit_errors: int
    receive_drop: int
    transmit_drop: int


class HostSource(Protocol):
    """What the host collector reads. Each call is one look at the OS."""

    def cpu_times(self) -> Sequence[CpuTimes]: ...
    def load_average(self) -> tuple[float, float, float]: ...
    def memory(self) -> Memory: ...
    def swap(self) -> Swap: ...
    def partitions(self) -> Sequence[Partition]: ...
    def filesystem_usage(self, mountpoint: str) -> FilesystemUsage:
        """Raises ``OSError`` when the filesystem cannot be read."""
        ...

    def disk_io(self) -> Sequence[DiskIO]: ...
    def net_io(self) -> Sequence[NetIO]: ...
    def boot_time(self) -> float: ...
    def process_count(self) -> int: ...


# guest and guest_nice are already counted in user and nice on Linux; exporting them
# as modes would make sum by mode exceed wall time.
_DOUBLE_COUNTED_MODES = frozenset({"guest", "guest_nice"})


def _ms_to_seconds(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000


def parse_mounts(text: str) -> list[Partition]:
    """Entries of a ``/proc/<pid>/mounts`` table, octal escapes (``\\040``) decoded."""
    partitions = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            device, mountpoint, fstype = (_unescape_mount_field(f) for f in fields[:3])
            partitions.append(Partition(device, mountpoint, fstype))
    return partitions


def _unescape_mount_field(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class PsutilHostSource:
    """The real host. psutil reports times in seconds except disk times (ms).

    ``rootfs`` is where the host's root filesystem is mounted when the exporter
    runs in a container (``--path.rootfs=/host``, with ``/`` bind-mounted there).
    CPU, memory, disk and network statistics come from ``/proc`` as usual (run
    the container with ``pid: host`` and ``network_mode: host``); filesystems
    come from the host's mount table, ``<rootfs>/proc/1/mounts``, and are
    measured under ``rootfs`` but labelled with their host paths.
    """

    def __init__(self, rootfs: Path | None = None) -> None:
        self._rootfs = rootfs

    def cpu_times(self) -> list[CpuTimes]:
        return [
            CpuTimes(
                cpu=str(index),
                seconds_by_mode={
                    mode: value
                    for mode, value in times._asdict().items()
                    if mode not in _DOUBLE_COUNTED_MODES
                },
            )
            for index, times in enumerate(psutil.cpu_times(percpu=True))
        ]

    def load_average(self) -> tuple[float, float, float]:
        return psutil.getloadavg()

    def memory(self) -> Memory:
        mem = psutil.virtual_memory()
        return Memory(
            total=mem.total,
            available=mem.available,
            free=mem.free,
            used=mem.used,
            buffers=getattr(mem, "buffers", None),
            cached=getattr(mem, "cached", None),
            shared=getattr(mem, "shared", None),
        )

    def swap(self) -> Swap:
        swap = psutil.swap_memory()
        return Swap(
            total=swap.total,
            free=swap.free,
            used=swap.used,
            swapped_in_bytes=swap.sin,
            swapped_out_bytes=swap.sout,
        )

    def partitions(self) -> list[Partition]:
        if self._rootfs is not None:
            mounts = self._rootfs / "proc" / "1" / "mounts"
            return parse_mounts(mounts.read_text(encoding="utf-8", errors="replace"))
        return [
            Partition(device=p.device, mountpoint=p.mountpoint, fstype=p.fstype)
            for p in psutil.disk_partitions(all=True)
        ]

    def filesystem_usage(self, mountpoint: str) -> FilesystemUsage:
        # psutil.disk_usage has no inode counts, so read statvfs directly.
        if self._rootfs is not None:
            mountpoint = str(self._rootfs / mountpoint.lstrip("/"))
        st = os.statvfs(mountpoint)
        return FilesystemUsage(
            size_bytes=st.f_blocks * st.f_frsize,
            free_bytes=st.f_bfree * st.f_frsize,
            avail_bytes=st.f_bavail * st.f_frsize,
            files=st.f_files,
            files_free=st.f_ffree,
            readonly=bool(st.f_flag & os.ST_RDONLY),
        )

    def disk_io(self) -> list[DiskIO]:
        counters = psutil.disk_io_counters(perdisk=True, nowrap=True) or {}
        return [
            DiskIO(
                device=name,
                read_bytes=c.read_bytes,
                written_bytes=c.write_bytes,
                reads_completed=c.read_count,
                writes_completed=c.write_count,
                read_time_seconds=c.read_time / 1000,
                write_time_seconds=c.write_time / 1000,
                io_time_seconds=_ms_to_seconds(getattr(c, "busy_time", None)),
            )
            for name, c in counters.items()
        ]

    def net_io(self) -> list[NetIO]:
        counters = psutil.net_io_counters(pernic=True, nowrap=True)
        return [
            NetIO(
                device=name,
                receive_bytes=c.bytes_recv,
                transmit_bytes=c.bytes_sent,
                receive_packets=c.packets_recv,
                transmit_packets=c.packets_sent,
                receive_errors=c.errin,
                transmit_errors=c.errout,
                receive_drop=c.dropin,
                transmit_drop=c.dropout,
            )
            for name, c in counters.items()
        ]

    def boot_time(self) -> float:
        return psutil.boot_time()

    def process_count(self) -> int:
        return len(psutil.pids())
