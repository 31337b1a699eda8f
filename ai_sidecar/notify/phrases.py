"""Every phrase of Scout's notifications that is not the analyst's own, in one place.

English for now. A translation gives each constant, each :data:`PROBLEMS`
entry and each :data:`TEMPLATE_WORDS` value its own words; the ``{named}``
fields stay as they are, and :mod:`ai_sidecar.notify.wording` fills them.
The analysis (``ai_*``) is the analyst's own text.

:data:`TEMPLATE_WORDS` are the headings and link labels Alertmanager's
templates add (``alertmanager/templates/scout.tmpl``, as its ``scout.word.*``
definitions, which must say the same: a test compares them and prints the
block to paste). Everything else people read is rendered here, by the sidecar,
into the copies' ``scout_*`` annotations.

A problem phrase says what is wrong and where, in plain words, from the root
cause's labels: ``{interface}`` is its interface (ifName, interface or
ifDescr), ``{target}`` what the alert is on (instance, device, host or
firewall), and any other ``{name}`` is the label of that name. A field the
alert lacks is filled with the word in :data:`MISSING` for it (else
:data:`MISSING_DEFAULT`).
"""

from __future__ import annotations

from collections.abc import Mapping

# "P3 · Gi1/0/1 down on sw-3 (site paris)"; "(site …)" and the related alerts
# are left out when there are none.
TITLE = "{priority} · {problem}{site}{related}"
SITE = " (site {site})"
RELATED_ONE = ", and 1 related alert"
RELATED_MANY = ", and {count} related alerts"
# The title once the incident is over.
RESOLVED_TITLE = "Resolved · {title} · lasted {duration}"

# Times, to the second, in the configured zone: "2026-12-02 23:41:25 CET".
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
STARTED = "Started {start}."
LASTED = "Started {start}, resolved {end}: lasted {duration}."

# Durations: "1 d 2 h 5 min 12 s"; units of zero are left out.
DURATION_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
DURATION_ZERO = "0 s"

# What resolved the incident.
RESOLVED_BY_ROOT_CAUSE = "Resolved when the root cause ({problem}) cleared at {time}."
RESOLVED_BY_ONLY_ALERT = "Resolved when {problem} cleared at {time}."
RESOLVED_BY_LAST_ALERT = (
    "Resolved when the last of its {count} alerts ({problem}) cleared at {time}."
)
# Root-cause resolution closes the incident while its symptoms may still fire.
STILL_FIRING_ONE = " 1 other alert was still firing."
STILL_FIRING_MANY = " {count} other alerts were still firing."
RESOLVED_BY_MERGE = "Merged into incident {incident} at {time}: it goes on there."
RESOLVED_UNKNOWN = "Resolved at {time}."

# What is wrong, by alertname (Scout's shipped rules, prometheus/rules/).
PROBLEMS: Mapping[str, str] = {
    "InterfaceDown": "{interface} down on {target}",
    "LinkDown": "{interface} down on {target}",
    "InterfaceSaturated": "{interface} saturated on {target}",
    "InterfaceErrors": "errors on {interface} of {target}",
    "InterfaceDiscards": "discards on {interface} of {target}",
    "SnmpDeviceUnreachable": "{target} not answering SNMP",
    "SnmpModuleFailed": "SNMP module {module} failing on {target}",
    "TargetDown": "{target} down",
    "ExporterCollectorFailed": "collector {collector} failing for {target}",
    "ProbeFailed": "probe of {target} failing",
    "ProbeTargetUnreachable": "{target} unreachable",
    "ProbeLossHigh": "packet loss to {target}",
    "ProbeLatencyHigh": "high latency to {target}",
    "ProbeJitterHigh": "high jitter to {target}",
    "FirewallUnreachable": "firewall {target} unreachable",
    "FirewallSessionTableHigh": "session table nearly full on {target}",
    "FirewallSessionTableFillingUp": "session table filling up on {target}",
    "FirewallConntrackDrops": "connection tracking dropping packets on {target}",
    "FirewallHaFailover": "HA fail-over on {target}",
    "FirewallHaSyncLost": "HA peers of {target} out of sync",
    "FirewallVpnTunnelDown": "VPN tunnel {tunnel} down on {target}",
    "FirewallGatewayDown": "gateway {gateway} down on {target}",
    "FirewallGatewayLossHigh": "packet loss to gateway {gateway} on {target}",
    "FirewallGatewayLatencyHigh": "high latency to gateway {gateway} on {target}",
    "FirewallCpuHigh": "CPU busy on firewall {target}",
    "FirewallMemoryHigh": "memory high on firewall {target}",
    "FlowSeriesBudgetExhausted": "flow series budget exhausted on {target}",
    "FlowExporterSilent": "no flows from {exporter}",
    "HostCpuHigh": "CPU busy on {target}",
    "HostMemoryLow": "memory low on {target}",
    "HostFilesystemAlmostFull": "{mountpoint} almost full on {target}",
    "HostFilesystemFillingUp": "{mountpoint} filling up on {target}",
    "AnomalyDetected": "unusual {signal} on {target}",
    "WindowsDiskAlmostFull": "volume {volume} almost full on {target}",
    "WindowsDiskFillingUp": "volume {volume} filling up on {target}",
    "WindowsServiceStopped": "service {name} not running on {target}",
    "WindowsCpuHigh": "CPU busy on {target}",
    "WindowsMemoryLow": "memory low on {target}",
    "WindowsRebootPending": "reboot pending on {target}",
    "WinrmTargetUnreachable": "{target} not answering over WinRM",
    "WinrmScrapeFailed": "WinRM scrape of {target} failing",
    "WindowsCollectorFailed": "Windows collector {collector} failing on {target}",
}
# Any other alert: its name in words ("PowerSupplyFailed" -> "power supply failed").
UNKNOWN_PROBLEM = "{name} on {target}"
UNKNOWN_PROBLEM_NO_TARGET = "{name}"
UNNAMED_ALERT = "an unnamed alert"

MISSING: Mapping[str, str] = {
    "interface": "an interface",
    "target": "an unnamed target",
}
MISSING_DEFAULT = "?"

# The words Alertmanager's templates add, as scout.word.<key> definitions.
TEMPLATE_WORDS: Mapping[str, str] = {
    "subject_prefix": "[Scout]",
    "resolved_mark": "[RESOLVED]",
    "incident": "Incident",
    "priority": "Priority",
    "firing": "firing",
    "resolved": "resolved",
    "summary": "Summary",
    "root_cause": "Root cause",
    "impact": "Impact",
    "actions": "Actions",
    "alerts": "Alerts",
    "member_resolved": "(resolved)",
    "on": "on",
    "more_in_incident": "… and more: see the incident.",
    "more_in_alertmanager": "… and more: see Alertmanager.",
    "incident_link": "Incident in Scout",
    "grafana": "Grafana",
    "graph": "Graph",
    "graph_link": "graph",
    "graph_alt": "Graph of the root cause",
    "open_graph": "Open the graph",
    "alertmanager": "Alertmanager",
    "raw_firing": "FIRING",
    "raw_resolved": "RESOLVED",
    "not_analysed": "not analysed by Scout",
    "not_enriched": (
        "Scout's AI sidecar did not enrich this alert within the fail-open delay, so it is"
        " shown as Prometheus raised it, without correlation or analysis."
    ),
}


def template_words() -> str:
    """The ``scout.word.*`` definitions of :data:`TEMPLATE_WORDS`, as scout.tmpl holds them."""
    return "".join(
        f'{{{{ define "scout.word.{key}" }}}}{value}{{{{ end }}}}\n'
        for key, value in TEMPLATE_WORDS.items()
    )
