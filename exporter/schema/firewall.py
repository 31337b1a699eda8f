"""One firewall schema for every source: netfilter, FortiGate, pfSense, OPNsense, SNMP.

Each source (the local netfilter collector, ``/firewall`` for the vendors' REST
APIs) fills a ``FirewallSnapshot`` and ``render`` turns it into metric
families, so one set of rules and one dashboard work for all of them. The
firewall SNMP modules (``exporter/targets/snmp/modules/``: ``fortigate``,
``paloalto``, ``cisco_asa``, ``checkpoint``, ``pf``) are data, not code: they
name their metrics from ``SCHEMA`` (a test holds them to it). Sample
exposition (the metric contract; ratios are 0 to 1, times in seconds)::

    # HELP scout_firewall_up 1 if the firewall answered the scrape.
    # TYPE scout_firewall_up gauge
    scout_firewall_up 1.0
    # HELP scout_firewall_info The firewall's vendor, model and firmware; always 1.
    # TYPE scout_firewall_info gauge
    scout_firewall_info{firmware="v7.4.3",hostname="fw-hq",model="FGT60F",vendor="fortinet"} 1.0
    # HELP scout_firewall_sessions Sessions (connections tracked) in use.
    # TYPE scout_firewall_sessions gauge
    scout_firewall_sessions 51234.0
    # HELP scout_firewall_sessions_limit Most sessions the firewall can track.
    # TYPE scout_firewall_sessions_limit gauge
    scout_firewall_sessions_limit 262144.0
    # HELP scout_firewall_sessions_created_total Sessions created.
    # TYPE scout_firewall_sessions_created_total counter
    scout_firewall_sessions_created_total 9.1e+07
    # HELP scout_firewall_session_setup_rate New sessions per second, as the firewall measures it.
    # TYPE scout_firewall_session_setup_rate gauge
    scout_firewall_session_setup_rate 120.0
    # HELP scout_firewall_cpu_ratio Share of the firewall's CPU in use.
    # TYPE scout_firewall_cpu_ratio gauge
    scout_firewall_cpu_ratio 0.23
    # HELP scout_firewall_memory_ratio Share of the firewall's memory in use.
    # TYPE scout_firewall_memory_ratio gauge
    scout_firewall_memory_ratio 0.61
    # HELP scout_firewall_rule_packets_total Packets that matched the rule.
    # TYPE scout_firewall_rule_packets_total counter
    scout_firewall_rule_packets_total{action="accept",chain="",rule="web",rule_id="1",table=""} 12.0
    # HELP scout_firewall_rule_bytes_total Bytes that matched the rule.
    # TYPE scout_firewall_rule_bytes_total counter
    scout_firewall_rule_bytes_total{action="accept",chain="",rule="web",rule_id="1",table=""} 9e5
    # HELP scout_firewall_rule_hits_total Times the rule matched (vendors that count hits).
    # TYPE scout_firewall_rule_hits_total counter
    scout_firewall_rule_hits_total{action="accept",chain="",rule="web",rule_id="12",table=""} 310.0
    # HELP scout_firewall_rules_dropped_total Rule series left out by the series budget.
    # TYPE scout_firewall_rules_dropped_total counter
    scout_firewall_rules_dropped_total 0.0
    # HELP scout_firewall_chain_policy_info A base chain's default policy; always 1.
    # TYPE scout_firewall_chain_policy_info gauge
    scout_firewall_chain_policy_info{chain="in",hook="input",policy="drop",table="inet f"} 1.0
    # HELP scout_firewall_interface_up 1 if the interface is up.
    # TYPE scout_firewall_interface_up gauge
    scout_firewall_interface_up{interface="wan1"} 1.0
    # HELP scout_firewall_interface_receive_bytes_total Bytes received on the interface.
    # TYPE scout_firewall_interface_receive_bytes_total counter
    scout_firewall_interface_receive_bytes_total{interface="wan1"} 7.7e+10
    # HELP scout_firewall_interface_transmit_bytes_total Bytes sent on the interface.
    # TYPE scout_firewall_interface_transmit_bytes_total counter
    scout_firewall_interface_transmit_bytes_total{interface="wan1"} 1.2e+10
    # HELP scout_firewall_gateway_up 1 if the firewall considers the gateway up.
    # TYPE scout_firewall_gateway_up gauge
    scout_firewall_gateway_up{gateway="WAN_DHCP",interface="wan1"} 1.0
    # HELP scout_firewall_gateway_rtt_seconds Gateway round trip, as the firewall measures it.
    # TYPE scout_firewall_gateway_rtt_seconds gauge
    scout_firewall_gateway_rtt_seconds{gateway="WAN_DHCP",interface="wan1"} 0.0042
    # HELP scout_firewall_gateway_loss_ratio Share of the firewall's gateway probes lost.
    # TYPE scout_firewall_gateway_loss_ratio gauge
    scout_firewall_gateway_loss_ratio{gateway="WAN_DHCP",interface="wan1"} 0.0
    # HELP scout_firewall_vpn_tunnel_up 1 if the VPN tunnel is up.
    # TYPE scout_firewall_vpn_tunnel_up gauge
    scout_firewall_vpn_tunnel_up{remote="192.0.2.7",tunnel="b1",type="ipsec"} 3e9
    # HELP scout_firewall_vpn_tunnel_receive_bytes_total Bytes received through the tunnel.
    # TYPE scout_firewall_vpn_tunnel_receive_bytes_total counter
    scout_firewall_vpn_tunnel_receive_bytes_total{remote="192.0.2.7",tunnel="b1",type="ipsec"} 3e9
    # HELP scout_firewall_vpn_tunnel_transmit_bytes_total Bytes sent through the tunnel.
    # TYPE scout_firewall_vpn_tunnel_transmit_bytes_total counter
    scout_firewall_vpn_tunnel_transmit_bytes_total{remote="192.0.2.7",tunnel="b1",type="ipsec"} 3e9
    # HELP scout_firewall_ha_info The firewall's high-availability mode and role; always 1.
    # TYPE scout_firewall_ha_info gauge
    scout_firewall_ha_info{mode="a-p",role="primary"} 1.0
    # HELP scout_firewall_ha_primary 1 if this unit is the HA primary (master, active), 0 if not.
    # TYPE scout_firewall_ha_primary gauge
    scout_firewall_ha_primary 1.0
    # HELP scout_firewall_ha_in_sync 1 if the HA peers' configuration and sessions are in sync.
    # TYPE scout_firewall_ha_in_sync gauge
    scout_firewall_ha_in_sync 1.0
    # HELP scout_firewall_ha_members HA cluster members the unit sees, itself included.
    # TYPE scout_firewall_ha_members gauge
    scout_firewall_ha_members 2.0
    # HELP scout_firewall_conntrack_events_total Connection-tracking events by kind (netfilter).
    # TYPE scout_firewall_conntrack_events_total counter
    scout_firewall_conntrack_events_total{event="drop"} 0.0

A family is left out when the source does not report it (``None`` in the
snapshot): a missing series says "not known", never a made-up zero. Label
names are fixed per family, and a label the source cannot fill is empty. A
label set the source lists twice gives one series, the first (a FortiGate
policy listed twice is also counted in ``rules_dropped``). ``ha_info`` needs
the HA mode: without it (an API user who may not read it) it is left out,
while ``ha_primary`` and the others stay where other answers tell them.
``scout_firewall_up`` and ``scout_firewall_info`` are always there for a
scrape that reached the firewall.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

PREFIX = "scout_firewall_"

MetricType = Literal["gauge", "counter"]


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """One family of the schema: its name (without ``_total``), type, help and labels."""

    name: str
    type: MetricType
    documentation: str
    labels: tuple[str, ...] = ()

    @property
    def sample_name(self) -> str:
        """The name samples carry: counters end in ``_total``."""
        return f"{self.name}_total" if self.type == "counter" else self.name


RULE_LABELS = ("table", "chain", "rule_id", "rule", "action")
GATEWAY_LABELS = ("gateway", "interface")
TUNNEL_LABELS = ("tunnel", "type", "remote")


def _spec(name: str, type_: MetricType, documentation: str, *labels: str) -> FamilySpec:
    return FamilySpec(PREFIX + name, type_, documentation, labels)


# The whole schema, in exposition order. Counters are named without ``_total``.
SCHEMA: tuple[FamilySpec, ...] = (
    _spec("up", "gauge", "1 if the firewall answered the scrape."),
    _spec(
        "info",
        "gauge",
        "The firewall's vendor, model and firmware; always 1.",
        "vendor",
        "model",
        "firmware",
        "hostname",
    ),
    _spec("sessions", "gauge", "Sessions (connections tracked) in use."),
    _spec("sessions_limit", "gauge", "Most sessions the firewall can track."),
    _spec("sessions_created", "counter", "Sessions created."),
    _spec("session_setup_rate", "gauge", "New sessions per second, as the firewall measures it."),
    _spec("cpu_ratio", "gauge", "Share of the firewall's CPU in use."),
    _spec("memory_ratio", "gauge", "Share of the firewall's memory in use."),
    _spec("rule_packets", "counter", "Packets that matched the rule.", *RULE_LABELS),
    _spec("rule_bytes", "counter", "Bytes that matched the rule.", *RULE_LABELS),
    _spec(
        "rule_hits",
        "counter",
        "Times the rule matched (vendors that count hits).",
        *RULE_LABELS,
    ),
    _spec("rules_dropped", "counter", "Rule series left out by the series budget."),
    _spec(
        "chain_policy_info",
        "gauge",
        "A base chain's default policy; always 1.",
        "table",
        "chain",
        "hook",
        "policy",
    ),
    _spec("interface_up", "gauge", "1 if the interface is up.", "interface"),
    _spec("interface_receive_bytes", "counter", "Bytes received on the interface.", "interface"),
    _spec("interface_transmit_bytes", "counter", "Bytes sent on the interface.", "interface"),
    _spec("gateway_up", "gauge", "1 if the firewall considers the gateway up.", *GATEWAY_LABELS),
    _spec(
        "gateway_rtt_seconds",
        "gauge",
        "Gateway round trip, as the firewall measures it.",
        *GATEWAY_LABELS,
    ),
    _spec(
        "gateway_loss_ratio",
        "gauge",
        "Share of the firewall's gateway probes lost.",
        *GATEWAY_LABELS,
    ),
    _spec("vpn_tunnel_up", "gauge", "1 if the VPN tunnel is up.", *TUNNEL_LABELS),
    _spec(
        "vpn_tunnel_receive_bytes",
        "counter",
        "Bytes received through the tunnel.",
        *TUNNEL_LABELS,
    ),
    _spec("vpn_tunnel_transmit_bytes", "counter", "Bytes sent through the tunnel.", *TUNNEL_LABELS),
    _spec(
        "ha_info",
        "gauge",
        "The firewall's high-availability mode and role; always 1.",
        "mode",
        "role",
    ),
    _spec(
        "ha_primary",
        "gauge",
        "1 if this unit is the HA primary (master, active), 0 if not.",
    ),
    _spec(
        "ha_in_sync",
        "gauge",
        "1 if the HA peers' configuration and sessions are in sync.",
    ),
    _spec("ha_members", "gauge", "HA cluster members the unit sees, itself included."),
    _spec(
        "conntrack_events",
        "counter",
        "Connection-tracking events by kind (netfilter).",
        "event",
    ),
)
SPECS: Mapping[str, FamilySpec] = {spec.name: spec for spec in SCHEMA}


@dataclass(frozen=True, slots=True)
class RuleCounters:
    """One rule (policy) and what matched it; ``None`` where the vendor does not count it.

    ``table`` and ``chain`` are netfilter's (``"inet filter"``, ``"forward"``);
    FortiGate, which counts each policy per IP version, has the version as
    ``table`` (``"ipv4"``, ``"ipv6"``) and no chain; both are empty for vendors
    with a flat policy list. ``rule`` is the rule's name or
    comment, empty if it has none; ``rule_id`` is the vendor's id or netfilter's
    handle. ``named`` marks rules worth a series by default: a named counter, or
    a rule with a name or comment (see ``RuleBudget``).
    """

    rule_id: str
    rule: str = ""
    table: str = ""
    chain: str = ""
    action: str = ""
    packets: float | None = None
    bytes: float | None = None
    hits: float | None = None
    named: bool = False


@dataclass(frozen=True, slots=True)
class ChainPolicy:
    table: str
    chain: str
    hook: str
    policy: str


@dataclass(frozen=True, slots=True)
class InterfaceState:
    interface: str
    up: bool | None = None
    receive_bytes: float | None = None
    transmit_bytes: float | None = None


@dataclass(frozen=True, slots=True)
class GatewayState:
    gateway: str
    interface: str = ""
    up: bool | None = None
    rtt_seconds: float | None = None
    loss_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class TunnelState:
    tunnel: str
    type: str = ""  # ipsec, ssl, openvpn, wireguard
    remote: str = ""
    up: bool | None = None
    receive_bytes: float | None = None
    transmit_bytes: float | None = None


@dataclass(frozen=True, slots=True)
class HaState:
    mode: str = ""  # standalone, a-p, a-a, carp; "" not known: no ha_info
    role: str = ""  # primary, secondary, standalone
    in_sync: bool | None = None
    members: int | None = None

    @property
    def primary(self) -> bool | None:
        return None if not self.role else self.role == "primary"


@dataclass(slots=True)
class FirewallSnapshot:
    """What one read of a firewall found, in the schema's terms; ``None`` is "not reported"."""

    vendor: str
    model: str = ""
    firmware: str = ""
    hostname: str = ""
    sessions: float | None = None
    sessions_limit: float | None = None
    sessions_created: float | None = None
    session_setup_rate: float | None = None
    cpu_ratio: float | None = None
    memory_ratio: float | None = None
    rules: list[RuleCounters] = field(default_factory=list)
    rules_dropped: float | None = None
    chain_policies: list[ChainPolicy] = field(default_factory=list)
    interfaces: list[InterfaceState] = field(default_factory=list)
    gateways: list[GatewayState] = field(default_factory=list)
    tunnels: list[TunnelState] = field(default_factory=list)
    ha: HaState | None = None
    conntrack_events: dict[str, float] = field(default_factory=dict)


class _Families:
    """Families built on first use, so a family nobody filled is left out.

    One sample per label set: a source that lists a name twice (two interfaces
    with one description) keeps the first, since Prometheus would refuse the
    second sample of a series in one scrape.
    """

    def __init__(self) -> None:
        self._built: dict[str, Metric] = {}
        self._seen: set[tuple[str, tuple[str, ...]]] = set()

    def add(self, short_name: str, labels: Sequence[str], value: float | bool | None) -> None:
        if value is None:
            return
        series = (short_name, tuple(labels))
        if series in self._seen:
            return
        self._seen.add(series)
        spec = SPECS[PREFIX + short_name]
        family = self._built.get(spec.name)
        if family is None:
            cls = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
            family = cls(spec.name, spec.documentation, labels=spec.labels)
            self._built[spec.name] = family
        assert isinstance(family, CounterMetricFamily | GaugeMetricFamily)
        family.add_metric(list(labels), float(value))

    def in_schema_order(self) -> Iterator[Metric]:
        for spec in SCHEMA:
            if spec.name in self._built:
                yield self._built[spec.name]


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


def render(snapshot: FirewallSnapshot, *, up: bool = True) -> list[Metric]:
    """The schema's families for ``snapshot``, in ``SCHEMA`` order."""
    out = _Families()
    out.add("up", (), 1.0 if up else 0.0)
    info = (snapshot.vendor, snapshot.model, snapshot.firmware, snapshot.hostname)
    out.add("info", info, 1.0)
    for name in (
        "sessions",
        "sessions_limit",
        "sessions_created",
        "session_setup_rate",
        "cpu_ratio",
        "memory_ratio",
        "rules_dropped",
    ):
        out.add(name, (), getattr(snapshot, name))
    for rule in snapshot.rules:
        labels = (rule.table, rule.chain, rule.rule_id, rule.rule, rule.action)
        out.add("rule_packets", labels, rule.packets)
        out.add("rule_bytes", labels, rule.bytes)
        out.add("rule_hits", labels, rule.hits)
    for chain in snapshot.chain_policies:
        out.add("chain_policy_info", (chain.table, chain.chain, chain.hook, chain.policy), 1.0)
    for interface in snapshot.interfaces:
        interface_labels = (interface.interface,)
        out.add("interface_up", interface_labels, _flag(interface.up))
        out.add("interface_receive_bytes", interface_labels, interface.receive_bytes)
        out.add("interface_transmit_bytes", interface_labels, interface.transmit_bytes)
    for gateway in snapshot.gateways:
        gateway_labels = (gateway.gateway, gateway.interface)
        out.add("gateway_up", gateway_labels, _flag(gateway.up))
        out.add("gateway_rtt_seconds", gateway_labels, gateway.rtt_seconds)
        out.add("gateway_loss_ratio", gateway_labels, gateway.loss_ratio)
    for tunnel in snapshot.tunnels:
        tunnel_labels = (tunnel.tunnel, tunnel.type, tunnel.remote)
        out.add("vpn_tunnel_up", tunnel_labels, _flag(tunnel.up))
        out.add("vpn_tunnel_receive_bytes", tunnel_labels, tunnel.receive_bytes)
        out.add("vpn_tunnel_transmit_bytes", tunnel_labels, tunnel.transmit_bytes)
    if snapshot.ha is not None:
        ha = snapshot.ha
        if ha.mode:  # a mode not known is no HA state to name; the rest may still be known
            out.add("ha_info", (ha.mode, ha.role), 1.0)
        out.add("ha_primary", (), _flag(ha.primary))
        out.add("ha_in_sync", (), _flag(ha.in_sync))
        out.add("ha_members", (), ha.members)
    for event, count in sorted(snapshot.conntrack_events.items()):
        out.add("conntrack_events", (event,), count)
    return list(out.in_schema_order())


def failed() -> list[Metric]:
    """The families of a scrape that did not reach the firewall: ``scout_firewall_up 0``."""
    out = _Families()
    out.add("up", (), 0.0)
    return list(out.in_schema_order())


@dataclass(frozen=True, slots=True)
class RuleBudget:
    """Which rules get series: named ones by default, all on opt-in, at most ``max_series``.

    ``apply`` keeps rules in the order given (a source lists them in rule order,
    so the first rules of the policy win) and returns the kept rules and the
    number left out; the source adds that number to its ``rules_dropped``
    counter, which it keeps between scrapes.
    """

    all_rules: bool = False
    max_series: int = 500

    def apply(self, rules: Sequence[RuleCounters]) -> tuple[list[RuleCounters], int]:
        wanted = [rule for rule in rules if self.all_rules or rule.named]
        kept = wanted[: self.max_series]
        return kept, len(wanted) - len(kept)
