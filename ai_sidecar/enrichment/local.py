"""The local analyst: a deterministic explanation built from facts alone.

It is always available (no key, no network) and is what the LLM analysts fall
back to. It reads the incident (members, root-cause ranking, duplicates and
flaps), the Prometheus context and anomaly evidence the worker gathered, and
the configured runbooks. The same input gives byte-identical output: every
list is sorted and no clock is read.

Confidence that the named root cause is right starts at ``CONFIDENCE_BASE``:

====================================================  ======
the root cause won on upstream, layer or dependents   +0.20
... on firing-before-resolved or earliest start       +0.10
... only on severity or the fingerprint tie-break     -0.10
Prometheus context for it, with at least one series   +0.15
Prometheus context unavailable for it                 -0.15
anomaly evidence scoring >= 0.7                       +0.10
a single alert of severity info or none               -0.20
====================================================  ======

The likelihood that the incident is a false positive starts at ``FP_BASE``:

====================================================  ======
a single alert                                        +0.20
every member resolved within 5 minutes of starting    +0.20
flapping: two or more flaps in all                    +0.20
only info / none severities                           +0.10
three or more targets                                 -0.10
the root cause has dependents                         -0.10
anomaly evidence scoring >= 0.7                       -0.10
====================================================  ======

Both are clamped (confidence to [0.05, 0.95], false positives to [0.02, 0.95])
and rounded to two decimals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from ai_sidecar.anomaly.evidence import evidence_band, evidence_subject
from ai_sidecar.config import RunbookRule, labels_match
from ai_sidecar.context import MemberContext, labels_text, number_text
from ai_sidecar.correlate import INTERFACE_LABELS
from ai_sidecar.correlate.wording import (
    N_,
    alerts,
    analysis_translator,
    in_turn,
    join,
    lasting,
    layer_name,
    listed,
    number,
    on_target,
    score,
    targets,
    what,
    when,
)
from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.i18n import SOURCE_LANGUAGE, Translator
from ai_sidecar.models import (
    QUIET_SEVERITIES,
    Analysis,
    Incident,
    Member,
    RootCauseRule,
)

CONFIDENCE_BASE = 0.5
FP_BASE = 0.2
SHORT_LIVED = timedelta(minutes=5)
STRONG_ANOMALY = 0.7
# How many names a sentence lists before "and N more".
LISTED = 8
# How many pieces of anomaly evidence the root cause cites, strongest first.
CITED_ANOMALIES = 3
_STRUCTURAL_RULES: tuple[RootCauseRule, ...] = ("upstream", "layer", "dependents")
_TEMPORAL_RULES: tuple[RootCauseRule, ...] = ("firing", "earliest")
_WEAK_RULES: tuple[RootCauseRule, ...] = ("severity", "fingerprint")


class LocalAnalyst:
    """Explains incidents from labels, correlation facts, context and runbooks."""

    name = "local"

    def __init__(self, runbooks: Sequence[RunbookRule]) -> None:
        self._runbooks = tuple(runbooks)

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        return analyse(incident, context, self._runbooks)


def analyse(
    incident: Incident, context: IncidentContext, runbooks: Sequence[RunbookRule]
) -> Analysis:
    """The local analysis in ``context.language``; a pure function, so tests and
    replays can call it directly."""
    t = analysis_translator(context.language)
    members = sorted(incident.members.values(), key=lambda m: m.fingerprint)
    root = incident.members.get(incident.root_cause or "") or _earliest(members)
    return Analysis(
        summary=_summary(t, incident, members, root),
        root_cause=_root_cause(t, incident, root, context),
        impact=_impact(t, incident, members),
        actions=_actions(t, members, root, runbooks),
        confidence=_confidence(incident, members, root, context),
        false_positive_likelihood=_false_positive(incident, members, root, context),
        # The root cause's own alert is what the explanation rests on.
        evidence=(root.fingerprint,),
    )


def _earliest(members: Sequence[Member]) -> Member:
    return min(members, key=lambda m: (m.first_starts_at, m.fingerprint))


def _when(t: Translator, value: datetime) -> str:
    """To the second, in UTC (RFC 3339 in English): people read it in notifications."""
    return when(t, value.replace(microsecond=0))


def _targets(members: Iterable[Member]) -> list[str]:
    return sorted({m.target for m in members} - {""})


def _families(members: Iterable[Member]) -> list[tuple[str, int]]:
    """(alertname, count), most frequent first."""
    counts: dict[str, int] = {}
    for member in members:
        counts[member.alertname] = counts.get(member.alertname, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _summary(t: Translator, incident: Incident, members: Sequence[Member], root: Member) -> str:
    firing = sum(1 for m in members if m.status == "firing")
    where = ", ".join(f"{k}={v}" for k, v in sorted(incident.group.items()))
    target_names = _targets(members)
    unnamed = t.gettext("unnamed")
    families = listed(
        t, (f"{name or unnamed} ({count})" for name, count in _families(members)), LISTED
    )
    opening = (
        t.gettext(
            "Resolved incident for {where} since {since}, root cause {root}: "
            "{alerts} ({firing}, {resolved}) on {targets}: {families}."
        )
        if incident.status == "resolved"
        else t.gettext(
            "Open incident for {where} since {since}, root cause {root}: "
            "{alerts} ({firing}, {resolved}) on {targets}: {families}."
        )
    )
    resolved = len(members) - firing
    text = opening.format(
        where=where,
        since=_when(t, incident.created_at),
        root=root_named(incident, root, t),
        alerts=alerts(t, len(members)),
        firing=t.ngettext("{count} firing", "{count} firing", firing).format(
            count=number(t, firing)
        ),
        resolved=t.ngettext("{count} resolved", "{count} resolved", resolved).format(
            count=number(t, resolved)
        ),
        targets=targets(t, len(target_names)),
        families=families,
    )
    if len(members) > 1:
        folded = len(members) - 1
        text += " " + t.ngettext(
            "{count} alert folded in behind {root} instead of notifying separately.",
            "{count} alerts folded in behind {root} instead of notifying separately.",
            folded,
        ).format(count=number(t, folded), root=what(t, root))
    duplicates = sum(m.duplicates for m in members)
    flaps = sum(m.flap_count for m in members)
    flapping = sum(1 for m in members if m.flap_count)
    deduplicated = []
    if duplicates:
        deduplicated.append(
            t.ngettext(
                "{count} repeated delivery", "{count} repeated deliveries", duplicates
            ).format(count=number(t, duplicates))
        )
    if flaps:
        deduplicated.append(
            t.ngettext("{count} flap of {alerts}", "{count} flaps of {alerts}", flaps).format(
                count=number(t, flaps), alerts=alerts(t, flapping)
            )
        )
    if deduplicated:
        text += " " + t.gettext("Deduplicated: {what}.").format(what=join(t, deduplicated))
    return text


def root_named(incident: Incident, root: Member, t: Translator | None = None) -> str:
    """``InterfaceDown on core-1 Gi1/0/24 (link core-1 Gi1/0/24 - sw-dist-3 eth0)``.

    The alert, its device and the element it is about: the interface when the
    alert names one, and the link the dependency graph found that port on.
    Names stay as they are in every language; the words around them follow ``t``.
    """
    t = t or analysis_translator(SOURCE_LANGUAGE)
    device = root.target
    interface = next((root.labels[n] for n in INTERFACE_LABELS if root.labels.get(n)), "")
    where = f"{device} {interface}".strip()
    text = on_target(t, root.alertname, where)
    facts = incident.root_cause_facts
    if facts is not None and " - " in facts.element:
        text = t.gettext("{alert} (link {element})").format(alert=text, element=facts.element)
    return text


# Prometheus's trend words, marked here and translated where they are shown.
_TRENDS = {"rising": N_("rising"), "falling": N_("falling"), "flat": N_("flat")}


def _described(t: Translator, found: MemberContext) -> str:
    """:meth:`MemberContext.describe` in the analysis's language (the same text in English).

    Queries, label sets and the reason Prometheus gave stay as they are.
    """
    if t.is_source:
        return found.describe()
    if not found.available:
        return t.gettext("Prometheus context unavailable: {reason}").format(reason=found.reason)
    if not found.series:
        return t.gettext("{query}: no series for this alert").format(query=found.query)
    parts = []
    for series in found.series:
        if series.value is None:
            now = t.gettext("no current value")
        else:
            now = t.gettext("now {value}").format(value=_value(t, series.value))
        if series.trend is not None and series.first is not None and series.last is not None:
            now = t.gettext("{now}, {trend} {first} → {last} over {span}").format(
                now=now,
                trend=t.gettext(_TRENDS[series.trend]),
                first=_value(t, series.first),
                last=_value(t, series.last),
                span=lasting(t, found.lookback),
            )
        parts.append(f"{labels_text(series.labels)} {now}".strip())
    shown = in_turn(t, parts)
    if found.omitted:
        shown = t.ngettext(
            "{shown}; and {count} more series", "{shown}; and {count} more series", found.omitted
        ).format(shown=shown, count=number(t, found.omitted))
    return f"{found.query}: {shown}"


def _value(t: Translator, value: float) -> str:
    """A sample value with the language's decimal separator, as many digits as English shows."""
    english = number_text(value)
    if not math.isfinite(value) or "e" in english:
        return english
    return t.number(value, digits=len(english.partition(".")[2]))


def _root_cause(t: Translator, incident: Incident, root: Member, context: IncidentContext) -> str:
    facts = incident.root_cause_facts
    named = root_named(incident, root, t)
    if facts is not None:
        text = t.gettext("{root} ({layer} layer) is the probable root cause.").format(
            root=named, layer=layer_name(t, facts.layer)
        )
    else:
        text = t.gettext("{root} is the probable root cause.").format(root=named)
    if incident.root_cause_reasons:
        text += " " + t.gettext("Why: {reasons}.").format(
            reasons=in_turn(t, incident.root_cause_reasons)
        )
    member_context = context.members.get(root.fingerprint)
    if member_context is None:
        text += " " + t.gettext("Prometheus context unavailable: not queried for this alert.")
    else:
        text += f" {_described(t, member_context)}."
    text += _anomaly_sentence(t, incident, root, context)
    return text


def _anomaly_sentence(
    t: Translator, incident: Incident, root: Member, context: IncidentContext
) -> str:
    """`` InterfaceDown on sw-core-1 coincides with an anomaly score 0.97 on ...``.

    The strongest three pieces of evidence, each with its series (signal,
    device, element) and the band the model expected; "" without evidence.
    """
    evidence = sorted(context.anomaly, key=lambda e: (-e.score, e.subject))[:CITED_ANOMALIES]
    if not evidence:
        return ""
    shown = [
        (
            t.gettext("{score} on {subject} (expected {band})")
            if e.band
            else t.gettext("{score} on {subject}")
        ).format(score=score(t, e.score), subject=evidence_subject(e, t), band=evidence_band(e, t))
        for e in evidence
    ]
    return " " + t.ngettext(
        "{root} coincides with an anomaly score {scores}.",
        "{root} coincides with anomaly scores {scores}.",
        len(shown),
    ).format(root=root_named(incident, root, t), scores=join(t, shown))


def _impact(t: Translator, incident: Incident, members: Sequence[Member]) -> str:
    firing = [m for m in members if m.status == "firing"]
    target_names = _targets(members)
    services = sorted({m.labels.get("service") or m.labels.get("job") or "" for m in members})
    services = [s for s in services if s]
    if target_names:
        text = t.ngettext(
            "{count} target affected: {targets}.",
            "{count} targets affected: {targets}.",
            len(target_names),
        ).format(count=number(t, len(target_names)), targets=listed(t, target_names, LISTED))
    else:
        text = t.gettext("{targets} affected.").format(targets=targets(t, 0))
    if services:
        text += " " + t.gettext("Services: {services}.").format(
            services=listed(t, services, LISTED)
        )
    text += " " + t.ngettext(
        "Blast radius: {alerts} on {targets}, {count} still firing.",
        "Blast radius: {alerts} on {targets}, {count} still firing.",
        len(firing),
    ).format(
        alerts=alerts(t, len(members)),
        targets=targets(t, len(target_names)),
        count=number(t, len(firing)),
    )
    if incident.status == "resolved" and incident.resolved_at is not None:
        text = t.gettext("Resolved at {when}.").format(when=_when(t, incident.resolved_at)) + (
            " " + text
        )
    return text


def _actions(
    t: Translator, members: Sequence[Member], root: Member, runbooks: Sequence[RunbookRule]
) -> tuple[str, ...]:
    """Runbook actions per alert family, the root cause's family first, each once.

    The runbooks' own actions are the config's words, shown as written."""
    families = [root.alertname] + [name for name, _ in _families(members) if name != root.alertname]
    actions: dict[str, None] = {}
    urls: set[str] = set()
    for family in families:
        in_family = [m for m in members if m.alertname == family]
        if family == root.alertname:
            in_family = [root, *(m for m in in_family if m is not root)]
        rule = next(
            (r for r in runbooks if any(labels_match(r.match, m.labels) for m in in_family)),
            None,
        )
        if rule is None:
            continue
        for action in rule.actions:
            actions.setdefault(action.strip(), None)
        if rule.url is not None and rule.url not in urls:
            urls.add(rule.url)
            runbook = (
                t.gettext("Runbook for {family}: {url}").format(family=family, url=rule.url)
                if family
                else t.gettext("Runbook for unnamed alerts: {url}").format(url=rule.url)
            )
            actions.setdefault(runbook, None)
    if not actions:
        if len(members) > 1:
            actions[
                t.gettext(
                    "Start with {root}: it is the probable root cause, and the other "
                    "alerts are likely its symptoms."
                ).format(root=what(t, root))
            ] = None
        else:
            actions[t.gettext("Check {root}.").format(root=what(t, root))] = None
    return tuple(actions)


def _rule(incident: Incident) -> RootCauseRule:
    facts = incident.root_cause_facts
    return facts.rule if facts is not None else ""


def _has_series(root: Member, context: IncidentContext) -> bool | None:
    """True: context with data; False: unavailable; None: available but empty."""
    found = context.members.get(root.fingerprint)
    if found is None or not found.available:
        return False
    return True if found.series else None


def _strong_anomaly(context: IncidentContext) -> bool:
    return any(e.score >= STRONG_ANOMALY for e in context.anomaly)


def _clamp(value: float, low: float, high: float) -> float:
    return round(min(high, max(low, value)), 2)


def _confidence(
    incident: Incident, members: Sequence[Member], root: Member, context: IncidentContext
) -> float:
    score = CONFIDENCE_BASE
    rule = _rule(incident)
    if rule in _STRUCTURAL_RULES:
        score += 0.2
    elif rule in _TEMPORAL_RULES:
        score += 0.1
    elif rule in _WEAK_RULES:
        score -= 0.1
    series = _has_series(root, context)
    if series is True:
        score += 0.15
    elif series is False:
        score -= 0.15
    if _strong_anomaly(context):
        score += 0.1
    if len(members) == 1 and root.severity.lower() in QUIET_SEVERITIES:
        score -= 0.2
    return _clamp(score, 0.05, 0.95)


def _false_positive(
    incident: Incident, members: Sequence[Member], root: Member, context: IncidentContext
) -> float:
    score = FP_BASE
    if len(members) == 1:
        score += 0.2
    if all(
        m.status == "resolved" and m.ends_at is not None and m.ends_at - m.starts_at <= SHORT_LIVED
        for m in members
    ):
        score += 0.2
    if sum(m.flap_count for m in members) >= 2:
        score += 0.2
    if all(m.severity.lower() in QUIET_SEVERITIES for m in members):
        score += 0.1
    if len(_targets(members)) >= 3:
        score -= 0.1
    facts = incident.root_cause_facts
    if facts is not None and facts.dependents > 0:
        score -= 0.1
    if _strong_anomaly(context):
        score -= 0.1
    return _clamp(score, 0.02, 0.95)
