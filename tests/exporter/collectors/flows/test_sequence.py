"""Export loss from header sequence numbers: gaps, wrap, restarts, reordering, streams.

Every case goes through both ingest paths, a datagram at a time (``ingest``) and
as the listener hands them on (``DatagramBatch``, read by runs of like
datagrams with the sequence numbers taken in one array step): they must agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client.metrics_core import Metric

from exporter.collectors.flows import FlowIngest
from exporter.collectors.flows.aggregate import AggregationSettings
from exporter.collectors.flows.listener import DatagramBatch
from exporter.collectors.flows.sequence import (
    JUMP_FLOOR,
    MAX_GAPS,
    MAX_STREAMS,
    SequenceStream,
)
from tests.peers.flows import (
    IPV4_LAYOUT,
    Flow,
    data_set,
    flow_set,
    ipfix_options_template,
    ipfix_packet,
    ipfix_template,
    v5_packet,
    v9_packet,
    v9_template,
)

EXPORTER = "192.0.2.1"
WRAP = 1 << 32
FLOWS = [Flow(f"10.0.0.{i}", "10.1.0.1", 100 * i, i) for i in range(1, 31)]
Step = Sequence[tuple[bytes, str]]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counts(families: list[Metric]) -> dict[tuple[str, str, str], float]:
    """(name without scout_flow_sequence_ and _total, exporter, version) -> value."""
    return {
        (sample.name[len("scout_flow_sequence_") : -len("_total")], *sample.labels.values()): (
            sample.value
        )
        for family in families
        for sample in family.samples
        if sample.name.startswith("scout_flow_sequence_") and sample.name.endswith("_total")
    }


def _nonzero(families: list[Metric]) -> dict[tuple[str, str, str], float]:
    return {key: value for key, value in _counts(families).items() if value}


def _both(*steps: Step, clock: Clock | None = None, gap: float = 0.0) -> list[list[Metric]]:
    """Each step's datagrams through both paths, a scrape after each (``gap`` seconds
    later on ``clock``); the families of each scrape, the same on both paths."""
    clock = clock or Clock()
    settings = AggregationSettings(top_n=5)
    together = FlowIngest(settings, max_templates=100, clock=clock)
    alone = FlowIngest(settings, max_templates=100, clock=clock)
    scrapes = []
    for step in steps:
        together.ingest_batch(DatagramBatch.pack(list(step)))
        for datagram, sender in step:
            alone.ingest(datagram, sender)
        families = together.collect()
        assert _counts(families) == _counts(alone.collect())
        scrapes.append(families)
        clock.now += gap
    return scrapes


def _v5(
    numbers: Sequence[int], count: int = 30, engine: int = 0, uptime: int = 1000
) -> list[tuple[bytes, str]]:
    packets = []
    for number in numbers:
        packet = bytearray(v5_packet(FLOWS[:count], sequence=number % WRAP))
        packet[4:8] = uptime.to_bytes(4)  # SysUptime, ms since the exporter booted
        packet[20:22] = engine.to_bytes(2)  # engine type, engine id
        packets.append((bytes(packet), EXPORTER))
    return packets


def test_a_clean_v5_stream_counts_nothing_and_a_gap_counts_its_records() -> None:
    (clean,) = _both(_v5(range(0, 30 * 40, 30)))
    assert _counts(clean) == {
        ("lost_records", EXPORTER, "v5"): 0,
        ("out_of_order", EXPORTER, "v5"): 0,
        ("resets", EXPORTER, "v5"): 0,
    }
    # Datagrams 3 and 4 (60 records) and 10 (30) never came.
    numbers = [n * 30 for n in range(20) if n not in (3, 4, 10)]
    (lossy,) = _both(_v5(numbers))
    assert _nonzero(lossy) == {("lost_records", EXPORTER, "v5"): 90}


def test_the_numbers_wrap_at_2_32_without_loss_and_a_gap_across_the_wrap_counts() -> None:
    start = WRAP - 30 * 5
    (clean,) = _both(_v5(range(start, start + 30 * 12, 30)))
    assert _nonzero(clean) == {}
    across = [start + 30 * n for n in range(12) if n not in (4, 5)]  # 5 is past the wrap
    (lossy,) = _both(_v5(across))
    assert _nonzero(lossy) == {("lost_records", EXPORTER, "v5"): 60}


def test_a_restart_to_zero_is_a_reset_not_loss_and_the_new_stream_is_followed() -> None:
    before = _v5(range(0, 30 * 100, 30))
    after = _v5([n * 30 for n in range(10) if n != 6])  # restarted at 0, then one lost
    first, second = _both(before, after)
    assert _nonzero(first) == {}
    # Its uptime told nothing (the same): 0, far behind, is out of order until 30
    # continues from it.
    assert _nonzero(second) == {
        ("resets", EXPORTER, "v5"): 1,
        ("out_of_order", EXPORTER, "v5"): 1,
        ("lost_records", EXPORTER, "v5"): 30,
    }


def test_a_restart_from_above_2_31_is_a_reset_by_uptime_or_by_the_learned_rate() -> None:
    high = WRAP - 250_000_000  # 0 is ahead of it by 250 million: as far as 300 s at 1e6/s
    before = _v5([high + 30 * n for n in range(100)], uptime=900_000_000)
    # v5 (and v9): the uptime went back, a restart whatever the numbers.
    _, rebooted = _both(before, _v5(range(0, 3000, 30), uptime=5000), gap=300.0)
    assert _nonzero(rebooted) == {("resets", EXPORTER, "v5"): 1}
    # IPFIX has no uptime: a jump far beyond what its learned rate sends in 300 s.
    template = ipfix_template(300, IPV4_LAYOUT)
    data = flow_set(300, IPV4_LAYOUT, FLOWS[:5])
    minute = [_ipfix([template], high), *(_ipfix([data], high + 5 * n) for n in range(10))]
    then = [_ipfix([data], high + 50 + 5 * n) for n in range(10)]
    after = [_ipfix([template], 0), *(_ipfix([data], 5 * n) for n in range(10))]
    *_, restarted = _both(minute, then, after, gap=300.0)
    assert _nonzero(restarted) == {("resets", EXPORTER, "ipfix"): 1}
    # v9 numbers packets: a jump of 100,000 at once is no loss (it is for records).
    (v9,) = _both([_v9_template(0), *_v9([1, 2, 100_002, 100_003])])
    assert _nonzero(v9) == {("resets", EXPORTER, "v9"): 1}


def test_one_datagram_far_behind_is_out_of_order_and_rebases_nothing() -> None:
    numbers = [30 * n for n in range(200)]
    stray = [*numbers[:150], numbers[50], *numbers[150:]]  # a duplicate, 100 late
    (families,) = _both(_v5(stray))
    assert _nonzero(families) == {("out_of_order", EXPORTER, "v5"): 1}


def test_a_jump_ahead_is_loss_only_if_the_exporter_could_have_sent_that_much() -> None:
    far = 1 << 30  # ahead by a billion records
    # At once: far more than the floor, no time to send it: a restart elsewhere.
    (at_once,) = _both(_v5([0, 30]) + _v5([30 + far, 60 + far]))
    assert _nonzero(at_once) == {("resets", EXPORTER, "v5"): 1}
    # Just within the floor it is loss, however soon.
    (floor,) = _both(_v5([0, 30 + JUMP_FLOOR, 60 + JUMP_FLOOR]))
    assert _nonzero(floor) == {("lost_records", EXPORTER, "v5"): JUMP_FLOOR}
    # After 10 minutes cut off (within the exporter's lifetime, ttl), 600 million
    # records could have gone: a jump of half a billion is loss.
    clock = Clock()
    half = 1 << 29
    _, later = _both(_v5([0]), _v5([30 + half]), clock=clock, gap=600.0)
    assert _nonzero(later) == {("lost_records", EXPORTER, "v5"): half}


def test_reordered_datagrams_are_out_of_order_not_loss() -> None:
    numbers = [0, 30, 90, 60, 120, 210, 150, 180, 240]  # 60 and the pair 150/180 late
    (reordered,) = _both(_v5(numbers))
    assert _nonzero(reordered) == {("out_of_order", EXPORTER, "v5"): 3}
    # A late datagram in a gap closes that part only: 90 of the 120 missing stay lost.
    (partly,) = _both(_v5([0, 150, 60, 180]))
    assert _nonzero(partly) == {
        ("out_of_order", EXPORTER, "v5"): 1,
        ("lost_records", EXPORTER, "v5"): 90,
    }


def test_a_duplicate_is_out_of_order_and_loss_is_never_counted_twice() -> None:
    (duplicated,) = _both(_v5([0, 30, 60, 60, 30, 90]))
    assert _nonzero(duplicated) == {("out_of_order", EXPORTER, "v5"): 2}
    # A gap counted at a scrape, then its datagram arrives very late: out of order,
    # the stream goes on where it was, and nothing more is lost.
    first, second = _both(_v5([0, 60, 90]), _v5([30, 120, 150]))
    assert _nonzero(first) == {("lost_records", EXPORTER, "v5"): 30}
    assert _nonzero(second) == {
        ("lost_records", EXPORTER, "v5"): 30,
        ("out_of_order", EXPORTER, "v5"): 1,
    }


def test_each_v5_engine_is_a_stream_of_its_own() -> None:
    one = _v5(range(0, 300, 30), engine=0x0100)
    two = _v5([1000 + 30 * n for n in range(11) if n != 2], engine=0x0101)
    interleaved = [datagram for pair in zip(one, two, strict=True) for datagram in pair]
    for datagrams in (one + two, interleaved):
        (families,) = _both(datagrams)
        assert _nonzero(families) == {("lost_records", EXPORTER, "v5"): 30}


def _v9(numbers: Sequence[int], source_id: int = 0, records: int = 4) -> list[tuple[bytes, str]]:
    data = flow_set(256, IPV4_LAYOUT, FLOWS[:records])
    return [(v9_packet([data], source_id=source_id, sequence=n % WRAP), EXPORTER) for n in numbers]


def _v9_template(number: int, source_id: int = 0) -> tuple[bytes, str]:
    template = v9_template(256, IPV4_LAYOUT)
    return v9_packet([template], source_id=source_id, sequence=number), EXPORTER


def test_v9_counts_lost_packets_per_source_id_whatever_they_held() -> None:
    a = [_v9_template(0, source_id=1), *_v9([n for n in range(1, 30) if n not in (5, 6)], 1)]
    b = [_v9_template(7, source_id=2), *_v9([8, 9, 12], 2, records=20)]
    (families,) = _both(a + b)
    # Source 1: packets 5 and 6; source 2: 10 and 11, of 20 records or none.
    assert _nonzero(families) == {("lost_packets", EXPORTER, "v9"): 4}
    assert ("lost_records", EXPORTER, "v9") not in _counts(families)


def _ipfix(sets: list[bytes], number: int, domain: int = 0) -> tuple[bytes, str]:
    return ipfix_packet(sets, domain=domain, sequence=number % WRAP), EXPORTER


def test_ipfix_counts_data_records_options_records_included_templates_not() -> None:
    template = ipfix_template(300, IPV4_LAYOUT)
    options = ipfix_options_template(301, [(149, 4)], [(34, 4)])
    data = flow_set(300, IPV4_LAYOUT, FLOWS[:5])
    rates = data_set(301, [(149, 4), (34, 4)], [{149: 0, 34: 1}] * 2)
    clean = [
        _ipfix([template, options], 0),  # templates only: numbered as what follows
        _ipfix([rates, data], 0),  # 2 options records and 5 flows
        *(_ipfix([data], 7 + 5 * n) for n in range(6)),
        _ipfix([template], 37),
        _ipfix([data], 37),
    ]
    (families,) = _both(clean)
    assert _nonzero(families) == {}
    # Two data messages lost (5 records each) and the template-only one (none).
    lossy = [clean[0], clean[1], clean[2], clean[4], clean[5], clean[7], clean[9]]
    (families,) = _both(lossy)
    assert _nonzero(families) == {("lost_records", EXPORTER, "ipfix"): 10}


def test_ipfix_data_of_an_unknown_template_leaves_the_next_number_unknown_not_lost() -> None:
    data = flow_set(300, IPV4_LAYOUT, FLOWS[:5])
    messages = [
        _ipfix([data], 100),  # no template yet: how many records is not known
        _ipfix([ipfix_template(300, IPV4_LAYOUT)], 400),
        _ipfix([data], 400),
        _ipfix([data], 410),  # 405 lost
    ]
    (families,) = _both(messages)
    assert _nonzero(families) == {("lost_records", EXPORTER, "ipfix"): 5}


def test_a_late_message_of_unknown_size_closes_the_rest_of_its_gap() -> None:
    template = ipfix_template(300, IPV4_LAYOUT)
    data = flow_set(300, IPV4_LAYOUT, FLOWS[:5])
    unknown = flow_set(301, IPV4_LAYOUT, FLOWS[:5])  # template 301 never came
    messages = [_ipfix([template], 0), _ipfix([data], 0), _ipfix([data], 5)]
    late = [_ipfix([data], 15), _ipfix([unknown], 10), _ipfix([data], 20)]
    (families,) = _both(messages + late)
    assert _nonzero(families) == {("out_of_order", EXPORTER, "ipfix"): 1}
    # Far behind, of unknown size: out of order, never a reset.
    far = [_ipfix([data], 5 * n) for n in range(2, 200)] + [_ipfix([unknown], 0)]
    (families,) = _both(messages + far + [_ipfix([data], 1000)])
    assert _nonzero(families) == {("out_of_order", EXPORTER, "ipfix"): 1}


def test_observation_domains_are_streams_of_their_own() -> None:
    template = ipfix_template(300, IPV4_LAYOUT)
    data = flow_set(300, IPV4_LAYOUT, FLOWS[:4])
    messages = [_ipfix([template], 0, 1), _ipfix([template], 50, 2)]
    for n in range(12):
        messages.append(_ipfix([data], 4 * n, 1))
        if n != 3:
            messages.append(_ipfix([data], 50 + 4 * n, 2))
    (families,) = _both(messages)
    assert _nonzero(families) == {("lost_records", EXPORTER, "ipfix"): 4}


def test_streams_and_gaps_stay_bounded_and_lose_no_count() -> None:
    """Made-up source ids recycle the exporter's streams; a stream with gaps on gaps
    remembers MAX_GAPS of them, and a gap it forgets is counted at once."""
    flood = [
        datagram
        for source_id in range(MAX_STREAMS + 50)
        for datagram in (_v9_template(0, source_id), *_v9([1, 3], source_id))
    ]
    ingest = FlowIngest(AggregationSettings(), max_templates=10_000)
    ingest.ingest_batch(DatagramBatch.pack(flood))
    assert len(ingest.aggregator.exporters[EXPORTER].sequences.streams) == MAX_STREAMS
    assert _nonzero(ingest.collect()) == {("lost_packets", EXPORTER, "v9"): MAX_STREAMS + 50}
    stream, counts = SequenceStream(), [0, 0, 0]
    for number in range(0, 60, 2):  # one record lost before each
        stream.observe(number, 1, 0.0, counts)
    assert len(stream.gaps) == MAX_GAPS
    assert counts[0] == 29 - MAX_GAPS
    stream.commit(counts)
    assert counts == [29, 0, 0]


def test_a_full_exporter_forgets_its_least_recently_seen_stream() -> None:
    first = [
        datagram
        for source_id in range(MAX_STREAMS)
        for datagram in (_v9_template(0, source_id), *_v9([1, 2], source_id))
    ]
    # Source 0, the first made, is busy still; a new source comes; then 0 loses 4.
    later = [*_v9([3]), _v9_template(0, MAX_STREAMS), *_v9([1], MAX_STREAMS), *_v9([5])]
    _, families = _both(first, later, gap=10.0)
    assert _nonzero(families) == {("lost_packets", EXPORTER, "v9"): 1}


@pytest.mark.parametrize("size", [1, 30])
def test_a_run_in_one_step_and_each_datagram_alone_agree(size: int) -> None:
    """``observe_run``'s one array step is taken only when it gives what ``observe``
    gives datagram by datagram; any other run goes through ``observe``."""
    runs = [
        [5, 5 + size, 5 + 2 * size],
        [WRAP - size, 0, size],
        [0, 2 * size, size, 3 * size],
        [0, size, size, 2 * size],
        [size * 100, 0, size],
    ]
    for numbers in runs:
        run_stream, each_stream = SequenceStream(), SequenceStream()
        run_stream.expected = each_stream.expected = numbers[0]
        run_counts, each_counts = [0, 0, 0], [0, 0, 0]
        run_stream.observe_run(numbers, None, size, 1.0, run_counts)
        for number in numbers:
            each_stream.observe(number, size, 1.0, each_counts)
        run_stream.commit(run_counts)
        each_stream.commit(each_counts)
        assert (run_stream.expected, run_counts) == (each_stream.expected, each_counts), numbers
