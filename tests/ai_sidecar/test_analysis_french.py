"""The analysis in French: the local analyst's sentences, the root-cause reasons and the
priority explanations from the analysis catalogue, plurals by French rules, numbers and
durations as French writes them, names exactly as they came."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from ai_sidecar.enrichment.base import IncidentContext
from ai_sidecar.enrichment.local import LocalAnalyst, analyse
from ai_sidecar.i18n import translator
from ai_sidecar.models import AnomalyEvidence, Incident
from ai_sidecar.priority import prioritise
from tests.ai_sidecar.builders import T0, incident, member
from tests.ai_sidecar.replay import correlator, fold, resolved, storm
from tests.ai_sidecar.test_local_analyst import LINK_CONTEXT, RUNBOOKS, with_root_context
from tests.ai_sidecar.test_priority import RULES


def core_link_incident(language: str) -> Incident:
    """test_local_analyst's core storm, folded by a correlator that reasons in ``language``."""
    alerts = storm("core-link-down.yml")
    folding = correlator()
    folding.language = language
    return fold(folding, [*alerts, alerts[0], resolved(alerts[1], 100)])[-1].incident


async def test_the_core_link_storm_is_explained_in_french() -> None:
    found = core_link_incident("fr")
    context = replace(
        with_root_context(found, LINK_CONTEXT),
        language="fr",
        anomaly=(AnomalyEvidence('ifHCInOctets{instance="core1"}', 0.82, "1-5 Gbit/s"),),
    )
    analysis = await LocalAnalyst(RUNBOOKS).analyse(found, context)
    assert analysis.summary == (
        "Incident en cours pour site=hq depuis le 2 nov. 2026, 09:00:00 UTC, cause racine "
        "InterfaceDown sur core1 Te1/1/1 : 9 alertes (8 actives, 1 résolue) sur 8 cibles : "
        "ProbePacketLoss (4), HttpDown (2), HostHighCpu (1), InterfaceDown (1), "
        "ProbeHighLatency (1). 8 alertes rattachées à InterfaceDown sur core1 au lieu "
        "d\u2019être notifiées à part. Dédoublonné : 1 réception en double."
    )
    assert analysis.root_cause == (
        "InterfaceDown sur core1 Te1/1/1 (couche liaison) est la cause racine probable. "
        "Pourquoi : toujours active : InterfaceDown sur core1 ; 1 alerte résolue passe après "
        "elle ; couche la plus basse : liaison (InterfaceDown), sous réseau, hôte et service ; "
        "7 alertes sur d\u2019autres cibles renvoient à core1. "
        'ifOperStatus{ifName="Te1/1/1"}: {ifName="Te1/1/1", instance="core1"} actuellement 2, '
        "en baisse de 1 à 2 sur 15 minutes. InterfaceDown sur core1 Te1/1/1 coïncide avec un "
        'score d\u2019anomalie de 0,82 sur ifHCInOctets{instance="core1"} (attendu : 1-5 Gbit/s).'
    )
    assert analysis.impact == (
        "8 cibles touchées : core1, printer3, srv-app1, srv-app2, srv-db1, srv-db2, web1, web2. "
        "Services : web. Étendue : 9 alertes sur 8 cibles, dont 8 toujours actives."
    )
    # The runbooks' own actions are the config's words, as written.
    assert analysis.actions == (
        "Check the optic and the patch lead on both ends.",
        "Look for err-disabled ports in the switch log.",
        "Procédure pour InterfaceDown : https://wiki.example.net/runbooks/interface-down",
        "Check the probe's own uplink first.",
        "Procédure pour ProbePacketLoss : https://wiki.example.net/runbooks/probes",
    )
    # The numbers are the language's business only in words.
    english = await LocalAnalyst(RUNBOOKS).analyse(
        core_link_incident("en"), replace(context, language="en")
    )
    assert (analysis.confidence, analysis.false_positive_likelihood, analysis.evidence) == (
        english.confidence,
        english.false_positive_likelihood,
        english.evidence,
    )


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 alerte"), (1, "1 alerte"), (2, "2 alertes"), (1500, "1\u202f500 alertes")],
)
def test_french_plurals_follow_french_rules_not_an_appended_s(count: int, expected: str) -> None:
    t = translator("fr", "analysis")
    # French says "0 alerte", where English says "0 alerts".
    assert (
        t.ngettext("{count} alert", "{count} alerts", count).format(count=t.number(count))
        == expected
    )


def test_priority_explanations_in_french() -> None:
    big = incident(
        member("InterfaceDown", "core1", severity="critical", site="hq"),
        *(member("ProbePacketLoss", f"h{i:04}", site="hq") for i in range(1499)),
    )
    now = T0 + timedelta(hours=2)
    priority, reasons = prioritise(big, RULES, now, [AnomalyEvidence("fp", 0.75)], language="fr")
    assert priority == prioritise(big, RULES, now, [AnomalyEvidence("fp", 0.75)])[0] == "P1"
    assert reasons == (
        "sévérité critical (InterfaceDown sur core1) : +50",
        "étendue 1\u202f500 cibles : +30",
        "1\u202f500 alertes : +10",
        "criticité critical (InterfaceDown sur core1) : +30",
        "ouvert depuis 2\xa0heures : +10",
        "score d\u2019anomalie 0,75 (fp) : +10",
        "score 140 : P1 à partir de 75",
    )


def test_a_lone_alert_without_runbook_is_checked_in_french() -> None:
    lone = incident(member("DiskFull", "s9", severity="warning", site="fra"))
    analysis = analyse(lone, IncidentContext(language="fr"), ())
    assert analysis.actions == ("Vérifiez DiskFull sur s9.",)
    assert "1 alerte (1 active, 0 résolue) sur 1 cible" in analysis.summary


async def test_anomaly_subjects_saved_in_english_are_said_in_french() -> None:
    wan = {"signal": "wan_throughput", "instance": "fw-1", "ifName": "wan0"}
    evidence = AnomalyEvidence("WAN throughput of fw-1 wan0", 0.9, "1.5-5 Gbit/s", labels=wan)
    lone = incident(member("InterfaceDown", "fw-1", severity="critical"))
    now = T0 + timedelta(minutes=5)

    _, reasons = prioritise(lone, RULES, now, [evidence], language="fr")
    assert (
        "score d\u2019anomalie 0,90 (WAN throughput sur fw-1 wan0, attendu : 1,5-5 Gbit/s) : +"
        in (" ".join(reasons))
    )
    _, english = prioritise(lone, RULES, now, [evidence])
    assert any("(WAN throughput of fw-1 wan0, expected 1.5-5 Gbit/s)" in r for r in english)

    found = core_link_incident("fr")
    context = replace(with_root_context(found, LINK_CONTEXT), language="fr", anomaly=(evidence,))
    analysis = await LocalAnalyst(RUNBOOKS).analyse(found, context)
    assert "sur WAN throughput sur fw-1 wan0 (attendu : 1,5-5 Gbit/s)" in analysis.root_cause
    assert " of " not in analysis.root_cause
