"""Reports: a period's incidents, noise, response times, feedback, LLM use and
network figures, as a console page, CSV, PDF, a CLI command and an e-mail digest.

- :mod:`.period`: the day, week or month a report covers, in ``notifications.timezone``;
- :mod:`.model`: the numbers (:func:`build_report`), from the store;
- :mod:`.measured`: the numbers from Prometheus, or why there are none;
- :mod:`.tables` and :mod:`.render`: the tables every format shows, and the formats;
- :mod:`.routes`: ``/console/reports`` (``.csv``, ``.pdf``);
- :mod:`.command`: ``scout-sidecar report``;
- :mod:`.digest`: the scheduled e-mail over SMTP.

See docs/reports.md.
"""

from __future__ import annotations

from aiohttp import web

from ai_sidecar.console.reports.digest import add_digest
from ai_sidecar.console.reports.routes import add_report_routes


def setup_reports(app: web.Application) -> None:
    """Register /console/reports and start the digest schedule (when enabled)."""
    add_report_routes(app)
    add_digest(app)


__all__ = ["setup_reports"]
