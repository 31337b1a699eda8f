"""What the anomaly models watch: the shipped signals, and how a series is named.

A signal is a PromQL expression whose series the detector models together
(config: :class:`ai_sidecar.config.SignalConfig`). The defaults below read the
shipped recording rules (``prometheus/rules/*.yml``), so counters are always
modelled through ``rate()`` as those rules compute it, never raw.

A series is known by its *kept* labels (``keep_labels``): the labels it is
exported with on ``/metrics`` next to ``signal``. Two series of one answer
that agree on every kept label are one identity; only the first is scored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# The key that orders and compares series: sorted (name, value) pairs.
SeriesKey = tuple[tuple[str, str], ...]

# A signal's name: a label value on /metrics and its directory in the model registry.
SIGNAL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Labels a series never keeps: its metric name (a signal may join several),
# and ``signal``, which the exporter sets itself.
RESERVED_LABELS = frozenset({"__name__", "signal"})

_IN_OUT = (
    'label_replace({metric_in}, "direction", "in", "", "")'
    ' or label_replace({metric_out}, "direction", "out", "", "")'
)

# Shipped signals: plain data, validated as SignalConfig when the config loads.
DEFAULT_SIGNALS: tuple[Mapping[str, object], ...] = (
    {
        "name": "interface_bits",
        "query": _IN_OUT.format(
            metric_in="instance_ifIndex:if_in_bits:rate5m",
            metric_out="instance_ifIndex:if_out_bits:rate5m",
        ),
        # Traffic spans decades (idle ports to trunks): model its logarithm.
        "transform": "log1p",
        "min_deviation": 1e6,  # 1 Mb/s
        "min_level": 1e5,
        "keep_labels": ["job", "instance", "ifIndex", "ifName", "direction"],
    },
    {
        "name": "interface_utilisation",
        "query": _IN_OUT.format(
            metric_in="instance_ifIndex:if_in_utilisation:ratio_rate5m",
            metric_out="instance_ifIndex:if_out_utilisation:ratio_rate5m",
        ),
        "min_deviation": 0.05,
        "keep_labels": ["job", "instance", "ifIndex", "ifName", "direction"],
    },
    {
        "name": "wan_throughput",
        "query": _IN_OUT.format(
            metric_in="instance:wan_in_bits:rate5m", metric_out="instance:wan_out_bits:rate5m"
        ),
        "transform": "log1p",
        "min_deviation": 1e6,
        "keep_labels": ["job", "instance", "direction"],
    },
    {
        "name": "probe_rtt",
        "query": "instance:scout_probe_rtt_seconds:avg5m",
        "min_deviation": 0.005,  # 5 ms
        "keep_labels": ["job", "instance"],
    },
    {
        "name": "probe_loss",
        "query": "instance:scout_probe_loss:ratio_avg5m",
        "min_deviation": 0.02,
        "keep_labels": ["job", "instance"],
    },
    {
        "name": "probe_jitter",
        "query": "instance:scout_probe_jitter_seconds:avg5m",
        "min_deviation": 0.002,
        "keep_labels": ["job", "instance"],
    },
    {
        "name": "host_cpu",
        "query": "instance:scout_host_cpu_busy:ratio_rate5m",
        "min_deviation": 0.1,
        "keep_labels": ["job", "instance"],
    },
    {
        "name": "host_memory",
        "query": "instance:scout_host_memory_used:ratio",
        "min_deviation": 0.05,
        "keep_labels": ["job", "instance"],
    },
    {
        "name": "host_filesystem",
        "query": "instance_mountpoint:scout_host_filesystem_used:ratio",
        "min_deviation": 0.02,
        "keep_labels": ["job", "instance", "mountpoint"],
    },
)

# Metric names that are counters by convention (and SNMP's counters, which
# follow none): modelling one raw would learn an ever-growing line.
_COUNTER_NAME = re.compile(
    r"\b[a-zA-Z_:][a-zA-Z0-9_:]*(_total|_count|_sum|_bucket)\b"
    r"|\bif(HC)?(In|Out)(Octets|UcastPkts|MulticastPkts|BroadcastPkts|Errors|Discards)\b"
)
_RATE_FUNCTION = re.compile(r"\b(rate|irate|increase|delta|idelta|deriv|resets|changes)\s*\(")


def raw_counter_in(query: str) -> str | None:
    """A counter the query reads without a rate function, or None.

    A heuristic on the text, not a parser: a counter name anywhere in a query
    that applies no rate-like function at all is refused; a query that does
    is trusted to apply it to the counter.
    """
    found = _COUNTER_NAME.search(query)
    if found is None or _RATE_FUNCTION.search(query):
        return None
    return found.group(0)


def series_key(labels: Mapping[str, str], keep: Sequence[str] | None) -> SeriesKey:
    """The identity of a series: its kept labels (all but reserved ones if ``keep`` is None)."""
    if keep is None:
        return tuple(sorted((k, v) for k, v in labels.items() if k not in RESERVED_LABELS))
    return tuple(sorted((k, labels[k]) for k in keep if k in labels and labels[k] != ""))
