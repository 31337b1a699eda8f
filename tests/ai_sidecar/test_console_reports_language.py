"""Reports in French: the PDF's titles and headers, and the digest at a real SMTP sink."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pypdf import PdfReader

from ai_sidecar.config import NotificationsConfig, SidecarConfig
from ai_sidecar.console.reports.digest import digest_counter, digest_message
from ai_sidecar.console.reports.measured import Measured, Talker, WanLink
from ai_sidecar.console.reports.render import report_csv
from ai_sidecar.console.reports.service import ReportMaker
from ai_sidecar.console.reports.tables import report_tables
from ai_sidecar.i18n import translator
from ai_sidecar.store import SqliteStore, Store
from tests.ai_sidecar.builders import T0, incident, member
from tests.ai_sidecar.test_console_reports import (
    MONDAY,
    NOW,
    WEEK_END,
    digest_config,
    run_cli,
    scheduler_for,
    sent_before,
    store,  # noqa: F401 - the fixture
)
from tests.peers.notify import SmtpSink, email_body

# When the French report below is made: 22:09:27 in Paris, in winter.
MADE = datetime(2026, 12, 5, 21, 9, 27, tzinfo=UTC)


async def test_the_pdf_speaks_french_and_the_csv_stays_english(store: Store) -> None:  # noqa: F811
    maker = ReportMaker(store, SidecarConfig().model_copy(update={"language": "fr"}), None)
    made = await maker.make(maker.period("week", end_date=WEEK_END), now=NOW)
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(await made.pdf())).pages)
    for title in (
        "Rapport Scout",
        "Semaine du",
        "Incidents par priorité",
        "Règles d'alerte les plus bruyantes",
        "Délai de prise en compte",
        "Utilisation du WAN",
        "Déclenchements",
        # Figures and reasons in French too.
        "Jugées utiles 67 %",
        "indisponible : aucun Prometheus n'est configuré",
    ):
        assert title in text, title
    assert "Incidents by priority" not in text
    # Machine-readable: the CSV's headers are the same in every language.
    assert report_csv(made.report).startswith("section,Measure,Value")
    english = await maker.make(made.report.period, now=NOW, language="en")
    assert "<h1>Scout report</h1>" in english.html()
    assert "<h1>Rapport Scout</h1>" in made.html()


@pytest.mark.peers
async def test_the_digest_subject_is_in_the_configured_language(store: Store) -> None:  # noqa: F811
    await sent_before(store, MONDAY - timedelta(days=7))
    with SmtpSink() as sink:
        config = digest_config(sink).model_copy(update={"language": "fr"})
        counter = digest_counter(CollectorRegistry())
        await scheduler_for(store, config, counter, []).tick()
        message = await asyncio.to_thread(sink.wait_for)
    assert message["Subject"] == "Rapport Scout (hebdomadaire) au 9 nov. 2026, 00:00 : 4 incidents"
    assert "Le rapport est joint en PDF" in email_body(message, "plain")
    assert "Incidents par priorité" in email_body(message, "html")


@pytest.mark.peers
async def test_the_cli_writes_french_when_asked(store: Store, tmp_path: Path) -> None:  # noqa: F811
    common = ("--period", "week", "--end", "2026-11-08", "--format", "html")
    french = tmp_path / "fr.html"
    done = run_cli(*common, "--language", "fr", "--output", str(french), data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    page = french.read_text()
    assert '<html lang="fr">' in page
    assert "Cibles les plus bruyantes" in page
    assert "Semaine du 2 nov. 2026, 00:00 au 9 nov. 2026, 00:00 (UTC)" in page
    english = tmp_path / "en.html"
    done = run_cli(*common, "--output", str(english), data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert "Noisiest targets" in english.read_text()
    # A language tag in any case names the catalogue's language.
    upper = tmp_path / "FR.html"
    done = run_cli(*common, "--language", "FR", "--output", str(upper), data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert '<html lang="fr">' in upper.read_text()
    unknown = run_cli(*common, "--language", "xx", "--output", "x", data_dir=tmp_path / "data")
    assert unknown.returncode == 2
    assert "invalid choice: 'xx'" in unknown.stderr


async def test_french_reports_write_dates_and_placeholders_as_the_console_does(
    tmp_path: Path,
) -> None:
    opened = await SqliteStore.open(tmp_path / "scout.db")
    try:
        # An alert without alertname, target or site.
        nameless = incident(replace(member(), labels={"severity": "info"}))
        await opened.save_incidents([replace(nameless, group={})])
        paris = NotificationsConfig(timezone="Europe/Paris")
        config = SidecarConfig().model_copy(update={"language": "fr", "notifications": paris})
        maker = ReportMaker(opened, config, None)
        made = await maker.make(maker.period("day", end_date=T0.date()), now=MADE)
    finally:
        await opened.close()
    page = made.html()
    for french in (
        "Journée du 2 nov. 2026, 00:00 au 3 nov. 2026, 00:00 (Europe/Paris)",
        "5 déc. 2026, 22:09:27 CET",
        "(sans site)",
        "(sans nom d&#39;alerte)",
        "(sans cible)",
    ):
        assert french in page, french
    for english in ("(no site)", "(no alertname)", "(no target)", "2026-11-02 00:00", "2026-12-05"):
        assert english not in page, english
    pdf = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(await made.pdf())).pages)
    assert "Établi le 5 déc. 2026, 22:09:27 CET" in pdf
    message = digest_message(made, config.reports.digest, MADE)
    assert message["Subject"] == "Rapport Scout (quotidien) au 3 nov. 2026, 00:00 : 1 incident"
    # The CSV, read by programs, keeps its English placeholders.
    assert ["site", "(no site)", "1"] in list(csv.reader(io.StringIO(made.csv())))
    link = WanLink("r1", "ge-0/0/3", "in", 0.25, 0.9)
    talker = Talker("10.1.1.9", "destination", 1e9)
    measured = replace(made.report, wan=Measured((link,)), bandwidth=Measured((talker,)))
    tables = {t.key: t.rows for t in report_tables(measured, translator("fr", "console"))}
    assert tables["wan"][0][2] == "entrant"
    assert tables["bandwidth"][0][1] == "destination"
    assert {t.key: t.rows for t in report_tables(measured)}["wan"][0][2] == "in"


async def test_the_english_digest_subject_says_1_incident(store: Store) -> None:  # noqa: F811
    maker = ReportMaker(store, SidecarConfig(), None)
    # The week before holds one incident (created two days before its end).
    made = await maker.make(maker.period("week", end_date=WEEK_END - timedelta(days=7)), now=NOW)
    assert made.report.incidents == 1
    message = digest_message(made, SidecarConfig().reports.digest, NOW)
    assert message["Subject"] == "Scout week report to 2026-11-02 00:00: 1 incident"
