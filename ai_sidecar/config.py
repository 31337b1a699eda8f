"""The sidecar's config file: how to correlate, rank, explain and return incidents.

Layout (every section and key is optional; ``{}`` is a valid file)::

    language: en        # en | fr (or any language with catalogues in ai_sidecar/i18n/locales):
                        # what people read: analyses, notifications, console, reports
    correlation:        # alerts -> incidents (ai_sidecar.correlation, docs/correlation.md)
      preset: network   # network | firewall | windows: group keys and layer rules
      group_by: [[site], [device], [instance]]   # replaces the preset's group keys
      window: 5m        # joins: startsAt within the incident's span widened by this
      max_span: 1h      # an incident's startsAt span never grows past this
      flap_window: 15m  # a re-fire this soon after resolving is a flap, not a new incident
      resolve: all_members   # or root_cause
      layers:           # checked before the preset's own rules
        - {match: {alertname: "Wan.*Loss"}, layer: link}
      causal_window: 15m  # a cause pulls in effects this long after it (and before it)
      key_fallback: unknown  # group-key joins only for alerts the graph knows nothing of
      dependencies:     # edges nothing discovers: `from` depends on `to` (label values)
        - {from: {instance: "https://crm.example/"}, to: {instance: fw1}, why: SaaS via fw}
      topology:         # the discovered graph, read from Prometheus
        refresh: 5m
        roots: [core-1] # where the cabling is oriented from (default: the pollers' hosts)
        pollers:
          - {job: scout-exporter, polls: "snmp|probe_.*|firewall|winrm|windows"}
    priority:
      criticality:      # first match wins per alert
        - {match: {site: "hq|dc1"}, level: critical}
    runbooks:           # first match wins per alert family
        - {match: {alertname: InterfaceDown}, actions: ["Check the optic"], url: https://...}
    analysis:           # Prometheus context for the analyst
      context_timeout: 2s
      context_range: 15m
      context_step: 1m
    return_trip:        # enriched alerts posted back to Alertmanager
      keepalive: 5m
      repost_interval: 1m
      resolved_repeat_for: 5m
      resolved_repeat_interval: 1m
      retry_backoff_max: 1m
      grafana_url: https://grafana.example.net
      external_url: https://scout.example.net
    store:              # the sidecar's data directory
      retention: 30d    # alerts and resolved incidents older than this are pruned
    anomaly:            # models trained on PromQL history (docs/anomaly.md, "Pipeline")
      enabled: false    # true, with SCOUT_PROMETHEUS_URL set, starts scoring
      score_interval: 1m
      query_delay: 30s  # the newest points asked for are this old
      query_timeout: 30s  # time box of each history request
      retries: 3        # of a request Prometheus could not answer
      concurrency: 2    # history requests in flight at once
      series_grace: 1h  # a series without points this long is dropped
      keep_versions: 5  # trained models kept per signal
      retrain: {at: "03:00", drift_threshold: 0.25, min_interval: 1h}   # or every: 12h
      signals:          # replaces the shipped ones (ai_sidecar.anomaly.signals)
        - name: wan_throughput
          query: instance:wan_in_bits:rate5m
          step: 1m
          history: 14d
          transform: log1p   # none | log1p
          seasonality: auto  # auto | daily | weekly | none
          min_deviation: 1000000
          min_level: 0
          max_series: 2000
          keep_labels: [job, instance]

    llm:                # LLM analysts (docs/llm.md); the local analyst always speaks first
      enabled: true     # the kill switch: false stops every LLM call (applied on reload)
      provider: none    # none | gemini | anthropic | openai (OpenAI-compatible: Ollama, vLLM)
      model: gemini-2.5-flash
      allowed_models: []  # models the sidecar may call; empty: only `model`
      base_url: null    # the vendor's API by default; Ollama: http://127.0.0.1:11434/v1
      api_key_env: ""   # default GEMINI_API_KEY, ANTHROPIC_API_KEY or OPENAI_API_KEY;
                        # <NAME>_FILE names a file holding the key instead
      timeout: 20s      # hard time box of one call, retries included
      max_output_tokens: 1024   # the answer's; Gemini's thinking gets as many again
      max_prompt_chars: 24000   # the whole prompt; each label or annotation is capped too
      retries: 2        # on 429 and 5xx, with backoff and jitter, honouring Retry-After
      price: {input_per_million: 0.30, output_per_million: 2.50}   # US dollars, estimated
      redact: true      # pseudonymise before the call; false only for a local provider
      redact_patterns: []   # extra regexes whose matches are pseudonymised too
      policy:
        min_priority: P2      # new incidents at this priority or above are explained
        anomaly_score: 0.9    # or with anomaly evidence at least this strong
        cache_ttl: 24h        # an incident shaped like one explained this recently reuses it
        reanalysis_interval: 2m   # a new root cause is re-asked no sooner than this
        max_calls: 4          # LLM calls per incident at most
      budget:
        requests_per_day: 200
        requests_per_minute: 8
        tokens_per_minute: 200000
        cost_per_month: 0     # US dollars; 0: no cost cap (free tier)
      circuit: {failures: 5, reset: 5m}
      audit_retention: 30d    # LLM exchanges kept in the store this long
    notifications:      # what people read in Slack and email (docs/notifications.md)
      timezone: UTC     # IANA name (Europe/Paris): times are shown in it, to the second
    graphs:             # a PNG of the root cause's series in every notification
      enabled: true
      range: 6h
      url_ttl: 7d       # signed URLs expire after this
      key_file: null    # HMAC key; default: graph.key in the data directory
    console:            # the web console's login and pages (docs/console.md)
      session_lifetime: 12h   # a session ends this long after sign-in
      idle_timeout: 1h        # or after this long without a request
      secure_cookies: false   # true behind a TLS-terminating proxy (HTTPS sets it anyway)
      users_file: null        # YAML list of {name, role, password_hash}; wins over stored users
      login_limit:            # failed sign-ins within window lock for lockout
        max_failures: 5       # per user name typed (known or not)
        max_failures_per_address: 20   # per client address
        window: 15m
        lockout: 15m
      trusted_proxies: []     # reverse proxies whose X-Forwarded-For gives the client address
    reports:            # reports and the scheduled e-mail digest (docs/reports.md)
      top: 10           # rows of each "top" table
      query_timeout: 10s  # time box of each Prometheus query of a report
      digest:
        enabled: false
        period: week    # day | week | month, ending at the scheduled time
        schedule: {weekday: monday, at: "08:00"}   # in notifications.timezone; weekday null: daily
        recipients: [noc@example.net]
        smtp:
          host: smtp.example.net
          port: 587
          security: starttls   # starttls | tls (port 465) | none (local relay only)
          username: scout
          password_file: /run/secrets/smtp_password   # read at each send
          from: scout@example.net
          timeout: 30s
        retry: {first: 1m, max: 30m, attempts: 8}

Durations are written as in Prometheus (``30s``, ``5m``, ``1h30m``, ``500ms``).
Label matchers are regexes anchored at both ends, as in PromQL; a label the
alert lacks matches as the empty string, so ``{team: ""}`` selects alerts
without a team. The file is loaded by the exporter's strict loader, so an
unknown or duplicate key, a bad regex or a bad duration is an error naming the
file and the line.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from ai_sidecar.anomaly.shards import Share
from ai_sidecar.anomaly.signals import (
    DEFAULT_SIGNALS,
    RESERVED_LABELS,
    SIGNAL_NAME,
    raw_counter_in,
)
from ai_sidecar.errors import ConfigError
from ai_sidecar.i18n import SOURCE_LANGUAGE, available_languages, catalogue_language
from exporter.common.durations import (
    Duration,
    DurationOrZero,
    format_duration,
)
from exporter.common.models import Regex, StrictModel, drop_extension_keys
from exporter.common.yamlconfig import load_model, parse_model

Layer = Literal["device", "link", "network", "host", "service"]
# Lowest first: a fault low in the stack explains the faults above it.
LAYERS: tuple[Layer, ...] = ("device", "link", "network", "host", "service")
Level = Literal["critical", "high", "normal", "low"]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _label_name(value: str) -> str:
    if not _LABEL_NAME.fullmatch(value):
        raise ValueError(f"invalid label name {value!r}")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    # Before the scheme: a mistyped one must not have the password repeated in
    # the error (the log, the 400 answer of POST /-/reload).
    authority = parts.netloc or value.partition("/")[0]
    if "@" in authority:
        # It ends up in links posted to Slack and email.
        raise ValueError("should not carry a user:password part")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"should be an http:// or https:// URL, got {value!r}")
    return value


LabelName = Annotated[str, AfterValidator(_label_name)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Matchers = dict[LabelName, Regex]


def labels_match(match: Mapping[str, re.Pattern[str]], labels: Mapping[str, str]) -> bool:
    """PromQL ``=~`` semantics: anchored, and a missing label is the empty string."""
    return all(regex.fullmatch(labels.get(name, "")) for name, regex in match.items())


# -- correlation ---------------------------------------------------------------


class LayerRule(StrictModel):
    """Alerts matching ``match`` sit at ``layer`` (used to rank root causes)."""

    match: Matchers
    layer: Layer


@dataclass(frozen=True, slots=True)
class Preset:
    """Built-in group keys and layer rules for one kind of estate.

    ``layers`` pairs an alertname regex (anchored, case-insensitive) with its
    layer; the first matching rule wins and anything unmatched is ``service``.
    """

    group_by: tuple[tuple[str, ...], ...]
    layers: tuple[tuple[str, Layer], ...]


# Vendors whose names community rule sets put in front of a port's alert
# ("CiscoInterfaceDown", "UnifiPortDown") or, in the firewall preset, of an HA,
# tunnel or gateway alert ("PfsenseCarpStatusChange").
_PORT_VENDORS = (
    "Cisco|Juniper|Junos|Arista|Mikrotik|Aruba|Unifi|Ubiquiti|Huawei|Fortigate|Fortinet"
    "|Paloalto|Pfsense|Opnsense|Meraki|Extreme|Brocade|Dell|Hpe|Netgear|Zyxel"
)
_FIREWALL_VENDORS = "Firewall|Fortigate|Fortinet|Pfsense|Opnsense"

# Shared by every preset, after the preset's own rules; the first match wins,
# so each layer's rules come before the next layer's, but for the first, which
# keeps Prometheus's alerts about itself out of all the others. Host rules come
# before network ones so that e.g. "DiskErrors" is a host problem, not a
# network one.
# Users bring rule sets of their own (community collections, exporter mixins)
# whose alerts carry no `layer` label, so names are read as those sets write
# them: a box, its agent or its ping that stops answering, a port whose oper
# status is down, a check of a service that fails.
_COMMON_LAYERS: tuple[tuple[str, Layer], ...] = (
    # Prometheus's and Alertmanager's own health is the monitoring's, not the
    # monitored estate's: "PrometheusServerDown" is no box gone, nor are its
    # "ErrorSendingAlerts" or "SamplesDropped" the network's. A target it
    # scrapes ("PrometheusTargetMissing") is another matter.
    (r"(Prometheus(?!Target)|Alertmanager).*", "service"),
    (
        # Only these subjects: a "ServiceDown" or "WebsiteDown" is no device.
        r"((Snmp|Network|Windows|Winrm|Probe|Scrape|Kube|Node)?"
        r"(Target|Device|Agent|Host|Node|Instance|Switch|Router|Server|Firewall|Exporter"
        r"|Fortigate|Pfsense|Opnsense|Netfilter)"
        r"|PrometheusTarget|(Fortigate|Pfsense|Opnsense|Firewall)Api|Snmp|Winrm|Windows)"
        r"(Down|Unreachable|NotReachable|Unavailable|Rebooted|NotResponding|NoResponse"
        r"|Offline|Missing|Timeout|Failed|NotReady)(WithWarmupTime)?",
        "device",
    ),
    # A ping either answers or not: one that fails is the box gone, whoever
    # pings it (a monitoring agent's "AgentPingFailed" too).
    (
        r"(Blackbox|Agent|Host|Node|Device|Target|Instance|Server|Switch|Router|Firewall)?"
        r"(Ping|Icmp)(Probe|Check)?(Down|Unreachable|Failed|Failure|Timeout|Lost)",
        "device",
    ),
    (r"No(Ping|Icmp|Snmp)(Response|Reply)", "device"),
    (
        # A port's oper status, however the exporter, mixin or vendor spells
        # the port; not a host's TCP port ("HostPortDown"), which is a check.
        rf"(?!(Host|Node)(Tcp)?Port(Down|Closed|Unreachable)$)({_PORT_VENDORS})?"
        r"(Snmp|Host|Node|Network|Switch|Router|Device|Ethernet|Trunk)*"
        r"(Interface|If|Link|Port|Uplink|Wan|WanLink|Trunk|Lag|Bond|Bonding|PortChannel|Tunnel"
        r"|IpsecTunnel|VpnTunnel|Vpn|BgpSession|BgpPeer|OspfNeighbor)"
        r"(Oper|OperStatus|OperationalStatus)?(Down|Flapping)",
        "link",
    ),
    (
        # Oom, Ntp and Fan as written only: case-blind, they are inside
        # "TooMany", "EndpointProbe" and "Grafana".
        r".*(Cpu|Memory|OutOfMemory|(?-i:Oom|OOM|oom)|Swap|Disk|Filesystem|Inode|LoadAverage"
        r"|HighLoad|(?-i:Ntp|NTP|ntp)|Clock|Temperature|TooHot|(?-i:Fan|FAN)|Psu"
        r"|PowerSupply|Edac|(?-i:Ecc|ECC)|Raid|Smart|Nvme|(?-i:Io|IO)Err|Conntrack|SessionTable"
        r"|StateTable).*",
        "host",
    ),
    (
        r".*(PacketLoss|Loss|Latency|Jitter|Rtt|Saturated|Saturation|Utili[sz]ation|Bandwidth"
        r"|Discards?|Drops?|Congestion|TrafficHigh|HighTraffic"
        r"|ProbeSlow|Slow(Probe|Ping|Http|Response)).*",
        "network",
    ),
    (
        # Errors and throughput are a port's only when the name names a port's
        # word as a word of its own, however the name is cased ("IfInErrors",
        # "node_network_errors", "VXLANEncapErrors"): it begins the name,
        # follows a non-letter or a lowercase letter before its capital, and
        # no lowercase letter follows it. "HttpErrors", "KafkaThroughputLow",
        # "TransportErrors" or Linkerd's "HighErrorRate" are the application's.
        # Atomic: only the first such word is tried, so a long hostile name
        # costs linear time, not quadratic.
        r"(?>.*?(?-i:(?<![A-Za-z])|(?<=[a-z])(?=[A-Z]))"
        r"(Interface|If|Network|Port|Uplink|Link|Wan|Ethernet|Nic|Crc|Fcs|Vxlan|Packet)"
        r"(?-i:(?![a-z]))).*(Errors?|Errs?|Throughput).*",
        "network",
    ),
    (
        # A bond or LAG that lost members still forwards, on less capacity.
        r"(Snmp|Host|Node|Network|Switch|Router|Device)*"
        r"(Bond|Bonding|Lag|Lacp|PortChannel|EtherChannel|Trunk|Team)"
        r"((Member|Slave|Port|Link|Interface)s?(Down|Failed|Missing|Inactive|Lost)|Degraded)",
        "network",
    ),
    # A check of a service that fails got an answer, a wrong one; one that got
    # none is the device's when its name says so (above).
    # Not a container's liveness, readiness or startup probe: that is the service's.
    # Atomic, as above: a "Fail" after any "Probe" is one after the first.
    (r"(?!.*(Liveness|Readiness|Startup)Probe)(?>.*?Probe).*Fail.*", "network"),
    (
        # Not a health check, but a blackbox one: that is the service's own
        # verdict on itself (its health status, its scrape).
        r"(Blackbox(Health)?)?(Http|Https|Tcp|Dns|Tls|Ssl|Url|Website|Endpoint|Service)?"
        r"Check(Down|Failed|Failure|Unreachable)",
        "network",
    ),
    (r"(Blackbox)?(Http|Https|Tcp|Dns|Tls|Ssl|Url|Website|Endpoint)(Failed|Failure)", "network"),
    # A TCP connect to a port of a host (blackbox tcp_connect, telegraf
    # net_response) that fails, as "TcpProbeFailed" would.
    (r"((Host|Node)(Tcp)?|Tcp)Port(Down|Closed|Unreachable)", "network"),
    # What only a probe sees go down. A bare "HttpDown" stays a service: it
    # may as well be the server process that stopped.
    (r"(Blackbox)?(Url|Website|Endpoint|Probe)(Down|Unreachable)", "network"),
)

PRESETS: Mapping[str, Preset] = {
    # Switches, routers and links: a site's storm is one incident; without a
    # site, one per device, then per scrape target.
    "network": Preset(
        group_by=(("site",), ("device",), ("instance",)),
        layers=_COMMON_LAYERS,
    ),
    # Firewalls: HA fail-overs, lost HA sync, tunnels and gateways are links;
    # state-table exhaustion is the box itself running out, a host problem.
    # The shipped rules (prometheus/rules/firewall.rules.yml) prefix their
    # names with "Firewall", community ones with the vendor's.
    "firewall": Preset(
        group_by=(("site",), ("firewall",), ("instance",)),
        layers=(
            (r"(Fortigate|Pfsense|Opnsense|Netfilter)(Down|Unreachable|Rebooted)", "device"),
            (
                rf"({_FIREWALL_VENDORS})?(Ha|Carp|Vrrp|Cluster)"
                r"(Failover|StateChange|StatusChange|SplitBrain|SyncLost|OutOfSync)",
                "link",
            ),
            (rf"({_FIREWALL_VENDORS})?(Ipsec|Vpn|Gre|Wireguard)(Tunnel)?(Down|Flapping)", "link"),
            # A gateway, and as FortiGate names the same: a link monitor, an SD-WAN member.
            (
                rf"({_FIREWALL_VENDORS})?(Gateway|LinkMonitor|Sdwan(Member|Link)?)"
                r"(Down|Flapping|Offline|Unreachable|Dead)",
                "link",
            ),
            (r".*(Conntrack|SessionTable|StateTable).*", "host"),
            # The flow collector's own socket dropping datagrams
            # (FlowDatagramsDropped) is Scout's service losing data, not the
            # network dropping packets, as the common rules would read "Drop";
            # so is flow export loss (FlowExportLoss): whatever lost it, the
            # alert is about the flow data being incomplete, an effect.
            (r"Flow.*(Drop(s|ped)?|Loss)", "service"),
            *_COMMON_LAYERS,
        ),
    ),
    # Windows servers: a WinRM target that stops answering is the device; the
    # Windows services on it (IIS, SQL, AD) are services even when "down".
    "windows": Preset(
        group_by=(("site",), ("host",), ("instance",)),
        layers=(
            (r"Windows(Host|Server)?(Down|Unreachable|Rebooted)|Winrm(Target)?Down", "device"),
            (r"Windows(Service|Iis|Sql|Ad|Dns|Dhcp|Exchange).*", "service"),
            (r"Windows.*(Cpu|Memory|Disk|Pagefile|LogicalDisk).*", "host"),
            *_COMMON_LAYERS,
        ),
    ),
}


def _group_by(value: list[list[str]] | None) -> list[list[str]] | None:
    if value is None:
        return None
    if not value:
        raise ValueError("should list at least one set of labels")
    for index, names in enumerate(value):
        if not names:
            raise ValueError(f"entry {index} names no label")
        if len(set(names)) != len(names):
            raise ValueError(f"entry {index} repeats a label")
    return value


class DependencyEndpoint(StrictModel):
    """One end of an explicit dependency: a target (``job``, ``instance``), or its interface."""

    instance: str = Field(min_length=1)
    job: str = ""
    ifName: str = ""

    def labels(self) -> dict[str, str]:
        found = {"instance": self.instance, "job": self.job, "ifName": self.ifName}
        return {name: value for name, value in found.items() if value}


class DependencyRule(StrictModel):
    """``from`` depends on ``to``: a failure of ``to`` explains ``from``'s alerts."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, hide_input_in_errors=True, populate_by_name=True
    )

    source: DependencyEndpoint = Field(alias="from")
    target: DependencyEndpoint = Field(alias="to")
    why: str = ""


class PollerRule(StrictModel):
    """Targets of jobs matching ``polls`` are reached through the instances of ``job``."""

    job: str = Field(min_length=1)
    polls: Regex


def _default_pollers() -> list[PollerRule]:
    return [
        PollerRule(job="scout-exporter", polls=re.compile("snmp|probe_.*|firewall|winrm|windows"))
    ]


class TopologyConfig(StrictModel):
    """Reading the discovered graph (LLDP/CDP neighbours, targets, pollers) from Prometheus."""

    enabled: bool = True
    refresh: Duration = timedelta(minutes=5)
    query_timeout: Duration = timedelta(seconds=10)
    roots: list[str] = Field(default_factory=list)
    pollers: list[PollerRule] = Field(default_factory=_default_pollers)
    neighbour_metric: LabelName = "scout_lldp_neighbor_info"


class CoFiringConfig(StrictModel):
    """Learning co-firing edges from the stored incidents (ai_sidecar.correlate.cofiring)."""

    enabled: bool = True
    window: Duration = timedelta(minutes=15)
    min_together: Annotated[int, Field(ge=2)] = 3
    min_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    history: Duration = timedelta(days=30)
    max_incidents: Annotated[int, Field(ge=1)] = 20_000
    relearn: Duration = timedelta(hours=1)


class CorrelationConfig(StrictModel):
    """How alerts become incidents; see docs/correlation.md for the rules."""

    preset: Literal["network", "firewall", "windows"] = "network"
    group_by: Annotated[list[list[LabelName]] | None, AfterValidator(_group_by)] = None
    window: Duration = timedelta(minutes=5)
    max_span: Duration = timedelta(hours=1)
    flap_window: Duration = timedelta(minutes=15)
    resolve: Literal["all_members", "root_cause"] = "all_members"
    layers: list[LayerRule] = Field(default_factory=list)
    causal_window: Duration = timedelta(minutes=15)
    key_fallback: Literal["unknown", "always", "never"] = "unknown"
    dependencies: list[DependencyRule] = Field(default_factory=list)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    cofiring: CoFiringConfig = Field(default_factory=CoFiringConfig)

    def group_keys(self) -> tuple[tuple[str, ...], ...]:
        """The label sets tried in order; ``group_by`` replaces the preset's."""
        if self.group_by is not None:
            return tuple(tuple(names) for names in self.group_by)
        return PRESETS[self.preset].group_by

    def layer_rules(self) -> tuple[tuple[Mapping[str, re.Pattern[str]], Layer], ...]:
        """Configured rules first, then the preset's (alertname, case-insensitive)."""
        configured = tuple((rule.match, rule.layer) for rule in self.layers)
        built_in = tuple(
            ({"alertname": re.compile(pattern, re.IGNORECASE)}, layer)
            for pattern, layer in PRESETS[self.preset].layers
        )
        return configured + built_in


# -- priority, runbooks, analysis ----------------------------------------------


class CriticalityRule(StrictModel):
    match: Matchers
    level: Level


class PriorityConfig(StrictModel):
    """Business criticality by label; the point table lives in ai_sidecar.priority."""

    criticality: list[CriticalityRule] = Field(default_factory=list)

    def level_of(self, labels: Mapping[str, str]) -> Level:
        """The first matching rule's level; ``normal`` when none matches."""
        for rule in self.criticality:
            if labels_match(rule.match, labels):
                return rule.level
        return "normal"


def _actions(value: list[str]) -> list[str]:
    for index, action in enumerate(value):
        if not action.strip():
            raise ValueError(f"action {index} is empty")
    return value


class RunbookRule(StrictModel):
    """First steps for the alerts ``match`` selects, and where the full runbook is."""

    match: Matchers
    actions: Annotated[list[str], AfterValidator(_actions)] = Field(default_factory=list)
    url: HttpUrl | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if not self.actions and self.url is None:
            raise ValueError("needs actions or a url")
        return self


# Prometheus refuses range queries with more points than this per series.
MAX_RANGE_POINTS = 11_000


class AnalysisConfig(StrictModel):
    """What the analyst asks Prometheus about each member's expression."""

    context_timeout: Duration = timedelta(seconds=2)
    context_range: Duration = timedelta(minutes=15)
    context_step: Duration = timedelta(minutes=1)

    @model_validator(mode="after")
    def _step_fits_range(self) -> Self:
        if self.context_step > self.context_range:
            raise ValueError(
                f"context_step ({format_duration(self.context_step)}) is longer than "
                f"context_range ({format_duration(self.context_range)})"
            )
        points = self.context_range // self.context_step
        if points > MAX_RANGE_POINTS:
            raise ValueError(
                f"context_range / context_step gives {points} points; "
                f"Prometheus answers at most {MAX_RANGE_POINTS}"
            )
        return self


class ReturnTripConfig(StrictModel):
    """Timing of the enriched alerts the sidecar posts back to Alertmanager."""

    keepalive: Duration = timedelta(minutes=5)
    repost_interval: Duration = timedelta(minutes=1)
    resolved_repeat_for: DurationOrZero = timedelta(minutes=5)
    resolved_repeat_interval: Duration = timedelta(minutes=1)
    retry_backoff_max: Duration = timedelta(minutes=1)
    grafana_url: HttpUrl | None = None
    external_url: HttpUrl | None = None

    @model_validator(mode="after")
    def _reposts_before_expiry(self) -> Self:
        if self.repost_interval >= self.keepalive:
            raise ValueError(
                f"repost_interval ({format_duration(self.repost_interval)}) must be shorter "
                f"than keepalive ({format_duration(self.keepalive)}), or enriched alerts "
                "expire between posts"
            )
        return self


class StoreConfig(StrictModel):
    """How long the store keeps what it no longer needs (ai_sidecar.store.retention)."""

    # Alerts received, and incidents resolved, longer ago than this are pruned;
    # open incidents and alerts not yet correlated never are.
    retention: Duration = timedelta(days=30)


# -- anomaly models -------------------------------------------------------------

_CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
# A signal's history in steps: what one fit holds per series (28 days at 1m is 40,320).
MAX_HISTORY_POINTS = 100_000
DEFAULT_RETRAIN_AT = "03:00"


def _signal_name(value: str) -> str:
    if not SIGNAL_NAME.fullmatch(value):
        raise ValueError(f"invalid signal name {value!r} (letters, digits and _)")
    return value


def _counter_through_rate(value: str) -> str:
    if not value.strip():
        raise ValueError("should be a PromQL expression")
    counter = raw_counter_in(value)
    if counter is not None:
        raise ValueError(
            f"reads the counter {counter} raw; model counters through rate() or increase()"
        )
    return value


def _clock_time(value: str) -> str:
    if not _CLOCK_TIME.fullmatch(value):
        raise ValueError(f"should be a time of day as HH:MM (UTC), got {value!r}")
    return value


def _at_least(minimum: timedelta, why: str) -> AfterValidator:
    """A duration no shorter than ``minimum`` (``why`` says what shorter would do)."""

    def check(value: timedelta) -> timedelta:
        if value < minimum:
            raise ValueError(
                f"should be at least {format_duration(minimum)} ({why}), "
                f"got {format_duration(value)}"
            )
        return value

    return AfterValidator(check)


def _kept_labels(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    reserved = sorted(RESERVED_LABELS.intersection(value))
    if reserved:
        raise ValueError(f"{reserved[0]!r} is set by Scout and cannot be kept")
    if len(set(value)) != len(value):
        raise ValueError("repeats a label")
    return value


class SignalConfig(StrictModel):
    """One PromQL expression whose series are modelled together (ai_sidecar.anomaly)."""

    name: Annotated[str, AfterValidator(_signal_name)]
    query: Annotated[str, AfterValidator(_counter_through_rate)]
    step: Duration = timedelta(minutes=1)
    history: Duration = timedelta(days=14)
    transform: Literal["none", "log1p"] = "none"
    seasonality: Literal["auto", "daily", "weekly", "none"] = "auto"
    # Deviations smaller than min_deviation, and values whose size stays below
    # min_level, never flag (in the signal's units). Finite: YAML's .inf would
    # switch the signal off without a word.
    min_deviation: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    min_level: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_series: int = Field(default=2000, ge=1)
    # None: every label of the series (but __name__).
    keep_labels: Annotated[list[LabelName] | None, AfterValidator(_kept_labels)] = Field(
        default_factory=lambda: ["job", "instance"]
    )

    @model_validator(mode="after")
    def _history_fits(self) -> Self:
        if self.step < timedelta(seconds=1):
            raise ValueError(f"step ({format_duration(self.step)}) is shorter than 1s")
        points = self.history // self.step
        if points < 2:
            raise ValueError(
                f"history ({format_duration(self.history)}) holds fewer than two steps "
                f"of {format_duration(self.step)}"
            )
        if points > MAX_HISTORY_POINTS:
            raise ValueError(
                f"history / step gives {points} points per series; at most "
                f"{MAX_HISTORY_POINTS} are modelled (use a longer step)"
            )
        return self


def _default_signals() -> list[SignalConfig]:
    return [SignalConfig.model_validate(signal, strict=False) for signal in DEFAULT_SIGNALS]


class RetrainConfig(StrictModel):
    """When profiles are refitted: daily ``at`` a UTC time, or ``every`` interval; drift early."""

    # Neither set: daily at DEFAULT_RETRAIN_AT.
    at: Annotated[str, AfterValidator(_clock_time)] | None = None
    every: (
        Annotated[Duration, _at_least(timedelta(minutes=1), "each refit reads the whole history")]
        | None
    ) = None
    # PSI of recent residuals against the training residuals above which a
    # signal is refitted before its schedule, at most once per min_interval
    # (finite: .inf would switch the early refit off without a word).
    drift_threshold: float = Field(default=0.25, gt=0, allow_inf_nan=False)
    min_interval: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _one_schedule(self) -> Self:
        if self.every is not None and self.at is not None:
            raise ValueError("set at or every, not both")
        return self

    @property
    def daily_at(self) -> tuple[int, int] | None:
        """(hour, minute) UTC of the daily refit, or None with ``every``."""
        if self.every is not None:
            return None
        hour, minute = (self.at or DEFAULT_RETRAIN_AT).split(":")
        return int(hour), int(minute)


class HostModelsConfig(StrictModel):
    """Per host, an IsolationForest over its signals' residuals (ai_sidecar/anomaly/hosts.py)."""

    enabled: bool = True
    # The label that names a host in the signals' kept labels.
    host_label: LabelName = "instance"
    sample_every: Duration = timedelta(minutes=5)
    # Samples kept per host: a week at the default sample_every.
    max_samples: int = Field(default=2016, ge=64, le=100_000)
    # No model before this many samples: half a day at the default sample_every.
    min_samples: int = Field(default=144, ge=32)
    refit: Duration = timedelta(days=7)
    trees: int = Field(default=32, ge=8, le=200)
    max_hosts: int = Field(default=1000, ge=1)
    forget_after: Duration = timedelta(days=1)

    @model_validator(mode="after")
    def _enough_room(self) -> Self:
        if self.min_samples > self.max_samples:
            raise ValueError("min_samples should not exceed max_samples")
        return self


class ShardConfig(StrictModel):
    """This replica's share of the anomaly series: share ``index`` of ``count`` (shards.py),
    or with ``index: auto`` the shares it claims through the PostgreSQL store."""

    index: Annotated[int, Field(ge=0)] | Literal["auto"] = 0
    count: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _index_in_range(self) -> Self:
        if self.index != "auto" and self.index >= self.count:
            raise ValueError(
                f"index {self.index} is not below count {self.count} (shares are 0 to count - 1)"
            )
        return self


class AnomalyConfig(StrictModel):
    """The anomaly models: signals, scoring cadence, retraining; docs/anomaly.md."""

    # Needs SCOUT_PROMETHEUS_URL too: without one there is no history to learn from.
    enabled: bool = False
    score_interval: Annotated[
        Duration, _at_least(timedelta(seconds=1), "shorter only spins the loop")
    ] = timedelta(minutes=1)
    # Points younger than this are not asked for yet: rules and remote writes lag.
    query_delay: DurationOrZero = timedelta(seconds=30)
    query_timeout: Duration = timedelta(seconds=30)
    retries: int = Field(default=3, ge=0, le=10)
    concurrency: int = Field(default=2, ge=1, le=16)
    # A series with no point for this long leaves the detector (and /metrics).
    series_grace: Duration = timedelta(hours=1)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    keep_versions: int = Field(default=5, ge=1)
    signals: list[SignalConfig] = Field(default_factory=_default_signals)
    hosts: HostModelsConfig = Field(default_factory=HostModelsConfig)
    # Replicas splitting the series: each trains and scores its share alone.
    shard: ShardConfig = Field(default_factory=ShardConfig)

    @property
    def share(self) -> Share:
        """The series this replica models (by host, so a host's signals stay together);
        with ``index: auto``, every share until some are claimed (shares_claimed)."""
        if self.shard.index == "auto":
            return self.shares_claimed(range(self.shard.count))
        return Share.of(self.shard.index, self.shard.count, self.hosts.host_label)

    def shares_claimed(self, indexes: Iterable[int]) -> Share:
        return Share(frozenset(indexes), self.shard.count, self.hosts.host_label)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[str] = set()
        for signal in self.signals:
            if signal.name in seen:
                raise ValueError(f"signal {signal.name!r} is defined twice")
            seen.add(signal.name)
        return self

    def signal(self, name: str) -> SignalConfig:
        """The signal called ``name``; KeyError names the ones there are."""
        for signal in self.signals:
            if signal.name == name:
                return signal
        known = ", ".join(s.name for s in self.signals) or "none"
        raise KeyError(f"no signal {name!r} (configured: {known})")


# -- LLM analysts and notification graphs ------------------------------------------

Provider = Literal["none", "gemini", "anthropic", "openai"]
PriorityName = Literal["P1", "P2", "P3", "P4"]
DEFAULT_KEY_ENV: dict[str, str] = {
    "gemini": "GEMINI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
}


def _pattern_list(value: list[str]) -> list[str]:
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regex {pattern!r}: {exc}") from exc
    return value


class LlmPrice(StrictModel):
    """Estimated US dollars per million tokens (the vendor's list price for the model)."""

    # YAML's .inf and .nan are floats: either would make every call's cost, the
    # month's spend and the budget check meaningless.
    input_per_million: float = Field(default=0.30, ge=0, allow_inf_nan=False)
    output_per_million: float = Field(default=2.50, ge=0, allow_inf_nan=False)


class LlmPolicyConfig(StrictModel):
    """Which incidents are worth an LLM call (ai_sidecar.enrichment.llm.policy)."""

    min_priority: PriorityName = "P2"
    anomaly_score: float = Field(default=0.9, gt=0, le=1)
    cache_ttl: DurationOrZero = timedelta(hours=24)
    # A growing storm moves its root cause: re-ask about a new one no sooner
    # than this after the last call, and at most max_calls times.
    reanalysis_interval: DurationOrZero = timedelta(minutes=2)
    max_calls: int = Field(default=4, ge=1)


class LlmBudgetConfig(StrictModel):
    """Caps on LLM use; the defaults fit Gemini's free tier. 0 means no cap."""

    requests_per_day: int = Field(default=200, ge=0)
    requests_per_minute: int = Field(default=8, ge=0)
    tokens_per_minute: int = Field(default=200_000, ge=0)
    cost_per_month: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class CircuitConfig(StrictModel):
    """After ``failures`` failed calls in a row, no call for ``reset``; then one trial call."""

    failures: int = Field(default=5, ge=1)
    reset: Duration = timedelta(minutes=5)


class LlmConfig(StrictModel):
    """The LLM analyst: provider, model, limits, data protection (docs/llm.md)."""

    enabled: bool = True
    provider: Provider = "none"
    model: str = Field(default="gemini-2.5-flash", min_length=1)
    allowed_models: list[str] = Field(default_factory=list)
    base_url: HttpUrl | None = None
    api_key_env: str = ""
    timeout: Duration = timedelta(seconds=20)
    max_output_tokens: int = Field(default=1024, ge=64, le=65_536)
    max_prompt_chars: int = Field(default=24_000, ge=2_000)
    retries: int = Field(default=2, ge=0, le=10)
    price: LlmPrice = Field(default_factory=LlmPrice)
    redact: bool = True
    redact_patterns: Annotated[list[str], AfterValidator(_pattern_list)] = Field(
        default_factory=list
    )
    policy: LlmPolicyConfig = Field(default_factory=LlmPolicyConfig)
    budget: LlmBudgetConfig = Field(default_factory=LlmBudgetConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    audit_retention: Duration = timedelta(days=30)

    @model_validator(mode="after")
    def _model_allowed(self) -> Self:
        if self.allowed_models and self.model not in self.allowed_models:
            raise ValueError(
                f"model {self.model!r} is not in allowed_models ({', '.join(self.allowed_models)})"
            )
        return self

    @property
    def key_env(self) -> str:
        """The environment variable holding the API key (``<NAME>_FILE``: a file holding it)."""
        return self.api_key_env or DEFAULT_KEY_ENV.get(self.provider, "")

    @property
    def active(self) -> bool:
        """An LLM is configured and the kill switch is off."""
        return self.enabled and self.provider != "none"


def _time_zone(value: str) -> str:
    """An IANA time zone name the system's or the tzdata package's database knows."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        # ValueError: a name zoneinfo refuses to look up (a path, "../x").
        raise ValueError(
            f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/Paris"
        ) from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_time_zone)]


class NotificationsConfig(StrictModel):
    """How notifications show what happened (ai_sidecar.notify.wording): times in ``timezone``."""

    timezone: TimeZoneName = "UTC"

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class GraphsConfig(StrictModel):
    """The graph linked from every notification (ai_sidecar.notify.graphs)."""

    enabled: bool = True
    range: Duration = timedelta(hours=6)
    url_ttl: Duration = timedelta(days=7)
    # strict=False: YAML gives a string, and a strict Path field takes only a Path.
    key_file: Annotated[Path, Field(strict=False)] | None = None


def _network(value: object) -> object:
    """An address or network (``10.0.0.1``, ``10.0.0.0/8``, ``::1``) as YAML gives it."""
    if isinstance(value, str):
        try:
            return ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return value


class LoginLimitConfig(StrictModel):
    """Failed sign-ins: ``max_failures`` within ``window`` for one user name (or
    ``max_failures_per_address`` from one client address) refuse further attempts
    under that name (or from that address) for ``lockout``."""

    max_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    # Higher: people behind one proxy or NAT share an address.
    max_failures_per_address: Annotated[int, Field(ge=1, le=10000)] = 20
    window: Duration = timedelta(minutes=15)
    lockout: Duration = timedelta(minutes=15)


class ConsoleConfig(StrictModel):
    """The console's login, sessions and pages (ai_sidecar.console)."""

    # A session ends this long after sign-in whatever happens, or after
    # idle_timeout without a request.
    session_lifetime: Duration = timedelta(hours=12)
    idle_timeout: Duration = timedelta(hours=1)
    # Mark cookies Secure even on plain HTTP requests: behind a proxy that
    # terminates TLS, the sidecar itself never sees HTTPS.
    secure_cookies: bool = False
    # YAML list of {name, role, password_hash}; these users win over stored ones
    # of the same name (ai_sidecar.console.login.users).
    # Not strict: YAML gives a string.
    users_file: Annotated[Path, Field(strict=False)] | None = None
    login_limit: LoginLimitConfig = Field(default_factory=LoginLimitConfig)
    # Reverse proxies in front of the sidecar (addresses or networks): a request
    # from one of them is counted for lockout under the client address its
    # X-Forwarded-For gives, else every user behind the proxy shares one count.
    trusted_proxies: list[Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _idle_within_lifetime(self) -> Self:
        if self.idle_timeout > self.session_lifetime:
            raise ValueError(
                f"idle_timeout ({format_duration(self.idle_timeout)}) must not be longer "
                f"than session_lifetime ({format_duration(self.session_lifetime)})"
            )
        return self


ReportPeriod = Literal["day", "week", "month"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)


def _local_clock_time(value: str) -> str:
    if not _CLOCK_TIME.fullmatch(value):
        raise ValueError(
            f"should be a time of day as HH:MM (in notifications.timezone), got {value!r}"
        )
    return value


class DigestSchedule(StrictModel):
    """When the digest goes out, in ``notifications.timezone``: ``weekday`` (every day
    when null) at ``at``."""

    weekday: Weekday | None = "monday"
    at: Annotated[str, AfterValidator(_local_clock_time)] = "08:00"


# Ports whose protocol fixes the security: TLS from the first byte, or plain text first.
_IMPLICIT_TLS_PORTS = frozenset({465})
_PLAIN_FIRST_PORTS = frozenset({25, 587})


def _is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpConfig(StrictModel):
    """The mail server the digest is handed to."""

    # ``from`` in the file; ``sender`` in a dump read back.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, hide_input_in_errors=True, populate_by_name=True
    )

    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=587, ge=1, le=65_535)
    # starttls: upgrade a plain connection (port 587); tls: TLS from the first
    # byte (port 465); none: plain text, for a relay on the same host only.
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    # The password is read from this file at each send, never from the config.
    password_file: Annotated[Path, Field(strict=False)] | None = None
    # An address, or ``Name <address>``; one line (it becomes the From header).
    sender: str = Field(
        default="scout@localhost", alias="from", min_length=3, pattern=r"^[^\r\n]*@[^\r\n]*$"
    )
    timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _password_with_user(self) -> Self:
        if self.password_file is not None and not self.username:
            raise ValueError("password_file is set but username is not")
        return self

    @model_validator(mode="after")
    def _security_fits(self) -> Self:
        if self.security == "none" and self.username and not _is_loopback_host(self.host):
            raise ValueError(
                f"security: none would send the password in clear text to {self.host}:"
                " use starttls or tls, or a relay on this host (localhost)"
            )
        if self.security == "starttls" and self.port in _IMPLICIT_TLS_PORTS:
            raise ValueError(f"port {self.port} speaks TLS from the first byte: use security: tls")
        if self.security == "tls" and self.port in _PLAIN_FIRST_PORTS:
            raise ValueError(f"port {self.port} starts in plain text: use security: starttls")
        return self


class DigestRetry(StrictModel):
    """A failed send is tried again after ``first``, doubling up to ``max``, ``attempts``
    times in all; then the slot is given up until the next one."""

    first: Duration = timedelta(minutes=1)
    max: Duration = timedelta(minutes=30)
    attempts: int = Field(default=8, ge=1, le=100)


class DigestConfig(StrictModel):
    """The report e-mailed on a schedule: an HTML body and the PDF attached."""

    enabled: bool = False
    period: ReportPeriod = "week"
    schedule: DigestSchedule = Field(default_factory=DigestSchedule)
    recipients: list[Annotated[str, Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(
        default_factory=list
    )
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    retry: DigestRetry = Field(default_factory=DigestRetry)

    @model_validator(mode="after")
    def _recipients_when_enabled(self) -> Self:
        if self.enabled and not self.recipients:
            raise ValueError("the digest is enabled but has no recipients")
        return self


class ReportsConfig(StrictModel):
    """Reports and the scheduled e-mail digest (ai_sidecar.console.reports)."""

    # Rows of each "top" table (noisiest rules and targets, bandwidth, anomalies).
    top: int = Field(default=10, ge=1, le=100)
    # Time box of each Prometheus query a report makes.
    query_timeout: Duration = timedelta(seconds=10)
    digest: DigestConfig = Field(default_factory=DigestConfig)


def _language(value: str) -> str:
    """``value`` as the catalogues spell it (``FR`` is ``fr``: tags ignore case)."""
    found = catalogue_language(value)
    if found is None:
        raise ValueError(
            f"no catalogue for language {value!r}; available: {', '.join(available_languages())}"
        )
    return found


class SidecarConfig(StrictModel):
    """The whole file. Top-level keys starting with ``x-`` are ignored (YAML anchors)."""

    language: Annotated[str, AfterValidator(_language)] = SOURCE_LANGUAGE
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    priority: PriorityConfig = Field(default_factory=PriorityConfig)
    runbooks: list[RunbookRule] = Field(default_factory=list)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    return_trip: ReturnTripConfig = Field(default_factory=ReturnTripConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    graphs: GraphsConfig = Field(default_factory=GraphsConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)

    @model_validator(mode="before")
    @classmethod
    def _drop_extension_keys(cls, data: object) -> object:
        return drop_extension_keys(data)


def load_config(path: Path | None, *, expand_env: bool = False) -> SidecarConfig:
    """Read and validate ``path``; ``None`` gives the built-in defaults."""
    if path is None:
        return SidecarConfig()
    return load_model(path, SidecarConfig, expand_env=expand_env, error=ConfigError)


def parse_config(text: str, source: str, *, expand_env: bool = False) -> SidecarConfig:
    """Validate YAML ``text``; every error names ``source`` and a line."""
    return parse_model(text, source, SidecarConfig, expand_env=expand_env, error=ConfigError)
