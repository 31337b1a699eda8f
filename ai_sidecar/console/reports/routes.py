"""``/console/reports``: the report as a page, and the same report as CSV and PDF.

Query parameters, the same for the three: ``period`` (day, week, month;
default week) and ``end`` (``YYYY-MM-DD``: the report ends at the end of that
day in ``notifications.timezone``; default: now). Any signed-in user may read
reports. While the health banner's probe finds Prometheus unreachable, the
report leaves its Prometheus tables out (saying so) rather than wait for each
query's time box, as the anomalies page leaves out its charts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from ai_sidecar.components import promql_client
from ai_sidecar.console.health import PROBE
from ai_sidecar.console.language import configured_language, page_language, page_words
from ai_sidecar.console.reports.period import PERIODS, EndDateError, Period, parse_end_date
from ai_sidecar.console.reports.render import template_context
from ai_sidecar.console.reports.service import ReportMaker
from ai_sidecar.console.session import ConsoleUser, console_user
from ai_sidecar.console.templating import SECURITY_HEADERS, render
from ai_sidecar.keys import CONFIG, SETTINGS, STORE

REPORTS = web.AppKey("console_reports", ReportMaker)
PAGE = "/console/reports"


async def report_maker(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the app's report maker, with a Prometheus client of its own."""
    async with aiohttp.ClientSession() as session:
        app[REPORTS] = ReportMaker(
            app[STORE],
            app[CONFIG],
            promql_client(app[SETTINGS], session),
            language=lambda: configured_language(app),
            prometheus_is_down=lambda: _probe_found_down(app),
        )
        yield


def _probe_found_down(app: web.Application) -> bool:
    probe = app.get(PROBE)
    return probe is not None and probe.state == "unreachable"


@dataclass(frozen=True, slots=True)
class Asked:
    """The period a request asks for, its end date as given, and the query string
    that asks for the same report again (the download links)."""

    period: Period
    end_date: date | None
    query: str


async def _asked(request: web.Request, user: ConsoleUser) -> Asked:
    """The report asked for; a 400 page in the reader's language when it makes no sense."""
    t = (await page_words(request, user)).t
    kind = request.query.get("period", "week")
    if kind not in PERIODS:
        problem = t.gettext("period should be one of {periods}")
        raise web.HTTPBadRequest(text=problem.format(periods=", ".join(PERIODS)))
    end_text = request.query.get("end", "").strip()
    try:
        end_date = parse_end_date(end_text) if end_text else None
    except EndDateError as exc:
        raise web.HTTPBadRequest(text=t.gettext(exc.message).format(**exc.values)) from None
    period = request.app[REPORTS].period(kind, end_date=end_date)
    query = {"period": kind, **({"end": end_date.isoformat()} if end_date else {})}
    return Asked(period, end_date, urlencode(query))


def report_filename(period: Period, extension: str) -> str:
    return f"scout-report-{period.kind}-{period.last_day:%Y-%m-%d}.{extension}"


def _download(body: bytes, content_type: str, filename: str) -> web.Response:
    return web.Response(
        body=body,
        headers={
            **SECURITY_HEADERS,
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


async def report_page(request: web.Request) -> web.Response:
    user = await console_user(request)
    asked = await _asked(request, user)
    language = await page_language(request, user)
    made = await request.app[REPORTS].make(asked.period, language=language)
    context = template_context(made.report, made.chart, language=language)
    context.update(
        periods=PERIODS,
        query=asked.query,
        end_value="" if asked.end_date is None else asked.end_date.isoformat(),
    )
    return await render(request, "report.html", context, user=user)


async def report_csv(request: web.Request) -> web.Response:
    user = await console_user(request)
    period = (await _asked(request, user)).period
    made = await request.app[REPORTS].make(period)
    return _download(made.csv_file(), "text/csv; charset=utf-8", report_filename(period, "csv"))


async def report_pdf(request: web.Request) -> web.Response:
    user = await console_user(request)
    period = (await _asked(request, user)).period
    made = await request.app[REPORTS].make(period, language=await page_language(request, user))
    return _download(await made.pdf(), "application/pdf", report_filename(period, "pdf"))


def add_report_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(report_maker)
    app.router.add_get(PAGE, report_page)
    app.router.add_get(f"{PAGE}.csv", report_csv)
    app.router.add_get(f"{PAGE}.pdf", report_pdf)
