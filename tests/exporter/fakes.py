"""Stand-ins for the clients: a fixed host for psutil, a replayed SNMP agent.

Each satisfies its client's Protocol as it is (no ``type: ignore``), so the code
under test runs against it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from exporter.clients.snmp import Oid, SessionStats, ValueKind, VarBind
from exporter.targets.snmp.mapping import oid_of


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


# The if_mib columns and scalars the replayed agent answers for.
IFT = oid_of("1.3.6.1.2.1.2.2.1")
IFX = oid_of("1.3.6.1.2.1.31.1.1.1")
UPTIME = oid_of("1.3.6.1.2.1.1.3.0")
IF_NUMBER = oid_of("1.3.6.1.2.1.2.1.0")
TABLE_LAST_CHANGE = oid_of("1.3.6.1.2.1.31.1.5.0")


def _index_order(row: tuple[int | Oid, int | bytes]) -> Oid:
    return row[0] if isinstance(row[0], tuple) else (row[0],)


class ReplayedAgent:
    """An agent's state as plain data; each walk records which columns it read."""

    def __init__(self) -> None:
        self.scalars: dict[Oid, int] = {UPTIME: 1000, IF_NUMBER: 1, TABLE_LAST_CHANGE: 5}
        self.text_scalars: dict[Oid, bytes] = {}
        # Rows by column, then by index: one sub-identifier, or several (a tuple).
        self.columns: dict[Oid, dict[int | Oid, int | bytes]] = {
            (*IFX, 1): {1: b"eth0"},  # ifName, a lookup
            (*IFX, 15): {1: 1000},  # ifHighSpeed, cached
            (*IFT, 9): {1: 77},  # ifLastChange, a column validator
            (*IFX, 6): {1: 123},  # ifHCInOctets, read every time
        }
        self.walked: list[set[Oid]] = []
        self.stats = SessionStats()
        self.max_repetitions_used = 0
        self.closed = False

    async def get(self, oids: Sequence[Oid], *, deadline: float | None = None) -> list[VarBind]:
        self.stats.pdus_sent += 1
        return [
            VarBind(oid, ValueKind.TIMETICKS, self.scalars[oid])
            if oid in self.scalars
            else VarBind(oid, ValueKind.OCTET_STRING, self.text_scalars[oid])
            if oid in self.text_scalars
            else VarBind(oid, ValueKind.NO_SUCH_OBJECT, None)
            for oid in oids
        ]

    async def bulk_walk(
        self,
        roots: Sequence[Oid],
        *,
        max_repetitions: int,
        max_oids: int = 1_000_000,
        deadline: float | None = None,
    ) -> dict[Oid, list[VarBind]]:
        self.stats.pdus_sent += 1
        self.max_repetitions_used = max_repetitions
        self.walked.append(set(roots))
        out: dict[Oid, list[VarBind]] = {}
        for root in roots:
            rows = self.columns.get(root, {})
            out[root] = [
                VarBind(
                    (*root, *(index if isinstance(index, tuple) else (index,))),
                    ValueKind.OCTET_STRING if isinstance(v, bytes) else ValueKind.GAUGE32,
                    v,
                )
                for index, v in sorted(rows.items(), key=_index_order)
            ]
        return out

    async def close(self) -> None:
        self.closed = True
