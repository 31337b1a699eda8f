"""Top-N aggregation: ranking, other, ttl, the series budget, and rate() across rank changes."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import numpy as np
import pytest
from prometheus_client.metrics_core import Metric

from exporter.collectors.flows import FlowIngest
from exporter.collectors.flows.aggregate import (
    BATCH,
    CHUNK_FACTOR,
    PENDING_BYTES,
    SLOTS,
    AggregationSettings,
    FlowAggregator,
)
from exporter.collectors.flows.columns import reduce_by_key
from exporter.collectors.flows.records import FlowRecord
from tests.peers.flows import IPV4_LAYOUT, Flow, flow_set, ipfix_packet, ipfix_template, v5_packet

EXPORTER = "192.0.2.1"


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _record(source: str, octets: int, destination: str = "10.9.9.9") -> FlowRecord:
    return (_ip(source), _ip(destination), octets, 1, 1, 2, 6, 443)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _samples(families: Iterable[Metric], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
        if sample.name == name
    }


def _talkers(families: list[Metric], direction: str = "source") -> dict[str, float]:
    return {
        dict(labels)["address"]: value
        for labels, value in _samples(families, "scout_flow_talker_bytes_total").items()
        if dict(labels)["direction"] == direction
    }


def _value(families: list[Metric], name: str) -> float:
    (value,) = _samples(families, name).values()
    return value


def _feed(aggregator: FlowAggregator, records: list[FlowRecord], now: float) -> None:
    flows = aggregator.exporter(EXPORTER, now)
    assert flows is not None
    assert aggregator.add(flows, "v5", records, now)


def test_top_talkers_get_series_at_a_scrape_and_count_from_zero() -> None:
    clock = Clock()
    ingest = FlowIngest(AggregationSettings(top_n=3), max_templates=10, clock=clock)
    volumes = {f"10.0.0.{i}": i * 1000 for i in range(1, 11)}
    flows = [Flow(address, "10.9.9.9", octets, 1) for address, octets in volumes.items()]
    ingest.ingest(v5_packet(flows), EXPORTER)
    first = ingest.collect()
    # Everything so far is in other; the top 3 now have series starting at 0.
    assert _talkers(first) == {"10.0.0.10": 0, "10.0.0.9": 0, "10.0.0.8": 0, "other": 55000}
    ingest.ingest(v5_packet(flows), EXPORTER)
    second = _talkers(ingest.collect())
    assert second == {
        "10.0.0.10": 10000,
        "10.0.0.9": 9000,
        "10.0.0.8": 8000,
        "other": 55000 + 28000,
    }
    assert sum(second.values()) == 2 * sum(volumes.values())
    folded = _samples(ingest.collect(), "scout_flow_folded_records_total")
    assert folded[(("direction", "source"), ("exporter", EXPORTER))] == 10 + 7


def test_sum_of_deltas_over_talkers_and_other_equals_the_total_as_ranks_change() -> None:
    """Prometheus-style increases between scrapes add up while talkers enter and leave the top N."""
    clock = Clock()
    settings = AggregationSettings(top_n=2, window=60, ttl=120)
    ingest = FlowIngest(settings, max_templates=10, clock=clock)
    previous: dict[str, float] = {}
    # Phases: who sends how much each 15 s scrape interval. "c" becomes big, then stops.
    phases = [
        {"10.0.0.1": 500, "10.0.0.2": 400, "10.0.0.3": 10},
        {"10.0.0.1": 500, "10.0.0.2": 400, "10.0.0.3": 10},
        {"10.0.0.1": 500, "10.0.0.2": 400, "10.0.0.3": 5000},
        {"10.0.0.1": 500, "10.0.0.2": 400, "10.0.0.3": 5000},
        {"10.0.0.1": 500, "10.0.0.2": 400, "10.0.0.3": 5000},
    ] + [{"10.0.0.1": 500, "10.0.0.2": 400, "10.0.0.3": 1}] * 16
    seen_series: set[str] = set()
    retired: set[str] = set()
    for sent in phases:
        flows = [Flow(address, "10.9.9.9", octets, 1) for address, octets in sent.items()]
        ingest.ingest(v5_packet(flows), EXPORTER)
        clock.now += 15
        current = _talkers(ingest.collect())
        increase = 0.0
        for address, value in current.items():
            if address in previous:
                increase += value - previous[address]
            elif previous:
                assert value == 0, f"{address} appeared with {value}: rate() would lose it"
        assert increase == sum(sent.values()) or not previous
        retired |= previous.keys() - current.keys()
        seen_series |= current.keys()
        previous = current
    # 10.0.0.3 entered the top 2 (pushing 10.0.0.2 out), then left it and lost its series
    # after ttl; 10.0.0.2 came back within ttl and kept its series all along.
    assert "10.0.0.3" in seen_series
    assert retired == {"10.0.0.3"}
    assert set(previous) == {"10.0.0.1", "10.0.0.2", "other"}


def test_a_talker_out_of_the_top_n_keeps_its_series_for_ttl() -> None:
    settings = AggregationSettings(top_n=1, window=10, ttl=100)
    aggregator = FlowAggregator(settings, now=0.0)
    _feed(aggregator, [_record("10.0.0.1", 100)], 0.0)
    aggregator.refresh(1.0)
    assert set(aggregator.exporters[EXPORTER].source.series) == {_ip("10.0.0.1")}
    # Another talker takes the top spot once the window has slid past the first.
    for second in range(20, 100, 5):
        _feed(aggregator, [_record("10.0.0.2", 1000)], float(second))
        aggregator.refresh(float(second))
    assert set(aggregator.exporters[EXPORTER].source.series) == {_ip("10.0.0.1"), _ip("10.0.0.2")}
    _feed(aggregator, [_record("10.0.0.2", 1000)], 125.0)
    aggregator.refresh(125.0)
    assert set(aggregator.exporters[EXPORTER].source.series) == {_ip("10.0.0.2")}


def test_one_million_source_addresses_stay_within_the_series_budget() -> None:
    settings = AggregationSettings(top_n=50, max_series=60, window=300)
    aggregator = FlowAggregator(settings, now=0.0)
    total = 0
    base, destination = _ip("10.0.0.0"), _ip("10.9.9.9")
    heavy = [_record(f"192.168.0.{i}", 1_000_000) for i in range(1, 101)]
    for chunk in range(1000):
        records: list[FlowRecord] = [
            (base + chunk * 1000 + i, destination, 100, 1, 1, 2, 6, 443) for i in range(1000)
        ]
        records += heavy if chunk % 100 == 0 else []
        total += sum(record[2] for record in records)
        _feed(aggregator, records, chunk * 0.1)
        if chunk % 100 == 99:
            aggregator.refresh(chunk * 0.1)
            assert aggregator.series <= settings.max_series
    ingest_state = aggregator.exporters[EXPORTER]
    source = ingest_state.source
    # The heavy hitters won the few series there were; other carries everything else.
    assert source.series
    assert all(0xC0A80000 <= key <= 0xC0A800FF for key in source.series)  # type: ignore[operator]
    assert source.other[0] + sum(counters[0] for counters in source.series.values()) == total
    # Other holds every byte of the million one-off sources, and the heavy bytes sent
    # before a heavy source got its series.
    assert source.other[0] >= 1000 * 1000 * 100
    assert source.folded >= 1_000_000 - 100 * 10
    assert aggregator.dropped_series > 0
    # Keys held for ranking are bounded whatever the number of addresses.
    assert source.tracked_keys() <= SLOTS * aggregator.capacity


def test_series_budget_retires_lingering_series_to_make_room() -> None:
    settings = AggregationSettings(top_n=2, window=10, ttl=1000, max_series=16)
    aggregator = FlowAggregator(settings, now=0.0)
    # One exporter: 7 fixed series, 5 for v5 (records, packets, three sequence
    # counters), 2 interfaces.
    _feed(aggregator, [_record("10.0.0.1", 100, "10.9.9.1")], 0.0)
    aggregator.refresh(0.5)
    source = aggregator.exporters[EXPORTER].source
    assert aggregator.series == 14 + 2  # the source talker fits, the destination one not
    assert aggregator.dropped_series == 1
    # 10.0.0.1 leaves the window; 10.0.0.2 is the new top talker but finds no room:
    # the lingering 10.0.0.1 is retired (shown once more) to make room for the next refresh.
    _feed(aggregator, [_record("10.0.0.2", 500, "10.9.9.1")], 30.0)
    aggregator.refresh(30.0)
    assert not source.series
    assert dict(source.exposed()) == {_ip("10.0.0.1"): [0, 0]}
    assert aggregator.series <= settings.max_series
    _feed(aggregator, [_record("10.0.0.2", 500, "10.9.9.1")], 31.0)
    aggregator.refresh(31.0)
    assert set(source.series) == {_ip("10.0.0.2")}
    assert dict(source.exposed()).keys() == {_ip("10.0.0.2")}
    assert aggregator.series <= settings.max_series


def test_subnets_protocol_ports_and_interfaces() -> None:
    clock = Clock()
    settings = AggregationSettings(top_n=5, ipv4_prefix=24, by_protocol_port=True)
    ingest = FlowIngest(settings, max_templates=10, clock=clock)
    flows = [
        Flow("10.0.0.1", "10.9.9.9", 100, 1, 3, 4, 6, 1000, 443),
        Flow("10.0.0.2", "10.9.9.9", 200, 1, 3, 4, 6, 1000, 443),
        Flow("10.0.1.1", "10.9.9.9", 50, 1, 5, 4, 17, 1000, 53),
    ]
    for _ in range(2):
        ingest.ingest(v5_packet(flows), EXPORTER)
        families = ingest.collect()
    assert _talkers(families) == {"10.0.0.0/24": 300, "10.0.1.0/24": 50, "other": 350}
    conversations = {
        (dict(labels)["protocol"], dict(labels)["port"]): value
        for labels, value in _samples(families, "scout_flow_conversation_bytes_total").items()
    }
    assert conversations == {("tcp", "443"): 300, ("udp", "53"): 50, ("other", "other"): 350}
    interfaces = {
        (dict(labels)["direction"], dict(labels)["ifindex"]): value
        for labels, value in _samples(families, "scout_flow_interface_bytes_total").items()
    }
    assert interfaces == {("in", "3"): 600, ("in", "5"): 100, ("out", "4"): 700}


def test_series_gauge_counts_every_exposed_series_with_an_exporter_label() -> None:
    clock = Clock()
    ingest = FlowIngest(AggregationSettings(top_n=3, by_protocol_port=True), 10, clock=clock)
    flows = [Flow(f"10.0.0.{i}", f"10.1.0.{i}", i * 10, 1, i, i + 1) for i in range(1, 8)]
    for exporter in (EXPORTER, "192.0.2.2"):
        ingest.ingest(v5_packet(flows), exporter)
    families = ingest.collect()
    exposed = sum(
        1
        for family in families
        for sample in family.samples
        if "exporter" in sample.labels and not sample.name.endswith("_created")
    )
    assert _value(families, "scout_flow_series") == exposed
    assert _value(families, "scout_flow_series_budget") == 2000


def test_silent_exporters_are_forgotten_and_their_series_released() -> None:
    clock = Clock()
    ingest = FlowIngest(AggregationSettings(top_n=3, window=60, ttl=120), 10, clock=clock)
    ingest.ingest(v5_packet([Flow("10.0.0.1", "10.0.0.2", 10, 1)]), EXPORTER)
    ingest.collect()
    assert ingest.aggregator.series > 0
    clock.now += 121
    families = ingest.collect()
    assert _value(families, "scout_flow_series") == 0
    assert not _samples(families, "scout_flow_talker_bytes_total")


def test_columnar_and_tuple_paths_count_the_same() -> None:
    """v5 data sets go through numpy columns, tuples through the per-record loop: same counts."""
    settings = AggregationSettings(top_n=4, ipv4_prefix=30, by_protocol_port=True)
    flows = [
        Flow(
            f"10.0.{i % 3}.{i}", f"10.1.0.{i % 5}", 100 * i + 7, i, i % 4, 9, 6 + i % 2, 1000, i % 6
        )
        for i in range(1, 60)
    ]
    columnar_clock, tuple_clock = Clock(), Clock()
    columnar = FlowIngest(settings, 10, clock=columnar_clock)
    by_tuple = FlowIngest(settings, 10, clock=tuple_clock)
    for _ in range(2):
        columnar.ingest(v5_packet(flows[:30]), EXPORTER)
        columnar.ingest(v5_packet(flows[30:]), EXPORTER)
        records: list[FlowRecord] = [
            (
                _ip(f.source),
                _ip(f.destination),
                f.octets,
                f.packets,
                f.input_ifindex,
                f.output_ifindex,
                f.protocol,
                f.destination_port,
            )
            for f in flows
        ]
        exporter = by_tuple.aggregator.exporter(EXPORTER, tuple_clock.now)
        assert exporter is not None
        by_tuple.aggregator.add(exporter, "v5", records[:30], tuple_clock.now)
        by_tuple.aggregator.add(exporter, "v5", records[30:], tuple_clock.now)
        expected = by_tuple.collect()
        got = columnar.collect()
    for name in (
        "scout_flow_talker_bytes_total",
        "scout_flow_talker_packets_total",
        "scout_flow_conversation_bytes_total",
        "scout_flow_folded_records_total",
        "scout_flow_interface_bytes_total",
        "scout_flow_records_total",
    ):
        assert _samples(got, name) == _samples(expected, name), name
    assert len(_talkers(got)) == 5


def test_columnar_flows_waiting_to_be_counted_stay_within_their_byte_bound() -> None:
    """Large fixed-size records (a padding field of 4,000 bytes) fill ``PENDING_BYTES``
    long before ``BATCH`` records: the pending buffer is counted at that bound, so what
    is held stays under it (plus one datagram) and nothing is lost."""
    clock = Clock()
    ingest = FlowIngest(AggregationSettings(top_n=2), max_templates=10, clock=clock)
    layout = (*IPV4_LAYOUT, (210, 4000))  # 210: paddingOctets
    flows = [Flow(f"10.0.0.{i}", "10.9.9.9", 1000 + i, 1) for i in range(1, 16)]
    datagram = ipfix_packet([ipfix_template(256, layout), flow_set(256, layout, flows)])
    held = 0
    rounds = 2 * PENDING_BYTES // (len(flows) * 4000) + 1
    for _ in range(rounds):
        ingest.ingest(datagram, EXPORTER)
        held = max(held, ingest.aggregator.pending_bytes())
    assert 0 < held <= PENDING_BYTES + len(datagram)
    assert rounds * len(flows) < BATCH  # the byte bound, not the record count, flushed
    talkers = _talkers(ingest.collect())
    # Everything was counted (in other: the top 2 get their series at this scrape).
    assert talkers == {
        "10.0.0.15": 0,
        "10.0.0.14": 0,
        "other": rounds * sum(flow.octets for flow in flows),
    }
    assert ingest.aggregator.pending_bytes() == 0


def test_one_million_sources_in_v5_datagrams_take_the_columnar_path_within_bounds() -> None:
    """The 1M test again, as an exporter sends it: v5 datagrams, counted as numpy columns."""
    clock = Clock()
    settings = AggregationSettings(top_n=50, max_series=60, window=300)
    ingest = FlowIngest(settings, max_templates=10, clock=clock)
    template = np.frombuffer(v5_packet([Flow("0.0.0.0", "10.9.9.9", 100, 1)] * 30), np.uint8)
    heavy = v5_packet([Flow(f"192.168.0.{i}", "10.9.9.9", 1_000_000, 1) for i in range(1, 31)])
    # Source addresses 10.0.0.0 + n, written into the srcaddr field of each of 30 records.
    sources = np.arange(1_000_020, dtype=">u4").reshape(-1, 30) + _ip("10.0.0.0")
    total = 0
    for index, chunk in enumerate(sources):
        datagram = template.copy()
        records = datagram[24:].reshape(30, 48)
        records[:, 0:4] = chunk.view(np.uint8).reshape(30, 4)
        ingest.ingest(datagram.tobytes(), EXPORTER)
        total += 30 * 100
        if index % 300 == 0:
            ingest.ingest(heavy, EXPORTER)
            total += 30 * 1_000_000
        if index % 3000 == 2999:
            clock.now += 10
            ingest.collect()
            assert ingest.aggregator.series <= settings.max_series
    families = ingest.collect()
    assert _value(families, "scout_flow_records_total") == len(sources) * 30 + 112 * 30
    talkers = _talkers(families)
    assert sum(talkers.values()) == total
    assert talkers["other"] >= 1_000_020 * 100
    assert len(talkers) > 1
    assert all(address.startswith("192.168.0.") for address in talkers if address != "other")
    source = ingest.aggregator.exporters[EXPORTER].source
    assert source.folded >= 1_000_020
    assert source.tracked_keys() <= (SLOTS + CHUNK_FACTOR) * ingest.aggregator.capacity
    assert ingest.aggregator.dropped_series > 0


@pytest.mark.parametrize(
    "keys",
    [
        [7, 3, 7, 0, 65535, 3],  # all small: the dense table
        [7, 3, 65536, 7, 2**32 - 1, 3],  # 32-bit keys: sorted packed with their positions
        [7, 2**40 + 3, 65536, 7, 2**64 - 1, 2**40 + 3],  # wider keys: argsort
    ],
)
def test_reduce_by_key_sums_exactly_per_distinct_key(keys: list[int]) -> None:
    """Both ways of reducing give sorted distinct keys, exact uint64 sums (values past
    2^53, where float64 would round) and the records per key."""
    big = 2**60 + 1
    values = [big, 1, 2, big, 5, 3]
    distinct, (sums, doubled), counts = reduce_by_key(
        np.array(keys, dtype=np.uint64),
        np.array(values, dtype=np.uint64),
        np.array([2 * value for value in values], dtype=np.uint64),
    )
    expected: dict[int, list[int]] = {}
    for key, value in zip(keys, values, strict=True):
        expected.setdefault(key, []).append(value)
    assert distinct.tolist() == sorted(expected)
    assert sums.tolist() == [sum(expected[key]) for key in sorted(expected)]
    assert doubled.tolist() == [2 * sum(expected[key]) for key in sorted(expected)]
    assert counts.tolist() == [len(expected[key]) for key in sorted(expected)]
