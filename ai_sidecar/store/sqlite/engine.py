"""The SQLite engine: the writer thread with group commit, quick writes, the reader.

Nothing here knows a table: callers hand in functions of a connection.
:class:`Engine` runs them, and only the store package calls it.

How it runs. SQLite calls block, so almost none of them runs on the event loop:

- One writer thread owns a write connection. Callers queue work to it;
  each time it is free it takes *everything* queued and writes it in a single
  transaction (group commit), then resolves all the callers' futures. Each
  queued job runs inside its own savepoint, so one failing job is rolled back
  alone (:mod:`.transactions`).
- Quick writes (the webhook's inserts) have a write connection of their own
  (:mod:`.quick`): they are group-committed the same way, but their
  statements run on the event loop and only the COMMIT on a thread, which is
  what keeps single-alert requests from queueing up behind GIL hand-overs.
- A third thread owns a read-only connection for queries. WAL lets it read a
  consistent snapshot while the writers commit.
- ``inline`` (the worker process): one connection used on the calling thread.

Durability: ``synchronous=FULL`` syncs the WAL on every commit, so a write is
on disk, not only in the page cache, before its caller hears back. A kill -9
loses nothing acknowledged even with NORMAL; FULL also covers power loss.
The worker process opens its inline engine with NORMAL: what it writes is
derived from stored alerts and is done again if a power cut rolls it back
(``ai_sidecar.components.WORKER_SYNCHRONOUS``).

The WAL's size. SQLite copies the WAL into the database every 1,000 pages
(4 MB), at a COMMIT of the writer thread or the worker process (the quick
writer's connection only past ``quick.QUICK_CHECKPOINT_PAGES``, so the
webhook's commits do not wait for it), and then writes it again from its
start, but never shrinks the file below ``journal_size_limit``
(``transactions.WAL_SIZE_LIMIT``): under load the WAL stays at about that
size. Once the writer thread has had nothing to do for
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
from pathlib import Path
from typing import Any, TypeVar

from ai_sidecar.store.protocol import StoreClosedError, StoreError
from ai_sidecar.store.sqlite.quick import QuickWriter
from ai_sidecar.store.sqlite.transactions import (
    Job,
    Outcome,
    Synchronous,
    abandon,
    begin,
    connect_writer,
    is_storage_failure,
    run_jobs,
    settle,
    store_error,
)

T = TypeVar("T")

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


def _commit_group(
    conn: sqlite3.Connection, path: Path, group: list[Job]
) -> tuple[list[Outcome], bool]:
    """Run ``group`` in one transaction, one savepoint per job.

    Returns each job's outcome, and whether the transaction committed.
    """
    try:
        begin(conn)
        outcomes = run_jobs(conn, path, group)
        conn.execute("COMMIT")
    except Exception as exc:
        return abandon(conn, path, group, exc), False
    return outcomes, True


class _Writer(threading.Thread):
    """The thread that owns the write connection and commits queued jobs in groups."""

    def __init__(self, path: Path, synchronous: Synchronous) -> None:
        super().__init__(name="scout-store-writer", daemon=True)
        self._path = path
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._accepting = True
        self.ready: Future[None] = Future()
        # Transactions committed; only this thread changes it.
        self.commits = 0
        # When the quick writer last committed (monotonic; set once it is open).
        self.quick_commit_at: Callable[[], float] = lambda: 0.0

    def submit(self, job: Job) -> None:
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
            conn = connect_writer(self._path, self._synchronous)
        except BaseException as exc:
            with self._lock:
                self._accepting = False
            self.ready.set_exception(exc)
            return
        self.ready.set_result(None)
        # From here on begin() waits for the write lock itself (see there).
        conn.execute("PRAGMA busy_timeout=0")
        try:
            self._serve(conn)
        finally:
            conn.close()
            with self._lock:
                self._accepting = False
            # Only reached early if the loop itself failed: nobody may wait forever.
            leftovers: list[Job] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._queue.get_nowait()
                    if item is not None:
                        leftovers.append(item)
            if leftovers:
                closed = StoreClosedError(f"the store {self._path} is closed")
                self._deliver([(job, None, closed) for job in leftovers])

    def _serve(self, conn: sqlite3.Connection) -> None:
        held: collections.deque[Job] = collections.deque()  # bulk jobs waiting their turn
        stop = False
        while not (stop and not held):
            group: list[Job] = []
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

    def _next_job(self, conn: sqlite3.Connection) -> Job | None:
        """The next queued item; the WAL is truncated whenever none came for a while.

        The webhook's quick writes commit on a connection of their own, so the
        queue can be empty in the middle of a storm: their last commit must be
        as old as the idle time too, or the checkpoint would hold the write
        lock against them.
        """
        while True:
            try:
                return self._queue.get(timeout=WAL_IDLE_TRUNCATE)
            except queue.Empty:
                if time.monotonic() - self.quick_commit_at() >= WAL_IDLE_TRUNCATE:
                    _truncate_wal(conn, self._path)

    @staticmethod
    def _deliver(outcomes: list[Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job, result, error in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
        for loop, items in by_loop.items():
            # One wake-up per loop for the whole group, not one per caller.
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(settle, items)


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
        quick: QuickWriter | None,
    ) -> None:
        self._path = path
        self._writer = writer
        self._quick = quick
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
        if self._writer is None or self._quick is None:
            return self._inline_commits
        return self._writer.commits + self._quick.commits

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
                conn = connect_writer(path, synchronous)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open the store {path}: {exc}") from exc
            conn.execute("PRAGMA busy_timeout=0")  # begin() waits for the write lock
            return cls(path, None, None, conn, None)
        writer = _Writer(path, synchronous)
        writer.start()
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scout-store-reader")
        try:
            await asyncio.wrap_future(writer.ready)
            reader = await loop.run_in_executor(pool, _open_reader, path)
        except BaseException as exc:
            writer.stop()
            pool.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error | OSError):
                raise StoreError(f"cannot open the store {path}: {exc}") from exc
            raise
        try:
            quick = await QuickWriter.open(path, synchronous)
            writer.quick_commit_at = lambda: quick.last_commit_at
        except BaseException as exc:
            writer.stop()
            pool.submit(reader.close)
            pool.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error | OSError):
                raise StoreError(f"cannot open the store {path}: {exc}") from exc
            raise
        return cls(path, writer, pool, reader, quick)

    async def close(self) -> None:
        """Finish queued writes and reads, then close both connections. Safe to call twice."""
        if self._closing is None:
            self._closed = True
            if self._writer is not None:
                self._writer.stop()
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        if self._writer is None or self._reader_pool is None or self._quick is None:
            self._reader.close()
            return
        loop = asyncio.get_running_loop()
        await self._quick.close()
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
        job = Job(fn, loop, future, bulk)
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

    async def write_quick(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Like :meth:`write`, for a write of a few rows that an HTTP answer waits for.

        ``fn`` runs on the event loop thread, in a transaction shared with the
        other quick writes queued meanwhile; only the COMMIT runs on a thread
        (:mod:`.quick` says why). ``fn`` holds up the loop while it runs: a
        write of many rows belongs in :meth:`write`.
        """
        self.check_open()
        if self._quick is None:
            return await self.write(fn)
        return await self._quick.write(fn)

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
            if is_storage_failure(exc):
                raise store_error(self._path, exc) from exc
            raise
