"""What only the SQLite store does: WAL, group commit, lock waits, migrations, its files.

Behaviour every store shares is in ``test_contract.py``; these tests reach
the connection through :attr:`SqliteStore.engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from ai_sidecar import worker_process
from ai_sidecar.components import WORKER_SYNCHRONOUS, build_components, open_store
from ai_sidecar.config import SidecarConfig
from ai_sidecar.models import Incident, Member
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import (
    IngestResult,
    OutboxRow,
    SchemaVersionError,
    SqliteStore,
    StoreClosedError,
    StoreError,
)
from ai_sidecar.store.sqlite import SCHEMA_VERSION
from ai_sidecar.store.sqlite import incidents as sql
from ai_sidecar.store.sqlite.quick import QUICK_CHECKPOINT_PAGES
from ai_sidecar.store.sqlite.store import QUICK_ROWS
from tests.ai_sidecar.builders import T0, alert
from tests.ai_sidecar.exchanges import exchange
from tests.ai_sidecar.store import legacy_data as legacy

RECEIVED = T0 + timedelta(seconds=30)
FIXTURE = Path(__file__).parent.parent / "fixtures" / "store-v1.sql"


@pytest.fixture
async def threaded_db(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """The webhook's mode only: group commit and a read-only reader connection."""
    database = await SqliteStore.open(tmp_path / "data" / "scout.db")
    yield database
    await database.close()


@pytest.fixture(params=["threads", "inline"])
async def db(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[SqliteStore]:
    """Both modes: writer and reader threads (the webhook's), and inline (the worker's)."""
    inline = request.param == "inline"
    database = await SqliteStore.open(tmp_path / "data" / "scout.db", inline=inline)
    yield database
    await database.close()


async def test_open_creates_the_directory_and_a_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "scout.db"
    database = await SqliteStore.open(path)
    try:
        engine = database.engine
        mode = await engine.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        sync = await engine.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await database.close()
    assert path.is_file()
    assert mode == "wal"
    assert sync == 2  # FULL: the WAL is synced on every commit


async def test_concurrent_ingests_share_group_commits(threaded_db: SqliteStore) -> None:
    # Writes from many callers queue up while a commit syncs, and the next
    # transaction takes them all: far fewer commits than callers.
    payloads = [[alert("InterfaceDown", instance=f"fp{i}")] for i in range(300)]
    before = threaded_db.engine.commits
    results = await asyncio.gather(*(threaded_db.ingest(p, RECEIVED) for p in payloads))
    commits = threaded_db.engine.commits - before

    assert all(r == IngestResult(1, 0) for r in results)
    assert 1 <= commits < len(payloads) // 2, f"{commits} commits for {len(payloads)} ingests"


async def test_ingests_queued_during_a_commit_share_the_next_transaction(
    threaded_db: SqliteStore,
) -> None:
    engine = threaded_db.engine
    started = threading.Event()
    release = threading.Event()

    def hold_the_write_lock(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    commits = engine.commits
    holder = asyncio.ensure_future(engine.write(hold_the_write_lock))
    await asyncio.to_thread(started.wait, 10)
    waiting = [
        asyncio.ensure_future(
            threaded_db.ingest([alert("InterfaceDown", instance=f"g{i}")], RECEIVED)
        )
        for i in range(50)
    ]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting)  # nobody is answered before the commit
    release.set()
    await holder
    results = await asyncio.gather(*waiting)

    assert all(r == IngestResult(new=1, duplicates=0) for r in results)
    # The held transaction, then one transaction (one COMMIT) for all 50 queued ingests.
    assert engine.commits - commits == 2
    assert await threaded_db.alert_count() == 50


@pytest.fixture
def insert_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread each insert of alert rows ran on, in order."""
    threads: list[int] = []
    insert = sql.insert_alert_rows

    def recording_insert(conn: sqlite3.Connection, rows: Sequence[sql.AlertRow]) -> IngestResult:
        threads.append(threading.get_ident())
        return insert(conn, rows)

    monkeypatch.setattr(sql, "insert_alert_rows", recording_insert)
    return threads


async def test_single_alert_ingests_write_on_the_event_loop_and_commit_together(
    threaded_db: SqliteStore, insert_threads: list[int]
) -> None:
    # Regression (issue 10): on the writer thread, each single-alert request's
    # statements waited for the GIL the busy event loop held, and the webhook
    # topped out far below its CPU. Quick writes run their SQL on the loop.
    commits = threaded_db.engine.commits
    results = await asyncio.gather(
        *(
            threaded_db.ingest([alert("InterfaceDown", instance=f"q{i}")], RECEIVED)
            for i in range(20)
        )
    )

    assert results == [IngestResult(1, 0)] * 20
    assert insert_threads == [threading.get_ident()] * 20
    assert threaded_db.engine.commits - commits == 1
    assert await threaded_db.alert_count() == 20


async def test_a_failing_quick_write_is_rolled_back_alone_within_its_group(
    threaded_db: SqliteStore,
) -> None:
    engine = threaded_db.engine

    def insert_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO alerts (fingerprint, status, starts_at, labels, annotations,"
            " generator_url, received_at) VALUES ('doomed', 'firing', 'x', '{}', '{}', '', 'x')"
        )
        raise RuntimeError("the caller's own bug")

    kept = [alert("InterfaceDown", instance=name) for name in ("kept-1", "kept-2")]
    commits = engine.commits
    before, failing, after = await asyncio.gather(
        threaded_db.ingest(kept[:1], RECEIVED),
        engine.write_quick(insert_then_fail),
        threaded_db.ingest(kept[1:], RECEIVED),
        return_exceptions=True,
    )

    assert before == after == IngestResult(1, 0)
    assert isinstance(failing, RuntimeError)
    assert str(failing) == "the caller's own bug"
    assert engine.commits - commits == 1
    assert [p.alert for p in await threaded_db.pending(10)] == kept


async def test_a_big_payload_is_inserted_on_the_writer_thread(
    threaded_db: SqliteStore, insert_threads: list[int]
) -> None:
    # Inserting thousands of rows on the loop would stall every other request.
    big = [alert("InterfaceDown", instance=f"b{i}") for i in range(QUICK_ROWS + 1)]

    assert await threaded_db.ingest(big, RECEIVED) == IngestResult(QUICK_ROWS + 1, 0)
    assert len(insert_threads) == 1
    assert insert_threads[0] != threading.get_ident()


async def test_a_failing_write_is_rolled_back_alone_within_its_group(
    threaded_db: SqliteStore,
) -> None:
    engine = threaded_db.engine
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

    kept = [alert("InterfaceDown", instance=name) for name in ("kept-1", "kept-2")]
    rows = [sql.alert_rows([a], sql.stamp(RECEIVED)) for a in kept]
    holder = asyncio.ensure_future(engine.write(hold))
    await asyncio.to_thread(started.wait, 10)
    commits = engine.commits
    before = asyncio.ensure_future(engine.write(lambda c: sql.insert_alert_rows(c, rows[0])))
    failing = asyncio.ensure_future(engine.write(insert_then_fail))
    after = asyncio.ensure_future(engine.write(lambda c: sql.insert_alert_rows(c, rows[1])))
    await asyncio.sleep(0)  # all three are queued behind the held group
    release.set()
    await holder

    assert await before == IngestResult(1, 0)
    with pytest.raises(RuntimeError, match="the caller's own bug"):
        await failing
    assert await after == IngestResult(1, 0)
    # The held group, then one group for the three queued writes.
    assert engine.commits - commits == 2
    assert [p.alert for p in await threaded_db.pending(10)] == kept


async def test_write_rolls_back_on_exception_and_returns_values(db: SqliteStore) -> None:
    engine = db.engine

    def fail(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE progress SET cursor = 99")
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await engine.write(fail)
    assert await engine.read(lambda c: c.execute("SELECT cursor FROM progress").fetchone()[0]) == 0
    assert await engine.write(lambda c: c.execute("SELECT 41 + 1").fetchone()[0]) == 42


async def test_reader_connection_cannot_write(threaded_db: SqliteStore) -> None:
    with pytest.raises(StoreError, match="attempt to write a readonly database"):
        await threaded_db.engine.read(lambda c: c.execute("UPDATE progress SET cursor = 5"))


async def test_a_full_disk_is_a_store_error_and_the_store_recovers(db: SqliteStore) -> None:
    engine = db.engine
    # SQLite reports a file that may not grow exactly as it reports a full disk.
    pages = await engine.write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await engine.write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchone())
    big = [alert("InterfaceDown", instance=f"big{i}", note="x" * 500) for i in range(200)]

    with pytest.raises(StoreError, match="database or disk is full"):
        await db.ingest(big, RECEIVED)
    assert await db.alert_count() == 0

    await engine.write(lambda c: c.execute("PRAGMA max_page_count = 1000000").fetchone())
    assert await db.ingest(big, RECEIVED) == IngestResult(200, 0)


async def test_a_closed_engine_refuses_reads_and_writes(tmp_path: Path) -> None:
    database = await SqliteStore.open(tmp_path / "scout.db")
    await database.close()
    for call in (
        lambda: database.engine.write(lambda c: None),
        lambda: database.engine.read(lambda c: None),
    ):
        with pytest.raises(StoreClosedError, match=r"the store .*scout\.db is closed"):
            await call()


async def test_only_changed_members_are_rewritten(tmp_path: Path) -> None:
    db = await SqliteStore.open(tmp_path / "scout.db")

    def member(fp: str, flaps: int = 0) -> Member:
        return Member(fp, {"alertname": "X", "i": fp}, {}, "firing", T0, T0, flap_count=flaps)

    members = {fp: member(fp) for fp in ("a", "b", "c")}
    first = Incident("inc-1", "open", {}, members, T0, T0, version=1)
    await db.save_incidents([first])

    def rows(conn: sqlite3.Connection) -> dict[str, str]:
        return dict(conn.execute("SELECT fingerprint, doc FROM incident_members").fetchall())

    # Mark a's row: a rewrite of it would wipe the mark.
    await db.engine.write(
        lambda conn: conn.execute(
            "UPDATE incident_members SET doc = replace(doc, '\"duplicates\":0',"
            " '\"duplicates\":7') WHERE fingerprint = 'a'"
        )
    )
    second = Incident(
        "inc-1", "open", {}, {**members, "b": member("b", 1), "d": member("d")}, T0, T0, version=2
    )
    await db.save_incidents([second])
    after = await db.engine.read(rows)
    assert '"duplicates":7' in after["a"], "an unchanged member was rewritten"
    assert '"flapCount":1' in after["b"]
    assert set(after) == {"a", "b", "c", "d"}
    [loaded] = await db.list_incidents()
    assert list(loaded.members) == ["a", "b", "c", "d"]
    assert loaded.members["b"].flap_count == 1

    # A fresh process knows nothing of what was written: it rewrites in full,
    # dropping rows of members the incident no longer has.
    await db.close()
    db = await SqliteStore.open(tmp_path / "scout.db")
    third = Incident("inc-1", "open", {}, {"a": member("a")}, T0, T0, version=3)
    await db.save_incidents([third])
    assert set(await db.engine.read(rows)) == {"a"}
    await db.close()


async def test_two_processes_worth_of_writers_share_the_file(tmp_path: Path) -> None:
    # The webhook's store (threads) and the worker's (inline) write one file
    # in turns; neither loses the other's rows.
    path = tmp_path / "scout.db"
    webhook = await SqliteStore.open(path)
    worker = await SqliteStore.open(path, inline=True)
    alerts = [alert("InterfaceDown", instance=f"fp{i}") for i in range(50)]
    for item in alerts[:25]:
        await webhook.ingest([item], T0)
        await worker.ingest([replace(item, fingerprint=f"w-{item.fingerprint}")], T0)
    await asyncio.gather(*(webhook.ingest([a], T0) for a in alerts[25:]))
    assert await webhook.alert_count() == 75
    assert await worker.alert_count() == 75
    await worker.close()
    await webhook.close()


async def test_a_writer_waits_for_another_connections_write_lock(tmp_path: Path) -> None:
    # A backup or the sqlite3 CLI holding the write lock briefly delays a write,
    # it does not fail it.
    path = tmp_path / "scout.db"
    database = await SqliteStore.open(path)
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            ingest = asyncio.ensure_future(database.ingest([alert("InterfaceDown")], RECEIVED))
            await asyncio.sleep(0.2)
            assert not ingest.done()
            other.execute("COMMIT")
        assert await ingest == IngestResult(1, 0)
    finally:
        await database.close()


# --- the schema and its migrations -------------------------------------------------


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


async def test_the_schema_is_stamped_once_and_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "scout.db"
    for round_ in range(2):
        database = await SqliteStore.open(path)
        try:
            await database.ingest([alert("InterfaceDown", instance=f"r{round_}")], RECEIVED)
            count = await database.alert_count()
        finally:
            await database.close()
        assert count == round_ + 1
        assert user_version(path) == SCHEMA_VERSION


def write_v1_file(path: Path, *, stamped: bool) -> list[OutboxRow]:
    """The fixture written by the release before migrations; its outbox rows as stored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(FIXTURE.read_text())
        if not stamped:
            conn.execute("PRAGMA user_version = 0")
        rows = conn.execute(
            "SELECT peer, fingerprint, incident_id, member, state, alert, raw, ends_at,"
            " resolved_until, due_at, posted_at, revision FROM return_trip"
            " ORDER BY peer, fingerprint"
        ).fetchall()
    return [OutboxRow(*row) for row in rows]


@pytest.mark.parametrize("stamped", [True, False], ids=["version-1", "unstamped"])
async def test_a_data_directory_of_the_first_release_opens_with_nothing_lost(
    tmp_path: Path, stamped: bool
) -> None:
    path = tmp_path / "data" / "scout.db"
    outbox = write_v1_file(path, stamped=stamped)
    assert user_version(path) == (1 if stamped else 0)
    assert len(outbox) == 6

    database = await SqliteStore.open(path)
    try:
        assert user_version(path) == SCHEMA_VERSION
        assert await database.alert_count() == len(legacy.ALERTS)
        pending = await database.pending(10)
        assert [p.alert for p in pending] == list(legacy.ALERTS[legacy.PROCESSED :])
        assert {p.received_at for p in pending} == {legacy.RECEIVED + timedelta(seconds=1)}
        for incident in legacy.INCIDENTS:
            assert await database.get_incident(incident.id) == incident
        assert await database.active_incidents(legacy.T0) == list(legacy.INCIDENTS)
        for incident in legacy.INCIDENTS:
            given = [(i, useful, comment, at) for i, useful, comment, at in legacy.FEEDBACK]
            expected = [entry for entry in given if entry[0] == incident.id]
            got = [
                (f.incident_id, f.useful, f.comment, f.at)
                for f in await database.feedback(incident.id)
            ]
            assert got == expected
        assert await database.list_posts() == outbox
        assert {row.peer for row in outbox} == set(legacy.PEERS)
        # The cursor's bound and idempotency carry over.
        with pytest.raises(ValueError, match=r"outside the stored alerts \(0..6\)"):
            await database.save_progress(7, [])
        assert await database.ingest([legacy.ALERTS[0]], legacy.RECEIVED) == IngestResult(0, 1)
        indexes = await database.engine.read(
            lambda c: {
                row[0] for row in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
        )
        assert "alerts_received" in indexes
        assert "llm_exchanges_incident" in indexes
        # The LLM audit came with the migration.
        await database.record_llm_exchange(kept := exchange("inc-1", legacy.T0))
        assert await database.llm_exchanges() == [kept]
    finally:
        await database.close()


async def test_a_first_release_file_without_the_outbox_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "scout.db"
    write_v1_file(path, stamped=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TABLE return_trip")
    database = await SqliteStore.open(path)
    try:
        assert await database.list_posts() == []
        assert await database.alert_count() == len(legacy.ALERTS)
    finally:
        await database.close()


async def test_unusable_paths_and_newer_files_are_clear_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"cannot open the store .*not-a-dir/scout\.db"):
        await SqliteStore.open(blocker / "scout.db")

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="file is not a database"):
        await SqliteStore.open(garbage)

    newer = tmp_path / "newer.db"
    with contextlib.closing(sqlite3.connect(newer)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.execute("CREATE TABLE future (x)")
    for inline in (False, True):
        with pytest.raises(
            SchemaVersionError,
            match=f"schema version {SCHEMA_VERSION + 1}, newer than this Scout's {SCHEMA_VERSION}",
        ):
            await SqliteStore.open(newer, inline=inline)
    # Refused untouched.
    assert user_version(newer) == SCHEMA_VERSION + 1
    with contextlib.closing(sqlite3.connect(newer)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"future"}


@pytest.mark.parametrize("inline", [False, True])
async def test_the_store_is_private_to_its_owner(tmp_path: Path, inline: bool) -> None:
    """Console password hashes and session tokens live in it: nobody else may read it."""
    path = tmp_path / "data" / "scout.db"
    store = await SqliteStore.open(path, inline=inline)
    try:
        await store.ingest([alert("InterfaceDown")], T0)
        assert path.parent.stat().st_mode & 0o777 == 0o700
        for name in ("scout.db", "scout.db-wal", "scout.db-shm"):
            assert (path.parent / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        await store.close()


async def test_an_older_world_readable_store_is_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "scout.db"
    store = await SqliteStore.open(path)
    await store.close()
    path.chmod(0o644)
    store = await SqliteStore.open(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        assert "made it private" in caplog.text
    finally:
        await store.close()


async def test_webhook_commits_fsync_and_leave_checkpoints_to_the_others(tmp_path: Path) -> None:
    # The webhook's acknowledgements wait for an fsync (FULL) on both of its
    # write paths, and so do one-shot commands (accounts, settings); the
    # worker's derived writes (NORMAL) do not hold the write lock through one.
    settings = SidecarSettings(data_dir=tmp_path / "data")
    setting = "PRAGMA synchronous"
    webhook = await open_store(settings)
    assert isinstance(webhook, SqliteStore)
    try:
        engine = webhook.engine
        threaded = await engine.write(lambda c: c.execute(setting).fetchone()[0])
        quick = await engine.write_quick(lambda c: c.execute(setting).fetchone()[0])
        checkpoints = await engine.write_quick(
            lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
    finally:
        await webhook.close()
    inline = {}
    for name, synchronous in (("command", "FULL"), ("pipeline", WORKER_SYNCHRONOUS)):
        worker = await open_store(settings, worker=True, synchronous=synchronous)
        assert isinstance(worker, SqliteStore)
        try:
            inline[name] = await worker.engine.write(lambda c: c.execute(setting).fetchone()[0])
        finally:
            await worker.close()
    assert (threaded, quick, inline["command"]) == (2, 2, 2)  # FULL
    assert inline["pipeline"] == 1  # NORMAL
    # The quick writer's commits leave the WAL's checkpoints to the others.
    assert checkpoints == QUICK_CHECKPOINT_PAGES > 1_000


async def test_the_worker_process_runs_its_pipeline_on_a_normal_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the worker process itself opens, not what open_store can do: its
    # pipeline must get the inline connection with WORKER_SYNCHRONOUS, so its
    # commits do not hold the file's write lock through an fsync.
    seen: dict[str, object] = {}
    stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def pipeline(store: SqliteStore, *args: object, **kwargs: object) -> AsyncIterator[None]:
        def settings(conn: sqlite3.Connection) -> tuple[int, int, int]:
            names = ("synchronous", "wal_autocheckpoint")
            found = [conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names]
            return found[0], found[1], threading.get_ident()

        seen["store"] = store
        seen["synchronous"], seen["checkpoints"], seen["thread"] = await store.engine.write(
            settings
        )
        stop.set()
        yield

    monkeypatch.setattr(worker_process, "stop_on_signals", lambda: stop)
    monkeypatch.setattr(worker_process, "run_pipeline", pipeline)
    settings = SidecarSettings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    ours, theirs = multiprocessing.Pipe()
    try:
        await worker_process._serve(
            settings, SidecarConfig(), build_components, theirs, control=None
        )
    finally:
        ours.close()
        theirs.close()
    assert isinstance(seen["store"], SqliteStore)
    assert seen["thread"] == threading.get_ident()  # inline: on the loop's thread
    assert WORKER_SYNCHRONOUS == "NORMAL"
    assert seen["synchronous"] == 1  # NORMAL
    # Its commits checkpoint the WAL (the webhook's quick writes leave it to them).
    assert seen["checkpoints"] == 1_000
