"""Users, sessions, CSRF tokens, the login form and logout (placeholder)."""

from __future__ import annotations

from aiohttp import web


def setup_login(app: web.Application) -> None:
    """Register /console/login and /console/logout and install the session backend."""
