"""The local analyst: exact, deterministic explanations of correlated storms."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from ai_sidecar.config import parse_config
from ai_sidecar.context import MemberContext, SeriesContext
from ai_sidecar.enrichment.base import Analyst, IncidentContext
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.models import AnomalyEvidence, Incident
from tests.ai_sidecar.replay import (
    correlator,
    fold,
    make,
    refired,
    resolved,
    storm,
)

RUNBOOKS = parse_config(
    """
runbooks:
  - match: {alertname: InterfaceDown}
    actions:
      - Check the optic and the patch lead on both ends.
      - Look for err-disabled ports in the switch log.
    url: https://wiki.example.net/runbooks/interface-down
  - match: {alertname: "Probe.*"}
    actions: [Check the probe's own uplink first.]
    url: https://wiki.example.net/runbooks/probes
  - match: {alertname: HttpDown}
    actions: [Check the probe's own uplink first.]
""",
    "runbooks.yml",
).runbooks
LINK_CONTEXT = MemberContext(
    "",
    True,
    query='ifOperStatus{ifName="Te1/1/1"}',
    series=(SeriesContext({"instance": "core1", "ifName": "Te1/1/1"}, 2.0, 1.0, 2.0, "falling"),),
    lookback=timedelta(minutes=15),
)


def core_link_incident() -> Incident:
    """hq's core storm, with one repeated delivery and one probe already clear."""
    alerts = storm("core-link-down.yml")
    changes = fold(correlator(), [*alerts, alerts[0], resolved(alerts[1], 100)])
    return changes[-1].incident


def with_root_context(incident: Incident, context: MemberContext) -> IncidentContext:
    assert incident.root_cause is not None
    return IncidentContext(members={incident.root_cause: replace(context, fingerprint="x")})


async def test_core_link_storm_is_explained_from_facts():
    incident = core_link_incident()
    analysis = await LocalAnalyst(RUNBOOKS).analyse(
        incident, with_root_context(incident, LINK_CONTEXT)
    )
    assert analysis.summary == (
        "Open incident for site=hq since 2026-11-02T09:00:00Z, root cause InterfaceDown on core1 "
        "Te1/1/1: 9 alerts (8 firing, 1 resolved) on 8 targets: ProbePacketLoss (4), "
        "HttpDown (2), HostHighCpu (1), InterfaceDown (1), "
        "ProbeHighLatency (1). 8 alerts folded in behind InterfaceDown on core1 instead of "
        "notifying separately. Deduplicated: 1 repeated delivery."
    )
    assert analysis.root_cause == (
        "InterfaceDown on core1 Te1/1/1 (link layer) is the probable root cause. Why: "
        "still firing: InterfaceDown on core1; 1 resolved alert ranks after it; lowest layer: link "
        "(InterfaceDown) below network, host and service; 7 alerts on other targets refer to "
        'core1. ifOperStatus{ifName="Te1/1/1"}: {ifName="Te1/1/1", instance="core1"} now 2, '
        "falling 1 → 2 over 15m."
    )
    assert analysis.impact == (
        "8 targets affected: core1, printer3, srv-app1, srv-app2, srv-db1, srv-db2, web1, web2. "
        "Services: web. Blast radius: 9 alerts on 8 targets, 8 still firing."
    )
    # The root cause's family first, then by size; each action and url once.
    assert analysis.actions == (
        "Check the optic and the patch lead on both ends.",
        "Look for err-disabled ports in the switch log.",
        "Runbook for InterfaceDown: https://wiki.example.net/runbooks/interface-down",
        "Check the probe's own uplink first.",
        "Runbook for ProbePacketLoss: https://wiki.example.net/runbooks/probes",
    )
    # 0.5, +0.2 decided by layer, +0.15 Prometheus context.
    assert analysis.confidence == 0.85
    # 0.2, -0.1 three or more targets, -0.1 the root cause has dependents.
    assert analysis.false_positive_likelihood == 0.02
    # The root cause's own alert is the evidence; no member is judged noise.
    assert analysis.evidence == (incident.root_cause,)
    assert analysis.false_positives == ()


async def test_unavailable_context_is_said_and_lowers_confidence():
    incident = core_link_incident()
    down = MemberContext("", False, "Prometheus did not answer within 2s", "ifOperStatus")
    analysis = await LocalAnalyst(RUNBOOKS).analyse(incident, with_root_context(incident, down))
    assert analysis.root_cause.endswith(
        "Prometheus context unavailable: Prometheus did not answer within 2s."
    )
    # 0.5 + 0.2 (layer) - 0.15 (no context), against 0.85 with it.
    assert analysis.confidence == 0.55
    not_asked = await LocalAnalyst(RUNBOOKS).analyse(incident, IncidentContext())
    assert not_asked.root_cause.endswith(
        "Prometheus context unavailable: not queried for this alert."
    )
    assert not_asked.confidence == 0.55


async def test_anomaly_evidence_is_cited_and_counts():
    incident = core_link_incident()
    context = IncidentContext(
        members=with_root_context(incident, LINK_CONTEXT).members,
        anomaly=(
            AnomalyEvidence('ifHCInOctets{instance="core1"}', 0.82, "1-5 Gbit/s"),
            AnomalyEvidence("probe_rtt_seconds", 0.4),
        ),
    )
    analysis = await LocalAnalyst(RUNBOOKS).analyse(incident, context)
    assert analysis.root_cause.endswith(
        " InterfaceDown on core1 Te1/1/1 coincides with anomaly scores"
        ' 0.82 on ifHCInOctets{instance="core1"} (expected 1-5 Gbit/s)'
        " and 0.40 on probe_rtt_seconds."
    )
    assert analysis.confidence == 0.95
    assert analysis.false_positive_likelihood == 0.02


async def test_one_piece_of_evidence_reads_as_one_sentence_naming_series_and_device():
    incident = core_link_incident()
    wan = AnomalyEvidence(
        "WAN throughput of fw-1 wan0",
        0.97,
        "120-340 Mbit/s",
        member="AnomalyDetected-fw-1",
        labels={"signal": "wan_throughput", "instance": "fw-1", "ifName": "wan0"},
    )
    context = IncidentContext(members=with_root_context(incident, LINK_CONTEXT).members)
    without = await LocalAnalyst(RUNBOOKS).analyse(incident, context)
    analysis = await LocalAnalyst(RUNBOOKS).analyse(incident, replace(context, anomaly=(wan,)))
    assert analysis.root_cause == (
        without.root_cause + " InterfaceDown on core1 Te1/1/1 coincides with an anomaly score"
        " 0.97 on WAN throughput of fw-1 wan0 (expected 120-340 Mbit/s)."
    )
    # Only the strongest three are cited.
    many = tuple(AnomalyEvidence(f"signal {n} of fw-1", 0.5 + n / 100) for n in range(5))
    cited = await LocalAnalyst(RUNBOOKS).analyse(incident, replace(context, anomaly=many))
    assert cited.root_cause.endswith(
        "coincides with anomaly scores 0.54 on signal 4 of fw-1, 0.53 on signal 3 of fw-1"
        " and 0.52 on signal 2 of fw-1."
    )


async def test_a_single_short_lived_flapping_info_alert_looks_like_a_false_positive():
    blip = make("InterfaceFlapping", 0, severity="info", site="branch", instance="br-sw2")
    history = [blip, resolved(blip, 30)]
    for n in range(1, 3):
        history += [refired(blip, 120 * n), resolved(refired(blip, 120 * n), 120 * n + 20)]
    incident = fold(correlator(), history)[-1].incident
    analysis = await LocalAnalyst(()).analyse(incident, IncidentContext())
    assert analysis.summary == (
        "Resolved incident for site=branch since 2026-11-02T09:00:00Z, root cause "
        "InterfaceFlapping on br-sw2: 1 alert (0 firing, 1 resolved) on 1 target: "
        "InterfaceFlapping (1). Deduplicated: 2 flaps of 1 alert."
    )
    assert analysis.impact == (
        "Resolved at 2026-11-02T09:04:20Z. 1 target affected: br-sw2. "
        "Blast radius: 1 alert on 1 target, 0 still firing."
    )
    assert analysis.actions == ("Check InterfaceFlapping on br-sw2.",)
    # 0.2 + 0.2 single + 0.2 short-lived + 0.2 flapping + 0.1 info only.
    assert analysis.false_positive_likelihood == 0.9
    # 0.5 - 0.15 no context - 0.2 a lone info alert.
    assert analysis.confidence == 0.15


async def test_without_runbooks_the_root_cause_is_the_first_action():
    analysis = await LocalAnalyst(()).analyse(core_link_incident(), IncidentContext())
    assert analysis.actions == (
        "Start with InterfaceDown on core1: it is the probable root cause, and the other "
        "alerts are likely its symptoms.",
    )


async def test_same_input_gives_byte_identical_output_whatever_the_member_order():
    incident = core_link_incident()
    shuffled = replace(incident, members=dict(reversed(list(incident.members.items()))))
    context = with_root_context(incident, LINK_CONTEXT)
    analyst: Analyst = LocalAnalyst(RUNBOOKS)
    first = await analyst.analyse(incident, context)
    again = await analyst.analyse(incident, context)
    reordered = await analyst.analyse(shuffled, context)
    assert repr(first) == repr(again) == repr(reordered)
    assert analyst.name == "local"


async def test_times_people_read_are_to_the_second():
    """Alertmanager's startsAt carries microseconds; the summary shows whole seconds."""
    incident = core_link_incident()
    started = incident.created_at.replace(microsecond=446160)
    analysis = await LocalAnalyst(RUNBOOKS).analyse(
        replace(incident, created_at=started), IncidentContext()
    )
    assert "since 2026-11-02T09:00:00Z, " in analysis.summary
