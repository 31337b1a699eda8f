"""The firewall and flow metric names (and their labels) the dashboard and rules may use.

Firewall names come from the one firewall schema (``exporter.schema.firewall``).
The flow names are the flows collector's contract (its module docstring,
``exporter/collectors/flows/collector.py``, shows them); the collector keeps
no list of its own, so ``tests/test_grafana.py`` checks this one against what
the real collector exports in the Grafana stack, as it checks the schema's
against every firewall source, and
``tests/exporter/collectors/flows/test_collector.py`` against a collector fed
in process.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from exporter.schema.firewall import SCHEMA

TALKER_LABELS = ("exporter", "direction", "address")
# Sample name -> label names.
FLOW_METRICS: Mapping[str, tuple[str, ...]] = {
    "scout_flow_talker_bytes_total": TALKER_LABELS,
    "scout_flow_talker_packets_total": TALKER_LABELS,
    "scout_flow_conversation_bytes_total": ("exporter", "protocol", "port"),
    "scout_flow_folded_records_total": ("exporter", "direction"),
    "scout_flow_interface_bytes_total": ("exporter", "ifindex", "direction"),
    "scout_flow_records_total": ("exporter", "version"),
    "scout_flow_packets_total": ("exporter", "version"),
    "scout_flow_sequence_lost_records_total": ("exporter", "version"),
    "scout_flow_sequence_lost_packets_total": ("exporter", "version"),
    "scout_flow_sequence_out_of_order_total": ("exporter", "version"),
    "scout_flow_sequence_resets_total": ("exporter", "version"),
    "scout_flow_bad_packets_total": ("reason",),
    "scout_flow_templates": ("exporter",),
    "scout_flow_series": (),
    "scout_flow_series_budget": (),
    "scout_flow_dropped_series_total": (),
    "scout_flow_receive_drops_total": (),
}
FIREWALL_METRICS: Mapping[str, tuple[str, ...]] = {spec.sample_name: spec.labels for spec in SCHEMA}
KNOWN: Mapping[str, tuple[str, ...]] = {**FIREWALL_METRICS, **FLOW_METRICS}
# Labels Prometheus adds to every scraped series, and `firewall`, which targets
# may carry (targets/firewall.yml) for the correlation's group key.
TARGET_LABELS = frozenset({"job", "instance", "firewall"})

_RECORDED = re.compile(r"\b[a-zA-Z_]+:[a-zA-Z0-9_:]+")
_NAME = re.compile(r"\bscout_(?:firewall|flow)_\w+")
_SELECTOR = re.compile(r"\b(scout_(?:firewall|flow)_\w+)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


def used_names(promql: str) -> set[str]:
    """The firewall and flow metric names a query reads (recorded series left out)."""
    return set(_NAME.findall(_RECORDED.sub("", promql)))


def selector_labels(promql: str) -> Iterator[tuple[str, set[str]]]:
    """Each firewall or flow selector's metric name and the label names it matches on."""
    without_values = re.sub(r'"[^"]*"', '""', _RECORDED.sub("", promql))
    for name, matchers in _SELECTOR.findall(without_values):
        yield name, set(_MATCHER_LABEL.findall(matchers))


def unknown_uses(promql: str) -> list[str]:
    """Names, and labels of selectors, that neither the schema nor the flow list has."""
    found = [f"metric {name}" for name in sorted(used_names(promql) - set(KNOWN))]
    for name, labels in selector_labels(promql):
        if name in KNOWN:
            extra = labels - set(KNOWN[name]) - TARGET_LABELS
            found += [f"label {label} of {name}" for label in sorted(extra)]
    return found
