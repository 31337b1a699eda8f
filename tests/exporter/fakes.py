"""A fixed host, standing in for psutil so the exposition can be compared line by line."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.clients.host import (
    CpuTimes,
    DiskIO,
    FilesystemUsage,
    Memory,
    NetIO,
    Partition,
    Swap,
)


def _net(device: str, base: int) -> NetIO:
    return NetIO(device, base * 1000, base * 500, base * 10, base * 5, 1, 2, 3, 4)


@dataclass
class FixtureHostSource:
    """Two CPUs; mounts, disks and NICs that the default filters keep and drop."""

    unreadable_mountpoints: set[str] = field(default_factory=lambda: {"/mnt/stale"})

    def cpu_times(self) -> list[CpuTimes]:
        return [
            CpuTimes("0", {"user": 100.5, "system": 50.25, "idle": 1000.0, "iowait": 2.0}),
            CpuTimes("1", {"user": 80.0, "system": 40.0, "idle": 1100.0, "iowait": 0.5}),
        ]

    def load_average(self) -> tuple[float, float, float]:
        return (0.5, 0.25, 0.125)

    def memory(self) -> Memory:
        return Memory(
            total=8 << 30,
            available=6 << 30,
            free=2 << 30,
            used=1 << 30,
            buffers=1 << 20,
            cached=3 << 30,
            shared=None,
        )

    def swap(self) -> Swap:
        return Swap(
            total=2 << 30,
            free=(2 << 30) - 4096,
            used=4096,
            swapped_in_bytes=8192,
            swapped_out_bytes=16384,
        )

    def partitions(self) -> list[Partition]:
        return [
            Partition("/dev/sda1", "/", "ext4"),
            Partition("proc", "/proc", "proc"),  # pseudo fstype: dropped
            Partition("tmpfs", "/run", "tmpfs"),
            Partition("/dev/sdb1", "/var/lib/docker/overlay2/abc", "xfs"),  # per container
            Partition("nfs1:/export", "/mnt/stale", "nfs4"),  # unreadable
            Partition("/dev/sdc1", "/srv", "xfs"),
            Partition("/dev/sdc2", "/srv", "xfs"),  # mounted over /srv: this one shows
        ]

    def filesystem_usage(self, mountpoint: str) -> FilesystemUsage:
        if mountpoint in self.unreadable_mountpoints:
            raise OSError(116, "Stale file handle")
        size = {"/": 100 << 30, "/run": 1 << 30, "/srv": 500 << 30}.get(mountpoint, 1 << 30)
        return FilesystemUsage(
            size_bytes=size,
            free_bytes=size // 2,
            avail_bytes=size // 4,
            files=1_000_000,
            files_free=900_000,
            readonly=mountpoint == "/srv",
        )

    def disk_io(self) -> list[DiskIO]:
        return [
            DiskIO("sda", 4096, 8192, 10, 20, 1.5, 2.5, 3.0),
            DiskIO("sda1", 4096, 8192, 10, 20, 1.5, 2.5, 3.0),  # partition: dropped
            DiskIO("loop0", 1, 1, 1, 1, 0.0, 0.0, 0.0),  # dropped
            DiskIO("nvme0n1", 1 << 20, 2 << 20, 100, 200, 0.25, 0.5, None),  # no busy time
        ]

    def net_io(self) -> list[NetIO]:
        return [_net("eth0", 7), _net("lo", 1), _net("veth1234", 2), _net("br0", 3)]

    def boot_time(self) -> float:
        return 1_700_000_000.0

    def process_count(self) -> int:
        return 213
