"""Making reports for the app and the CLI: the store, Prometheus and the config in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from ai_sidecar.clock import utc_now
from ai_sidecar.config import ReportPeriod, SidecarConfig
from ai_sidecar.console.reports.model import Report, build_report
from ai_sidecar.console.reports.period import Period, period_ending, report_period
from ai_sidecar.console.reports.render import (
    SPREADSHEET_ENCODING,
    chart_png,
    report_csv,
    report_html,
    report_pdf,
)
from ai_sidecar.console.reports.threads import on_report_thread
from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.promql import PromQLClient
from ai_sidecar.store import Store


@dataclass(frozen=True, slots=True)
class Rendered:
    """One report and its chart, ready for any format."""

    report: Report
    chart: bytes
    # The language of the HTML and PDF (the CSV stays English: read by programs).
    language: str = SOURCE_LANGUAGE

    def csv(self) -> str:
        return report_csv(self.report)

    def csv_file(self) -> bytes:
        """The CSV as a download or a file, which spreadsheets open: with a byte-order mark."""
        return self.csv().encode(SPREADSHEET_ENCODING)

    def html(self, chart_src: str | None = None) -> str:
        return report_html(self.report, self.chart, chart_src, self.language)

    async def pdf(self) -> bytes:
        # fpdf2 lays out in Python for a while: off the event loop.
        return await on_report_thread(report_pdf, self.report, self.chart, self.language)


class ReportMaker:
    """Builds reports from ``store`` and ``prometheus`` (None: no Prometheus) under ``config``.

    ``prometheus_is_down``, asked at each report: whether a health check found
    Prometheus not answering, so that its tables are left out rather than waited for.
    """

    def __init__(
        self,
        store: Store,
        config: SidecarConfig,
        prometheus: PromQLClient | None,
        language: Callable[[], str] | None = None,
        prometheus_is_down: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        self._config = config
        self._prometheus = prometheus
        # The default language, asked at each report: a reload may change it.
        self._language = language or (lambda: config.language)
        self._prometheus_is_down = prometheus_is_down

    def period(
        self, kind: ReportPeriod, *, end_date: date | None = None, now: datetime | None = None
    ) -> Period:
        return report_period(
            kind, self._config.notifications.zone, now=now or utc_now(), end_date=end_date
        )

    def period_ending(self, kind: ReportPeriod, end: datetime) -> Period:
        return period_ending(kind, end, self._config.notifications.zone)

    async def make(
        self, period: Period, *, now: datetime | None = None, language: str | None = None
    ) -> Rendered:
        """The report of ``period`` in ``language`` (default: the config's ``language`` in
        force)."""
        report = await build_report(
            self._store,
            period,
            self._config.reports,
            self._prometheus,
            now=now,
            prometheus_is_down=self._prometheus_is_down(),
        )
        language = language or self._language()
        chart = await on_report_thread(chart_png, report, language)
        return Rendered(report, chart, language)
