"""Small builders for alerts, incidents and webhook payloads, shared by the sidecar's tests."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ai_sidecar.context import MemberContext
from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.models import (
    Alert,
    AlertStatus,
    Analysis,
    Incident,
    IncidentStatus,
    Member,
    Priority,
    format_time,
)
from ai_sidecar.notify import fingerprint as alertmanager_fingerprint

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def fingerprint(labels: dict[str, str]) -> str:
    text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def alert(
    alertname: str,
    *,
    status: AlertStatus = "firing",
    at: timedelta = timedelta(0),
    ends: timedelta | None = None,
    severity: str = "warning",
    **labels: str,
) -> Alert:
    """An alert that started ``at`` after T0; fingerprint derived from its labels."""
    all_labels = {"alertname": alertname, "severity": severity, **labels}
    return Alert(
        fingerprint=fingerprint(all_labels),
        status=status,
        labels=all_labels,
        annotations={"summary": f"{alertname} on {labels.get('instance', '?')}"},
        starts_at=T0 + at,
        ends_at=None if ends is None else T0 + ends,
        generator_url="",
    )


def alert_json(item: Alert) -> dict[str, Any]:
    """One alert the way Alertmanager's webhook v4 writes it."""
    return {
        "status": item.status,
        "labels": dict(item.labels),
        "annotations": dict(item.annotations),
        "startsAt": format_time(item.starts_at),
        "endsAt": "0001-01-01T00:00:00Z" if item.ends_at is None else format_time(item.ends_at),
        "generatorURL": item.generator_url,
        "fingerprint": item.fingerprint,
    }


def payload(*alerts: Alert, truncated: int = 0) -> dict[str, Any]:
    firing = any(a.status == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": truncated,
        "status": "firing" if firing else "resolved",
        "receiver": "scout-sidecar",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [alert_json(a) for a in alerts],
    }


def member_of(item: Alert) -> Member:
    """The incident member ``item`` becomes when it is first folded."""
    return Member(
        fingerprint=item.fingerprint,
        labels=item.labels,
        annotations=item.annotations,
        status=item.status,
        starts_at=item.starts_at,
        first_starts_at=item.starts_at,
        ends_at=item.ends_at,
        generator_url=item.generator_url,
    )


def stored_incident(
    incident_id: str,
    *members: Member,
    status: IncidentStatus = "open",
    priority: Priority = "P2",
    updated_at: datetime = T0,
    resolved_at: datetime | None = None,
) -> Incident:
    """An incident created at T0; without ``members``, one firing member of its own."""
    if not members:
        members = (member_of(alert("InterfaceDown", instance=f"sw-{incident_id}")),)
    return Incident(
        id=incident_id,
        status=status,
        group={"site": "hq"},
        members={m.fingerprint: m for m in members},
        created_at=T0,
        updated_at=updated_at,
        priority=priority,
        resolved_at=resolved_at,
    )


def member(
    alertname: str = "Test",
    instance: str | None = None,
    *,
    severity: str = "warning",
    status: AlertStatus = "firing",
    generator_url: str = "",
    fingerprint: str | None = None,
    **labels: str,
) -> Member:
    """A member that started at T0; its fingerprint is ``alertname-instance`` unless given."""
    all_labels = {"alertname": alertname, "severity": severity, **labels}
    if instance is not None:
        all_labels["instance"] = instance
    return Member(
        fingerprint=fingerprint or f"{alertname}-{instance or ''}",
        labels=all_labels,
        annotations={},
        status=status,
        starts_at=T0,
        first_starts_at=T0,
        generator_url=generator_url,
    )


def incident(*members: Member, resolved_at: datetime | None = None) -> Incident:
    """An incident of ``members`` created at T0, resolved at ``resolved_at`` if given."""
    return Incident(
        id="inc-test",
        status="open" if resolved_at is None else "resolved",
        group={"site": "x"},
        members={m.fingerprint: m for m in members},
        created_at=T0,
        updated_at=T0,
        resolved_at=resolved_at,
    )


class FailingAnalyst:
    """An analyst that always raises, as a buggy one or an LLM without quota would."""

    def __init__(self, name: str = "broken", message: str = "analyst bug") -> None:
        self.name = name
        self._message = message

    async def analyse(self, incident: Incident, context: IncidentContext) -> Analysis:
        raise RuntimeError(self._message)


class OfflineContext:
    """A metrics-context source without Prometheus; records which members it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def context(self, member: Member) -> MemberContext:
        self.asked.append(member.fingerprint)
        return MemberContext(member.fingerprint, False, "no Prometheus in this test")


# --- incidents for the return trip, against real Alertmanagers ----------------------------

ANALYSIS = Analysis(
    summary="<!channel> Uplink of site A is down",
    root_cause="sw1 Gi0/1 lost carrier",
    impact="Site A is offline",
    actions=("Check the SFP on sw1 Gi0/1", "Call the carrier"),
    confidence=0.8,
    false_positive_likelihood=0.1,
)


def peer_member(
    alertname: str,
    instance: str = "sw1",
    *,
    status: AlertStatus = "firing",
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    generator_url: str = "http://prometheus.example/graph?g0.expr=up",
    **labels: str,
) -> Member:
    """A member as Alertmanager would hold it: its fingerprint, started a minute before now
    (Alertmanager judges times against its own clock)."""
    start = starts_at or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    item = alert(alertname, status=status, severity="critical", instance=instance, **labels)
    return replace(
        member_of(item),
        fingerprint=alertmanager_fingerprint(item.labels),
        starts_at=start,
        first_starts_at=start,
        ends_at=ends_at,
        generator_url=generator_url,
    )


def analysed_incident(
    *members: Member,
    id: str = "inc-1",
    priority: Priority = "P2",
    status: IncidentStatus = "open",
    analysis: Analysis | None = ANALYSIS,
    resolved_at: datetime | None = None,
) -> Incident:
    """An incident of ``members`` created now, with :data:`ANALYSIS` unless told otherwise."""
    now = datetime.now(UTC)
    return Incident(
        id=id,
        status=status,
        group={"site": "a"},
        members={m.fingerprint: m for m in members},
        created_at=now,
        updated_at=now,
        priority=priority,
        analysis=analysis,
        resolved_at=resolved_at,
    )
