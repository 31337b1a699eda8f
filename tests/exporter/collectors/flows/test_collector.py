"""The flows collector as the app runs it: UDP listener lifecycle, exporter filter, registry row."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import ipaddress
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from pydantic import ValidationError

from exporter.collectors import COLLECTORS
from exporter.collectors.base import HostView
from exporter.collectors.flows import FlowIngest, FlowsCollector, aggregate
from exporter.collectors.flows import listener as listener_module
from exporter.collectors.flows.aggregate import AggregationSettings
from exporter.collectors.flows.decoder import FlowDecoder, like_runs
from exporter.collectors.flows.listener import (
    BATCH_DATAGRAMS,
    MAX_PAUSE_SECONDS,
    BatchReceiver,
    DatagramBatch,
    Pacer,
    Receiver,
    SingleReceiver,
    UdpListener,
    parse_listen,
    receiver_for,
)
from exporter.config import ExporterConfig, FlowsCollectorConfig, load_config
from exporter.errors import ConfigError, ListenError
from exporter.live import LiveConfig, Settings
from scripts.localstack import Service, free_port
from tests.conftest import http_get, http_post, wait_for
from tests.firewall_names import FLOW_METRICS
from tests.peers.flows import (
    IPV4_LAYOUT,
    IPV6_LAYOUT,
    Flow,
    data_set,
    flow_set,
    ipfix_packet,
    ipfix_template,
    v5_packet,
    v9_options_template,
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

        def receive(self) -> DatagramBatch:
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
    sizes = (0, 65507, *(index % 5 * 60 for index in range(BATCH_DATAGRAMS + 8)))
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
        # One line for the operator, the address and the reason, as for the HTTP port.
        message = rf"cannot listen on 127\.0\.0\.1:{port} \(flows, UDP\): Address already in use"
        with pytest.raises(ListenError, match=f"^{message}$"):
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
    # Room for one exporter's 7 fixed series, its v5 series and one interface.
    collector = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0", max_series=13))
    collector.flows.ingest(v5_packet(FLOWS), "192.0.2.1")
    collector.flows.ingest(v5_packet(FLOWS), "192.0.2.2")
    families = collector.collect()
    assert _value(families, "scout_flow_bad_packets_total", reason="series_budget") == 1
    assert _value(families, "scout_flow_records_total", exporter="192.0.2.2") is None
    series = _value(families, "scout_flow_series")
    assert series is not None
    assert series <= 13
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
    v9 = v9_packet([v9_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS)])
    for _ in range(2):
        collector.flows.ingest(v5_packet(FLOWS), "192.0.2.1")
        collector.flows.ingest(v9, "192.0.2.2")  # v9 loss is counted in packets
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


def _random_flows(rng: random.Random, count: int, networks: int = 256) -> list[Flow]:
    """``count`` flows from 10.<one of networks>.x.y to 172.16.0-3.x, TCP or UDP."""
    return [
        Flow(
            f"10.{rng.randrange(networks)}.{rng.randrange(256)}.{rng.randrange(256)}",
            f"172.16.{rng.randrange(4)}.{rng.randrange(256)}",
            rng.randint(40, 10**6),
            rng.randint(1, 100),
            rng.randint(1, 4),
            rng.randint(1, 4),
            rng.choice((6, 17)),
            destination_port=rng.choice((53, 443)),
        )
        for _ in range(count)
    ]


def test_runs_of_quick_datagrams_are_counted_as_one_datagram_at_a_time() -> None:
    """A batch's runs of quick datagrams (one exporter and version) are counted in one
    step; everything, including where a batch of pending flows is counted (past BATCH
    records, in the middle of a run), and the hostile datagrams between them, comes
    out as when each datagram is ingested on its own."""
    rng = random.Random(14)

    def flows(count: int) -> list[Flow]:
        return _random_flows(rng, count)

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
    chunk = 64  # datagrams a receive hands on
    together, alone = FlowsCollector(config), FlowsCollector(config)
    for start in range(0, len(datagrams), chunk):
        together.flows.ingest_batch(datagrams[start : start + chunk])
        if start == 2 * chunk:  # a ranking: series for the top talkers
            together.collect()
    for index, (datagram, sender) in enumerate(datagrams):
        alone.flows.ingest(datagram, sender)
        if index == 3 * chunk - 1:
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


def test_a_datagram_batch_is_the_sequence_of_its_datagrams() -> None:
    sent = [(b"\x00\x05one", "192.0.2.1"), (b"", "::1"), (b"three" * 9, "192.0.2.1")]
    batch = DatagramBatch.pack(sent)
    assert len(batch) == 3
    assert [(bytes(datagram), sender) for datagram, sender in batch] == sent
    assert (bytes(batch[-1][0]), batch[-1][1]) == sent[-1]
    assert [(bytes(datagram), sender) for datagram, sender in batch[1:]] == sent[1:]
    assert batch.senders.tolist() == [0, 1, 0]
    with pytest.raises(IndexError):
        batch[3]


def _stream(seed: int, length: int) -> list[tuple[bytes, str]]:
    """A router-like stream with everything that could make a batch's runs read
    differently from single datagrams: v5 with changing counts and sampling; v9 and
    IPFIX data sets whose template arrives mid-stream, changes layout, lives in
    another domain or source id, shares a packet with another set or with padding;
    options that set a sampling rate; cut, lying and unknown datagrams; other senders
    and one from outside the allowed networks."""
    rng = random.Random(seed)

    def flows(count: int) -> list[Flow]:
        return _random_flows(rng, count, networks=4)

    narrow = IPV4_LAYOUT[:4]  # another layout for template 256 later on
    sampling = v9_options_template(257, [(1, 4)], [(34, 4)])

    def v9(sets: list[bytes], source_id: int = 0) -> bytes:
        return v9_packet(sets, source_id=source_id, sequence=rng.randrange(1 << 32))

    def ipfix(sets: list[bytes], domain: int = 0) -> bytes:
        return ipfix_packet(sets, domain=domain, sequence=rng.randrange(1 << 32))

    makers: list[Callable[[], list[bytes]]] = [
        lambda: [v5_packet(flows(30), sequence=rng.randrange(1 << 32)) for _ in range(12)],
        lambda: [v5_packet(flows(rng.choice((1, 30))), sampling_interval=rng.choice((0, 10)))],
        lambda: [v9([v9_template(256, IPV4_LAYOUT)])],
        lambda: [v9([v9_template(256, narrow)])],
        lambda: [v9([flow_set(256, IPV4_LAYOUT, flows(20))]) for _ in range(10)],
        lambda: [v9([flow_set(256, IPV4_LAYOUT, flows(20))], source_id=7) for _ in range(3)],
        lambda: [v9([v9_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, flows(5))])],
        lambda: [v9([flow_set(256, IPV4_LAYOUT, flows(4)), flow_set(256, IPV4_LAYOUT, flows(4))])],
        lambda: [v9([flow_set(256, IPV4_LAYOUT, flows(6))]) + b"\x00\x00"],
        lambda: [v9([sampling, data_set(257, [(1, 4), (34, 4)], [{1: 0, 34: 100}])])],
        lambda: [ipfix([ipfix_template(300, IPV4_LAYOUT)], domain=rng.choice((0, 1)))],
        lambda: [ipfix([flow_set(300, IPV4_LAYOUT, flows(20))], domain=rng.choice((0, 1)))] * 6,
        lambda: [ipfix([flow_set(300, IPV4_LAYOUT, flows(20))]) + b"\x00" * 9],
        lambda: [v5_packet(flows(30))[: rng.randrange(60, 1400)] for _ in range(3)],
        lambda: [b"\x00\x07garbage", b"", b"\x00\x05", b"\x00\x0a" + bytes(30)],
    ]
    stream: list[tuple[bytes, str]] = []
    while len(stream) < length:
        sender = rng.choice(("192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2", "203.0.113.9"))
        for datagram in rng.choice(makers)():
            if rng.random() < 0.03:  # an odd byte anywhere, the header included
                spoiled = bytearray(datagram or b"\x00")
                spoiled[rng.randrange(min(len(spoiled), 40))] = rng.randrange(256)
                datagram = bytes(spoiled)
            stream.append((datagram, sender))
    return stream


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_read_by_runs_count_exactly_as_datagrams_one_at_a_time(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the listener hands on (``DatagramBatch``) is read by runs of like datagrams,
    whole runs sliced out of the batch at once; every count, every batch of pending
    flows, every bad packet and every series comes out as when each datagram is
    ingested on its own."""
    # Pending flows counted every 997 records: the points fall inside runs, often.
    monkeypatch.setattr(aggregate, "BATCH", 997)
    stream = _stream(seed, 3000)
    config = FlowsCollectorConfig(
        listen="127.0.0.1:0",
        by_protocol_port=True,
        top_n=5,
        exporters=[ipaddress.ip_network("192.0.2.0/24")],
    )
    now = [1000.0]  # one clock for both, moved on between batches: windows rotate alike
    together = FlowsCollector(config, clock=lambda: now[0])
    alone = FlowsCollector(config, clock=lambda: now[0])
    rng = random.Random(seed)
    start = 0
    while start < len(stream):
        now[0] += rng.choice((0.0, 0.5, 7.0))
        size = rng.choice((1, 2, 7, 64, BATCH_DATAGRAMS))
        together.flows.ingest_batch(DatagramBatch.pack(stream[start : start + size]))
        for datagram, sender in stream[start : start + size]:
            alone.flows.ingest(datagram, sender)
        start += size
        if rng.random() < 0.05:
            assert _ingest_state(together) == _ingest_state(alone)
            assert _samples(together.collect()) == _samples(alone.collect())
    assert _ingest_state(together) == _ingest_state(alone)
    families = together.collect()
    assert _samples(families) == _samples(alone.collect())
    # The stream did reach every path: runs, bad packets, the allow-list, both templates.
    bad = together.flows.bad_packets
    assert bad["not_allowed"] > 0
    assert bad["truncated"] > 0
    assert bad["unknown_version"] > 0
    for version in ("v5", "v9", "ipfix"):
        assert _value(families, "scout_flow_records_total", exporter="192.0.2.1", version=version)


def test_runs_of_like_datagrams_split_where_their_reading_could_differ() -> None:
    def v5(count: int = 30, sampling: int = 0, sequence: int = 0) -> bytes:
        return v5_packet((FLOWS * 15)[:count], sampling_interval=sampling, sequence=sequence)

    data = flow_set(256, IPV4_LAYOUT, FLOWS)
    cases: list[tuple[list[tuple[bytes, str]], list[int]]] = [
        # Sequence numbers and clocks differ, nothing else: one run.
        ([(v5(sequence=index), "a") for index in range(5)], [0, 5]),
        ([(v9_packet([data], sequence=index), "a") for index in range(3)], [0, 3]),
        ([(ipfix_packet([data], sequence=index), "a") for index in range(3)], [0, 3]),
        # Another sender, record count, sampling, length: a new run.
        ([(v5(), "a"), (v5(), "b"), (v5(), "b")], [0, 1, 3]),
        ([(v5(), "a"), (v5(count=29), "a"), (v5(sampling=7), "a")], [0, 1, 2, 3]),
        ([(v9_packet([data]), "a"), (v9_packet([data]) + b"\x00", "a")], [0, 1, 2]),
        # Another v5 engine (a sequence stream of its own): a new run.
        ([(v5(), "a"), (v5()[:21] + b"\x01" + v5()[22:], "a")], [0, 1, 2]),
        # Another v9 source id or first set, another IPFIX domain: a new run.
        ([(v9_packet([data]), "a"), (v9_packet([data], source_id=1), "a")], [0, 1, 2]),
        (
            [(v9_packet([data]), "a"), (v9_packet([flow_set(257, IPV4_LAYOUT, FLOWS)]), "a")],
            [0, 1, 2],
        ),
        ([(ipfix_packet([data]), "a"), (ipfix_packet([data], domain=1), "a")], [0, 1, 2]),
        # Versions differ; datagrams too short for a signature stand alone.
        ([(v5(), "a"), (v9_packet([data]), "a"), (ipfix_packet([data]), "a")], [0, 1, 2, 3]),
        ([(b"\x00\x05", "a"), (b"\x00\x05", "a"), (v5(), "a")], [0, 1, 2, 3]),
    ]
    for datagrams, runs in cases:
        batch = DatagramBatch.pack(datagrams)
        assert like_runs(batch.slots, batch.lengths, batch.senders) == runs, datagrams


def test_a_packet_of_two_data_sets_is_not_read_as_a_run() -> None:
    """Datagrams alike in their first set header may differ after it: a packet with a
    second set, or room for one, is read datagram by datagram."""
    decoder = FlowDecoder(16)
    decoder.decode(v9_packet([v9_template(256, IPV4_LAYOUT)]), "192.0.2.1")
    one = v9_packet([flow_set(256, IPV4_LAYOUT, FLOWS)])
    layout = decoder.run_layout(one, "192.0.2.1")
    assert layout is not None
    version, (_, records, count, rate), offset = layout
    assert (version, count, rate, offset) == ("v9", 2, 1, 24)
    assert bytes(records) == one[offset : offset + len(records)]
    two = v9_packet([flow_set(256, IPV4_LAYOUT, FLOWS), flow_set(256, IPV4_LAYOUT, FLOWS)])
    assert decoder.run_layout(two, "192.0.2.1") is None
    # Room for another set, here an empty one of the same template: the signature
    # covers the first set only, so another datagram could hold something else there.
    assert decoder.run_layout(one + struct.pack("!HH", 256, 4), "192.0.2.1") is None
    assert decoder.run_layout(one + b"\x00" * 3, "192.0.2.1") is not None


class _Queue:
    """What the kernel says of a socket's queue, as the test sets it."""

    def __init__(self) -> None:
        self.queued = 0
        self.drops = 0

    def __call__(self) -> tuple[int, int]:
        return self.queued, self.drops


def _drain(pacer: Pacer, queue: _Queue, queued: int, batch: int = 10) -> float:
    """One drain that starts with ``queued`` bytes waiting: the wait after it."""
    queue.queued = queued
    pacer.before_receive()
    return pacer.after(batch)


def test_the_pacer_waits_longer_while_the_queue_stays_shallow_and_backs_off_as_it_fills() -> None:
    capacity = 8_000_000
    queue = _Queue()
    pacer = Pacer(capacity, BATCH_DATAGRAMS, queue)
    assert pacer.max_pause == MAX_PAUSE_SECONDS  # a deep buffer: the longest wait
    # A full batch: more may be queued, read on at once, and no new drain starts.
    assert pacer.after(BATCH_DATAGRAMS) == 0.0
    waits = [_drain(pacer, queue, capacity // 100) for _ in range(12)]
    assert waits == sorted(waits)
    assert waits[0] > 0
    assert waits[-1] == MAX_PAUSE_SECONDS
    # The queue was 60 % full when a wait ended: much shorter waits, then none.
    shorter = _drain(pacer, queue, capacity * 6 // 10)
    assert 0 < shorter < MAX_PAUSE_SECONDS / 4
    assert [_drain(pacer, queue, capacity) for _ in range(6)][-1] == 0.0
    # Shallow again: the waits grow back; one kernel drop stops them at once.
    assert [_drain(pacer, queue, 0) for _ in range(20)][-1] == MAX_PAUSE_SECONDS
    queue.drops += 1
    assert _drain(pacer, queue, 0) == 0.0
    # After an idle spell the wait starts over from the shortest.
    for _ in range(20):
        _drain(pacer, queue, 0)
    pacer.idle(1.0)
    assert _drain(pacer, queue, 0) == waits[0]


def test_the_pacer_leaves_a_small_buffer_room_for_a_burst_and_never_paces_one_by_one() -> None:
    queue = _Queue()
    # Linux's default cap (212,992 asked, twice that given): a wait of a few ms at most,
    # in which a burst of 20,000 datagrams a second fills half the queue.
    small = Pacer(425_984, BATCH_DATAGRAMS, queue)
    assert 0 < small.max_pause < 0.005
    assert [_drain(small, queue, 0) for _ in range(20)][-1] == small.max_pause
    # One datagram per receive: every batch ends a "drain", so none may be followed
    # by a wait (it would read one datagram per wait).
    single = Pacer(8_000_000, 1, queue)
    assert [_drain(single, queue, 0, batch=1) for _ in range(20)] == [0.0] * 20
    # A kernel that does not describe its queues: no waits.
    unknown = Pacer(8_000_000, BATCH_DATAGRAMS, lambda: None)
    assert [_drain(unknown, queue, 0) for _ in range(5)] == [0.0] * 5


def test_the_one_by_one_reader_keeps_up_with_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where recvmmsg is refused the thread reads one datagram per call, unpaced: a
    burst is read at once, not one datagram per wait."""
    # Waits as long as they may be whatever the buffer this host grants, so a paced
    # one-by-one reader could not hide behind a short longest wait.
    monkeypatch.setattr(listener_module, "_BURST_BYTES_PER_SECOND", 1)

    def refused(*_: object) -> int:
        ctypes.set_errno(errno.ENOSYS)
        return -1

    received: list[bytes] = []
    listener = UdpListener(
        "127.0.0.1:0",
        lambda batch: received.extend(bytes(datagram) for datagram, _ in batch),
        lambda sock: BatchReceiver(sock, refused),
    )
    listener.start()
    try:
        _send(listener.address, b"warm")  # the switch to one datagram per call
        wait_for(lambda: len(received) == 1, timeout=10, what="the first datagram")
        _send(listener.address, *(b"%d" % index for index in range(400)))
        # Paced like batches, these 400 would take 20 s (one per 50 ms wait).
        wait_for(lambda: len(received) == 401, timeout=10, what="the burst")
    finally:
        listener.stop()
    assert received[1:] == [b"%d" % index for index in range(400)]


def test_datagrams_the_kernel_drops_on_a_full_queue_are_counted() -> None:
    """A handler that stalls while a router keeps sending: the socket's queue
    overflows, the kernel drops, and ``scout_flow_receive_drops_total`` says so."""
    release = threading.Event()
    received: list[int] = []

    def stalled(batch: Sequence[tuple[memoryview, str]]) -> None:
        received.append(len(batch))
        release.wait(30)

    def drops() -> float:
        value = _value(collector.collect(), "scout_flow_receive_drops_total")
        assert value is not None
        return value

    collector = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0"))
    collector._listener = UdpListener("127.0.0.1:0", stalled)
    assert drops() == 0
    collector._listener.start()
    try:
        assert drops() == 0
        address = collector._listener.address
        _send(address, b"first")
        wait_for(lambda: received, timeout=10, what="the first datagram")
        assert collector._listener._socket is not None
        queue = collector._listener._socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        big = bytes(60_000)
        sent = queue // len(big) + 40
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(sent):
                sender.sendto(big, address)
        wait_for(lambda: drops() >= 20, timeout=10, what="the kernel's drops")
        release.set()
        # Every datagram sent was either read or dropped, and counted as such.
        wait_for(lambda: sum(received) + drops() == sent + 1, timeout=10, what="the queue")
        assert sum(received) + drops() == sent + 1
        # A reload's collector goes on from the count of the listener it replaces.
        dropped = drops()
        collector._listener.stop()
        assert drops() == dropped
        successor = FlowsCollector(FlowsCollectorConfig(listen="127.0.0.1:0"))
        successor.take_over(collector)
        assert _value(successor.collect(), "scout_flow_receive_drops_total") == dropped
        successor._listener.start()
        successor._listener.stop()
        assert _value(successor.collect(), "scout_flow_receive_drops_total") == dropped
    finally:
        release.set()
        collector._listener.stop()


def test_a_stream_received_over_udp_counts_as_datagrams_one_at_a_time() -> None:
    """The same equivalence through a real socket: the listener's batches (a row of 64
    KiB per datagram, stale bytes past each one) against each datagram ingested alone."""
    stream = [(datagram, "127.0.0.1") for datagram, _ in _stream(4, 1500)]
    config = FlowsCollectorConfig(listen="127.0.0.1:0", by_protocol_port=True, top_n=5)
    now = [1000.0]
    together = FlowsCollector(config, clock=lambda: now[0])
    alone = FlowsCollector(config, clock=lambda: now[0])
    handled: list[int] = []

    def handle(batch: Sequence[tuple[memoryview, str]]) -> None:
        together.flows.ingest_batch(batch)
        handled.append(len(batch))

    listener = UdpListener("127.0.0.1:0", handle)
    listener.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for start in range(0, len(stream), 100):
                chunk = stream[start : start + 100]
                for datagram, _ in chunk:
                    udp.sendto(datagram, listener.address)
                # Keep the queue shallow whatever the buffer: no datagram may be lost.
                expected = start + len(chunk)
                wait_for(
                    functools.partial(lambda end: sum(handled) == end, expected),
                    timeout=10,
                    what="what was sent",
                )
    finally:
        listener.stop()
    assert max(handled) > 1  # batches, not single datagrams
    for datagram, sender in stream:
        alone.flows.ingest(datagram, sender)
    assert _ingest_state(together) == _ingest_state(alone)
    assert _samples(together.flows.collect()) == _samples(alone.flows.collect())


def test_the_listener_measures_the_queue_before_a_drain_and_waits_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The order the pacing depends on: the queue is measured before the receive that
    starts a drain (when a wait has let it grow), the batch is handled, then the
    wait; after a full batch the next receive follows at once, unmeasured; after the
    switch to one datagram per call the pacer is one that never waits."""
    events: list[str] = []
    pacers: list[Pacer] = []

    class RecordingPacer(Pacer):
        def __init__(
            self, capacity: int, slots: int, meminfo: Callable[[], tuple[int, int] | None]
        ) -> None:
            def measured() -> tuple[int, int] | None:
                events.append("measure")
                return meminfo()

            super().__init__(capacity, slots, measured)
            pacers.append(self)

        def after(self, count: int) -> float:
            wait = super().after(count)
            events.append(f"wait {wait > 0}")
            return wait

    class Scripted(BatchReceiver):
        """Batches of 256, 3, 1, then recvmmsg refused; then the real one-by-one reader."""

        def __init__(self, sock: socket.socket) -> None:  # no buffer: batches are made up
            self.sizes = [BATCH_DATAGRAMS, 3, 1]

        def receive(self) -> list[tuple[memoryview, str]]:  # type: ignore[override]
            if not self.sizes:
                raise OSError(errno.ENOSYS, "refused")
            events.append("receive")
            return [(memoryview(b"x"), "192.0.2.1")] * self.sizes.pop(0)

    monkeypatch.setattr(listener_module, "Pacer", RecordingPacer)
    listener = UdpListener(
        "127.0.0.1:0", lambda batch: events.append(f"handle {len(batch)}"), Scripted
    )
    listener.start()
    try:
        wait_for(lambda: len(pacers) == 2, timeout=10, what="the switch")
        _send(listener.address, b"one")
        wait_for(lambda: "handle 1" in events[-2:], timeout=10, what="a datagram read alone")
    finally:
        listener.stop()
    assert events[:10] == [
        "measure",
        "receive",
        f"handle {BATCH_DATAGRAMS}",
        "wait False",
        "receive",
        "handle 3",
        "wait True",
        "measure",
        "receive",
        "handle 1",
    ]
    assert pacers[1].max_pause == 0.0


def _metric(body: str, sample: str) -> float | None:
    """The value of the exposition line starting with ``sample`` (name and labels)."""
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


@pytest.mark.peers
def test_a_reload_keeps_the_flow_templates_and_counts_of_every_exporter(
    tmp_path: Path, exporter_factory: Callable[..., tuple[Service, str]]
) -> None:
    udp_port = free_port(kind=socket.SOCK_DGRAM)
    config = tmp_path / "exporter.yml"
    flows_config = f"collectors:\n  flows:\n    listen: 127.0.0.1:{udp_port}\n"
    config.write_text(flows_config + "    top_n: 1\n")
    _, url = exporter_factory(
        "--collector.flows",
        "--no-collector.host",
        "--web.enable-lifecycle",
        f"--config.file={config}",
    )
    records = 'scout_flow_records_total{exporter="127.0.0.1",version="ipfix"}'
    unknown = 'scout_flow_bad_packets_total{reason="unknown_template"}'
    data = flow_set(256, IPV4_LAYOUT, FLOWS)

    def read_after(sequence: int, expected_records: float) -> str:
        """Send a data packet only; the exposition once it was read, counted or not."""
        _send(("127.0.0.1", udp_port), ipfix_packet([data], sequence=sequence))

        def read() -> str | None:
            body = http_get(f"{url}/metrics")[1]
            seen = _metric(body, records) == expected_records or _metric(body, unknown)
            return body if seen else None

        body: str = wait_for(read, timeout=20, what=f"the data packet {sequence}")
        return body

    _send(("127.0.0.1", udp_port), ipfix_packet([ipfix_template(256, IPV4_LAYOUT), data]))
    wait_for(lambda: _metric(http_get(f"{url}/metrics")[1], records) == 2, what="the template")
    # The same config again (as for a renewed certificate): nothing is forgotten.
    assert http_post(f"{url}/-/reload")[0] == 200
    body = read_after(2, 4)
    assert _metric(body, unknown) == 0
    assert _metric(body, records) == 4  # the counter goes on
    assert _metric(body, 'scout_flow_templates{exporter="127.0.0.1"}') == 1
    lost = 'scout_flow_sequence_lost_records_total{exporter="127.0.0.1",version="ipfix"}'
    assert _metric(body, lost) == 0  # the sequence state went on too: no gap, no restart
    # Another ranking: the counts start again, the router's templates still hold.
    config.write_text(flows_config + "    top_n: 2\n")
    assert http_post(f"{url}/-/reload")[0] == 200
    body = read_after(4, 2)
    assert _metric(body, unknown) == 0
    assert _metric(body, records) == 2
    assert _metric(body, 'scout_flow_templates{exporter="127.0.0.1"}') == 1


async def test_a_reload_forgets_only_what_the_new_settings_make_invalid() -> None:
    settings = {"listen": "127.0.0.1:0", "top_n": 5}
    old = FlowsCollector(FlowsCollectorConfig(**settings))
    templates = [ipfix_template(256, IPV4_LAYOUT), ipfix_template(257, IPV4_LAYOUT)]
    for exporter in ("192.0.2.1", "198.51.100.1"):
        old.flows.ingest(ipfix_packet([*templates, flow_set(256, IPV4_LAYOUT, FLOWS)]), exporter)
    old.flows.ingest(b"\x00\x05", "192.0.2.1")  # a truncated packet
    # Only 192.0.2.0/24 is allowed now, and one template in all: the other exporter is
    # forgotten, counts and templates, the kept exporter keeps its template used last,
    # and its counts go on.
    new = FlowsCollector(
        FlowsCollectorConfig(**settings, exporters=["192.0.2.0/24"], max_templates=1)
    )
    new.take_over(old)
    # Not yet started, the new config may still fall back: the old counts stay whole.
    assert _value(old.collect(), "scout_flow_records_total", exporter="198.51.100.1") == 2
    await new.start()
    try:
        new.flows.ingest(ipfix_packet([flow_set(256, IPV4_LAYOUT, FLOWS)], sequence=2), "192.0.2.1")
        families = new.collect()
    finally:
        await new.close()
    assert _value(families, "scout_flow_bad_packets_total", reason="unknown_template") == 0
    assert _value(families, "scout_flow_bad_packets_total", reason="truncated") == 1
    assert _value(families, "scout_flow_records_total", exporter="192.0.2.1") == 4
    assert _value(families, "scout_flow_templates", exporter="192.0.2.1") == 1
    assert _value(families, "scout_flow_records_total", exporter="198.51.100.1") is None
    assert len(new.flows.decoder.templates) == 1
    # Another collector kind, or none, leaves a fresh one as it was built.
    fresh = FlowsCollector(FlowsCollectorConfig(**settings))
    fresh.take_over(object())
    assert len(fresh.flows.decoder.templates) == 0


@pytest.mark.parametrize(
    "layout",
    [IPV6_LAYOUT, (*IPV6_LAYOUT, (82, 0xFFFF))],  # read at C speed; field by field (varlen)
    ids=["fixed", "variable-length"],
)
async def test_ipv4_mapped_addresses_are_ranked_as_the_ipv4_addresses_they_carry(
    layout: tuple[tuple[int, int], ...],
) -> None:
    collector = FlowsCollector(
        FlowsCollectorConfig(listen="127.0.0.1:0", top_n=5, ipv4_prefix=24, ipv6_prefix=64)
    )
    flows = [
        Flow("::ffff:10.9.9.9", "2001:db8:9::1", 500, 1),
        Flow("::ffff:10.8.8.8", "2001:db8:9::1", 300, 1),
        Flow("2001:db8:1:2::5", "::ffff:10.9.9.1", 700, 1),
        Flow("10.9.9.7", "2001:db8:9::1", 100, 1),  # a plain IPv4 flow of the same subnet
    ]
    packet = ipfix_packet([ipfix_template(300, layout), flow_set(300, layout, flows[:3])])
    await collector.start()
    try:
        for rounds in (1, 2):  # the first is ranked at a scrape, the second counted
            _send(collector.address, packet, v5_packet(flows[3:]))

            def counted(rounds: int = rounds) -> bool:
                exporter = collector.flows.aggregator.exporters.get("127.0.0.1")
                records = {} if exporter is None else exporter.records
                return records.get("ipfix") == 3 * rounds and records.get("v5") == rounds

            wait_for(counted, timeout=10, what="the packets")
            families = collector.collect()
    finally:
        await collector.close()
    sources = {
        sample.labels["address"]: sample.value
        for family in families
        for sample in family.samples
        if sample.name == "scout_flow_talker_bytes_total" and sample.labels["direction"] == "source"
    }
    # The first round, counted before any talker had a series, is in other.
    assert sources == {
        "10.9.9.0/24": 600,
        "10.8.8.0/24": 300,
        "2001:db8:1:2::/64": 700,
        "other": 1600,
    }
    destinations = {
        sample.labels["address"]
        for family in families
        for sample in family.samples
        if sample.name == "scout_flow_talker_bytes_total"
        and sample.labels["direction"] == "destination"
    }
    assert "10.9.9.0/24" in destinations
    assert not any(address.startswith("::") for address in destinations)


async def test_a_reload_to_a_busy_flow_port_falls_back_with_the_templates_and_counts_kept(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "exporter.yml"
    config_file.write_text("collectors:\n  flows:\n    listen: 127.0.0.1:0\n    top_n: 5\n")
    settings = Settings(config_file=config_file, enabled_collectors=frozenset({"flows"}))
    live = LiveConfig(settings, load_config(config_file), COLLECTORS)
    await live.start()
    try:
        before = live.collectors["flows"]
        assert isinstance(before, FlowsCollector)
        data = flow_set(256, IPV4_LAYOUT, FLOWS)
        _send(before.address, ipfix_packet([ipfix_template(256, IPV4_LAYOUT), data]))
        wait_for(
            lambda: _value(before.collect(), "scout_flow_records_total", version="ipfix") == 2,
            timeout=10,
            what="the template and data",
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
            busy.bind(("127.0.0.1", 0))
            port = busy.getsockname()[1]
            # Another ranking too: the new collector counts afresh, the old one's counts
            # are still those of the config that comes back.
            config_file.write_text(
                f"collectors:\n  flows:\n    listen: 127.0.0.1:{port}\n    top_n: 6\n"
            )
            with pytest.raises(ConfigError, match="flows, UDP"):
                await live.reload()
        # The previous config runs again, built afresh: it still knows the router's
        # template, and its counts and sequence state go on.
        assert live.config.collectors.flows.top_n == 5
        after = live.collectors["flows"]
        assert isinstance(after, FlowsCollector)
        assert after is not before
        after.flows.ingest(ipfix_packet([data], sequence=2), "127.0.0.1")
        families = after.collect()
        assert _value(families, "scout_flow_bad_packets_total", reason="unknown_template") == 0
        assert _value(families, "scout_flow_records_total", version="ipfix") == 4
        assert _value(families, "scout_flow_sequence_lost_records_total", version="ipfix") == 0
    finally:
        await live.close()


async def test_scrapes_during_reloads_never_see_a_flow_counter_go_back(tmp_path: Path) -> None:
    """A scrape on every turn of the event loop while reloads run (the same config, then
    one that fails): each reads the collector published then, which is never one that
    has not yet taken over from its predecessor, so no count goes back to 0."""
    config_file = tmp_path / "exporter.yml"
    config_file.write_text("collectors:\n  flows:\n    listen: 127.0.0.1:0\n")
    settings = Settings(config_file=config_file, enabled_collectors=frozenset({"flows"}))
    live = LiveConfig(settings, load_config(config_file), COLLECTORS)
    await live.start()
    first = live.collectors["flows"]
    assert isinstance(first, FlowsCollector)
    first.flows.ingest(b"\x00\x05", "192.0.2.1")  # truncated
    template, data = ipfix_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS)
    first.flows.ingest(ipfix_packet([template, data]), "192.0.2.1")
    names = [
        ("scout_flow_bad_packets_total", {"reason": "truncated"}),
        ("scout_flow_templates", {"exporter": "192.0.2.1"}),
        ("scout_flow_records_total", {"exporter": "192.0.2.1"}),
        ("scout_flow_receive_drops_total", {}),
    ]
    seen: list[list[float | None]] = []
    reloading = True

    async def scrape() -> None:
        while reloading:
            families = live.collectors["flows"].collect()
            seen.append([_value(families, name, **labels) for name, labels in names])
            await asyncio.sleep(0)

    scrapes = asyncio.create_task(scrape())
    try:
        await asyncio.sleep(0)
        await live.reload()
        await live.reload()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
            busy.bind(("127.0.0.1", 0))
            config_file.write_text(
                f"collectors:\n  flows:\n    listen: 127.0.0.1:{busy.getsockname()[1]}\n"
            )
            with pytest.raises(ConfigError):
                await live.reload()
    finally:
        reloading = False
        await scrapes
        await live.close()
    assert len(seen) > 3
    assert [values for values in seen if values != [1, 1, 2, seen[0][3]]] == []
