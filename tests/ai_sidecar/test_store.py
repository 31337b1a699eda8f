"""The SQLite store: idempotent group-committed ingest, the worker's cursor, incidents, feedback."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ai_sidecar.errors import SidecarError
from ai_sidecar.models import (
    Alert,
    Analysis,
    Incident,
    Member,
    RootCauseFacts,
    SkippedAnalyst,
)
from ai_sidecar.store import Backlog, Database, Feedback, IngestResult, StoreError
from ai_sidecar.store.sqlite import SCHEMA_VERSION, StoreClosedError

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
RECEIVED = datetime(2024, 5, 1, 10, 0, 30, 250000, tzinfo=UTC)


def alert(
    fingerprint: str = "a1",
    status: str = "firing",
    starts_at: datetime = T0,
    **labels: str,
) -> Alert:
    return Alert(
        fingerprint=fingerprint,
        status="firing" if status == "firing" else "resolved",
        labels={"alertname": "InterfaceDown", "instance": "sw-1", **labels},
        annotations={"summary": "Gi0/1 is down"},
        starts_at=starts_at,
        ends_at=None if status == "firing" else starts_at + timedelta(minutes=5),
        generator_url="http://127.0.0.1:9090/graph?g0.expr=up",
    )


def incident(
    incident_id: str,
    status: str = "open",
    updated_at: datetime = T0,
    priority: str = "P2",
    resolved_at: datetime | None = None,
) -> Incident:
    member = Member(
        fingerprint=f"fp-{incident_id}",
        labels={"alertname": "InterfaceDown", "instance": "sw-1"},
        annotations={"summary": "down"},
        status="firing",
        starts_at=T0,
        first_starts_at=T0,
    )
    return Incident(
        id=incident_id,
        status="open" if status == "open" else "resolved",
        group={"instance": "sw-1"},
        members={member.fingerprint: member},
        created_at=T0,
        updated_at=updated_at,
        priority="P1" if priority == "P1" else "P2",
        resolved_at=resolved_at,
    )


@pytest.fixture
async def threaded_db(tmp_path: Path) -> AsyncIterator[Database]:
    """The webhook's mode only: group commit and a read-only reader connection."""
    database = await Database.open(tmp_path / "data" / "scout.db")
    yield database
    await database.close()


@pytest.fixture(params=["threads", "inline"])
async def db(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """Both modes: writer and reader threads (the webhook's), and inline (the worker's)."""
    inline = request.param == "inline"
    database = await Database.open(tmp_path / "data" / "scout.db", inline=inline)
    yield database
    await database.close()


async def test_open_creates_the_directory_and_a_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "scout.db"
    database = await Database.open(path)
    try:
        mode = await database.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        sync = await database.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await database.close()
    assert path.is_file()
    assert mode == "wal"
    assert sync == 2  # FULL: the WAL is synced on every commit


async def test_ingest_is_idempotent_on_fingerprint_status_and_starts_at(db: Database) -> None:
    first = await db.ingest([alert("a1"), alert("a2")], RECEIVED)
    assert first == IngestResult(new=2, duplicates=0)

    again = await db.ingest(
        [
            alert("a1"),  # same delivery again (an HA peer)
            alert("a1", status="resolved"),  # the same alert resolving is new
            alert("a2", starts_at=T0 + timedelta(hours=1)),  # a new episode is new
            alert("a3"),
            alert("a3"),  # a repeat inside one payload
        ],
        RECEIVED,
    )
    assert again == IngestResult(new=3, duplicates=2)
    assert await db.alert_count() == 5


async def test_same_instant_in_another_offset_is_a_duplicate(db: Database) -> None:
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    await db.ingest([alert("a1")], RECEIVED)
    assert await db.ingest([alert("a1", starts_at=plus_two)], RECEIVED) == IngestResult(0, 1)


async def test_stored_alerts_come_back_unchanged_in_arrival_order(db: Database) -> None:
    firing = alert("b", team="réseau ✓")
    resolved = alert("a", status="resolved")
    await db.ingest([firing], RECEIVED)
    await db.ingest([resolved], RECEIVED + timedelta(seconds=1))

    pending = await db.pending(10)

    assert [p.seq for p in pending] == sorted(p.seq for p in pending)
    assert [p.alert for p in pending] == [firing, resolved]
    assert pending[0].alert.ends_at is None
    assert pending[0].received_at == RECEIVED
    assert pending[1].received_at == RECEIVED + timedelta(seconds=1)


async def test_concurrent_ingests_all_land_with_exact_counts(db: Database) -> None:
    # 300 callers at once, every fingerprint sent by three of them: each must be
    # stored once and every caller must get its own correct answer.
    payloads = [[alert(f"fp{(i * 7 + j) % 100}") for j in range(3)] for i in range(300)]
    # Writes from several event-loop turns queue up while a commit syncs.
    results = await asyncio.gather(*(db.ingest(p, RECEIVED) for p in payloads))

    assert sum(r.new for r in results) == 100
    assert sum(r.duplicates for r in results) == 800
    assert all(r.new + r.duplicates == 3 for r in results)
    assert await db.alert_count() == 100


async def test_ingests_queued_during_a_commit_share_the_next_transaction(
    threaded_db: Database,
) -> None:
    db = threaded_db
    statements: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def hold_the_writer(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)
        started.set()
        release.wait(10)

    holder = asyncio.ensure_future(db.write(hold_the_writer))
    await asyncio.to_thread(started.wait, 10)
    waiting = [asyncio.ensure_future(db.ingest([alert(f"g{i}")], RECEIVED)) for i in range(50)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting)  # nobody is answered before the commit
    release.set()
    await holder
    results = await asyncio.gather(*waiting)
    await db.write(lambda conn: conn.set_trace_callback(None))

    assert all(r == IngestResult(new=1, duplicates=0) for r in results)
    # The held group's COMMIT, then one COMMIT for all 50 queued ingests. (The
    # write that removes the trace stops tracing before its own COMMIT.)
    assert [s for s in statements if s == "COMMIT"] == ["COMMIT", "COMMIT"]
    assert await db.alert_count() == 50


async def test_a_failing_write_is_rolled_back_alone_within_its_group(db: Database) -> None:
    started = threading.Event()
    release = threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    def insert_then_fail(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO alerts (fingerprint, status, starts_at, labels, annotations,"
            " generator_url, received_at) VALUES (?, 'firing', 'x', '{}', '{}', '', 'x')",
            [("doomed",)],
        )
        raise RuntimeError("the caller's own bug")

    holder = asyncio.ensure_future(db.write(hold))
    await asyncio.to_thread(started.wait, 10)
    before = asyncio.ensure_future(db.ingest([alert("kept-1")], RECEIVED))
    failing = asyncio.ensure_future(db.write(insert_then_fail))
    after = asyncio.ensure_future(db.ingest([alert("kept-2")], RECEIVED))
    release.set()
    await holder

    assert await before == IngestResult(1, 0)
    with pytest.raises(RuntimeError, match="the caller's own bug"):
        await failing
    assert await after == IngestResult(1, 0)
    fingerprints = [p.alert.fingerprint for p in await db.pending(10)]
    assert fingerprints == ["kept-1", "kept-2"]


async def test_write_rolls_back_on_exception_and_returns_values(db: Database) -> None:
    def fail(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE progress SET cursor = 99")
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await db.write(fail)
    assert await db.read(lambda c: c.execute("SELECT cursor FROM progress").fetchone()[0]) == 0
    assert await db.write(lambda c: c.execute("SELECT 41 + 1").fetchone()[0]) == 42


async def test_reader_connection_cannot_write(threaded_db: Database) -> None:
    db = threaded_db
    with pytest.raises(StoreError, match="attempt to write a readonly database"):
        await db.read(lambda c: c.execute("UPDATE progress SET cursor = 5"))


async def test_pending_and_save_progress_move_the_cursor(db: Database) -> None:
    await db.ingest([alert(f"p{i}") for i in range(5)], RECEIVED)
    assert await db.backlog() == Backlog(depth=5, oldest_received_at=RECEIVED)

    first = await db.pending(2)
    assert [p.alert.fingerprint for p in first] == ["p0", "p1"]
    await db.save_progress(first[-1].seq, [incident("inc-1")])

    rest = await db.pending(100)
    assert [p.alert.fingerprint for p in rest] == ["p2", "p3", "p4"]
    assert (await db.backlog()).depth == 3
    assert await db.get_incident("inc-1") == incident("inc-1")

    await db.save_progress(rest[-1].seq, [])
    assert await db.pending(100) == []
    assert await db.backlog() == Backlog(depth=0, oldest_received_at=None)
    # New alerts land above the cursor and are pending.
    await db.ingest([alert("p5")], RECEIVED)
    assert [p.alert.fingerprint for p in await db.pending(10)] == ["p5"]


async def test_a_cursor_past_the_stored_alerts_is_refused_atomically(db: Database) -> None:
    await db.ingest([alert("x")], RECEIVED)
    with pytest.raises(ValueError, match=r"cursor 7 is outside the stored alerts \(0..1\)"):
        await db.save_progress(7, [incident("inc-never")])
    assert await db.get_incident("inc-never") is None
    assert (await db.backlog()).depth == 1


async def test_incidents_round_trip_and_update_in_place(db: Database) -> None:
    full = incident("inc-1", priority="P1")
    analysed = replace(
        full,
        analysis=Analysis("s", "rc", "impact", ("a", "b"), 0.8, 0.1),
        analyst="local",
        version=3,
        root_cause_facts=RootCauseFacts("only", "device", 0),
        peak_priority="P1",
        analysed_version=3,
        analysed_priority="P1",
        skipped_analysts=(SkippedAnalyst("remote", "timeout", "no analysis within 12s"),),
    )
    await db.save_incidents([full])
    await db.save_incidents([analysed])
    assert await db.get_incident("inc-1") == analysed
    assert await db.get_incident("missing") is None
    assert len(await db.list_incidents()) == 1


async def test_list_incidents_filters_and_orders(db: Database) -> None:
    await db.save_incidents(
        [
            incident("old-open", updated_at=T0),
            incident("new-open", updated_at=T0 + timedelta(hours=2)),
            incident("mid-resolved", "resolved", updated_at=T0 + timedelta(hours=1)),
        ]
    )
    ids = [i.id for i in await db.list_incidents()]
    assert ids == ["new-open", "mid-resolved", "old-open"]
    assert [i.id for i in await db.list_incidents(status="open")] == ["new-open", "old-open"]
    assert [i.id for i in await db.list_incidents(status="resolved")] == ["mid-resolved"]
    since = T0 + timedelta(hours=1)
    assert [i.id for i in await db.list_incidents(since=since)] == ["new-open", "mid-resolved"]
    assert [i.id for i in await db.list_incidents(status="open", since=since)] == ["new-open"]
    assert [i.id for i in await db.list_incidents(limit=1)] == ["new-open"]


async def test_active_incidents_are_open_ones_and_recently_resolved(db: Database) -> None:
    cutoff = T0 + timedelta(hours=1)
    await db.save_incidents(
        [
            incident("open"),
            incident("resolved-long-ago", "resolved", resolved_at=T0),
            incident("resolved-at-cutoff", "resolved", resolved_at=cutoff),
            # No resolved_at: its last update stands in for it.
            incident("resolved-no-stamp", "resolved", updated_at=cutoff + timedelta(minutes=1)),
        ]
    )
    ids = sorted(i.id for i in await db.active_incidents(cutoff))
    assert ids == ["open", "resolved-at-cutoff", "resolved-no-stamp"]


async def test_feedback_needs_an_existing_incident(db: Database) -> None:
    assert await db.add_feedback("nope", True, "great", T0) is False
    assert await db.feedback("nope") == []

    await db.save_incidents([incident("inc-1")])
    assert await db.add_feedback("inc-1", True, "spot on", T0)
    assert await db.add_feedback("inc-1", False, "wrong root cause", T0 + timedelta(minutes=1))
    assert await db.feedback("inc-1") == [
        Feedback("inc-1", True, "spot on", T0),
        Feedback("inc-1", False, "wrong root cause", T0 + timedelta(minutes=1)),
    ]


async def test_reopening_keeps_alerts_cursor_incidents_and_feedback(tmp_path: Path) -> None:
    path = tmp_path / "scout.db"
    first = await Database.open(path)
    await first.ingest([alert("a"), alert("b"), alert("c")], RECEIVED)
    seq_b = (await first.pending(2))[-1].seq
    await first.save_progress(seq_b, [incident("inc-1")])
    await first.add_feedback("inc-1", True, "ok", T0)
    await first.close()

    second = await Database.open(path)
    try:
        assert await second.alert_count() == 3
        assert [p.alert.fingerprint for p in await second.pending(10)] == ["c"]
        assert await second.get_incident("inc-1") == incident("inc-1")
        assert await second.feedback("inc-1") == [Feedback("inc-1", True, "ok", T0)]
        # Idempotency survives the restart.
        assert await second.ingest([alert("a"), alert("d")], RECEIVED) == IngestResult(1, 1)
        # Seq keeps growing past what the first process handed out.
        assert (await second.pending(10))[-1].seq > seq_b + 1
    finally:
        await second.close()


async def test_close_finishes_queued_writes_then_refuses_everything(tmp_path: Path) -> None:
    path = tmp_path / "scout.db"
    database = await Database.open(path)
    queued = [asyncio.ensure_future(database.ingest([alert(f"q{i}")], RECEIVED)) for i in range(20)]
    await asyncio.sleep(0)  # the ingests are queued to the writer
    await database.close()
    await database.close()  # idempotent
    assert all(task.result() == IngestResult(1, 0) for task in queued)

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: database.ingest([alert("late")], RECEIVED),
        lambda: database.write(lambda c: None),
        lambda: database.read(lambda c: None),
        lambda: database.pending(1),
        lambda: database.alert_count(),
        lambda: database.backlog(),
        lambda: database.save_progress(0, []),
        lambda: database.save_incidents([incident("late")]),
        lambda: database.list_incidents(),
        lambda: database.add_feedback("x", True, "", T0),
    ]
    for call in calls:
        with pytest.raises(StoreClosedError, match=r"the store .*scout\.db is closed"):
            await call()
    assert issubclass(StoreClosedError, StoreError)
    assert issubclass(StoreError, SidecarError)

    reopened = await Database.open(path)
    try:
        assert await reopened.alert_count() == 20
    finally:
        await reopened.close()


async def test_a_full_disk_is_a_store_error_and_the_store_recovers(db: Database) -> None:
    # SQLite reports a file that may not grow exactly as it reports a full disk.
    pages = await db.write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await db.write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchone())
    big = [alert(f"big{i}", note="x" * 500) for i in range(200)]

    with pytest.raises(StoreError, match="database or disk is full"):
        await db.ingest(big, RECEIVED)
    assert await db.alert_count() == 0

    await db.write(lambda c: c.execute("PRAGMA max_page_count = 1000000").fetchone())
    assert await db.ingest(big, RECEIVED) == IngestResult(200, 0)


async def test_extra_schemas_are_applied_and_reapplied(tmp_path: Path) -> None:
    outbox = "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
    path = tmp_path / "scout.db"
    for round_ in range(2):
        database = await Database.open(path, schemas=[outbox])
        try:
            await database.write(lambda c: c.execute("INSERT INTO outbox (body) VALUES ('x')"))
            count = await database.read(
                lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()
            )
        finally:
            await database.close()
        assert count == (round_ + 1,)


async def test_unusable_paths_and_newer_files_are_clear_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"cannot open the store .*not-a-dir/scout\.db"):
        await Database.open(blocker / "scout.db")

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="file is not a database"):
        await Database.open(garbage)

    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than"):
        await Database.open(newer)


async def test_only_changed_members_are_rewritten(tmp_path):
    db = await Database.open(tmp_path / "scout.db")

    def member(fp: str, flaps: int = 0) -> Member:
        return Member(fp, {"alertname": "X", "i": fp}, {}, "firing", T0, T0, flap_count=flaps)

    members = {fp: member(fp) for fp in ("a", "b", "c")}
    first = Incident("inc-1", "open", {}, members, T0, T0, version=1)
    await db.save_incidents([first])

    def rows(conn):
        return dict(conn.execute("SELECT fingerprint, doc FROM incident_members").fetchall())

    # Mark a's row: a rewrite of it would wipe the mark.
    await db.write(
        lambda conn: conn.execute(
            "UPDATE incident_members SET doc = replace(doc, '\"duplicates\":0',"
            " '\"duplicates\":7') WHERE fingerprint = 'a'"
        )
    )
    second = Incident(
        "inc-1", "open", {}, {**members, "b": member("b", 1), "d": member("d")}, T0, T0, version=2
    )
    await db.save_incidents([second])
    after = await db.read(rows)
    assert '"duplicates":7' in after["a"], "an unchanged member was rewritten"
    assert '"flapCount":1' in after["b"]
    assert set(after) == {"a", "b", "c", "d"}
    [loaded] = await db.list_incidents()
    assert list(loaded.members) == ["a", "b", "c", "d"]
    assert loaded.members["b"].flap_count == 1

    # A fresh process knows nothing of what was written: it rewrites in full,
    # dropping rows of members the incident no longer has.
    await db.close()
    db = await Database.open(tmp_path / "scout.db")
    third = Incident("inc-1", "open", {}, {"a": member("a")}, T0, T0, version=3)
    await db.save_incidents([third])
    assert set(await db.read(rows)) == {"a"}
    await db.close()


async def test_two_processes_worth_of_writers_share_the_file(tmp_path):
    # The webhook's store (threads) and the worker's (inline) write one file
    # in turns; neither loses the other's rows.
    path = tmp_path / "scout.db"
    webhook = await Database.open(path)
    worker = await Database.open(path, inline=True)
    alerts = [alert(f"fp{i}") for i in range(50)]
    for item in alerts[:25]:
        await webhook.ingest([item], T0)
        await worker.ingest([alert(f"w-{item.fingerprint}")], T0)
    await asyncio.gather(*(webhook.ingest([a], T0) for a in alerts[25:]))
    assert await webhook.alert_count() == 75
    assert await worker.alert_count() == 75
    await worker.close()
    await webhook.close()
