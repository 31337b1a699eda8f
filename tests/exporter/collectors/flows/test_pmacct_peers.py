"""Real flows: pmacctd + nfprobe replays a capture as NetFlow v5, v9 and IPFIX to the collector.

The capture holds known flows (one UDP flow per source, each with its own
packet count and size), so the bytes pmacctd reports are known exactly: IP
length = 28 + payload per packet. The first replay ranks the talkers (their
series start at 0 at the next scrape); the second replay must land exactly in
the top N series, the rest in ``other``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from exporter.collectors.flows import FlowsCollector
from exporter.config import FlowsCollectorConfig
from tests.conftest import wait_for
from tests.peers.flows import Flow, replay_with_pmacctd, udp_frame, write_pcap

pytestmark = pytest.mark.peers

TOP_N = 3
# Source i sends PACKETS[i] packets of PAYLOADS[i] bytes to one of two servers.
PACKETS = (5, 3, 7, 2, 9, 4, 6, 1, 8, 3, 2, 5)
PAYLOADS = (100, 900, 50, 1200, 400, 30, 700, 1400, 10, 600, 250, 80)
SOURCES = [f"10.0.0.{i + 1}" for i in range(len(PACKETS))]
SERVERS = ("10.1.0.1", "10.1.0.2")
# Version, its label, and what its sequence numbers count when some are lost.
SEQUENCE_CASES = [
    (5, "v5", "lost_records"),
    (9, "v9", "lost_packets"),
    (10, "ipfix", "lost_records"),
]


def _flows() -> list[Flow]:
    return [
        Flow(source, SERVERS[i % 2], count * (28 + size), count, source_port=40000 + i)
        for i, (source, count, size) in enumerate(zip(SOURCES, PACKETS, PAYLOADS, strict=True))
    ]


def _capture(path: Path) -> Path:
    frames = [
        udp_frame(flow, size)
        for flow, size in zip(_flows(), PAYLOADS, strict=True)
        for _ in range(flow.packets)
    ]
    return write_pcap(path, frames)


def _samples(families: list[Metric], name: str) -> dict[tuple[str, ...], float]:
    found = {}
    for family in families:
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sample.labels[k] for k in sorted(sample.labels))] = sample.value
    return found


def _talkers(families: list[Metric], direction: str) -> dict[str, float]:
    # Labels sorted: address, direction, exporter.
    return {
        address: value
        for (address, dir_, _), value in _samples(families, "scout_flow_talker_bytes_total").items()
        if dir_ == direction
    }


@pytest.mark.parametrize(("version", "label"), [(5, "v5"), (9, "v9"), (10, "ipfix")])
async def test_pmacctd_flows_give_the_top_talkers_and_totals(
    tmp_path: Path, version: int, label: str
) -> None:
    pcap = _capture(tmp_path / "flows.pcap")
    flows = _flows()
    total = sum(flow.octets for flow in flows)
    collector = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0", top_n=TOP_N))
    await collector.start()
    try:

        def records(expected: int) -> bool:
            # Read the counts without a scrape: a scrape in the middle of a replay would
            # rank the talkers of a partial replay.
            exporter = collector.flows.aggregator.exporters.get("127.0.0.1")
            return exporter is not None and exporter.records.get(label) == expected

        replay_with_pmacctd(pcap, collector.address, version, tmp_path)
        wait_for(lambda: records(len(flows)), timeout=20, what="the first replay's records")
        ranked = collector.collect()
        top = sorted(flows, key=lambda flow: flow.octets, reverse=True)[:TOP_N]
        assert _talkers(ranked, "source") == {
            **{flow.source: 0 for flow in top},
            "other": total,
        }
        # Two servers, both in the top 3 destinations.
        assert set(_talkers(ranked, "destination")) == {*SERVERS, "other"}

        replay_with_pmacctd(pcap, collector.address, version, tmp_path)
        wait_for(lambda: records(2 * len(flows)), timeout=20, what="the second replay's records")
        families = collector.collect()
        talkers = _talkers(families, "source")
        assert talkers == {
            **{flow.source: flow.octets for flow in top},
            "other": 2 * total - sum(flow.octets for flow in top),
        }
        assert sum(talkers.values()) == 2 * total
        servers = _talkers(families, "destination")
        assert servers == {
            server: sum(f.octets for f in flows if f.destination == server) for server in SERVERS
        } | {"other": total}
        packets = _samples(families, "scout_flow_talker_packets_total")
        assert packets[(top[0].source, "source", "127.0.0.1")] == top[0].packets
        interfaces = _samples(families, "scout_flow_interface_bytes_total")
        assert (
            sum(v for (direction, _, _), v in interfaces.items() if direction == "in") == 2 * total
        )
        bad = _samples(families, "scout_flow_bad_packets_total")
        assert sum(bad.values()) == 0
    finally:
        await collector.close()


# Enough flows for pmacctd to send well over REORDER_DATAGRAMS datagrams per replay
# (29 records a v5 datagram, 8 a v9 or IPFIX one), so its restart at the next replay
# is far behind and reads as one.
MANY_FLOWS = 3000


@pytest.mark.parametrize(("version", "label", "lost"), SEQUENCE_CASES)
async def test_a_clean_pmacctd_export_counts_no_loss_and_its_restart_as_a_reset(
    tmp_path: Path, version: int, label: str, lost: str
) -> None:
    """pmacctd numbers v5 records, v9 packets and IPFIX data records as the RFCs say:
    a whole replay comes in with nothing lost or out of order; the next replay (a new
    pmacctd, numbering from the start again) is one reset, still nothing lost."""
    flows = [
        Flow(f"10.2.{i // 250}.{i % 250 + 1}", SERVERS[i % 2], 128, 1, source_port=20000 + i)
        for i in range(MANY_FLOWS)
    ]
    pcap = write_pcap(tmp_path / "many.pcap", [udp_frame(flow, 100) for flow in flows])
    collector = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0"))
    await collector.start()
    try:

        def records(expected: int) -> bool:
            exporter = collector.flows.aggregator.exporters.get("127.0.0.1")
            return exporter is not None and exporter.records.get(label) == expected

        def sequence(families: list[Metric]) -> dict[str, float]:
            return {
                name: _samples(families, f"scout_flow_sequence_{name}_total")[("127.0.0.1", label)]
                for name in (lost, "out_of_order", "resets")
            }

        replay_with_pmacctd(pcap, collector.address, version, tmp_path)
        wait_for(lambda: records(MANY_FLOWS), timeout=30, what="the first replay's records")
        first = collector.collect()
        assert sequence(first) == {lost: 0, "out_of_order": 0, "resets": 0}
        packets = _samples(first, "scout_flow_packets_total")[("127.0.0.1", label)]
        assert packets > 64  # pmacctd sent many datagrams, each numbered

        replay_with_pmacctd(pcap, collector.address, version, tmp_path)
        wait_for(lambda: records(2 * MANY_FLOWS), timeout=30, what="the second replay's records")
        # The new process starts again from 0: its first datagram, far behind, is out of
        # order, and the second, continuing from it, makes the reset (a run shorter than
        # the uptime slack leaves the uptime no further back).
        assert sequence(collector.collect()) == {lost: 0, "out_of_order": 1, "resets": 1}
    finally:
        await collector.close()
