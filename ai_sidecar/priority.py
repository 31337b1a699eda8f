"""Priority: how urgent an incident is, as P1..P4 with the reasons that add up to it.

An incident scores points from a fixed table, and the total picks the priority.
The active members are the firing ones (all members if none fires):

==================  ==============================================  ==========
factor              rule                                            points
==================  ==============================================  ==========
severity            highest among active members: critical/page     50
                    error/major                                     40
                    warning/minor                                   25
                    missing or unknown                              15
                    info                                            5
                    none                                            0
targets             distinct targets of active members: >= 20       30
                    >= 5                                            20
                    >= 2                                            10
alerts              active members: >= 50                           10
                    >= 10                                           5
criticality         highest configured level of any active member:
                    critical / high / normal / low                  30/15/0/-15
duration            open for (now - created_at): >= 1h              10
                    >= 15m                                          5
anomaly             highest evidence score: >= 0.9                  15
                    >= 0.7                                          10
                    >= 0.5                                          5
==================  ==============================================  ==========

P1 from 75 points, P2 from 50, P3 from 25, else P4. So a lone critical alert is
P2, a lone warning P3, and a critical one on a critical site, or on 20 targets,
is P1. A resolved incident is P4: nothing is left to do urgently.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from ai_sidecar.config import Level, PriorityConfig
from ai_sidecar.correlation import plural
from ai_sidecar.models import (
    SEVERITY_RANK,
    AnomalyEvidence,
    Incident,
    Member,
    Priority,
    format_time,
    on_target,
)
from exporter.common.durations import format_duration

# Points by severity rank (models.SEVERITY_RANK): critical/page, error/major,
# warning/minor, info, none.
SEVERITY_RANK_POINTS = {4: 50, 3: 40, 2: 25, 1: 5, 0: 0}
# An alert rule without a severity label is probably not a mere notice.
UNKNOWN_SEVERITY_POINTS = 15
# (at least, points): the first row reached applies.
TARGET_POINTS = ((20, 30), (5, 20), (2, 10))
ALERT_POINTS = ((50, 10), (10, 5))
CRITICALITY_POINTS: dict[Level, int] = {"critical": 30, "high": 15, "normal": 0, "low": -15}
DURATION_POINTS = ((timedelta(hours=1), 10), (timedelta(minutes=15), 5))
ANOMALY_POINTS = ((0.9, 15), (0.7, 10), (0.5, 5))
THRESHOLDS: tuple[tuple[int, Priority], ...] = ((75, "P1"), (50, "P2"), (25, "P3"))
_LEVEL_ORDER: tuple[Level, ...] = ("critical", "high", "normal", "low")


class AnomalyEvidenceSource(Protocol):
    """Anomaly scores relevant to an incident: the seam the anomaly models fill.

    The worker asks while it prioritises and analyses, so an answer must come
    quickly and never as an exception: a source that cannot tell says nothing
    (``()``). :class:`ai_sidecar.anomaly.evidence.ScrapedAnomalyEvidence`
    reads the scores back from Prometheus.
    """

    async def evidence(self, incident: Incident) -> Sequence[AnomalyEvidence]: ...


class NoAnomalyEvidence:
    """The evidence source without a Prometheus to read scores from: never any evidence."""

    async def evidence(self, incident: Incident) -> Sequence[AnomalyEvidence]:
        return ()


def _step(value: float, table: Sequence[tuple[float, int]]) -> int:
    return next((points for least, points in table if value >= least), 0)


def _severity_points(member: Member) -> int:
    rank = SEVERITY_RANK.get(member.severity.lower())
    return UNKNOWN_SEVERITY_POINTS if rank is None else SEVERITY_RANK_POINTS[rank]


def _what(member: Member) -> str:
    return on_target(member.alertname or member.fingerprint, member.target)


def prioritise(
    incident: Incident,
    rules: PriorityConfig,
    now: datetime,
    anomaly: Sequence[AnomalyEvidence] = (),
) -> tuple[Priority, tuple[str, ...]]:
    """The incident's priority and, in table order, the reasons that add up to it."""
    if incident.status == "resolved":
        when = "" if incident.resolved_at is None else f" at {format_time(incident.resolved_at)}"
        return "P4", (f"resolved{when}: nothing left to act on",)
    # Sorted so equal-scoring members always yield the same wording.
    active = sorted(
        incident.firing or tuple(incident.members.values()), key=lambda m: m.fingerprint
    )
    reasons: list[str] = []
    score = 0

    worst = max(active, key=_severity_points)
    points = _severity_points(worst)
    score += points
    reasons.append(f"severity {worst.severity or 'unset'} ({_what(worst)}): +{points}")

    targets = {m.target or m.fingerprint for m in active}
    points = _step(len(targets), TARGET_POINTS)
    if points:
        score += points
        reasons.append(f"blast radius {plural(len(targets), 'target')}: +{points}")
    points = _step(len(active), ALERT_POINTS)
    if points:
        score += points
        reasons.append(f"{plural(len(active), 'alert')}: +{points}")

    levels = [(rules.level_of(m.labels), m) for m in active]
    level, member = min(levels, key=lambda pair: _LEVEL_ORDER.index(pair[0]))
    points = CRITICALITY_POINTS[level]
    if points:
        score += points
        reasons.append(f"criticality {level} ({_what(member)}): {points:+d}")

    lasted = now - incident.created_at
    points = _step(lasted.total_seconds(), [(t.total_seconds(), p) for t, p in DURATION_POINTS])
    if points:
        score += points
        shown = format_duration(timedelta(seconds=int(lasted.total_seconds())))
        reasons.append(f"open for {shown}: +{points}")

    if anomaly:
        strongest = max(anomaly, key=lambda e: (e.score, e.subject))
        points = _step(strongest.score, ANOMALY_POINTS)
        if points:
            score += points
            band = f", expected {strongest.band}" if strongest.band else ""
            reasons.append(
                f"anomaly score {strongest.score:.2f} ({strongest.subject}{band}): +{points}"
            )

    priority: Priority = next((p for least, p in THRESHOLDS if score >= least), "P4")
    floor = next((least for least, p in THRESHOLDS if p == priority), None)
    rule = f"{priority} from {floor}" if floor is not None else f"P4 below {THRESHOLDS[-1][0]}"
    reasons.append(f"score {score}: {rule}")
    return priority, tuple(reasons)
