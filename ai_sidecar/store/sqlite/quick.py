"""Quick writes (the webhook's inserts): run on the event loop, committed together on a thread.

Why not the writer thread (:mod:`.engine`): the sqlite3 module lets go of the
GIL around every statement step, and a thread that wants it back while the
event loop is busy waits up to the switch interval. With one alert per
request, the writer thread's three statements per request (savepoint,
insert, release) each waited that long, and acknowledgements queued up
behind those waits: the webhook topped out well below one core's worth of
requests. Here the statements run on the loop, so nobody waits for the GIL
between them, and only the COMMIT, whose fsync is the slow part, runs on a
thread: one hand-over per group instead of three per request.

How it runs:

- A write is queued; if no group is in flight, one starts at the next turn of
  the loop with everything queued by then. While a group commits, new writes
  queue up and become the next group (group commit: one fsync for all).
- ``BEGIN IMMEDIATE`` is tried on the loop. If another connection holds the
  write lock (the worker process, the engine's writer thread), the wait for
  it happens on the thread, polling as :func:`.engine.begin` does.
- Each write runs in its own savepoint, as on the writer thread, so one that
  raises is rolled back alone. Writes must be small (a few rows): they hold
  up the loop while they run. Big ones belong on the writer thread.
- ``COMMIT`` (with ``synchronous=FULL``, the WAL's fsync) runs on the
  thread; only then is every caller of the group answered. A storage failure
  rolls the whole group back and every caller gets a StoreError.
- Checkpoints (copying the WAL into the database) are left to the other
  connections (:data:`QUICK_CHECKPOINT_PAGES`), so an acknowledgement does
  not wait for one.

The connection is this module's own, used by the loop and the thread in turn,
never both at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ai_sidecar.store.protocol import StoreClosedError
from ai_sidecar.store.sqlite.transactions import (
    Job,
    Outcome,
    Synchronous,
    abandon,
    begin,
    connect_writer,
    run_jobs,
    settle,
    try_begin,
)

T = TypeVar("T")

# The WAL size (pages) at which a COMMIT here also checkpoints. SQLite's
# default, 1,000, is what the other connections (the writer thread, the
# worker process) keep, and they checkpoint in step with the storm; here a
# checkpoint copies up to 4 MB into the database and fsyncs it inside a
# COMMIT that a group of acknowledgements waits for. Ten times as much: this
# connection checkpoints only if nobody else has for that long.
QUICK_CHECKPOINT_PAGES = 10_000


class QuickWriter:
    """Group-committed small writes on their own connection. Build it with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, thread: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._path = path
        self._thread = thread
        self._queue: list[Job] = []
        # The task committing groups; None while idle.
        self._committer: asyncio.Task[None] | None = None
        self._closed = False
        # Transactions committed so far.
        self.commits = 0
        # Read by the writer thread: no WAL truncation right after a commit here.
        self.last_commit_at = 0.0

    @classmethod
    async def open(cls, path: Path, synchronous: Synchronous) -> QuickWriter:
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scout-store-commit")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(
                thread,
                lambda: connect_writer(path, synchronous, check_same_thread=False),
            )
        except BaseException:
            thread.shutdown(wait=False)
            raise
        # begin() waits for the write lock itself; on the loop it must not wait at all.
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute(f"PRAGMA wal_autocheckpoint={QUICK_CHECKPOINT_PAGES}")
        return cls(conn, path, thread)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the loop in the next group; its change is committed when this returns."""
        if self._closed:
            raise StoreClosedError(f"the store {self._path} is closed")
        loop = asyncio.get_running_loop()
        job = Job(fn, loop, loop.create_future())
        self._queue.append(job)
        if self._committer is None:
            self._committer = loop.create_task(self._commit_queued())
        result: T = await job.future
        return result

    async def _commit_queued(self) -> None:
        group: list[Job] = []
        try:
            while self._queue:
                group, self._queue = self._queue, []
                outcomes = await self._commit(group)
                settle([(job.future, result, error) for job, result, error in outcomes])
        finally:
            self._committer = None
            # Only if this task itself was cancelled (the loop is being torn
            # down): nobody may wait for ever. Settled futures are skipped.
            closed = StoreClosedError(f"the store {self._path} is closed")
            settle([(job.future, None, closed) for job in (*group, *self._queue)])

    async def _commit(self, group: list[Job]) -> list[Outcome]:
        conn = self._conn
        loop = asyncio.get_running_loop()
        try:
            if not try_begin(conn):
                await loop.run_in_executor(self._thread, begin, conn)
            outcomes = run_jobs(conn, self._path, group)
            # commit() steps COMMIT having let go of the GIL once, for the whole fsync.
            await loop.run_in_executor(self._thread, conn.commit)
        except Exception as exc:
            return abandon(conn, self._path, group, exc)
        self.commits += 1
        self.last_commit_at = time.monotonic()
        return outcomes

    async def close(self) -> None:
        """Refuse new writes, commit the queued ones, then close the connection.

        Called once, by :meth:`.engine.Engine.close`.
        """
        self._closed = True
        if self._committer is not None:
            await asyncio.shield(self._committer)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._conn.close)
        await asyncio.to_thread(self._thread.shutdown, True)
