"""Two sidecar replicas on one PostgreSQL database, behind an Alertmanager HA pair.

Real processes throughout: PostgreSQL from Debian's package, two
``scout-sidecar serve`` replicas, and an Alertmanager-compatible receiver for
the return trip. Each alert goes to both replicas, as both Alertmanagers of a
pair deliver it. What a user would check: every acknowledged alert is stored
once, one incident and one enriched copy per alert come out, and only one
replica works at a time, even when it is killed or the database restarts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.peers.notify import SlackSink
from tests.peers.postgres import PASSWORD, PostgresServer
from tests.peers.replicas import (
    TOKEN,
    Replica,
    Replicas,
    StormResult,
    duplicated_copies,
    enriched_posts,
    incident_ids,
    notified_members,
    quarter_acked,
    send_storm,
    stored_fingerprints,
    storm,
)

# Starts real daemons: the slow lane (see the peers marker in pyproject).
pytestmark = pytest.mark.peers

T = TypeVar("T")


@pytest.fixture
def receiver() -> Iterator[SlackSink]:
    """Stands in for the Alertmanagers the return trip posts to; records every POST."""
    with SlackSink() as sink:
        yield sink


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_server: PostgresServer, receiver: SlackSink
) -> Iterator[Replicas]:
    group = Replicas(tmp_path, postgres_server.create_database(), receiver.base_url)
    yield group
    group.stop_all()


async def incidents(replica: Replica) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{replica.url}/api/v1/incidents?limit=100", headers=headers) as reply,
    ):
        assert reply.status == 200
        found: list[dict[str, Any]] = await reply.json()
        return found


async def one_incident_of(replica: Replica, members: int) -> dict[str, Any]:
    """The storm's incident once it holds every member and has been analysed."""

    async def complete() -> dict[str, Any] | None:
        found = await incidents(replica)
        done = len(found) == 1 and len(found[0]["members"]) == members and found[0]["analysis"]
        return found[0] if done else None

    return await eventually(complete, 60, f"one analysed incident of {members} members")


async def copies_posted(receiver: SlackSink, members: int) -> list[Any]:
    """Enriched posts once every member's copy reached the receiver."""

    async def complete() -> list[Any] | None:
        bodies = receiver.messages()
        return enriched_posts(bodies) if len(notified_members(bodies)) == members else None

    return await eventually(complete, 30, f"enriched copies of {members} members")


async def eventually(check: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (found := await check()) is not None:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")


def assert_acked_stored_once(server: PostgresServer, dsn: str | None, result: StormResult) -> None:
    assert dsn is not None
    stored = stored_fingerprints(server, dsn)
    assert len(stored) == len(set(stored)), "an alert was stored twice"
    missing = result.acked - set(stored)
    assert missing == set(), f"{len(missing)} acknowledged alerts are not stored"


async def test_two_replicas_store_each_alert_once_and_one_of_them_works(
    replicas: Replicas, postgres_server: PostgresServer, receiver: SlackSink
) -> None:
    a, b = replicas.start("a"), replicas.start("b")
    leader = replicas.leader()
    follower = b if leader is a else a
    alerts = storm(400)

    result = await send_storm([a, b], alerts, per_request=20)

    assert result.acked == {x.fingerprint for x in alerts}
    assert_acked_stored_once(postgres_server, replicas.dsn, result)
    incident = await one_incident_of(follower, len(alerts))
    posts = await copies_posted(receiver, len(alerts))
    assert incident_ids(posts) == {incident["id"]}
    assert duplicated_copies(posts) == 0
    # Still one worker: the follower never took over.
    assert leader.is_leader()
    assert follower.metric("scout_sidecar_leader") == 0.0
    assert follower.metric("scout_sidecar_alerts_duplicate_total") is not None


async def test_kill_9_of_the_leader_mid_storm_loses_nothing_and_the_other_takes_over(
    replicas: Replicas, postgres_server: PostgresServer, receiver: SlackSink
) -> None:
    a, b = replicas.start("a"), replicas.start("b")
    leader = replicas.leader()
    survivor = b if leader is a else a
    alerts = storm(2000)
    result = StormResult()
    sending = asyncio.create_task(send_storm([a, b], alerts, per_request=25, result=result))
    await quarter_acked(result, len(alerts))

    assert leader.service.process is not None
    os.killpg(leader.service.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    await asyncio.to_thread(leader.service.process.wait, 10)
    assert len(result.acked) < len(alerts), "the kill must land mid-storm"
    # Every alert acknowledged so far is in the database already.
    assert_acked_stored_once(postgres_server, replicas.dsn, result)

    while not survivor.is_leader():
        assert time.monotonic() - killed_at < 15, "the survivor did not take the lease over"
        await asyncio.sleep(0.1)
    takeover = time.monotonic() - killed_at

    await asyncio.wait_for(sending, 120)
    assert result.acked == {x.fingerprint for x in alerts}
    assert_acked_stored_once(postgres_server, replicas.dsn, result)
    incident = await one_incident_of(survivor, len(alerts))
    posts = await copies_posted(receiver, len(alerts))
    assert incident_ids(posts) == {incident["id"]}
    assert duplicated_copies(posts) == 0
    # Lease retry 1 s, metrics forwarded every 1 s, and the worker's start-up.
    assert takeover < 10, f"takeover took {takeover:.1f}s"


async def test_a_database_restart_mid_storm_answers_503_then_recovers(
    replicas: Replicas, postgres_server: PostgresServer, receiver: SlackSink
) -> None:
    a = replicas.start("a")
    replicas.leader()
    pid = a.pid
    alerts = storm(600)
    result = StormResult()
    half = len(alerts) // 2
    await send_storm([a], alerts[:half], per_request=10, result=result)

    # The database goes away with half the storm still to come, and comes back
    # once the webhook has refused a delivery: a stop and a start rather than a
    # restart, which can be over before any request notices it.
    await asyncio.to_thread(postgres_server.stop)
    stopped_at = time.monotonic()
    try:
        sending = asyncio.create_task(send_storm([a], alerts[half:], per_request=10, result=result))

        async def refused_while_down() -> bool | None:
            codes = [code for at, _, code in result.answers if at >= stopped_at]
            return True if 503 in codes else None

        await eventually(refused_while_down, 60, "a delivery refused while the database is down")
        codes_during = {code for at, _, code in result.answers if at >= stopped_at}
    finally:
        await asyncio.to_thread(postgres_server.start)
    await asyncio.wait_for(sending, 120)

    assert 200 not in codes_during, f"answers while the database was down: {codes_during}"
    assert result.answers[-1][2] == 200
    assert result.acked == {x.fingerprint for x in alerts}
    assert_acked_stored_once(postgres_server, replicas.dsn, result)
    # The same process, back at work: it retook the lease and folded everything.
    assert a.pid == pid
    assert not a.service.exited()
    await one_incident_of(a, len(alerts))
    assert await asyncio.to_thread(replicas.leader, 10) is a
    posts = await copies_posted(receiver, len(alerts))
    assert duplicated_copies(posts) == 0


def test_the_store_password_is_never_printed(
    tmp_path: Path, postgres_server: PostgresServer, replicas: Replicas
) -> None:
    replica = replicas.start("a")
    replicas.leader()
    # A wrong password fails to start, saying why, without the password.
    wrong = tmp_path / "wrong-password"
    wrong.write_text(PASSWORD + "-wrong")
    with pytest.raises(Exception, match="exited at start-up") as refused:
        replicas.start("b", extra_env={"SCOUT_STORE_PASSWORD_FILE": str(wrong)})
    assert "password authentication failed" in str(refused.value)
    replica.service.stop(grace=5)
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))
    assert PASSWORD not in logs
    assert PASSWORD not in postgres_server.log_text()
