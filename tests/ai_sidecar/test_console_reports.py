"""Reports: the numbers over a known storm, their CSV, HTML and PDF, the console
routes, the CLI and the e-mail digest (against a real SMTP server)."""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pypdf import PdfReader

from ai_sidecar.app import create_app
from ai_sidecar.config import ReportsConfig, SidecarConfig, load_config, parse_config
from ai_sidecar.console.reports import service
from ai_sidecar.console.reports.digest import (
    DigestScheduler,
    digest_counter,
    latest_slot,
    next_slot,
)
from ai_sidecar.console.reports.measured import (
    NO_PROMETHEUS,
    AnomalyPeak,
    Measured,
    Talker,
    WanLink,
)
from ai_sidecar.console.reports.model import Report, build_report
from ai_sidecar.console.reports.period import report_period
from ai_sidecar.console.reports.render import (
    chart_figure,
    report_csv,
    spreadsheet_safe,
)
from ai_sidecar.console.reports.service import ReportMaker
from ai_sidecar.console.reports.tables import bytes_text, duration_text
from ai_sidecar.console.session import SESSIONS, ConsoleUser, Role
from ai_sidecar.errors import ConfigError
from ai_sidecar.i18n import translator
from ai_sidecar.keys import STORE
from ai_sidecar.models import MERGED_REASON, Alert, Incident, Member
from ai_sidecar.promql import HttpPromQLClient
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import IncidentAction, SqliteStore, Store
from scripts.localstack import free_port
from tests.ai_sidecar.builders import T0, member
from tests.ai_sidecar.exchanges import exchange
from tests.ai_sidecar.replay import correlator, fold, make
from tests.peers.notify import SmtpSink, email_body

UTC_ZONE = ZoneInfo("UTC")
# T0 is Monday 2026-11-02 09:00 UTC; the week ends at the end of Sunday 2026-11-08.
WEEK_END = date(2026, 11, 8)
NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
SCRIPT = "<script>alert(1)</script>"
FORMULA = '=HYPERLINK("http://evil")'
# A site name with what a PDF or a terminal could trip on: emoji, a bidi override, NUL.
ODD_SITE = "Zürich 🔥\u202e\x00"


def incident(
    incident_id: str,
    *members: Member,
    priority: str,
    created: timedelta,
    resolved: timedelta | None = None,
    site: str = "",
    merged_into: str | None = None,
) -> Incident:
    return Incident(
        id=incident_id,
        status="open" if resolved is None else "resolved",
        group={"site": site} if site else {},
        members={m.fingerprint: m for m in members},
        created_at=T0 + created,
        updated_at=T0 + (resolved or created),
        priority=priority,  # type: ignore[arg-type]
        resolved_at=None if resolved is None else T0 + resolved,
        root_cause_reasons=() if merged_into is None else (MERGED_REASON + merged_into,),
    )


def storm() -> list[Incident]:
    flapping = replace(member("InterfaceDown", "sw-1", ifName="Gi0/1"), flap_count=2)
    return [
        incident(
            "a",
            flapping,
            member("InterfaceDown", "sw-1", ifName="Gi0/2", fingerprint="if2"),
            member("InterfaceDown", "sw-2", ifName="Gi0/1"),
            priority="P1",
            created=timedelta(0),
            resolved=timedelta(minutes=30),
            site="paris",
        ),
        incident(
            "b",
            member("HostDown", "srv-1"),
            member("DiskFull", "srv-1"),
            priority="P2",
            created=timedelta(days=1),
            resolved=timedelta(days=1, hours=2),
            site="lyon",
        ),
        incident(
            "c", member("HostDown", "srv-2"), priority="P2", created=timedelta(days=2), site="paris"
        ),
        # Merged into a: not counted.
        incident(
            "d",
            member("InterfaceDown", "sw-3"),
            priority="P3",
            created=timedelta(hours=1),
            resolved=timedelta(hours=2),
            merged_into="a",
        ),
        # Before the period.
        incident("e", member("HostDown", "srv-9"), priority="P1", created=-timedelta(days=2)),
        incident(
            "f",
            member(SCRIPT, FORMULA, fingerprint="hostile"),
            priority="P4",
            created=timedelta(days=3),
            resolved=timedelta(days=3, hours=1),
            site=ODD_SITE,
        ),
    ]


def as_alert(item: Member, starts: timedelta = timedelta(0)) -> Alert:
    return Alert(item.fingerprint, "firing", item.labels, {}, item.starts_at + starts)


async def fill(store: Store) -> None:
    incidents = storm()
    await store.save_incidents(incidents)
    # What the webhook stored: every member firing, received in the period...
    counted = [m for i in incidents if i.id not in ("d", "e") for m in i.members.values()]
    await store.ingest([as_alert(m) for m in counted], T0)
    flapping = counted[0]
    # ...the flapping port's two re-fires, a re-delivery (not stored again), a resolution...
    await store.ingest(
        [
            as_alert(flapping, timedelta(minutes=2)),
            as_alert(flapping, timedelta(minutes=4)),
            as_alert(flapping),
            replace(as_alert(flapping), status="resolved", ends_at=T0 + timedelta(minutes=1)),
        ],
        T0 + timedelta(minutes=5),
    )
    # ...and an alert received the week after.
    await store.ingest([as_alert(flapping, timedelta(days=8))], T0 + timedelta(days=8))
    # All folded already (into the incidents above): a running worker leaves them be.
    await store.save_progress((await store.pending(100))[-1].seq, [])
    for incident_id, after in (
        ("a", timedelta(minutes=5)),
        ("a", timedelta(minutes=10)),  # a second acknowledgement: the first counts
        ("b", timedelta(days=1, minutes=15)),
    ):
        await store.record_action(IncidentAction(incident_id, "acknowledge", "ana", "", T0 + after))
    await store.record_action(IncidentAction("c", "assign", "ana", "bob", T0 + timedelta(days=2)))
    for incident_id, useful, after in (
        ("a", True, timedelta(hours=1)),
        ("b", True, timedelta(days=1, hours=3)),
        ("c", False, timedelta(days=2, hours=1)),
        ("e", True, -timedelta(days=1)),  # before the period
    ):
        await store.add_feedback(incident_id, useful, "", T0 + after)
    await store.record_llm_exchange(exchange("a", T0 + timedelta(minutes=1), cost=0.01))
    await store.record_llm_exchange(
        exchange("b", T0 + timedelta(days=1), cost=0.02, outcome="timeout", input_tokens=10)
    )
    await store.record_llm_exchange(exchange("e", T0 - timedelta(days=1), cost=5.0))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await SqliteStore.open(tmp_path / "data" / "scout.db")
    await fill(opened)
    yield opened
    await opened.close()


async def week_report(store: Store) -> Report:
    period = report_period("week", UTC_ZONE, now=NOW, end_date=WEEK_END)
    return await build_report(store, period, ReportsConfig(), None, now=NOW)


async def test_the_storm_is_counted_exactly(store: Store) -> None:
    report = await week_report(store)
    assert report.period.start == datetime(2026, 11, 2, tzinfo=UTC)
    assert report.period.end == datetime(2026, 11, 9, tzinfo=UTC)
    assert (report.incidents, report.open, report.merged) == (4, 1, 1)
    assert report.by_priority == (("P1", 1), ("P2", 2), ("P3", 0), ("P4", 1))
    assert report.by_site == (("paris", 2), (ODD_SITE, 1), ("lyon", 1))
    # 7 members, one of which flapped twice; 9 firing episodes received.
    assert (report.alerts, report.firings, report.received) == (7, 9, 9)
    assert report.compression == 9 / 4
    assert report.rules[0].name == "InterfaceDown"
    assert (report.rules[0].firings, report.rules[0].incidents) == (5, 1)
    assert {r.name: r.firings for r in report.rules} == {
        "InterfaceDown": 5,
        "HostDown": 2,
        "DiskFull": 1,
        SCRIPT: 1,
    }
    assert report.targets[0].name == "sw-1"
    assert report.targets[0].firings == 4
    assert (report.acknowledge.count, report.acknowledge.mean, report.acknowledge.median) == (
        2,
        timedelta(minutes=10),
        timedelta(minutes=10),
    )
    assert (report.resolve.count, report.resolve.mean, report.resolve.median) == (
        3,
        timedelta(minutes=70),
        timedelta(hours=1),
    )
    assert (report.feedback, report.useful) == (3, 2)
    assert (report.llm_calls, report.llm_failed) == (2, 1)
    assert report.llm_cost == pytest.approx(0.03)
    assert report.llm_input_tokens == 1200 + 10
    # A bar per day of the week, priorities in order.
    assert [b.start.day for b in report.buckets] == list(range(2, 9))
    assert [sum(b.counts) for b in report.buckets] == [1, 1, 1, 1, 0, 0, 0]
    assert report.buckets[0].counts == (1, 0, 0, 0)
    for measured in (report.bandwidth, report.wan, report.anomalies):
        assert measured.rows == ()
        assert measured.unavailable == NO_PROMETHEUS


async def test_an_alert_delivered_days_late_is_counted_with_its_incident(tmp_path: Path) -> None:
    """Incidents are dated by their alerts' startsAt (the correlation's clock); the
    alerts are counted on the same clock, so the two counts agree whenever they arrive."""
    store = await SqliteStore.open(tmp_path / "scout.db")
    try:
        late = make("HostDown", instance="srv-7")  # started at T0
        (change,) = fold(correlator(), [late])
        await store.save_incidents([change.incident])
        await store.ingest([late], T0 + timedelta(days=3))

        def day(end: datetime) -> Any:
            period = report_period("day", UTC_ZONE, now=NOW, end_date=end.date())
            return build_report(store, period, ReportsConfig(), None, now=NOW)

        started = await day(T0)
        assert (started.incidents, started.received, started.compression) == (1, 1, 1.0)
        delivered = await day(T0 + timedelta(days=3))
        assert (delivered.incidents, delivered.received, delivered.compression) == (0, 0, None)
    finally:
        await store.close()


async def test_an_unreachable_prometheus_is_a_line_not_a_failure(
    store: Store, aiohttp_client: object
) -> None:
    import aiohttp

    period = report_period("day", UTC_ZONE, now=NOW)
    async with aiohttp.ClientSession() as session:
        client = HttpPromQLClient(f"http://127.0.0.1:{free_port()}", session)
        report = await build_report(store, period, ReportsConfig(), client, now=NOW)
    for measured in (report.bandwidth, report.wan, report.anomalies):
        assert measured.rows == ()
        assert measured.unavailable is not None
        assert measured.unavailable.startswith("not available: ")


def test_periods_follow_the_local_wall_clock() -> None:
    paris = ZoneInfo("Europe/Paris")
    # The week across the end of summer time is 169 hours long.
    week = report_period("week", paris, now=NOW, end_date=date(2026, 10, 26))
    assert week.local_start == datetime(2026, 10, 20, tzinfo=paris)
    assert week.length == timedelta(days=7, hours=1)
    month = report_period("month", UTC_ZONE, now=datetime(2026, 3, 31, 8, tzinfo=UTC))
    assert month.start == datetime(2026, 2, 28, 8, tzinfo=UTC)
    day = report_period("day", UTC_ZONE, now=NOW)
    assert (day.start, day.end) == (NOW - timedelta(days=1), NOW)
    with pytest.raises(ValueError, match="unknown report period"):
        report_period("year", UTC_ZONE, now=NOW)  # type: ignore[arg-type]


def test_durations_read_like_a_person_writes_them() -> None:
    assert duration_text(timedelta(minutes=70)) == "1h 10m"
    assert duration_text(timedelta(seconds=250)) == "4m 10s"
    assert duration_text(timedelta(days=2, hours=3)) == "2d 03h"
    assert duration_text(None) == "—"


def test_in_french_durations_and_sizes_use_french_units() -> None:
    fr = translator("fr", "console")
    assert duration_text(timedelta(minutes=10), fr) == "10 min"
    assert duration_text(timedelta(seconds=250), fr) == "4 min 10 s"
    assert duration_text(timedelta(days=2, hours=3, minutes=5), fr) == "2 j 3 h"
    assert duration_text(None, fr) == "—"
    assert bytes_text(1.5e9, fr) == "1,5\u202fGo"
    # English keeps its short forms.
    assert duration_text(timedelta(minutes=10), translator("en", "console")) == "10m 00s"
    assert bytes_text(1.5e9) == "1.5 GB"


async def test_the_csv_round_trips_and_cannot_run_formulas(store: Store) -> None:
    report = await week_report(store)
    rows = list(csv.reader(io.StringIO(report_csv(report))))
    sections = {row[0] for row in rows if row[0] != "section"}
    assert sections == {
        "summary",
        "timing",
        "priority",
        "site",
        "rules",
        "targets",
        "bandwidth",
        "wan",
        "anomalies",
    }
    priority = [row[1:] for row in rows if row[0] == "priority"]
    assert priority == [[p, str(n)] for p, n in report.by_priority]
    summary = {row[1]: row[2] for row in rows if row[0] == "summary"}
    assert summary["Incidents"] == "4"
    assert summary["Compression (alerts received per incident)"] == "2.25"
    assert summary["Alerts received (firing)"] == "9"
    assert summary["Found useful"] == "0.666667"
    targets = [row[1] for row in rows if row[0] == "targets"]
    # The hostile target keeps its text, made inert for spreadsheets; quotes survive.
    assert "'" + FORMULA in targets
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
    assert [row[1] for row in rows if row[0] == "wan"] == [NO_PROMETHEUS]


async def test_the_csvs_figures_are_numbers_a_spreadsheet_reads(store: Store) -> None:
    report = await week_report(store)
    measured = replace(
        report,
        bandwidth=Measured((Talker("10.1.1.9", "source", 1.5e9),)),
        wan=Measured((WanLink("r1", "ge-0/0/3", "in", 0.25, math.nan),)),
        anomalies=Measured((AnomalyPeak("load", "instance=r1", 0.875),)),
    )
    rows = list(csv.reader(io.StringIO(report_csv(measured))))
    section = {
        key: [row[1:] for row in rows if row[0] == key]
        for key in ("summary", "timing", "bandwidth", "wan", "anomalies")
    }
    assert section["summary"] == [
        ["Incidents", "4"],
        ["Still open", "1"],
        ["Merged into others (not counted)", "1"],
        ["Alerts received (firing)", "9"],
        ["Distinct alerts in these incidents", "7"],
        ["Compression (alerts received per incident)", "2.25"],
        ["Feedback given", "3"],
        ["Found useful", "0.666667"],
        ["LLM calls", "2"],
        ["LLM calls failed", "1"],
        ["LLM tokens in", "1210"],
        ["LLM tokens out", "480"],
        ["LLM estimated cost (USD)", "0.03"],
    ]
    assert ["section", "Measure", "Mean (seconds)", "Median (seconds)", "Incidents"] in rows
    # Seconds, and over how many incidents (of the summary's 4).
    assert section["timing"] == [
        ["Time to acknowledge", "600", "600", "2"],
        ["Time to resolve", "4200", "3600", "3"],
    ]
    assert section["bandwidth"] == [["10.1.1.9", "source", "1500000000"]]
    # A share is a fraction; a peak Prometheus had no value for is an empty cell.
    assert section["wan"] == [["r1", "ge-0/0/3", "in", "0.25", ""]]
    assert section["anomalies"] == [["load", "instance=r1", "0.875"]]
    # No cell holds a unit, a percent sign, a thousands separator or a dash for none.
    figures = [
        *(row[1] for row in section["summary"]),
        *(cell for row in section["timing"] for cell in row[1:]),
        *(row[2] for row in section["bandwidth"]),
        *(cell for row in section["wan"] for cell in row[3:]),
        *(row[2] for row in section["anomalies"]),
    ]
    assert all(re.fullmatch(r"\d+(\.\d+)?|", cell) for cell in figures), figures
    # An empty report has blanks where it has no figure: no incident to divide by.
    empty = await build_report(
        store,
        report_period("week", UTC_ZONE, now=NOW, end_date=WEEK_END - timedelta(days=21)),
        ReportsConfig(),
        None,
        now=NOW,
    )
    blanks = {row[1]: row[2:] for row in csv.reader(io.StringIO(report_csv(empty)))}
    assert blanks["Compression (alerts received per incident)"] == [""]
    assert blanks["Found useful"] == [""]
    assert blanks["Time to resolve"] == ["", "", "0"]


async def test_the_html_and_pdf_keep_figures_written_for_people(store: Store) -> None:
    maker = ReportMaker(store, SidecarConfig(), None)
    made = await maker.make(maker.period("week", end_date=WEEK_END), now=NOW)
    made = replace(
        made,
        report=replace(
            made.report,
            bandwidth=Measured((Talker("10.1.1.9", "source", 1.5e9),)),
            wan=Measured((WanLink("r1", "ge-0/0/3", "in", 0.25, 0.9),)),
        ),
    )
    page = made.html()
    pdf = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(await made.pdf())).pages)
    for shown in ("1h 10m", "67%", "2.2", "1.5 GB", "25%", "90%", "2 of 4", "2 (1)"):
        assert shown in page, shown
        assert shown in pdf, shown
    assert "LLM calls (failed)" in page
    assert "Mean (seconds)" not in page


# Invisible characters that change what a reader sees: a right-to-left override, the
# isolates, left-to-right and right-to-left marks, a zero-width space, NUL, a C1 control
# (NEL), escape, delete.
INVISIBLE = "\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u200b\x00\x85\x1b\x7f"


async def test_the_csv_holds_no_invisible_characters_from_alert_text(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "scout.db")
    try:
        hidden = '\u202e=HYPERLINK("http://evil")'
        tricky = member(f"Disk{INVISIBLE}Full", hidden, fingerprint="tricky")
        await store.save_incidents(
            [incident("x", tricky, priority="P2", created=timedelta(0), site=f"pa{INVISIBLE}ris")]
        )
        report = await week_report(store)
    finally:
        await store.close()
    text = report_csv(report)
    rows = list(csv.reader(io.StringIO(text)))
    assert ["site", "paris", "1"] in rows
    assert ["rules", "DiskFull", "1", "1"] in rows
    # The override hid the formula from the check; without it the cell is made inert.
    assert ["targets", "'" + FORMULA, "1", "1"] in rows
    assert not [c for c in text if c != "\r" and c != "\n" and not c.isprintable()]


@pytest.mark.parametrize(
    "cell", ["  =1+1", " @SUM(A1)", "\u00a0=cmd|' /C calc'!A0", "\n=1+2", " \t-2+3"]
)
def test_a_formula_after_leading_blanks_is_made_inert(cell: str) -> None:
    # Spreadsheets (LibreOffice with "trim spaces", Google Sheets) drop the blanks first.
    assert spreadsheet_safe(cell) == "'" + cell


def test_plain_cells_stay_as_they_are() -> None:
    for cell in ("paris", " paris", "P1", "67%", ""):
        assert spreadsheet_safe(cell) == cell


@pytest.mark.parametrize("tallest", [0, -1])
async def test_the_charts_legend_covers_no_bar(store: Store, tallest: int) -> None:
    report = await week_report(store)
    buckets = list(report.buckets)
    # The first or the newest day (a storm today) is the tallest bar.
    buckets[tallest] = replace(buckets[tallest], counts=(6, 4, 3, 2))
    figure = chart_figure(replace(report, buckets=tuple(buckets)))
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    (axes,) = figure.axes
    legend = axes.get_legend().get_window_extent(renderer)
    bars = [bar.get_window_extent(renderer) for bar in axes.patches if bar.get_height() > 0]
    assert len(bars) >= 4  # the tall day's four priorities, and the other days'
    assert not [bar for bar in bars if bar.overlaps(legend)]
    # And the legend is on the image.
    assert figure.bbox.contains(legend.x0, legend.y0)
    assert figure.bbox.contains(legend.x1, legend.y1)


async def test_the_pdf_opens_with_every_table(store: Store) -> None:
    maker = ReportMaker(store, SidecarConfig(), None)
    made = await maker.make(maker.period("week", end_date=WEEK_END), now=NOW)
    reader = PdfReader(io.BytesIO(await made.pdf()))
    text = "\n".join(page.extract_text() for page in reader.pages)
    for title in (
        "Incidents by priority",
        "Incidents by site",
        "Noisiest alert rules",
        "Noisiest targets",
        "Time to acknowledge",
        "Top bandwidth consumers",
        "WAN utilisation",
        "Top anomalies",
    ):
        assert title in text
    assert "paris" in text
    assert "lyon" in text
    assert "Zürich" in text
    assert SCRIPT in text
    assert "1h 10m" in text  # the mean time to resolve


class FixedUser:
    """A session backend that always finds ``user`` (or nobody)."""

    def __init__(self, user: ConsoleUser | None) -> None:
        self.user = user

    async def user_for(self, request: web.Request) -> ConsoleUser | None:
        return self.user


VIEWER = ConsoleUser("vera", Role.VIEWER, "token")


@pytest.fixture
async def console(aiohttp_client, tmp_path: Path):  # type: ignore[no-untyped-def]
    store = await SqliteStore.open(tmp_path / "data" / "scout.db")
    await fill(store)
    await store.close()
    app = create_app(SidecarSettings(data_dir=tmp_path / "data", webhook_token="t"))
    backend = FixedUser(VIEWER)
    app[SESSIONS] = backend
    client = await aiohttp_client(app)
    client.backend = backend
    return client


async def test_the_report_page_escapes_alert_text_and_links_its_downloads(console) -> None:  # type: ignore[no-untyped-def]
    response = await console.get("/console/reports", params={"period": "week", "end": "2026-11-08"})
    assert response.status == 200
    page = await response.text()
    assert '<form id="report"' in page
    assert 'href="/console/reports.csv?period=week&amp;end=2026-11-08"' in page
    assert 'href="/console/reports.pdf?period=week&amp;end=2026-11-08"' in page
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<option value="week" selected>' in page
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")

    download = await console.get(
        "/console/reports.csv", params={"period": "week", "end": "2026-11-08"}
    )
    assert download.status == 200
    assert download.headers["Content-Disposition"] == (
        'attachment; filename="scout-report-week-2026-11-08.csv"'
    )
    assert download.headers["Content-Type"] == "text/csv; charset=utf-8"
    opened = as_excel_reads(await download.read())
    rows = list(csv.reader(io.StringIO(opened)))
    assert rows[0][:2] == ["section", "Measure"]
    assert ["summary", "Incidents", "4"] in rows
    # Accented alert text survives the trip into a spreadsheet.
    assert "Zürich 🔥" in opened

    pdf = await console.get("/console/reports.pdf", params={"period": "day"})
    assert pdf.status == 200
    assert (await pdf.read()).startswith(b"%PDF")


async def test_bad_parameters_and_strangers_are_turned_away(console) -> None:  # type: ignore[no-untyped-def]
    bad = await console.get("/console/reports", params={"period": "year"})
    assert bad.status == 400
    assert "period should be one of day, week, month" in await bad.text()
    bad_end = await console.get("/console/reports.csv", params={"end": "8/11/2026"})
    assert bad_end.status == 400
    far = await console.get("/console/reports", params={"end": "9999-12-31"})
    assert far.status == 400
    assert "the end date should be between" in await far.text()
    console.backend.user = None
    away = await console.get("/console/reports.pdf", allow_redirects=False)
    assert away.status == 303
    assert away.headers["Location"].startswith("/console/login?next=")


def as_excel_reads(body: bytes) -> str:
    """A CSV file as Excel opens it: UTF-8 after a byte-order mark, else the machine's
    legacy code page (Windows-1252 in France and England)."""
    if body.startswith(codecs.BOM_UTF8):
        return body.decode("utf-8-sig")
    return body.decode("cp1252", errors="replace")


def run_cli(
    *args: str, data_dir: Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli_command("report", *args, data_dir=data_dir, cwd=cwd)


def run_cli_command(
    *args: str, data_dir: Path, cwd: Path | None = None, **scout_environ: str
) -> subprocess.CompletedProcess[str]:
    """``scout-sidecar ARGS`` with ``SCOUT_DATA_DIR`` and ``scout_environ`` its only
    ``SCOUT_*`` variables."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SCOUT_")}
    environ.update(scout_environ, SCOUT_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "ai_sidecar.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.peers
async def test_the_cli_writes_each_format(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    outputs = {}
    for fmt in ("csv", "html", "pdf"):
        output = tmp_path / f"report.{fmt}"
        done = run_cli(
            "--period",
            "week",
            "--end",
            "2026-11-08",
            "--format",
            fmt,
            "--output",
            str(output),
            data_dir=data,
        )
        assert done.returncode == 0, done.stderr
        assert "reading the store" in done.stderr
        outputs[fmt] = output.read_bytes()
    opened = as_excel_reads(outputs["csv"])
    assert ["priority", "P1", "1"] in list(csv.reader(io.StringIO(opened)))
    assert "Zürich 🔥" in opened
    html = outputs["html"].decode()
    assert "Noisiest targets" in html
    assert SCRIPT not in html
    assert "Incidents by site" in PdfReader(io.BytesIO(outputs["pdf"])).pages[0].extract_text()

    missing = run_cli("--output", str(tmp_path / "x.pdf"), data_dir=tmp_path / "nowhere")
    assert missing.returncode == 2
    assert "no store at" in missing.stderr
    bad = run_cli("--end", "yesterday", "--output", "x", data_dir=data)
    assert bad.returncode == 2
    assert "the end date should be YYYY-MM-DD" in bad.stderr
    unwritable = run_cli("--output", str(tmp_path / "no" / "dir" / "r.pdf"), data_dir=data)
    assert unwritable.returncode == 2
    assert "cannot write" in unwritable.stderr
    # Refused before the report is made, not after minutes of work.
    assert "reading the store" not in unwritable.stderr
    # Each report appeared whole, by a rename: no temporary file is left beside it.
    assert [name for name in os.listdir(tmp_path) if name.startswith(".report.")] == []

    # "-" is stdout, as for most commands; what it is doing still goes to stderr.
    piped = run_cli(
        "--end", "2026-11-08", "--format", "csv", "--output", "-", data_dir=data, cwd=tmp_path
    )
    assert piped.returncode == 0, piped.stderr
    # The same CSV, without the byte-order mark the file has for spreadsheets: the
    # programs a pipe feeds would take it as part of the first column's name.
    assert piped.stdout.startswith("section,")
    assert piped.stdout.splitlines() == outputs["csv"].decode("utf-8-sig").splitlines()
    assert "to stdout" in piped.stderr
    assert not (tmp_path / "-").exists()


def test_slots_are_weekday_and_time_in_the_zone() -> None:
    paris = ZoneInfo("Europe/Paris")
    config = parse_config(
        "reports: {digest: {schedule: {weekday: monday, at: '08:00'}}}", "t"
    ).reports.digest.schedule
    # Wednesday: the latest slot is Monday 08:00 Paris (07:00 UTC in winter).
    wednesday = datetime(2026, 11, 4, 12, tzinfo=UTC)
    assert latest_slot(wednesday, config, paris) == datetime(2026, 11, 2, 7, tzinfo=UTC)
    assert next_slot(wednesday, config, paris) == datetime(2026, 11, 9, 7, tzinfo=UTC)
    daily = config.model_copy(update={"weekday": None})
    assert latest_slot(wednesday, daily, paris) == datetime(2026, 11, 4, 7, tzinfo=UTC)


def test_slots_across_a_daylight_saving_change_are_compared_as_instants() -> None:
    paris = ZoneInfo("Europe/Paris")
    daily = parse_config(
        "reports: {digest: {schedule: {weekday: null, at: '02:30'}}}", "t"
    ).reports.digest.schedule
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; the missing 02:30 is taken as 01:30 UTC.
    # At 03:15 CEST (01:15 UTC) today's slot is still 15 minutes away.
    spring = datetime(2026, 3, 29, 1, 15, tzinfo=UTC)
    assert latest_slot(spring, daily, paris) == datetime(2026, 3, 28, 1, 30, tzinfo=UTC)
    assert next_slot(spring, daily, paris) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET. The slot, 02:30 CEST (00:30 UTC),
    # has passed at the second 02:15 (CET, 01:15 UTC): the next one is tomorrow, not
    # "now" over and over for 45 minutes.
    autumn = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)
    assert latest_slot(autumn, daily, paris) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert next_slot(autumn, daily, paris) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
    # Just after the spring slot, the next is tomorrow 02:30 CEST, not 03:30.
    after = datetime(2026, 3, 29, 1, 45, tzinfo=UTC)
    assert next_slot(after, daily, paris) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)
    for now in (spring, autumn, after):
        assert latest_slot(now, daily, paris) <= now < next_slot(now, daily, paris)


def digest_config(sink: SmtpSink, smtp: str = "", **retry: str) -> SidecarConfig:
    return parse_config(
        "reports:\n"
        "  digest:\n"
        "    enabled: true\n"
        "    period: week\n"
        "    schedule: {weekday: monday, at: '00:00'}\n"
        "    recipients: [noc@example.net, lead@example.net]\n"
        f"    smtp: {{host: {sink.host}, port: {sink.port}, security: none,"
        f" from: scout@example.net{smtp}}}\n"
        f"    retry: {{first: {retry.get('first', '1m')}, max: 1s,"
        f" attempts: {retry.get('attempts', '3')}}}\n",
        "t",
    )


def counts(registry: CollectorRegistry) -> dict[str, float]:
    return {
        outcome: registry.get_sample_value("scout_reports_digest_sent_total", {"outcome": outcome})
        or 0.0
        for outcome in ("sent", "failed", "abandoned")
    }


def scheduler_for(  # type: ignore[no-untyped-def]
    store: Store, config: SidecarConfig, counter, sleeps: list[float], holder: str = "a"
) -> DigestScheduler:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return DigestScheduler(
        ReportMaker(store, config, None),
        store,
        config.reports.digest,
        config.notifications.zone,
        counter,
        holder=holder,
        clock=lambda: NOW,
        sleep=sleep,
    )


async def sent_before(store: Store, slot: datetime) -> None:
    """The store as if ``slot``'s digest had gone out."""
    assert await store.claim_digest(slot, "earlier", now=slot, hold=timedelta(minutes=1))
    assert await store.finish_digest(slot, "earlier", at=slot)


MONDAY = datetime(2026, 11, 9, tzinfo=UTC)  # the latest slot at NOW


@pytest.mark.peers
async def test_the_first_start_only_notes_the_latest_slot(store: Store) -> None:
    registry = CollectorRegistry()
    with SmtpSink() as sink:
        scheduler = scheduler_for(store, digest_config(sink), digest_counter(registry), [])
        await scheduler.tick()
        await scheduler.tick()
        assert sink.messages() == []
    assert await store.last_digest() == MONDAY
    assert counts(registry) == {"sent": 0, "failed": 0, "abandoned": 0}


@pytest.mark.peers
async def test_the_digest_arrives_with_its_pdf_once_per_slot(store: Store) -> None:
    registry = CollectorRegistry()
    counter = digest_counter(registry)
    await sent_before(store, MONDAY - timedelta(days=7))
    with SmtpSink() as sink:
        config = digest_config(sink)
        # Two replicas on one store, at the same moment: one sends.
        await asyncio.gather(
            scheduler_for(store, config, counter, [], holder="a").tick(),
            scheduler_for(store, config, counter, [], holder="b").tick(),
        )
        message = await asyncio.to_thread(sink.wait_for)
        await scheduler_for(store, config, counter, [], holder="a").tick()  # done already
    assert len(sink.messages()) == 1
    assert message["To"] == "noc@example.net, lead@example.net"
    assert message["Subject"] == "Scout week report to 2026-11-09 00:00: 4 incidents"
    # RFC 5322 requires a Date; without one, filters score the mail as spam.
    assert message["Date"].datetime == NOW
    assert message["Message-ID"].endswith("@example.net>")
    html = email_body(message, "html")
    assert "Noisiest alert rules" in html
    assert "&lt;script&gt;" in html
    assert SCRIPT not in html
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "scout-report-week-2026-11-08.pdf"
    text = PdfReader(io.BytesIO(attachment.get_content())).pages[0].extract_text()
    assert "Incidents by priority" in text
    assert await store.last_digest() == MONDAY
    assert counts(registry) == {"sent": 1, "failed": 0, "abandoned": 0}


@pytest.mark.peers
async def test_a_refusing_server_is_retried_with_backoff_then_succeeds(store: Store) -> None:
    registry = CollectorRegistry()
    counter = digest_counter(registry)
    sleeps: list[float] = []
    with SmtpSink(refuse=2) as sink:
        config = digest_config(sink, first="400ms", attempts="4")
        assert await scheduler_for(store, config, counter, sleeps).deliver(MONDAY)
        assert sink.refused == 2
        assert len(sink.messages()) == 1
    assert sleeps == [0.4, 0.8]
    assert counts(registry) == {"sent": 1, "failed": 2, "abandoned": 0}

    with SmtpSink(refuse=5) as sink:
        config = digest_config(sink, first="2s", attempts="2")
        next_monday = MONDAY + timedelta(days=7)
        assert not await scheduler_for(store, config, counter, sleeps).deliver(next_monday)
        # Given up: done, so not tried again (by this replica or another).
        assert not await scheduler_for(store, config, counter, [], holder="b").deliver(next_monday)
        assert sink.refused == 2
    # The pause never exceeds retry.max.
    assert sleeps[-1] == 1.0
    assert counts(registry) == {"sent": 1, "failed": 4, "abandoned": 1}


@pytest.mark.peers
async def test_a_permanent_refusal_is_given_up_at_once(store: Store) -> None:
    registry = CollectorRegistry()
    counter = digest_counter(registry)
    sleeps: list[float] = []
    with SmtpSink(refuse=5, refusal="554 5.7.1 message rejected as spam") as sink:
        config = digest_config(sink, first="1s", attempts="4")
        assert not await scheduler_for(store, config, counter, sleeps).deliver(MONDAY)
        # Another attempt would be refused the same way: none is made.
        assert sink.refused == 1
    assert sleeps == []
    assert counts(registry) == {"sent": 0, "failed": 1, "abandoned": 1}
    assert await store.last_digest() == MONDAY


@pytest.mark.peers
# The sink asks for a login over plain text, on loopback.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_a_refused_login_is_not_retried_nor_logged(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    counter = digest_counter(registry)
    password_file = tmp_path / "smtp-password"
    password_file.write_text("wrong-password\n")
    smtp = f", username: scout, password_file: '{password_file}'"
    with SmtpSink(login=("scout", "right-password")) as sink:
        config = digest_config(sink, smtp, first="1s", attempts="4")
        assert not await scheduler_for(store, config, counter, []).deliver(MONDAY)
        # Retrying a wrong password only risks locking the mail account.
        assert sink.logins == 1
        password_file.write_text("right-password\n")
        assert await scheduler_for(store, config, counter, []).deliver(MONDAY + timedelta(days=7))
        assert len(sink.messages()) == 1
    assert counts(registry) == {"sent": 1, "failed": 1, "abandoned": 1}
    reasons = [r.__dict__.get("reason") for r in caplog.records]
    assert "the server refused the username or password" in reasons
    logged = " ".join(str(r.__dict__) for r in caplog.records)
    assert "wrong-password" not in logged
    assert "right-password" not in logged


@pytest.mark.peers
async def test_recipients_the_server_refuses_are_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    with SmtpSink(unknown=frozenset({"lead@example.net"})) as sink:
        config = digest_config(sink)
        assert await scheduler_for(store, config, digest_counter(registry), []).deliver(MONDAY)
        assert len(sink.messages()) == 1
    assert counts(registry) == {"sent": 1, "failed": 0, "abandoned": 0}
    (refused,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refused.levelname == "WARNING"
    assert refused.__dict__["refused"] == "lead@example.net (550)"


@pytest.mark.peers
async def test_the_app_sends_a_missed_digest_when_it_starts(aiohttp_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    store = await SqliteStore.open(data / "scout.db")
    await fill(store)
    # A slot long ago was the last sent: the latest one is due.
    await sent_before(store, datetime(2026, 1, 5, tzinfo=UTC))
    await store.close()
    with SmtpSink() as sink:
        config = digest_config(sink)
        app = create_app(SidecarSettings(data_dir=data, webhook_token="t"), config)
        client = await aiohttp_client(app)
        message = await asyncio.to_thread(sink.wait_for)
        assert message["Subject"].startswith("Scout week report")
        sent = 'scout_reports_digest_sent_total{outcome="sent"} 1.0'
        # Counted once the server has acknowledged the message, just after it arrived.
        for _ in range(100):
            metrics = await (await client.get("/metrics")).text()
            if sent in metrics:
                break
            await asyncio.sleep(0.1)
        assert sent in metrics
        assert await app[STORE].last_digest() == latest_slot(
            datetime.now(UTC), config.reports.digest.schedule, UTC_ZONE
        )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{digest: {enabled: true}}", "the digest is enabled but has no recipients"),
        ("{digest: {schedule: {at: '8h'}}}", "should be a time of day as HH:MM"),
        ("{digest: {schedule: {weekday: mon}}}", "reports.digest.schedule.weekday"),
        ("{digest: {smtp: {password_file: /x}}}", "password_file is set but username is not"),
        ("{digest: {recipients: [nobody]}}", "reports.digest.recipients.0"),
        ("{top: 0}", "reports.top"),
        (
            "{digest: {smtp: {host: smtp.example.net, security: none, username: scout}}}",
            "security: none would send the password in clear text to smtp.example.net",
        ),
        ("{digest: {smtp: {port: 465}}}", "port 465 speaks TLS from the first byte"),
        ("{digest: {smtp: {security: tls, port: 587}}}", "port 587 starts in plain text"),
        (
            '{digest: {smtp: {from: "a@example.net\\r\\nBcc: x@example.org"}}}',
            "reports.digest.smtp.from",
        ),
        ("{digest: {smtp: {from: scout}}}", "reports.digest.smtp.from"),
    ],
)
def test_bad_reports_config_is_refused_with_its_line(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_config(f"reports: {text}\n", "sidecar.yml")


@pytest.mark.parametrize(
    "smtp",
    [
        "{host: localhost, security: none, username: scout}",
        "{host: 127.0.0.1, port: 25, security: none, username: scout}",
        "{host: '::1', security: none, username: scout}",
        "{host: smtp.example.net, security: none}",
        "{host: smtp.example.net, port: 465, security: tls}",
        "{host: smtp.example.net, port: 2525}",
        "{from: 'Scout <scout@example.net>'}",
    ],
)
def test_sound_smtp_settings_are_accepted(smtp: str) -> None:
    parse_config(f"reports: {{digest: {{smtp: {smtp}}}}}\n", "sidecar.yml")


def test_the_full_config_reads_its_digest() -> None:
    config = load_config(Path(__file__).parent / "configs" / "full.yml").reports
    assert config.digest.smtp.sender == "scout@example.net"
    assert config.digest.smtp.password_file == Path("/run/secrets/smtp_password")
    assert config.digest.schedule.weekday is None


def digest_with_password_file(tmp_path: Path, password_file: Path) -> Path:
    config = tmp_path / "sidecar.yml"
    config.write_text(
        "reports:\n"
        "  digest:\n"
        "    enabled: true\n"
        "    recipients: [noc@example.net]\n"
        f"    smtp: {{username: scout, password_file: '{password_file}'}}\n"
    )
    return config


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("missing", None, "cannot read {path}: No such file or directory"),
        ("a-directory", "", "cannot read {path}: Is a directory"),
        ("empty", "\n", "{path} is empty"),
    ],
)
def test_serve_refuses_an_unreadable_smtp_password_file_at_start(
    tmp_path: Path, name: str, content: str | None, error: str
) -> None:
    password_file = tmp_path / name
    if name == "a-directory":
        password_file.mkdir()
    elif content is not None:
        password_file.write_text(content)
    config = digest_with_password_file(tmp_path, password_file)
    done = run_cli_command(
        "serve", "--dry-run", "--web.insecure-no-auth", f"--config.file={config}", data_dir=tmp_path
    )
    assert done.returncode == 1
    assert f"reports.digest.smtp.password_file: {error.format(path=password_file)}" in done.stderr


def test_serve_starts_with_a_readable_smtp_password_file(tmp_path: Path) -> None:
    password_file = tmp_path / "smtp-password"
    password_file.write_text("s3cret-pass\n")
    config = digest_with_password_file(tmp_path, password_file)
    done = run_cli_command(
        "serve", "--dry-run", "--web.insecure-no-auth", f"--config.file={config}", data_dir=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "s3cret-pass" not in done.stdout + done.stderr


async def test_reports_render_two_at_a_time(monkeypatch):
    """However many are asked for at once: the rest of the default pool, which the
    webhook's parsing of large deliveries uses, stays free."""
    running: list[str] = []
    most = 0
    lock = threading.Lock()

    def slow_pdf(*args: object) -> bytes:
        nonlocal most
        with lock:
            running.append(threading.current_thread().name)
            most = max(most, len(running))
        time.sleep(0.1)
        with lock:
            names = list(running)
            running.remove(threading.current_thread().name)
        return ",".join(names).encode()

    monkeypatch.setattr(service, "report_pdf", slow_pdf)
    rendered = service.Rendered(report=None, chart=b"")  # type: ignore[arg-type]
    answers = await asyncio.gather(*(rendered.pdf() for _ in range(8)))
    assert most == 2
    assert len(answers) == 8


def test_no_report_thread_outlives_its_event_loop(monkeypatch):
    """A daemon's exit waits for its live threads (scout-exporter gives up and exits
    at once): threads kept idle for reports would hold it, or cut it short."""
    monkeypatch.setattr(service, "report_pdf", lambda *args: b"%PDF")
    before = set(threading.enumerate())
    assert asyncio.run(service.Rendered(report=None, chart=b"").pdf()) == b"%PDF"  # type: ignore[arg-type]
    left = [t for t in set(threading.enumerate()) - before if not t.daemon]
    for thread in left:
        thread.join(5)
    assert [t.name for t in left if t.is_alive()] == []
