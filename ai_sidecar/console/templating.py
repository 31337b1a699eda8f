"""Jinja2 templates for the console, escaped by default.

Alert labels and annotations are untrusted and may carry ``<script>``:
autoescaping is on for every template, and no template marks alert text safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from ai_sidecar import __version__
from ai_sidecar.console.health import health_summary
from ai_sidecar.console.session import CSRF_FIELD, ConsoleUser

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.globals["version"] = __version__
ENVIRONMENT.globals["csrf_field"] = CSRF_FIELD

# Pages are per user and change by the second: no cache may keep them, and no
# other origin may frame them or run scripts in them.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    *,
    user: ConsoleUser | None,
    status: int = 200,
) -> web.Response:
    """``template`` rendered for ``user`` (None on the login page), with the health banner."""
    page = ENVIRONMENT.get_template(template).render(
        user=user,
        health=await health_summary(request.app) if user is not None else None,
        request_path=request.path,
        **context,
    )
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


def render_error(status: int, message: str) -> web.Response:
    """An error page without session or health: used by the app's middleware."""
    page = ENVIRONMENT.get_template("error.html").render(
        user=None, health=None, request_path="", status=status, message=message
    )
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )
