"""SQL for the return trip's outbox: one row per Alertmanager peer and enriched copy.

The same rows, with the same meaning, as the SQLite store's
(:mod:`ai_sidecar.store.sqlite.outbox`); only the dialect differs. Every
function runs inside a transaction the engine opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ai_sidecar.store.postgres.engine import Cursor
from ai_sidecar.store.protocol import OutboxPlan, OutboxRow

_ROW_COLUMNS = (
    "peer, fingerprint, incident_id, member, state, alert, raw, ends_at, resolved_until,"
    " due_at, posted_at, revision"
)


_RESOLVE = (
    "UPDATE return_trip SET state = 'resolved', ends_at = %s, resolved_until = %s,"
    " due_at = %s, revision = revision + 1 WHERE state = 'firing'"
)
# Inserted due now; rewritten (due now, a new revision) only when its text or
# incident changed or it had resolved: otherwise the keep-alive schedule stands.
_UPSERT_FIRING = (
    "INSERT INTO return_trip (peer, fingerprint, incident_id, member, state, alert, raw,"
    " due_at) VALUES (%s, %s, %s, %s, 'firing', %s, %s, %s)"
    " ON CONFLICT (peer, fingerprint) DO UPDATE SET state = 'firing',"
    " alert = excluded.alert, raw = excluded.raw, incident_id = excluded.incident_id,"
    " member = excluded.member, ends_at = NULL, resolved_until = NULL,"
    " due_at = excluded.due_at, posted_at = NULL, revision = return_trip.revision + 1"
    " WHERE return_trip.state <> 'firing' OR return_trip.alert <> excluded.alert"
    " OR return_trip.incident_id <> excluded.incident_id"
)


async def _many(cur: Cursor, sql: str, rows: list[tuple[Any, ...]]) -> None:
    # executemany pipelines the statements: one round trip for a whole part.
    if rows:
        await cur.executemany(sql, rows)


async def enqueue(
    cur: Cursor, plans: Sequence[OutboxPlan], peers: Sequence[str], now: float, repeat_for: float
) -> None:
    """What the SQLite store's ``enqueue`` does, copy by copy, in batched statements.

    Batching keeps its meaning because a plan holds one copy per member, and
    each statement for a copy touches only rows of that copy's member.
    """
    until = now + repeat_for
    for plan in plans:
        # Members that left the incident: their copies must not fire on.
        # NOT IN a subquery is hashed; "<> ALL(array)" would compare every row
        # with every member, 10^8 steps per part for a 10,000-member incident.
        await cur.execute(
            _RESOLVE + " AND incident_id = %s AND member NOT IN (SELECT unnest(%s::text[]))",
            (now, until, now, plan.incident_id, list(plan.members)),
        )
        firing = [want for want in plan.copies if want.state == "firing"]
        resolved = [want for want in plan.copies if want.state != "firing"]
        # The member's copies under any other label set are stale.
        await _many(
            cur,
            _RESOLVE + " AND member = %s AND fingerprint <> %s",
            [(now, until, now, want.member, want.fingerprint) for want in firing],
        )
        await _many(
            cur,
            _UPSERT_FIRING,
            [
                (peer, w.fingerprint, w.incident_id, w.member, w.alert, w.raw, now)
                for w in firing
                for peer in peers
            ],
        )
        # The current copy carries the latest annotations into its resolution.
        await _many(
            cur,
            "UPDATE return_trip SET alert = %s WHERE fingerprint = %s AND state = 'firing'",
            [(want.alert, want.fingerprint) for want in resolved],
        )
        await _many(
            cur,
            _RESOLVE + " AND incident_id = %s AND member = %s",
            [
                (
                    want.ends_at if want.ends_at is not None else now,
                    until,
                    now,
                    want.incident_id,
                    want.member,
                )
                for want in resolved
            ],
        )


async def sync_peers(cur: Cursor, peers: Sequence[str], now: float) -> int:
    """Give peers new to the table every current copy; forget peers no longer configured."""
    for peer in peers:
        await cur.execute(
            "INSERT INTO return_trip (peer, fingerprint, incident_id, member, state,"
            " alert, raw, ends_at, resolved_until, due_at)"
            " SELECT DISTINCT ON (fingerprint) %s, fingerprint, incident_id, member, state,"
            " alert, raw, ends_at, resolved_until, %s::double precision FROM return_trip AS t"
            " WHERE peer <> %s AND NOT EXISTS (SELECT 1 FROM return_trip WHERE peer = %s"
            " AND fingerprint = t.fingerprint) ORDER BY fingerprint, peer"
            " ON CONFLICT (peer, fingerprint) DO NOTHING",
            (peer, now, peer, peer),
        )
    await cur.execute("DELETE FROM return_trip WHERE peer <> ALL(%s)", (list(peers),))
    return cur.rowcount


async def _rows(cur: Cursor) -> list[OutboxRow]:
    return [OutboxRow(*row) for row in await cur.fetchall()]


async def due(
    cur: Cursor, peers: Sequence[str], before: float, beyond: float | None = None
) -> list[OutboxRow]:
    async def rows(condition: str, at: float) -> list[OutboxRow]:
        await cur.execute(
            f"SELECT {_ROW_COLUMNS} FROM return_trip"
            f" WHERE due_at {condition} %s AND peer = ANY(%s)"
            " ORDER BY due_at, fingerprint, peer",
            (at, list(peers)),
        )
        return await _rows(cur)

    # Two queries, not one with OR, so each is a range of the (peer, due_at)
    # index; the second's rows are all due later than the first's.
    found = await rows("<=", before)
    if beyond is not None:
        found += await rows(">", max(beyond, before))
    return found


async def next_due(cur: Cursor, peers: Sequence[str]) -> dict[str, float]:
    await cur.execute(
        "SELECT peer, min(due_at) FROM return_trip WHERE peer = ANY(%s) GROUP BY peer",
        (list(peers),),
    )
    return {peer: float(due_at) for peer, due_at in await cur.fetchall()}


async def count_due(cur: Cursor, now: float) -> int:
    await cur.execute("SELECT count(*) FROM return_trip WHERE due_at <= %s", (now,))
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def accepted(
    cur: Cursor,
    peer: str,
    rows: Sequence[OutboxRow],
    now: float,
    firing_due: float,
    resolved_due: float,
) -> None:
    gone: list[tuple[Any, ...]] = []
    kept: list[tuple[Any, ...]] = []
    for row in rows:
        key = (peer, row.fingerprint, row.revision)
        if row.state == "resolved" and now >= (row.resolved_until or 0.0):
            gone.append(key)
        else:
            kept.append((firing_due if row.state == "firing" else resolved_due, now, *key))
    if gone:
        await cur.executemany(
            "DELETE FROM return_trip WHERE peer = %s AND fingerprint = %s AND revision = %s", gone
        )
    if kept:
        await cur.executemany(
            "UPDATE return_trip SET due_at = %s, posted_at = %s"
            " WHERE peer = %s AND fingerprint = %s AND revision = %s",
            kept,
        )


async def refused(cur: Cursor, row: OutboxRow) -> None:
    await cur.execute(
        "DELETE FROM return_trip WHERE peer = %s AND fingerprint = %s AND revision = %s",
        (row.peer, row.fingerprint, row.revision),
    )


async def all_rows(cur: Cursor) -> list[OutboxRow]:
    await cur.execute(f"SELECT {_ROW_COLUMNS} FROM return_trip ORDER BY peer, fingerprint")
    return await _rows(cur)


async def firing_members(cur: Cursor) -> dict[str, str]:
    await cur.execute("SELECT member, raw FROM return_trip WHERE state = 'firing'")
    return {str(member): str(raw) for member, raw in await cur.fetchall()}


async def firing_copies(cur: Cursor) -> set[str]:
    await cur.execute("SELECT fingerprint FROM return_trip WHERE state = 'firing'")
    return {row[0] for row in await cur.fetchall()}


async def delete_resolved_of(cur: Cursor, incident_ids: Sequence[str]) -> int:
    """Delete the resolved copies of ``incident_ids`` (retention); how many went."""
    await cur.execute(
        "DELETE FROM return_trip WHERE state = 'resolved' AND incident_id = ANY(%s)",
        (list(incident_ids),),
    )
    return cur.rowcount
