"""Fuzzing the flow decoder: whatever arrives, it raises only BadPacketError and stays bounded."""

from __future__ import annotations

import logging
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.collectors.flows import FlowIngest
from exporter.collectors.flows.aggregate import AggregationSettings
from exporter.collectors.flows.decoder import FlowDecoder
from exporter.collectors.flows.records import BadPacketError
from exporter.collectors.flows.sets import DecodedFlows
from tests.peers.flows import (
    IPV4_LAYOUT,
    IPV6_LAYOUT,
    Flow,
    flow_set,
    ipfix_options_template,
    ipfix_packet,
    ipfix_template,
    v5_packet,
    v9_options_template,
    v9_packet,
    v9_template,
)

MAX_TEMPLATES = 16
FLOWS = [Flow("10.0.0.1", "10.0.1.1", 100, 1), Flow("10.0.0.2", "10.0.1.2", 200, 2)]
SEEDS = (
    v5_packet(FLOWS),
    v9_packet([v9_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS)]),
    v9_packet([v9_options_template(257, [(1, 4)], [(34, 4)])]),
    ipfix_packet([ipfix_template(300, IPV4_LAYOUT), flow_set(300, IPV4_LAYOUT, FLOWS)]),
    ipfix_packet([ipfix_template(301, (*IPV6_LAYOUT, (82, 0xFFFF)))]),
    ipfix_packet([ipfix_options_template(302, [(149, 4)], [(305, 4), (306, 4)])]),
)

# A mutation: overwrite some bytes at some offset of a valid packet, or cut it.
mutations = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2000), st.binary(min_size=1, max_size=4)),
    max_size=6,
)


def _mutate(seed: bytes, edits: list[tuple[int, bytes]], cut: int | None) -> bytes:
    packet = bytearray(seed)
    for offset, raw in edits:
        if packet:
            start = offset % len(packet)
            packet[start : start + len(raw)] = raw
    return bytes(packet[:cut] if cut is not None else packet)


def _decode(decoder: FlowDecoder, packet: bytes, exporter: str) -> None:
    try:
        decoded = decoder.decode(packet, exporter)
    except BadPacketError:
        return
    for record in decoded.all_records():
        assert len(record) == 8
        assert record[2] >= 0
        assert record[3] >= 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=mutations,
    cut=st.none() | st.integers(min_value=0, max_value=1500),
    exporter=st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1"]),
)
def test_mutated_packets_raise_only_bad_packet_errors(
    seed: bytes, edits: list[tuple[int, bytes]], cut: int | None, exporter: str
) -> None:
    decoder = FlowDecoder(MAX_TEMPLATES)
    for packet in (*SEEDS[1:2], _mutate(seed, edits, cut)):
        _decode(decoder, packet, exporter)
    assert len(decoder.templates) <= MAX_TEMPLATES


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_after_a_version_raise_only_bad_packet_errors(tail: bytes) -> None:
    decoder = FlowDecoder(MAX_TEMPLATES)
    for version in (5, 9, 10):
        _decode(decoder, struct.pack("!H", version) + tail, "192.0.2.1")


@settings(max_examples=60, deadline=None)
@given(template_ids=st.lists(st.integers(min_value=256, max_value=65535), max_size=200))
def test_template_floods_keep_state_bounded(template_ids: list[int]) -> None:
    ingest = FlowIngest(AggregationSettings(max_series=40), max_templates=MAX_TEMPLATES)
    for index, template_id in enumerate(template_ids):
        exporter = f"192.0.2.{index % 7}"
        domain = index % 50
        ingest.ingest(
            ipfix_packet([ipfix_template(template_id, IPV4_LAYOUT)], domain=domain), exporter
        )
        ingest.ingest(
            v9_packet([v9_template(template_id, IPV4_LAYOUT)], source_id=domain), exporter
        )
    assert len(ingest.decoder.templates) <= MAX_TEMPLATES
    assert len(ingest.decoder.sampling) <= MAX_TEMPLATES
    assert ingest.aggregator.series <= 40
    assert ingest.bad_packets["malformed"] == 0


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=mutations,
    cut=st.none() | st.integers(min_value=0, max_value=1500),
)
def test_mutated_packets_through_ingest_and_a_scrape_hit_no_unexpected_error(
    seed: bytes, edits: list[tuple[int, bytes]], cut: int | None
) -> None:
    """The whole path (decoder, columnar batches, ranking, exposition) on mutated packets:
    whatever they hold is counted or dropped as a bad packet, never an unexpected error
    (the ingest boundary logs those), and the series stay within the budget."""
    ingest = FlowIngest(AggregationSettings(top_n=2, max_series=40), max_templates=MAX_TEMPLATES)
    recorder = _Recorder()
    logger = logging.getLogger("exporter.collectors.flows.collector")
    logger.addHandler(recorder)
    try:
        for packet in (*SEEDS, _mutate(seed, edits, cut), *SEEDS):
            ingest.ingest(packet, "192.0.2.1")
        families = ingest.collect()
    finally:
        logger.removeHandler(recorder)
    assert recorder.messages == []
    assert ingest.aggregator.series <= 40
    assert any(family.name == "scout_flow_talker_bytes" for family in families)


# Data-only packets for the templates the seeds bring: what the quick read takes.
DATA_SEEDS = (
    v9_packet([flow_set(256, IPV4_LAYOUT, FLOWS)]),
    ipfix_packet([flow_set(300, IPV4_LAYOUT, FLOWS), flow_set(300, IPV4_LAYOUT, FLOWS[:1])]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS + DATA_SEEDS),
    edits=mutations,
    cut=st.none() | st.integers(min_value=0, max_value=1500),
)
def test_the_quick_read_gives_what_decode_gives_or_leaves_the_packet_to_it(
    seed: bytes, edits: list[tuple[int, bytes]], cut: int | None
) -> None:
    """``decode_columns`` on a mutated packet: the same flows as ``decode`` with no
    problem, or None (decode reads it), or the same ``BadPacketError`` decode raises;
    it never changes the templates or sampling states."""
    decoder = FlowDecoder(MAX_TEMPLATES)
    for packet in SEEDS:
        decoder.decode(packet, "192.0.2.1")
    packet = _mutate(seed, edits, cut)
    held = (len(decoder.templates), len(decoder.sampling))
    try:
        quick = decoder.decode_columns(packet, "192.0.2.1")
    except BadPacketError as error:
        refused = error.reason
    else:
        refused = None
    if refused is not None:
        with pytest.raises(BadPacketError) as again:
            decoder.decode(packet, "192.0.2.1")
        assert again.value.reason == refused
        return
    assert (len(decoder.templates), len(decoder.sampling)) == held
    if quick is None:
        return
    decoded = decoder.decode(packet, "192.0.2.1")
    assert decoded.problem is None
    assert (quick[0], DecodedFlows(quick[0], quick[1]).all_records()) == (
        decoded.version,
        decoded.all_records(),
    )
