"""The compiled loops (exporter/clients/snmp/_speedups.c) against the Python they stand in for.

Each compiled function must give what its Python reference gives, result or
error, on well-formed input and on hostile input alike, and must actually take
the well-formed case (a compiled function that always handed back would pass
the first check and speed nothing up).
"""

from __future__ import annotations

import collections
import importlib
import os
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from exporter.clients.snmp import ber, walk
from exporter.clients.snmp.speedups import compiled
from exporter.clients.snmp.values import Oid, ValueKind, VarBind
from exporter.targets.snmp import exposition, mapping
from exporter.targets.snmp.exposition import Family, render_labels, render_text
from exporter.targets.snmp.mapping import MetricMapper, RowLabels, oid_of
from exporter.targets.snmp.modules import SnmpModule, builtin_modules

needs_compiled = pytest.mark.skipif(compiled is None, reason="_speedups not built")

# Every tag a reply can carry, and some no agent sends.
TAGS = (0x02, 0x04, 0x05, 0x06, 0x40, 0x41, 0x42, 0x43, 0x44, 0x46, 0x80, 0x81, 0x82, 0x47, 0x30)


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """What ``fn`` returned, or the type and message of what it raised."""
    try:
        return ("ok", fn())
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def test_the_dev_install_built_the_compiled_module() -> None:
    # setup.py marks it optional, so a broken build would only warn: this says so
    # (imported directly: SCOUT_PURE_PYTHON in the environment must not fail it).
    try:
        importlib.import_module("exporter.clients.snmp._speedups")
    except ImportError as exc:
        pytest.fail(f"exporter/clients/snmp/_speedups.c was not built (no compiler?): {exc}")


class Spy:
    """The compiled module, counting the calls each function gets."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        function = getattr(self.module, name)

        def counted(*args: Any) -> Any:
            self.calls[name] += 1
            return function(*args)

        return counted


@needs_compiled
def test_a_scrape_calls_every_compiled_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(compiled)
    for module in (ber, walk, exposition, mapping):
        monkeypatch.setattr(module, "compiled", spy)
    module = builtin_modules()["if_mib"]
    mapper = MetricMapper(module)
    kept = RowLabels(mapper)
    roots = [oid_of(metric.oid) for metric in module.metrics]
    rows = random_if_mib_rows(random.Random(5), module, [1, 2, 3])
    # The varbinds of a reply, as an agent would send them, through the walk's loops.
    body = b"".join(
        ber.tlv(ber.SEQUENCE, ber.tlv(ber.OBJECT_IDENTIFIER, ber.encode_oid(v.oid)) + v_tlv)
        for column in rows.values()
        for v in column
        if (v_tlv := ber.encode_integer(1))
    )
    varbinds = ber.decode_varbinds(body, 0, len(body))
    shares = [(0, varbinds[:1], walk._count_in_subtree(varbinds[:1], ber.encode_oid(roots[0])))]
    walk._take(shares, roots[:1], [ber.encode_oid(roots[0])], roots[:1], [[]], "here")
    for _ in range(2):  # the second scrape knows every row
        values = {v.oid: v for column in rows.values() for v in column}
        texts = render_text(mapper.families(rows, values, kept))
    assert texts.startswith("# HELP")
    assert set(spy.calls) == {
        "decode_varbinds",
        "count_in_subtree",
        "take_share",
        "map_plain",
        "render_int_samples",
    }


def test_scout_pure_python_turns_the_compiled_module_off() -> None:
    code = "from exporter.clients.snmp.speedups import compiled; print(compiled is None)"
    env = {**os.environ, "SCOUT_PURE_PYTHON": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"


# -- decoding varbinds ----------------------------------------------------------


def random_value(rng: random.Random, tag: int) -> bytes:
    if tag in (0x41, 0x42, 0x43, 0x46):
        width = 8 if tag == 0x46 else 4
        return ber.encode_unsigned(rng.randrange(2 ** (8 * width)), tag)
    if tag == 0x02:
        return ber.encode_integer(rng.randrange(-(2**31), 2**31))
    if tag == 0x06:
        return ber.tlv(
            tag, ber.encode_oid((1, 3, *rng.sample(range(1, 70000), rng.randrange(1, 6))))
        )
    size = rng.choice((0, 1, 5, 127, 128, 300, 70000)) if rng.random() < 0.2 else rng.randrange(40)
    return ber.tlv(tag, rng.randbytes(size))


def random_varbinds(rng: random.Random, count: int) -> bytes:
    parts = []
    for _ in range(count):
        oid = ber.encode_oid(
            (1, 3, 6, 1, 2, 1, 2, 2, 1, rng.randrange(1, 30), rng.randrange(1, 300000))
        )
        parts.append(
            ber.tlv(
                ber.SEQUENCE,
                ber.tlv(ber.OBJECT_IDENTIFIER, oid) + random_value(rng, rng.choice(TAGS)),
            )
        )
    return b"".join(parts)


def both_decoders(buf: bytes, pos: int, end: int) -> tuple[tuple[str, Any], tuple[str, Any]]:
    return (
        outcome(lambda: ber.decode_varbinds(buf, pos, end)),
        outcome(lambda: ber.decode_varbinds_python(buf, pos, end)),
    )


@needs_compiled
def test_well_formed_varbinds_decode_the_same_and_compiled() -> None:
    assert compiled is not None
    rng = random.Random(18)
    for _ in range(300):
        body = random_varbinds(rng, rng.randrange(0, 60))
        buf = b"\xa2\x00" + body + b"trailer"
        end = 2 + len(body)
        taken = compiled.decode_varbinds(buf, 2, end)
        assert taken is not None  # the common case is the compiled one's
        assert taken == ber.decode_varbinds_python(buf, 2, end)


@needs_compiled
def test_hostile_varbinds_give_the_same_result_or_error() -> None:
    rng = random.Random(1818)
    for _ in range(3000):
        body = bytearray(random_varbinds(rng, rng.randrange(1, 8)))
        how = rng.randrange(5)
        if how == 0:  # a byte changed anywhere
            body[rng.randrange(len(body))] = rng.randrange(256)
        elif how == 1:  # cut short
            del body[rng.randrange(len(body)) :]
        elif how == 2:  # a long-form length, of 0 to 6 octets
            at = rng.randrange(len(body))
            body[at : at + 1] = bytes([0x80 | rng.randrange(7)]) + bytes(rng.randrange(7))
        elif how == 3:  # noise
            body = bytearray(rng.randbytes(rng.randrange(1, 40)))
        buf = bytes(body)
        end = rng.choice((len(buf), len(buf) + rng.randrange(1, 5), max(0, len(buf) - 3)))
        pos = rng.choice((0, 0, 0, rng.randrange(len(buf) + 2)))
        fast, reference = both_decoders(buf, pos, end)
        assert fast == reference, (buf.hex(), pos, end)


def test_other_buffers_are_decoded_by_python() -> None:
    body = random_varbinds(random.Random(3), 5)
    for buf in (bytearray(body), memoryview(body)):
        assert ber.decode_varbinds(buf, 0, len(body)) == ber.decode_varbinds_python(  # type: ignore[arg-type]
            buf,  # type: ignore[arg-type]
            0,
            len(body),
        )


# -- walking: counting and taking a root's share -----------------------------------


@needs_compiled
def test_count_in_subtree_matches() -> None:
    assert compiled is not None
    rng = random.Random(7)
    prefix = ber.encode_oid((1, 3, 6, 1, 2, 1, 2, 2, 1, 10))
    for _ in range(500):
        share = []
        for _ in range(rng.randrange(0, 12)):
            inside = rng.random() < 0.85
            oid = prefix + bytes([rng.randrange(1, 128)]) if inside else rng.randbytes(9)
            share.append((oid, rng.choice(TAGS), b""))
        counted = compiled.count_in_subtree(share, prefix)
        walk_compiled = walk.compiled
        try:
            walk.compiled = None
            assert counted == walk._count_in_subtree(share, prefix)
        finally:
            walk.compiled = walk_compiled
    assert compiled.count_in_subtree([("not", "a", "varbind")], prefix) == -1  # type: ignore[list-item]


def random_share(rng: random.Random, prefix: bytes, start: int) -> list[tuple[bytes, int, bytes]]:
    share = []
    index = start
    for _ in range(rng.randrange(1, 15)):
        step = rng.choice((1, 1, 1, 2, 50, 0, -1)) if rng.random() < 0.2 else 1
        index = max(1, index + step)
        suffix = ber.encode_subids([index] if rng.random() < 0.8 else [index, 200, 5])
        if rng.random() < 0.02:
            suffix = b"\x81"  # ends in the middle of a sub-identifier
        tag = rng.choice(TAGS[:10]) if rng.random() < 0.97 else rng.choice((0x47, 0x05, 0x80))
        value = random_value(rng, tag)
        # random_value gives whole TLVs: keep the contents octets only.
        _, start_at, end_at = ber.read_tlv(value, 0)
        raw = value[start_at:end_at]
        if rng.random() < 0.05:
            raw = b"\x00" * rng.randrange(9, 12) + raw  # long, with leading zeros
        if rng.random() < 0.03:
            raw = rng.randbytes(rng.randrange(9, 20))  # longer than 64 bits
        share.append((prefix + suffix, tag, raw))
    return share


def take_with(use: Any, shares: Any, roots: Any, prefixes: Any) -> tuple[Any, ...]:
    saved = walk.compiled
    walk.compiled = use
    walk._oid_table.clear()  # each side decodes every OID itself
    last_oid = list(roots)
    lists: list[list[VarBind]] = [[] for _ in roots]
    try:
        result = outcome(lambda: walk._take(shares, roots, prefixes, last_oid, lists, "here"))
    finally:
        walk.compiled = saved
    return result, last_oid, lists


@needs_compiled
def test_take_matches_the_python_loop_on_random_and_broken_shares() -> None:
    rng = random.Random(180)
    roots = [(1, 3, 6, 1, 2, 1, 2, 2, 1, column) for column in (10, 16, 8)]
    prefixes = [ber.encode_oid(root) for root in roots]
    errors = 0
    for _ in range(2000):
        shares = []
        for i in range(len(roots)):
            share = random_share(rng, prefixes[i], rng.randrange(0, 5))
            shares.append((i, share, rng.randrange(len(share) + 1)))
        fast = take_with(compiled, shares, roots, prefixes)
        reference = take_with(None, shares, roots, prefixes)
        assert fast == reference
        errors += fast[0][0] != "ok"
    assert 100 < errors < 1900  # both kinds of case were drawn


@needs_compiled
def test_take_compiled_takes_the_common_share_whole() -> None:
    assert compiled is not None
    root = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6)
    prefix = ber.encode_oid(root)
    share = [
        (prefix + bytes([n]), tag, raw)
        for n, (tag, raw) in enumerate(
            [
                (0x46, b"\x00\xff\xff\xff\xff\xff\xff\xff\xff"),
                (0x41, b""),
                (0x02, b"\xff"),
                (0x02, b"\x00\x80"),
                (0x04, b"caf\xc3\xa9"),
                (0x42, b"\x01\x00"),
            ],
            start=1,
        )
    ]
    out: list[VarBind] = []
    previous, taken = compiled.take_share(
        share,
        len(share),
        root,
        len(prefix),
        root,
        {},
        dict(walk._KINDS),
        out,
        ber.decode_subids,
        VarBind,
    )
    assert taken == len(share)
    assert previous == (*root, 6)
    assert [(v.oid[-1], int(v.kind), v.value) for v in out] == [
        (1, 0x46, 2**64 - 1),
        (2, 0x41, 0),
        (3, 0x02, -1),
        (4, 0x02, 128),
        (5, 0x04, b"caf\xc3\xa9"),
        (6, 0x42, 256),
    ]
    assert all(type(v) is VarBind for v in out)
    assert out[0] == VarBind((*root, 1), out[0].kind, 2**64 - 1)
    assert hash(out[0]) == hash(VarBind((*root, 1), out[0].kind, 2**64 - 1))
    # The OID table is shared: a second share finds them there, the same tuples.
    again: list[VarBind] = []
    table = {encoded: (*root, n) for n, (encoded, _, _) in enumerate(share, start=1)}
    _, taken = compiled.take_share(
        share[:1],
        1,
        root,
        len(prefix),
        root,
        table,
        dict(walk._KINDS),
        again,
        ber.decode_subids,
        VarBind,
    )
    assert taken == 1
    assert again[0].oid is table[share[0][0]]
    # An empty INTEGER is 0, as int.from_bytes has it.
    zero: list[VarBind] = []
    compiled.take_share(
        [(prefix + b"\x09", 0x02, b"")],
        1,
        root,
        len(prefix),
        root,
        {},
        dict(walk._KINDS),
        zero,
        ber.decode_subids,
        VarBind,
    )
    assert [v.value for v in zero] == [0]


class Arcs(tuple):  # type: ignore[type-arg]
    """A root of another tuple type (the walk accepts any sequence of OIDs)."""


@needs_compiled
def test_take_hands_back_what_it_does_not_expect() -> None:
    assert compiled is not None
    root = Arcs((1, 3, 6, 1, 2, 1, 2, 2, 1, 10))
    prefix = ber.encode_oid(root)
    share = [(prefix + b"\x01", 0x02, b"\x05")]
    args = (share, 1, root, len(prefix), root, {}, dict(walk._KINDS), [], ber.decode_subids)
    assert compiled.take_share(*args, VarBind) == (root, 0)  # type: ignore[arg-type]
    plain_root = tuple(root)
    args = (share, 1, plain_root, len(prefix), plain_root, {}, dict(walk._KINDS), [])
    assert compiled.take_share(*args, ber.decode_subids, int) == (plain_root, 0)  # type: ignore[arg-type]
    assert compiled.map_plain([], 0, {}, frozenset(), frozenset(), None, 0, [], int) == 0  # type: ignore[arg-type]
    # The walk's loop takes it all the same.
    assert take_with(compiled, [(0, share, 1)], [root], [prefix]) == take_with(
        None, [(0, share, 1)], [root], [prefix]
    )


# -- rendering ------------------------------------------------------------------


def render_both(families: list[Family], monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    fast = exposition.render_text(families)
    with monkeypatch.context() as patch:
        patch.setattr(exposition, "compiled", None)
        reference = exposition.render_text(families)
    return fast, reference


class Texts:
    def __init__(self) -> None:
        self.texts: dict[int, str] = {}


@needs_compiled
def test_rendering_matches_python(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(42)
    for _ in range(200):
        kept = Texts()
        label_sets = [
            (("ifIndex", str(n)), ("ifAlias", rng.choice(["uplink", 'café "a"\\b', "é\n", ""])))
            for n in range(rng.randrange(1, 10))
        ]
        for labels in label_sets:
            if rng.random() < 0.95:
                kept.texts[id(labels)] = render_labels(labels)
        family = Family("ifHCInOctets", "help", "counter", rendered=kept)
        for labels in label_sets:
            value = rng.choice(
                [0, -5, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(2**63), 1.5, True]
                + [rng.randrange(2**40)] * 10
            )
            family.add(labels, value)
        fast, reference = render_both([family], monkeypatch)
        assert fast == reference


@needs_compiled
def test_rendering_compiled_takes_the_usual_family() -> None:
    assert compiled is not None
    labels = (("ifIndex", "1"), ("ifName", "Gi0/1"))
    texts = {id(labels): render_labels(labels)}
    samples = [(labels, 12), (labels, 2**64 - 1), (labels, -3)]
    assert compiled.render_int_samples("m", texts, samples) == (
        'm{ifIndex="1",ifName="Gi0/1"} 12\n'
        'm{ifIndex="1",ifName="Gi0/1"} 18446744073709551615\n'
        'm{ifIndex="1",ifName="Gi0/1"} -3'
    )
    assert compiled.render_int_samples("m", texts, [(labels, 1.0)]) is None
    assert compiled.render_int_samples("m", {}, samples) is None
    assert compiled.render_int_samples("m", texts, [(labels, 2**64)]) is None
    assert compiled.render_int_samples("m", texts, [(labels, -(2**63) - 1)]) is None
    assert compiled.render_int_samples("m", texts, []) is None
    odd = (("ifAlias", "\ud800"),)
    assert compiled.render_int_samples("m", {id(odd): '{ifAlias="\ud800"}'}, [(odd, 1)]) is None
    # Label texts longer than the first guess of the buffer: it grows.
    long_labels = tuple((f"l{n}", "x" * 300) for n in range(4))
    many = [(long_labels, n) for n in range(50)]
    text = compiled.render_int_samples("m", {id(long_labels): render_labels(long_labels)}, many)
    assert text is not None
    assert text.split("\n") == [f"m{render_labels(long_labels)} {n}" for n in range(50)]


# -- mapping plain numbers ---------------------------------------------------------


def random_if_mib_rows(
    rng: random.Random, module: SnmpModule, interfaces: list[int]
) -> dict[Oid, list[VarBind]]:
    rows: dict[Oid, list[VarBind]] = {}
    kinds = list(ValueKind)
    for metric in module.metrics:
        base = oid_of(metric.oid)
        column = []
        for index in interfaces:
            if rng.random() < 0.05:
                continue  # a row missing from this column
            kind = rng.choice(kinds) if rng.random() < 0.1 else ValueKind.COUNTER64
            value: object = rng.choice([rng.randrange(2**64), 2**63 + 5, 0, -1])
            if rng.random() < 0.3:
                pass  # an int, whatever the kind says (only numeric kinds make samples)
            elif kind in (ValueKind.OCTET_STRING, ValueKind.OPAQUE, ValueKind.IP_ADDRESS):
                value = rng.randbytes(rng.randrange(6))
            elif kind is ValueKind.OID:
                value = (1, 3, 6, index)
            elif rng.random() < 0.05:
                value = None
            column.append(VarBind((*base, index), kind, value))  # type: ignore[arg-type]
        rows[base] = column
    return rows


def map_twice(
    mapper: MetricMapper, scrapes: list[dict[Oid, list[VarBind]]], use: Any
) -> list[list[tuple[str, list[Any]]]]:
    """Families of each scrape with one RowLabels kept across them (rows known from the 2nd)."""
    saved = mapping.compiled
    mapping.compiled = use
    try:
        kept = RowLabels(mapper)
        out = []
        for rows in scrapes:
            values = {v.oid: v for column in rows.values() for v in column}
            families = mapper.families(rows, values, kept)
            out.append([(f.name, list(f.samples)) for f in families])
        return out
    finally:
        mapping.compiled = saved


@needs_compiled
@pytest.mark.parametrize("wrap", [True, False])
def test_mapping_matches_python_scrape_after_scrape(wrap: bool) -> None:
    module = builtin_modules()["if_mib"]
    rng = random.Random(49 + wrap)
    for _ in range(30):
        interfaces = sorted(rng.sample(range(1, 500), rng.randrange(1, 30)))
        # Later scrapes: new values, sometimes an interface more (a row not known yet).
        scrapes = [random_if_mib_rows(rng, module, interfaces) for _ in range(3)]
        scrapes.append(random_if_mib_rows(rng, module, [*interfaces, 900]))
        mapper = MetricMapper(module, wrap_large_counters=wrap)
        assert map_twice(mapper, scrapes, compiled) == map_twice(mapper, scrapes, None)


@needs_compiled
def test_map_plain_takes_known_rows_and_stops_at_a_new_one() -> None:
    assert compiled is not None
    base = oid_of("1.3.6.1.2.1.31.1.1.1.6")
    row1, row2 = (("ifIndex", "1"),), (("ifIndex", "2"),)
    known: dict[Oid, Any] = {(1,): row1, (2,): row2, (4,): None}
    varbinds = [
        VarBind((*base, 1), ValueKind.COUNTER64, 2**53 + 7),
        VarBind((*base, 2), ValueKind.NO_SUCH_INSTANCE, None),
        VarBind((*base, 2), ValueKind.COUNTER32, 5),
        VarBind((*base, 4), ValueKind.COUNTER32, 6),
        VarBind((*base, 2), ValueKind.OCTET_STRING, b"x"),
        VarBind((*base, 3), ValueKind.COUNTER32, 8),
        VarBind((*base, 1), ValueKind.COUNTER32, 9),
    ]
    out: list[Any] = []
    absent, numeric = mapping._ABSENT, mapping._NUMERIC
    taken = compiled.map_plain(
        varbinds, len(base), known, absent, numeric, 2**53, ValueKind.COUNTER64, out, VarBind
    )
    assert taken == 5  # (3,) is a row not known yet
    assert out == [(row1, 7), (row2, 5)]
    assert out[0][0] is row1  # the row's own tuple: its text is rendered by identity
    out.clear()
    taken = compiled.map_plain(
        varbinds[:1], len(base), known, absent, numeric, None, ValueKind.COUNTER64, out, VarBind
    )
    assert (taken, out) == (1, [(row1, 2**53 + 7)])


# -- Python code run in the middle of a compiled loop ----------------------------------


class RebindingKind:
    """Equal to GAUGE32; hashing it (the absent and numeric checks) rebinds a VarBind's value."""

    target: VarBind | None = None

    def __hash__(self) -> int:
        if RebindingKind.target is not None:
            target, RebindingKind.target = RebindingKind.target, None
            target.value = 5  # the old value's last reference goes
        return hash(ValueKind.GAUGE32)

    def __eq__(self, other: object) -> bool:
        return other == ValueKind.GAUGE32


@needs_compiled
def test_map_plain_reads_each_slot_when_python_does_and_holds_it() -> None:
    assert compiled is not None
    base = oid_of("1.3.6.1.2.1.31.1.1.1.6")
    row = (("ifIndex", "1"),)
    varbind = VarBind((*base, 1), RebindingKind(), 10**40 + 12345)  # type: ignore[arg-type]
    RebindingKind.target = varbind
    out: list[Any] = []
    taken = compiled.map_plain(
        [varbind],
        len(base),
        {(1,): row},
        mapping._ABSENT,
        mapping._NUMERIC,
        None,
        ValueKind.COUNTER64,
        out,
        VarBind,
    )
    # The Python loop reads the value after the kind's checks: the rebound one.
    assert (taken, out) == (1, [(row, 5)])


@needs_compiled
def test_rendering_survives_a_lookup_that_changes_the_samples() -> None:
    assert compiled is not None
    labels = [(("a", str(n)),) for n in range(3)]
    samples = [(lb, 10**12 + n) for n, lb in enumerate(labels)]
    armed = []

    class Clash:
        def __hash__(self) -> int:
            return hash(id(labels[0]))

        def __eq__(self, other: object) -> bool:
            if armed:
                samples.clear()  # frees the tuples the loop is reading
            return False

    texts: dict[Any, str] = {Clash(): "x"}  # found first by the lookup of id(labels[0])
    for lb in labels:
        texts[id(lb)] = render_labels(lb)
    armed.append(True)
    assert compiled.render_int_samples("m", texts, samples) is None  # handed back, not read
