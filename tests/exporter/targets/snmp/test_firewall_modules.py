"""The SNMP firewall modules speak the one firewall schema, and the module features they use.

Every metric of a firewall module (fortigate, paloalto, cisco_asa, checkpoint,
pf) is exposed under a name of ``exporter.schema.firewall.SCHEMA`` with the
schema's type, and labels a subset of the schema's; the rules and the dashboard
read those names whatever the source. The features are checked on varbinds fed
straight to the mapper; test_firewall_modules_peers.py reads the modules from
snmpsim through the real exporter.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from exporter.clients.snmp import ValueKind, VarBind
from exporter.schema.firewall import PREFIX, SPECS
from exporter.targets.snmp.exposition import Family
from exporter.targets.snmp.mapping import MetricMapper, oid_of
from exporter.targets.snmp.modules import SnmpMetric, SnmpModule, builtin_modules

FIREWALL_MODULES = ("fortigate", "paloalto", "cisco_asa", "checkpoint", "pf")


def exposed(metric: SnmpMetric) -> tuple[str, str]:
    """The family name and type a metric is exposed as."""
    if metric.type == "counter":
        return metric.name, "counter"
    if metric.type == "EnumAsInfo":
        return f"{metric.name}_info", "gauge"
    return metric.name, "gauge"


def exposed_labels(metric: SnmpMetric) -> set[str]:
    labels = set(metric.static_labels)
    labels |= {lookup.labelname for lookup in metric.lookups}
    if metric.aggregate is None:
        labels |= {index.labelname for index in metric.indexes}
    if metric.type not in ("gauge", "counter"):
        labels.add(metric.value_label or metric.name)
    return labels


def test_the_firewall_modules_are_the_modules_that_use_the_schema():
    using = {
        name
        for name, module in builtin_modules().items()
        if any(metric.name.startswith(PREFIX) for metric in module.metrics)
    }
    assert using == set(FIREWALL_MODULES)


@pytest.mark.parametrize("module_name", FIREWALL_MODULES)
def test_every_firewall_metric_is_a_schema_family_with_its_type_and_labels(module_name):
    module = builtin_modules()[module_name]
    assert module.metrics
    for metric in module.metrics:
        name, type_ = exposed(metric)
        spec = SPECS.get(name.removesuffix("_total") if type_ == "counter" else name)
        assert spec is not None, f"{module_name}: {name} is not in the firewall schema"
        assert (spec.sample_name, spec.type) == (name, type_), (module_name, metric.name)
        assert exposed_labels(metric) <= set(spec.labels), (module_name, metric.name)


@pytest.mark.parametrize("module_name", FIREWALL_MODULES)
def test_every_firewall_module_reports_up_sessions_cpu_and_an_info_series(module_name):
    names = {exposed(metric)[0] for metric in builtin_modules()[module_name].metrics}
    assert {"scout_firewall_up", "scout_firewall_info"} <= names
    assert {"scout_firewall_sessions", "scout_firewall_cpu_ratio"} <= names


# Module features ----------------------------------------------------------------------

BASE = oid_of("1.3.6.1.4.1.99999.1")


def vb(suffix: tuple[int, ...], kind: ValueKind, value: int | bytes | None) -> VarBind:
    return VarBind((*BASE, *suffix), kind, value)


def families(
    metric: dict[str, object], varbinds: list[VarBind], *, wrap: bool = True, **extra: VarBind
) -> dict[str, Family]:
    module = SnmpModule.model_validate({"metrics": [{"oid": ".".join(map(str, BASE)), **metric}]})
    values = {varbind.oid: varbind for varbind in extra.values()}
    mapped = MetricMapper(module, wrap_large_counters=wrap).families({BASE: varbinds}, values)
    return {family.name: family for family in mapped if family.samples}


def test_scale_turns_a_percentage_into_a_ratio():
    found = families({"name": "cpu", "scale": 0.01}, [vb((0,), ValueKind.GAUGE32, 45)])
    assert found["cpu"].samples == [((), pytest.approx(0.45))]


def test_offset_applies_after_scale():
    idle = families(
        {"name": "busy", "scale": -0.01, "offset": 1}, [vb((0,), ValueKind.INTEGER, 80)]
    )
    assert idle["busy"].samples == [((), pytest.approx(0.2))]


def test_value_map_maps_numbers_and_text_and_drops_what_it_does_not_list():
    status = families(
        {"name": "up", "value_map": {1: 0, 2: 1}, "indexes": [{"labelname": "t"}]},
        [
            vb((1,), ValueKind.INTEGER, 2),
            vb((2,), ValueKind.INTEGER, 1),
            vb((3,), ValueKind.INTEGER, 7),  # not in the map: no sample, not a made-up 0
        ],
    )
    assert status["up"].samples == [((("t", "1"),), 1), ((("t", "2"),), 0)]
    role = families(
        {"name": "primary", "value_map": {"active": 1, "Active Attention": 1, "standby": 0}},
        [vb((0,), ValueKind.OCTET_STRING, b"ACTIVE ATTENTION ")],
    )
    assert role["primary"].samples == [((), 1)]


def test_absent_values_give_no_sample():
    assert families({"name": "limit", "absent_values": [0]}, [vb((0,), ValueKind.GAUGE32, 0)]) == {}
    kept = families({"name": "limit", "absent_values": [0]}, [vb((0,), ValueKind.GAUGE32, 9)])
    assert kept["limit"].samples == [((), 9)]


def test_value_label_and_static_labels_name_an_info_series():
    found = families(
        {
            "name": "fw_info",
            "type": "DisplayString",
            "value_label": "firmware",
            "static_labels": {"vendor": "fortinet"},
        },
        [vb((0,), ValueKind.OCTET_STRING, b"v7.2.5")],
    )
    assert found["fw_info"].samples == [((("vendor", "fortinet"), ("firmware", "v7.2.5")), 1)]


def test_enum_as_info_value_label():
    found = families(
        {
            "name": "ha",
            "type": "EnumAsInfo",
            "value_label": "mode",
            "enum_values": {3: "a-p"},
        },
        [vb((0,), ValueKind.INTEGER, 3)],
    )
    assert found["ha_info"].samples == [((("mode", "a-p"),), 1)]


def test_instance_reads_one_cell_of_a_table():
    found = families(
        {"name": "conns", "instance": "40.6"},
        [
            vb((40, 6), ValueKind.GAUGE32, 5120),
            vb((40, 7), ValueKind.GAUGE32, 30211),  # the high-water mark: not this metric
            vb((0,), ValueKind.GAUGE32, 1),
        ],
    )
    assert found["conns"].samples == [((), 5120)]


@pytest.mark.parametrize(
    ("how", "expected"),
    [("mean", 0.4), ("max", 0.5), ("min", 0.3), ("sum", 0.8), ("count", 2)],
)
def test_aggregate_folds_a_table_into_one_sample(how, expected):
    found = families(
        {
            "name": "cpu",
            "indexes": [{"labelname": "core"}],
            "scale": 0.01,
            "aggregate": how,
            "static_labels": {"plane": "all"},
        },
        [vb((1,), ValueKind.INTEGER, 30), vb((2,), ValueKind.INTEGER, 50)],
    )
    assert found["cpu"].samples == [((("plane", "all"),), pytest.approx(expected))]


def test_aggregate_of_an_empty_table_is_no_sample_rather_than_zero():
    metric = {"name": "members", "indexes": [{"labelname": "m"}], "aggregate": "count"}
    assert families(metric, []) == {}


def test_a_lookup_without_labels_reads_one_instance_for_every_sample():
    model = VarBind(oid_of("1.3.6.1.4.1.99999.2.0"), ValueKind.OCTET_STRING, b"PA-3220")
    found = families(
        {
            "name": "fw_info",
            "type": "DisplayString",
            "value_label": "firmware",
            "lookups": [{"labels": [], "labelname": "model", "oid": "1.3.6.1.4.1.99999.2.0"}],
        },
        [vb((0,), ValueKind.OCTET_STRING, b"10.2.4")],
        model=model,
    )
    assert found["fw_info"].samples == [((("model", "PA-3220"), ("firmware", "10.2.4")), 1)]


def test_large_counter64_values_wrap_at_2_to_the_53_unless_told_not_to():
    huge = 2**64 - 616
    counter = {"name": "octets", "type": "counter"}
    assert families(counter, [vb((0,), ValueKind.COUNTER64, huge)])["octets"].samples == [
        ((), huge % 2**53)
    ]
    exact = families(counter, [vb((0,), ValueKind.COUNTER64, huge)], wrap=False)
    assert exact["octets"].samples == [((), huge)]
    # Only Counter64 wraps, as in snmp_exporter: other kinds never reach 2**53 anyway.
    assert families(counter, [vb((0,), ValueKind.COUNTER32, 2**32 - 1)])["octets"].samples == [
        ((), 2**32 - 1)
    ]


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ({"type": "DisplayString", "scale": 0.01}, "need a gauge or counter"),
        ({"value_map": {1: 0}, "scale": 2}, "value_map replaces the value"),
        ({"value_label": "x"}, "value_label needs a text or enum type"),
        ({"aggregate": "max"}, "aggregate needs a gauge or counter with indexes"),
        ({"instance": "1", "indexes": [{"labelname": "i"}]}, "instance is for a metric"),
        ({"instance": "a.b"}, "instance must be dotted numbers"),
    ],
)
def test_module_options_that_cannot_work_together_are_refused(metric, message):
    with pytest.raises(ValidationError, match=message):
        SnmpMetric.model_validate({"name": "m", "oid": "1.3.6.1.4.1.99999.1", **metric})
