"""SQL for alerts, the worker's cursor, incidents with their members, and feedback.

Each function takes a connection inside a transaction the engine opened
(:mod:`ai_sidecar.store.sqlite.engine`) and never commits. Times are stored as
fixed-width UTC text (:func:`stamp`), so text order is time order.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from ai_sidecar.i18n import SOURCE_LANGUAGE
from ai_sidecar.models import (
    Alert,
    AlertStatus,
    Incident,
    IncidentStatus,
    Member,
    ReceivedAlert,
    incident_from_header,
    incident_header_to_json,
    member_from_json,
    member_to_json,
)
from ai_sidecar.store.protocol import Backlog, Feedback, IngestResult

_INSERT_ALERT = (
    "INSERT OR IGNORE INTO alerts (fingerprint, status, starts_at, labels, annotations,"
    " ends_at, generator_url, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_ALERT_COLUMNS = (
    "seq, fingerprint, status, starts_at, labels, annotations, ends_at, generator_url, received_at"
)
_UPSERT_MEMBER = (
    "INSERT INTO incident_members (incident_id, fingerprint, position, doc) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (incident_id, fingerprint) DO UPDATE SET"
    " position = excluded.position, doc = excluded.doc"
)
_UPSERT_INCIDENT = (
    "INSERT INTO incidents (id, status, priority, created_at, updated_at, resolved_at, doc)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
    " status = excluded.status, priority = excluded.priority,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at,"
    " resolved_at = excluded.resolved_at, doc = excluded.doc"
)
# SQLite's limit on bound parameters per statement, with room to spare.
MAX_PARAMETERS = 500

# Compact JSON; ASCII-only output keeps any odd code point out of SQLite's UTF-8.
encode_json = json.JSONEncoder(separators=(",", ":")).encode


def stamp(value: datetime) -> str:
    """A fixed-width UTC text form: equal instants give equal text, and text order is time order.

    A naive datetime is taken to be UTC already.
    """
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def unstamp(text: str) -> datetime:
    # The trailing "Z" makes this an aware UTC datetime.
    return datetime.fromisoformat(text)


def _opt_stamp(value: datetime | None) -> str | None:
    return None if value is None else stamp(value)


def _as_dict(mapping: Mapping[str, str]) -> dict[str, str]:
    return mapping if isinstance(mapping, dict) else dict(mapping)


def marks(count: int) -> str:
    """``?,?,?`` for an ``IN (...)`` of ``count`` values."""
    return ",".join("?" * count)


# --- alerts and the cursor ------------------------------------------------------


# Fingerprints per query of stored episodes: well below SQLite's variable limit.
EPISODE_BATCH = 500

AlertRow = tuple[str, str, str, str, str, str | None, str, str]


def alert_rows(alerts: Sequence[Alert], received: str) -> list[AlertRow]:
    """``alerts`` encoded as rows of the alerts table, before the transaction."""
    return [
        (
            a.fingerprint,
            a.status,
            stamp(a.starts_at),
            encode_json(_as_dict(a.labels)),
            encode_json(_as_dict(a.annotations)),
            None if a.ends_at is None else stamp(a.ends_at),
            a.generator_url,
            received,
        )
        for a in alerts
    ]


def insert_alert_rows(conn: sqlite3.Connection, rows: Sequence[AlertRow]) -> IngestResult:
    # For INSERT OR IGNORE, rowcount counts only the rows really inserted.
    new = conn.executemany(_INSERT_ALERT, rows).rowcount
    return IngestResult(new=new, duplicates=len(rows) - new)


def stored_episodes(
    conn: sqlite3.Connection, fingerprints: Sequence[str]
) -> set[tuple[str, datetime]]:
    found: set[tuple[str, datetime]] = set()
    for start in range(0, len(fingerprints), EPISODE_BATCH):
        batch = fingerprints[start : start + EPISODE_BATCH]
        rows = conn.execute(
            f"SELECT fingerprint, starts_at FROM alerts WHERE fingerprint IN ({marks(len(batch))})",
            batch,
        )
        found.update((fingerprint, unstamp(starts_at)) for fingerprint, starts_at in rows)
    return found


def _row_to_alert(row: tuple[Any, ...]) -> ReceivedAlert:
    seq, fingerprint, status, starts_at, labels, annotations, ends_at, url, received_at = row
    alert = Alert(
        fingerprint=fingerprint,
        status=cast(AlertStatus, status),
        labels=json.loads(labels),
        annotations=json.loads(annotations),
        starts_at=unstamp(starts_at),
        ends_at=None if ends_at is None else unstamp(ends_at),
        generator_url=url,
    )
    return ReceivedAlert(seq=seq, alert=alert, received_at=unstamp(received_at))


def pending_alerts(conn: sqlite3.Connection, limit: int) -> list[ReceivedAlert]:
    rows = conn.execute(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE seq > "
        "(SELECT cursor FROM progress WHERE id = 0) ORDER BY seq LIMIT ?",
        (limit,),
    ).fetchall()
    return [_row_to_alert(row) for row in rows]


def cursor(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT cursor FROM progress WHERE id = 0").fetchone()[0])


def move_cursor(conn: sqlite3.Connection, to: int) -> None:
    """Set the worker's cursor; refused past the last seq ever handed out."""
    # AUTOINCREMENT keeps the highest seq ever used here, even once pruned.
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'alerts'").fetchone()
    last = 0 if row is None else int(row[0])
    if not 0 <= to <= last:
        raise ValueError(f"cursor {to} is outside the stored alerts (0..{last})")
    conn.execute("UPDATE progress SET cursor = ? WHERE id = 0", (to,))


def backlog(conn: sqlite3.Connection) -> Backlog:
    above = cursor(conn)
    depth = conn.execute("SELECT count(*) FROM alerts WHERE seq > ?", (above,)).fetchone()
    oldest = conn.execute(
        "SELECT received_at FROM alerts WHERE seq > ? ORDER BY seq LIMIT 1", (above,)
    ).fetchone()
    return Backlog(
        depth=int(depth[0]),
        oldest_received_at=None if oldest is None else unstamp(oldest[0]),
    )


def alert_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM alerts").fetchone()[0])


# Through the received_at index both stores have.
FIRING_STARTED = (
    "SELECT count(*) FROM alerts WHERE starts_at >= {mark} AND starts_at < {mark}"
    " AND status = 'firing'"
)


def firing_started_between(conn: sqlite3.Connection, start: str, end: str) -> int:
    return int(conn.execute(FIRING_STARTED.format(mark="?"), (start, end)).fetchone()[0])


# --- incidents ----------------------------------------------------------------------


def _incident_row(incident: Incident) -> tuple[Any, ...]:
    resolved_at = incident.resolved_at
    if resolved_at is None and incident.status == "resolved":
        # The reload filter compares resolved_at; a resolved incident always has one.
        resolved_at = incident.updated_at
    return (
        incident.id,
        incident.status,
        incident.priority,
        stamp(incident.created_at),
        stamp(incident.updated_at),
        _opt_stamp(resolved_at),
        encode_json(incident_header_to_json(incident)),
    )


SavedMembers = dict[str, Mapping[str, Member]]


@dataclass(frozen=True, slots=True)
class IncidentRows:
    """Incidents encoded for the store, ready for a short transaction."""

    incidents: list[tuple[Any, ...]]
    members: list[tuple[Any, ...]]
    # Their rows of the console's list (ai_sidecar.store.listing).
    listings: list[tuple[Any, ...]]
    # Incidents written in full: rows of members they no longer have go.
    rewritten: list[tuple[str, tuple[str, ...]]]
    written: SavedMembers


def encode_incidents(
    incidents: Sequence[Incident], saved: SavedMembers, language: str = SOURCE_LANGUAGE
) -> IncidentRows:
    """Encode ``incidents``, and of their members only those changed since ``saved``;
    their list rows with titles in ``language``.

    ``saved`` holds the members last committed per incident; an incident not in
    it has all its members written. Encoding happens before the transaction, so
    the write lock (shared with the webhook) is held for the SQL alone.
    """
    # Here, not at the top: the listing module imports this one.
    from ai_sidecar.store.listing import listing_row

    members = []
    rewritten = []
    written: SavedMembers = {}
    for incident in incidents:
        before = saved.get(incident.id)
        if before is None:
            rewritten.append((incident.id, tuple(incident.members)))
            before = {}
        for position, (fingerprint, member) in enumerate(incident.members.items()):
            # Unchanged members are the very same (immutable) objects.
            old = before.get(fingerprint)
            if old is not member and old != member:
                doc = encode_json(member_to_json(member))
                members.append((incident.id, fingerprint, position, doc))
        written[incident.id] = incident.members
    return IncidentRows(
        [_incident_row(i) for i in incidents],
        members,
        [listing_row(i, language) for i in incidents],
        rewritten,
        written,
    )


def forget_saved(saved: SavedMembers, incidents: Sequence[Incident]) -> None:
    """A write of ``incidents`` failed: unknown what is stored, so write them in full next time."""
    for incident in incidents:
        saved.pop(incident.id, None)


def remember_saved(
    saved: SavedMembers, written: SavedMembers, incidents: Sequence[Incident]
) -> None:
    """A write of ``incidents`` committed ``written``; resolved incidents rarely change
    again, so their members are not held."""
    saved.update(written)
    for incident in incidents:
        if incident.status == "resolved":
            saved.pop(incident.id, None)


def write_incidents(conn: sqlite3.Connection, rows: IncidentRows) -> SavedMembers:
    from ai_sidecar.store import listing  # see encode_incidents

    conn.executemany(_UPSERT_INCIDENT, rows.incidents)
    for incident_id, fingerprints in rows.rewritten:
        conn.execute(
            "DELETE FROM incident_members WHERE incident_id = ?"
            f" AND fingerprint NOT IN ({marks(len(fingerprints))})",
            (incident_id, *fingerprints),
        )
    conn.executemany(_UPSERT_MEMBER, rows.members)
    conn.executemany(listing.SQLITE.upsert, rows.listings)
    return rows.written


def _load_incidents(conn: sqlite3.Connection, headers: Sequence[tuple[str]]) -> list[Incident]:
    """Incidents from their header docs (in order), with their member rows."""
    parsed = [json.loads(doc) for (doc,) in headers]
    members: dict[str, list[Member]] = {data["id"]: [] for data in parsed}
    for start in range(0, len(parsed), MAX_PARAMETERS):
        ids = [data["id"] for data in parsed[start : start + MAX_PARAMETERS]]
        for incident_id, doc in conn.execute(
            "SELECT incident_id, doc FROM incident_members"
            f" WHERE incident_id IN ({marks(len(ids))}) ORDER BY incident_id, position",
            ids,
        ):
            members[incident_id].append(member_from_json(json.loads(doc)))
    return [incident_from_header(data, members[data["id"]]) for data in parsed]


def active_incidents(conn: sqlite3.Connection, since: str) -> list[Incident]:
    rows = conn.execute(
        "SELECT doc FROM incidents WHERE status = 'open'"
        " OR (status = 'resolved' AND resolved_at >= ?)"
        " ORDER BY created_at, id",
        (since,),
    ).fetchall()
    return _load_incidents(conn, rows)


def latest_update(conn: sqlite3.Connection) -> datetime | None:
    row = conn.execute("SELECT max(updated_at) FROM incidents").fetchone()
    return None if row[0] is None else unstamp(row[0])


def incident_ids(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM incidents")]


def listing_query(
    status: IncidentStatus | None,
    since: str | None,
    limit: int,
    mark: str = "?",
    before: tuple[str, str] | None = None,
) -> tuple[str, list[Any]]:
    """The SQL (with ``mark`` as its placeholder) and parameters that list incident docs,
    most recently updated first; shared with the PostgreSQL store."""
    where: list[str] = []
    params: list[Any] = []
    if status is not None:
        where.append(f"status = {mark}")
        params.append(status)
    if since is not None:
        where.append(f"updated_at >= {mark}")
        params.append(since)
    if before is not None:
        # Keyset paging: the rows after (updated_at, id) in the order below,
        # so a page never repeats or skips a row whatever ties updated_at has.
        where.append(f"(updated_at < {mark} OR (updated_at = {mark} AND id < {mark}))")
        params.extend([before[0], before[0], before[1]])
    sql = "SELECT doc FROM incidents"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY updated_at DESC, id DESC LIMIT {mark}"
    params.append(limit)
    return sql, params


def list_incidents(
    conn: sqlite3.Connection,
    status: IncidentStatus | None,
    since: str | None,
    limit: int,
    before: tuple[str, str] | None = None,
) -> list[Incident]:
    sql, params = listing_query(status, since, limit, before=before)
    return _load_incidents(conn, conn.execute(sql, params).fetchall())


# An incident is updated at or after its creation, so ``updated_at >= start``
# narrows the scan through the updated_at index that every store already has
# (no index on created_at, no migration); the period is then exact on created_at.
CREATED_BETWEEN = (
    "SELECT doc FROM incidents WHERE updated_at >= {mark} AND created_at >= {mark}"
    " AND created_at < {mark} ORDER BY created_at, id"
)


def incidents_created_between(conn: sqlite3.Connection, start: str, end: str) -> list[Incident]:
    rows = conn.execute(CREATED_BETWEEN.format(mark="?"), (start, start, end)).fetchall()
    return _load_incidents(conn, rows)


def get_incident(conn: sqlite3.Connection, incident_id: str) -> Incident | None:
    row = conn.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    return None if row is None else _load_incidents(conn, [row])[0]


# --- feedback -----------------------------------------------------------------------


def add_feedback(
    conn: sqlite3.Connection, incident_id: str, useful: bool, comment: str, at: str
) -> bool:
    if conn.execute("SELECT 1 FROM incidents WHERE id = ?", (incident_id,)).fetchone() is None:
        return False
    conn.execute(
        "INSERT INTO feedback (incident_id, useful, comment, at) VALUES (?, ?, ?, ?)",
        (incident_id, int(useful), comment, at),
    )
    return True


def feedback(conn: sqlite3.Connection, incident_id: str) -> list[Feedback]:
    rows = conn.execute(
        "SELECT useful, comment, at FROM feedback WHERE incident_id = ? ORDER BY id",
        (incident_id,),
    ).fetchall()
    return [
        Feedback(incident_id, bool(useful), comment, unstamp(at)) for useful, comment, at in rows
    ]


# --- retention ------------------------------------------------------------------------


def prune_alerts(conn: sqlite3.Connection, before: str, batch: int) -> int:
    """Delete up to ``batch`` processed alerts received before ``before``; how many went.

    Kept: alerts above the cursor (not folded yet), and firing alerts whose
    fingerprint belongs to an open incident: Alertmanager re-sends a firing
    alert for as long as it fires, and without its row the re-delivery would be
    stored and folded again as if new.
    """
    return conn.execute(
        "DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts"
        " WHERE received_at < ? AND seq <= (SELECT cursor FROM progress WHERE id = 0)"
        " AND NOT (status = 'firing' AND fingerprint IN (SELECT m.fingerprint"
        " FROM incident_members AS m JOIN incidents AS i ON i.id = m.incident_id"
        " WHERE i.status = 'open'))"
        " ORDER BY received_at LIMIT ?)",
        (before, batch),
    ).rowcount


def resolved_before(conn: sqlite3.Connection, before: str, batch: int) -> list[str]:
    """Ids of up to ``batch`` incidents resolved before ``before``, oldest first."""
    rows = conn.execute(
        "SELECT id FROM incidents WHERE status = 'resolved' AND resolved_at < ?"
        " ORDER BY resolved_at LIMIT ?",
        (before, batch),
    )
    return [row[0] for row in rows]


def delete_incidents(conn: sqlite3.Connection, ids: Sequence[str]) -> tuple[int, int, int]:
    """Delete incidents ``ids`` (at most :data:`MAX_PARAMETERS`) with their members and
    feedback; rows removed as (incidents, members, feedback)."""
    where = f"IN ({marks(len(ids))})"
    feedback_rows = conn.execute(f"DELETE FROM feedback WHERE incident_id {where}", ids).rowcount
    members = conn.execute(f"DELETE FROM incident_members WHERE incident_id {where}", ids).rowcount
    conn.execute(f"DELETE FROM incident_listing WHERE id {where}", ids)
    incidents = conn.execute(f"DELETE FROM incidents WHERE id {where}", ids).rowcount
    return incidents, members, feedback_rows
