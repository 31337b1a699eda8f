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

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from ai_sidecar.config import RunbookRule, labels_match
from ai_sidecar.correlate import INTERFACE_LABELS
from ai_sidecar.correlation import plural
from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.models import (
    QUIET_SEVERITIES,
    Analysis,
    Incident,
    Member,
    RootCauseRule,
    format_time,
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
    """The local analysis; a pure function, so tests and replays can call it directly."""
    members = sorted(incident.members.values(), key=lambda m: m.fingerprint)
    root = incident.members.get(incident.root_cause or "") or _earliest(members)
    return Analysis(
        summary=_summary(incident, members, root),
        root_cause=_root_cause(incident, root, context),
        impact=_impact(incident, members),
        actions=_actions(members, root, runbooks),
        confidence=_confidence(incident, members, root, context),
        false_positive_likelihood=_false_positive(incident, members, root, context),
        # The root cause's own alert is what the explanation rests on.
        evidence=(root.fingerprint,),
    )


def _earliest(members: Sequence[Member]) -> Member:
    return min(members, key=lambda m: (m.first_starts_at, m.fingerprint))


def _when(value: datetime) -> str:
    """RFC 3339 in UTC, to the second: people read it in notifications."""
    return format_time(value.replace(microsecond=0))


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def _targets(members: Iterable[Member]) -> list[str]:
    return sorted({m.target for m in members} - {""})


def _families(members: Iterable[Member]) -> list[tuple[str, int]]:
    """(alertname, count), most frequent first."""
    counts: dict[str, int] = {}
    for member in members:
        counts[member.alertname] = counts.get(member.alertname, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _summary(incident: Incident, members: Sequence[Member], root: Member) -> str:
    firing = sum(1 for m in members if m.status == "firing")
    where = ", ".join(f"{k}={v}" for k, v in sorted(incident.group.items()))
    targets = _targets(members)
    families = _listed(f"{name or 'unnamed'} ({count})" for name, count in _families(members))
    state = "resolved" if incident.status == "resolved" else "open"
    text = (
        f"{state.capitalize()} incident for {where} since {_when(incident.created_at)}, "
        f"root cause {root_named(incident, root)}: "
        f"{plural(len(members), 'alert')} ({firing} firing, {len(members) - firing} resolved) "
        f"on {plural(len(targets), 'target')}: {families}."
    )
    if len(members) > 1:
        text += (
            f" {plural(len(members) - 1, 'alert')} folded in behind {root.what} "
            "instead of notifying separately."
        )
    duplicates = sum(m.duplicates for m in members)
    flaps = sum(m.flap_count for m in members)
    flapping = sum(1 for m in members if m.flap_count)
    deduplicated = []
    if duplicates:
        noun = "repeated delivery" if duplicates == 1 else "repeated deliveries"
        deduplicated.append(f"{duplicates} {noun}")
    if flaps:
        deduplicated.append(f"{plural(flaps, 'flap')} of {plural(flapping, 'alert')}")
    if deduplicated:
        text += " Deduplicated: " + " and ".join(deduplicated) + "."
    return text


def root_named(incident: Incident, root: Member) -> str:
    """``InterfaceDown on core-1 Gi1/0/24 (link core-1 Gi1/0/24 - sw-dist-3 eth0)``.

    The alert, its device and the element it is about: the interface when the
    alert names one, and the link the dependency graph found that port on.
    """
    device = root.target
    interface = next((root.labels[n] for n in INTERFACE_LABELS if root.labels.get(n)), "")
    where = f"{device} {interface}".strip()
    text = f"{root.alertname} on {where}" if where else root.alertname
    facts = incident.root_cause_facts
    if facts is not None and " - " in facts.element:
        text += f" (link {facts.element})"
    return text


def _root_cause(incident: Incident, root: Member, context: IncidentContext) -> str:
    facts = incident.root_cause_facts
    layer = f" ({facts.layer} layer)" if facts is not None else ""
    text = f"{root_named(incident, root)}{layer} is the probable root cause."
    if incident.root_cause_reasons:
        text += " Why: " + "; ".join(incident.root_cause_reasons) + "."
    member_context = context.members.get(root.fingerprint)
    if member_context is None:
        text += " Prometheus context unavailable: not queried for this alert."
    else:
        text += f" {member_context.describe()}."
    text += _anomaly_sentence(incident, root, context)
    return text


def _anomaly_sentence(incident: Incident, root: Member, context: IncidentContext) -> str:
    """`` InterfaceDown on sw-core-1 coincides with an anomaly score 0.97 on ...``.

    The strongest three pieces of evidence, each with its series (signal,
    device, element) and the band the model expected; "" without evidence.
    """
    evidence = sorted(context.anomaly, key=lambda e: (-e.score, e.subject))[:CITED_ANOMALIES]
    if not evidence:
        return ""
    shown = [
        f"{e.score:.2f} on {e.subject}" + (f" (expected {e.band})" if e.band else "")
        for e in evidence
    ]
    listed = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    scores = "an anomaly score" if len(shown) == 1 else "anomaly scores"
    return f" {root_named(incident, root)} coincides with {scores} {listed}."


def _impact(incident: Incident, members: Sequence[Member]) -> str:
    firing = [m for m in members if m.status == "firing"]
    targets = _targets(members)
    services = sorted({m.labels.get("service") or m.labels.get("job") or "" for m in members})
    services = [s for s in services if s]
    text = f"{plural(len(targets), 'target')} affected"
    text += f": {_listed(targets)}." if targets else "."
    if services:
        text += f" Services: {_listed(services)}."
    text += (
        f" Blast radius: {plural(len(members), 'alert')} on {plural(len(targets), 'target')},"
        f" {len(firing)} still firing."
    )
    if incident.status == "resolved" and incident.resolved_at is not None:
        text = f"Resolved at {_when(incident.resolved_at)}. " + text
    return text


def _actions(
    members: Sequence[Member], root: Member, runbooks: Sequence[RunbookRule]
) -> tuple[str, ...]:
    """Runbook actions per alert family, the root cause's family first, each once."""
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
            actions.setdefault(f"Runbook for {family or 'unnamed alerts'}: {rule.url}", None)
    if not actions:
        if len(members) > 1:
            actions[
                f"Start with {root.what}: it is the probable root cause, and the other "
                "alerts are likely its symptoms."
            ] = None
        else:
            actions[f"Check {root.what}."] = None
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
