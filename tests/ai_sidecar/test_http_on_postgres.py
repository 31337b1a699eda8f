"""The HTTP surface on either store: what a client sends that PostgreSQL cannot
keep as text (U+0000) is a 4xx, never a 500.

SQLite keeps any text; PostgreSQL's ``text`` refuses U+0000, so a lookup or a
write carrying one raised from the store. The apps here are the sidecar's
handlers and middleware over one store, without the worker: these tests look
at answers, not at processing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ai_sidecar.api import setup_api
from ai_sidecar.config import SidecarConfig
from ai_sidecar.console import setup_console
from ai_sidecar.keys import CONFIG, METRICS, SETTINGS, STORE, WAKEUP
from ai_sidecar.metrics import create_metrics
from ai_sidecar.request_errors import request_errors
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import PostgresStore, SqliteStore, Store
from ai_sidecar.store.postgres import Location
from ai_sidecar.webhook import receive
from tests.ai_sidecar.builders import alert, payload
from tests.ai_sidecar.console.conftest import OPERATOR, USERS, install_test_sessions
from tests.peers.postgres import PASSWORD

TOKEN = "postgres-http-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.peers)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        opened = await PostgresStore.open(Location(server.create_database(), PASSWORD))
    else:
        opened = await SqliteStore.open(tmp_path / "scout.db")
    yield opened
    await opened.close()


def handlers(store: Store) -> web.Application:
    """The webhook, the incidents API and the console (test sessions) over ``store``."""
    app = web.Application(middlewares=[request_errors])
    app[SETTINGS] = SidecarSettings(webhook_token=TOKEN)
    app[CONFIG] = SidecarConfig()
    app[METRICS] = create_metrics()
    app[STORE] = store
    app[WAKEUP] = asyncio.Event()
    app.router.add_post("/api/v1/alertmanager", receive)
    setup_api(app)
    setup_console(app)
    install_test_sessions(app)
    return app


@pytest.fixture
async def client(aiohttp_client: Any, store: Store) -> TestClient[Any, Any]:
    made: TestClient[Any, Any] = await aiohttp_client(handlers(store))
    return made


async def test_an_incident_id_holding_nul_is_no_incident(client: TestClient[Any, Any]) -> None:
    csrf = {"csrf_token": USERS["operator"].csrf_token}
    answers = [
        await client.get("/api/v1/incidents/inc%00x", headers=AUTH),
        await client.post(
            "/api/v1/incidents/inc%00x/feedback", json={"useful": True}, headers=AUTH
        ),
        await client.get("/console/incidents/inc%00x", headers=OPERATOR),
        await client.post("/console/incidents/inc%00x/acknowledge", data=csrf, headers=OPERATOR),
        await client.post(
            "/console/incidents/inc%00x/feedback", data={**csrf, "useful": "yes"}, headers=OPERATOR
        ),
    ]
    assert [a.status for a in answers] == [404] * len(answers)


async def test_a_fingerprint_holding_nul_is_a_400(client: TestClient[Any, Any]) -> None:
    body = payload(alert("DeviceDown", instance="r1"))
    body["alerts"][0]["fingerprint"] = "0123\x004567"
    response = await client.post(
        "/api/v1/alertmanager",
        data=json.dumps(body).encode(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    # A 5xx would have Alertmanager send it again for ever.
    assert response.status == 400
    assert (await response.json())["error"] == (
        'alerts[0].fingerprint: must not hold control or formatting characters: "0123\\u00004567"'
    )
