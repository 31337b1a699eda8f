"""``/console/reports``: the report as a page, and the same report as CSV and PDF.

Query parameters, the same for the three: ``period`` (day, week, month;
default week) and ``end`` (``YYYY-MM-DD``: the report ends at the end of that
day in ``notifications.timezone``; default: now). Any signed-in user may read
reports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from ai_sidecar.components import promql_client
from ai_sidecar.console.reports.period import PERIODS, Period, parse_end_date
from ai_sidecar.console.reports.render import template_context
from ai_sidecar.console.reports.service import ReportMaker
from ai_sidecar.console.session import console_user
from ai_sidecar.console.templating import SECURITY_HEADERS, render
from ai_sidecar.keys import CONFIG, SETTINGS, STORE

REPORTS = web.AppKey("console_reports", ReportMaker)
PAGE = "/console/reports"


async def report_maker(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the app's report maker, with a Prometheus client of its own."""
    async with aiohttp.ClientSession() as session:
        app[REPORTS] = ReportMaker(app[STORE], app[CONFIG], promql_client(app[SETTINGS], session))
        yield


def _asked(request: web.Request) -> tuple[Period, str]:
    """The period the query asks for, and the query string that asks for it again."""
    kind = request.query.get("period", "week")
    if kind not in PERIODS:
        raise web.HTTPBadRequest(text=f"period should be one of {', '.join(PERIODS)}")
    end_text = request.query.get("end", "").strip()
    try:
        end_date = parse_end_date(end_text) if end_text else None
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    period = request.app[REPORTS].period(kind, end_date=end_date)
    query = {"period": kind, **({"end": end_date.isoformat()} if end_date else {})}
    return period, urlencode(query)


def _filename(period: Period, extension: str) -> str:
    return f"scout-report-{period.kind}-{period.local_end:%Y-%m-%d}.{extension}"


def _download(body: bytes, content_type: str, filename: str) -> web.Response:
    return web.Response(
        body=body,
        content_type=content_type,
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def report_page(request: web.Request) -> web.Response:
    user = await console_user(request)
    period, query = _asked(request)
    made = await request.app[REPORTS].make(period)
    context = template_context(made.report, made.chart)
    context.update(
        periods=PERIODS,
        query=query,
        end_value=request.query.get("end", "") if "end=" in query else "",
    )
    return await render(request, "report.html", context, user=user)


async def report_csv(request: web.Request) -> web.Response:
    await console_user(request)
    period, _ = _asked(request)
    made = await request.app[REPORTS].make(period)
    return _download(made.csv().encode(), "text/csv", _filename(period, "csv"))


async def report_pdf(request: web.Request) -> web.Response:
    await console_user(request)
    period, _ = _asked(request)
    made = await request.app[REPORTS].make(period)
    return _download(await made.pdf(), "application/pdf", _filename(period, "pdf"))


def add_report_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(report_maker)
    app.router.add_get(PAGE, report_page)
    app.router.add_get(f"{PAGE}.csv", report_csv)
    app.router.add_get(f"{PAGE}.pdf", report_pdf)
