"""The store under test: one fixture, one param per implementation and mode.

A new store (PostgreSQL) joins the contract suite by adding a param here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ai_sidecar.store import PostgresStore, SqliteStore, Store
from ai_sidecar.store.postgres import Location
from tests.peers.postgres import PASSWORD

StoreOpener = Callable[[], Awaitable[Store]]


@pytest.fixture(
    params=["sqlite", "sqlite-inline", pytest.param("postgres", marks=pytest.mark.peers)]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Opens the store under test, on the same data every time it is called.

    ``sqlite``: the webhook's mode (writer thread, group commit, reader thread);
    ``sqlite-inline``: the worker process's (one connection on the loop's thread);
    ``postgres``: a fresh database on the session's PostgreSQL server, reached
    with a password as in production.
    """
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        location = Location(server.create_database(), PASSWORD)

        async def open_postgres() -> Store:
            return await PostgresStore.open(location)

        return open_postgres
    path = tmp_path / "data" / "scout.db"
    inline = request.param == "sqlite-inline"

    async def opener() -> Store:
        return await SqliteStore.open(path, inline=inline)

    return opener


@pytest.fixture
async def store(open_store: StoreOpener) -> AsyncIterator[Store]:
    opened = await open_store()
    yield opened
    await opened.close()
