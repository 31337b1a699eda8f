"""What only the PostgreSQL store does: schema versions, the worker lease and its fence.

The contract suite (``test_contract.py``, param ``postgres``) checks the
verbs; these tests check what several replicas rely on, on the session's real
PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg.conninfo import make_conninfo
from psycopg.errors import DeadlockDetected, SerializationFailure

import ai_sidecar.store.postgres.lease as lease_module
from ai_sidecar.store import (
    ConsoleAccount,
    IncidentAction,
    IncidentQuery,
    OutboxCopy,
    OutboxPlan,
    PostgresStore,
    SchemaVersionError,
    StoreError,
)
from ai_sidecar.store.postgres import SCHEMA_VERSION, Lease, LeaseLostError, Location, lead
from ai_sidecar.store.postgres import incidents as sql
from ai_sidecar.store.postgres.engine import TRANSIENT_RETRIES, Cursor, is_storage_failure
from ai_sidecar.store.sqlite.incidents import encode_incidents
from tests.ai_sidecar.builders import T0, alert, stored_incident
from tests.ai_sidecar.exchanges import exchange
from tests.peers.postgres import PASSWORD, PostgresServer

pytestmark = pytest.mark.peers


@pytest.fixture
def location(postgres_server: PostgresServer) -> Location:
    return Location(postgres_server.create_database(), PASSWORD)


def terminate(server: PostgresServer, pid: int) -> None:
    """End one backend, as a network partition or a DBA's pg_terminate_backend would."""
    with server.superuser() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def lease_pid(lease: Lease) -> int:
    pid = lease._pid
    assert pid is not None
    return pid


async def test_a_newer_schema_is_refused_untouched(
    location: Location, postgres_server: PostgresServer
) -> None:
    store = await PostgresStore.open(location)
    await store.close()
    dbname = location.dsn.split("@/")[1].split("?")[0]
    with postgres_server.superuser(dbname) as conn:
        conn.execute("UPDATE scout_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 1}, newer"):
        await PostgresStore.open(location)


async def test_a_database_of_schema_version_2_gains_the_llm_audit(
    location: Location, postgres_server: PostgresServer
) -> None:
    store = await PostgresStore.open(location)
    await store.save_incidents([stored_incident("inc-1")])
    await store.close()
    dbname = location.dsn.split("@/")[1].split("?")[0]
    with postgres_server.superuser(dbname) as conn:
        # What versions 3 and later added.
        conn.execute(
            "DROP TABLE llm_exchanges, incident_actions, console_users, console_sessions,"
            " console_login_failures, incident_listing, report_digests, console_preferences"
        )
        conn.execute("DROP INDEX feedback_at")
        conn.execute("UPDATE scout_schema SET version = 2")

    store = await PostgresStore.open(location)
    try:
        kept = exchange("inc-1", T0)
        await store.record_llm_exchange(kept)
        assert await store.llm_exchanges(incident_id="inc-1") == [kept]
        assert await store.incident_ids() == ["inc-1"]
        acknowledged = IncidentAction("inc-1", "acknowledge", "ops", "", T0)
        assert await store.record_action(acknowledged)
        assert await store.actions("inc-1") == [acknowledged]
        await store.save_console_user(ConsoleAccount("alice", "viewer", "h"), T0)
        assert await store.get_console_user("alice") is not None
        listed = await store.incident_page(IncidentQuery(), limit=5)
        assert [row.id for row in listed.rows] == ["inc-1"]
        assert await store.claim_digest(T0, "replica-a", now=T0, hold=timedelta(minutes=5))
        await store.save_console_language("alice", "fr", T0)
        assert await store.get_console_language("alice") == "fr"
    finally:
        await store.close()
    with postgres_server.superuser(dbname) as conn:
        row = conn.execute("SELECT version FROM scout_schema").fetchone()
    assert row == (SCHEMA_VERSION,)


async def test_a_wrong_password_is_a_store_error_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    wrong = Location(postgres_server.create_database(), PASSWORD + "-x")
    with pytest.raises(StoreError) as refused:
        await PostgresStore.open(wrong)
    assert "password authentication failed" in str(refused.value)
    assert PASSWORD not in str(refused.value)
    assert PASSWORD not in repr(wrong)


async def test_one_lease_holder_at_a_time(location: Location) -> None:
    first, second = Lease(location), Lease(location)
    try:
        assert await first.acquire()
        assert not await second.acquire()
        await first.release()
        assert await second.acquire()
        assert not await first.acquire()
    finally:
        await first.release()
        await second.release()


@contextlib.asynccontextmanager
async def leader_and_successor(
    location: Location,
) -> AsyncIterator[tuple[Lease, Lease, PostgresStore, PostgresStore]]:
    """The leader's lease, a replica's lease waiting to take over, the leader's
    fenced store and a webhook's store."""
    lease, successor = Lease(location), Lease(location)
    assert await lease.acquire()
    fenced = await PostgresStore.open(location, fence=lease)
    webhook = await PostgresStore.open(location)
    try:
        yield lease, successor, fenced, webhook
    finally:
        await fenced.close()
        await webhook.close()
        await lease.release()
        await successor.release()


async def test_the_fence_stops_writes_of_a_replica_that_lost_its_lease(
    location: Location, postgres_server: PostgresServer
) -> None:
    async with leader_and_successor(location) as (lease, successor, fenced, webhook):
        await webhook.ingest([alert("InterfaceDown", instance="a")], T0)
        [received] = await fenced.pending(10)
        await fenced.save_progress(received.seq, [stored_incident("inc-1")])

        # The lease's session ends (a partition the server noticed) and another
        # replica takes over: this one still believes it leads, but the
        # database knows better.
        terminate(postgres_server, lease_pid(lease))
        assert await successor.acquire()
        await webhook.ingest([alert("InterfaceDown", instance="b")], T0)
        with pytest.raises(LeaseLostError, match="lost the worker lease"):
            await fenced.pending(10)
        with pytest.raises(LeaseLostError):
            await fenced.save_progress(received.seq + 1, [stored_incident("inc-2")])
        assert await webhook.get_incident("inc-2") is None
        assert (await webhook.backlog()).depth == 1
        # The webhook's store is not fenced: it keeps storing.
        assert (await webhook.ingest([alert("InterfaceDown", instance="c")], T0)).new == 1


async def test_a_write_of_the_old_holder_commits_before_the_new_term_begins(
    location: Location, postgres_server: PostgresServer
) -> None:
    inside, finish = asyncio.Event(), asyncio.Event()

    async def slow_write(cur: Cursor) -> None:
        # Past the fence, then paused (a GC pause, a frozen VM) before writing.
        inside.set()
        await finish.wait()
        await sql.write_incidents(cur, encode_incidents([stored_incident("inc-1")], {}))

    async with leader_and_successor(location) as (old, new, fenced, webhook):
        try:
            write = asyncio.create_task(fenced.engine.transaction(slow_write))
            await asyncio.wait_for(inside.wait(), 10)
            terminate(postgres_server, lease_pid(old))
            takeover = asyncio.create_task(new.acquire())
            await asyncio.sleep(1.0)
            assert not takeover.done(), "a new term began while the old one was still writing"
            finish.set()
            await write
            assert await asyncio.wait_for(takeover, 10)
            # What the old holder wrote is there before the new leader reads anything...
            assert await webhook.get_incident("inc-1") is not None
            # ...and nothing it starts now gets past the fence.
            with pytest.raises(LeaseLostError, match="lost the worker lease"):
                await fenced.save_incidents([stored_incident("inc-2")])
            assert await webhook.get_incident("inc-2") is None
        finally:
            finish.set()  # a failed assertion must not leave the write waiting


async def test_the_holder_may_post_only_while_its_lock_was_confirmed_recently(
    location: Location,
) -> None:
    lease = Lease(location)
    assert not lease.may_post()
    assert await lease.acquire()
    try:
        assert lease.may_post()
        # Paused past the window: the server may hand the lock on any moment.
        lease._confirmed_at -= lease_module.POST_WINDOW
        assert not lease.may_post()
        assert await lease.alive()
        assert lease.may_post()
    finally:
        await lease.release()
    assert not lease.may_post()


async def test_a_confirmation_counts_from_when_the_probe_was_sent(
    location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's clocks (keepalives, idle timeout) run from the last packet
    # it received, so a slow answer must not extend the lead.
    new_term = lease_module._new_term

    async def slow_new_term(conn: psycopg.AsyncConnection[object], name: str) -> int:
        await asyncio.sleep(0.5)
        return await new_term(conn, name)

    monkeypatch.setattr(lease_module, "_new_term", slow_new_term)
    lease = Lease(location)
    try:
        # Bounded by what the test measures, not by how fast a loaded machine
        # connects: the answer took 0.5 s more than the probe's sending.
        sent = time.monotonic()
        assert await lease.acquire()
        answered = time.monotonic()
        assert sent <= lease._confirmed_at < answered - 0.4
        conn = lease._conn
        assert conn is not None
        execute = conn.execute

        async def slow_execute(*args: object, **kwargs: object) -> object:
            await asyncio.sleep(0.5)
            return await execute(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(conn, "execute", slow_execute)
        sent = time.monotonic()
        assert await lease.alive()
        answered = time.monotonic()
        assert sent <= lease._confirmed_at < answered - 0.4
    finally:
        await lease.release()


async def test_the_lease_says_how_long_it_may_still_post(location: Location) -> None:
    lease = Lease(location)
    assert lease.remaining() == 0
    assert await lease.acquire()
    try:
        assert 0 < lease.remaining() <= lease_module.POST_WINDOW
        lease._confirmed_at -= 1.0
        assert lease.remaining() <= lease_module.POST_WINDOW - 1.0
    finally:
        await lease.release()
    assert lease.remaining() == 0


async def test_a_lease_whose_session_stays_idle_loses_the_lock(
    location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stopped holder (SIGSTOP) sends nothing, but its kernel still answers
    # keepalives: only the server's idle timeout ends its session.
    monkeypatch.setattr(lease_module, "IDLE_SESSION_TIMEOUT", 0.5, raising=False)
    holder, successor = Lease(location), Lease(location)
    try:
        assert await holder.acquire()
        assert not await successor.acquire()
        # Its own session would be ended as idle too: it reconnects after the wait.
        await successor.release()
        await asyncio.sleep(1.5)
        assert await successor.acquire()
        assert not await holder.alive()
    finally:
        await holder.release()
        await successor.release()


async def test_a_missing_lease_row_is_recreated(
    location: Location, postgres_server: PostgresServer
) -> None:
    first = Lease(location)
    assert await first.acquire()
    old_epoch = first._epoch
    assert old_epoch is not None
    await first.release()
    dbname = location.dsn.split("@/")[1].split("?")[0]
    with postgres_server.superuser(dbname) as conn:
        conn.execute("DELETE FROM lease")
    lease = Lease(location)
    try:
        assert await lease.acquire()
        # Never an epoch an old holder may still carry.
        assert lease._epoch is not None
        assert lease._epoch > old_epoch
    finally:
        await lease.release()


async def test_a_lease_that_cannot_reach_its_database_says_so_once(
    location: Location, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    refused = Location(location.dsn, PASSWORD + "-x")
    lease = Lease(refused)
    caplog.set_level(logging.INFO, logger="ai_sidecar.store.postgres.lease")
    try:
        for _ in range(3):
            assert not await lease.acquire()
        failing = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in failing] == ["cannot take the worker lease; retrying"]
        assert "password authentication failed" in failing[0].reason
        assert PASSWORD not in failing[0].reason
        lease._location = location  # the password is fixed
        assert await lease.acquire()
        await lease.release()
        assert await lease.acquire()
        messages = [r.getMessage() for r in caplog.records]
        assert messages == [
            "cannot take the worker lease; retrying",
            "the worker lease's database answers again",
        ]
    finally:
        await lease.release()


async def test_terms_that_fail_at_once_back_off(
    location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease_module, "RETRY_INTERVAL", 0.05)
    # A ceiling far above the first pause, so a backoff that began there is told
    # from the right one by more than a loaded machine's lag.
    monkeypatch.setattr(lease_module, "BACKOFF_MAX", 3.2)
    # Each pause is measured from the lease's release to its next acquire: the
    # time a loaded machine takes to reconnect and start a term is no pause.
    pauses: list[float] = []

    class TimedLease(Lease):
        released_at: float | None = None

        async def acquire(self) -> bool:
            if self.released_at is not None:
                pauses.append(time.monotonic() - self.released_at)
                self.released_at = None
            taken = await super().acquire()
            # A failed acquire releases what it half took: no pause of lead's began there.
            if not taken:
                self.released_at = None
            return taken

        async def release(self) -> None:
            await super().release()
            self.released_at = time.monotonic()

    async def failing_work() -> None:
        raise StoreError("cannot open the store")

    leading = asyncio.create_task(lead(TimedLease(location), failing_work, lambda _: None))
    try:
        deadline = time.monotonic() + 60
        while len(pauses) < 5:
            assert time.monotonic() < deadline, pauses
            await asyncio.sleep(0.05)
    finally:
        leading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leading
    # Pauses of 0.05, 0.1, 0.2, 0.4, then 0.8 s: not a term every 0.05 s, nor
    # one pause of the 3.2 s ceiling from the start.
    assert pauses[0] < 1.0, pauses
    for pause, least in zip(pauses, (0.05, 0.1, 0.2, 0.4, 0.8), strict=False):
        assert pause >= least - 0.01, pauses  # less: the event loop's clock resolution


async def test_the_other_replica_takes_over_when_the_holder_loses_its_session(
    location: Location, postgres_server: PostgresServer
) -> None:
    changes: dict[str, list[bool]] = {"a": [], "b": []}
    working: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
    stopped_a = asyncio.Event()

    def work_of(name: str):  # type: ignore[no-untyped-def]
        async def work() -> None:
            working[name].set()
            try:
                await asyncio.Future()
            finally:
                if name == "a":
                    stopped_a.set()

        return work

    lease_a, lease_b = Lease(location), Lease(location)
    a = asyncio.create_task(lead(lease_a, work_of("a"), changes["a"].append))
    await asyncio.wait_for(working["a"].wait(), 10)
    b = asyncio.create_task(lead(lease_b, work_of("b"), changes["b"].append))
    try:
        await asyncio.sleep(1.5)
        assert not working["b"].is_set(), "two replicas worked at once"

        lost_at = time.monotonic()
        terminate(postgres_server, lease_pid(lease_a))
        await asyncio.wait_for(working["b"].wait(), 10)
        takeover = time.monotonic() - lost_at
        assert stopped_a.is_set(), "the old holder still worked when the new one started"
        assert takeover < 5
        assert changes["a"][:2] == [True, False]
        assert changes["b"] == [True]
    finally:
        for task in (a, b):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_the_store_recovers_by_itself_after_its_connections_die(
    location: Location, postgres_server: PostgresServer
) -> None:
    store = await PostgresStore.open(location)
    try:
        await store.ingest([alert("InterfaceDown", instance="a")], T0)
        # Every session of the store ends at once, as in a server restart.
        with postgres_server.superuser() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE usename = 'scout' AND pid <> pg_backend_pid()"
            )
        outcomes = []
        for name in ("b", "c", "d"):
            try:
                outcomes.append((await store.ingest([alert("X", instance=name)], T0)).new)
            except StoreError:
                outcomes.append(-1)
        # At most the stale connection fails (a 503); the next call reconnects.
        assert outcomes[-2:] == [1, 1]
        assert await store.alert_count() == 1 + outcomes.count(1)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("sqlstate", "try_again_later"),
    [
        ("25006", True),  # read-only transaction: a standby after a failover
        ("08006", True),  # connection failure
        ("57P01", True),  # admin shutdown
        ("57P02", True),  # crash shutdown
        ("57P03", True),  # cannot connect now
        ("53100", True),  # disk full
        ("53300", True),  # too many connections
        ("40001", True),  # serialisation failure
        ("40P01", True),  # deadlock
        ("23505", False),  # unique violation: the statement, not the server
        ("42601", False),  # syntax error
        ("22P02", False),  # invalid text representation
    ],
)
def test_storage_failures_are_the_try_again_later_sqlstates(
    sqlstate: str, try_again_later: bool
) -> None:
    error = psycopg.errors.lookup(sqlstate)("from the server")
    assert is_storage_failure(error) is try_again_later


async def test_writing_to_a_standby_is_a_store_error(location: Location) -> None:
    store = await PostgresStore.open(location)

    async def on_a_standby(cur: Cursor) -> None:
        # What every write meets on a server that is (now) a standby.
        await cur.execute("SET TRANSACTION READ ONLY")
        await cur.execute("UPDATE progress SET cursor = 1")

    try:
        with pytest.raises(StoreError, match="read-only transaction"):
            await store.engine.transaction(on_a_standby)
    finally:
        await store.close()


async def test_ingests_commit_durably_whatever_the_database_default(
    location: Location, postgres_server: PostgresServer
) -> None:
    dbname = location.dsn.split("@/")[1].split("?")[0]
    with postgres_server.superuser() as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    store = await PostgresStore.open(location)

    async def setting(cur: Cursor) -> str:
        await cur.execute("SHOW synchronous_commit")
        row = await cur.fetchone()
        assert row is not None
        return str(row[0])

    try:
        assert await store.engine.transaction(setting) == "off"
        assert await store.engine.ingest(setting) == "on"
    finally:
        await store.close()


def conflicting(times: int, conflict: type[Exception]) -> Callable[[Cursor], Awaitable[str]]:
    """A transaction the server rolls back for a conflict its first ``times`` runs."""
    runs = 0

    async def run(cur: Cursor) -> str:
        nonlocal runs
        runs += 1
        await cur.execute("SELECT 1")
        if runs <= times:
            raise conflict("rolled back for a conflict with another transaction")
        return f"committed on run {runs}"

    return run


@pytest.mark.parametrize("conflict", [DeadlockDetected, SerializationFailure])
async def test_every_kind_of_transaction_runs_again_after_a_conflict(
    location: Location, conflict: type[Exception]
) -> None:
    store = await PostgresStore.open(location)
    engine = store.engine
    try:
        assert await engine.ingest(conflicting(1, conflict)) == "committed on run 2"
        assert await engine.transaction(conflicting(1, conflict)) == "committed on run 2"
        read = conflicting(1, conflict)
        assert await engine.transaction(read, read_only=True) == "committed on run 2"
        for run_in in (
            engine.ingest,
            engine.transaction,
            functools.partial(engine.transaction, read_only=True),
        ):
            with pytest.raises(StoreError, match="kept conflicting with another"):
                await run_in(conflicting(TRANSIENT_RETRIES, conflict))
    finally:
        await store.close()


async def test_a_server_that_is_not_there_is_a_store_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    nowhere = Location(f"postgresql://scout@/scout?host={tmp_path}", PASSWORD)
    with pytest.raises(StoreError, match=r"cannot connect to postgresql://"):
        await PostgresStore.open(nowhere)
    assert issubclass(LeaseLostError, StoreError)
    assert psycopg.__version__ >= "3.2"


async def test_concurrent_outbox_writes_of_the_worker_never_deadlock(location: Location) -> None:
    # The worker schedules copies while the return trip completes posts of the
    # same rows in another order: on PostgreSQL, unlike SQLite's single writer,
    # such transactions would deadlock and the worker would lose the copies.
    store = await PostgresStore.open(location)
    peers = ("http://am-a:9093", "http://am-b:9093")
    members = [f"m{i:03}" for i in range(150)]

    def plan(text: str) -> OutboxPlan:
        copies = tuple(
            OutboxCopy(f"copy-{m}", "inc-1", m, "firing", f'{{"t": "{text}"}}', "{}", None)
            for m in members
        )
        return OutboxPlan("inc-1", frozenset(members), copies)

    try:
        await store.enqueue_posts([plan("v0")], peers, now=1.0, repeat_for=60.0)
        for round_ in range(1, 6):
            rows = list(reversed(await store.list_posts()))
            await asyncio.gather(
                store.enqueue_posts([plan(f"v{round_}")], peers, now=2.0, repeat_for=60.0),
                *(
                    store.complete_accepted(
                        peer,
                        [r for r in rows if r.peer == peer],
                        now=3.0,
                        firing_due=9.0,
                        resolved_due=9.0,
                    )
                    for peer in peers
                ),
                store.enqueue_posts([plan(f"w{round_}")], peers, now=2.0, repeat_for=60.0),
            )
        assert {r.alert for r in await store.list_posts()} == {'{"t": "w5"}'}
    finally:
        await store.close()


async def test_a_session_left_idle_in_a_transaction_is_ended_by_the_server(
    location: Location,
) -> None:
    # A replica whose host vanishes mid-transaction sends no TCP reset: the
    # server must end that session itself, or its locks block every replica.
    conn = await location.connect()
    try:
        cur = await conn.execute("SHOW idle_in_transaction_session_timeout")
        row = await cur.fetchone()
        assert row is not None
        assert row[0] == "15s"
        # The DSN's own options still apply after Scout's.
        dsn = make_conninfo(location.dsn, options="-c statement_timeout=7s")
        custom = Location(dsn, location.password)
        other = await custom.connect()
        try:
            cur = await other.execute("SHOW statement_timeout")
            row = await cur.fetchone()
            assert row is not None
            assert row[0] == "7s"
        finally:
            await other.close()
    finally:
        await conn.close()


async def test_a_lease_check_that_gets_no_answer_is_a_lost_lease_at_once(
    location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = Lease(location)
    try:
        assert await lease.acquire()
        assert await lease.alive()
        monkeypatch.setattr(lease_module, "CHECK_TIMEOUT", 0.2)
        conn = lease._conn
        assert conn is not None
        # The lock's session is busy for 30 s: no answer within the check's 0.2 s.
        # A check that waited for the answer would take 30 s, so its ceiling can sit
        # far above a loaded machine's pauses.
        busy = asyncio.ensure_future(conn.execute("SELECT pg_sleep(30)"))
        started = time.monotonic()
        assert not await lease.alive()
        assert time.monotonic() - started < 15
        canceller = await location.connect()
        try:
            await canceller.execute("SELECT pg_cancel_backend(%s)", (lease._pid,))
        finally:
            await canceller.close()
        with contextlib.suppress(Exception):
            await busy
    finally:
        await lease.release()


class RoundTrips:
    """Every time a client waits on the server, from libpq's trace of its connections.

    A round trip ends with a simple ``Query`` or an extended-protocol ``Sync``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections: list[psycopg.AsyncConnection[Any]] = []

    def start(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with self.path.open("a") as log:
            conn.pgconn.trace(os.dup(log.fileno()))
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        self.connections.append(conn)

    def count(self) -> int:
        """Round trips so far (stops tracing: libpq writes its trace out on untrace)."""
        for conn in self.connections:
            if not conn.closed:
                conn.pgconn.untrace()
        self.connections.clear()
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return sum(1 for line in lines if re.match(r"F\t\d+\t(Query|Sync)\b", line))


async def ingest_group(location: Location, trace: Path, requests: int, prefix: str) -> int:
    """Round trips to store ``requests`` webhook requests that arrive together (one group)."""
    store = await PostgresStore.open(location)
    trips = RoundTrips(trace)
    try:
        # The pool's one connection, which the writer takes.
        [conn] = store.engine._idle
        trips.start(conn)
        commits = store.engine.commits
        results = await asyncio.gather(
            *(
                store.ingest(
                    [alert("A", instance=f"{prefix}{n}"), alert("B", instance=f"{prefix}{n}")], T0
                )
                for n in range(requests)
            )
        )
        assert [r.new for r in results] == [2] * requests
        assert store.engine.commits == commits + 1
        assert store.engine._idle == [conn]
        return trips.count()
    finally:
        await store.close()


async def test_a_request_in_a_group_commit_costs_one_round_trip(
    location: Location, tmp_path: Path
) -> None:
    alone = await ingest_group(location, tmp_path / "alone.log", 1, "a")
    together = await ingest_group(location, tmp_path / "together.log", 5, "t")
    # BEGIN, the setting and the lock, COMMIT; and each request's insert.
    assert alone == 4
    assert together - alone == 4


async def test_a_failing_request_of_a_group_fails_alone(location: Location) -> None:
    store = await PostgresStore.open(location)

    async def bad(cur: Cursor) -> None:
        await cur.execute("SELECT 1 / 0")

    async def good(cur: Cursor) -> int:
        await cur.execute("SELECT count(*) FROM alerts")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    try:
        commits = store.engine.commits
        first, failed, stored = await asyncio.gather(
            store.ingest([alert("A", instance="h1")], T0),
            store.engine.ingest(bad),
            store.engine.ingest(good),
            return_exceptions=True,
        )
        assert not isinstance(first, BaseException)
        assert first.new == 1
        assert isinstance(failed, psycopg.errors.DivisionByZero)
        # The good ones committed together, and saw each other's writes.
        assert stored == 1
        assert store.engine.commits == commits + 1
    finally:
        await store.close()


def turkish_database(server: PostgresServer) -> str:
    """A database whose default collation is Turkish (ICU): there ``lower('I')`` is a
    dotless i (U+0131), and U+0130 (a dotted capital I) lowers to an ASCII i. Returns its DSN."""
    name = f"scout_tr_{os.getpid()}_{next(TURKISH_DATABASES)}"
    with server.superuser() as conn:
        if conn.execute("SELECT 1 FROM pg_collation WHERE collname = 'tr-TR-x-icu'").fetchone():
            conn.execute(
                f"CREATE DATABASE {name} OWNER scout TEMPLATE template0"
                " LOCALE_PROVIDER icu ICU_LOCALE 'tr-TR'"
            )
        else:
            pytest.skip("this PostgreSQL has no ICU collations")
    return server.dsn(name)


TURKISH_DATABASES = itertools.count()


async def test_user_names_fold_alike_whatever_the_database_locale(
    postgres_server: PostgresServer,
) -> None:
    store = await PostgresStore.open(Location(turkish_database(postgres_server), PASSWORD))
    try:
        await store.save_console_user(ConsoleAccount("Ivan.Ili", "viewer", "h"), T0)
        # As SQLite and the users file fold them: A-Z to a-z, nothing else.
        for typed in ("Ivan.Ili", "ivan.ili", "IVAN.ILI"):
            found = await store.get_console_user(typed)
            assert found is not None, typed
            assert found.name == "Ivan.Ili"
        # Not a name anyone can have (ASCII only): it finds no user.
        assert await store.get_console_user("İvan.İli") is None
    finally:
        await store.close()
