"""The worker lease: which of several replicas runs the worker and the return trip.

Every replica stores what its webhook receives; exactly one at a time folds
alerts into incidents and posts enriched copies. The lease is a PostgreSQL
*session* advisory lock, taken with ``pg_try_advisory_lock`` on a connection
of its own. Why a lock and not a lease row with an expiry:

- the server releases it the moment the holder's session ends, so a replica
  that is killed (kill -9, OOM, a crashed host whose TCP connection resets)
  is replaced within one retry interval (:data:`RETRY_INTERVAL`), with no
  expiry to wait out and no clocks to agree on;
- nothing has to be renewed: no write per second, no renewal that a busy
  event loop could miss.

A replica that loses the lease must stop before another can start. The
holder checks its lock connection every :data:`CHECK_INTERVAL` (an answer
within :data:`CHECK_TIMEOUT`), and stops its worker at the first failure:
within 3 s of losing the connection. The server releases the lock of a
silent client only after its TCP keepalives give up (5 s idle plus 3 probes a
second apart, set on the lock's session), or after the session sat idle for
:data:`IDLE_SESSION_TIMEOUT` (a stopped holder's kernel still answers
keepalives), so the old holder has stopped before a new one can begin.

And in case a replica is paused (SIGSTOP, a VM freeze) past all that, the
lease is also a fence with a fencing token: the ``epoch`` of the one-row
``lease`` table. Each new holder raises it as it takes the lock
(``UPDATE ... RETURNING epoch``), and every transaction of the worker's store
first reads its holder's epoch back (:meth:`Lease.check`); a write
transaction reads it ``FOR SHARE`` and so holds the row until it ends. The
new holder's update waits for those transactions to finish, and every later
one of the old holder finds a newer epoch and raises
:class:`~ai_sidecar.store.postgres.engine.LeaseLostError`: whatever a stale
holder writes is committed before the new term begins, never after it.
Posts to Alertmanager are outside the database, so they are bounded, not
fenced: the return trip posts only while :meth:`Lease.remaining` leaves time
(counted from when the last confirmed check was sent) and gives each post at
most that long. A holder frozen in the middle of a post can still land it
after a new term began; the window makes that rare, it cannot rule it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
from psycopg import AsyncConnection

from ai_sidecar.store.postgres.engine import (
    LOCK_CLASS,
    SERVER_GIVE_UP,
    Cursor,
    LeaseLostError,
    Location,
    failure_reason,
    is_storage_failure,
)
from ai_sidecar.store.postgres.schema import migrate
from ai_sidecar.store.protocol import StoreError

log = logging.getLogger("ai_sidecar.store.postgres.lease")

WORKER_LOCK = 3
RETRY_INTERVAL = 1.0
CHECK_INTERVAL = 1.0
CHECK_TIMEOUT = 2.0
# A term that ends sooner than this (the store cannot open, the worker fails
# as it starts) is followed by a pause that doubles each time, up to
# BACKOFF_MAX, instead of a new term (and its log lines) every second.
SHORT_TERM = 10.0
BACKOFF_MAX = 30.0
# How long a new holder waits for the old holder's transactions to end before
# raising the epoch: past the server's idle-in-transaction timeout (15 s).
TAKEOVER_TIMEOUT = 20.0
# Seconds the server lets the lock's session sit idle before ending it
# (PostgreSQL 14+). A stopped holder (SIGSTOP, a frozen VM) is never silent
# on TCP (its kernel answers keepalives), so this is what ends its session.
# A live holder checks its lock every CHECK_INTERVAL, far more often.
IDLE_SESSION_TIMEOUT = 5.0
# Posts to Alertmanager cannot be fenced in the database: the holder posts
# only while the last confirmed check was sent this recently, a margin before
# the server could give the lock to another replica (the idle timeout runs
# from when the check's answer left the server, later than it was sent).
POST_WINDOW = min(IDLE_SESSION_TIMEOUT, SERVER_GIVE_UP) - 1.0


def _idle_session_timeout() -> str:
    # Read at connect time, not import time: tests shorten it.
    return f"SET idle_session_timeout = {round(IDLE_SESSION_TIMEOUT * 1000)}"


class Lease:
    """The worker lease on one database, held on a connection of its own."""

    def __init__(self, location: Location) -> None:
        self._location = location
        self._conn: AsyncConnection[Any] | None = None
        # The backend process holding the lock (for tests and messages).
        self._pid: int | None = None
        # This term's fencing token: the epoch it raised the lease row to.
        self._epoch: int | None = None
        # When (time.monotonic()) the last request the lock's connection
        # answered was sent: the server's clocks run from what it received.
        self._confirmed_at = float("-inf")
        # Whether the last attempt reached the database (None: none yet), so
        # each change is logged once, not every retry.
        self._reachable: bool | None = None

    @property
    def held(self) -> bool:
        return self._epoch is not None

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this replica holds it now."""
        if self._epoch is not None:
            return True
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await self._location.connect(application_name="scout-sidecar-lease")
                # Keepalives come with every connection's options (engine.SERVER_OPTIONS).
                await self._conn.execute(_idle_session_timeout())
            # Before the request: the server's clocks run from what it last received.
            sent = time.monotonic()
            async with asyncio.timeout(CHECK_TIMEOUT):
                cur = await self._conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s), pg_backend_pid()",
                    (LOCK_CLASS, WORKER_LOCK),
                )
            row = await cur.fetchone()
            self._reached()
            if row is None or not row[0]:
                return False
            self._pid = int(row[1])
            async with asyncio.timeout(TAKEOVER_TIMEOUT):
                self._epoch = await _new_term(self._conn, self._location.name)
            self._confirmed_at = sent
        except (StoreError, psycopg.Error, OSError, TimeoutError) as exc:
            self._failed(exc)
            await self.release()
            return False
        return True

    def _reached(self) -> None:
        if self._reachable is False:
            log.info("the worker lease's database answers again", extra={"store": self._name})
        self._reachable = True

    def _failed(self, exc: BaseException) -> None:
        if self._reachable is not False:
            log.warning(
                "cannot take the worker lease; retrying",
                extra={
                    "store": self._name,
                    "reason": str(exc) if isinstance(exc, StoreError) else failure_reason(exc),
                },
            )
        self._reachable = False

    @property
    def _name(self) -> str:
        return self._location.name

    async def alive(self) -> bool:
        """Whether the lock's connection still answers (and so still holds the lock)."""
        if self._conn is None or self._pid is None:
            return False
        # No timeout around the query: cancelling a psycopg query first asks the
        # server to cancel it, which against a silent host takes longer than the
        # server takes to hand the lock on. A check that does not answer in time is a lost lease
        # at once; the query is left to fail in the background.
        sent = time.monotonic()
        probe = asyncio.ensure_future(self._conn.execute("SELECT 1"))
        done, _ = await asyncio.wait({probe}, timeout=CHECK_TIMEOUT)
        if not done:
            probe.add_done_callback(_forget_outcome)
            probe.cancel()
            return False
        if probe.exception() is not None:
            return False
        self._confirmed_at = sent
        return True

    def remaining(self) -> float:
        """Seconds left before another replica could hold the lease (0: none),
        counted from the last confirmed check (:data:`POST_WINDOW`): posts to
        Alertmanager, which the database cannot fence, ask this first and end
        within it."""
        if self._epoch is None:
            return 0.0
        return max(0.0, POST_WINDOW - (time.monotonic() - self._confirmed_at))

    def may_post(self) -> bool:
        """Whether any of that window is left."""
        return self.remaining() > 0

    async def release(self) -> None:
        """Give the lease up (closing its connection releases the lock)."""
        conn, self._conn, held = self._conn, None, self._pid is not None
        self._pid = self._epoch = None
        if conn is None:
            return
        if held:
            # Unlocked before closing: the server ends a closed session a little
            # later, and the next holder need not wait for that.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await conn.execute(
                        "SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, WORKER_LOCK)
                    )
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await conn.close()

    async def check(self, cur: Cursor, *, hold: bool) -> None:
        """The fence: raise :class:`LeaseLostError` unless this term's epoch is
        the lease row's, as the database sees it. ``hold``: lock the row
        (FOR SHARE) until the transaction ends, so no new term begins before
        this transaction has committed."""
        epoch = self._epoch
        if epoch is None:
            raise LeaseLostError("this replica does not hold the worker lease")
        lock = " FOR SHARE" if hold else ""
        await cur.execute(f"SELECT 1 FROM lease WHERE id = 0 AND epoch = %s{lock}", (epoch,))
        if await cur.fetchone() is None:
            raise LeaseLostError("this replica lost the worker lease")


async def _new_term(conn: AsyncConnection[Any], name: str) -> int:
    """Raise the lease's epoch (waiting for the last term's fenced transactions
    to end) and return it; brings the schema up to date first on a new database."""
    try:
        return await _raise_epoch(conn)
    except psycopg.errors.UndefinedTable:
        async with conn.transaction(), conn.cursor() as migrating:
            await migrate(migrating, name)
        return await _raise_epoch(conn)


async def _raise_epoch(conn: AsyncConnection[Any]) -> int:
    # A lease row deleted by hand is put back: without it no replica could
    # ever begin a term. It restarts at the server's clock in milliseconds,
    # far above any count of terms, so no epoch a paused holder still carries
    # comes round again.
    await conn.execute(
        "INSERT INTO lease (id, epoch)"
        " VALUES (0, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
        " ON CONFLICT DO NOTHING"
    )
    cur = await conn.execute("UPDATE lease SET epoch = epoch + 1 WHERE id = 0 RETURNING epoch")
    row = await cur.fetchone()
    if row is None:
        raise StoreError("the lease row is missing")
    return int(row[0])


def _forget_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned check's outcome, so asyncio does not report it."""
    if not task.cancelled():
        task.exception()


async def lead(
    lease: Lease,
    work: Callable[[], Coroutine[Any, Any, None]],
    on_change: Callable[[bool], None],
) -> None:
    """Run ``work`` whenever ``lease`` is held, and only then; runs until cancelled.

    ``work`` is cancelled as soon as the lease is lost, or restarted (after
    retaking the lease) if it ends: after :data:`RETRY_INTERVAL`, or, when
    terms keep ending within :data:`SHORT_TERM`, after a pause doubling up
    to :data:`BACKOFF_MAX`. ``on_change`` hears every change of
    leadership, once.
    """
    pause = RETRY_INTERVAL
    try:
        while True:
            if not await lease.acquire():
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            on_change(True)
            began = time.monotonic()
            task = asyncio.create_task(work())
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=CHECK_INTERVAL)
                    if not task.done() and not await lease.alive():
                        break
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await _finished(task)
                await lease.release()
                on_change(False)
            if time.monotonic() - began >= SHORT_TERM:
                pause = RETRY_INTERVAL
            await asyncio.sleep(pause)
            pause = min(pause * 2, BACKOFF_MAX)
    finally:
        await lease.release()


async def _finished(task: asyncio.Task[None]) -> None:
    """Wait for ``task``; how it failed is logged, not raised (leadership goes on)."""
    try:
        await task
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the pipeline's boundary: log once, then try to lead again
        if is_storage_failure(exc) or isinstance(exc, StoreError):
            log.warning("the worker stopped: the store failed", extra={"reason": str(exc)})
        else:
            log.exception("the worker stopped with an error")
