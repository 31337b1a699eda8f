"""The periods a report covers, with no imports: the command line offers them too.

:mod:`ai_sidecar.console.reports.period` computes them; its package starts
the console, which ``scout-sidecar report --help`` does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ai_sidecar.config import ReportPeriod

REPORT_PERIODS: tuple[ReportPeriod, ...] = ("day", "week", "month")
