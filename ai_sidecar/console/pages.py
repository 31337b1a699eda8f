"""Incidents, an incident's page and its actions, anomalies (placeholder)."""

from __future__ import annotations

from aiohttp import web


def setup_pages(app: web.Application) -> None:
    """Register /console/, /console/incidents, /console/incidents/{id} and /console/anomalies."""
