"""The netfilter collector: its exposition (golden file, schema contract), budget and failures.

The source is fed recorded ``nft`` output (``clients/data/nft-ruleset.json``)
and fixed conntrack numbers; the real kernel is exercised in
``test_netfilter_netns.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from exporter.app import create_app
from exporter.cli import build_parser, enabled_collectors
from exporter.clients.netfilter import (
    ConntrackUsage,
    NetfilterError,
    NftError,
    ProcReadError,
    Ruleset,
    parse_conntrack_stat,
    parse_ruleset,
)
from exporter.collectors import COLLECTORS
from exporter.collectors.netfilter import NetfilterCollector
from exporter.config import NetfilterCollectorConfig, parse_config
from exporter.live import Settings
from exporter.schema.firewall import SPECS
from tests.exporter.clients.test_netfilter import RULESET, STAT_6X, ruleset_of
from tests.peers.snmp import promtool_check_metrics

GOLDEN = Path(__file__).parent / "golden" / "netfilter.prom"


@dataclass
class RecordedSource:
    """A ``NetfilterSource`` that answers from recordings, or raises what it is given."""

    ruleset_output: bytes = RULESET
    usage: ConntrackUsage | None = field(default_factory=lambda: ConntrackUsage(1873, 262144))
    events: Mapping[str, int] | None = field(default_factory=lambda: parse_conntrack_stat(STAT_6X))
    ruleset_error: NetfilterError | None = None
    conntrack_error: NetfilterError | None = None

    def hostname(self) -> str:
        return "gw1"

    def ruleset(self) -> Ruleset:
        if self.ruleset_error is not None:
            raise self.ruleset_error
        return parse_ruleset(self.ruleset_output)

    def conntrack_usage(self) -> ConntrackUsage | None:
        if self.conntrack_error is not None:
            raise self.conntrack_error
        return self.usage

    def conntrack_events(self) -> Mapping[str, int] | None:
        if self.conntrack_error is not None:
            raise self.conntrack_error
        return self.events


def collector(source: RecordedSource | None = None, **settings: object) -> NetfilterCollector:
    config = NetfilterCollectorConfig.model_validate(settings)
    return NetfilterCollector(config, source or RecordedSource())


def exposition(target: NetfilterCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(target)
    return generate_latest(registry).decode()


def samples(families: list[Metric], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
        if sample.name == name
    }


def rule_names(families: list[Metric]) -> list[tuple[str, str, str]]:
    return [
        (labels["chain"], labels["rule_id"], labels["rule"])
        for family in families
        for sample in family.samples
        if sample.name == "scout_firewall_rule_packets_total"
        for labels in [sample.labels]
    ]


# --- the exposition ------------------------------------------------------------------


def test_exposition_matches_golden_file_line_by_line():
    text = exposition(collector(all_rules=True))
    if os.environ.get("SCOUT_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text.splitlines() == GOLDEN.read_text().splitlines()


def test_golden_file_passes_promtool_check_metrics_without_a_finding():
    assert promtool_check_metrics(GOLDEN.read_text()) == ""


@pytest.mark.parametrize("all_rules", [False, True])
def test_every_family_is_a_schema_family_with_its_type_and_labels(all_rules):
    families = list(collector(all_rules=all_rules).collect())
    assert families, "the collector yielded nothing"
    for family in families:
        spec = SPECS.get(family.name)
        assert spec is not None, f"{family.name} is not in exporter.schema.firewall.SCHEMA"
        assert family.type == spec.type, family.name
        for sample in family.samples:
            assert sample.name == spec.sample_name
            assert tuple(sorted(sample.labels)) == tuple(sorted(spec.labels)), sample


def test_sessions_come_from_conntrack_count_and_max():
    families = list(collector().collect())
    assert samples(families, "scout_firewall_sessions") == {(): 1873.0}
    assert samples(families, "scout_firewall_sessions_limit") == {(): 262144.0}
    assert samples(families, "scout_firewall_up") == {(): 1.0}
    info = samples(families, "scout_firewall_info")
    assert info == {
        (("firmware", ""), ("hostname", "gw1"), ("model", ""), ("vendor", "netfilter")): 1.0
    }


def test_conntrack_events_are_the_summed_stat_columns():
    events = samples(list(collector().collect()), "scout_firewall_conntrack_events_total")
    by_event = {dict(labels)["event"]: value for labels, value in events.items()}
    assert by_event == {name: float(count) for name, count in parse_conntrack_stat(STAT_6X).items()}
    assert by_event["drop"] == 11.0


def test_chain_policies_of_base_chains():
    policies = samples(list(collector().collect()), "scout_firewall_chain_policy_info")
    assert sorted(list(dict(labels).values()) for labels in policies) == [
        ["input", "input", "drop", "inet filter"],
        ["pre", "prerouting", "accept", "ip nat"],
    ]


def test_rule_labels_carry_table_chain_handle_comment_and_verdict():
    families = list(collector().collect())
    packets = samples(families, "scout_firewall_rule_packets_total")
    established = (
        ("action", "accept"),
        ("chain", "input"),
        ("rule", "established"),
        ("rule_id", "5"),
        ("table", "inet filter"),
    )
    assert packets[established] == 21.0
    assert samples(families, "scout_firewall_rule_bytes_total")[established] == 1416.0
    named_counter = (
        ("action", ""),
        ("chain", ""),
        ("rule", "web_hits"),
        ("rule_id", "4"),
        ("table", "inet filter"),
    )
    assert packets[named_counter] == 3.0
    jump = next(labels for labels in packets if ("rule", "to loopback") in labels)
    assert ("action", "jump loopback") in jump


# --- the series budget ---------------------------------------------------------------


def test_by_default_named_counters_and_commented_rules_have_series():
    assert rule_names(list(collector().collect())) == [
        ("", "4", "web_hits"),
        ("input", "5", "established"),
        ("input", "6", "invalid"),
        ("input", "10", "to loopback"),
        ("loopback", "12", "loopback done"),
        ("logs", "13", "log chain"),
        ("pre", "2", "ssh forward"),
    ]


def test_all_rules_adds_the_rules_without_a_comment_in_nft_order():
    names = rule_names(list(collector(all_rules=True).collect()))
    assert len(names) == 10
    assert [n for n in names if n[2] == ""] == [
        ("input", "8", ""),
        ("input", "9", ""),
        ("input", "11", ""),
    ]


@pytest.mark.parametrize(("all_rules", "wanted"), [(False, 7), (True, 10)])
def test_the_budget_keeps_the_first_series_and_counts_the_rest_on_every_scrape(all_rules, wanted):
    target = collector(all_rules=all_rules, max_rule_series=3)
    first = list(target.collect())
    assert rule_names(first) == [
        ("", "4", "web_hits"),
        ("input", "5", "established"),
        ("input", "6", "invalid"),
    ]
    assert samples(first, "scout_firewall_rules_dropped_total") == {(): wanted - 3.0}
    second = list(target.collect())
    assert samples(second, "scout_firewall_rules_dropped_total") == {(): 2 * (wanted - 3.0)}
    assert target.rules_dropped == 2 * (wanted - 3)


def test_nothing_dropped_under_the_budget_still_reports_the_counter():
    families = list(collector(max_rule_series=500).collect())
    assert samples(families, "scout_firewall_rules_dropped_total") == {(): 0.0}


def test_a_budget_of_zero_keeps_no_rule_series():
    families = list(collector(max_rule_series=0).collect())
    assert rule_names(families) == []
    assert samples(families, "scout_firewall_rules_dropped_total") == {(): 7.0}


def test_two_objects_with_one_handle_give_one_series():
    body = {
        "family": "inet",
        "table": "t",
        "chain": "c",
        "handle": 9,
        "comment": "dup",
        "expr": [{"counter": {"packets": 1, "bytes": 2}}],
    }
    source = RecordedSource(ruleset_output=ruleset_of({"rule": body}, {"rule": body}))
    assert rule_names(list(collector(source).collect())) == [("c", "9", "dup")]


def test_a_lone_surrogate_in_a_comment_does_not_break_the_exposition():
    hostile = ruleset_of(
        {
            "rule": {
                "family": "inet",
                "table": "t",
                "chain": "c",
                "handle": 9,
                "comment": "web\ud800",
                "expr": [{"counter": {"packets": 1, "bytes": 2}}],
            }
        }
    )
    text = exposition(collector(RecordedSource(ruleset_output=hostile)))
    assert "scout_firewall_up 1.0" in text
    assert 'rule_id="9"' not in text


def test_two_base_chains_with_one_name_give_one_policy_series():
    chain = {"family": "inet", "table": "t", "name": "in", "hook": "input", "policy": "drop"}
    source = RecordedSource(ruleset_output=ruleset_of({"chain": chain}, {"chain": chain}))
    families = list(collector(source).collect())
    assert samples(families, "scout_firewall_chain_policy_info") == {
        (("chain", "in"), ("hook", "input"), ("policy", "drop"), ("table", "inet t")): 1.0
    }
    assert [
        sample.labels["chain"]
        for family in families
        for sample in family.samples
        if sample.name == "scout_firewall_chain_policy_info"
    ] == ["in"]


def test_odd_ruleset_objects_are_logged_and_the_rest_exported(caplog):
    source = RecordedSource(ruleset_output=ruleset_of({"rule": {"handle": "x"}}))
    with caplog.at_level(logging.WARNING, logger="exporter.collectors.netfilter"):
        families = list(collector(source).collect())
    assert samples(families, "scout_firewall_up") == {(): 1.0}
    assert "left out 1 ruleset objects of an unexpected shape" in caplog.text


# --- failures ------------------------------------------------------------------------


def test_an_unreadable_ruleset_is_up_0_with_the_conntrack_numbers_and_a_warning(caplog):
    error = NftError("nft may not read the ruleset: the exporter needs CAP_NET_ADMIN")
    source = RecordedSource(ruleset_error=error)
    with caplog.at_level(logging.WARNING, logger="exporter.collectors.netfilter"):
        families = list(collector(source).collect())
    assert samples(families, "scout_firewall_up") == {(): 0.0}
    assert samples(families, "scout_firewall_sessions") == {(): 1873.0}
    assert rule_names(families) == []
    assert "ruleset: nft may not read the ruleset" in caplog.text
    assert caplog.records[0].collector == "netfilter"  # type: ignore[attr-defined]


def test_unreadable_conntrack_is_up_0_with_the_rules():
    source = RecordedSource(conntrack_error=ProcReadError("/x/sys/net/netfilter not found"))
    families = list(collector(source).collect())
    assert samples(families, "scout_firewall_up") == {(): 0.0}
    assert "scout_firewall_sessions" not in {f.name for f in families}
    assert len(rule_names(families)) == 7


def test_nothing_readable_is_just_up_0():
    source = RecordedSource(ruleset_error=NftError("x"), conntrack_error=ProcReadError("y"))
    families = list(collector(source).collect())
    assert [(f.name, [s.value for s in f.samples]) for f in families] == [
        ("scout_firewall_up", [0.0])
    ]


def test_without_conntrack_loaded_sessions_are_left_out_and_the_scrape_is_up():
    families = list(collector(RecordedSource(usage=None, events=None)).collect())
    names = {f.name for f in families}
    assert samples(families, "scout_firewall_up") == {(): 1.0}
    assert not names & {"scout_firewall_sessions", "scout_firewall_conntrack_events"}
    assert "scout_firewall_rule_packets" in names


# --- the registry row and the /metrics scrape ----------------------------------------


def test_the_collector_is_registered_off_by_default():
    (spec,) = [spec for spec in COLLECTORS if spec.name == "netfilter"]
    assert spec.enabled_by_default is False
    assert "netfilter" not in enabled_collectors(build_parser().parse_args([]))
    flags = build_parser().parse_args(["--collector.netfilter"])
    assert enabled_collectors(flags) == {"host", "netfilter"}


async def test_metrics_stays_up_with_nft_missing_and_says_so(aiohttp_client, tmp_path, caplog):
    config = tmp_path / "scout.yml"
    config.write_text(
        "collectors:\n"
        "  netfilter: {nft_command: nft-not-installed-here, procfs: /nonexistent-proc}\n"
    )
    settings = Settings(config_file=config, enabled_collectors=frozenset({"netfilter"}))
    client = await aiohttp_client(create_app(settings))
    with caplog.at_level(logging.WARNING, logger="exporter.collectors.netfilter"):
        response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert "scout_firewall_up 0.0" in text
    assert 'scout_collector_success{collector="netfilter"} 1.0' in text
    assert "nft-not-installed-here not found: install nftables" in caplog.text
    assert "is procfs mounted at /nonexistent-proc?" in caplog.text


def test_procfs_and_the_other_settings_are_read_from_yaml():
    # Regression: the strict config took procfs only as a Path object, which YAML cannot write.
    config = parse_config(
        "collectors:\n"
        "  netfilter: {nft_command: sudo -n nft, procfs: /host/proc, all_rules: true,"
        " max_rule_series: 50}\n",
        "scout.yml",
    )
    assert config.collectors.netfilter == NetfilterCollectorConfig(
        nft_command="sudo -n nft", procfs=Path("/host/proc"), all_rules=True, max_rule_series=50
    )
