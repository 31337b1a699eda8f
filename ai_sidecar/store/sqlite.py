"""The embedded store: one SQLite file in WAL mode holding alerts, incidents and feedback.

What it keeps:

- ``alerts``: every delivery the webhook accepted, once per (fingerprint,
  status, startsAt), numbered by ``seq`` in arrival order;
- ``progress``: the worker's cursor, the highest ``seq`` it has folded into
  incidents (everything above it is the backlog);
- ``incidents``: each incident's JSON header
  (:func:`ai_sidecar.models.incident_header_to_json`), with the columns the API
  filters on beside it, and ``incident_members``: one row per member alert, so
  a change to a few members of a large incident rewrites only their rows;
- ``feedback``: what people said about an incident.

How it runs. SQLite calls block, so none of them runs on the event loop:

- One writer thread owns the only write connection. Callers queue work to it;
  each time it is free it takes *everything* queued and writes it in a single
  transaction (group commit), then resolves all the callers' futures. One
  fsync then covers many webhook requests, which is what keeps acknowledgement
  latency low under an alert storm. Each queued job runs inside its own
  savepoint, so one failing job is rolled back alone.
- A second thread owns a read-only connection for queries. WAL lets it read a
  consistent snapshot while the writer commits.

Durability: ``synchronous=FULL`` syncs the WAL on every commit, so a write is
on disk, not only in the page cache, before its caller hears back. A kill -9
loses nothing acknowledged even with NORMAL; FULL also covers power loss.

Errors::

    SidecarError
    └── StoreError            the store cannot take or serve data now: disk full,
        │                     I/O error, unreadable file; worth retrying later
        └── StoreClosedError  the database was closed (shutdown in progress)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from ai_sidecar.errors import SidecarError
from ai_sidecar.models import (
    Alert,
    AlertStatus,
    Incident,
    IncidentStatus,
    Member,
    ReceivedAlert,
    incident_from_header,
    incident_header_to_json,
    member_from_json,
    member_to_json,
)

T = TypeVar("T")

Synchronous = Literal["FULL", "NORMAL"]

# Bumped whenever the schema below changes shape; a file written by a newer
# Scout is refused rather than misread.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    -- AUTOINCREMENT: a seq is never reused, even after pruning the newest rows,
    -- so an alert can never land below the worker's cursor and be skipped.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    ends_at TEXT,
    generator_url TEXT NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (fingerprint, status, starts_at)
);
CREATE TABLE IF NOT EXISTS progress (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    cursor INTEGER NOT NULL
);
INSERT OR IGNORE INTO progress (id, cursor) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    resolved_at TEXT,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS incidents_updated ON incidents (updated_at);
CREATE INDEX IF NOT EXISTS incidents_status_updated ON incidents (status, updated_at);
CREATE INDEX IF NOT EXISTS incidents_status_resolved ON incidents (status, resolved_at);
CREATE INDEX IF NOT EXISTS incidents_priority ON incidents (priority, updated_at);
-- Members apart from their incident: a storm changes a few members of a big
-- incident per batch, and only those rows are rewritten.
CREATE TABLE IF NOT EXISTS incident_members (
    incident_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    -- The order members joined in, which the API keeps.
    position INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (incident_id, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    useful INTEGER NOT NULL,
    comment TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_incident ON feedback (incident_id, id);
"""

_INSERT_ALERT = (
    "INSERT OR IGNORE INTO alerts (fingerprint, status, starts_at, labels, annotations,"
    " ends_at, generator_url, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_ALERT_COLUMNS = (
    "seq, fingerprint, status, starts_at, labels, annotations, ends_at, generator_url, received_at"
)
_UPSERT_MEMBER = (
    "INSERT INTO incident_members (incident_id, fingerprint, position, doc) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (incident_id, fingerprint) DO UPDATE SET"
    " position = excluded.position, doc = excluded.doc"
)
_UPSERT_INCIDENT = (
    "INSERT INTO incidents (id, status, priority, created_at, updated_at, resolved_at, doc)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
    " status = excluded.status, priority = excluded.priority,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at,"
    " resolved_at = excluded.resolved_at, doc = excluded.doc"
)

# Result codes (low byte) that mean the storage itself failed, not the query:
# the whole group is abandoned and callers are told to retry later.
_STORAGE_FAILURES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)

# Compact JSON; ASCII-only output keeps any odd code point out of SQLite's UTF-8.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


class StoreError(SidecarError):
    """The store cannot take or serve data now; the caller should retry later."""


class StoreClosedError(StoreError):
    """The database was closed."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """How many alerts of one :meth:`Database.ingest` call were new or already stored."""

    new: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Backlog:
    """Stored alerts the worker has not processed yet."""

    depth: int
    oldest_received_at: datetime | None


@dataclass(frozen=True, slots=True)
class Feedback:
    """One person's verdict on an incident."""

    incident_id: str
    useful: bool
    comment: str
    at: datetime


def _stamp(value: datetime) -> str:
    """A fixed-width UTC text form: equal instants give equal text, and text order is time order.

    A naive datetime is taken to be UTC already.
    """
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def _unstamp(text: str) -> datetime:
    # The trailing "Z" makes this an aware UTC datetime.
    return datetime.fromisoformat(text)


def _opt_stamp(value: datetime | None) -> str | None:
    return None if value is None else _stamp(value)


def _as_dict(mapping: Mapping[str, str]) -> dict[str, str]:
    return mapping if isinstance(mapping, dict) else dict(mapping)


def _is_storage_failure(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        # Raised by the sqlite3 module itself (for example a closed connection).
        return isinstance(exc, sqlite3.OperationalError)
    return (code & 0xFF) in _STORAGE_FAILURES


def _store_error(path: Path, exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        error = type(exc)(*exc.args)
    else:
        error = StoreError(f"cannot use the store {path}: {exc}")
    error.__cause__ = exc
    return error


@dataclass(frozen=True, slots=True)
class _Job:
    """One caller's unit of work for the writer thread, and where its answer goes."""

    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    # Bulk work (the worker's incident saves) goes into a transaction one job at
    # a time, so acknowledgements never wait behind a whole storm's saves.
    bulk: bool = False


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        # The caller may have stopped waiting (cancelled); its write still stands.
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _connect(path: Path, synchronous: Synchronous, schemas: Sequence[str]) -> sqlite3.Connection:
    """Open the write connection, switch the file to WAL and bring the schema up to date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: the writer issues BEGIN/COMMIT itself.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot use the store {path}: the file system refused WAL mode")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        # Another process holding a lock (a backup, sqlite3 CLI) is waited for.
        conn.execute("PRAGMA busy_timeout=5000")
        # A storm can grow the WAL a lot; shrink it back after checkpoints.
        conn.execute("PRAGMA journal_size_limit=67108864")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"cannot use the store {path}: it has schema version {version}, "
                f"newer than this Scout's {SCHEMA_VERSION}"
            )
        # Transaction control lives inside the script: executescript() commits
        # any transaction already open before it runs.
        script = "\n".join(
            (
                "BEGIN IMMEDIATE;",
                _SCHEMA,
                *schemas,
                f"PRAGMA user_version={SCHEMA_VERSION};",
                "COMMIT;",
            )
        )
        try:
            conn.executescript(script)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except BaseException:
        conn.close()
        raise
    return conn


# How long a writer waits for another process's write transaction (the
# sidecar's worker process shares the file), and how often it looks again.
WRITE_LOCK_TIMEOUT = 5.0
_WRITE_LOCK_POLL = (0.0002, 0.0005, 0.001, 0.002)


def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, retried briefly while another process holds the write lock.

    SQLite's own busy handler sleeps ever longer (up to 100 ms a try), which
    would add that much to a webhook acknowledgement whenever the worker
    process writes; the other side's transactions last milliseconds, so
    looking again every millisecond or two is what keeps the wait short.
    """
    deadline = time.monotonic() + WRITE_LOCK_TIMEOUT
    attempt = 0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            busy = (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(_WRITE_LOCK_POLL[min(attempt, len(_WRITE_LOCK_POLL) - 1)])
        attempt += 1


class _Writer(threading.Thread):
    """The thread that owns the write connection and commits queued jobs in groups."""

    def __init__(self, path: Path, synchronous: Synchronous, schemas: Sequence[str]) -> None:
        super().__init__(name="scout-store-writer", daemon=True)
        self._path = path
        self._synchronous = synchronous
        self._schemas = tuple(schemas)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._accepting = True
        self.ready: Future[None] = Future()

    def submit(self, job: _Job) -> None:
        with self._lock:
            if not self._accepting:
                raise StoreClosedError(f"the store {self._path} is closed")
            self._queue.put(job)

    def stop(self) -> None:
        """Refuse new jobs; the thread finishes what is queued, then exits."""
        with self._lock:
            if self._accepting:
                self._accepting = False
                self._queue.put(None)

    def run(self) -> None:
        try:
            conn = _connect(self._path, self._synchronous, self._schemas)
        except BaseException as exc:
            with self._lock:
                self._accepting = False
            self.ready.set_exception(exc)
            return
        self.ready.set_result(None)
        # From here on _begin() waits for the write lock itself (see there).
        conn.execute("PRAGMA busy_timeout=0")
        try:
            self._serve(conn)
        finally:
            conn.close()
            with self._lock:
                self._accepting = False
            # Only reached early if the loop itself failed: nobody may wait forever.
            leftovers: list[_Job] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._queue.get_nowait()
                    if item is not None:
                        leftovers.append(item)
            if leftovers:
                closed = StoreClosedError(f"the store {self._path} is closed")
                self._deliver([(job, None, closed) for job in leftovers])

    def _serve(self, conn: sqlite3.Connection) -> None:
        held: collections.deque[_Job] = collections.deque()  # bulk jobs waiting their turn
        stop = False
        while not (stop and not held):
            group: list[_Job] = []
            if not held and not stop:
                first = self._queue.get()
                if first is None:
                    stop = True
                else:
                    group.append(first)
            # Everything that queued up while the last commit was syncing goes
            # into this one transaction, bulk jobs excepted: at most one of
            # those per transaction, oldest first.
            with contextlib.suppress(queue.Empty):
                while not stop:
                    item = self._queue.get_nowait()
                    if item is None:
                        stop = True
                    else:
                        group.append(item)
            held.extend(job for job in group if job.bulk)
            group = [job for job in group if not job.bulk]
            if held:
                group.append(held.popleft())
            if group:
                self._deliver(self._commit(conn, group))

    def _commit(
        self, conn: sqlite3.Connection, group: list[_Job]
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        return _commit_group(conn, self._path, group)

    @staticmethod
    def _deliver(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job, result, error in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
        for loop, items in by_loop.items():
            # One wake-up per loop for the whole group, not one per caller.
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(_settle, items)


def _commit_group(
    conn: sqlite3.Connection, path: Path, group: list[_Job]
) -> list[tuple[_Job, Any, BaseException | None]]:
    """Run ``group`` in one transaction, one savepoint per job; each job's outcome."""
    outcomes: list[tuple[_Job, Any, BaseException | None]] = []
    try:
        _begin(conn)
        for job in group:
            conn.execute("SAVEPOINT job")
            try:
                result = job.fn(conn)
            except Exception as exc:
                if _is_storage_failure(exc) or not conn.in_transaction:
                    raise
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((job, None, exc))
                continue
            if not conn.in_transaction:
                raise StoreError(f"a write function ended the transaction on {path}")
            conn.execute("RELEASE job")
            outcomes.append((job, result, None))
        conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        # One exception object per caller: each await re-raises and extends its traceback.
        return [(job, None, _store_error(path, exc)) for job in group]
    return outcomes


def _open_reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        conn.close()
        raise
    return conn


def _row_to_alert(row: tuple[Any, ...]) -> ReceivedAlert:
    seq, fingerprint, status, starts_at, labels, annotations, ends_at, url, received_at = row
    alert = Alert(
        fingerprint=fingerprint,
        status=cast(AlertStatus, status),
        labels=json.loads(labels),
        annotations=json.loads(annotations),
        starts_at=_unstamp(starts_at),
        ends_at=None if ends_at is None else _unstamp(ends_at),
        generator_url=url,
    )
    return ReceivedAlert(seq=seq, alert=alert, received_at=_unstamp(received_at))


def _incident_row(incident: Incident) -> tuple[Any, ...]:
    resolved_at = incident.resolved_at
    if resolved_at is None and incident.status == "resolved":
        # The reload filter compares resolved_at; a resolved incident always has one.
        resolved_at = incident.updated_at
    return (
        incident.id,
        incident.status,
        incident.priority,
        _stamp(incident.created_at),
        _stamp(incident.updated_at),
        _opt_stamp(resolved_at),
        _encode_json(incident_header_to_json(incident)),
    )


SavedMembers = dict[str, Mapping[str, Member]]


@dataclass(frozen=True, slots=True)
class _IncidentRows:
    """Incidents encoded for the store, ready for a short transaction."""

    incidents: list[tuple[Any, ...]]
    members: list[tuple[Any, ...]]
    # Incidents written in full: rows of members they no longer have go.
    rewritten: list[tuple[str, tuple[str, ...]]]
    written: SavedMembers


def _encode_incidents(incidents: Sequence[Incident], saved: SavedMembers) -> _IncidentRows:
    """Encode ``incidents``, and of their members only those changed since ``saved``.

    ``saved`` holds the members last committed per incident; an incident not in
    it has all its members written. Encoding happens before the transaction, so
    the write lock (shared with the webhook) is held for the SQL alone.
    """
    members = []
    rewritten = []
    written: SavedMembers = {}
    for incident in incidents:
        before = saved.get(incident.id)
        if before is None:
            rewritten.append((incident.id, tuple(incident.members)))
            before = {}
        for position, (fingerprint, member) in enumerate(incident.members.items()):
            # Unchanged members are the very same (immutable) objects.
            old = before.get(fingerprint)
            if old is not member and old != member:
                doc = _encode_json(member_to_json(member))
                members.append((incident.id, fingerprint, position, doc))
        written[incident.id] = incident.members
    return _IncidentRows([_incident_row(i) for i in incidents], members, rewritten, written)


def _write_incidents(conn: sqlite3.Connection, rows: _IncidentRows) -> SavedMembers:
    conn.executemany(_UPSERT_INCIDENT, rows.incidents)
    for incident_id, fingerprints in rows.rewritten:
        marks = ",".join("?" * len(fingerprints))
        conn.execute(
            f"DELETE FROM incident_members WHERE incident_id = ? AND fingerprint NOT IN ({marks})",
            (incident_id, *fingerprints),
        )
    conn.executemany(_UPSERT_MEMBER, rows.members)
    return rows.written


def _load_incidents(conn: sqlite3.Connection, headers: Sequence[tuple[str]]) -> list[Incident]:
    """Incidents from their header docs (in order), with their member rows."""
    parsed = [json.loads(doc) for (doc,) in headers]
    members: dict[str, list[Member]] = {data["id"]: [] for data in parsed}
    for start in range(0, len(parsed), 500):  # SQLite's limit on bound parameters
        ids = [data["id"] for data in parsed[start : start + 500]]
        marks = ",".join("?" * len(ids))
        for incident_id, doc in conn.execute(
            f"SELECT incident_id, doc FROM incident_members WHERE incident_id IN ({marks})"
            " ORDER BY incident_id, position",
            ids,
        ):
            members[incident_id].append(member_from_json(json.loads(doc)))
    return [incident_from_header(data, members[data["id"]]) for data in parsed]


def _cursor(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT cursor FROM progress WHERE id = 0").fetchone()[0])


class Database:
    """The sidecar's SQLite store. Build it with :meth:`open`; every method is async."""

    def __init__(
        self,
        path: Path,
        writer: _Writer | None,
        reader_pool: ThreadPoolExecutor | None,
        reader: sqlite3.Connection,
    ) -> None:
        self._path = path
        self._writer = writer
        self._reader_pool = reader_pool
        self._reader = reader
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        # The members last committed per incident, to write only changed ones.
        self._saved_members: SavedMembers = {}

    @property
    def path(self) -> Path:
        return self._path

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        schemas: Sequence[str] = (),
        synchronous: Synchronous = "FULL",
        inline: bool = False,
    ) -> Database:
        """Open (or create) the file at ``path`` and apply the schema plus ``schemas``.

        ``schemas`` are idempotent scripts (``CREATE ... IF NOT EXISTS``) of
        modules that keep their own tables in this file; they run in the same
        transaction as the store's own schema.

        ``inline``: one connection, used on the calling thread, blocking it.
        For the worker process, whose loop serves no requests: its writes
        then never wait for the GIL between statements while holding the
        write lock the webhook needs.
        """
        if inline:
            try:
                conn = _connect(path, synchronous, schemas)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open the store {path}: {exc}") from exc
            conn.execute("PRAGMA busy_timeout=0")  # _begin() waits for the write lock
            return cls(path, None, None, conn)
        writer = _Writer(path, synchronous, schemas)
        writer.start()
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scout-store-reader")
        try:
            await asyncio.wrap_future(writer.ready)
            reader = await loop.run_in_executor(pool, _open_reader, path)
        except StoreError:
            writer.stop()
            pool.shutdown(wait=False)
            raise
        except (sqlite3.Error, OSError) as exc:
            writer.stop()
            pool.shutdown(wait=False)
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        except BaseException:
            writer.stop()
            pool.shutdown(wait=False)
            raise
        return cls(path, writer, pool, reader)

    async def close(self) -> None:
        """Finish queued writes and reads, then close both connections. Safe to call twice."""
        if self._closing is None:
            self._closed = True
            if self._writer is not None:
                self._writer.stop()
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        if self._writer is None or self._reader_pool is None:
            self._reader.close()
            return
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._writer.join)
        # Queued behind any reads already submitted, so they finish first.
        await loop.run_in_executor(self._reader_pool, self._reader.close)
        await asyncio.to_thread(self._reader_pool.shutdown, True)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the store {self._path} is closed")

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, bulk: bool = False) -> T:
        """Run ``fn`` on the writer thread in a transaction committed before this returns.

        ``bulk``: ``fn`` is long background work; it shares a transaction with
        no other bulk job, and quick jobs queued behind it may overtake it.

        If ``fn`` raises, its changes are rolled back and the exception is
        re-raised here; other callers' work in the same group still commits.
        ``fn`` must not commit or roll back itself. A failure of the storage
        (disk full, I/O error) raises :class:`StoreError`.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = _Job(fn, loop, future, bulk)
        if self._writer is None:
            [(_, outcome, error)] = _commit_group(self._reader, self._path, [job])
            if error is not None:
                raise error
            inline_result: T = outcome
            return inline_result
        self._writer.submit(job)
        result: T = await future
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the reader connection, inside one snapshot of the database."""
        self._check_open()
        if self._reader_pool is None:
            return self._run_read(fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, self._run_read, fn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if _is_storage_failure(exc):
                raise _store_error(self._path, exc) from exc
            raise

    async def ingest(self, alerts: Sequence[Alert], received_at: datetime) -> IngestResult:
        """Store ``alerts`` durably; repeats of a stored (fingerprint, status, startsAt) are
        counted as duplicates and not stored again."""
        self._check_open()
        if not alerts:
            return IngestResult(new=0, duplicates=0)
        received = _stamp(received_at)

        def insert(conn: sqlite3.Connection) -> IngestResult:
            rows = [
                (
                    a.fingerprint,
                    a.status,
                    _stamp(a.starts_at),
                    _encode_json(_as_dict(a.labels)),
                    _encode_json(_as_dict(a.annotations)),
                    None if a.ends_at is None else _stamp(a.ends_at),
                    a.generator_url,
                    received,
                )
                for a in alerts
            ]
            # For INSERT OR IGNORE, rowcount counts only the rows really inserted.
            new = conn.executemany(_INSERT_ALERT, rows).rowcount
            return IngestResult(new=new, duplicates=len(rows) - new)

        return await self.write(insert)

    async def pending(self, limit: int) -> list[ReceivedAlert]:
        """Up to ``limit`` alerts above the worker's cursor, oldest first."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")

        def query(conn: sqlite3.Connection) -> list[ReceivedAlert]:
            rows = conn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE seq > "
                "(SELECT cursor FROM progress WHERE id = 0) ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            return [_row_to_alert(row) for row in rows]

        return await self.read(query)

    async def save_progress(self, cursor: int, incidents: Sequence[Incident]) -> None:
        """Save ``incidents`` and move the worker's cursor to ``cursor``, atomically.

        A cursor past the last stored alert is refused: alerts stored later
        would otherwise sit below it and never be processed.
        """

        rows = _encode_incidents(incidents, self._saved_members)

        def save(conn: sqlite3.Connection) -> SavedMembers:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'alerts'").fetchone()
            last = 0 if row is None else int(row[0])
            if not 0 <= cursor <= last:
                raise ValueError(f"cursor {cursor} is outside the stored alerts (0..{last})")
            written = _write_incidents(conn, rows)
            conn.execute("UPDATE progress SET cursor = ? WHERE id = 0", (cursor,))
            return written

        await self._save_incidents(incidents, save)

    async def save_incidents(self, incidents: Sequence[Incident]) -> None:
        """Insert or replace ``incidents`` (by id)."""
        if incidents:
            rows = _encode_incidents(incidents, self._saved_members)
            await self._save_incidents(incidents, lambda conn: _write_incidents(conn, rows))

    async def _save_incidents(
        self, incidents: Sequence[Incident], fn: Callable[[sqlite3.Connection], SavedMembers]
    ) -> None:
        """Run ``fn``; remember what it wrote only once that is committed."""
        try:
            written = await self.write(fn, bulk=True)
        except BaseException:
            # Unknown what is on disk now: write these incidents in full next time.
            for incident in incidents:
                self._saved_members.pop(incident.id, None)
            raise
        for incident_id, members in written.items():
            self._saved_members[incident_id] = members
        for incident in incidents:
            if incident.status == "resolved":
                # Resolved incidents rarely change again; do not hold their members.
                self._saved_members.pop(incident.id, None)

    async def active_incidents(self, resolved_since: datetime) -> list[Incident]:
        """Open incidents plus those resolved at or after ``resolved_since``, oldest first."""
        since = _stamp(resolved_since)

        def query(conn: sqlite3.Connection) -> list[Incident]:
            rows = conn.execute(
                "SELECT doc FROM incidents WHERE status = 'open'"
                " OR (status = 'resolved' AND resolved_at >= ?)"
                " ORDER BY created_at, id",
                (since,),
            ).fetchall()
            return _load_incidents(conn, rows)

        return await self.read(query)

    async def latest_update(self) -> datetime | None:
        """The newest ``updated_at`` of any incident: how far, in alert time, the worker got."""
        row = await self.read(
            lambda conn: conn.execute("SELECT max(updated_at) FROM incidents").fetchone()
        )
        return None if row[0] is None else _unstamp(row[0])

    async def incident_ids(self) -> list[str]:
        """Every stored incident's id (the correlator must never reuse one)."""
        return await self.read(
            lambda conn: [row[0] for row in conn.execute("SELECT id FROM incidents")]
        )

    async def list_incidents(
        self,
        *,
        status: IncidentStatus | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Incident]:
        """Incidents updated at or after ``since`` (all when None), most recently updated first."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if since is not None:
            where.append("updated_at >= ?")
            params.append(_stamp(since))
        sql = "SELECT doc FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_at DESC, id DESC LIMIT ?"
        params.append(limit)

        def query(conn: sqlite3.Connection) -> list[Incident]:
            rows = conn.execute(sql, params).fetchall()
            return _load_incidents(conn, rows)

        return await self.read(query)

    async def get_incident(self, incident_id: str) -> Incident | None:
        def query(conn: sqlite3.Connection) -> Incident | None:
            row = conn.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            return None if row is None else _load_incidents(conn, [row])[0]

        return await self.read(query)

    async def add_feedback(
        self, incident_id: str, useful: bool, comment: str, at: datetime
    ) -> bool:
        """Record feedback on an incident; False (nothing stored) when there is no such incident."""

        def add(conn: sqlite3.Connection) -> bool:
            if (
                conn.execute("SELECT 1 FROM incidents WHERE id = ?", (incident_id,)).fetchone()
                is None
            ):
                return False
            conn.execute(
                "INSERT INTO feedback (incident_id, useful, comment, at) VALUES (?, ?, ?, ?)",
                (incident_id, int(useful), comment, _stamp(at)),
            )
            return True

        return await self.write(add)

    async def feedback(self, incident_id: str) -> list[Feedback]:
        """Feedback on one incident in the order it was given."""

        def query(conn: sqlite3.Connection) -> list[Feedback]:
            rows = conn.execute(
                "SELECT useful, comment, at FROM feedback WHERE incident_id = ? ORDER BY id",
                (incident_id,),
            ).fetchall()
            return [
                Feedback(incident_id, bool(useful), comment, _unstamp(at))
                for useful, comment, at in rows
            ]

        return await self.read(query)

    async def backlog(self) -> Backlog:
        """How many stored alerts wait for the worker, and when the oldest arrived."""

        def query(conn: sqlite3.Connection) -> Backlog:
            cursor = _cursor(conn)
            depth = conn.execute("SELECT count(*) FROM alerts WHERE seq > ?", (cursor,)).fetchone()
            oldest = conn.execute(
                "SELECT received_at FROM alerts WHERE seq > ? ORDER BY seq LIMIT 1", (cursor,)
            ).fetchone()
            return Backlog(
                depth=int(depth[0]),
                oldest_received_at=None if oldest is None else _unstamp(oldest[0]),
            )

        return await self.read(query)

    async def alert_count(self) -> int:
        """Alerts stored in total, processed or not."""
        return await self.read(
            lambda conn: int(conn.execute("SELECT count(*) FROM alerts").fetchone()[0])
        )
