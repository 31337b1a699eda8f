"""Values that flow through the sidecar's pipeline.

An :class:`Alert` is one alert as Alertmanager's webhook delivers it. The worker
folds alerts into :class:`Incident` values (correlation), gives each a
:class:`Priority`, and an analyst fills its :class:`Analysis`. All of them are
immutable: a change is a new value built with :func:`dataclasses.replace`.

Incidents are served as JSON by :func:`incident_to_json`. The store keeps an
incident's header (:func:`incident_header_to_json`) apart from its members
(:func:`member_to_json`), and :func:`incident_from_header` puts them back
together, so the store, the API and the tests agree on one shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

AlertStatus = Literal["firing", "resolved"]
IncidentStatus = Literal["open", "resolved"]
Priority = Literal["P1", "P2", "P3", "P4"]
PRIORITIES: tuple[Priority, ...] = ("P1", "P2", "P3", "P4")

# Labels the sidecar adds to its enriched copies. An alert carrying
# ENRICHED_LABEL="true" came back from Alertmanager and must never be processed
# again (the loop guard).
ENRICHED_LABEL = "scout_enriched"
INCIDENT_LABEL = "scout_incident"
PRIORITY_LABEL = "scout_priority"


# Incident.extra key: the highest priority an incident has reached. The
# enriched copies' scout_priority label carries it, because a label change is a
# new alert to Alertmanager: a lowered label would resolve the copies people
# were notified of while the incident is still open.
PEAK_PRIORITY = "peak_priority"


def notified_priority(incident: Incident) -> Priority:
    """The priority in the enriched copies' label: the incident's peak."""
    peak = incident.extra.get(PEAK_PRIORITY)
    return peak if peak in PRIORITIES else incident.priority


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
    def identity(self) -> tuple[str, AlertStatus, datetime]:
        """What makes a delivery new: a repeat of it is a duplicate."""
        return (self.fingerprint, self.status, self.starts_at)

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


@dataclass(frozen=True, slots=True)
class Analysis:
    """What an analyst says about an incident; the LLM fills the same shape."""

    summary: str
    root_cause: str
    impact: str
    actions: tuple[str, ...]
    confidence: float
    false_positive_likelihood: float


@dataclass(frozen=True, slots=True)
class Incident:
    """Correlated alerts. ``version`` grows with every change the worker saves."""

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
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def firing(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members.values() if m.status == "firing")


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, the way Alertmanager writes times."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


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
    }


def analysis_from_json(data: Mapping[str, Any]) -> Analysis:
    return Analysis(
        summary=data["summary"],
        root_cause=data["root_cause"],
        impact=data["impact"],
        actions=tuple(data["actions"]),
        confidence=float(data["confidence"]),
        false_positive_likelihood=float(data["false_positive_likelihood"]),
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
        "extra": dict(incident.extra),
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
        extra=dict(data["extra"]),
    )


def incident_from_json(data: Mapping[str, Any]) -> Incident:
    return incident_from_header(data, (member_from_json(m) for m in data["alerts"]))
