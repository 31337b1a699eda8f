"""Two replicas on one PostgreSQL store share console users, sessions and lockouts.

Each replica is the sidecar's HTTP side as far as the console goes (its
middleware, metrics, config and the login) over its own :class:`PostgresStore`
of the same database on a real PostgreSQL server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ai_sidecar.config import SidecarConfig
from ai_sidecar.console.login import LOGIN, setup_login
from ai_sidecar.console.login.service import SESSION_COOKIE
from ai_sidecar.keys import CONFIG, METRICS, STORE
from ai_sidecar.metrics import create_metrics
from ai_sidecar.request_errors import request_errors
from ai_sidecar.store import PostgresStore
from ai_sidecar.store.postgres import Location
from tests.ai_sidecar.console.login_helpers import (
    OPERATOR_PASSWORD,
    Clock,
    add_probe_routes,
    add_user,
    session_csrf,
    sign_in,
)
from tests.peers.postgres import PASSWORD, PostgresServer


def replica(location: Location) -> web.Application:
    app = web.Application(middlewares=[request_errors])
    app[CONFIG] = SidecarConfig()
    app[METRICS] = create_metrics()

    async def store(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = await PostgresStore.open(location)
        yield
        await app[STORE].close()

    app.cleanup_ctx.append(store)
    setup_login(app)
    add_probe_routes(app)
    return app


@pytest.fixture
async def replicas(
    aiohttp_client, postgres_server: PostgresServer
) -> tuple[TestClient, TestClient]:
    location = Location(postgres_server.create_database(), PASSWORD)
    first = await aiohttp_client(replica(location))
    second = await aiohttp_client(replica(location))
    clock = Clock()
    first.app[LOGIN].clock = second.app[LOGIN].clock = clock
    await add_user(first, "olivia", "operator", OPERATOR_PASSWORD)
    return first, second


def carry_session(source: TestClient, target: TestClient) -> None:
    """The browser's next request goes to the other replica (a load balancer)."""
    for cookie in source.session.cookie_jar:
        if cookie.key == SESSION_COOKIE:
            target.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie.value})
            return
    raise AssertionError("no session cookie")


async def signed_in_as(client: TestClient) -> str | None:
    response = await client.get("/console/probe/whoami", allow_redirects=False)
    return (await response.json())["name"] if response.status == 200 else None


async def test_a_session_opened_on_one_replica_works_and_ends_on_the_other(
    replicas: tuple[TestClient, TestClient],
):
    first, second = replicas
    assert (await sign_in(first, "olivia", OPERATOR_PASSWORD)).status == 303
    carry_session(first, second)
    assert await signed_in_as(second) == "olivia"
    # Its CSRF token is the session's, whichever replica checks it.
    token = await session_csrf(first)
    acted = await second.post("/console/probe/act", data={"what": "ack", "csrf_token": token})
    assert acted.status == 200

    await second.post("/console/logout", data={"csrf_token": token})
    assert await signed_in_as(second) is None
    assert await signed_in_as(first) is None


async def test_a_lockout_on_one_replica_holds_on_the_other(
    replicas: tuple[TestClient, TestClient],
):
    first, second = replicas
    for client in (first, second, first, second, first):
        assert (await sign_in(client, "olivia", "wrong password!!")).status == 401
    assert (await sign_in(second, "olivia", OPERATOR_PASSWORD)).status == 429
    assert (await sign_in(first, "olivia", OPERATOR_PASSWORD)).status == 429
