"""Varbinds to families, as snmp_exporter names and labels them."""

from __future__ import annotations

import pytest

from exporter.clients.snmp import ValueKind, VarBind
from exporter.targets.snmp.exposition import Family, render_text
from exporter.targets.snmp.mapping import (
    MetricMapper,
    RowLabels,
    decode_index,
    oid_of,
    render_octets,
)
from exporter.targets.snmp.modules import SnmpIndex, SnmpModule, builtin_modules

IFX = oid_of("1.3.6.1.2.1.31.1.1.1")
IFT = oid_of("1.3.6.1.2.1.2.2.1")


def vb(oid, kind, value):
    return VarBind(oid, kind, value)


def if_rows(index: int, name: bytes, alias: bytes, octets: int):
    return {
        (*IFX, 1): [vb((*IFX, 1, index), ValueKind.OCTET_STRING, name)],
        (*IFX, 18): [vb((*IFX, 18, index), ValueKind.OCTET_STRING, alias)],
        (*IFT, 2): [vb((*IFT, 2, index), ValueKind.OCTET_STRING, b"descr " + name)],
        (*IFX, 6): [vb((*IFX, 6, index), ValueKind.COUNTER64, octets)],
    }


def families_by_name(families: list[Family]) -> dict[str, Family]:
    return {f.name: f for f in families if f.samples}


@pytest.mark.parametrize(
    ("wrap", "expected"),
    [
        (False, 2**63 + 5),  # exact: a float would round it
        (True, (2**63 + 5) % 2**53),  # snmp_exporter's default: wrapped at the float mantissa
    ],
)
def test_if_mib_counter_gets_index_and_lookup_labels(wrap, expected):
    module = builtin_modules()["if_mib"]
    rows = if_rows(3, b"Gi0/3", "Uplink ISP \u00e9t\u00e9".encode(), 2**63 + 5)
    values = {v.oid: v for column in rows.values() for v in column}
    mapper = MetricMapper(module, wrap_large_counters=wrap)
    families = families_by_name(mapper.families(rows, values))
    family = families["ifHCInOctets"]
    assert family.type == "counter"
    assert family.samples == [
        (
            (
                ("ifIndex", "3"),
                ("ifAlias", "Uplink ISP \u00e9t\u00e9"),
                ("ifDescr", "descr Gi0/3"),
                ("ifName", "Gi0/3"),
            ),
            expected,
        )
    ]
    # ifAlias, ifDescr and ifName are lookup labels only, as snmp_exporter's generator has them.
    assert not families.keys() & {"ifAlias", "ifDescr", "ifName"}


def test_missing_lookup_gives_empty_label_like_snmp_exporter():
    module = builtin_modules()["if_mib"]
    rows = {(*IFX, 6): [vb((*IFX, 6, 9), ValueKind.COUNTER64, 1)]}
    family = families_by_name(MetricMapper(module).families(rows, {}))["ifHCInOctets"]
    assert dict(family.samples[0][0]) == {
        "ifIndex": "9",
        "ifAlias": "",
        "ifDescr": "",
        "ifName": "",
    }


def test_display_string_metric_is_an_info_series_and_enum_as_info_names_the_state():
    module = SnmpModule.model_validate(
        {
            "metrics": [
                {"name": "sysName", "oid": "1.3.6.1.2.1.1.5", "type": "DisplayString"},
                {
                    "name": "ifType",
                    "oid": "1.3.6.1.2.1.2.2.1.3",
                    "type": "EnumAsInfo",
                    "indexes": [{"labelname": "ifIndex"}],
                    "enum_values": {6: "ethernetCsmacd"},
                },
                {
                    "name": "ifOper",
                    "oid": "1.3.6.1.2.1.2.2.1.8",
                    "type": "EnumAsStateSet",
                    "indexes": [{"labelname": "ifIndex"}],
                    "enum_values": {1: "up", 2: "down"},
                },
            ]
        }
    )
    rows = {
        oid_of("1.3.6.1.2.1.1.5"): [
            vb(oid_of("1.3.6.1.2.1.1.5.0"), ValueKind.OCTET_STRING, b"core1")
        ],
        (*IFT, 3): [
            vb((*IFT, 3, 1), ValueKind.INTEGER, 6),
            vb((*IFT, 3, 2), ValueKind.INTEGER, 999),
        ],
        (*IFT, 8): [vb((*IFT, 8, 1), ValueKind.INTEGER, 2)],
    }
    text = render_text(MetricMapper(module).families(rows, {}))
    assert 'sysName{sysName="core1"} 1' in text
    assert 'ifType_info{ifIndex="1",ifType="ethernetCsmacd"} 1' in text
    assert 'ifType_info{ifIndex="2",ifType="999"} 1' in text  # unknown enum: the number
    assert 'ifOper{ifIndex="1",ifOper="up"} 0' in text
    assert 'ifOper{ifIndex="1",ifOper="down"} 1' in text


def test_values_that_do_not_fit_are_skipped_not_fatal():
    module = builtin_modules()["if_mib"]
    rows = {
        (*IFX, 6): [
            vb((*IFX, 6, 1), ValueKind.NO_SUCH_INSTANCE, None),
            vb((*IFX, 6, 2), ValueKind.OCTET_STRING, b"not a number"),
            vb((*IFX, 6, 3, 7), ValueKind.COUNTER64, 5),  # index longer than declared
            vb((*IFX, 6, 4), ValueKind.COUNTER64, 42),
        ]
    }
    family = families_by_name(MetricMapper(module).families(rows, {}))["ifHCInOctets"]
    assert [dict(labels)["ifIndex"] for labels, _ in family.samples] == ["4"]


@pytest.mark.parametrize(
    ("index", "suffix", "expected"),
    [
        (SnmpIndex(labelname="i"), (5, 9), ("5", (5,), (9,))),
        (
            SnmpIndex(labelname="s", type="DisplayString"),
            (3, 97, 98, 99, 1),
            ("abc", (3, 97, 98, 99), (1,)),
        ),
        (
            SnmpIndex(labelname="s", type="DisplayString", implied=True),
            (97, 98),
            ("ab", (97, 98), ()),
        ),
        (
            SnmpIndex(labelname="m", type="PhysAddress48"),
            (0, 17, 34, 51, 68, 255),
            ("00:11:22:33:44:FF", (0, 17, 34, 51, 68, 255), ()),
        ),
        (
            SnmpIndex(labelname="a", type="IpAddr"),
            (10, 0, 0, 1, 4),
            ("10.0.0.1", (10, 0, 0, 1), (4,)),
        ),
        (SnmpIndex(labelname="s", type="DisplayString"), (5, 97), None),  # length past the end
        (SnmpIndex(labelname="a", type="IpAddr"), (10, 0, 300, 1), None),  # not a byte
        # snmp_exporter's index type names, as its generated snmp.yml has them.
        (
            SnmpIndex(labelname="a", type="InetAddressIPv4"),
            (10, 0, 0, 1, 4),
            ("10.0.0.1", (10, 0, 0, 1), (4,)),
        ),
        (
            SnmpIndex(labelname="a", type="InetAddressIPv6"),
            (254, 128, *[0] * 13, 1, 7),
            ("FE80:0000:0000:0000:0000:0000:0000:0001", (254, 128, *[0] * 13, 1), (7,)),
        ),
        # InetAddress: the address type (the generator folds InetAddressType into it),
        # the length, then the address, read by its type.
        (
            SnmpIndex(labelname="a", type="InetAddress"),
            (1, 4, 192, 0, 2, 1, 9),
            ("192.0.2.1", (1, 4, 192, 0, 2, 1), (9,)),
        ),
        (
            SnmpIndex(labelname="a", type="InetAddress"),
            (2, 16, 32, 1, 13, 184, *[0] * 11, 1),
            ("2001:0DB8:0000:0000:0000:0000:0000:0001", (2, 16, 32, 1, 13, 184, *[0] * 11, 1), ()),
        ),
        # ipv4z(3) is no type snmp_exporter reads: the hex of type, length and octets.
        (
            SnmpIndex(labelname="a", type="InetAddress"),
            (3, 8, 192, 0, 2, 1, 0, 0, 0, 5, 6),
            ("0x0308C000020100000005", (3, 8, 192, 0, 2, 1, 0, 0, 0, 5), (6,)),
        ),
        (
            SnmpIndex(labelname="a", type="InetAddressMissingSize"),
            (1, 192, 0, 2, 1),
            ("192.0.2.1", (1, 192, 0, 2, 1), ()),
        ),
        (SnmpIndex(labelname="a", type="InetAddress"), (1, 4, 192, 0), None),  # cut short
        (SnmpIndex(labelname="a", type="InetAddressIPv6"), (1, 2, 3), None),
    ],
)
def test_index_decoding(index, suffix, expected):
    assert decode_index(index, suffix) == expected


def test_octet_rendering():
    assert render_octets(b"\xff\xfe", "DisplayString") == "0xFFFE"  # not UTF-8: shown as hex
    assert render_octets(b"\x00\x1b\x21", "OctetString") == "0x001B21"
    # Values and lookups of snmp_exporter's address types.
    assert render_octets(b"\xc0\x00\x02\x01", "InetAddressIPv4") == "192.0.2.1"
    assert render_octets(bytes(15) + b"\x01", "InetAddressIPv6") == (
        "0000:0000:0000:0000:0000:0000:0000:0001"
    )
    assert render_octets(b"\xc0\x00\x02\x01", "InetAddress") == "192.0.2.1"
    assert render_octets(b"dns.example", "InetAddress") == "0x646E732E6578616D706C65"


def test_modules_from_snmp_exporter_load_with_its_index_types():
    module = SnmpModule.model_validate(
        {
            "metrics": [
                {
                    "name": "ipAdEntIfIndex",
                    "oid": "1.3.6.1.2.1.4.20.1.2",
                    "indexes": [{"labelname": "ipAdEntAddr", "type": "InetAddressIPv4"}],
                },
                {
                    "name": "ipAddressIfIndex",
                    "oid": "1.3.6.1.2.1.4.34.1.3",
                    "indexes": [{"labelname": "ipAddressAddr", "type": "InetAddress"}],
                },
            ]
        }
    )
    v4, v6 = oid_of("1.3.6.1.2.1.4.20.1.2"), oid_of("1.3.6.1.2.1.4.34.1.3")
    rows = {
        v4: [vb((*v4, 127, 0, 0, 1), ValueKind.INTEGER, 1)],
        v6: [
            vb((*v6, 1, 4, 127, 0, 0, 1), ValueKind.INTEGER, 1),
            vb((*v6, 2, 16, *[0] * 15, 1), ValueKind.INTEGER, 1),
        ],
    }
    families = families_by_name(MetricMapper(module).families(rows, {}))
    assert families["ipAdEntIfIndex"].samples == [((("ipAdEntAddr", "127.0.0.1"),), 1)]
    assert [dict(labels) for labels, _ in families["ipAddressIfIndex"].samples] == [
        {"ipAddressAddr": "127.0.0.1"},
        {"ipAddressAddr": "0000:0000:0000:0000:0000:0000:0000:0001"},
    ]


def test_regex_extracts_is_refused_by_name():
    metric = {"name": "temp", "oid": "1.3.6.1.4.1.2021.13.16.2.1.3"}
    metric["regex_extracts"] = {"": [{"regex": "(.*)", "value": "$1"}]}
    with pytest.raises(ValueError, match=r"regex_extracts \(snmp_exporter's\) is not supported"):
        SnmpModule.model_validate({"metrics": [metric]})


def test_text_exposition_escapes_and_skips_empty_families():
    family = Family("x", "help with \\ and\nnewline", "gauge")
    family.add((("l", 'quote " back \\ nl \n'),), 1.5)
    text = render_text([family, Family("empty", "", "gauge")])
    assert text == (
        "# HELP x help with \\\\ and\\nnewline\n"
        "# TYPE x gauge\n"
        'x{l="quote \\" back \\\\ nl \\n"} 1.5\n'
    )


@pytest.mark.parametrize(
    "values",
    [
        [1, 2**64 - 1, 0],
        [1, float("nan"), 2],  # the loop's float formatting: NaN, +Inf, not Python's
        [float("inf"), float("-inf"), 2.5],
        [True, 1, 2],  # not an int by type: the loop renders it as before
    ],
)
@pytest.mark.parametrize("missing", [False, True])
def test_label_texts_rendered_ahead_give_the_text_of_rendering_afresh(values, missing):
    from exporter.targets.snmp.exposition import render_labels

    rows = [(("ifIndex", str(i)), ("ifName", f'eth"{i}\\')) for i in range(3)]

    class Ahead:
        def __init__(self) -> None:
            self.texts = {id(lb): render_labels(lb) for lb in rows[: 2 if missing else 3]}

    def family(ahead: Ahead | None) -> Family:
        f = Family("ifHCInOctets", "help", "counter", rendered=ahead)
        for labels, value in zip(rows, values, strict=True):
            f.add(labels, value)
        return f

    assert render_text([family(Ahead())]) == render_text([family(None)])


def test_builtin_modules_load_and_if_mib_has_the_snmp_exporter_names():
    modules = builtin_modules()
    assert set(modules) >= {"if_mib", "system", "host_resources"}
    names = {m.name for m in modules["if_mib"].metrics}
    assert {
        "ifHCInOctets",
        "ifHCOutOctets",
        "ifInErrors",
        "ifOutDiscards",
        "ifOperStatus",
        "ifAdminStatus",
        "ifHighSpeed",
        "ifLastChange",
        "sysUpTime",
    } <= names
    cached = {m.name for m in modules["if_mib"].metrics if m.cached}
    assert "ifHighSpeed" in cached
    assert "ifHCInOctets" not in cached


def test_learned_max_repetitions_drops_at_once_and_creeps_back_after_clean_scrapes():
    from exporter.targets.snmp.scraper import RAISE_AFTER_CLEAN_SCRAPES, DeviceState

    state = DeviceState(max_repetitions=25)
    state.learn(6, configured=25)
    assert state.max_repetitions == 6
    for _ in range(RAISE_AFTER_CLEAN_SCRAPES - 1):
        state.learn(6, configured=25)
    assert state.max_repetitions == 6
    state.learn(6, configured=25)
    assert state.max_repetitions == 12
    state.learn(3, configured=25)  # refused again: down at once, count restarts
    assert state.max_repetitions == 3
    assert state.clean_scrapes == 0
    for _ in range(5 * RAISE_AFTER_CLEAN_SCRAPES):
        state.learn(state.max_repetitions, configured=25)
    assert state.max_repetitions == 25  # never above the module's own value


def test_if_type_names_are_the_whole_iana_list():
    [if_type] = [m for m in builtin_modules()["if_mib"].metrics if m.name == "ifType"]
    names = if_type.enum_values
    # IANAifType-MIB: 1-272 and 277-303 (273-276 were never assigned).
    assert names.keys() == set(range(1, 273)) | set(range(277, 304))
    assert (names[123], names[245], names[303]) == ("transpHdlc", "voiceEBS", "p2pOverLan")
    assert len(set(names.values())) == len(names)


FG_TUNNEL = oid_of("1.3.6.1.4.1.12356.101.12.2.2.1")


def fortigate_tunnel(index: int, phase2: bytes, gateway: bytes, received: int):
    return {
        (*FG_TUNNEL, 3): [vb((*FG_TUNNEL, 3, index), ValueKind.OCTET_STRING, phase2)],
        (*FG_TUNNEL, 4): [vb((*FG_TUNNEL, 4, index), ValueKind.IP_ADDRESS, gateway)],
        (*FG_TUNNEL, 18): [vb((*FG_TUNNEL, 18, index), ValueKind.COUNTER32, received)],
        (*FG_TUNNEL, 20): [vb((*FG_TUNNEL, 20, index), ValueKind.INTEGER, 2)],
    }


@pytest.mark.parametrize("cached", [False, True], ids=["fresh", "kept row labels"])
def test_rows_whose_lookups_give_the_same_labels_are_one_series_the_first(cached):
    """Two FortiGate tunnels of one phase-2 name and gateway (two VDOMs' "to-hq"): the
    lookups replace the index, so both rows would have the same labels, a duplicate
    series that Prometheus drops from the scrape with a warning (snmp_exporter fails
    the whole scrape). The first row's sample is kept, as /firewall keeps it."""
    module = builtin_modules()["fortigate"]
    rows: dict = {}
    for index, received in ((1, 100), (2, 200), (3, 300)):
        name = b"branch" if index == 3 else b"to-hq"
        for column, varbinds in fortigate_tunnel(
            index, name, b"\xcb\x00\x71\x01", received
        ).items():
            rows.setdefault(column, []).extend(varbinds)
    values = {v.oid: v for column in rows.values() for v in column}
    mapper = MetricMapper(module)
    kept = RowLabels(mapper) if cached else None
    for _ in range(2 if cached else 1):
        families = families_by_name(mapper.families(rows, values, kept))
        received_family = families["scout_firewall_vpn_tunnel_receive_bytes_total"]
        assert [(dict(labels)["tunnel"], value) for labels, value in received_family.samples] == [
            ("to-hq", 100),
            ("branch", 300),
        ]
        text = render_text(families.values())
        series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line[:1] != "#"]
        assert len(series) == len(set(series)), text
