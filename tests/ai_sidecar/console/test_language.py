"""The console in the reader's language: their choice, then Accept-Language, then config."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pypdf import PdfReader

from ai_sidecar.app import create_app
from ai_sidecar.config import load_config
from ai_sidecar.console.language import accepted_languages, negotiated_language
from ai_sidecar.console.reports.routes import REPORTS
from ai_sidecar.i18n import translator
from ai_sidecar.keys import RELOADER
from ai_sidecar.models import SkippedAnalyst
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store.protocol import IncidentAction, IncidentQuery
from tests.ai_sidecar.builders import alert, payload
from tests.ai_sidecar.console.conftest import (
    OPERATOR,
    TOKEN,
    USERS,
    VIEWER,
    ConsoleFactory,
    install_test_sessions,
    store_of,
    storm_incidents,
)
from tests.ai_sidecar.test_app import wait_until

FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}


def test_accept_language_is_read_by_quality_and_negotiated_to_a_catalogue() -> None:
    assert accepted_languages("en;q=0.2, fr-CA, de;q=0.5, *;q=0.1, it;q=0") == [
        "fr-CA",
        "de",
        "en",
    ]
    assert negotiated_language("fr-CA, en;q=0.2") == "fr"
    assert negotiated_language("de-DE, en-GB;q=0.5") == "en"
    assert negotiated_language("de-DE, it") is None
    assert negotiated_language("") is None


# Language tags ignore case (RFC 5646 2.1.1): each as a browser or a proxy may spell it.
SPELLINGS = {"FR": "fr", "Fr": "fr", "FR-FR": "fr", "EN": "en", "En-US": "en", "EN-GB": "en"}


@pytest.mark.parametrize(("header", "language"), SPELLINGS.items())
def test_a_language_tag_is_negotiated_whatever_its_case(header: str, language: str) -> None:
    assert negotiated_language(header) == language


async def test_every_spelling_of_a_tag_serves_the_pages(console_factory: ConsoleFactory) -> None:
    client = await console_factory(incidents=storm_incidents("two-sites.yml"))
    for header, language in SPELLINGS.items():
        # Before anyone signs in (the sign-in page) and after.
        for path, who in (("/console/login", {}), ("/console/incidents", VIEWER)):
            answer = await client.get(path, headers={**who, "Accept-Language": header})
            assert answer.status == 200, (header, path)
            assert f'<html lang="{language}">' in await answer.text(), (header, path)


async def test_the_config_and_the_preferences_take_a_tag_in_any_case(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(config="language: FR\n")
    page = await (
        await client.get("/console/incidents", headers={**VIEWER, "Accept-Language": "de"})
    ).text()
    assert '<html lang="fr">' in page
    saved = await client.post(
        "/console/preferences",
        data={"language": "EN", "csrf_token": USERS["viewer"].csrf_token},
        headers=VIEWER,
        allow_redirects=False,
    )
    assert saved.status == 303
    assert await store_of(client).get_console_language(USERS["viewer"].name) == "en"
    page = await (await client.get("/console/incidents", headers=VIEWER)).text()
    assert '<html lang="en">' in page


async def test_the_list_titles_in_the_configured_language_and_finds_either_words(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(config="language: fr\n")
    probe = alert("ProbeTargetUnreachable", instance="db-7", site="lyon")
    posted = await client.post(
        "/api/v1/alertmanager", json=payload(probe), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert posted.status == 200
    store = store_of(client)

    async def listed() -> bool:  # once the worker has folded it into an incident
        return bool((await store.incident_page(IncidentQuery(), limit=1)).total)

    await wait_until(listed, seconds=30)
    # As the incident page and the notifications say it, whatever the reader's language.
    for browser in (FRENCH, {"Accept-Language": "en"}):
        page = unescape(
            await (await client.get("/console/incidents", headers={**VIEWER, **browser})).text()
        )
        assert "db-7 injoignable (site lyon)" in page
        assert "unreachable" not in page
    for word in ("injoignable", "unreachable"):
        found = unescape(
            await (await client.get(f"/console/incidents?q={word}", headers=VIEWER)).text()
        )
        assert "db-7 injoignable (site lyon)" in found, word


async def test_the_list_speaks_the_browsers_language(console_factory: ConsoleFactory) -> None:
    client = await console_factory(incidents=storm_incidents("two-sites.yml"))
    french = unescape(
        await (await client.get("/console/incidents", headers={**VIEWER, **FRENCH})).text()
    )
    assert '<html lang="fr">' in french
    assert "Cause première" in french
    assert "Prise en charge" in french
    assert "non pris en compte" in french
    assert "Se déconnecter" in french
    assert "Root cause" not in french
    assert "Sign out" not in french
    english = await (
        await client.get("/console/incidents", headers={**VIEWER, "Accept-Language": "en-GB"})
    ).text()
    assert '<html lang="en">' in english
    assert "Root cause" in english


async def test_the_configured_language_is_used_when_the_browser_names_none_we_have(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(config="language: fr\n")
    page = unescape(
        await (
            await client.get("/console/incidents", headers={**VIEWER, "Accept-Language": "de"})
        ).text()
    )
    assert '<html lang="fr">' in page
    assert "Aucun incident ne correspond" in page


async def test_the_users_choice_wins_and_needs_the_csrf_token(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory(incidents=storm_incidents("two-sites.yml"))
    form = await (await client.get("/console/preferences", headers=VIEWER)).text()
    assert 'value="fr"' in form
    assert "Français" in form
    stale = await client.post(
        "/console/preferences", data={"language": "fr", "csrf_token": "wrong"}, headers=VIEWER
    )
    assert stale.status == 403
    token = USERS["viewer"].csrf_token
    unknown = await client.post(
        "/console/preferences", data={"language": "xx", "csrf_token": token}, headers=VIEWER
    )
    assert unknown.status == 400
    saved = await client.post(
        "/console/preferences",
        data={"language": "fr", "csrf_token": token},
        headers=VIEWER,
        allow_redirects=False,
    )
    assert saved.status == 303
    # The choice beats the browser's English; other users are left alone.
    english_browser = {**VIEWER, "Accept-Language": "en-US"}
    page = unescape(await (await client.get("/console/incidents", headers=english_browser)).text())
    assert '<html lang="fr">' in page
    assert "Prise en charge" in page
    other = await (
        await client.get("/console/incidents", headers={**OPERATOR, "Accept-Language": "en"})
    ).text()
    assert '<html lang="en">' in other
    # Back to "the browser's": no choice kept.
    await client.post(
        "/console/preferences", data={"language": "", "csrf_token": token}, headers=VIEWER
    )
    page = await (await client.get("/console/incidents", headers=english_browser)).text()
    assert '<html lang="en">' in page


async def test_an_incident_page_and_its_flash_in_french(console_factory: ConsoleFactory) -> None:
    incidents = storm_incidents("two-sites.yml")
    client = await console_factory(incidents=incidents)
    path = f"/console/incidents/{incidents[0].id}"
    before = unescape(await (await client.get(path, headers={**OPERATOR, **FRENCH})).text())
    assert "Prendre en compte" in before
    acted = await client.post(
        path + "/acknowledge",
        data={"csrf_token": USERS["operator"].csrf_token},
        headers={**OPERATOR, **FRENCH},
        allow_redirects=False,
    )
    assert acted.status == 303, await acted.text()
    page = unescape(
        await (await client.get(acted.headers["Location"], headers={**OPERATOR, **FRENCH})).text()
    )
    for french in (
        "Cause première",
        "Chronologie",
        "Mettre en silence",
        "L'incident est pris en compte.",
        "a déclenché",
        "Historique des actions",
    ):
        assert french in page, french
    assert "Acknowledge" not in page
    assert "Timeline" not in page
    facts = incidents[0].root_cause_facts
    assert facts is not None
    assert facts.layer in {"device", "link", "network", "host", "service"}
    # The deciding layer is named in French, as the analysis names it.
    assert "Règle décisive : " in page
    assert f"; couche {facts.layer} ;" not in page


async def test_a_recorded_silence_reads_in_french(console_factory: ConsoleFactory) -> None:
    incidents = storm_incidents("two-sites.yml")
    client = await console_factory(incidents=incidents)
    detail = (
        "until 2026-12-02 23:41:25 UTC; 2 firing alerts covered by the incident silence only; "
        "http://am-1:9093: a1, a2; http://am-2:9093 failed after b1: connection refused"
    )
    at = datetime(2026, 12, 2, 23, 31, tzinfo=UTC)
    action = IncidentAction(incidents[0].id, "silence", "olga", detail, at)
    assert await store_of(client).record_action(action)
    path = f"/console/incidents/{incidents[0].id}"

    french = unescape(await (await client.get(path, headers={**OPERATOR, **FRENCH})).text())
    english = unescape(await (await client.get(path, headers=OPERATOR)).text())

    assert (
        "(jusqu\u2019au 2 déc. 2026, 23:41:25 UTC ; 2 alertes actives couvertes par le seul "
        "silence de l\u2019incident ; http://am-1:9093 : a1, a2 ; "
        "http://am-2:9093 en échec après b1 : connection refused)"
    ) in french
    assert f"({detail})" in english


async def test_why_an_analyst_did_not_answer_reads_in_french(
    console_factory: ConsoleFactory,
) -> None:
    [first, *_] = storm_incidents("two-sites.yml")
    skipped = replace(first, skipped_analysts=(SkippedAnalyst("openai", "timeout", ""),))
    client = await console_factory(incidents=[skipped])
    path = f"/console/incidents/{skipped.id}"

    french = unescape(await (await client.get(path, headers={**VIEWER, **FRENCH})).text())
    english = unescape(await (await client.get(path, headers=VIEWER)).text())

    assert "<li>openai: délai dépassé</li>" in french
    assert "<li>openai: timeout</li>" in english


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 incident"), (1, "1 incident"), (2, "2 incidents"), (1_000_000, "1000000 incidents")],
)
def test_french_plurals_follow_the_catalogue(count: int, expected: str) -> None:
    t = translator("fr", "console")
    assert t.ngettext("%(count)s incident", "%(count)s incidents", count) % {"count": count} == (
        expected
    )


async def test_error_pages_speak_the_browsers_language(console_factory: ConsoleFactory) -> None:
    client = await console_factory()
    missing = await client.get("/console/incidents/nope", headers={**VIEWER, **FRENCH})
    assert missing.status == 404
    page = await missing.text()
    assert "Erreur 404" in page
    assert "Retour à la console" in page
    forbidden = await client.post(
        "/console/preferences", data={"language": "fr"}, headers={**VIEWER, **FRENCH}
    )
    assert forbidden.status == 403
    assert "le jeton CSRF du formulaire manque" in unescape(await forbidden.text())


async def test_aiohttps_own_refusals_read_in_the_pages_language(
    console_factory: ConsoleFactory,
) -> None:
    client = await console_factory()
    big = {"username": "olivia", "password": "x" * (20 * 1024)}
    for who in ({}, VIEWER):  # the sign-in page's layout, and a signed-in user's
        french = {**who, **FRENCH}
        missing = await client.get("/console/nope", headers=french)
        assert missing.status == 404
        assert "il n'y a pas de page à cette adresse" in unescape(await missing.text())
        method = await client.get("/console/logout", headers=french)
        assert method.status == 405
        assert "POST" in method.headers["Allow"]
        assert "cette adresse ne répond pas à ce type de requête" in unescape(await method.text())
        large = await client.post("/console/login", data=big, headers=french)
        assert large.status == 413
        assert "la requête dépasse la taille que cette page accepte" in unescape(await large.text())
        for answer in (missing, method, large):
            text = await answer.text()
            assert '<html lang="fr">' in text
            for english in ("Not Found", "Method Not Allowed", "Maximum request body"):
                assert english not in text
    english = await client.get("/console/nope", headers={"Accept-Language": "en"})
    assert "there is no page at this address" in await english.text()


async def test_reports_follow_the_readers_language(console_factory: ConsoleFactory) -> None:
    client = await console_factory(incidents=storm_incidents("two-sites.yml"))
    page = unescape(
        await (await client.get("/console/reports", headers={**VIEWER, **FRENCH})).text()
    )
    assert '<html lang="fr">' in page
    for french in ("Télécharger ce rapport", "Synthèse", "Incidents par site", "Semaine du"):
        assert french in page, french
    pdf = await client.get("/console/reports.pdf", headers={**VIEWER, **FRENCH})
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(await pdf.read())).pages)
    assert "Rapport Scout" in text
    assert "Incidents par priorité" in text
    # Machine-readable: the same English headers whatever the reader's language.
    csv_body = await (await client.get("/console/reports.csv", headers={**VIEWER, **FRENCH})).read()
    assert csv_body.decode("utf-8-sig").startswith("section,Measure,Value")
    wrong = await client.get("/console/reports?end=hier", headers={**VIEWER, **FRENCH})
    assert wrong.status == 400
    assert "la date de fin doit être au format AAAA-MM-JJ" in unescape(await wrong.text())


async def test_an_unknown_incident_is_said_in_french(console_factory: ConsoleFactory) -> None:
    client = await console_factory()
    missing = await client.get("/console/incidents/inc-nope", headers={**VIEWER, **FRENCH})
    assert missing.status == 404
    assert "Il n'y a pas d'incident 'inc-nope'." in unescape(await missing.text())
    english = await client.get("/console/incidents/inc-nope", headers=VIEWER)
    assert "There is no incident 'inc-nope'." in unescape(await english.text())


async def test_a_reloaded_language_reaches_the_pages_and_reports(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: Path
) -> None:
    config_file = tmp_path / "scout-sidecar.yml"
    config_file.write_text("language: en\n")
    settings = SidecarSettings(
        data_dir=tmp_path / "data", webhook_token=TOKEN, config_file=config_file
    )
    app = create_app(settings, load_config(config_file))
    install_test_sessions(app)
    client = await aiohttp_client(app)
    browser = {**VIEWER, "Accept-Language": "de"}
    before = await (await client.get("/console/incidents", headers=browser)).text()
    assert '<html lang="en">' in before
    config_file.write_text("language: fr\n")
    assert await app[RELOADER].reload() is None
    after = await (await client.get("/console/incidents", headers=browser)).text()
    assert '<html lang="fr">' in after
    report = unescape(await (await client.get("/console/reports", headers=browser)).text())
    assert "Synthèse" in report
    made = await app[REPORTS].make(app[REPORTS].period("week"))
    assert made.language == "fr"
