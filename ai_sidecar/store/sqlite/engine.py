"""The SQLite engine: connection settings, the writer thread with group commit, the reader.

Nothing here knows a table: callers hand in functions of a connection.
:class:`Engine` runs them, and only the store package calls it.

How it runs. SQLite calls block, so none of them runs on the event loop:

- One writer thread owns the only write connection. Callers queue work to it;
  each time it is free it takes *everything* queued and writes it in a single
  transaction (group commit), then resolves all the callers' futures. One
  fsync then covers many webhook requests, which is what keeps acknowledgement
  latency low under an alert storm. Each queued job runs inside its own
  savepoint, so one failing job is rolled back alone.
- A second thread owns a read-only connection for queries. WAL lets it read a
  consistent snapshot while the writer commits.
- ``inline`` (the worker process): one connection used on the calling thread.

Durability: ``synchronous=FULL`` syncs the WAL on every commit, so a write is
on disk, not only in the page cache, before its caller hears back. A kill -9
loses nothing acknowledged even with NORMAL; FULL also covers power loss.

The WAL's size. SQLite copies the WAL into the database every 1,000 pages
(4 MB) and then writes it again from its start, but never shrinks the file
below ``journal_size_limit`` (:data:`WAL_SIZE_LIMIT`): under load the WAL
stays at about that size. Once the writer thread has had nothing to do for
:data:`WAL_IDLE_TRUNCATE` seconds it runs ``PRAGMA wal_checkpoint(TRUNCATE)``,
which gives the whole WAL back to the file system. Only when idle: the
checkpoint holds the write lock while it copies, and a reader of the worker
process that is still in an older snapshot makes it give up (it is tried
again at the next idle moment).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from ai_sidecar.store.protocol import StoreClosedError, StoreError
from ai_sidecar.store.sqlite.schema import migrate

T = TypeVar("T")

Synchronous = Literal["FULL", "NORMAL"]

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


Outcome = tuple[_Job, Any, BaseException | None]


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        # The caller may have stopped waiting (cancelled); its write still stands.
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


# Bytes the WAL file is cut back to after a checkpoint (see the module docstring).
WAL_SIZE_LIMIT = 8 * 1024 * 1024
# Seconds without writes after which the writer truncates the WAL.
WAL_IDLE_TRUNCATE = 2.0


def _truncate_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Checkpoint the whole WAL into the database and empty it, if it holds anything."""
    wal = path.with_name(path.name + "-wal")
    with contextlib.suppress(OSError):
        if wal.stat().st_size == 0:
            return
    # Busy (another process writing, or reading an older snapshot) is a result
    # row, not an error: the next idle moment tries again.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _connect(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
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
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        migrate(conn, path)
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


def _commit_group(
    conn: sqlite3.Connection, path: Path, group: list[_Job]
) -> tuple[list[Outcome], bool]:
    """Run ``group`` in one transaction, one savepoint per job.

    Returns each job's outcome, and whether the transaction committed.
    """
    outcomes: list[Outcome] = []
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
        return [(job, None, _store_error(path, exc)) for job in group], False
    return outcomes, True


class _Writer(threading.Thread):
    """The thread that owns the write connection and commits queued jobs in groups."""

    def __init__(self, path: Path, synchronous: Synchronous) -> None:
        super().__init__(name="scout-store-writer", daemon=True)
        self._path = path
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._accepting = True
        self.ready: Future[None] = Future()
        # Transactions committed; only this thread changes it.
        self.commits = 0

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
            conn = _connect(self._path, self._synchronous)
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
                first = self._next_job(conn)
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
                outcomes, committed = _commit_group(conn, self._path, group)
                self.commits += committed
                self._deliver(outcomes)

    def _next_job(self, conn: sqlite3.Connection) -> _Job | None:
        """The next queued item; the WAL is truncated whenever none came for a while."""
        while True:
            try:
                return self._queue.get(timeout=WAL_IDLE_TRUNCATE)
            except queue.Empty:
                _truncate_wal(conn, self._path)

    @staticmethod
    def _deliver(outcomes: list[Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job, result, error in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
        for loop, items in by_loop.items():
            # One wake-up per loop for the whole group, not one per caller.
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(_settle, items)


def _open_reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        conn.close()
        raise
    return conn


class Engine:
    """One SQLite file: queued, group-committed writes and snapshot reads.

    Build it with :meth:`open`.
    """

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
        # Inline: the one connection, for writes too.
        self._reader = reader
        self._inline_commits = 0
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def commits(self) -> int:
        """Write transactions committed so far (a group of jobs counts once)."""
        return self._inline_commits if self._writer is None else self._writer.commits

    @classmethod
    async def open(cls, path: Path, *, synchronous: Synchronous, inline: bool) -> Engine:
        """Open (or create) the file at ``path`` and bring its schema up to date.

        ``inline``: one connection, used on the calling thread, blocking it.
        For the worker process, whose loop serves no requests: its writes
        then never wait for the GIL between statements while holding the
        write lock the webhook needs.
        """
        if inline:
            try:
                conn = _connect(path, synchronous)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open the store {path}: {exc}") from exc
            conn.execute("PRAGMA busy_timeout=0")  # _begin() waits for the write lock
            return cls(path, None, None, conn)
        writer = _Writer(path, synchronous)
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

    def check_open(self) -> None:
        """Raise :class:`StoreClosedError` once :meth:`close` was called."""
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
        self.check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = _Job(fn, loop, future, bulk)
        if self._writer is None:
            [(_, outcome, error)], committed = _commit_group(self._reader, self._path, [job])
            self._inline_commits += committed
            if error is not None:
                raise error
            inline_result: T = outcome
            return inline_result
        self._writer.submit(job)
        result: T = await future
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the reader connection, inside one snapshot of the database."""
        self.check_open()
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
