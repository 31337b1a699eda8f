"""The health and freshness banner every console page shows.

Placeholder until the pages land: no banner.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def health_summary(app: web.Application) -> dict[str, Any] | None:
    return None
