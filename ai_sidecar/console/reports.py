"""Reports as HTML, CSV and PDF, and the scheduled digest (placeholder)."""

from __future__ import annotations

from aiohttp import web


def setup_reports(app: web.Application) -> None:
    """Register /console/reports and start the digest schedule."""
