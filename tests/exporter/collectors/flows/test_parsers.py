"""The NetFlow v5, v9 and IPFIX parsers against packets built byte by byte from the RFC layouts."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from exporter.collectors.flows.columns import raw_records
from exporter.collectors.flows.decoder import FlowDecoder
from exporter.collectors.flows.records import (
    MALFORMED,
    TEMPLATE_CHURN,
    TRUNCATED,
    UNKNOWN_TEMPLATE,
    UNKNOWN_VERSION,
    BadPacketError,
    FlowRecord,
    format_address,
)
from exporter.collectors.flows.templates import MAX_TEMPLATE_FIELDS, unmapped
from exporter.collectors.flows.v5 import parse_v5
from tests.peers.flows import (
    IPV4_LAYOUT,
    IPV6_LAYOUT,
    Flow,
    data_set,
    flow_set,
    ipfix_options_template,
    ipfix_packet,
    ipfix_template,
    v5_packet,
    v9_options_template,
    v9_packet,
    v9_template,
)

EXPORTER = "192.0.2.1"
FLOWS = (
    Flow("10.0.0.1", "10.0.1.1", 1500, 3, 4, 5, 6, 51000, 443),
    Flow("10.0.0.2", "10.0.1.2", 640, 5, 7, 8, 17, 5353, 53),
)


def _expected(flow: Flow, rate: int = 1) -> FlowRecord:
    def address(text: str) -> int | bytes:
        ip = ipaddress.ip_address(text)
        return int(ip) if ip.version == 4 else ip.packed

    return (
        address(flow.source),
        address(flow.destination),
        flow.octets * rate,
        flow.packets * rate,
        flow.input_ifindex,
        flow.output_ifindex,
        flow.protocol,
        flow.destination_port,
    )


def _records(decoder: FlowDecoder, packet: bytes, exporter: str = EXPORTER) -> list[FlowRecord]:
    decoded = decoder.decode(packet, exporter)
    assert decoded.problem is None
    return decoded.all_records()


# -- v5 ----------------------------------------------------------------------------------------


def test_v5_records_carry_addresses_counters_interfaces_protocol_and_port() -> None:
    assert raw_records(parse_v5(v5_packet(FLOWS))) == [_expected(flow) for flow in FLOWS]


def test_v5_header_sampling_interval_multiplies_bytes_and_packets() -> None:
    # Mode 01 (deterministic) in the top two bits, interval 100 below.
    packet = v5_packet(FLOWS, sampling_interval=0x4000 | 100)
    assert raw_records(parse_v5(packet)) == [_expected(flow, 100) for flow in FLOWS]


def test_v5_count_larger_than_the_packet_is_truncated() -> None:
    packet = bytearray(v5_packet(FLOWS))
    struct.pack_into("!H", packet, 2, 3)  # says 3 records, holds 2
    with pytest.raises(BadPacketError) as caught:
        parse_v5(bytes(packet))
    assert caught.value.reason == TRUNCATED


@pytest.mark.parametrize("count", [0, 31])
def test_v5_impossible_record_counts_are_malformed(count: int) -> None:
    packet = bytearray(v5_packet(FLOWS))
    struct.pack_into("!H", packet, 2, count)
    with pytest.raises(BadPacketError) as caught:
        parse_v5(bytes(packet) + bytes(48 * 31))
    assert caught.value.reason == MALFORMED


def test_unknown_versions_and_short_packets_are_refused() -> None:
    decoder = FlowDecoder(10)
    for packet, reason in (
        (b"\x00\x00\x00\x05" + bytes(40), UNKNOWN_VERSION),
        (b"\x00", UNKNOWN_VERSION),
    ):
        with pytest.raises(BadPacketError) as caught:
            decoder.decode(packet, EXPORTER)
        assert caught.value.reason == reason
    with pytest.raises(BadPacketError) as caught:
        decoder.decode(b"\x00\x09" + bytes(10), EXPORTER)
    assert caught.value.reason == TRUNCATED


# -- v9 ----------------------------------------------------------------------------------------


def test_v9_template_and_data_in_one_packet() -> None:
    packet = v9_packet([v9_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS)])
    assert _records(FlowDecoder(10), packet) == [_expected(flow) for flow in FLOWS]


def test_v9_data_before_its_template_is_reported_and_read_once_the_template_came() -> None:
    decoder = FlowDecoder(10)
    data = v9_packet([flow_set(300, IPV4_LAYOUT, FLOWS)])
    early = decoder.decode(data, EXPORTER)
    assert (early.all_records(), early.problem) == ([], UNKNOWN_TEMPLATE)
    assert _records(decoder, v9_packet([v9_template(300, IPV4_LAYOUT)])) == []
    assert _records(decoder, data) == [_expected(flow) for flow in FLOWS]


def test_v9_templates_belong_to_one_exporter_and_one_source_id() -> None:
    decoder = FlowDecoder(10)
    _records(decoder, v9_packet([v9_template(256, IPV4_LAYOUT)], source_id=1))
    data = [flow_set(256, IPV4_LAYOUT, FLOWS)]
    assert decoder.decode(v9_packet(data, source_id=2), EXPORTER).problem == UNKNOWN_TEMPLATE
    assert decoder.decode(v9_packet(data, source_id=1), "192.0.2.2").problem == UNKNOWN_TEMPLATE
    assert len(_records(decoder, v9_packet(data, source_id=1))) == 2


def test_v9_ipv6_template_with_eight_byte_counters() -> None:
    flows = [Flow("2001:db8::1", "2001:db8::2", 10**10, 7_000_000, 3, 4, 6, 1, 22)]
    packet = v9_packet([v9_template(400, IPV6_LAYOUT), flow_set(400, IPV6_LAYOUT, flows)])
    (record,) = _records(FlowDecoder(10), packet)
    assert record == _expected(flows[0])
    assert format_address(record[0]) == "2001:db8::1"  # type: ignore[arg-type]


def test_v9_options_records_set_the_sampling_rate_and_are_not_flows() -> None:
    decoder = FlowDecoder(10)
    # Scope: system (1), 4 bytes; options: SAMPLING_INTERVAL (34), SAMPLING_ALGORITHM (35).
    options = v9_options_template(257, [(1, 4)], [(34, 4), (35, 1)])
    options_data = data_set(257, [(1, 4), (34, 4), (35, 1)], [{1: 0, 34: 512, 35: 2}])
    assert _records(decoder, v9_packet([options, options_data])) == []
    packet = v9_packet([v9_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS)])
    assert _records(decoder, packet) == [_expected(flow, 512) for flow in FLOWS]


def test_v9_per_flow_sampler_id_picks_that_samplers_rate() -> None:
    decoder = FlowDecoder(10)
    # Sampler options: FLOW_SAMPLER_ID (48), FLOW_SAMPLER_MODE (49), RANDOM_INTERVAL (50).
    options = v9_options_template(258, [(1, 4)], [(48, 1), (49, 1), (50, 4)])
    rows = [{48: 1, 49: 2, 50: 10}, {48: 2, 49: 2, 50: 1000}]
    decoder.decode(
        v9_packet([options, data_set(258, [(1, 4), (48, 1), (49, 1), (50, 4)], rows)]), EXPORTER
    )
    layout = (*IPV4_LAYOUT, (48, 1))
    rows_with_sampler = [
        {**{e: FLOWS[0].element(e) for e, _ in IPV4_LAYOUT}, 48: 2},
        {**{e: FLOWS[1].element(e) for e, _ in IPV4_LAYOUT}, 48: 1},
    ]
    packet = v9_packet([v9_template(256, layout), data_set(256, layout, rows_with_sampler)])
    assert _records(decoder, packet) == [_expected(FLOWS[0], 1000), _expected(FLOWS[1], 10)]


def test_v9_data_flowset_padding_is_not_a_record() -> None:
    layout = ((8, 4), (12, 4), (1, 4), (2, 4), (4, 1))  # 17-byte records, padded to 4 bytes
    packet = v9_packet([v9_template(256, layout), flow_set(256, layout, FLOWS[:1])])
    assert len(packet) % 4 == 0
    (record,) = _records(FlowDecoder(10), packet)
    assert record[:4] == _expected(FLOWS[0])[:4]
    assert record[6] == 6


@pytest.mark.parametrize(("length", "reason"), [(2, MALFORMED), (0, MALFORMED), (4000, TRUNCATED)])
def test_v9_lying_flowset_lengths_drop_the_packet(length: int, reason: str) -> None:
    packet = bytearray(v9_packet([v9_template(256, IPV4_LAYOUT)]))
    struct.pack_into("!H", packet, 22, length)
    with pytest.raises(BadPacketError) as caught:
        FlowDecoder(10).decode(bytes(packet), EXPORTER)
    assert caught.value.reason == reason


def test_v9_template_with_only_zero_length_fields_is_malformed() -> None:
    with pytest.raises(BadPacketError) as caught:
        FlowDecoder(10).decode(v9_packet([v9_template(256, [(8, 0), (12, 0)])]), EXPORTER)
    assert caught.value.reason == MALFORMED


# -- IPFIX -------------------------------------------------------------------------------------


def test_ipfix_template_and_data() -> None:
    packet = ipfix_packet([ipfix_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS)])
    assert _records(FlowDecoder(10), packet) == [_expected(flow) for flow in FLOWS]


def test_ipfix_enterprise_fields_are_skipped_with_their_length() -> None:
    layout = ((8, 4), (100, 6), (12, 4), (1, 8), (2, 8))
    packet = ipfix_packet(
        [
            ipfix_template(256, layout, enterprise={100: 29305}),
            data_set(
                256,
                layout,
                [{8: FLOWS[0].element(8), 100: 2**40, 12: FLOWS[0].element(12), 1: 99, 2: 1}],
            ),
        ]
    )
    (record,) = _records(FlowDecoder(10), packet)
    assert record[:4] == (*_expected(FLOWS[0])[:2], 99, 1)


def test_ipfix_variable_length_fields_give_the_same_records() -> None:
    # interfaceName (82) is variable length: the record takes the slow path.
    layout = (*IPV4_LAYOUT, (82, 0xFFFF))
    rows = [
        {**{e: FLOWS[0].element(e) for e, _ in IPV4_LAYOUT}, 82: b"eth0"},
        {**{e: FLOWS[1].element(e) for e, _ in IPV4_LAYOUT}, 82: b"x" * 300},
    ]
    packet = ipfix_packet([ipfix_template(256, layout), data_set(256, layout, rows)])
    assert _records(FlowDecoder(10), packet) == [_expected(flow) for flow in FLOWS]


def test_ipfix_odd_sized_counters_are_read_too() -> None:
    layout = ((8, 4), (12, 4), (1, 3), (2, 5))  # reduced-size encoding
    rows = [{8: FLOWS[0].element(8), 12: FLOWS[0].element(12), 1: 70000, 2: 3}]
    packet = ipfix_packet([ipfix_template(256, layout), data_set(256, layout, rows)])
    (record,) = _records(FlowDecoder(10), packet)
    assert record[2:4] == (70000, 3)


def test_ipfix_template_withdrawal_forgets_the_template() -> None:
    decoder = FlowDecoder(10)
    _records(decoder, ipfix_packet([ipfix_template(256, IPV4_LAYOUT)]))
    assert decoder.templates.count(EXPORTER) == 1
    withdrawal = struct.pack("!HHHH", 2, 8, 256, 0)
    _records(decoder, ipfix_packet([withdrawal]))
    assert decoder.templates.count(EXPORTER) == 0
    data = ipfix_packet([flow_set(256, IPV4_LAYOUT, FLOWS)])
    assert decoder.decode(data, EXPORTER).problem == UNKNOWN_TEMPLATE


def test_ipfix_psamp_options_and_per_flow_sampling_interval() -> None:
    decoder = FlowDecoder(10)
    # samplingPacketInterval 1, samplingPacketSpace 99: 1 packet in 100.
    options = ipfix_options_template(300, [(149, 4)], [(305, 4), (306, 4)])
    rows = [{149: 0, 305: 1, 306: 99}]
    decoder.decode(
        ipfix_packet([options, data_set(300, [(149, 4), (305, 4), (306, 4)], rows)]), EXPORTER
    )
    data = ipfix_packet([ipfix_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS[:1])])
    assert _records(decoder, data) == [_expected(FLOWS[0], 100)]
    # A samplingInterval (34) inside the flow record wins over the exporter's rate.
    layout = (*IPV4_LAYOUT, (34, 2))
    row = {**{e: FLOWS[1].element(e) for e, _ in IPV4_LAYOUT}, 34: 8}
    per_flow = ipfix_packet([ipfix_template(257, layout), data_set(257, layout, [row])])
    assert _records(decoder, per_flow) == [_expected(FLOWS[1], 8)]


def test_ipfix_templates_and_sampling_belong_to_one_observation_domain() -> None:
    """Domains 1 and 2 of one exporter reuse template id 256 with different layouts,
    and only domain 1 announces sampling (1 in 10): each domain reads its own."""
    decoder = FlowDecoder(10)
    swapped = ((12, 4), (8, 4), *IPV4_LAYOUT[2:])  # destination first
    options = ipfix_options_template(300, [(149, 4)], [(34, 4)])
    sampling = data_set(300, [(149, 4), (34, 4)], [{149: 1, 34: 10}])
    decoder.decode(ipfix_packet([options, sampling], domain=1), EXPORTER)
    decoder.decode(ipfix_packet([ipfix_template(256, IPV4_LAYOUT)], domain=1), EXPORTER)
    decoder.decode(ipfix_packet([ipfix_template(256, swapped)], domain=2), EXPORTER)
    one = ipfix_packet([flow_set(256, IPV4_LAYOUT, FLOWS)], domain=1)
    two = ipfix_packet([flow_set(256, swapped, FLOWS)], domain=2)
    assert _records(decoder, one) == [_expected(flow, 10) for flow in FLOWS]
    assert _records(decoder, two) == [_expected(flow) for flow in FLOWS]
    assert decoder.templates.count(EXPORTER) == 3
    three = ipfix_packet([flow_set(256, IPV4_LAYOUT, FLOWS)], domain=3)
    assert decoder.decode(three, EXPORTER).problem == UNKNOWN_TEMPLATE


def test_ipfix_message_length_past_the_datagram_is_truncated() -> None:
    packet = bytearray(ipfix_packet([ipfix_template(256, IPV4_LAYOUT)]))
    struct.pack_into("!H", packet, 2, len(packet) + 10)
    with pytest.raises(BadPacketError) as caught:
        FlowDecoder(10).decode(bytes(packet), EXPORTER)
    assert caught.value.reason == TRUNCATED


def test_template_churn_from_one_exporter_cannot_push_out_another() -> None:
    decoder = FlowDecoder(max_templates=8)
    _records(decoder, ipfix_packet([ipfix_template(256, IPV4_LAYOUT)]), exporter="192.0.2.9")
    problems = [
        decoder.decode(ipfix_packet([ipfix_template(256 + i, IPV4_LAYOUT)]), EXPORTER).problem
        for i in range(100)
    ]
    assert len(decoder.templates) == 8
    assert problems.count(TEMPLATE_CHURN) > 0
    assert decoder.templates.count("192.0.2.9") == 1
    data = ipfix_packet([flow_set(256, IPV4_LAYOUT, FLOWS)])
    assert len(_records(decoder, data, exporter="192.0.2.9")) == 2
    # A newcomer still gets a template in: the largest holder gives one up.
    _records(decoder, ipfix_packet([ipfix_template(256, IPV4_LAYOUT)]), exporter="192.0.2.10")
    assert decoder.templates.count("192.0.2.10") == 1
    assert len(decoder.templates) == 8


HUGE_LAYOUT = tuple((100 + i % 30000, 1) for i in range(MAX_TEMPLATE_FIELDS + 1))


@pytest.mark.parametrize(
    "template_set",
    [
        pytest.param(v9_packet([v9_template(256, HUGE_LAYOUT)]), id="v9"),
        pytest.param(
            v9_packet([v9_options_template(256, [(1, 4)], HUGE_LAYOUT[1:])]), id="v9-options"
        ),
        pytest.param(ipfix_packet([ipfix_template(256, HUGE_LAYOUT)]), id="ipfix"),
        pytest.param(
            ipfix_packet([ipfix_options_template(256, [(149, 4)], HUGE_LAYOUT[1:])]),
            id="ipfix-options",
        ),
    ],
)
def test_templates_with_more_fields_than_the_cap_are_malformed(template_set: bytes) -> None:
    # A 64 KB datagram holds a 16,000-field template (~1.7 MB compiled): max_templates of
    # them would hold gigabytes, so the field count is capped.
    decoder = FlowDecoder(10)
    with pytest.raises(BadPacketError) as caught:
        decoder.decode(template_set, EXPORTER)
    assert caught.value.reason == MALFORMED
    assert len(decoder.templates) == 0


def test_a_template_at_the_field_cap_is_read() -> None:
    layout = (*IPV4_LAYOUT, *((100 + i, 1) for i in range(MAX_TEMPLATE_FIELDS - len(IPV4_LAYOUT))))
    rows = [{**FLOWS[0].elements()}]
    packet = ipfix_packet([ipfix_template(256, layout), data_set(256, layout, rows)])
    assert _records(FlowDecoder(10), packet) == [_expected(FLOWS[0])]


def test_a_flood_of_made_up_domains_leaves_a_later_exporter_its_sampling_rate() -> None:
    decoder = FlowDecoder(max_templates=10)
    for domain in range(100):  # header-only messages, as cheap as a spoofer can send
        decoder.decode(ipfix_packet([], domain=domain), "198.51.100.7")
        decoder.decode(v9_packet([], source_id=domain), "198.51.100.7")
    assert len(decoder.sampling) == 0
    options = v9_options_template(257, [(1, 4)], [(34, 4)])
    options_data = data_set(257, [(1, 4), (34, 4)], [{1: 0, 34: 100}])
    decoder.decode(v9_packet([options, options_data]), EXPORTER)
    packet = v9_packet([v9_template(256, IPV4_LAYOUT), flow_set(256, IPV4_LAYOUT, FLOWS)])
    assert _records(decoder, packet) == [_expected(flow, 100) for flow in FLOWS]


def test_sampling_states_past_the_limit_forget_the_oldest_of_the_largest_holder() -> None:
    decoder = FlowDecoder(max_templates=4)
    options = v9_options_template(257, [(1, 4)], [(34, 4)])
    exporters = [f"192.0.2.{10 + i}" for i in range(6)]
    for rate, exporter in enumerate(exporters, start=10):
        options_data = data_set(257, [(1, 4), (34, 4)], [{1: 0, 34: rate}])
        decoder.decode(v9_packet([options, options_data]), exporter)
    assert len(decoder.sampling) == 4
    rates = [decoder.sampling.get((exporter, 9, 0)).default for exporter in exporters]
    assert rates == [1, 1, 12, 13, 14, 15]


@pytest.mark.parametrize(
    "template",
    [
        pytest.param(v9_template(256, (*IPV4_LAYOUT, (1, 0xFFFF))), id="data"),
        pytest.param(v9_options_template(256, [(1, 4)], [(34, 0xFFFF)]), id="options"),
        pytest.param(v9_options_template(256, [(1, 0xFFFF)], [(34, 4)]), id="scope"),
    ],
)
def test_v9_fields_of_length_65535_are_malformed_not_variable_length(template: bytes) -> None:
    # Read as IPFIX's variable-length marker, such a template made up flows from short sets.
    decoder = FlowDecoder(10)
    with pytest.raises(BadPacketError) as caught:
        decoder.decode(v9_packet([template]), EXPORTER)
    assert caught.value.reason == MALFORMED
    assert len(decoder.templates) == 0


def test_a_flood_of_options_from_one_exporter_keeps_another_exporters_rate() -> None:
    decoder = FlowDecoder(max_templates=4)
    options = v9_options_template(257, [(1, 4)], [(34, 4)])
    options_data = data_set(257, [(1, 4), (34, 4)], [{1: 0, 34: 100}])
    decoder.decode(v9_packet([options, options_data]), EXPORTER)
    for domain in range(50):
        decoder.decode(v9_packet([options, options_data], source_id=domain), "198.51.100.7")
    assert len(decoder.sampling) == 4
    assert decoder.sampling.get((EXPORTER, 9, 0)).default == 100


def test_an_exporter_at_its_share_replaces_its_own_oldest_template_with_a_new_one() -> None:
    decoder = FlowDecoder(max_templates=4)
    _records(decoder, ipfix_packet([ipfix_template(256, IPV4_LAYOUT)]), exporter="192.0.2.9")
    for template_id in range(300, 310):  # a router that moved on to new template ids
        decoded = decoder.decode(ipfix_packet([ipfix_template(template_id, IPV4_LAYOUT)]), EXPORTER)
    assert decoded.problem == TEMPLATE_CHURN
    assert len(decoder.templates) == 4
    assert decoder.templates.count("192.0.2.9") == 1
    newest = ipfix_packet([flow_set(309, IPV4_LAYOUT, FLOWS)])
    assert _records(decoder, newest) == [_expected(flow) for flow in FLOWS]
    oldest = ipfix_packet([flow_set(300, IPV4_LAYOUT, FLOWS)])
    assert decoder.decode(oldest, EXPORTER).problem == UNKNOWN_TEMPLATE


# -- the quick read of common packets ----------------------------------------------------------


def _quick(decoder: FlowDecoder, packet: bytes) -> tuple[str, list[FlowRecord]] | None:
    found = decoder.decode_columns(packet, EXPORTER)
    if found is None:
        return None
    version, parts = found
    return version, [record for part in parts for record in raw_records(part)]


def test_the_quick_read_takes_data_only_packets_with_the_sampling_rate() -> None:
    decoder = FlowDecoder(10)
    options = v9_options_template(257, [(1, 4)], [(34, 4)])
    rate = data_set(257, [(1, 4), (34, 4)], [{1: 0, 34: 100}])
    template = v9_template(256, IPV4_LAYOUT)
    # Templates and options records change state: decode's, not the quick read's.
    for packet in (v9_packet([options, rate]), v9_packet([template])):
        assert _quick(decoder, packet) is None
        decoder.decode(packet, EXPORTER)
    data = flow_set(256, IPV4_LAYOUT, FLOWS)
    expected = [_expected(flow, 100) for flow in FLOWS]
    assert _quick(decoder, v9_packet([data, data])) == ("v9", expected * 2)
    assert _quick(decoder, v5_packet(FLOWS)) == ("v5", [_expected(flow) for flow in FLOWS])
    decoder.decode(ipfix_packet([ipfix_template(256, IPV4_LAYOUT)], domain=3), EXPORTER)
    ipfix = ipfix_packet([data], domain=3)
    assert _quick(decoder, ipfix) == ("ipfix", [_expected(flow) for flow in FLOWS])
    # The same template id in another domain, version or exporter is unknown there.
    assert _quick(decoder, ipfix_packet([data])) is None
    assert decoder.decode_columns(ipfix, "192.0.2.99") is None


def test_the_quick_read_leaves_odd_packets_to_decode() -> None:
    decoder = FlowDecoder(10)
    decoder.decode(v9_packet([v9_template(256, IPV4_LAYOUT)]), EXPORTER)
    decoder.decode(v9_packet([v9_template(300, IPV6_LAYOUT)]), EXPORTER)
    data = flow_set(256, IPV4_LAYOUT, FLOWS)
    six = flow_set(300, IPV6_LAYOUT, [Flow("2001:db8::1", "2001:db8::2", 1, 1)])
    lying = bytearray(v9_packet([data]))
    struct.pack_into("!H", lying, 22, 4000)
    for packet in (
        v9_packet([data, six]),  # IPv6: the tuple path
        v9_packet([data, flow_set(999, IPV4_LAYOUT, FLOWS)]),  # an unknown template
        bytes(lying),  # decode says what is wrong with it
        b"\x00\x07" + bytes(30),  # an unknown version
        b"",
    ):
        assert decoder.decode_columns(packet, EXPORTER) is None
    with pytest.raises(BadPacketError) as caught:
        decoder.decode_columns(v5_packet(FLOWS)[:-1], EXPORTER)
    assert caught.value.reason == TRUNCATED


def test_a_re_sent_template_is_known_by_its_bytes_and_a_bad_one_stays_bad() -> None:
    """Routers re-send templates: the same field list gives the same compiled template
    (under any id, exporter or domain) without reading it again; a refused field list
    is refused every time it comes, never remembered."""
    decoder = FlowDecoder(10)
    for packet, exporter in (
        (v9_packet([v9_template(256, IPV4_LAYOUT)]), EXPORTER),
        (v9_packet([v9_template(257, IPV4_LAYOUT)], source_id=4), "192.0.2.7"),
        (ipfix_packet([ipfix_template(256, IPV4_LAYOUT)]), EXPORTER),
        (ipfix_packet([ipfix_template(300, IPV4_LAYOUT)], domain=2), EXPORTER),
    ):
        decoder.decode(packet, exporter)
    v9_first = decoder.templates.get(EXPORTER, (9, 0, 256))
    assert v9_first is decoder.templates.get("192.0.2.7", (9, 4, 257))
    assert decoder.templates.get(EXPORTER, (10, 0, 256)) is decoder.templates.get(
        EXPORTER, (10, 2, 300)
    )
    data = v9_packet([flow_set(256, IPV4_LAYOUT, FLOWS)])
    assert _records(decoder, data) == [_expected(flow) for flow in FLOWS]
    for bad in (
        v9_packet([v9_template(258, [(8, 0), (12, 0)])]),
        v9_packet([v9_template(258, [(8, 4), (1, 0xFFFF)])]),
        ipfix_packet([ipfix_template(258, [(8, 0), (12, 0)])]),
    ):
        for _ in range(2):
            with pytest.raises(BadPacketError) as caught:
                decoder.decode(bad, EXPORTER)
            assert caught.value.reason == MALFORMED


@pytest.mark.parametrize(
    "address",
    ["::ffff:0:10.1.2.3", "64:ff9b::10.1.2.3", "::10.1.2.3", "2001:db8::ffff:a01:203"],
    ids=["ipv4-translated", "nat64", "ipv4-compatible", "ffff-elsewhere"],
)
def test_only_ipv4_mapped_addresses_are_read_as_ipv4(address: str) -> None:
    """``::ffff:0:0/96`` only: NAT64's and the other IPv4-embedding prefixes are IPv6
    addresses of their own (a NAT64 address is the IPv6 side's view of a host)."""
    packed = ipaddress.IPv6Address(address).packed
    assert unmapped(packed) == packed
    mapped = ipaddress.IPv6Address("::ffff:10.1.2.3").packed
    assert unmapped(mapped) == int(ipaddress.IPv4Address("10.1.2.3"))
