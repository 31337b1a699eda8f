"""SQL for the return trip's outbox: one row per Alertmanager peer and enriched copy.

What the rows mean, and when a copy is posted, is the return trip's business
(:mod:`ai_sidecar.notify`); this module only keeps them. Times are Unix
seconds. Every function runs inside a transaction the engine opened.

A copy's text (the postable alert and the raw alert, about 2 kB of JSON) is
the same for every peer, so it is kept once, zlib-compressed, in
``return_trip_copies``; ``return_trip`` holds each peer's schedule of it. The
text goes when the copy's last peer row does. Rows are never without their
text: whatever deletes peer rows calls :func:`_forget_unused_copies`.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from ai_sidecar.store.protocol import OutboxCopy, OutboxPlan, OutboxRow
from ai_sidecar.store.sqlite.incidents import MAX_PARAMETERS, marks

# Enriched copies written per transaction by enqueue: the write lock is shared
# with the webhook, so no write may hold it for long.
ROWS_PER_TRANSACTION = 100

# zlib's default level: the copies compress to about 45 %; higher levels gain
# little more and cost the writer thread time under the write lock.
_PACK_LEVEL = 6

_ROW_COLUMNS = (
    "t.peer, t.fingerprint, t.incident_id, t.member, t.state, c.alert, c.raw, t.ends_at,"
    " t.resolved_until, t.due_at, t.posted_at, t.revision"
)
_ROWS_WITH_TEXT = "return_trip AS t JOIN return_trip_copies AS c ON c.fingerprint = t.fingerprint"


def _pack(text: str) -> bytes:
    return zlib.compress(text.encode(), _PACK_LEVEL)


def _unpack(stored: bytes | str) -> str:
    """The text of a ``return_trip_copies`` column (plain text in migrated rows)."""
    return stored if isinstance(stored, str) else zlib.decompress(stored).decode()


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
                _upsert_firing(conn, peers, want, now)
                continue
            # The current copy carries the latest annotations into its resolution.
            conn.execute(
                "UPDATE return_trip_copies SET alert = ? WHERE fingerprint = ? AND EXISTS"
                " (SELECT 1 FROM return_trip WHERE fingerprint = ? AND state = 'firing')",
                (_pack(want.alert), want.fingerprint, want.fingerprint),
            )
            _resolve_rows(
                conn,
                "incident_id = ? AND member = ?",
                (want.incident_id, want.member),
                ends_at=want.ends_at if want.ends_at is not None else now,
                now=now,
                repeat_for=repeat_for,
            )


def _upsert_firing(
    conn: sqlite3.Connection, peers: Sequence[str], want: OutboxCopy, now: float
) -> None:
    stored = conn.execute(
        "SELECT alert FROM return_trip_copies WHERE fingerprint = ?", (want.fingerprint,)
    ).fetchone()
    new_text = stored is None or _unpack(stored[0]) != want.alert
    rows = {
        peer: (state, incident_id)
        for peer, state, incident_id in conn.execute(
            "SELECT peer, state, incident_id FROM return_trip WHERE fingerprint = ?",
            (want.fingerprint,),
        )
    }
    missing = [peer for peer in peers if peer not in rows]
    # New annotations (a better analysis) or a re-fire: post now.
    stale = [
        peer
        for peer in peers
        if peer in rows and (new_text or rows[peer] != ("firing", want.incident_id))
    ]
    if not missing and not stale:
        return  # nothing new: the keep-alive schedule stands
    conn.execute(
        "INSERT INTO return_trip_copies (fingerprint, alert, raw) VALUES (?, ?, ?)"
        " ON CONFLICT (fingerprint) DO UPDATE SET alert = excluded.alert, raw = excluded.raw",
        (want.fingerprint, _pack(want.alert), _pack(want.raw)),
    )
    for peer in missing:
        conn.execute(
            "INSERT INTO return_trip (peer, fingerprint, incident_id, member, state, due_at)"
            " VALUES (?, ?, ?, ?, 'firing', ?)",
            (peer, want.fingerprint, want.incident_id, want.member, now),
        )
    for peer in stale:
        conn.execute(
            "UPDATE return_trip SET state = 'firing', incident_id = ?, member = ?,"
            " ends_at = NULL, resolved_until = NULL, due_at = ?, posted_at = NULL,"
            " revision = revision + 1 WHERE peer = ? AND fingerprint = ?",
            (want.incident_id, want.member, now, peer, want.fingerprint),
        )


def _forget_unused_copies(conn: sqlite3.Connection, fingerprints: Iterable[str]) -> None:
    """Delete the text of those ``fingerprints`` no peer row refers to any more."""
    unique = list(dict.fromkeys(fingerprints))
    for start in range(0, len(unique), MAX_PARAMETERS):
        part = unique[start : start + MAX_PARAMETERS]
        conn.execute(
            f"DELETE FROM return_trip_copies WHERE fingerprint IN ({marks(len(part))})"
            " AND NOT EXISTS (SELECT 1 FROM return_trip AS t"
            " WHERE t.fingerprint = return_trip_copies.fingerprint)",
            part,
        )


def sync_peers(conn: sqlite3.Connection, peers: Sequence[str], now: float) -> int:
    """Give peers new to the table every current copy; forget peers no longer configured."""
    for peer in peers:
        # Each copy some other peer has and this one lacks, due now.
        conn.execute(
            "INSERT OR IGNORE INTO return_trip (peer, fingerprint, incident_id, member, state,"
            " ends_at, resolved_until, due_at)"
            " SELECT ?, fingerprint, incident_id, member, state, ends_at,"
            " resolved_until, ? FROM return_trip AS t WHERE peer != ?"
            " AND NOT EXISTS (SELECT 1 FROM return_trip WHERE peer = ?"
            " AND fingerprint = t.fingerprint)",
            (peer, now, peer, peer),
        )
    dropped = conn.execute(
        f"DELETE FROM return_trip WHERE peer NOT IN ({marks(len(peers))}) RETURNING fingerprint",
        tuple(peers),
    ).fetchall()
    _forget_unused_copies(conn, (fingerprint for (fingerprint,) in dropped))
    return len(dropped)


def _rows(cursor: sqlite3.Cursor) -> list[OutboxRow]:
    rows = []
    for peer, fingerprint, incident_id, member, state, alert, raw, *schedule in cursor:
        ends_at, resolved_until, due_at, posted_at, revision = schedule
        rows.append(
            OutboxRow(
                peer,
                fingerprint,
                incident_id,
                member,
                state,
                _unpack(alert),
                _unpack(raw),
                ends_at,
                resolved_until,
                due_at,
                posted_at,
                revision,
            )
        )
    return rows


def due(
    conn: sqlite3.Connection, peers: Sequence[str], before: float, beyond: float | None = None
) -> list[OutboxRow]:
    def rows(condition: str, at: float) -> list[OutboxRow]:
        return _rows(
            conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM {_ROWS_WITH_TEXT}"
                f" WHERE t.due_at {condition} ? AND t.peer IN ({marks(len(peers))})"
                " ORDER BY t.due_at, t.fingerprint",
                (at, *peers),
            )
        )

    # Two queries, not one with OR: each is a range of the (peer, due_at)
    # index, where the OR scans every row of the peers. The second's rows
    # are all due later than the first's, so the order holds.
    found = rows("<=", before)
    if beyond is not None:
        found += rows(">", max(beyond, before))
    return found


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
    done = []
    for row in rows:
        key = (peer, row.fingerprint, row.revision)
        if row.state == "resolved" and now >= (row.resolved_until or 0.0):
            conn.execute(
                "DELETE FROM return_trip WHERE peer = ? AND fingerprint = ? AND revision = ?",
                key,
            )
            done.append(row.fingerprint)
            continue
        conn.execute(
            "UPDATE return_trip SET due_at = ?, posted_at = ?"
            " WHERE peer = ? AND fingerprint = ? AND revision = ?",
            (firing_due if row.state == "firing" else resolved_due, now, *key),
        )
    _forget_unused_copies(conn, done)


def refused(conn: sqlite3.Connection, row: OutboxRow) -> None:
    conn.execute(
        "DELETE FROM return_trip WHERE peer = ? AND fingerprint = ? AND revision = ?",
        (row.peer, row.fingerprint, row.revision),
    )
    _forget_unused_copies(conn, [row.fingerprint])


def all_rows(conn: sqlite3.Connection) -> list[OutboxRow]:
    return _rows(
        conn.execute(f"SELECT {_ROW_COLUMNS} FROM {_ROWS_WITH_TEXT} ORDER BY t.peer, t.fingerprint")
    )


def firing_members(conn: sqlite3.Connection) -> dict[str, str]:
    rows = conn.execute(
        f"SELECT DISTINCT t.member, c.raw FROM {_ROWS_WITH_TEXT} WHERE t.state = 'firing'"
    ).fetchall()
    return {member: _unpack(raw) for member, raw in rows}


def firing_copies(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT fingerprint FROM return_trip WHERE state = 'firing'")
    return {row[0] for row in rows}


def delete_resolved_of(conn: sqlite3.Connection, incident_ids: Sequence[str]) -> int:
    """Delete the resolved copies of ``incident_ids`` (retention); how many went."""
    deleted = conn.execute(
        "DELETE FROM return_trip WHERE state = 'resolved'"
        f" AND incident_id IN ({marks(len(incident_ids))}) RETURNING fingerprint",
        tuple(incident_ids),
    ).fetchall()
    _forget_unused_copies(conn, (fingerprint for (fingerprint,) in deleted))
    return len(deleted)
