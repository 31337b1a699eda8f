"""Incident headers: the typed fields round-trip, and headers of the last release still load."""

from __future__ import annotations

from dataclasses import replace

from ai_sidecar.models import (
    Analysis,
    AnomalyEvidence,
    RootCauseFacts,
    SkippedAnalyst,
    incident_from_header,
    incident_header_to_json,
    notified_priority,
)
from tests.ai_sidecar.builders import incident, member

# A header exactly as the release before typed fields wrote it: they sat in "extra".
LEGACY_HEADER = {
    "id": "inc-0123456789ab",
    "status": "open",
    "priority": "P3",
    "priorityReasons": ["severity warning (DeviceDown on r1): +25", "score 25: P3 from 25"],
    "group": {"site": "ams"},
    "rootCause": "DeviceDown-r1",
    "rootCauseReasons": ["only alert in the incident: DeviceDown on r1"],
    "analysis": None,
    "analyst": None,
    "createdAt": "2026-11-02T09:00:00Z",
    "updatedAt": "2026-11-02T09:00:00Z",
    "resolvedAt": None,
    "version": 4,
    "extra": {
        "correlation": {"rule": "only", "layer": "device", "dependents": 0},
        "peak_priority": "P1",
        "analysed_version": 4,
        "analysed_priority": "P3",
    },
}


def test_a_header_of_the_last_release_loads_into_typed_fields():
    loaded = incident_from_header(LEGACY_HEADER, [member("DeviceDown", "r1")])
    assert loaded.root_cause_facts == RootCauseFacts("only", "device", 0)
    assert (loaded.peak_priority, loaded.analysed_version, loaded.analysed_priority) == (
        "P1",
        4,
        "P3",
    )
    assert notified_priority(loaded) == "P1"
    assert not loaded.needs_analysis
    assert replace(loaded, version=5).needs_analysis


def test_a_header_without_extra_facts_has_empty_typed_fields():
    bare = {**LEGACY_HEADER, "extra": {}}
    loaded = incident_from_header(bare, [member("DeviceDown", "r1")])
    assert loaded.root_cause_facts is None
    assert loaded.peak_priority is None
    assert loaded.anomaly_evidence == ()
    assert loaded.needs_analysis
    assert notified_priority(loaded) == "P3"


def test_typed_fields_round_trip_through_the_header():
    original = replace(
        incident(member("DeviceDown", "r1")),
        root_cause_facts=RootCauseFacts("layer", "link", 7),
        peak_priority="P2",
        analysed_version=3,
        analysed_priority="P2",
        skipped_analysts=(SkippedAnalyst("gemini", "timeout", "no analysis within 12s"),),
        anomaly_evidence=(
            AnomalyEvidence(
                "WAN throughput of fw-1 wan0",
                0.97,
                "120-340 Mbit/s",
                member="AnomalyDetected-fw-1",
                labels={"signal": "wan_throughput", "instance": "fw-1", "ifName": "wan0"},
            ),
            AnomalyEvidence("host CPU of fw-1", 0.6),
        ),
    )
    header = incident_header_to_json(original)
    # The legacy copy is written for rollbacks but never read over the typed keys.
    header["extra"] = {"peak_priority": "P4", "analysed_version": 1}
    assert header["skippedAnalysts"] == [
        {"analyst": "gemini", "reason": "timeout", "detail": "no analysis within 12s"}
    ]
    assert header["anomalyEvidence"][1] == {
        "subject": "host CPU of fw-1",
        "score": 0.6,
        "band": None,
        "member": "",
        "labels": {},
    }
    assert incident_from_header(header, original.members.values()) == original


def test_a_new_header_still_carries_what_the_last_release_reads_from_extra():
    # A rollback to the release before typed fields loads headers with
    # dict(data["extra"]) and reads these keys: a header without them would
    # stop its worker and its API.
    loaded = incident_from_header(LEGACY_HEADER, [])
    written = incident_header_to_json(loaded)
    assert written["extra"] == LEGACY_HEADER["extra"]
    bare = incident_header_to_json(incident(member("Test", "h1")))
    assert bare["extra"] == {}


def test_an_analysis_keeps_its_evidence_and_false_positives_through_the_header() -> None:
    analysis = Analysis("s", "r", "i", ("a",), 0.7, 0.2, ("fp-root",), ("fp-noise",))
    original = replace(incident(member("DeviceDown", "r1")), analysis=analysis)
    header = incident_header_to_json(original)
    assert header["analysis"]["evidence"] == ["fp-root"]
    assert header["analysis"]["falsePositives"] == ["fp-noise"]
    assert incident_from_header(header, original.members.values()).analysis == analysis


def test_an_analysis_stored_before_evidence_existed_reads_back_without_it() -> None:
    stored = {
        "summary": "s",
        "root_cause": "r",
        "impact": "i",
        "actions": ["a"],
        "confidence": 0.7,
        "false_positive_likelihood": 0.2,
    }
    loaded = incident_from_header({**LEGACY_HEADER, "analysis": stored}, [])
    assert loaded.analysis == Analysis("s", "r", "i", ("a",), 0.7, 0.2)
    assert loaded.analysis.evidence == ()
    assert loaded.analysis.false_positives == ()
