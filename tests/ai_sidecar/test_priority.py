"""Priority: the documented point table, checked through the reasons people read."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from ai_sidecar.config import parse_config
from ai_sidecar.models import AnomalyEvidence
from ai_sidecar.priority import prioritise
from tests.ai_sidecar.builders import T0, incident, member

RULES = parse_config(
    "priority:\n  criticality:\n"
    "    - {match: {site: hq}, level: critical}\n"
    "    - {match: {site: dc.*}, level: high}\n"
    "    - {match: {env: lab}, level: low}\n",
    "rules.yml",
).priority


def test_a_lone_critical_alert_is_p2():
    got = prioritise(incident(member("InterfaceDown", "core1", severity="critical")), RULES, T0)
    assert got == (
        "P2",
        ("severity critical (InterfaceDown on core1): +50", "score 50: P2 from 50"),
    )


@pytest.mark.parametrize(
    ("severity", "priority", "points"),
    [
        ("critical", "P2", 50),
        ("page", "P2", 50),
        ("error", "P3", 40),
        ("warning", "P3", 25),
        ("", "P4", 15),
        ("bogus", "P4", 15),
        ("info", "P4", 5),
        ("none", "P4", 0),
    ],
)
def test_severity_points(severity, priority, points):
    got, reasons = prioritise(incident(member("X", "a", severity=severity)), RULES, T0)
    assert got == priority
    assert reasons[0] == f"severity {severity or 'unset'} (X on a): +{points}"


def test_blast_radius_counts_targets_and_alerts():
    wide = incident(*(member("ProbePacketLoss", f"h{i}") for i in range(20)))
    assert prioritise(wide, RULES, T0) == (
        "P2",
        (
            "severity warning (ProbePacketLoss on h0): +25",
            "blast radius 20 targets: +30",
            "20 alerts: +5",
            "score 60: P2 from 50",
        ),
    )
    few = incident(*(member("ProbePacketLoss", f"h{i}") for i in range(3)))
    assert prioritise(few, RULES, T0)[1][1] == "blast radius 3 targets: +10"


def test_only_firing_members_make_the_blast_radius():
    cleared = [member("ProbePacketLoss", f"h{i}", status="resolved") for i in range(30)]
    got = prioritise(incident(member("HttpDown", "web1"), *cleared), RULES, T0)
    assert got == ("P3", ("severity warning (HttpDown on web1): +25", "score 25: P3 from 25"))


def test_configured_criticality_raises_and_lowers():
    core = incident(member("InterfaceDown", "core1", severity="critical", site="hq"))
    assert prioritise(core, RULES, T0) == (
        "P1",
        (
            "severity critical (InterfaceDown on core1): +50",
            "criticality critical (InterfaceDown on core1): +30",
            "score 80: P1 from 75",
        ),
    )
    lab = incident(member("HostHighCpu", "lab1", env="lab"))
    assert prioritise(lab, RULES, T0) == (
        "P4",
        (
            "severity warning (HostHighCpu on lab1): +25",
            "criticality low (HostHighCpu on lab1): -15",
            "score 10: P4 below 25",
        ),
    )


def test_the_most_critical_member_sets_the_level():
    mixed = incident(
        member("ProbePacketLoss", "lab1", env="lab"),
        member("ProbePacketLoss", "dc-sw1", site="dc2"),
    )
    reasons = prioritise(mixed, RULES, T0)[1]
    assert "criticality high (ProbePacketLoss on dc-sw1): +15" in reasons


def test_duration_adds_points():
    lone = incident(member("HttpDown", "web1"))
    assert prioritise(lone, RULES, T0 + timedelta(minutes=14))[0] == "P3"
    assert prioritise(lone, RULES, T0 + timedelta(minutes=20))[1][1] == "open for 20m: +5"
    reasons = prioritise(lone, RULES, T0 + timedelta(hours=1, minutes=5))[1]
    assert reasons[1:] == ("open for 1h5m: +10", "score 35: P3 from 25")


def test_anomaly_evidence_adds_points_by_its_strongest_score():
    lone = incident(member("InterfaceDown", "core1", severity="critical"))
    evidence = [
        AnomalyEvidence('ifHCInOctets{instance="core1"}', 0.55),
        AnomalyEvidence('ifInErrors{instance="core1"}', 0.93, band="0-2 errors/s"),
    ]
    assert prioritise(lone, RULES, T0, evidence) == (
        "P2",
        (
            "severity critical (InterfaceDown on core1): +50",
            'anomaly score 0.93 (ifInErrors{instance="core1"}, expected 0-2 errors/s): +15',
            "score 65: P2 from 50",
        ),
    )
    weak = [AnomalyEvidence("x", 0.4)]
    assert prioritise(lone, RULES, T0, weak)[1] == prioritise(lone, RULES, T0)[1]


@pytest.mark.parametrize("score", [-0.1, 1.01, math.nan])
def test_anomaly_scores_outside_zero_to_one_are_refused(score):
    with pytest.raises(ValueError, match=r"anomaly score must be in \[0, 1\]"):
        AnomalyEvidence("x", score)


def test_everything_at_once_reads_in_table_order():
    storm = incident(
        member("InterfaceDown", "core1", severity="critical", site="hq"),
        *(member("ProbePacketLoss", f"h{i:02}", site="hq") for i in range(59)),
    )
    priority, reasons = prioritise(
        storm, RULES, T0 + timedelta(hours=2), [AnomalyEvidence("fp", 0.75)]
    )
    assert priority == "P1"
    assert reasons == (
        "severity critical (InterfaceDown on core1): +50",
        "blast radius 60 targets: +30",
        "60 alerts: +10",
        "criticality critical (InterfaceDown on core1): +30",
        "open for 2h: +10",
        "anomaly score 0.75 (fp): +10",
        "score 140: P1 from 75",
    )


def test_a_resolved_incident_is_p4():
    done = incident(
        member("InterfaceDown", "core1", severity="critical", site="hq", status="resolved"),
        resolved_at=T0 + timedelta(minutes=3),
    )
    assert prioritise(done, RULES, T0 + timedelta(hours=2)) == (
        "P4",
        ("resolved at 2026-11-02T09:03:00Z: nothing left to act on",),
    )
