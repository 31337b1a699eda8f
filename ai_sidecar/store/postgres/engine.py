"""The PostgreSQL engine: where the server is, a few pooled connections, group-committed ingest.

Nothing here knows a table: callers hand in coroutine functions of a cursor.
:class:`Engine` runs each inside a transaction and maps the failures of the
server (down, restarting, disk full, connection lost) to
:class:`~ai_sidecar.store.protocol.StoreError`, so the webhook answers 503
while PostgreSQL is away and 200 again once it is back: a broken connection
is dropped, together with every idle one (after a restart they are all dead),
and the next call connects afresh. No process restart is needed.

How it runs:

- Up to :data:`POOL_SIZE` connections, opened on demand and reused. Reads
  run side by side; other writes take turns (one at a time per process, as
  the SQLite store's single writer does), and one the server rolls back for a
  deadlock with another process's transaction is run again.
- Alert ingests queue to one writer task, which takes everything queued and
  writes it in one transaction (group commit, as the SQLite engine does),
  with ``synchronous_commit`` on whatever the server's default: the webhook
  acknowledges an alert only once it is durable. A request costs one round
  trip (its insert) on top of the group's three (``BEGIN``, the setting and
  the lock in one statement, ``COMMIT``). Only when a request fails is the
  group written again, each request then in a savepoint of its own, so the bad
  one fails alone: savepoints on every request would cost two round trips more
  each.
  That transaction first takes a transaction-scoped advisory lock
  (:data:`INGEST_LOCK`): ``seq`` comes from a sequence, handed out at insert
  time, so without the lock a transaction holding seq 10 could commit after
  one holding seq 11, the worker could fold 11 and move its cursor past 10,
  and 10 would never be processed. With it, seq order is commit order across
  every replica writing the database.
- ``fence`` (the worker process of a replica): each transaction first proves,
  in the database, that this replica's term of the worker lease is the
  current one (:mod:`ai_sidecar.store.postgres.lease`), and raises
  :class:`LeaseLostError` otherwise. A write transaction holds that proof
  until it ends, so a new holder starts only after it: a replica that lost
  its lease can neither move the cursor, write incidents, nor read or
  complete the outbox once another one leads.

The password never appears in a message: errors name the server by
:attr:`Location.name` (host, port and database only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from ai_sidecar.store.protocol import StoreClosedError, StoreError

log = logging.getLogger("ai_sidecar.store.postgres")

T = TypeVar("T")
Cursor = AsyncCursor[tuple[Any, ...]]

POOL_SIZE = 4
# Runs of a write transaction the server rolled back for a deadlock or a
# serialisation failure, before the caller hears a StoreError.
TRANSIENT_RETRIES = 3
# A server that does not answer within these is treated as down: the webhook
# answers 503 rather than holding Alertmanager's request.
CONNECT_TIMEOUT = 5
OPERATION_TIMEOUT = 10.0
# Keys of the advisory locks Scout takes (pg_advisory_*(int4, int4)): the first
# number marks them as Scout's, the second says which lock.
LOCK_CLASS = 0x5C0_7
INGEST_LOCK = 1
MIGRATION_LOCK = 2
# TCP keepalives, unless the DSN sets its own: a connection to a host that
# vanished (partition, power cut) fails in seconds instead of hanging.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
}


# The server's side of every session, before what the DSN's own options say:
# a replica whose host vanishes mid-transaction (power cut, partition: no TCP
# reset reaches the server) must not hold the ingest lock and row locks for
# the kernel's two hours of keepalives, or every other replica answers 503.
# The server gives up on a silent client after SERVER_GIVE_UP seconds of TCP
# keepalives (the worker lease counts on that figure too).
SERVER_KEEPALIVE_IDLE, SERVER_KEEPALIVE_INTERVAL, SERVER_KEEPALIVE_COUNT = 5, 1, 3
SERVER_GIVE_UP = SERVER_KEEPALIVE_IDLE + SERVER_KEEPALIVE_INTERVAL * SERVER_KEEPALIVE_COUNT
SERVER_OPTIONS = (
    "-c idle_in_transaction_session_timeout=15s"
    f" -c tcp_keepalives_idle={SERVER_KEEPALIVE_IDLE}"
    f" -c tcp_keepalives_interval={SERVER_KEEPALIVE_INTERVAL}"
    f" -c tcp_keepalives_count={SERVER_KEEPALIVE_COUNT}"
    f" -c tcp_user_timeout={SERVER_GIVE_UP * 1000}"
)


class _RequestFailed(Exception):
    """A request of a group failed, not the storage: the group is written again, isolated."""


class _Transient(Exception):
    """A transaction the server rolled back for a conflict; running it again may succeed."""


class LeaseLostError(StoreError):
    """This replica no longer holds the worker lease; its worker must stop."""


@dataclass(frozen=True, slots=True, repr=False)
class Location:
    """Where the database is: a libpq DSN without a password, and the password apart."""

    dsn: str
    password: str | None = None

    def __repr__(self) -> str:
        # The name only: a DSN built by hand may hold a secret.
        try:
            return f"Location({self.name!r})"
        except psycopg.ProgrammingError:  # not a DSN at all
            return "Location(<invalid DSN>)"

    @property
    def name(self) -> str:
        """``postgresql://host:port/database`` (or ``?host=`` a socket directory), for
        messages: never the password."""
        params = conninfo_to_dict(self.dsn)
        host = str(params.get("host") or "localhost")
        port = str(params.get("port") or "5432")
        database = str(params.get("dbname") or params.get("user") or "")
        if host.startswith("/"):  # a Unix socket's directory
            return f"postgresql:///{database}?host={host}&port={port}"
        return f"postgresql://{host}:{port}/{database}"

    async def connect(self, *, application_name: str = "scout-sidecar") -> AsyncConnection[Any]:
        """A new autocommit connection; failures raise :class:`StoreError`."""
        params: dict[str, Any] = {**KEEPALIVES, **conninfo_to_dict(self.dsn)}
        if self.password is not None:
            params["password"] = self.password
        params["options"] = f"{SERVER_OPTIONS} {params.get('options') or ''}".strip()
        params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        params.setdefault("application_name", application_name)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT + 1):
                return await AsyncConnection.connect(autocommit=True, **params)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreError(f"cannot connect to {self.name}: {failure_reason(exc)}") from None


def failure_reason(exc: BaseException) -> str:
    """What went wrong, in one line, without anything from the DSN but the host."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    # libpq's first line says what failed; the ones after it are hints.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# SQLSTATEs that say "try again later", whatever exception class psycopg maps
# them to: connection exceptions (08), insufficient resources (53: disk full,
# out of memory, too many connections), a server shutting down, crashed or
# starting (57P0x), a read-only transaction (25006: a standby, as after a
# failover before the DSN points at the new primary), and transaction
# rollbacks for a serialisation failure or deadlock (40001, 40P01).
_RETRY_LATER_CLASSES = ("08", "53", "57P0")
_RETRY_LATER_STATES = frozenset({"25006", "40001", "40P01"})


def is_storage_failure(exc: BaseException) -> bool:
    """True when the server or the connection failed, not the statement."""
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)):
        return True
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    return state is not None and (
        state in _RETRY_LATER_STATES or state.startswith(_RETRY_LATER_CLASSES)
    )


class Fence(Protocol):
    """Proves, inside a transaction, that this replica still holds the worker lease."""

    async def check(self, cursor: Cursor, *, hold: bool) -> None:
        """Raise :class:`LeaseLostError` unless this replica's term is the current one.

        ``hold``: keep the proof until the transaction ends, so no new term can
        begin before it has committed (write transactions).
        """
        ...


@dataclass(slots=True)
class _Ingest:
    """One caller's queued write for the group-commit writer, and where its answer goes."""

    fn: Callable[[Cursor], Awaitable[Any]]
    future: asyncio.Future[Any]


class Engine:
    """One PostgreSQL database: pooled transactions and group-committed ingests.

    Build it with :meth:`open`.
    """

    def __init__(self, location: Location, fence: Fence | None) -> None:
        self._location = location
        self._fence = fence
        self._idle: list[AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(POOL_SIZE)
        self._write_turn = asyncio.Lock()
        self._queue: asyncio.Queue[_Ingest | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._running = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        # Group-commit transactions committed (for tests and benchmarks).
        self.commits = 0

    @classmethod
    async def open(
        cls,
        location: Location,
        *,
        fence: Fence | None = None,
        migrate: Callable[[Cursor, str], Awaitable[None]] | None = None,
    ) -> Engine:
        """Connect once (failing now if the server is unreachable) and run ``migrate``."""
        engine = cls(location, fence)
        try:
            if migrate is not None:
                await engine.transaction(lambda cur: migrate(cur, location.name), fenced=False)
            else:
                await engine.transaction(_ping, fenced=False)
        except BaseException:
            await engine._close_connections()
            raise
        engine._writer = asyncio.create_task(engine._write_groups(), name="scout-pg-writer")
        return engine

    @property
    def name(self) -> str:
        return self._location.name

    def check_open(self) -> None:
        """Raise :class:`StoreClosedError` once :meth:`close` was called."""
        if self._closed:
            raise StoreClosedError(f"the store {self.name} is closed")

    # --- connections ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._location.connect()
            try:
                yield conn
            except BaseException as exc:
                await self._discard(conn)
                if is_storage_failure(exc):
                    # The server went away or restarted: the idle ones are dead too.
                    await self._drop_idle()
                raise
            if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                await self._discard(conn)
            else:
                self._idle.append(conn)

    @staticmethod
    async def _discard(conn: AsyncConnection[Any]) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await conn.close()

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)

    async def _close_connections(self) -> None:
        await self._drop_idle()

    # --- transactions -------------------------------------------------------------

    async def transaction(
        self,
        fn: Callable[[Cursor], Awaitable[T]],
        *,
        fenced: bool = True,
        read_only: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction and commit it; the change is durable on return.

        ``read_only``: one consistent snapshot (REPEATABLE READ), as the SQLite
        reader gives. Storage failures raise :class:`StoreError`.
        """
        self.check_open()
        self._enter()
        try:
            if read_only:
                return await self._retrying(fn, fenced=fenced, read_only=True)
            # One write transaction at a time per engine, as SQLite's single
            # writer: the worker saves incidents and schedules copies while the
            # return trip completes posts, and rows locked in different orders
            # by concurrent transactions would deadlock.
            async with self._write_turn:
                return await self._retrying(fn, fenced=fenced, read_only=False)
        finally:
            self._leave()

    async def _retrying(
        self, fn: Callable[[Cursor], Awaitable[T]], *, fenced: bool, read_only: bool
    ) -> T:
        """:meth:`_run`, again after a deadlock or serialisation failure with
        another process's transaction (rolled back whole, so safe to repeat)."""
        for _ in range(TRANSIENT_RETRIES):
            try:
                return await self._run(fn, fenced=fenced, read_only=read_only)
            except _Transient:
                continue
        raise StoreError(
            f"cannot use the store {self.name}: a transaction kept conflicting with another"
        )

    def _enter(self) -> None:
        self._running += 1
        self._drained.clear()

    def _leave(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._drained.set()

    async def _run(
        self, fn: Callable[[Cursor], Awaitable[T]], *, fenced: bool, read_only: bool
    ) -> T:
        try:
            async with self._connection() as conn:
                async with asyncio.timeout(OPERATION_TIMEOUT):
                    return await self._in_transaction(conn, fn, fenced=fenced, read_only=read_only)
        except StoreError:
            raise
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            raise _Transient from None
        except Exception as exc:
            if is_storage_failure(exc):
                raise StoreError(
                    f"cannot use the store {self.name}: {failure_reason(exc)}"
                ) from None
            raise

    async def _in_transaction(
        self,
        conn: AsyncConnection[Any],
        fn: Callable[[Cursor], Awaitable[T]],
        *,
        fenced: bool,
        read_only: bool,
    ) -> T:
        async with conn.transaction(), conn.cursor() as cur:
            if read_only:
                await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if fenced and self._fence is not None:
                await self._fence.check(cur, hold=not read_only)
            return await fn(cur)

    # --- group-committed ingests ------------------------------------------------------

    async def ingest(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        """Queue ``fn`` for the writer task; it shares a transaction (under the
        ingest lock) with whatever else is queued. Returns once committed."""
        self.check_open()
        self._enter()
        try:
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(_Ingest(fn, future))
            # Shielded: a caller that stops waiting leaves its write standing.
            return await asyncio.shield(future)
        finally:
            self._leave()

    async def _write_groups(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                return
            group = [first]
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                group.append(item)
            await self._commit_group(group)

    async def _commit_group(self, group: list[_Ingest]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        isolated = False

        async def write(cur: Cursor) -> None:
            outcomes.clear()  # from an attempt rolled back for a conflict
            # The webhook acknowledges once this commits: durable whatever the
            # server's (or the database's, or the role's) default says; the
            # setting and the lock in one statement, one round trip.
            await cur.execute(
                "SELECT set_config('synchronous_commit', 'on', true),"
                " pg_advisory_xact_lock(%s, %s)",
                (LOCK_CLASS, INGEST_LOCK),
            )
            for job in group:
                if not isolated:
                    try:
                        outcomes.append((await job.fn(cur), None))
                    except Exception as exc:
                        if is_storage_failure(exc):
                            raise
                        raise _RequestFailed from exc
                    continue
                try:
                    # A savepoint per job: a bad one fails alone.
                    async with cur.connection.transaction():
                        outcomes.append((await job.fn(cur), None))
                except Exception as exc:
                    if is_storage_failure(exc):
                        raise
                    outcomes.append((None, exc))

        try:
            try:
                await self._retrying(write, fenced=False, read_only=False)
            except _RequestFailed:
                # Rolled back whole; again, each request on its own savepoint.
                isolated = True
                await self._retrying(write, fenced=False, read_only=False)
        except BaseException as exc:
            error = (
                exc
                if isinstance(exc, StoreError)
                else StoreError(f"cannot use the store {self.name}: {exc!r}")
            )
            for job in group:
                if not job.future.done():
                    # One exception object per caller: each await extends its traceback.
                    job.future.set_exception(type(error)(*error.args))
            if not isinstance(exc, Exception):
                raise
            return
        self.commits += 1
        for job, (result, failure) in zip(group, outcomes, strict=True):
            if job.future.done():
                continue
            if failure is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(failure)

    # --- closing ----------------------------------------------------------------------

    async def close(self) -> None:
        """Finish what is queued or running, then close every connection. Safe to call twice."""
        if self._closing is None:
            self._closed = True
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        await self._drained.wait()
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
        await self._close_connections()


async def _ping(cur: Cursor) -> None:
    await cur.execute("SELECT 1")
