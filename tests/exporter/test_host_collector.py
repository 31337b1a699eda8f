"""The host collector's exposition, compared in full against a golden file."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.clients.host import PsutilHostSource
from exporter.collectors.host import HostCollector
from exporter.config import HostCollectorConfig, NameFilter, parse_config
from tests.exporter.fakes import FixtureHostSource
from tests.exporter.golden_files import assert_matches_golden, assert_promtool_clean

GOLDEN = Path(__file__).parent / "golden" / "host.prom"


def exposition(collector: HostCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_exposition_matches_golden_file_line_by_line():
    text = exposition(HostCollector(HostCollectorConfig(), FixtureHostSource()))
    assert_matches_golden(text, GOLDEN)


def test_golden_file_passes_promtool_check_metrics():
    assert_promtool_clean(GOLDEN.read_bytes())


def test_live_host_exposition_passes_promtool_check_metrics():
    text = exposition(HostCollector(HostCollectorConfig(), PsutilHostSource()))
    assert "scout_host_cpu_seconds_total{" in text
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def labels_of(text: str, metric: str, label: str) -> set[str]:
    pattern = re.compile(rf'^{metric}{{[^}}]*{label}="([^"]*)"', re.MULTILINE)
    return set(pattern.findall(text))


def test_default_filters_drop_pseudo_filesystems_partitions_and_virtual_nics():
    text = exposition(HostCollector(HostCollectorConfig(), FixtureHostSource()))
    assert labels_of(text, "scout_host_filesystem_size_bytes", "mountpoint") == {
        "/",
        "/run",
        "/srv",
    }
    assert labels_of(text, "scout_host_disk_read_bytes_total", "device") == {"sda", "nvme0n1"}
    assert labels_of(text, "scout_host_network_receive_bytes_total", "device") == {"eth0", "br0"}


def test_filters_are_configurable_from_yaml():
    config = parse_config(
        """
collectors:
  host:
    fstypes: {exclude: "proc|tmpfs"}
    mountpoints: {exclude: null}
    disks: {include: "sd.*", exclude: null}
    network_devices: {include: "eth.*|lo"}
""",
        "inline.yml",
    )
    text = exposition(HostCollector(config.collectors.host, FixtureHostSource()))
    assert labels_of(text, "scout_host_filesystem_size_bytes", "mountpoint") == {
        "/",
        "/srv",
        "/var/lib/docker/overlay2/abc",
    }
    assert labels_of(text, "scout_host_disk_read_bytes_total", "device") == {"sda", "sda1"}
    # A filter given in the file replaces the default whole, so lo is back.
    assert labels_of(text, "scout_host_network_receive_bytes_total", "device") == {"eth0", "lo"}


def test_include_and_exclude_combine_within_one_filter():
    config = parse_config(
        'collectors: {host: {network_devices: {include: "eth.*|lo|br.*", exclude: "lo"}}}', "x"
    )
    text = exposition(HostCollector(config.collectors.host, FixtureHostSource()))
    assert labels_of(text, "scout_host_network_receive_bytes_total", "device") == {"eth0", "br0"}


def test_unreadable_filesystem_is_flagged_and_does_not_hide_the_others():
    text = exposition(HostCollector(HostCollectorConfig(), FixtureHostSource()))
    assert (
        'scout_host_filesystem_device_error{device="nfs1:/export",fstype="nfs4",'
        'mountpoint="/mnt/stale"} 1.0' in text
    )
    assert (
        'scout_host_filesystem_size_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"}' in text
    )
    assert "/mnt/stale" not in labels_of(text, "scout_host_filesystem_size_bytes", "mountpoint")


@pytest.mark.parametrize(
    ("name", "kept"),
    [("sda", True), ("sda1", False), ("xsda", True), ("loop7", False)],
)
def test_name_filters_are_anchored_at_both_ends(name, kept):
    disks = HostCollectorConfig().disks
    assert isinstance(disks, NameFilter)
    assert disks.keeps(name) is kept


def test_rootfs_reads_the_host_mount_table_and_labels_host_paths(tmp_path):
    # A container sees the host's / at <rootfs>; the mount table is the host's.
    (tmp_path / "proc" / "1").mkdir(parents=True)
    (tmp_path / "srv" / "my data").mkdir(parents=True)
    (tmp_path / "proc" / "1" / "mounts").write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        "/dev/sdb1 /srv/my\\040data xfs rw 0 0\n"
        "proc /proc proc rw 0 0\n"
    )
    source = PsutilHostSource(rootfs=tmp_path)
    text = exposition(HostCollector(HostCollectorConfig(), source))
    assert labels_of(text, "scout_host_filesystem_size_bytes", "mountpoint") == {
        "/",
        "/srv/my data",
    }
    # Measured under rootfs: the same numbers statvfs gives for that directory.
    expected = os.statvfs(tmp_path / "srv" / "my data")
    assert (
        source.filesystem_usage("/srv/my data").size_bytes == expected.f_blocks * expected.f_frsize
    )
