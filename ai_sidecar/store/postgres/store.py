"""The PostgreSQL store: :class:`~ai_sidecar.store.protocol.Store` over one database.

Each verb runs the SQL of :mod:`~ai_sidecar.store.postgres.incidents` or
:mod:`~ai_sidecar.store.postgres.outbox` in one transaction of the
:class:`~ai_sidecar.store.postgres.engine.Engine`. Ingests are group-committed
under the ingest lock; everything else takes a pooled connection. Several
sidecar replicas may share the database: each stores what the webhook
receives (idempotently: the same alert from both Alertmanager peers is
stored once), and only the one holding the worker lease
(:mod:`~ai_sidecar.store.postgres.lease`) writes incidents and the outbox,
through a store opened with that lease as its ``fence``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ai_sidecar.enrichment.llm.base import LlmExchange
from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.models import Alert, Incident, IncidentStatus, ReceivedAlert
from ai_sidecar.store import accounts, exchanges, listing
from ai_sidecar.store import actions as action_sql
from ai_sidecar.store import digests as digest_sql
from ai_sidecar.store.postgres import incidents as sql
from ai_sidecar.store.postgres import outbox
from ai_sidecar.store.postgres.engine import Cursor, Engine, Fence, Location
from ai_sidecar.store.postgres.schema import migrate
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
from ai_sidecar.store.sqlite.incidents import (
    SavedMembers,
    encode_incidents,
    forget_saved,
    remember_saved,
    stamp,
    unstamp,
)
from ai_sidecar.store.sqlite.outbox import ROWS_PER_TRANSACTION, split_plans

T = TypeVar("T")

# psycopg's placeholder in the SQL shared with the SQLite store.
MARK = "%s"


class PostgresStore:
    """The sidecar's shared store. Build it with :meth:`open`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The members last committed per incident, to write only changed ones.
        self._saved_members: SavedMembers = {}

    @classmethod
    async def open(cls, location: Location, *, fence: Fence | None = None) -> PostgresStore:
        """Connect to the database at ``location`` and migrate its schema to this release's.

        ``fence``: every transaction first proves the worker lease is still
        held (the worker process of a replica); None for the webhook's store.
        """
        store = cls(await Engine.open(location, fence=fence, migrate=migrate))
        try:
            await store._backfill_listing()
        except BaseException:
            await store.close()
            raise
        return store

    async def _backfill_listing(self) -> None:
        """Write the list rows of incidents stored before the list had them."""
        queries = listing.POSTGRES
        while ids := [
            row[0] for row in await self._fetch(queries.missing, (listing.BACKFILL_BATCH,))
        ]:
            found = [await self.get_incident(incident_id) for incident_id in ids]
            rows = [listing.listing_row(i) for i in found if i is not None]

            async def insert(cur: Cursor, rows: list[tuple[Any, ...]] = rows) -> None:
                await cur.executemany(queries.insert_missing, rows)

            await self._engine.transaction(insert)

    @property
    def engine(self) -> Engine:
        """The PostgreSQL engine underneath, for tests and tools."""
        return self._engine

    async def close(self) -> None:
        await self._engine.close()

    # --- alerts and the worker's cursor -------------------------------------

    async def ingest(self, alerts: Sequence[Alert], received_at: datetime) -> IngestResult:
        self._engine.check_open()
        if not alerts:
            return IngestResult(new=0, duplicates=0)
        received = stamp(received_at)
        return await self._engine.ingest(lambda cur: sql.insert_alerts(cur, alerts, received))

    async def stored_episodes(self, fingerprints: Sequence[str]) -> set[tuple[str, datetime]]:
        if not fingerprints:
            return set()
        return await self._read(lambda cur: sql.stored_episodes(cur, fingerprints))

    async def pending(self, limit: int) -> list[ReceivedAlert]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        return await self._read(lambda cur: sql.pending_alerts(cur, limit))

    async def save_progress(
        self, cursor: int, incidents: Sequence[Incident], *, language: str = SOURCE_LANGUAGE
    ) -> None:
        rows = encode_incidents(incidents, self._saved_members, language)

        async def save(cur: Cursor) -> None:
            await sql.write_incidents(cur, rows)
            await sql.move_cursor(cur, cursor)

        await self._save_incidents(incidents, rows.written, save)

    async def backlog(self) -> Backlog:
        return await self._read(sql.backlog)

    async def alert_count(self) -> int:
        return await self._read(sql.alert_count)

    # --- incidents and feedback -------------------------------------------------

    async def firing_started_between(self, start: datetime, end: datetime) -> int:
        period = (stamp(start), stamp(end))
        return await self._read(lambda cur: sql.firing_started_between(cur, *period))

    async def save_incidents(
        self, incidents: Sequence[Incident], *, language: str = SOURCE_LANGUAGE
    ) -> None:
        self._engine.check_open()
        if incidents:
            rows = encode_incidents(incidents, self._saved_members, language)
            await self._save_incidents(
                incidents, rows.written, lambda cur: sql.write_incidents(cur, rows)
            )

    async def _save_incidents(
        self,
        incidents: Sequence[Incident],
        written: SavedMembers,
        fn: Callable[[Cursor], Awaitable[None]],
    ) -> None:
        """Run ``fn``; remember what it wrote only once that is committed."""
        try:
            await self._engine.transaction(fn)
        except BaseException:
            forget_saved(self._saved_members, incidents)
            raise
        remember_saved(self._saved_members, written, incidents)

    async def active_incidents(self, resolved_since: datetime) -> list[Incident]:
        since = stamp(resolved_since)
        return await self._read(lambda cur: sql.active_incidents(cur, since))

    async def latest_update(self) -> datetime | None:
        return await self._read(sql.latest_update)

    async def incident_ids(self) -> list[str]:
        return await self._read(sql.incident_ids)

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
        after = None if since is None else stamp(since)
        below = None if before is None else (stamp(before[0]), before[1])
        return await self._read(lambda cur: sql.list_incidents(cur, status, after, limit, below))

    async def get_incident(self, incident_id: str) -> Incident | None:
        return await self._read(lambda cur: sql.get_incident(cur, incident_id))

    async def incident_page(
        self, query: IncidentQuery, *, limit: int, offset: int = 0
    ) -> IncidentPage:
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got {limit} and {offset}")
        queries = listing.POSTGRES
        page_sql, page_params = queries.page(query, limit, offset)
        count_sql, count_params = queries.count(query)

        async def read(cur: Cursor) -> IncidentPage:
            await cur.execute(page_sql, page_params)
            rows = list(await cur.fetchall())
            await cur.execute(count_sql, count_params)
            counted = await cur.fetchone()
            total = 0 if counted is None else int(counted[0])
            await cur.execute(queries.handling_of, ([row[0] for row in rows],))
            actions = action_sql.decode_actions(list(await cur.fetchall()))
            return IncidentPage(listing.decode_summaries(rows, actions), total)

        return await self._read(read)

    async def incidents_created_between(self, start: datetime, end: datetime) -> list[Incident]:
        period = (stamp(start), stamp(end))
        return await self._read(lambda cur: sql.incidents_created_between(cur, *period))

    async def add_feedback(
        self, incident_id: str, useful: bool, comment: str, at: datetime
    ) -> bool:
        when = stamp(at)
        return await self._engine.transaction(
            lambda cur: sql.add_feedback(cur, incident_id, useful, comment, when)
        )

    async def feedback(self, incident_id: str) -> list[Feedback]:
        return await self._read(lambda cur: sql.feedback(cur, incident_id))

    async def feedback_between(self, start: datetime, end: datetime) -> list[Feedback]:
        rows = await self._fetch(action_sql.POSTGRES.feedback_between, (stamp(start), stamp(end)))
        return action_sql.decode_feedback(rows, json_comments=True)

    # --- what people did from the console -----------------------------------------

    async def record_action(self, action: IncidentAction) -> bool:
        row = action_sql.action_row(action)

        async def insert(cur: Cursor) -> bool:
            # FOR SHARE: retention cannot delete the incident under the new row.
            await cur.execute(
                f"{action_sql.POSTGRES.incident_exists} FOR SHARE", (action.incident_id,)
            )
            if await cur.fetchone() is None:
                return False
            await cur.execute(action_sql.POSTGRES.insert, row)
            return True

        return await self._engine.transaction(insert)

    async def actions(self, incident_id: str) -> list[IncidentAction]:
        return action_sql.decode_actions(
            await self._fetch(action_sql.POSTGRES.of_incident, (incident_id,))
        )

    async def actions_between(self, start: datetime, end: datetime) -> list[IncidentAction]:
        return action_sql.decode_actions(
            await self._fetch(action_sql.POSTGRES.between, (stamp(start), stamp(end)))
        )

    # --- the scheduled report digest -----------------------------------------------

    async def claim_digest(
        self, slot: datetime, holder: str, *, now: datetime, hold: timedelta
    ) -> bool:
        params = (stamp(slot), holder, stamp(now + hold), stamp(now))
        return await self._changed_one(digest_sql.POSTGRES.claim, params)

    async def finish_digest(self, slot: datetime, holder: str, *, at: datetime) -> bool:
        return await self._changed_one(digest_sql.POSTGRES.finish, (stamp(at), stamp(slot), holder))

    async def last_digest(self) -> datetime | None:
        (row,) = await self._fetch(digest_sql.POSTGRES.last_done, ())
        return None if row[0] is None else unstamp(row[0])

    async def _changed_one(self, statement: str, params: tuple[str, ...]) -> bool:
        async def run(cur: Cursor) -> bool:
            await cur.execute(statement, params)
            return cur.rowcount == 1

        return await self._engine.transaction(run)

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async def fetch(cur: Cursor) -> list[tuple[Any, ...]]:
            await cur.execute(query, params)
            return list(await cur.fetchall())

        return await self._read(fetch)

    # --- the return trip's outbox -------------------------------------------------

    async def enqueue_posts(
        self, plans: Sequence[OutboxPlan], peers: Sequence[str], *, now: float, repeat_for: float
    ) -> None:
        self._engine.check_open()
        # A few hundred copies per transaction, so no write holds its row locks for long.
        for part in split_plans(plans, ROWS_PER_TRANSACTION):
            await self._engine.transaction(
                functools.partial(
                    outbox.enqueue, plans=part, peers=peers, now=now, repeat_for=repeat_for
                )
            )

    async def sync_outbox_peers(self, peers: Sequence[str], *, now: float) -> int:
        return await self._engine.transaction(lambda cur: outbox.sync_peers(cur, peers, now))

    async def due_posts(
        self, peers: Sequence[str], *, before: float, beyond: float | None = None
    ) -> list[OutboxRow]:
        self._engine.check_open()
        if not peers:
            return []
        return await self._read(lambda cur: outbox.due(cur, peers, before, beyond))

    async def next_post_due(self, peers: Sequence[str]) -> dict[str, float]:
        return await self._read(lambda cur: outbox.next_due(cur, peers))

    async def count_due_posts(self, *, now: float) -> int:
        return await self._read(lambda cur: outbox.count_due(cur, now))

    async def complete_accepted(
        self,
        peer: str,
        rows: Sequence[OutboxRow],
        *,
        now: float,
        firing_due: float,
        resolved_due: float,
    ) -> None:
        await self._engine.transaction(
            lambda cur: outbox.accepted(cur, peer, rows, now, firing_due, resolved_due)
        )

    async def complete_refused(self, row: OutboxRow) -> None:
        await self._engine.transaction(lambda cur: outbox.refused(cur, row))

    async def list_posts(self) -> list[OutboxRow]:
        return await self._read(outbox.all_rows)

    async def firing_members(self) -> dict[str, str]:
        return await self._read(outbox.firing_members)

    async def firing_copies(self) -> set[str]:
        return await self._read(outbox.firing_copies)

    # --- the LLM audit --------------------------------------------------------------

    async def record_llm_exchange(self, exchange: LlmExchange) -> None:
        row = exchanges.exchange_row(exchange)
        await self._engine.transaction(lambda cur: cur.execute(exchanges.insert_query("%s"), row))

    async def llm_exchanges(
        self,
        *,
        incident_id: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[LlmExchange]:
        query, params = exchanges.selection_query(incident_id, since, limit, mark="%s")

        async def select(cur: Cursor) -> list[LlmExchange]:
            await cur.execute(query, params)
            return exchanges.decode_rows(await cur.fetchall())

        return await self._read(select)

    async def llm_usage(self, incident_id: str) -> LlmUsage:
        return exchanges.usage_of_docs(
            await self._fetch(exchanges.docs_query(MARK), (incident_id,))
        )

    async def prune_llm_exchanges(self, older_than: datetime, batch: int) -> int:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        params = (stamp(older_than), batch)

        async def prune_batch(cur: Cursor) -> int:
            await cur.execute(exchanges.prune_query("%s"), params)
            return cur.rowcount

        return await prune_rows_in_batches(lambda: self._engine.transaction(prune_batch), batch)

    # --- console users, sessions and failed sign-ins ----------------------------------

    async def save_console_user(self, account: ConsoleAccount, at: datetime) -> None:
        await self._write(accounts.save_user(account, at, MARK))

    async def replace_console_password_hash(
        self, name: str, old_hash: str, new_hash: str, at: datetime
    ) -> bool:
        return await self._write(accounts.replace_hash(name, old_hash, new_hash, at, MARK)) > 0

    async def get_console_user(self, name: str) -> ConsoleAccount | None:
        found = accounts.decode_users(
            await self._fetch(*accounts.select_users(name, MARK, accounts.POSTGRES_LOWER))
        )
        return found[0] if found else None

    async def list_console_users(self) -> list[ConsoleAccount]:
        return accounts.decode_users(await self._fetch(*accounts.select_users(None, MARK)))

    async def remove_console_user(self, name: str) -> bool:
        return await self._write(*accounts.remove_user(name, MARK)) > 0

    async def save_console_language(self, name: str, language: str, at: datetime) -> None:
        await self._write(accounts.save_language(name, language, at, MARK))

    async def get_console_language(self, name: str) -> str:
        return accounts.decode_language(await self._fetch(*accounts.select_language(name, MARK)))

    async def open_console_session(self, session: ConsoleSession) -> None:
        await self._write(accounts.insert_session(session, MARK))

    async def get_console_session(self, key: str) -> ConsoleSession | None:
        rows = await self._fetch(*accounts.select_session(key, MARK))
        return accounts.decode_session(rows[0] if rows else None)

    async def touch_console_session(self, key: str, seen_at: datetime) -> None:
        await self._write(accounts.touch_session(key, seen_at, MARK))

    async def close_console_session(self, key: str) -> None:
        await self._write(accounts.delete_session(key, MARK))

    async def prune_console_sessions(self, created_before: datetime, seen_before: datetime) -> int:
        return await self._write(accounts.prune_sessions(created_before, seen_before, MARK))

    async def record_login_failure(
        self, keys: Sequence[str], at: datetime, forget_before: datetime
    ) -> None:
        await self._write(
            accounts.forget_failures(forget_before, MARK),
            *accounts.insert_failures(keys, at, MARK),
        )

    async def login_failures(
        self, keys: Sequence[str], since: datetime
    ) -> dict[str, list[datetime]]:
        if not keys:
            return {}
        rows = await self._fetch(*accounts.select_failures(keys, since, MARK))
        return accounts.decode_failures(keys, rows)

    async def clear_login_failures(self, key: str) -> None:
        await self._write(accounts.clear_failures(key, MARK))

    async def _write(self, first: accounts.Statement, *more: accounts.Statement) -> int:
        """Run the statements in one transaction; the rows the first one changed.

        Not fenced: console accounts are the HTTP process's, whoever holds the lease.
        """

        async def run(cur: Cursor) -> int:
            await cur.execute(*first)
            changed = cur.rowcount
            for statement in more:
                await cur.execute(*statement)
            return changed

        return await self._engine.transaction(run, fenced=False)

    # --- housekeeping ------------------------------------------------------------

    async def prune(self, older_than: datetime, batch: int) -> PruneResult:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        before = stamp(older_than)
        return await prune_in_batches(
            lambda: self._engine.transaction(lambda cur: sql.prune_alerts(cur, before, batch)),
            lambda: self._engine.transaction(lambda cur: _prune_incidents(cur, before, batch)),
            batch,
        )

    async def _read(self, fn: Callable[[Cursor], Awaitable[T]]) -> T:
        return await self._engine.transaction(fn, read_only=True)


async def _prune_incidents(cur: Cursor, before: str, batch: int) -> PruneResult:
    """One batch of resolved incidents, with everything that hangs off them."""
    ids = await sql.resolved_before(cur, before, batch)
    if not ids:
        return PruneResult()
    posts = await outbox.delete_resolved_of(cur, ids)
    await cur.execute(action_sql.POSTGRES.delete_of, (list(ids),))
    taken = cur.rowcount
    incidents, members, feedback = await sql.delete_incidents(cur, ids)
    return PruneResult(
        incidents=incidents, members=members, feedback=feedback, posts=posts, actions=taken
    )
