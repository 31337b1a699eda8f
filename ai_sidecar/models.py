"""Values that flow through the sidecar's pipeline.

An :class:`Alert` is one alert as Alertmanager's webhook delivers it. The worker
folds alerts into :class:`Incident` values (correlation), gives each a
:class:`Priority`, and an analyst fills its :class:`Analysis`. All of them are
immutable: a change is a new value built with :func:`dataclasses.replace`.

Incidents are served as JSON by :func:`incident_to_json`. The store keeps an
incident's header (:func:`incident_header_to_json`) apart from its members
(:func:`member_to_json`), and :func:`incident_from_header` puts them back
together, so the store, the API and the tests agree on one shape. Headers
written before the typed fields existed keep them in an ``"extra"`` object;
:func:`incident_from_header` reads that too.

The domain's vocabulary lives here once: priorities, severity names and their
rank, what an alert is "on" (its target), and how a member is named in text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from ai_sidecar.config import LAYERS, Layer

AlertStatus = Literal["firing", "resolved"]
IncidentStatus = Literal["open", "resolved"]
Priority = Literal["P1", "P2", "P3", "P4"]
PRIORITIES: tuple[Priority, ...] = ("P1", "P2", "P3", "P4")
# Which correlation rule separated the root cause from the runner-up.
RootCauseRule = Literal[
    "only", "upstream", "firing", "layer", "dependents", "earliest", "severity", "fingerprint", ""
]
ROOT_CAUSE_RULES: tuple[RootCauseRule, ...] = (
    "only",
    "upstream",
    "firing",
    "layer",
    "dependents",
    "earliest",
    "severity",
    "fingerprint",
    "",
)
# error, timeout: the analyst failed and is tried again later; declined: it
# chose not to speak (LLM policy, budget, circuit...), and is not; pending: its
# answer is on its way (an LLM call in flight), collected at a later turn.
SkipReason = Literal["error", "timeout", "declined", "pending"]

# Severity names as Prometheus rules spell them, by rank; anything else ranks 0
# (and is "unknown" to the priority table, which scores it apart from "none").
SEVERITY_RANK: Mapping[str, int] = {
    "critical": 4,
    "page": 4,
    "error": 3,
    "major": 3,
    "warning": 2,
    "minor": 2,
    "info": 1,
    "none": 0,
}
# Severities that only inform: their alerts alone are likely noise.
QUIET_SEVERITIES = frozenset(name for name, rank in SEVERITY_RANK.items() if rank <= 1)
# What an alert is "on", for blast radius and the dependents rule: the first of
# these labels the alert has.
TARGET_LABELS = ("instance", "device", "host", "firewall")


def severity_rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity.lower(), 0)


def target_of(labels: Mapping[str, str]) -> str:
    """The thing an alert is about: its first non-empty TARGET_LABELS value, or ""."""
    for name in TARGET_LABELS:
        value = labels.get(name)
        if value:
            return value
    return ""


def on_target(name: str, target: str) -> str:
    """``InterfaceDown on core1``, or the name alone when there is no target."""
    return f"{name} on {target}" if target else name


# Labels the sidecar adds to its enriched copies. An alert carrying
# ENRICHED_LABEL="true" came back from Alertmanager and must never be processed
# again (the loop guard).
ENRICHED_LABEL = "scout_enriched"
INCIDENT_LABEL = "scout_incident"
# An incident's id as a route's path segment. Never U+0000: no store can keep
# it as text (PostgreSQL refuses it), so an id holding one is a 404 at the router.
INCIDENT_ID_SEGMENT = "{id:[^/\x00]+}"
PRIORITY_LABEL = "scout_priority"


# The first root-cause reason of an incident absorbed by another, followed by
# the other's id.
MERGED_REASON = "merged into "


def merged_into(incident: Incident) -> str | None:
    """The id of the incident that absorbed ``incident``, or None."""
    first = incident.root_cause_reasons[0] if incident.root_cause_reasons else ""
    return first.removeprefix(MERGED_REASON) if first.startswith(MERGED_REASON) else None


def notified_priority(incident: Incident) -> Priority:
    """The priority in the enriched copies' label: the incident's peak."""
    return incident.peak_priority or incident.priority


class _Labelled:
    """Shortcuts into the labels every alert carries; shared by Alert and Member."""

    __slots__ = ()
    labels: Mapping[str, str]

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def target(self) -> str:
        return target_of(self.labels)


@dataclass(frozen=True, slots=True)
class Alert(_Labelled):
    """One alert of a webhook payload. ``ends_at`` is None for Go's zero time."""

    fingerprint: str
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None = None
    generator_url: str = ""

    @property
    def is_enriched(self) -> bool:
        return self.labels.get(ENRICHED_LABEL) == "true"


@dataclass(frozen=True, slots=True)
class ReceivedAlert:
    """An alert as the store keeps it: ``seq`` orders processing."""

    seq: int
    alert: Alert
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Member(_Labelled):
    """One distinct alert (by fingerprint) inside an incident.

    A flapping alert stays one member: each re-fire after a resolve bumps
    ``flap_count`` and moves ``starts_at`` to the new episode.
    """

    fingerprint: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    status: AlertStatus
    starts_at: datetime
    first_starts_at: datetime
    ends_at: datetime | None = None
    generator_url: str = ""
    flap_count: int = 0
    duplicates: int = 0

    @property
    def what(self) -> str:
        """How text names it: ``InterfaceDown on core1``, or ``alert <fingerprint>``."""
        return on_target(self.alertname or f"alert {self.fingerprint}", self.target)


@dataclass(frozen=True, slots=True)
class Analysis:
    """What an analyst says about an incident; the LLM fills the same shape.

    ``evidence`` holds the fingerprints of the members that support the root
    cause, and ``false_positives`` those of members judged false positives;
    both name members of the incident the analysis was made for.
    """

    summary: str
    root_cause: str
    impact: str
    actions: tuple[str, ...]
    confidence: float
    false_positive_likelihood: float
    evidence: tuple[str, ...] = ()
    false_positives: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RootCauseFacts:
    """The root-cause ranking in structured form, for analysts.

    ``rule`` is the rule that separated the winner from the runner-up, ``layer``
    the winner's layer and ``dependents`` how many alerts on other targets refer
    to it. ``element`` is the element the winner is about in the dependency graph
    (``core-1 Gi1/0/24``; empty without one) and ``explains`` how many other
    members sit downstream of it (incidents stored before these existed read
    back with the defaults).
    """

    rule: RootCauseRule
    layer: Layer
    dependents: int
    element: str = ""
    explains: int = 0


@dataclass(frozen=True, slots=True)
class AnomalyEvidence:
    """An anomaly model's word on an incident, weighed by priority and cited by analysts.

    ``subject`` names the scored series so a person can find it (``WAN
    throughput of fw-1 wan0``); ``score`` is in [0, 1]; ``band`` describes the
    expected range when the model has one (``120-340 Mbit/s``). ``member`` is
    the fingerprint of the member whose labels the series matched, and
    ``labels`` the series' own labels, ``signal`` among them (both empty when
    the source has none).
    """

    subject: str
    score: float
    band: str | None = None
    member: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if math.isnan(self.score) or not 0.0 <= self.score <= 1.0:
            raise ValueError(f"anomaly score must be in [0, 1], got {self.score!r}")


@dataclass(frozen=True, slots=True)
class SkippedAnalyst:
    """A preferred analyst that failed, so a later one in the chain spoke instead."""

    analyst: str
    reason: SkipReason
    detail: str


@dataclass(frozen=True, slots=True)
class Incident:
    """Correlated alerts. ``version`` grows with every change the worker saves.

    ``peak_priority`` is the highest priority the incident has reached: the
    enriched copies' scout_priority label carries it, because a label change is
    a new alert to Alertmanager, and a lowered label would resolve the copies
    people were notified of while the incident is still open.
    ``analysed_version`` and ``analysed_priority`` say what the saved analysis
    was made for: a mismatch means it must be made again. ``skipped_analysts``
    lists the preferred analysts that failed before ``analyst`` gave it.
    ``anomaly_evidence`` is what the anomaly models said when the priority
    was last worked out, strongest first.
    """

    id: str
    status: IncidentStatus
    group: Mapping[str, str]
    members: Mapping[str, Member]
    created_at: datetime
    updated_at: datetime
    root_cause: str | None = None
    root_cause_reasons: tuple[str, ...] = ()
    priority: Priority = "P4"
    priority_reasons: tuple[str, ...] = ()
    analysis: Analysis | None = None
    analyst: str | None = None
    resolved_at: datetime | None = None
    version: int = 0
    root_cause_facts: RootCauseFacts | None = None
    peak_priority: Priority | None = None
    analysed_version: int | None = None
    analysed_priority: Priority | None = None
    skipped_analysts: tuple[SkippedAnalyst, ...] = ()
    anomaly_evidence: tuple[AnomalyEvidence, ...] = ()

    @property
    def needs_analysis(self) -> bool:
        """The saved analysis (if any) was made for another version or priority."""
        return self.analysed_version != self.version or self.analysed_priority != self.priority

    @property
    def firing(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members.values() if m.status == "firing")


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, the way Alertmanager writes times."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def episode_start(starts_at: datetime) -> datetime:
    """``startsAt`` to the millisecond: what tells one episode of an alert from another.

    Alertmanager's webhook writes ``startsAt`` to the nanosecond (kept here to
    the microsecond), its ``GET /api/v2/alerts`` to the millisecond; the same
    episode read both ways must be the same episode.
    """
    return starts_at.replace(microsecond=starts_at.microsecond // 1000 * 1000)


def _opt_time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _opt_parse(value: str | None) -> datetime | None:
    return None if value is None else parse_time(value)


def member_to_json(member: Member) -> dict[str, Any]:
    return {
        "fingerprint": member.fingerprint,
        "status": member.status,
        "labels": dict(member.labels),
        "annotations": dict(member.annotations),
        "startsAt": format_time(member.starts_at),
        "firstStartsAt": format_time(member.first_starts_at),
        "endsAt": _opt_time(member.ends_at),
        "generatorURL": member.generator_url,
        "flapCount": member.flap_count,
        "duplicates": member.duplicates,
    }


def member_from_json(data: Mapping[str, Any]) -> Member:
    return Member(
        fingerprint=data["fingerprint"],
        status=data["status"],
        labels=dict(data["labels"]),
        annotations=dict(data["annotations"]),
        starts_at=parse_time(data["startsAt"]),
        first_starts_at=parse_time(data["firstStartsAt"]),
        ends_at=_opt_parse(data["endsAt"]),
        generator_url=data["generatorURL"],
        flap_count=data["flapCount"],
        duplicates=data["duplicates"],
    )


def analysis_to_json(analysis: Analysis) -> dict[str, Any]:
    return {
        "summary": analysis.summary,
        "root_cause": analysis.root_cause,
        "impact": analysis.impact,
        "actions": list(analysis.actions),
        "confidence": analysis.confidence,
        "false_positive_likelihood": analysis.false_positive_likelihood,
        "evidence": list(analysis.evidence),
        "falsePositives": list(analysis.false_positives),
    }


def analysis_from_json(data: Mapping[str, Any]) -> Analysis:
    """An analysis as stored or served; one stored before evidence existed has none."""
    return Analysis(
        summary=data["summary"],
        root_cause=data["root_cause"],
        impact=data["impact"],
        actions=tuple(data["actions"]),
        confidence=float(data["confidence"]),
        false_positive_likelihood=float(data["false_positive_likelihood"]),
        evidence=tuple(data.get("evidence", ())),
        false_positives=tuple(data.get("falsePositives", ())),
    )


def incident_header_to_json(incident: Incident) -> dict[str, Any]:
    """Everything about an incident but its member alerts.

    The store keeps members in rows of their own, so a change to one member of
    a 10,000-alert incident rewrites one row, not the whole incident.
    """
    return {
        "id": incident.id,
        "status": incident.status,
        "priority": incident.priority,
        "priorityReasons": list(incident.priority_reasons),
        "group": dict(incident.group),
        "rootCause": incident.root_cause,
        "rootCauseReasons": list(incident.root_cause_reasons),
        "analysis": None if incident.analysis is None else analysis_to_json(incident.analysis),
        "analyst": incident.analyst,
        "createdAt": format_time(incident.created_at),
        "updatedAt": format_time(incident.updated_at),
        "resolvedAt": _opt_time(incident.resolved_at),
        "version": incident.version,
        "rootCauseFacts": _facts_to_json(incident.root_cause_facts),
        "peakPriority": incident.peak_priority,
        "analysedVersion": incident.analysed_version,
        "analysedPriority": incident.analysed_priority,
        "skippedAnalysts": [
            {"analyst": s.analyst, "reason": s.reason, "detail": s.detail}
            for s in incident.skipped_analysts
        ],
        "anomalyEvidence": [evidence_to_json(e) for e in incident.anomaly_evidence],
        "extra": _legacy_extra_of(incident),
    }


def evidence_to_json(evidence: AnomalyEvidence) -> dict[str, Any]:
    return {
        "subject": evidence.subject,
        "score": evidence.score,
        "band": evidence.band,
        "member": evidence.member,
        "labels": dict(evidence.labels),
    }


def _evidence_from_json(data: object) -> tuple[AnomalyEvidence, ...]:
    """Evidence from a header; headers written before it existed have none."""
    if not isinstance(data, list):
        return ()
    return tuple(
        AnomalyEvidence(
            subject=item["subject"],
            score=float(item["score"]),
            band=item.get("band"),
            member=item.get("member", ""),
            labels=dict(item.get("labels", {})),
        )
        for item in data
    )


def _legacy_extra_of(incident: Incident) -> dict[str, Any]:
    """The typed fields in the ``"extra"`` shape the release before them reads.

    That release loads a header with ``dict(data["extra"])``: writing it keeps
    a rollback working on a data directory this release has written to. This
    release reads the typed keys first, so the copy is never the source.
    """
    extra: dict[str, Any] = {}
    if incident.root_cause_facts is not None:
        extra["correlation"] = _facts_to_json(incident.root_cause_facts)
    for key, value in (
        ("peak_priority", incident.peak_priority),
        ("analysed_version", incident.analysed_version),
        ("analysed_priority", incident.analysed_priority),
    ):
        if value is not None:
            extra[key] = value
    return extra


def _facts_to_json(facts: RootCauseFacts | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    found: dict[str, Any] = {
        "rule": facts.rule,
        "layer": facts.layer,
        "dependents": facts.dependents,
    }
    # Only when set: a header without them reads back the same in older releases.
    if facts.element:
        found["element"] = facts.element
    if facts.explains:
        found["explains"] = facts.explains
    return found


def _facts_from_json(data: object) -> RootCauseFacts | None:
    if not isinstance(data, Mapping):
        return None
    rule, layer = data.get("rule", ""), data.get("layer")
    if rule not in ROOT_CAUSE_RULES or layer not in LAYERS:
        return None
    return RootCauseFacts(
        cast(RootCauseRule, rule),
        cast(Layer, layer),
        int(data.get("dependents", 0)),
        str(data.get("element", "")),
        int(data.get("explains", 0)),
    )


def _priority_or_none(value: object) -> Priority | None:
    return value if value in PRIORITIES else None


def _legacy_extra(data: Mapping[str, Any]) -> dict[str, Any]:
    """Typed fields from an ``"extra"`` object, as releases before them wrote headers."""
    extra = data.get("extra")
    if not isinstance(extra, Mapping):
        return {}
    return {
        "rootCauseFacts": extra.get("correlation"),
        "peakPriority": extra.get("peak_priority"),
        "analysedVersion": extra.get("analysed_version"),
        "analysedPriority": extra.get("analysed_priority"),
    }


def incident_to_json(incident: Incident) -> dict[str, Any]:
    """The incidents API's shape (camelCase for times, like Alertmanager)."""
    return {
        **incident_header_to_json(incident),
        "members": list(incident.members),
        "alerts": [member_to_json(m) for m in incident.members.values()],
    }


def incident_from_header(data: Mapping[str, Any], members: Iterable[Member]) -> Incident:
    analysis = data["analysis"]
    typed = {**_legacy_extra(data), **data}
    analysed_version = typed.get("analysedVersion")
    return Incident(
        id=data["id"],
        status=cast(IncidentStatus, data["status"]),
        group=dict(data["group"]),
        members={m.fingerprint: m for m in members},
        created_at=parse_time(data["createdAt"]),
        updated_at=parse_time(data["updatedAt"]),
        root_cause=data["rootCause"],
        root_cause_reasons=tuple(data["rootCauseReasons"]),
        priority=cast(Priority, data["priority"]),
        priority_reasons=tuple(data["priorityReasons"]),
        analysis=None if analysis is None else analysis_from_json(analysis),
        analyst=data["analyst"],
        resolved_at=_opt_parse(data["resolvedAt"]),
        version=data["version"],
        root_cause_facts=_facts_from_json(typed.get("rootCauseFacts")),
        peak_priority=_priority_or_none(typed.get("peakPriority")),
        analysed_version=analysed_version if isinstance(analysed_version, int) else None,
        analysed_priority=_priority_or_none(typed.get("analysedPriority")),
        skipped_analysts=tuple(
            SkippedAnalyst(s["analyst"], s["reason"], s["detail"])
            for s in typed.get("skippedAnalysts", ())
        ),
        anomaly_evidence=_evidence_from_json(data.get("anomalyEvidence")),
    )
