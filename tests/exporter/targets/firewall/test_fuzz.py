"""Each vendor's mapping fed random JSON in every endpoint: it never raises, and the
exposition it renders encodes, with one sample per series.

``Vendor.read`` promises never to raise for a payload of the wrong shape; the
strategies below mix the field names the vendors use with values of every JSON
type, numbers beyond a float's range, unpaired surrogates and the words the
mappings look for, so the mappings' branches are reached, not only their
"missing" paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.schema.firewall import RuleBudget, render
from exporter.targets.firewall.modules import default_modules
from exporter.targets.firewall.scraper import VENDORS
from exporter.targets.firewall.values import Node
from exporter.targets.firewall.vendor import Answers, ShapeError

WORDS = ["up", "down", "MASTER", "BACKUP", "carp", "4.2 ms", "0 %", "CPU: 3% idle", "failed"]
WORDS += ["success", "error", "0", "1", "ESTABLISHED", "standalone", "a-p", "-- x"]
FIELDS = ["results", "data", "rows", "items", "stats", "statistics", "name", "status", "policyid"]
FIELDS += ["session", "current_usage", "custom_max", "cpu", "mem", "current", "memory", "used"]
FIELDS += ["total", "headers", "connected", "phase1desc", "remote-addrs", "proxyid", "link"]
FIELDS += ["rx_bytes", "serial_no", "primary", "checksum", "all", "mode", "carp_status"]
FIELDS += ["child_sas", "con_id", "bytes_in", "descr", "id", "identifier", "device", "network"]
FIELDS += ["received-bytes", "info", "state-table", "inserts", "versions", "latency", "delay"]
FIELDS += ["packet_loss", "loss", "hit_count", "bytes", "packets", "comments", "action"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.just(10**400),  # beyond a float
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(WORDS),
    st.just("fw\ud800"),  # an unpaired surrogate escape, valid JSON
)
KEYS = st.sampled_from([*FIELDS, "wan\udfff", "x"])
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=30,
)
# What each vendor's answers are wrapped in, so most of them reach the mapping.
ENVELOPES = {
    "fortigate": lambda payload: {"results": payload, "serial": "FGT1", "version": "v7"},
    "pfsense": lambda payload: {"data": payload, "status": "ok"},
    "opnsense": lambda payload: payload,
}


class Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(prober=st.sampled_from(sorted(VENDORS)), payloads=st.lists(JSON, min_size=12, max_size=12))
def test_any_json_maps_and_renders(prober, payloads):
    vendor, module = VENDORS[prober], default_modules()[prober]
    answers = {}
    for endpoint, payload in zip(vendor.endpoints(module), payloads, strict=False):
        with contextlib.suppress(ShapeError):  # that endpoint failed: left out, as in a scrape
            answers[endpoint.key] = endpoint.unwrap(Node(ENVELOPES[prober](payload)))
    reading = vendor.read(module, Answers(answers))
    if reading.rules is not None:
        reading.snapshot.rules, _ = RuleBudget().apply(reading.rules)
    registry = CollectorRegistry()
    registry.register(Families(render(reading.snapshot)))
    lines = [line for line in generate_latest(registry).decode().splitlines() if line[:1] != "#"]
    assert len(lines) == len(set(lines))
