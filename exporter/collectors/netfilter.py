"""The local firewall: nftables rule counters, chain policies and connection tracking.

Off by default (``--collector.netfilter``). The ruleset comes from
``nft -j list ruleset`` (iptables-nft rules included), the session counts from
``nf_conntrack_count`` and ``nf_conntrack_max``, and the conntrack events from
``/proc/net/stat/nf_conntrack`` (see ``exporter.clients.netfilter``). Everything
is mapped to the one firewall schema (``exporter.schema.firewall``), so the
firewall rules and dashboard read netfilter like any other firewall. Sample
exposition (the metric contract)::

    # HELP scout_firewall_up 1 if the firewall answered the scrape.
    # TYPE scout_firewall_up gauge
    scout_firewall_up 1.0
    # HELP scout_firewall_info The firewall's vendor, model and firmware; always 1.
    # TYPE scout_firewall_info gauge
    scout_firewall_info{firmware="",hostname="gw1",model="",vendor="netfilter"} 1.0
    # HELP scout_firewall_sessions Sessions (connections tracked) in use.
    # TYPE scout_firewall_sessions gauge
    scout_firewall_sessions 1873.0
    # HELP scout_firewall_sessions_limit Most sessions the firewall can track.
    # TYPE scout_firewall_sessions_limit gauge
    scout_firewall_sessions_limit 262144.0
    # HELP scout_firewall_rule_packets_total Packets that matched the rule.
    # TYPE scout_firewall_rule_packets_total counter
    scout_firewall_rule_packets_total{action="",chain="",rule="web_hits",rule_id="3",table="inet filter"} 512.0
    scout_firewall_rule_packets_total{action="accept",chain="input",rule="established",rule_id="4",table="inet filter"} 90211.0
    scout_firewall_rule_packets_total{action="jump logs",chain="input",rule="to logs",rule_id="8",table="inet filter"} 17.0
    # HELP scout_firewall_rule_bytes_total Bytes that matched the rule.
    # TYPE scout_firewall_rule_bytes_total counter
    scout_firewall_rule_bytes_total{action="",chain="",rule="web_hits",rule_id="3",table="inet filter"} 30720.0
    scout_firewall_rule_bytes_total{action="accept",chain="input",rule="established",rule_id="4",table="inet filter"} 1.2e+08
    scout_firewall_rule_bytes_total{action="jump logs",chain="input",rule="to logs",rule_id="8",table="inet filter"} 1020.0
    # HELP scout_firewall_rules_dropped_total Rule series left out by the series budget.
    # TYPE scout_firewall_rules_dropped_total counter
    scout_firewall_rules_dropped_total 0.0
    # HELP scout_firewall_chain_policy_info A base chain's default policy; always 1.
    # TYPE scout_firewall_chain_policy_info gauge
    scout_firewall_chain_policy_info{chain="input",hook="input",policy="drop",table="inet filter"} 1.0
    # HELP scout_firewall_conntrack_events_total Connection-tracking events by kind (netfilter).
    # TYPE scout_firewall_conntrack_events_total counter
    scout_firewall_conntrack_events_total{event="drop"} 0.0
    scout_firewall_conntrack_events_total{event="early_drop"} 0.0
    scout_firewall_conntrack_events_total{event="insert_failed"} 0.0
    scout_firewall_conntrack_events_total{event="invalid"} 31.0
    scout_firewall_conntrack_events_total{event="search_restart"} 4.0

How netfilter fills the schema:

- ``table`` is ``"<family> <table>"`` (``inet filter``, ``ip nat``), ``chain``
  the chain's name, ``rule_id`` the rule's handle and ``rule`` its comment.
- A rule gets a series if it has an anonymous ``counter`` statement. Named
  counters (``nft add counter``) get one series each, with ``chain=""``,
  ``action=""``, the counter's handle and ``rule`` its name; a rule that counts
  into a named counter (``counter name web_hits``) has no series of its own,
  since several rules may share one counter and would all show its totals.
- ``action`` is the rule's verdict or terminal statement: ``accept``,
  ``drop``, ``reject``, ``return``, ``jump <chain>``, ``goto <chain>``,
  ``dnat``... and empty when the rule lets packets go on to the next rule.
- By default only named counters and rules with a comment get series; with
  ``collectors.netfilter.all_rules`` every counted rule does. At most
  ``max_rule_series`` either way (named counters first, then rules in nft's
  order); ``scout_firewall_rules_dropped_total`` counts, over the collector's
  life, the series left out on each scrape.
- Each base chain (one attached to a hook) gets a ``chain_policy_info``.
- ``conntrack_events`` are the columns of ``/proc/net/stat/nf_conntrack``
  summed over CPUs, with the kernel's names (``clashres`` and
  ``chainlength`` spelled out as ``clash_resolve`` and ``chain_too_long``).
  Without nf_conntrack loaded the session and event families are left out.

A read that fails (nft missing or not permitted, procfs not found, output not
in the expected shape) is logged at warning and reported as
``scout_firewall_up 0``, with whatever the other reads found; the collector
itself still succeeds (``scout_collector_success{collector="netfilter"} 1``),
so the failure shows where the firewall alerts look, and ``/metrics`` is
always served.
"""  # noqa: E501 (exposition lines are as long as they are)

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from exporter.clients.netfilter import (
    NetfilterError,
    NetfilterSource,
    Ruleset,
    SystemNetfilterSource,
)
from exporter.collectors.base import BaseCollector, HostView
from exporter.config import ExporterConfig, NetfilterCollectorConfig
from exporter.schema.firewall import (
    ChainPolicy,
    FirewallSnapshot,
    RuleBudget,
    RuleCounters,
    failed,
    render,
)

log = logging.getLogger(__name__)

VENDOR = "netfilter"
_LOG_EXTRA = {"collector": "netfilter"}
# The three reads of a scrape, as failures name them.
_READS = ("ruleset", "conntrack count", "conntrack statistics")


def _table(family: str, table: str) -> str:
    return f"{family} {table}"


def rule_counters(ruleset: Ruleset) -> list[RuleCounters]:
    """Every counter in ``ruleset`` as a schema rule: named counters first, then rules.

    A label set seen twice (only a corrupt listing has two objects with one
    handle) is kept once: Prometheus refuses a scrape with duplicate series.
    """
    found = (
        RuleCounters(
            rule_id=str(rule.handle),
            rule=rule.comment,
            table=_table(rule.family, rule.table),
            chain=rule.chain,
            action=rule.action,
            packets=rule.packets,
            bytes=rule.bytes,
            # A named counter's comment is its name: it is always named.
            named=bool(rule.comment),
        )
        for rule in (*ruleset.counters, *ruleset.rules)
    )
    seen: set[tuple[str, str, str]] = set()
    unique: list[RuleCounters] = []
    for rule in found:
        key = (rule.table, rule.chain, rule.rule_id)
        if key not in seen:
            seen.add(key)
            unique.append(rule)
    return unique


def chain_policies(ruleset: Ruleset) -> list[ChainPolicy]:
    """Every base chain's policy; a chain listed twice (a corrupt listing) is kept once."""
    unique: dict[tuple[str, str], ChainPolicy] = {}
    for chain in ruleset.chains:
        table = _table(chain.family, chain.table)
        unique.setdefault(
            (table, chain.name), ChainPolicy(table, chain.name, chain.hook, chain.policy)
        )
    return list(unique.values())


class NetfilterCollector(BaseCollector):
    """Maps the local netfilter state to the firewall schema, one snapshot per scrape."""

    def __init__(self, settings: NetfilterCollectorConfig, source: NetfilterSource) -> None:
        self._source = source
        self._budget = RuleBudget(settings.all_rules, settings.max_rule_series)
        # Cumulative over the collector's life: scrapes never overlap (see exporter.scrape).
        self._rules_dropped = 0

    @classmethod
    def from_config(cls, config: ExporterConfig, view: HostView) -> NetfilterCollector:
        settings = config.collectors.netfilter
        return cls(settings, SystemNetfilterSource(settings.nft_command, settings.procfs))

    @property
    def rules_dropped(self) -> int:
        """Rule series the budget has left out, summed over every scrape so far."""
        return self._rules_dropped

    def snapshot(self) -> tuple[FirewallSnapshot, list[str]]:
        """One read of the netfilter state, and what could not be read (empty if all was)."""
        snapshot = FirewallSnapshot(vendor=VENDOR, hostname=self._source.hostname())
        failures: list[str] = []
        try:
            ruleset = self._source.ruleset()
        except NetfilterError as exc:
            failures.append(f"{_READS[0]}: {exc}")
        else:
            if ruleset.skipped:
                log.warning(
                    "left out %d ruleset objects of an unexpected shape; the first: %s",
                    ruleset.skipped,
                    ruleset.first_skip,
                    extra=_LOG_EXTRA,
                )
            kept, dropped = self._budget.apply(rule_counters(ruleset))
            self._rules_dropped += dropped
            snapshot.rules = kept
            snapshot.chain_policies = chain_policies(ruleset)
        snapshot.rules_dropped = self._rules_dropped
        try:
            usage = self._source.conntrack_usage()
        except NetfilterError as exc:
            failures.append(f"{_READS[1]}: {exc}")
        else:
            if usage is not None:
                snapshot.sessions, snapshot.sessions_limit = usage.count, usage.limit
        try:
            events = self._source.conntrack_events()
        except NetfilterError as exc:
            failures.append(f"{_READS[2]}: {exc}")
        else:
            snapshot.conntrack_events = {name: float(n) for name, n in (events or {}).items()}
        return snapshot, failures

    def collect(self) -> Iterator[Metric]:
        snapshot, failures = self.snapshot()
        if not failures:
            yield from render(snapshot)
            return
        log.warning("netfilter read failed: %s", "; ".join(failures), extra=_LOG_EXTRA)
        if len(failures) == len(_READS):
            yield from failed()  # nothing was read: there is no firewall to describe
        else:
            yield from render(snapshot, up=False)
