"""A sidecar app with the console's login, a few guarded routes, and a browser's moves."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from ai_sidecar.app import create_app
from ai_sidecar.config import ConsoleConfig, SidecarConfig
from ai_sidecar.console.login import LOGIN
from ai_sidecar.console.login.passwords import hash_password
from ai_sidecar.console.session import checked_form, console_user, operator_user
from ai_sidecar.console.templating import render
from ai_sidecar.keys import STORE
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import ConsoleAccount

TOKEN = "test-token-0123456789"
OPERATOR_PASSWORD = "correct horse battery"
VIEWER_PASSWORD = "viewer password 42"
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')

ClientFactory = Callable[..., Any]


@functools.cache
def password_hash(password: str) -> str:
    """argon2id costs about 0.15 s a hash: each test password is hashed once."""
    return hash_password(password)


async def whoami(request: web.Request) -> web.Response:
    user = await console_user(request)
    return web.json_response({"name": user.name, "role": user.role})


async def act(request: web.Request) -> web.Response:
    """Stands for an operator's action (feedback, acknowledge, silence)."""
    user = await operator_user(request)
    form = await checked_form(request, user)
    return web.json_response({"done": form.get("what")})


async def page(request: web.Request) -> web.Response:
    """A page on the console's base template, with its sign-out form."""
    user = await console_user(request)
    return await render(request, "error.html", {"status": 200, "message": "probe"}, user=user)


def add_probe_routes(app: web.Application) -> None:
    app.router.add_get("/console/probe/page", page)
    app.router.add_get("/console/probe/whoami", whoami)
    app.router.add_post("/console/probe/act", act)


def console_app(data_dir: Path, **console: Any) -> web.Application:
    """The whole sidecar (SQLite store in ``data_dir``) with the probe routes."""
    config = SidecarConfig(console=ConsoleConfig(**console))
    app = create_app(SidecarSettings(data_dir=data_dir, webhook_token=TOKEN), config)
    add_probe_routes(app)
    return app


class Clock:
    """The login's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def install_clock(client: TestClient) -> Clock:
    clock = Clock()
    client.app[LOGIN].clock = clock
    return clock


async def add_user(client: TestClient, name: str, role: str, password: str) -> None:
    account = ConsoleAccount(name, role, password_hash(password))
    await client.app[STORE].save_console_user(account, T0)


async def form_token(client: TestClient, path: str = "/console/login") -> str:
    page = await client.get(path)
    found = CSRF_INPUT.search(await page.text())
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


async def sign_in(
    client: TestClient, name: str, password: str, *, next_page: str | None = None
) -> Any:
    """GET the form (its token cookie and field), then POST it as a browser does."""
    data = {"csrf_token": await form_token(client), "username": name, "password": password}
    if next_page is not None:
        data["next"] = next_page
    return await client.post("/console/login", data=data, allow_redirects=False)


async def session_csrf(client: TestClient) -> str:
    """The session's CSRF token, from the sign-out form every signed-in page has."""
    return await form_token(client, "/console/probe/page")
