"""The SQLite store: :class:`~ai_sidecar.store.protocol.Store` over one file in WAL mode.

Each verb runs the SQL of :mod:`~ai_sidecar.store.sqlite.incidents` or
:mod:`~ai_sidecar.store.sqlite.outbox` through the
:class:`~ai_sidecar.store.sqlite.engine.Engine`: reads on the reader
connection, writes group-committed by the writer thread. Background writes
(incident saves, outbox scheduling, retention) are ``bulk``: each gets a
transaction of its own and never delays a webhook acknowledgement by more
than one such short transaction.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ai_sidecar.enrichment.llm.base import LlmExchange
from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.models import Alert, Incident, IncidentStatus, ReceivedAlert
from ai_sidecar.store import accounts, exchanges, listing
from ai_sidecar.store import actions as action_sql
from ai_sidecar.store import digests as digest_sql
from ai_sidecar.store.protocol import (
    Backlog,
    ConsoleAccount,
    ConsoleSession,
    Feedback,
    IncidentAction,
    IncidentPage,
    IncidentQuery,
    IngestResult,
    LlmUsage,
    OutboxPlan,
    OutboxRow,
    PruneResult,
)
from ai_sidecar.store.retention import prune_in_batches, prune_rows_in_batches
from ai_sidecar.store.sqlite import incidents as sql
from ai_sidecar.store.sqlite import outbox
from ai_sidecar.store.sqlite.engine import Engine
from ai_sidecar.store.sqlite.transactions import Synchronous

# Alerts one webhook request may insert on the event loop (a quick write, see
# Engine.write_quick); a bigger payload is inserted on the writer thread. An
# insert costs about 10 microseconds, so this bounds the loop's stall.
QUICK_ROWS = 100


class SqliteStore:
    """The sidecar's embedded store. Build it with :meth:`open`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The members last committed per incident, to write only changed ones.
        self._saved_members: sql.SavedMembers = {}

    @classmethod
    async def open(
        cls, path: Path, *, synchronous: Synchronous = "FULL", inline: bool = False
    ) -> SqliteStore:
        """Open (or create) the file at ``path``, migrating its schema to this release's.

        ``inline``: one connection used on the calling thread, blocking it; for
        the worker process (see :meth:`Engine.open`).
        """
        store = cls(await Engine.open(path, synchronous=synchronous, inline=inline))
        try:
            await store._backfill_listing()
        except BaseException:
            await store.close()
            raise
        return store

    async def _backfill_listing(self) -> None:
        """Write the list rows of incidents stored before the list had them."""
        queries = listing.SQLITE
        while ids := await self._engine.read(
            lambda conn: [
                row[0] for row in conn.execute(queries.missing, (listing.BACKFILL_BATCH,))
            ]
        ):
            found = [await self.get_incident(incident_id) for incident_id in ids]
            rows = [listing.listing_row(i) for i in found if i is not None]

            def insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]] = rows) -> None:
                conn.executemany(queries.insert_missing, rows)

            await self._engine.write(insert, bulk=True)

    @property
    def path(self) -> Path:
        return self._engine.path

    @property
    def engine(self) -> Engine:
        """The SQLite engine underneath, for SQLite-specific tests and tools."""
        return self._engine

    async def close(self) -> None:
        await self._engine.close()

    # --- alerts and the worker's cursor -------------------------------------

    async def ingest(self, alerts: Sequence[Alert], received_at: datetime) -> IngestResult:
        self._engine.check_open()
        if not alerts:
            return IngestResult(new=0, duplicates=0)
        rows = sql.alert_rows(alerts, sql.stamp(received_at))
        if len(rows) > QUICK_ROWS:
            return await self._engine.write(lambda conn: sql.insert_alert_rows(conn, rows))
        return await self._engine.write_quick(lambda conn: sql.insert_alert_rows(conn, rows))

    async def stored_episodes(self, fingerprints: Sequence[str]) -> set[tuple[str, datetime]]:
        if not fingerprints:
            return set()
        return await self._engine.read(lambda conn: sql.stored_episodes(conn, fingerprints))

    async def pending(self, limit: int) -> list[ReceivedAlert]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        return await self._engine.read(lambda conn: sql.pending_alerts(conn, limit))

    async def save_progress(
        self, cursor: int, incidents: Sequence[Incident], *, language: str = SOURCE_LANGUAGE
    ) -> None:
        rows = sql.encode_incidents(incidents, self._saved_members, language)

        def save(conn: sqlite3.Connection) -> sql.SavedMembers:
            written = sql.write_incidents(conn, rows)
            sql.move_cursor(conn, cursor)
            return written

        await self._save_incidents(incidents, save)

    async def backlog(self) -> Backlog:
        return await self._engine.read(sql.backlog)

    async def alert_count(self) -> int:
        return await self._engine.read(sql.alert_count)

    # --- incidents and feedback -------------------------------------------------

    async def firing_started_between(self, start: datetime, end: datetime) -> int:
        period = (sql.stamp(start), sql.stamp(end))
        return await self._engine.read(lambda conn: sql.firing_started_between(conn, *period))

    async def save_incidents(
        self, incidents: Sequence[Incident], *, language: str = SOURCE_LANGUAGE
    ) -> None:
        self._engine.check_open()
        if incidents:
            rows = sql.encode_incidents(incidents, self._saved_members, language)
            await self._save_incidents(incidents, lambda conn: sql.write_incidents(conn, rows))

    async def _save_incidents(
        self, incidents: Sequence[Incident], fn: Callable[[sqlite3.Connection], sql.SavedMembers]
    ) -> None:
        """Run ``fn``; remember what it wrote only once that is committed."""
        try:
            written = await self._engine.write(fn, bulk=True)
        except BaseException:
            sql.forget_saved(self._saved_members, incidents)
            raise
        sql.remember_saved(self._saved_members, written, incidents)

    async def active_incidents(self, resolved_since: datetime) -> list[Incident]:
        since = sql.stamp(resolved_since)
        return await self._engine.read(lambda conn: sql.active_incidents(conn, since))

    async def latest_update(self) -> datetime | None:
        return await self._engine.read(sql.latest_update)

    async def incident_ids(self) -> list[str]:
        return await self._engine.read(sql.incident_ids)

    async def list_incidents(
        self,
        *,
        status: IncidentStatus | None = None,
        since: datetime | None = None,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
    ) -> list[Incident]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        after = None if since is None else sql.stamp(since)
        below = None if before is None else (sql.stamp(before[0]), before[1])
        return await self._engine.read(
            lambda conn: sql.list_incidents(conn, status, after, limit, below)
        )

    async def get_incident(self, incident_id: str) -> Incident | None:
        return await self._engine.read(lambda conn: sql.get_incident(conn, incident_id))

    async def incident_page(
        self, query: IncidentQuery, *, limit: int, offset: int = 0
    ) -> IncidentPage:
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got {limit} and {offset}")
        queries = listing.SQLITE
        page_sql, page_params = queries.page(query, limit, offset)
        count_sql, count_params = queries.count(query)

        def read(conn: sqlite3.Connection) -> IncidentPage:
            rows = conn.execute(page_sql, page_params).fetchall()
            total = int(conn.execute(count_sql, count_params).fetchone()[0])
            ids = [row[0] for row in rows]
            actions = action_sql.decode_actions(
                conn.execute(queries.handling_of.format(marks=sql.marks(len(ids))), ids).fetchall()
            )
            return IncidentPage(listing.decode_summaries(rows, actions), total)

        return await self._engine.read(read)

    async def incidents_created_between(self, start: datetime, end: datetime) -> list[Incident]:
        period = (sql.stamp(start), sql.stamp(end))
        return await self._engine.read(lambda conn: sql.incidents_created_between(conn, *period))

    async def add_feedback(
        self, incident_id: str, useful: bool, comment: str, at: datetime
    ) -> bool:
        when = sql.stamp(at)
        return await self._engine.write(
            lambda conn: sql.add_feedback(conn, incident_id, useful, comment, when)
        )

    async def feedback(self, incident_id: str) -> list[Feedback]:
        return await self._engine.read(lambda conn: sql.feedback(conn, incident_id))

    async def feedback_between(self, start: datetime, end: datetime) -> list[Feedback]:
        period = (sql.stamp(start), sql.stamp(end))
        return await self._engine.read(
            lambda conn: action_sql.decode_feedback(
                conn.execute(action_sql.SQLITE.feedback_between, period).fetchall(),
                json_comments=False,
            )
        )

    # --- what people did from the console -----------------------------------------

    async def record_action(self, action: IncidentAction) -> bool:
        row = action_sql.action_row(action)

        def insert(conn: sqlite3.Connection) -> bool:
            if (
                conn.execute(action_sql.SQLITE.incident_exists, (action.incident_id,)).fetchone()
                is None
            ):
                return False
            conn.execute(action_sql.SQLITE.insert, row)
            return True

        return await self._engine.write(insert)

    async def actions(self, incident_id: str) -> list[IncidentAction]:
        return await self._engine.read(
            lambda conn: action_sql.decode_actions(
                conn.execute(action_sql.SQLITE.of_incident, (incident_id,)).fetchall()
            )
        )

    async def actions_between(self, start: datetime, end: datetime) -> list[IncidentAction]:
        period = (sql.stamp(start), sql.stamp(end))
        return await self._engine.read(
            lambda conn: action_sql.decode_actions(
                conn.execute(action_sql.SQLITE.between, period).fetchall()
            )
        )

    # --- the scheduled report digest -----------------------------------------------

    async def claim_digest(
        self, slot: datetime, holder: str, *, now: datetime, hold: timedelta
    ) -> bool:
        params = (sql.stamp(slot), holder, sql.stamp(now + hold), sql.stamp(now))
        return await self._engine.write(
            lambda conn: conn.execute(digest_sql.SQLITE.claim, params).rowcount == 1
        )

    async def finish_digest(self, slot: datetime, holder: str, *, at: datetime) -> bool:
        params = (sql.stamp(at), sql.stamp(slot), holder)
        return await self._engine.write(
            lambda conn: conn.execute(digest_sql.SQLITE.finish, params).rowcount == 1
        )

    async def last_digest(self) -> datetime | None:
        row = await self._engine.read(
            lambda conn: conn.execute(digest_sql.SQLITE.last_done).fetchone()
        )
        return None if row[0] is None else sql.unstamp(row[0])

    # --- the return trip's outbox -------------------------------------------------

    async def enqueue_posts(
        self, plans: Sequence[OutboxPlan], peers: Sequence[str], *, now: float, repeat_for: float
    ) -> None:
        self._engine.check_open()
        # A few hundred copies per transaction, so no write holds the lock for long.
        for part in outbox.split_plans(plans, outbox.ROWS_PER_TRANSACTION):
            await self._engine.write(
                functools.partial(
                    outbox.enqueue, plans=part, peers=peers, now=now, repeat_for=repeat_for
                ),
                bulk=True,
            )

    async def sync_outbox_peers(self, peers: Sequence[str], *, now: float) -> int:
        return await self._engine.write(lambda conn: outbox.sync_peers(conn, peers, now))

    async def due_posts(
        self, peers: Sequence[str], *, before: float, beyond: float | None = None
    ) -> list[OutboxRow]:
        self._engine.check_open()
        if not peers:
            return []
        return await self._engine.read(lambda conn: outbox.due(conn, peers, before, beyond))

    async def next_post_due(self, peers: Sequence[str]) -> dict[str, float]:
        return await self._engine.read(lambda conn: outbox.next_due(conn, peers))

    async def count_due_posts(self, *, now: float) -> int:
        return await self._engine.read(lambda conn: outbox.count_due(conn, now))

    async def complete_accepted(
        self,
        peer: str,
        rows: Sequence[OutboxRow],
        *,
        now: float,
        firing_due: float,
        resolved_due: float,
    ) -> None:
        await self._engine.write(
            lambda conn: outbox.accepted(conn, peer, rows, now, firing_due, resolved_due)
        )

    async def complete_refused(self, row: OutboxRow) -> None:
        await self._engine.write(lambda conn: outbox.refused(conn, row))

    async def list_posts(self) -> list[OutboxRow]:
        return await self._engine.read(outbox.all_rows)

    async def firing_members(self) -> dict[str, str]:
        return await self._engine.read(outbox.firing_members)

    async def firing_copies(self) -> set[str]:
        return await self._engine.read(outbox.firing_copies)

    # --- the LLM audit --------------------------------------------------------------

    async def record_llm_exchange(self, exchange: LlmExchange) -> None:
        row = exchanges.exchange_row(exchange)
        await self._engine.write(lambda conn: conn.execute(exchanges.insert_query(), row))

    async def llm_exchanges(
        self,
        *,
        incident_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[LlmExchange]:
        query, params = exchanges.selection_query(incident_id, since, limit)
        rows = await self._engine.read(lambda conn: conn.execute(query, params).fetchall())
        return exchanges.decode_rows(rows)

    async def llm_usage(self, incident_id: str) -> LlmUsage:
        query = exchanges.usage_query()
        row = await self._engine.read(lambda conn: conn.execute(query, (incident_id,)).fetchone())
        return exchanges.decode_usage(row)

    async def prune_llm_exchanges(self, older_than: datetime, batch: int) -> int:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        params = (sql.stamp(older_than), batch)
        return await prune_rows_in_batches(
            lambda: self._engine.write(
                lambda conn: conn.execute(exchanges.prune_query(), params).rowcount, bulk=True
            ),
            batch,
        )

    # --- console users, sessions and failed sign-ins ----------------------------------

    async def save_console_user(self, account: ConsoleAccount, at: datetime) -> None:
        await self._write(accounts.save_user(account, at))

    async def replace_console_password_hash(
        self, name: str, old_hash: str, new_hash: str, at: datetime
    ) -> bool:
        return await self._write(accounts.replace_hash(name, old_hash, new_hash, at)) > 0

    async def get_console_user(self, name: str) -> ConsoleAccount | None:
        found = accounts.decode_users(await self._fetch(accounts.select_users(name)))
        return found[0] if found else None

    async def list_console_users(self) -> list[ConsoleAccount]:
        return accounts.decode_users(await self._fetch(accounts.select_users(None)))

    async def remove_console_user(self, name: str) -> bool:
        return await self._write(*accounts.remove_user(name)) > 0

    async def save_console_language(self, name: str, language: str, at: datetime) -> None:
        await self._write(accounts.save_language(name, language, at))

    async def get_console_language(self, name: str) -> str:
        return accounts.decode_language(await self._fetch(accounts.select_language(name)))

    async def open_console_session(self, session: ConsoleSession) -> None:
        await self._write(accounts.insert_session(session))

    async def get_console_session(self, key: str) -> ConsoleSession | None:
        rows = await self._fetch(accounts.select_session(key))
        return accounts.decode_session(rows[0] if rows else None)

    async def touch_console_session(self, key: str, seen_at: datetime) -> None:
        await self._write(accounts.touch_session(key, seen_at))

    async def close_console_session(self, key: str) -> None:
        await self._write(accounts.delete_session(key))

    async def prune_console_sessions(self, created_before: datetime, seen_before: datetime) -> int:
        return await self._write(accounts.prune_sessions(created_before, seen_before))

    async def record_login_failure(
        self, keys: Sequence[str], at: datetime, forget_before: datetime
    ) -> None:
        await self._write(
            accounts.forget_failures(forget_before), *accounts.insert_failures(keys, at)
        )

    async def login_failures(
        self, keys: Sequence[str], since: datetime
    ) -> dict[str, list[datetime]]:
        if not keys:
            return {}
        return accounts.decode_failures(
            keys, await self._fetch(accounts.select_failures(keys, since))
        )

    async def clear_login_failures(self, key: str) -> None:
        await self._write(accounts.clear_failures(key))

    async def _write(self, first: accounts.Statement, *more: accounts.Statement) -> int:
        """Run the statements in one transaction; the rows the first one changed."""

        def run(conn: sqlite3.Connection) -> int:
            changed = conn.execute(*first).rowcount
            for statement in more:
                conn.execute(*statement)
            return changed

        return await self._engine.write(run)

    async def _fetch(self, statement: accounts.Statement) -> list[Any]:
        return await self._engine.read(lambda conn: conn.execute(*statement).fetchall())

    # --- housekeeping ------------------------------------------------------------

    async def prune(self, older_than: datetime, batch: int) -> PruneResult:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        batch = min(batch, sql.MAX_PARAMETERS)
        before = sql.stamp(older_than)
        return await prune_in_batches(
            lambda: self._engine.write(
                lambda conn: sql.prune_alerts(conn, before, batch), bulk=True
            ),
            lambda: self._engine.write(
                lambda conn: _prune_incidents(conn, before, batch), bulk=True
            ),
            batch,
        )


def _prune_incidents(conn: sqlite3.Connection, before: str, batch: int) -> PruneResult:
    """One batch of resolved incidents, with everything that hangs off them."""
    ids = sql.resolved_before(conn, before, batch)
    if not ids:
        return PruneResult()
    posts = outbox.delete_resolved_of(conn, ids)
    taken = conn.execute(
        action_sql.SQLITE.delete_of.format(marks=sql.marks(len(ids))), ids
    ).rowcount
    incidents, members, feedback = sql.delete_incidents(conn, ids)
    return PruneResult(
        incidents=incidents, members=members, feedback=feedback, posts=posts, actions=taken
    )
