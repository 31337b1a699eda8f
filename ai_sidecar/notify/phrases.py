"""Every phrase of Scout's notifications that is not the analyst's own, in one place.

In English, the source language: each constant, each :data:`PROBLEMS` entry
and each :data:`TEMPLATE_WORDS` value is marked (``N_``) for the ``notify``
catalogue (``ai_sidecar/i18n/locales/<language>/LC_MESSAGES/notify.po``) and
translated where it is shown; a phrase with a count is a function that asks
the catalogue for the form the count takes (ngettext). The ``{named}`` fields
stay as they are, and :mod:`ai_sidecar.notify.wording` fills them. The
analysis (``ai_*``) is the analyst's own text.

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

from ai_sidecar.i18n import Translator, available_languages, translator


def N_(message: str) -> str:
    """Marks ``message`` for the catalogue where it is defined; it is translated where shown."""
    return message


# "P3 · Gi1/0/1 down on sw-3 (site paris)"; "(site …)" and the related alerts
# are left out when there are none.
TITLE = N_("{priority} · {problem}{site}{related}")
SITE = N_(" (site {site})")
# The title once the incident is over.
RESOLVED_TITLE = N_("Resolved · {title} · lasted {duration}")

# Times, to the second, in the configured zone: "2026-12-02 23:41:25 CET" in
# English; another language writes the date its own way (Babel, fr:
# "2 déc. 2026, 23:41:25 CET"), the zone's abbreviation after it.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
ZONED_TIME = N_("{time} {zone}")
STARTED = N_("Started {start}.")
LASTED = N_("Started {start}, resolved {end}: lasted {duration}.")

# Durations: "1 d 2 h 5 min 12 s"; units of zero are left out. The unit
# abbreviations do not take a plural, in English or French.
DURATION_UNITS = (
    (N_("{count} d"), 86400),
    (N_("{count} h"), 3600),
    (N_("{count} min"), 60),
    (N_("{count} s"), 1),
)

# What resolved the incident.
RESOLVED_BY_ROOT_CAUSE = N_("Resolved when the root cause ({problem}) cleared at {time}.")
RESOLVED_BY_ONLY_ALERT = N_("Resolved when {problem} cleared at {time}.")

RESOLVED_BY_MERGE = N_("Merged into incident {incident} at {time}: it goes on there.")
RESOLVED_UNKNOWN = N_("Resolved at {time}.")

# What is wrong, by alertname (Scout's shipped rules, prometheus/rules/).
PROBLEMS: Mapping[str, str] = {
    "InterfaceDown": N_("{interface} down on {target}"),
    "LinkDown": N_("{interface} down on {target}"),
    "InterfaceSaturated": N_("{interface} saturated on {target}"),
    "InterfaceErrors": N_("errors on {interface} of {target}"),
    "InterfaceDiscards": N_("discards on {interface} of {target}"),
    "SnmpDeviceUnreachable": N_("{target} not answering SNMP"),
    "SnmpModuleFailed": N_("SNMP module {module} failing on {target}"),
    "TargetDown": N_("{target} down"),
    "ExporterDown": N_("exporter {target} unreachable"),
    "ExporterNotScraped": N_("devices scraped through {scout_exporter}, an exporter not scraped"),
    "ExporterCollectorFailed": N_("collector {collector} failing for {target}"),
    "ProbeFailed": N_("probe of {target} failing"),
    "ProbeTargetUnreachable": N_("{target} unreachable"),
    "ProbeLossHigh": N_("packet loss to {target}"),
    "ProbeLatencyHigh": N_("high latency to {target}"),
    "ProbeJitterHigh": N_("high jitter to {target}"),
    "FirewallUnreachable": N_("firewall {target} unreachable"),
    "FirewallSessionTableHigh": N_("session table nearly full on {target}"),
    "FirewallSessionTableFillingUp": N_("session table filling up on {target}"),
    "FirewallConntrackDrops": N_("connection tracking dropping packets on {target}"),
    "FirewallHaFailover": N_("HA fail-over on {target}"),
    "FirewallHaSyncLost": N_("HA peers of {target} out of sync"),
    "FirewallVpnTunnelDown": N_("VPN tunnel {tunnel} down on {target}"),
    "FirewallGatewayDown": N_("gateway {gateway} down on {target}"),
    "FirewallGatewayLossHigh": N_("packet loss to gateway {gateway} on {target}"),
    "FirewallGatewayLatencyHigh": N_("high latency to gateway {gateway} on {target}"),
    "FirewallCpuHigh": N_("CPU busy on firewall {target}"),
    "FirewallMemoryHigh": N_("memory high on firewall {target}"),
    "FlowSeriesBudgetExhausted": N_("flow series budget exhausted on {target}"),
    "FlowDatagramsDropped": N_("flow datagrams dropped on {target}"),
    "FlowExportLoss": N_("flow export from {exporter} losing data"),
    "FlowExporterSilent": N_("no flows from {exporter}"),
    "HostCpuHigh": N_("CPU busy on {target}"),
    "HostMemoryLow": N_("memory low on {target}"),
    "HostFilesystemAlmostFull": N_("{mountpoint} almost full on {target}"),
    "HostFilesystemFillingUp": N_("{mountpoint} filling up on {target}"),
    "AnomalyDetected": N_("unusual {signal} on {target}"),
    "WindowsDiskAlmostFull": N_("volume {volume} almost full on {target}"),
    "WindowsDiskFillingUp": N_("volume {volume} filling up on {target}"),
    "WindowsServiceStopped": N_("service {name} not running on {target}"),
    "WindowsCpuHigh": N_("CPU busy on {target}"),
    "WindowsMemoryLow": N_("memory low on {target}"),
    "WindowsRebootPending": N_("reboot pending on {target}"),
    "WinrmTargetUnreachable": N_("{target} not answering over WinRM"),
    "WinrmScrapeFailed": N_("WinRM scrape of {target} failing"),
    "WindowsCollectorFailed": N_("Windows collector {collector} failing on {target}"),
}
# Any other alert: its name in words ("PowerSupplyFailed" -> "power supply failed").
UNKNOWN_PROBLEM = N_("{name} on {target}")
UNKNOWN_PROBLEM_NO_TARGET = "{name}"
UNNAMED_ALERT = N_("an unnamed alert")

MISSING: Mapping[str, str] = {
    "interface": N_("an interface"),
    "target": N_("an unnamed target"),
}
MISSING_DEFAULT = "?"

# The words Alertmanager's templates add, as scout.word.<key> definitions.
TEMPLATE_WORDS: Mapping[str, str] = {
    "subject_prefix": "[Scout]",
    # A group Alertmanager resolved because the copies expired (the sidecar
    # stopped refreshing them), never an all-clear: scout.tmpl, scout.stale.
    "stale_mark": N_("[NOT UPDATED]"),
    "stale_note": N_(
        "Scout stopped updating this incident; it is not known to be resolved."
        " Its raw alerts follow, not analysed."
    ),
    "member_stale": N_("(not updated)"),
    "incident": N_("Incident"),
    "priority": N_("Priority"),
    "summary": N_("Summary"),
    "root_cause": N_("Root cause"),
    "impact": N_("Impact"),
    "actions": N_("Actions"),
    "alerts": N_("Alerts"),
    "member_resolved": N_("(resolved)"),
    "on": N_("on"),
    "more_in_incident": N_("… and more: see the incident."),
    "more_in_alertmanager": N_("… and more: see Alertmanager."),
    "incident_link": N_("Incident in Scout"),
    "grafana": "Grafana",
    "graph": N_("Graph"),
    "graph_link": N_("graph"),
    "graph_alt": N_("Graph of the root cause"),
    "open_graph": N_("Open the graph"),
    "alertmanager": "Alertmanager",
    "raw_firing": N_("FIRING"),
    "raw_resolved": N_("RESOLVED"),
    "not_analysed": N_("not analysed by Scout"),
    "not_enriched": N_(
        "Scout's AI sidecar did not enrich this alert within the fail-open delay, so it is"
        " shown as Prometheus raised it, without correlation or analysis."
    ),
}


# Phrases with a count: the language's plural rules pick the form (ngettext).


def related(t: Translator, count: int) -> str:
    """``, and 2 related alerts`` after the title; nothing for none."""
    if count <= 0:
        return ""
    return t.ngettext(", and {count} related alert", ", and {count} related alerts", count).format(
        count=count
    )


def still_firing(t: Translator, count: int) -> str:
    """After a root-cause resolution: its symptoms may still fire."""
    return t.ngettext(
        " {count} other alert was still firing.", " {count} other alerts were still firing.", count
    ).format(count=count)


def resolved_by_last_alert(t: Translator, count: int, problem: str, time: str) -> str:
    return t.ngettext(
        "Resolved when the last of its {count} alert ({problem}) cleared at {time}.",
        "Resolved when the last of its {count} alerts ({problem}) cleared at {time}.",
        count,
    ).format(count=count, problem=problem, time=time)


def counted_words(t: Translator) -> dict[str, tuple[str, str]]:
    """The templates' words after a count ("3 firing, 1 resolved"), as (one, other):
    the form for 0 or 1 and the form for 2 or more (a word may agree with its count)."""
    return {
        "firing": (t.ngettext("firing", "firing", 1), t.ngettext("firing", "firing", 2)),
        "resolved": (t.ngettext("resolved", "resolved", 1), t.ngettext("resolved", "resolved", 2)),
    }


def _template_word(key: str, english: str, translated: dict[str, str]) -> str:
    """One ``scout.word.<key>`` definition, its dot the language (the copy's ``scout_lang``)."""
    branches = "".join(
        f'{{{{ {"if" if not n else "else if"} eq . "{language}" }}}}{text}'
        for n, (language, text) in enumerate(
            (lang, text) for lang, text in translated.items() if text != english
        )
    )
    body = f"{branches}{{{{ else }}}}{english}{{{{ end }}}}" if branches else english
    return f'{{{{ define "scout.word.{key}" }}}}{body}{{{{ end }}}}\n'


def template_words() -> str:
    """The ``scout.word.*`` definitions, as scout.tmpl holds them: each word in every
    language with a catalogue, chosen by the language the template passes as the dot.
    A counted word has two: ``<key>`` for 0 or 1, ``<key>_other`` for more."""
    translators = [translator(lang, "notify") for lang in available_languages()]
    words = [
        (key, [t.gettext(value) for t in translators]) for key, value in TEMPLATE_WORDS.items()
    ]
    for key in counted_words(translators[0]):
        forms = [counted_words(t)[key] for t in translators]
        words += [(key, [one for one, _ in forms]), (f"{key}_other", [o for _, o in forms])]
    return "".join(
        _template_word(key, english, dict(zip(available_languages()[1:], others, strict=True)))
        for key, (english, *others) in words
    )
