"""Transactions on a write connection: opening it, taking the write lock, running jobs.

Shared by the engine's writer thread (:mod:`.engine`) and the quick writer
(:mod:`.quick`): both take a group of queued jobs, begin one transaction,
run each job in its own savepoint and commit once (group commit), then
answer every caller of the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ai_sidecar.store.protocol import StoreError
from ai_sidecar.store.sqlite.schema import migrate

log = logging.getLogger(__name__)

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


def is_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage failed (disk full, I/O, locked), not the query."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        # Raised by the sqlite3 module itself (for example a closed connection).
        return isinstance(exc, sqlite3.OperationalError)
    return (code & 0xFF) in _STORAGE_FAILURES


def store_error(path: Path, exc: BaseException) -> StoreError:
    """A fresh StoreError for one caller, naming the file, caused by ``exc``."""
    if isinstance(exc, StoreError):
        error = type(exc)(*exc.args)
    else:
        error = StoreError(f"cannot use the store {path}: {exc}")
    error.__cause__ = exc
    return error


@dataclass(frozen=True, slots=True)
class Job:
    """One caller's unit of work for a writer, and where its answer goes."""

    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    # Bulk work (the worker's incident saves) goes into a transaction one job at
    # a time, so acknowledgements never wait behind a whole storm's saves.
    bulk: bool = False


Outcome = tuple[Job, Any, BaseException | None]


def settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Give each waiting caller its result or exception (on the caller's loop)."""
    for future, result, error in outcomes:
        # The caller may have stopped waiting (cancelled); its write still stands.
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


# The store holds console password hashes, session tokens and alert text: its
# directory and files are for the sidecar's user alone. SQLite creates the WAL
# and shared-memory files with the main file's permissions.
PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600


def keep_private(path: Path) -> None:
    """Create the store's directory and file readable by their owner only, and
    take group and other permissions off an existing file (earlier releases
    made it 0644)."""
    path.parent.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    # Only a missing file is opened here: closing any descriptor of an open
    # database file drops every POSIX lock this process holds on it, the
    # locks of SQLite's other connections included.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        pass
    except OSError:
        return  # sqlite3.connect names the problem better
    for existing in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = existing.stat().st_mode
            if mode & 0o077:
                existing.chmod(mode & 0o700)
                log.warning(
                    "the store file could be read by other users; made it private",
                    extra={"path": str(existing)},
                )
        except FileNotFoundError:
            continue
        except PermissionError:
            log.warning(
                "the store file can be read by other users and is not ours to change: chmod 600 it",
                extra={"path": str(existing)},
            )


# Bytes the WAL file is cut back to after a checkpoint (the engine's docstring says why).
WAL_SIZE_LIMIT = 8 * 1024 * 1024


def connect_writer(
    path: Path, synchronous: Synchronous, *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open a write connection, switch the file to WAL and bring the schema up to date."""
    keep_private(path)
    # isolation_level=None: the writer issues BEGIN/COMMIT itself.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
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


def try_begin(conn: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE if the write lock is free now; False, and nothing begun, if it is not."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return False
        raise
    return True


def begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, retried briefly while another connection holds the write lock.

    SQLite's own busy handler sleeps ever longer (up to 100 ms a try), which
    would add that much to a webhook acknowledgement whenever the worker
    process writes; the other side's transactions last milliseconds, so
    looking again every millisecond or two is what keeps the wait short.
    """
    deadline = time.monotonic() + WRITE_LOCK_TIMEOUT
    attempt = 0
    while not try_begin(conn):
        if time.monotonic() >= deadline:
            # Raises SQLite's own "database is locked", unless the lock came free just now.
            conn.execute("BEGIN IMMEDIATE")
            return
        time.sleep(_WRITE_LOCK_POLL[min(attempt, len(_WRITE_LOCK_POLL) - 1)])
        attempt += 1


def run_jobs(conn: sqlite3.Connection, path: Path, group: Sequence[Job]) -> list[Outcome]:
    """Run each job's ``fn`` in the open transaction, one savepoint per job.

    A job that raises is rolled back alone and its exception is its outcome; a
    failure of the storage itself is raised, for the caller to abandon the group.
    """
    outcomes: list[Outcome] = []
    for job in group:
        conn.execute("SAVEPOINT job")
        try:
            result = job.fn(conn)
        except Exception as exc:
            if is_storage_failure(exc) or not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            outcomes.append((job, None, exc))
            continue
        if not conn.in_transaction:
            raise StoreError(f"a write function ended the transaction on {path}")
        conn.execute("RELEASE job")
        outcomes.append((job, result, None))
    return outcomes


def abandon(
    conn: sqlite3.Connection, path: Path, group: Sequence[Job], exc: BaseException
) -> list[Outcome]:
    """Roll back the open transaction; every job of ``group`` fails with a StoreError."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
    # One exception object per caller: each await re-raises and extends its traceback.
    return [(job, None, store_error(path, exc)) for job in group]
