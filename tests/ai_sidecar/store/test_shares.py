"""Anomaly shares claimed through a real PostgreSQL: replicas split them evenly, no share
has two holders, and a replica killed with -9 has its shares taken by the others."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from ai_sidecar.store.postgres import Location
from ai_sidecar.store.postgres.engine import SERVER_GIVE_UP
from ai_sidecar.store.postgres.shares import (
    CLAIM_INTERVAL,
    IDLE_SESSION_TIMEOUT,
    PROOF_WINDOW,
    ROUND_TIMEOUT,
    ShareClaims,
)
from tests.conftest import wait_for
from tests.peers.postgres import PASSWORD, PostgresServer

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parents[3]
COUNT = 10


@pytest.fixture
def location(postgres_server: PostgresServer) -> Location:
    return Location(postgres_server.create_database(), PASSWORD)


async def rounds(claims: list[ShareClaims], times: int = 3) -> list[frozenset[int]]:
    """Each replica claims in turn, ``times`` over; what each holds at the end."""
    for _ in range(times):
        for replica in claims:
            await replica.claim()
    return [replica.held for replica in claims]


def assert_split(held: list[frozenset[int]], replicas: int) -> None:
    """Every share held by exactly one replica, none holding more than an even split."""
    every = [share for shares in held for share in shares]
    assert sorted(every) == list(range(COUNT))
    assert max(len(shares) for shares in held) == -(-COUNT // replicas)


async def test_replicas_split_the_shares_evenly_and_a_newcomer_gets_its_part(location):
    first, second = (
        ShareClaims(location, COUNT, settle=0.0),
        ShareClaims(location, COUNT, settle=0.0),
    )
    third = ShareClaims(location, COUNT, settle=0.0)
    try:
        # Alone, a replica takes every share.
        assert await rounds([first], 1) == [frozenset(range(COUNT))]
        assert_split(await rounds([first, second]), 2)
        held = await rounds([first, second, third])
        assert_split(held, 3)
        assert all(held)
        assert (first.replicas, second.replicas, third.replicas) == (3, 3, 3)
    finally:
        for replica in (first, second, third):
            await replica.release()


CLAIMING_REPLICA = """
import asyncio, sys
from ai_sidecar.store.postgres import Location
from ai_sidecar.store.postgres.engine import SERVER_GIVE_UP
from ai_sidecar.store.postgres.shares import (
    CLAIM_INTERVAL,
    IDLE_SESSION_TIMEOUT,
    PROOF_WINDOW,
    ROUND_TIMEOUT,
    ShareClaims,
)

async def main():
    claims = ShareClaims(Location(sys.argv[1], sys.argv[2]), int(sys.argv[3]), settle=0.0)
    while True:
        held = await claims.claim()
        print(",".join(map(str, sorted(held))), flush=True)
        await asyncio.sleep(0.2)

asyncio.run(main())
"""


def backends(server: PostgresServer, application: str) -> int:
    with server.superuser() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_the_shares_of_a_replica_killed_with_9_go_to_the_others(
    location, postgres_server: PostgresServer
):
    survivor = ShareClaims(location, COUNT, settle=0.0)
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLAIMING_REPLICA,
        location.dsn,
        PASSWORD,
        str(COUNT),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert other.stdout is not None

    async def theirs() -> set[int]:
        assert other.stdout is not None
        line = (await other.stdout.readline()).decode().strip()
        return {int(share) for share in line.split(",") if share}

    try:
        # The other replica holds every share until the survivor joins, then half.
        assert await theirs() == set(range(COUNT))
        await survivor.claim()
        assert survivor.held == frozenset()
        held: set[int] = set()
        while len(held) != COUNT // 2 or len(survivor.held) != COUNT // 2:
            held = await theirs()
            await survivor.claim()
        assert held.isdisjoint(survivor.held)
        other.send_signal(signal.SIGKILL)
        await other.wait()
        # Its session ends with its socket; the survivor's next round takes its shares.
        wait_for(
            lambda: backends(postgres_server, "scout-sidecar-shares") == 1,
            what="the killed replica's session to end",
        )
        await survivor.claim()
        assert survivor.held == frozenset(range(COUNT))
        assert survivor.replicas == 1
    finally:
        if other.returncode is None:
            other.kill()
            await other.wait()
        await survivor.release()


async def test_a_replica_whose_session_ends_gives_every_share_up_then_claims_again(
    location, postgres_server: PostgresServer
):
    claims = ShareClaims(location, COUNT, settle=0.0)
    try:
        assert await claims.claim() == frozenset(range(COUNT))
        with postgres_server.superuser() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'scout-sidecar-shares'"
            )
        # It cannot prove it holds anything: nothing, rather than a share twice.
        assert await claims.claim() == frozenset()
        assert await claims.claim() == frozenset(range(COUNT))
    finally:
        await claims.release()


def claims_backend(server: PostgresServer) -> int | None:
    with server.superuser() as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'scout-sidecar-shares'"
        ).fetchone()
    return None if row is None else int(row[0])


async def test_a_round_the_database_leaves_unanswered_gives_every_share_up(
    location, postgres_server: PostgresServer
):
    claims = ShareClaims(location, COUNT, settle=0.0)
    try:
        assert await claims.claim() == frozenset(range(COUNT))
        assert 0.0 < claims.remaining() <= PROOF_WINDOW
        # The claims' backend stops answering, as a host behind a partition does.
        pid = claims_backend(postgres_server)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            assert await claims.claim() == frozenset()
            assert claims.remaining() == 0.0
        finally:
            os.kill(pid, signal.SIGCONT)
        # Once that session is gone (its locks with it), the shares are claimed again.
        wait_for(lambda: claims_backend(postgres_server) is None, what="the old session to end")
        assert await claims.claim() == frozenset(range(COUNT))
    finally:
        await claims.release()


async def test_a_share_given_back_stays_locked_while_its_rows_are_still_in_use(location):
    # A replica gives back a share beyond an even split, but its scorer still
    # exports that share's rows until its next cycle: while they are in use,
    # no other replica may claim it, or a series would be on two /metrics.
    first, second = (
        ShareClaims(location, COUNT, settle=0.0),
        ShareClaims(location, COUNT, settle=0.0),
    )
    try:
        everything = frozenset(range(COUNT))
        assert await first.claim() == everything
        await second.claim()  # joins the members: an even split is now half
        scored = await first.claim(in_use=everything)
        assert len(scored) == COUNT // 2
        leaving = everything - scored
        assert await second.claim() == frozenset()  # still locked by the first
        # Its scorer has dropped them: the first's next round unlocks them.
        assert await first.claim(in_use=scored) == scored
        assert await second.claim() == leaving
        assert await first.claim(in_use=scored) == scored
    finally:
        await first.release()
        await second.release()


async def test_a_replica_short_of_an_even_split_scores_again_what_it_was_giving_back(
    location, postgres_server: PostgresServer
):
    first, second = (
        ShareClaims(location, COUNT, settle=0.0),
        ShareClaims(location, COUNT, settle=0.0),
    )
    try:
        everything = frozenset(range(COUNT))
        assert await first.claim() == everything
        await second.claim()
        assert len(await first.claim(in_use=everything)) == COUNT // 2
        await second.release()  # gone before it took anything
        wait_for(
            lambda: backends(postgres_server, "scout-sidecar-shares") == 1,
            what="the second replica's session to end",
        )
        assert await first.claim(in_use=everything) == everything
    finally:
        await first.release()
        await second.release()


def test_a_replica_behind_a_partition_gives_its_shares_up_before_the_server_hands_them_on():
    # The server ends a silent session (and frees its locks) no sooner than
    # SERVER_GIVE_UP after the last round reached it, or IDLE_SESSION_TIMEOUT
    # after it ended. The next round starts CLAIM_INTERVAL after the last and
    # is abandoned ROUND_TIMEOUT later at most: its shares must be given up
    # with time to spare for the scorer to drop their rows before another
    # replica can claim them.
    assert CLAIM_INTERVAL + ROUND_TIMEOUT <= PROOF_WINDOW
    assert min(SERVER_GIVE_UP, IDLE_SESSION_TIMEOUT) > PROOF_WINDOW + 1.0


async def test_a_share_freed_by_an_ended_session_is_scored_once_its_old_holder_has_stopped(
    location, postgres_server: PostgresServer
):
    # The session of a replica is ended (terminated, a database restart): its
    # locks are free at once, but it scores their rows until its next round
    # fails, within PROOF_WINDOW. Another replica takes them at once, so none
    # else can, but scores them only once they have settled that long.
    settle = 1.0
    first = ShareClaims(location, COUNT, settle=0.0)
    second = ShareClaims(location, COUNT, settle=settle)
    try:
        everything = frozenset(range(COUNT))
        assert await first.claim() == everything
        assert await second.claim() == frozenset()
        with postgres_server.superuser() as conn:
            conn.execute(
                "SELECT pg_terminate_backend((SELECT pid FROM pg_stat_activity"
                " WHERE application_name = 'scout-sidecar-shares'"
                " ORDER BY backend_start LIMIT 1))"
            )
        wait_for(
            lambda: backends(postgres_server, "scout-sidecar-shares") == 1,
            what="the first replica's session to end",
        )
        assert await second.claim() == frozenset()
        assert await first.claim() == frozenset()  # its round fails: it stops
        await asyncio.sleep(settle)
        assert await second.claim() == everything
    finally:
        await first.release()
        await second.release()
