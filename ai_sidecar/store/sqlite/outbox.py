"""SQL for the return trip's outbox: one row per Alertmanager peer and enriched copy.

What the rows mean, and when a copy is posted, is the return trip's business
(:mod:`ai_sidecar.notify`); this module only keeps them. Times are Unix
seconds. Every function runs inside a transaction the engine opened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from ai_sidecar.store.protocol import OutboxCopy, OutboxPlan, OutboxRow
from ai_sidecar.store.sqlite.incidents import marks

# Enriched copies written per transaction by enqueue: the write lock is shared
# with the webhook, so no write may hold it for long.
ROWS_PER_TRANSACTION = 100

_ROW_COLUMNS = (
    "peer, fingerprint, incident_id, member, state, alert, raw, ends_at, resolved_until,"
    " due_at, posted_at, revision"
)


def split_plans(plans: Sequence[OutboxPlan], rows: int) -> Iterable[list[OutboxPlan]]:
    """Plans in groups of about ``rows`` copies; a big incident is cut into parts.

    A part of an incident carries the incident's full member set, so the "members
    that left" step in :func:`enqueue` stays right whichever part it runs in.
    """
    part: list[OutboxPlan] = []
    size = 0
    for plan in plans:
        for start in range(0, max(len(plan.copies), 1), rows):
            chunk = plan.copies[start : start + rows]
            if size + len(chunk) > rows and part:
                yield part
                part, size = [], 0
            part.append(OutboxPlan(plan.incident_id, plan.members, chunk))
            size += len(chunk)
    if part:
        yield part


def _resolve_rows(
    conn: sqlite3.Connection,
    where: str,
    params: Sequence[Any],
    *,
    ends_at: float,
    now: float,
    repeat_for: float,
) -> None:
    """Turn matching firing rows into resolutions, due now and repeated from now."""
    conn.execute(
        "UPDATE return_trip SET state = 'resolved', ends_at = ?, resolved_until = ?,"
        " due_at = ?, revision = revision + 1"
        f" WHERE state = 'firing' AND {where}",
        (ends_at, now + repeat_for, now, *params),
    )


def enqueue(
    conn: sqlite3.Connection,
    plans: Sequence[OutboxPlan],
    peers: Sequence[str],
    now: float,
    repeat_for: float,
) -> None:
    for plan in plans:
        # Members that left the incident: their copies must not fire on.
        _resolve_rows(
            conn,
            f"incident_id = ? AND member NOT IN ({marks(len(plan.members))})",
            (plan.incident_id, *plan.members),
            ends_at=now,
            now=now,
            repeat_for=repeat_for,
        )
        for want in plan.copies:
            if want.state == "firing":
                # The member's copies under any other label set are stale.
                _resolve_rows(
                    conn,
                    "member = ? AND fingerprint != ?",
                    (want.member, want.fingerprint),
                    ends_at=now,
                    now=now,
                    repeat_for=repeat_for,
                )
                for peer in peers:
                    _upsert_firing(conn, peer, want, now)
                continue
            # The current copy carries the latest annotations into its resolution.
            conn.execute(
                "UPDATE return_trip SET alert = ? WHERE fingerprint = ? AND state = 'firing'",
                (want.alert, want.fingerprint),
            )
            _resolve_rows(
                conn,
                "incident_id = ? AND member = ?",
                (want.incident_id, want.member),
                ends_at=want.ends_at if want.ends_at is not None else now,
                now=now,
                repeat_for=repeat_for,
            )


def _upsert_firing(conn: sqlite3.Connection, peer: str, want: OutboxCopy, now: float) -> None:
    row = conn.execute(
        "SELECT state, alert, incident_id FROM return_trip WHERE peer = ? AND fingerprint = ?",
        (peer, want.fingerprint),
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO return_trip (peer, fingerprint, incident_id, member, state, alert, raw,"
            " due_at) VALUES (?, ?, ?, ?, 'firing', ?, ?, ?)",
            (peer, want.fingerprint, want.incident_id, want.member, want.alert, want.raw, now),
        )
        return
    state, alert, incident_id = row
    if state == "firing" and alert == want.alert and incident_id == want.incident_id:
        return  # nothing new: the keep-alive schedule stands
    # New annotations (a better analysis) or a re-fire: post now.
    conn.execute(
        "UPDATE return_trip SET state = 'firing', alert = ?, raw = ?, incident_id = ?,"
        " member = ?, ends_at = NULL, resolved_until = NULL, due_at = ?, posted_at = NULL,"
        " revision = revision + 1 WHERE peer = ? AND fingerprint = ?",
        (want.alert, want.raw, want.incident_id, want.member, now, peer, want.fingerprint),
    )


def sync_peers(conn: sqlite3.Connection, peers: Sequence[str], now: float) -> int:
    """Give peers new to the table every current copy; forget peers no longer configured."""
    for peer in peers:
        # Each copy some other peer has and this one lacks, due now.
        conn.execute(
            "INSERT OR IGNORE INTO return_trip (peer, fingerprint, incident_id, member, state,"
            " alert, raw, ends_at, resolved_until, due_at)"
            " SELECT ?, fingerprint, incident_id, member, state, alert, raw, ends_at,"
            " resolved_until, ? FROM return_trip AS t WHERE peer != ?"
            " AND NOT EXISTS (SELECT 1 FROM return_trip WHERE peer = ?"
            " AND fingerprint = t.fingerprint)",
            (peer, now, peer, peer),
        )
    return conn.execute(
        f"DELETE FROM return_trip WHERE peer NOT IN ({marks(len(peers))})", tuple(peers)
    ).rowcount


def _rows(cursor: sqlite3.Cursor) -> list[OutboxRow]:
    return [OutboxRow(*row) for row in cursor.fetchall()]


def due(conn: sqlite3.Connection, peers: Sequence[str], before: float) -> list[OutboxRow]:
    return _rows(
        conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM return_trip"
            f" WHERE due_at <= ? AND peer IN ({marks(len(peers))}) ORDER BY due_at, fingerprint",
            (before, *peers),
        )
    )


def next_due(conn: sqlite3.Connection, peers: Sequence[str]) -> dict[str, float]:
    # One indexed lookup per peer rather than a scan of every copy.
    found = {}
    for peer in peers:
        (due_at,) = conn.execute(
            "SELECT min(due_at) FROM return_trip WHERE peer = ?", (peer,)
        ).fetchone()
        if due_at is not None:
            found[peer] = float(due_at)
    return found


def count_due(conn: sqlite3.Connection, now: float) -> int:
    return int(
        conn.execute("SELECT count(*) FROM return_trip WHERE due_at <= ?", (now,)).fetchone()[0]
    )


def accepted(
    conn: sqlite3.Connection,
    peer: str,
    rows: Sequence[OutboxRow],
    now: float,
    firing_due: float,
    resolved_due: float,
) -> None:
    for row in rows:
        key = (peer, row.fingerprint, row.revision)
        if row.state == "resolved" and now >= (row.resolved_until or 0.0):
            conn.execute(
                "DELETE FROM return_trip WHERE peer = ? AND fingerprint = ? AND revision = ?",
                key,
            )
            continue
        conn.execute(
            "UPDATE return_trip SET due_at = ?, posted_at = ?"
            " WHERE peer = ? AND fingerprint = ? AND revision = ?",
            (firing_due if row.state == "firing" else resolved_due, now, *key),
        )


def refused(conn: sqlite3.Connection, row: OutboxRow) -> None:
    conn.execute(
        "DELETE FROM return_trip WHERE peer = ? AND fingerprint = ? AND revision = ?",
        (row.peer, row.fingerprint, row.revision),
    )


def all_rows(conn: sqlite3.Connection) -> list[OutboxRow]:
    return _rows(conn.execute(f"SELECT {_ROW_COLUMNS} FROM return_trip ORDER BY peer, fingerprint"))


def firing_members(conn: sqlite3.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT member, raw FROM return_trip WHERE state = 'firing'").fetchall()
    return dict(rows)


def firing_copies(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT fingerprint FROM return_trip WHERE state = 'firing'")
    return {row[0] for row in rows}


def delete_resolved_of(conn: sqlite3.Connection, incident_ids: Sequence[str]) -> int:
    """Delete the resolved copies of ``incident_ids`` (retention); how many went."""
    return conn.execute(
        "DELETE FROM return_trip WHERE state = 'resolved'"
        f" AND incident_id IN ({marks(len(incident_ids))})",
        tuple(incident_ids),
    ).rowcount
