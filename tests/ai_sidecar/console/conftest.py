"""The console's pages under test: the real app on a real SQLite store, with a session
backend of the tests' own (the login is tested apart).

A request says who it is with the ``X-Test-User`` header (``operator`` or
``viewer``); without it nobody is signed in. Each user's CSRF token is fixed,
so a test can post forms with it, or without it, or with another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ai_sidecar.app import create_app
from ai_sidecar.config import SidecarConfig, parse_config
from ai_sidecar.console.session import SESSIONS, ConsoleUser, Role
from ai_sidecar.keys import STORE
from ai_sidecar.models import Incident
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import Store
from tests.ai_sidecar.replay import correlator, fold, storm

TOKEN = "test-token-0123456789"
USER_HEADER = "X-Test-User"
USERS = {
    "operator": ConsoleUser("olga", Role.OPERATOR, "csrf-operator-0123456789"),
    "viewer": ConsoleUser("victor", Role.VIEWER, "csrf-viewer-0123456789"),
}
OPERATOR = {USER_HEADER: "operator"}
VIEWER = {USER_HEADER: "viewer"}


class HeaderSessions:
    """A :class:`~ai_sidecar.console.session.SessionBackend` that trusts a test header."""

    async def user_for(self, request: web.Request) -> ConsoleUser | None:
        return USERS.get(request.headers.get(USER_HEADER, ""))


def install_test_sessions(app: web.Application) -> None:
    """Use :class:`HeaderSessions`, after whatever the login installs at start-up."""

    async def install(app: web.Application) -> None:
        app[SESSIONS] = HeaderSessions()

    app[SESSIONS] = HeaderSessions()
    app.on_startup.append(install)


def storm_incidents(name: str) -> list[Incident]:
    """The incidents a storm file folds into, each as it was last changed."""
    latest: dict[str, Incident] = {}
    for change in fold(correlator(), storm(name)):
        latest[change.incident.id] = change.incident
    return list(latest.values())


ConsoleFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def console_factory(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], tmp_path: Path
) -> ConsoleFactory:
    """Start the sidecar (inline pipeline, SQLite in ``tmp_path``) with test sessions;
    ``on_startup`` hooks run after the app's own (to replace one of its parts)."""
    made: list[None] = []

    async def make(
        *,
        config: str = "{}",
        alertmanagers: Sequence[str] = (),
        prometheus: str | None = None,
        incidents: Sequence[Incident] = (),
        on_startup: Sequence[Callable[[web.Application], Awaitable[None]]] = (),
    ) -> TestClient[Any, Any]:
        made.append(None)
        settings = SidecarSettings(
            # Each app its own store: a test may start two.
            data_dir=tmp_path / f"data-{len(made)}",
            webhook_token=TOKEN,
            alertmanager_urls=tuple(alertmanagers),
            prometheus_url=prometheus,
        )
        parsed: SidecarConfig = parse_config(config, "test.yml")
        app = create_app(settings, parsed)
        install_test_sessions(app)
        app.on_startup.extend(on_startup)
        client = await aiohttp_client(app)
        if incidents:
            await store_of(client).save_incidents(list(incidents))
        return client

    return make


def store_of(client: TestClient[Any, Any]) -> Store:
    return client.server.app[STORE]


def with_id(incident: Incident, incident_id: str) -> Incident:
    return replace(incident, id=incident_id)
