"""The flows collector as the app runs it: UDP listener lifecycle, exporter filter, registry row."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from pydantic import ValidationError

from exporter.collectors import COLLECTORS
from exporter.collectors.base import HostView
from exporter.collectors.flows import FlowIngest, FlowsCollector
from exporter.collectors.flows.aggregate import AggregationSettings
from exporter.collectors.flows.listener import (
    BATCH_DATAGRAMS,
    BatchReceiver,
    Receiver,
    SingleReceiver,
    UdpListener,
    parse_listen,
    receiver_for,
)
from exporter.config import ExporterConfig, FlowsCollectorConfig
from scripts.localstack import Service, free_port
from tests.conftest import http_get, wait_for
from tests.firewall_names import FLOW_METRICS
from tests.peers.flows import (
    IPV4_LAYOUT,
    Flow,
    flow_set,
    ipfix_packet,
    ipfix_template,
    v5_packet,
    v9_packet,
    v9_template,
)

FLOWS = [Flow("10.0.0.1", "10.0.1.1", 1200, 4, 7, 8), Flow("10.0.0.2", "10.0.1.1", 300, 1, 7, 9)]


def _value(families: list[Metric], name: str, **labels: str) -> float | None:
    for family in families:
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


def _send(address: tuple[str, int], *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in datagrams:
            sender.sendto(datagram, address)


async def test_listener_counts_datagrams_and_releases_its_port_on_close() -> None:
    collector = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0"))
    await collector.start()
    try:
        address = collector.address
        _send(address, v5_packet(FLOWS), b"\x00\x05garbage")
        # Both datagrams: the garbage one may be read after the v5 one is counted.
        wait_for(
            lambda: (
                _value(collector.collect(), "scout_flow_records_total", version="v5")
                and _value(collector.collect(), "scout_flow_bad_packets_total", reason="truncated")
            ),
            timeout=10,
            what="v5 records and the truncated datagram",
        )
        families = collector.collect()
        assert _value(families, "scout_flow_records_total", exporter="127.0.0.1") == 2
        assert _value(families, "scout_flow_packets_total", exporter="127.0.0.1") == 1
        assert _value(families, "scout_flow_bad_packets_total", reason="truncated") == 1
        interface = _value(
            families, "scout_flow_interface_bytes_total", ifindex="7", direction="in"
        )
        assert interface == 1500
    finally:
        await collector.close()
    await collector.close()  # a second close is harmless
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(address)


@pytest.mark.parametrize("receiver", [receiver_for, SingleReceiver], ids=["batch", "single"])
def test_the_listener_hands_on_every_datagram_even_an_empty_one_and_stops_when_idle(
    receiver: Callable[[socket.socket], Receiver],
) -> None:
    """An empty datagram is data (counted as bad by the decoder), not the stop signal;
    IPv4 senders on a dual-stack socket get their plain address; ``stop`` ends a
    thread blocked in its receive (a hang here fails on the test timeout)."""
    received: list[tuple[bytes, str]] = []
    listener = UdpListener(
        "[::]:0",
        lambda batch: received.extend((bytes(datagram), peer) for datagram, peer in batch),
        receiver,
    )
    listener.start()
    try:
        port = listener.address[1]
        _send(("127.0.0.1", port), b"", b"first", b"x" * 65507)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"six", ("::1", port))
        wait_for(lambda: len(received) == 4, timeout=10, what="the four datagrams")
    finally:
        listener.stop()
    listener.stop()  # a second stop is harmless
    assert received[:3] == [
        (b"", "127.0.0.1"),
        (b"first", "127.0.0.1"),
        (b"x" * 65507, "127.0.0.1"),
    ]
    assert received[3] == (b"six", "::1")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="recvmmsg is Linux's")
def test_a_queued_burst_comes_in_batches_in_order_with_each_sender_named() -> None:
    """Datagrams queued before the thread reads are taken by ``recvmmsg`` several at a
    time: every slot's length and sender are read back (sizes from 0 to the largest,
    two senders interleaved), and the slots are reused by the next call."""
    batches: list[list[tuple[bytes, str]]] = []
    queued = threading.Event()

    class AfterTheBurst:
        """The real receiver, held back until the whole burst is queued."""

        def __init__(self, sock: socket.socket) -> None:
            self.receiver = BatchReceiver.create(sock)
            assert self.receiver is not None

        def receive(self) -> list[tuple[memoryview, str]]:
            queued.wait()
            assert self.receiver is not None
            return self.receiver.receive()

    listener = UdpListener(
        "127.0.0.1:0",
        lambda batch: batches.append([(bytes(datagram), peer) for datagram, peer in batch]),
        AfterTheBurst,
    )
    listener.start()
    port = listener.address[1]
    # Small but for one: the whole burst fits a default-sized socket queue.
    sizes = (0, 65507, *(index % 5 * 300 for index in range(BATCH_DATAGRAMS + 8)))
    sent = [bytes([index % 256]) * size for index, size in enumerate(sizes)]
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second,
        ):
            second.bind(("127.0.0.2", 0))
            for index, datagram in enumerate(sent):
                (first if index % 2 else second).sendto(datagram, ("127.0.0.1", port))
            queued.set()
            wait_for(lambda: sum(map(len, batches)) == len(sent), timeout=10, what="the burst")
    finally:
        listener.stop()
    received = [datagram for batch in batches for datagram in batch]
    assert received == [
        (datagram, "127.0.0.1" if index % 2 else "127.0.0.2") for index, datagram in enumerate(sent)
    ]
    # More datagrams than one call takes: several calls, the first one full.
    assert len(batches[0]) == BATCH_DATAGRAMS
    assert len(batches) > 1


async def test_packets_from_outside_the_exporters_networks_are_dropped() -> None:
    config = FlowsCollectorConfig(
        listen="127.0.0.1:0", exporters=[ipaddress.ip_network("192.0.2.0/24")]
    )
    collector = FlowsCollector(config)
    await collector.start()
    try:
        _send(collector.address, v5_packet(FLOWS))
        wait_for(
            lambda: _value(
                collector.collect(), "scout_flow_bad_packets_total", reason="not_allowed"
            ),
            timeout=10,
            what="the refused packet",
        )
        assert _value(collector.collect(), "scout_flow_records_total") is None
    finally:
        await collector.close()


async def test_start_fails_cleanly_on_a_busy_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        collector = FlowsCollector(FlowsCollectorConfig(listen=f"127.0.0.1:{port}"))
        with pytest.raises(OSError, match="in use"):
            await collector.start()
    await collector.close()


def test_ipfix_through_the_ingest_path_with_an_unknown_template_first() -> None:
    collector = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0", top_n=5))
    data = flow_set(256, IPV4_LAYOUT, FLOWS)
    collector.flows.ingest(ipfix_packet([data]), "192.0.2.1")
    collector.flows.ingest(ipfix_packet([ipfix_template(256, IPV4_LAYOUT), data]), "192.0.2.1")
    families = collector.collect()
    assert _value(families, "scout_flow_bad_packets_total", reason="unknown_template") == 1
    assert _value(families, "scout_flow_records_total", version="ipfix") == 2
    assert _value(families, "scout_flow_templates", exporter="192.0.2.1") == 1
    other = _value(families, "scout_flow_talker_bytes_total", direction="source", address="other")
    assert other == 1500


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:2055", ("0.0.0.0", 2055)),
        ("[::]:4739", ("::", 4739)),
        (":9995", ("0.0.0.0", 9995)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_listen_addresses(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["2055", "host:", "host:port", "h:70000"])
def test_bad_listen_addresses_are_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        parse_listen(listen)


@pytest.mark.parametrize("listen", ["2055", "host:port", "h:70000"])
def test_bad_listen_addresses_fail_the_config_not_the_start(listen: str) -> None:
    with pytest.raises(ValidationError, match=r"listen\n.*is not host:port"):
        FlowsCollectorConfig(listen=listen)


def test_the_registry_row_is_off_by_default_and_builds_the_collector() -> None:
    (spec,) = [spec for spec in COLLECTORS if spec.name == "flows"]
    assert not spec.enabled_by_default
    config = ExporterConfig.model_validate(
        {"collectors": {"flows": {"listen": "127.0.0.1:0", "window": "1m", "ttl": "3m"}}}
    )
    collector = spec.build(config, HostView())
    assert isinstance(collector, FlowsCollector)
    assert config.collectors.flows.window == timedelta(minutes=1)


@pytest.mark.peers
def test_scout_exporter_serves_flow_metrics_with_the_collector_enabled(
    tmp_path: Path, exporter_factory: Callable[..., tuple[Service, str]]
) -> None:
    udp_port = free_port(kind=socket.SOCK_DGRAM)
    config = tmp_path / "exporter.yml"
    config.write_text(f"collectors:\n  flows:\n    listen: 127.0.0.1:{udp_port}\n    top_n: 1\n")
    _, url = exporter_factory("--collector.flows", "--no-collector.host", f"--config.file={config}")

    def records_seen() -> bool:
        _send(("127.0.0.1", udp_port), v5_packet(FLOWS))
        return (
            'scout_flow_records_total{exporter="127.0.0.1",version="v5"}'
            in http_get(f"{url}/metrics")[1]
        )

    wait_for(records_seen, timeout=20, what="flow metrics on /metrics")
    body = http_get(f"{url}/metrics")[1]
    assert (
        'scout_flow_talker_bytes_total{address="10.0.0.1",direction="source",exporter="127.0.0.1"}'
        in body
    )
    assert 'scout_collector_success{collector="flows"} 1.0' in body


def test_garbage_from_many_addresses_costs_no_series() -> None:
    collector = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0", max_series=20))
    for host in range(200):
        collector.flows.ingest(b"\x00\x05" + bytes(10), f"198.51.100.{host}")
    collector.flows.ingest(v5_packet(FLOWS), "192.0.2.1")
    families = collector.collect()
    assert _value(families, "scout_flow_bad_packets_total", reason="truncated") == 200
    assert _value(families, "scout_flow_records_total", exporter="192.0.2.1") == 2
    assert _value(families, "scout_flow_bad_packets_total", reason="series_budget") == 0


def test_an_exporter_the_budget_cannot_hold_is_refused_and_counted() -> None:
    collector = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0", max_series=10))
    collector.flows.ingest(v5_packet(FLOWS), "192.0.2.1")
    collector.flows.ingest(v5_packet(FLOWS), "192.0.2.2")
    families = collector.collect()
    assert _value(families, "scout_flow_bad_packets_total", reason="series_budget") == 1
    assert _value(families, "scout_flow_records_total", exporter="192.0.2.2") is None
    series = _value(families, "scout_flow_series")
    assert series is not None
    assert series <= 10
    dropped = _value(families, "scout_flow_dropped_series_total")
    assert dropped is not None
    assert dropped > 0


def test_exposition_passes_promtool_check_metrics() -> None:
    config = FlowsCollectorConfig(listen="127.0.0.1:0", by_protocol_port=True, ipv4_prefix=24)
    collector = FlowsCollector(config)
    for _ in range(2):
        collector.flows.ingest(v5_packet(FLOWS), "192.0.2.1")
        families = collector.collect()

    class Families:
        def collect(self) -> list[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())
    text = generate_latest(registry)
    assert b'scout_flow_talker_bytes_total{address="10.0.0.0/24"' in text
    result = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_the_exposition_has_exactly_the_names_and_labels_the_dashboards_use() -> None:
    """``tests/firewall_names.FLOW_METRICS`` is what the dashboards and rules are checked
    against: the collector must expose those names with those labels, and nothing else."""
    config = FlowsCollectorConfig(listen="127.0.0.1:0", by_protocol_port=True, top_n=1)
    collector = FlowsCollector(config)
    for _ in range(2):
        collector.flows.ingest(v5_packet(FLOWS), "192.0.2.1")
        families = collector.collect()
    exposed = {
        sample.name: tuple(sorted(sample.labels))
        for family in families
        for sample in family.samples
        if not sample.name.endswith("_created")
    }
    assert exposed == {name: tuple(sorted(labels)) for name, labels in FLOW_METRICS.items()}


def test_a_batch_of_mixed_versions_and_senders_counts_each_datagram_on_its_own() -> None:
    """Bad datagrams inside a batch (cut, lying, unknown) are counted and dropped; the
    good ones around them, from other senders and versions, are all counted, as when
    they come one at a time."""
    lying = bytearray(v9_packet([flow_set(256, IPV4_LAYOUT, FLOWS)]))
    struct.pack_into("!H", lying, 22, 4000)  # the flowset length runs past the datagram
    batch = [
        (v5_packet(FLOWS), "192.0.2.1"),
        (v5_packet(FLOWS)[:-1], "192.0.2.1"),
        (v9_packet([v9_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS)]), "::1"),
        (v9_packet([flow_set(256, IPV4_LAYOUT, FLOWS[:1])]), "::1"),
        (ipfix_packet([flow_set(256, IPV4_LAYOUT, FLOWS)]), "192.0.2.3"),
        (b"\x00\x07garbage", "192.0.2.1"),
        (bytes(lying), "::1"),
        (b"", "192.0.2.3"),  # an unknown version 0
        (v5_packet(FLOWS[1:]), "192.0.2.3"),
        (v9_packet([flow_set(256, IPV4_LAYOUT, FLOWS)]), "192.0.2.1"),  # not its template
    ]
    together = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0"))
    together.flows.ingest_batch(batch)
    alone = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0"))
    for datagram, sender in batch:
        alone.flows.ingest(datagram, sender)
    families = together.collect()

    def counts(families: list[Metric]) -> dict[tuple[str, ...], float]:
        names = ("scout_flow_records_total", "scout_flow_packets_total")
        return {
            (sample.name, *sorted(sample.labels.values())): sample.value
            for family in families
            for sample in family.samples
            if sample.name in names or sample.name == "scout_flow_bad_packets_total"
        }

    assert counts(families) == counts(alone.collect())
    assert _value(families, "scout_flow_records_total", exporter="192.0.2.1", version="v5") == 2
    assert _value(families, "scout_flow_records_total", exporter="::1", version="v9") == 3
    assert _value(families, "scout_flow_packets_total", exporter="::1", version="v9") == 2
    assert _value(families, "scout_flow_records_total", exporter="192.0.2.3", version="v5") == 1
    assert _value(families, "scout_flow_records_total", exporter="192.0.2.3", version="ipfix") == 0
    assert _value(families, "scout_flow_bad_packets_total", reason="truncated") == 2
    assert _value(families, "scout_flow_bad_packets_total", reason="unknown_version") == 2
    assert _value(families, "scout_flow_bad_packets_total", reason="unknown_template") == 2
    # Before the first ranking every byte is in other.
    source_bytes = _value(
        families, "scout_flow_talker_bytes_total", exporter="::1", address="other"
    )
    assert source_bytes == 1200 + 300 + 1200


def test_where_recvmmsg_is_refused_the_listener_reads_one_datagram_per_call() -> None:
    """A sandbox that answers ENOSYS: the thread goes on with ``recvfrom_into``."""

    def refused(*_: object) -> int:
        ctypes.set_errno(errno.ENOSYS)
        return -1

    received: list[tuple[bytes, str]] = []
    listener = UdpListener(
        "127.0.0.1:0",
        lambda batch: received.extend((bytes(datagram), peer) for datagram, peer in batch),
        lambda sock: BatchReceiver(sock, refused),
    )
    listener.start()
    try:
        _send(listener.address, b"one", b"two")
        wait_for(lambda: len(received) == 2, timeout=10, what="both datagrams")
    finally:
        listener.stop()
    assert received == [(b"one", "127.0.0.1"), (b"two", "127.0.0.1")]


def _samples(families: list[Metric]) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted(
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in families
        for sample in family.samples
    )


def _ingest_state(collector: FlowsCollector) -> dict[str, object]:
    """What counting has done so far, flushed or not: the pending flows and the window's
    columnar chunks show where the aggregation counted a batch."""
    aggregator = collector.flows.aggregator
    state: dict[str, object] = {"pending": aggregator.pending_bytes(), "series": aggregator.series}
    for address, flows in aggregator.exporters.items():
        state[address] = (
            dict(flows.records),
            dict(flows.packets),
            flows.pending.records,
            flows.pending.size,
            [
                (ranking.chunked, [keys.tolist() for keys, _ in ranking.chunks])
                for _, ranking in flows.rankings()
            ],
        )
    return state


def test_runs_of_quick_datagrams_are_counted_as_one_datagram_at_a_time() -> None:
    """A batch's runs of quick datagrams (one exporter and version) are counted in one
    step; everything, including where a batch of pending flows is counted (past BATCH
    records, in the middle of a run), and the hostile datagrams between them, comes
    out as when each datagram is ingested on its own."""
    rng = random.Random(14)

    def flows(count: int) -> list[Flow]:
        return [
            Flow(
                f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                f"172.16.{rng.randrange(4)}.{rng.randrange(256)}",
                rng.randint(40, 10**6),
                rng.randint(1, 100),
                rng.randint(1, 4),
                rng.randint(1, 4),
            )
            for _ in range(count)
        ]

    v9_set = [v9_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS)]
    datagrams: list[tuple[bytes, str]] = []
    for index in range(800):  # 24,000 v5 records from one router: more than one BATCH
        datagrams.append((v5_packet(flows(30), sampling_interval=index % 3), "192.0.2.1"))
        if index % 97 == 5:
            datagrams += [
                (v5_packet(flows(30))[:-5], "192.0.2.1"),  # cut: dropped inside the run
                (v9_packet(v9_set), "192.0.2.1"),  # a template: the slow path, same router
                (v9_packet([flow_set(256, IPV4_LAYOUT, flows(20))]), "192.0.2.1"),
                (v5_packet(flows(3)), "192.0.2.2"),  # another router
                (b"\x00\x07garbage", "192.0.2.1"),
                (ipfix_packet([flow_set(300, IPV4_LAYOUT, FLOWS)]), "192.0.2.1"),  # unknown
            ]
    config = FlowsCollectorConfig(listen="127.0.0.1:0", by_protocol_port=True, top_n=5)
    together, alone = FlowsCollector(config), FlowsCollector(config)
    for start in range(0, len(datagrams), BATCH_DATAGRAMS):
        together.flows.ingest_batch(datagrams[start : start + BATCH_DATAGRAMS])
        if start == 2 * BATCH_DATAGRAMS:  # a ranking: series for the top talkers
            together.collect()
    for index, (datagram, sender) in enumerate(datagrams):
        alone.flows.ingest(datagram, sender)
        if index == 3 * BATCH_DATAGRAMS - 1:
            alone.collect()
    # A batch was counted after the ranking, in the middle of a run.
    assert together.flows.aggregator.exporters["192.0.2.1"].source.chunks
    assert _ingest_state(together) == _ingest_state(alone)
    families = together.collect()
    assert _samples(families) == _samples(alone.collect())
    assert _value(families, "scout_flow_bad_packets_total", reason="truncated") == 9
    assert _value(families, "scout_flow_bad_packets_total", reason="unknown_template") == 9
    assert _value(families, "scout_flow_records_total", exporter="192.0.2.1", version="v5") == (
        800 * 30
    )


def test_a_run_refused_by_the_series_budget_counts_every_datagram_of_it() -> None:
    """When the budget has no room for a version, each datagram of the run is one
    series_budget drop, as when they come one at a time."""
    ingest = FlowIngest(AggregationSettings(max_series=8), max_templates=10)
    fixed = ingest.aggregator.fixed_cost()
    assert fixed + 2 > 8 >= fixed  # room for the exporter, none for its first version
    ingest.ingest_batch([(v5_packet(FLOWS), "192.0.2.1")] * 5)
    assert ingest.bad_packets["series_budget"] == 5
    assert ingest.aggregator.exporters["192.0.2.1"].records == {}
