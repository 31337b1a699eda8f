"""Reports in French: the PDF's titles and headers, and the digest at a real SMTP sink."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pypdf import PdfReader

from ai_sidecar.config import SidecarConfig
from ai_sidecar.console.reports.digest import digest_counter
from ai_sidecar.console.reports.render import report_csv
from ai_sidecar.console.reports.service import ReportMaker
from ai_sidecar.store import Store
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
    assert message["Subject"] == "Rapport Scout (hebdomadaire) au 2026-11-09 00:00 : 4 incidents"
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
    assert "Semaine du 2026-11-02 00:00 au 2026-11-09 00:00 (UTC)" in page
    english = tmp_path / "en.html"
    done = run_cli(*common, "--output", str(english), data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert "Noisiest targets" in english.read_text()
    unknown = run_cli(*common, "--language", "xx", "--output", "x", data_dir=tmp_path / "data")
    assert unknown.returncode == 2
    assert "invalid choice: 'xx'" in unknown.stderr
