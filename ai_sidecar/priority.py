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

from ai_sidecar.anomaly.evidence import evidence_band, evidence_subject
from ai_sidecar.config import Level, PriorityConfig
from ai_sidecar.correlate import wording
from ai_sidecar.i18n import SOURCE_LANGUAGE, Translator
from ai_sidecar.models import (
    SEVERITY_RANK,
    AnomalyEvidence,
    Incident,
    Member,
    Priority,
)

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


def _what(t: Translator, member: Member) -> str:
    return wording.on_target(t, member.alertname or member.fingerprint, member.target)


def prioritise(
    incident: Incident,
    rules: PriorityConfig,
    now: datetime,
    anomaly: Sequence[AnomalyEvidence] = (),
    language: str = SOURCE_LANGUAGE,
) -> tuple[Priority, tuple[str, ...]]:
    """The incident's priority and, in table order, the reasons that add up to it
    (in ``language``; the numbers that add up are the same in every language)."""
    t = wording.analysis_translator(language)
    if incident.status == "resolved":
        if incident.resolved_at is None:
            return "P4", (t.gettext("resolved: nothing left to act on"),)
        when = wording.when(t, incident.resolved_at)
        return "P4", (t.gettext("resolved at {when}: nothing left to act on").format(when=when),)
    # Sorted so equal-scoring members always yield the same wording.
    active = sorted(
        incident.firing or tuple(incident.members.values()), key=lambda m: m.fingerprint
    )
    reasons: list[str] = []
    score = 0

    worst = max(active, key=_severity_points)
    points = _severity_points(worst)
    score += points
    reasons.append(
        t.gettext("severity {severity} ({alert}): +{points}").format(
            severity=worst.severity or t.gettext("unset"), alert=_what(t, worst), points=points
        )
    )

    targets = {m.target or m.fingerprint for m in active}
    points = _step(len(targets), TARGET_POINTS)
    if points:
        score += points
        reasons.append(
            t.gettext("blast radius {targets}: +{points}").format(
                targets=wording.targets(t, len(targets)), points=points
            )
        )
    points = _step(len(active), ALERT_POINTS)
    if points:
        score += points
        reasons.append(
            t.gettext("{alerts}: +{points}").format(
                alerts=wording.alerts(t, len(active)), points=points
            )
        )

    levels = [(rules.level_of(m.labels), m) for m in active]
    level, member = min(levels, key=lambda pair: _LEVEL_ORDER.index(pair[0]))
    points = CRITICALITY_POINTS[level]
    if points:
        score += points
        reasons.append(
            t.gettext("criticality {level} ({alert}): {points}").format(
                level=level, alert=_what(t, member), points=f"{points:+d}"
            )
        )

    lasted = now - incident.created_at
    points = _step(lasted.total_seconds(), [(t.total_seconds(), p) for t, p in DURATION_POINTS])
    if points:
        score += points
        shown = wording.lasting(t, timedelta(seconds=int(lasted.total_seconds())))
        reasons.append(
            t.gettext("open for {lasted}: +{points}").format(lasted=shown, points=points)
        )

    if anomaly:
        strongest = max(anomaly, key=lambda e: (e.score, e.subject))
        points = _step(strongest.score, ANOMALY_POINTS)
        if points:
            score += points
            reasons.append(
                (
                    t.gettext("anomaly score {score} ({subject}, expected {band}): +{points}")
                    if strongest.band
                    else t.gettext("anomaly score {score} ({subject}): +{points}")
                ).format(
                    score=wording.score(t, strongest.score),
                    subject=evidence_subject(strongest, t),
                    band=evidence_band(strongest, t),
                    points=points,
                )
            )

    priority: Priority = next((p for least, p in THRESHOLDS if score >= least), "P4")
    floor = next((least for least, p in THRESHOLDS if p == priority), None)
    rule = (
        t.gettext("{priority} from {floor}").format(priority=priority, floor=floor)
        if floor is not None
        else t.gettext("P4 below {floor}").format(floor=THRESHOLDS[-1][0])
    )
    reasons.append(t.gettext("score {score}: {rule}").format(score=score, rule=rule))
    return priority, tuple(reasons)
