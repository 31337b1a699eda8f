"""Notifications in French (``language: fr``): the notify catalogue's words, Babel's
dates, plural forms by CLDR's rules; names and label values as they are, sanitised."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from ai_sidecar.config import parse_config
from ai_sidecar.i18n import translator
from ai_sidecar.models import MERGED_REASON, Analysis, SkippedAnalyst
from ai_sidecar.notify import ReturnTripPolicy, Wording, analysis_annotations, enriched_alert
from ai_sidecar.notify.phrases import related, still_firing
from ai_sidecar.notify.render import LANGUAGE_ANNOTATION, incident_annotations
from ai_sidecar.notify.wording import duration, problem
from ai_sidecar.pipeline import return_trip_policy
from ai_sidecar.settings import SidecarSettings
from tests.ai_sidecar.builders import member
from tests.ai_sidecar.notify.test_wording import (
    HOSTILE,
    PARIS,
    STARTED,
    at,
    down,
    incident_of,
    resolved,
)

FR = translator("fr", "notify")
FRENCH = Wording(PARIS, "fr")


def test_the_title_and_start_in_french_with_the_date_as_babel_writes_it():
    probe = at(STARTED + timedelta(seconds=30), alertname="ProbeFailed", instance="web1")
    other = at(STARTED, alertname="ProbeFailed", instance="mail1")
    assert FRENCH.annotations(incident_of(down(), probe, other, priority="P2")) == {
        "scout_title": "P2 · Gi1/0/1 tombée sur sw-3 (site paris), et 2 alertes liées",
        "scout_timeline": "Début : 2 déc. 2026, 23:41:25 CET.",
    }
    one = FRENCH.annotations(incident_of(probe, down()))["scout_title"]
    assert one == "P3 · sonde vers web1 en échec (site paris), et 1 alerte liée"


def test_times_in_french_keep_the_second_the_zone_and_its_daylight_saving():
    assert FRENCH.time(STARTED) == "2 déc. 2026, 23:41:25 CET"
    assert FRENCH.time(STARTED.replace(month=7)) == "3 juil. 2026, 00:41:25 CEST"
    assert Wording(language="fr").time(STARTED) == "2 déc. 2026, 22:41:25 UTC"


def test_a_resolved_incident_in_french():
    probe = at(STARTED + timedelta(seconds=20), alertname="ProbeFailed", instance="web1")
    members = (
        resolved(down(), timedelta(minutes=10)),
        resolved(probe, timedelta(minutes=11, seconds=45)),
    )
    over = incident_of(
        *members, status="resolved", resolved_at=STARTED + timedelta(minutes=12, seconds=5)
    )
    assert FRENCH.annotations(over) == {
        "scout_title": "Résolu · P3 · Gi1/0/1 tombée sur sw-3 (site paris), et 1 alerte liée"
        " · durée 12 min 5 s",
        "scout_timeline": "Début : 2 déc. 2026, 23:41:25 CET ; fin : 2 déc. 2026, 23:53:30 CET ;"
        " durée : 12 min 5 s.",
        "scout_resolution": "Résolu : fin de la dernière de ses 2 alertes (sonde vers web1 en"
        " échec) le 2 déc. 2026, 23:53:30 CET.",
    }


def test_resolutions_in_french_by_root_cause_single_alert_and_merge():
    probe = at(STARTED, alertname="ProbeFailed", instance="web1")
    root = resolved(down(), timedelta(minutes=10))
    by_root = incident_of(root, probe, status="resolved", resolved_at=root.ends_at)
    assert FRENCH.annotations(by_root)["scout_resolution"] == (
        "Résolu : fin de la cause racine (Gi1/0/1 tombée sur sw-3) le 2 déc. 2026, 23:51:25 CET."
        " 1 autre alerte était encore active."
    )
    alone = incident_of(
        resolved(down(), timedelta(seconds=59)),
        status="resolved",
        resolved_at=STARTED + timedelta(seconds=59),
    )
    words = FRENCH.annotations(alone)
    assert words["scout_resolution"] == (
        "Résolu : fin de l\u2019alerte (Gi1/0/1 tombée sur sw-3) le 2 déc. 2026, 23:42:24 CET."
    )
    assert words["scout_title"].endswith(" · durée 59 s")
    merged = replace(alone, root_cause_reasons=(f"{MERGED_REASON}inc-9", "earliest"))
    assert FRENCH.annotations(merged)["scout_resolution"] == (
        "Fusionné le 2 déc. 2026, 23:42:24 CET dans l\u2019incident inc-9, qui prend le relais."
    )


@pytest.mark.parametrize(
    ("count", "related_said", "still_said"),
    [
        # CLDR's French "one" covers 0 and 1; "many" (exact millions) reads as "other".
        (1, ", et 1 alerte liée", " 1 autre alerte était encore active."),
        (2, ", et 2 alertes liées", " 2 autres alertes étaient encore actives."),
        (
            1_000_000,
            ", et 1000000 alertes liées",
            " 1000000 autres alertes étaient encore actives.",
        ),
    ],
)
def test_counts_take_the_plural_french_gives_them(count, related_said, still_said):
    assert related(FR, count) == related_said
    assert still_firing(FR, count) == still_said
    assert related(FR, 0) == ""


def test_problems_durations_and_missing_fields_in_french():
    assert problem(down(), FR) == "Gi1/0/1 tombée sur sw-3"
    nameless = replace(member(), labels={"alertname": "InterfaceDown", "instance": "sw-3"})
    assert problem(nameless, FR) == "une interface tombée sur sw-3"
    target_less = replace(member(), labels={"alertname": "TargetDown"})
    assert problem(target_less, FR) == "une cible sans nom hors service"
    # An alert without a phrase keeps its own name, in its own words: names are not translated.
    unknown = replace(member(), labels={"alertname": "PowerSupplyFailed", "instance": "psu1"})
    assert problem(unknown, FR) == "power supply failed sur psu1"
    assert duration(timedelta(days=1, hours=2, seconds=5), FR) == "1 j 2 h 5 s"
    assert duration(timedelta(seconds=-3), FR) == "0 s"


def test_hostile_labels_stay_inert_in_a_french_title():
    title = FRENCH.annotations(incident_of(down(instance=HOSTILE, site="<!here>")))["scout_title"]
    assert title == (
        "P3 · Gi1/0/1 tombée sur sw-3 Bcc: victim@example.org channel here"
        " \u2039b\u203ax\u2039/b\u203a & co (site here)"
    )


def test_the_analyst_note_in_french_names_analysts_and_reasons_as_they_are():
    analysed = incident_of(
        down(),
        analysis=Analysis("s", "r", "i", ("a",), confidence=0.8, false_positive_likelihood=0.1),
        analyst="local",
        skipped_analysts=(
            SkippedAnalyst("gemini", "declined", "budget: 200 requests per day reached"),
            SkippedAnalyst("claude", "timeout", ""),
            SkippedAnalyst("openai", "pending", ""),
        ),
    )
    assert analysis_annotations(analysed, "fr")["ai_analyst_note"] == (
        "analyse de local : gemini non sollicité (budget: 200 requests per day reached);"
        " claude en échec (timeout); la réponse de openai va suivre"
    )
    assert analysis_annotations(analysed)["ai_analyst_note"] == (
        "local analysis: gemini not asked (budget: 200 requests per day reached);"
        " claude failed (timeout); openai's answer follows"
    )


def test_copies_carry_the_language_only_when_it_is_not_english():
    m = down()
    incident = incident_of(m)
    english = incident_annotations(incident, ReturnTripPolicy(zone=PARIS))
    assert LANGUAGE_ANNOTATION not in english
    french = enriched_alert(incident, m, ReturnTripPolicy(zone=PARIS, language="fr"), STARTED)
    assert french["annotations"][LANGUAGE_ANNOTATION] == "fr"
    # An annotation, not a label: the copy's identity (fingerprint, grouping, inhibition)
    # does not depend on the language.
    assert LANGUAGE_ANNOTATION not in french["labels"]


def test_the_configured_language_reaches_the_return_trip(tmp_path):
    config = parse_config("language: fr\n", "sidecar.yml")
    settings = SidecarSettings(data_dir=tmp_path)
    assert return_trip_policy(config, settings).language == "fr"
    assert return_trip_policy(parse_config("{}", "sidecar.yml"), settings).language == "en"
