"""SQL for alerts, the worker's cursor, incidents with their members, and feedback.

Each function takes a cursor inside a transaction the engine opened
(:mod:`ai_sidecar.store.postgres.engine`) and never commits. Encoding
(times, incident and member documents) is shared with the SQLite store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from ai_sidecar.models import (
    Alert,
    AlertStatus,
    Incident,
    IncidentStatus,
    Member,
    ReceivedAlert,
    incident_from_header,
    member_from_json,
)
from ai_sidecar.store import listing
from ai_sidecar.store.postgres.engine import Cursor
from ai_sidecar.store.protocol import Backlog, Feedback, IngestResult
from ai_sidecar.store.sqlite.incidents import (
    CREATED_BETWEEN,
    FIRING_STARTED,
    IncidentRows,
    encode_json,
    listing_query,
    stamp,
    unstamp,
)

_UPSERT_MEMBER = (
    "INSERT INTO incident_members (incident_id, fingerprint, position, doc)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT (incident_id, fingerprint) DO UPDATE SET"
    " position = excluded.position, doc = excluded.doc"
)
_UPSERT_INCIDENT = (
    "INSERT INTO incidents (id, status, priority, created_at, updated_at, resolved_at, doc)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
    " status = excluded.status, priority = excluded.priority,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at,"
    " resolved_at = excluded.resolved_at, doc = excluded.doc"
)
# One statement for a whole delivery, in its order: ON CONFLICT DO NOTHING
# skips what is stored already, repeats inside the delivery included.
_INSERT_ALERTS = (
    "INSERT INTO alerts (fingerprint, status, starts_at, doc, received_at)"
    " SELECT f, s, t, d, %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
    " WITH ORDINALITY AS a (f, s, t, d, n) ORDER BY n"
    " ON CONFLICT (fingerprint, status, starts_at) DO NOTHING"
)
_CURSOR = "(SELECT cursor FROM progress WHERE id = 0)"


# --- alerts and the cursor ------------------------------------------------------


def _alert_doc(alert: Alert) -> str:
    return encode_json(
        {
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "endsAt": None if alert.ends_at is None else stamp(alert.ends_at),
            "generatorURL": alert.generator_url,
        }
    )


async def insert_alerts(cur: Cursor, alerts: Sequence[Alert], received: str) -> IngestResult:
    fingerprints = [a.fingerprint for a in alerts]
    await cur.execute(
        _INSERT_ALERTS,
        (
            received,
            fingerprints,
            [a.status for a in alerts],
            [stamp(a.starts_at) for a in alerts],
            [_alert_doc(a) for a in alerts],
        ),
    )
    new = cur.rowcount
    return IngestResult(new=new, duplicates=len(alerts) - new)


def _row_to_alert(row: tuple[Any, ...]) -> ReceivedAlert:
    seq, fingerprint, status, starts_at, doc, received_at = row
    data = json.loads(doc)
    ends_at = data["endsAt"]
    alert = Alert(
        fingerprint=fingerprint,
        status=cast(AlertStatus, status),
        labels=data["labels"],
        annotations=data["annotations"],
        starts_at=unstamp(starts_at),
        ends_at=None if ends_at is None else unstamp(ends_at),
        generator_url=data["generatorURL"],
    )
    return ReceivedAlert(seq=seq, alert=alert, received_at=unstamp(received_at))


async def pending_alerts(cur: Cursor, limit: int) -> list[ReceivedAlert]:
    await cur.execute(
        "SELECT seq, fingerprint, status, starts_at, doc, received_at FROM alerts"
        f" WHERE seq > {_CURSOR} ORDER BY seq LIMIT %s",
        (limit,),
    )
    return [_row_to_alert(row) for row in await cur.fetchall()]


async def _one(cur: Cursor) -> Any:
    row = await cur.fetchone()
    assert row is not None  # aggregates and the progress row always answer
    return row[0]


async def move_cursor(cur: Cursor, to: int) -> None:
    """Set the worker's cursor; refused past the last seq ever handed out."""
    # The sequence remembers the highest seq handed out, even once pruned.
    await cur.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM alerts_seq_seq")
    last = int(await _one(cur))
    if not 0 <= to <= last:
        raise ValueError(f"cursor {to} is outside the stored alerts (0..{last})")
    await cur.execute("UPDATE progress SET cursor = %s WHERE id = 0", (to,))


async def backlog(cur: Cursor) -> Backlog:
    await cur.execute(f"SELECT count(*) FROM alerts WHERE seq > {_CURSOR}")
    depth = int(await _one(cur))
    await cur.execute(f"SELECT received_at FROM alerts WHERE seq > {_CURSOR} ORDER BY seq LIMIT 1")
    oldest = await cur.fetchone()
    return Backlog(depth=depth, oldest_received_at=None if oldest is None else unstamp(oldest[0]))


async def alert_count(cur: Cursor) -> int:
    await cur.execute("SELECT count(*) FROM alerts")
    return int(await _one(cur))


async def stored_episodes(cur: Cursor, fingerprints: Sequence[str]) -> set[tuple[str, datetime]]:
    await cur.execute(
        "SELECT fingerprint, starts_at FROM alerts WHERE fingerprint = ANY(%s)",
        (list(fingerprints),),
    )
    return {
        (str(fingerprint), unstamp(starts_at)) for fingerprint, starts_at in await cur.fetchall()
    }


# --- incidents ----------------------------------------------------------------------


async def write_incidents(cur: Cursor, rows: IncidentRows) -> None:
    await cur.executemany(_UPSERT_INCIDENT, rows.incidents)
    for incident_id, fingerprints in rows.rewritten:
        await cur.execute(
            "DELETE FROM incident_members WHERE incident_id = %s"
            " AND fingerprint NOT IN (SELECT unnest(%s::text[]))",
            (incident_id, list(fingerprints)),
        )
    await cur.executemany(_UPSERT_MEMBER, rows.members)
    await cur.executemany(listing.POSTGRES.upsert, rows.listings)


async def _load_incidents(cur: Cursor, headers: Sequence[tuple[Any, ...]]) -> list[Incident]:
    """Incidents from their header docs (in order), with their member rows."""
    parsed = [json.loads(doc) for (doc,) in headers]
    members: dict[str, list[Member]] = {data["id"]: [] for data in parsed}
    if parsed:
        await cur.execute(
            "SELECT incident_id, doc FROM incident_members WHERE incident_id = ANY(%s)"
            " ORDER BY incident_id, position",
            (list(members),),
        )
        for incident_id, doc in await cur.fetchall():
            members[incident_id].append(member_from_json(json.loads(doc)))
    return [incident_from_header(data, members[data["id"]]) for data in parsed]


async def active_incidents(cur: Cursor, since: str) -> list[Incident]:
    await cur.execute(
        "SELECT doc FROM incidents WHERE status = 'open'"
        " OR (status = 'resolved' AND resolved_at >= %s) ORDER BY created_at, id",
        (since,),
    )
    return await _load_incidents(cur, await cur.fetchall())


async def latest_update(cur: Cursor) -> datetime | None:
    await cur.execute("SELECT max(updated_at) FROM incidents")
    latest = await _one(cur)
    return None if latest is None else unstamp(latest)


async def incident_ids(cur: Cursor) -> list[str]:
    await cur.execute("SELECT id FROM incidents")
    return [row[0] for row in await cur.fetchall()]


async def list_incidents(
    cur: Cursor,
    status: IncidentStatus | None,
    since: str | None,
    limit: int,
    before: tuple[str, str] | None = None,
) -> list[Incident]:
    sql, params = listing_query(status, since, limit, mark="%s", before=before)
    await cur.execute(sql, params)
    return await _load_incidents(cur, await cur.fetchall())


async def firing_started_between(cur: Cursor, start: str, end: str) -> int:
    await cur.execute(FIRING_STARTED.format(mark="%s"), (start, end))
    return int(await _one(cur))


async def incidents_created_between(cur: Cursor, start: str, end: str) -> list[Incident]:
    await cur.execute(CREATED_BETWEEN.format(mark="%s"), (start, start, end))
    return await _load_incidents(cur, await cur.fetchall())


async def get_incident(cur: Cursor, incident_id: str) -> Incident | None:
    await cur.execute("SELECT doc FROM incidents WHERE id = %s", (incident_id,))
    row = await cur.fetchone()
    return None if row is None else (await _load_incidents(cur, [row]))[0]


# --- feedback -----------------------------------------------------------------------


async def add_feedback(cur: Cursor, incident_id: str, useful: bool, comment: str, at: str) -> bool:
    await cur.execute("SELECT 1 FROM incidents WHERE id = %s FOR SHARE", (incident_id,))
    if await cur.fetchone() is None:
        return False
    await cur.execute(
        "INSERT INTO feedback (incident_id, useful, comment, at) VALUES (%s, %s, %s, %s)",
        (incident_id, useful, encode_json(comment), at),
    )
    return True


async def feedback(cur: Cursor, incident_id: str) -> list[Feedback]:
    await cur.execute(
        "SELECT useful, comment, at FROM feedback WHERE incident_id = %s ORDER BY id",
        (incident_id,),
    )
    return [
        Feedback(incident_id, bool(useful), json.loads(comment), unstamp(at))
        for useful, comment, at in await cur.fetchall()
    ]


# --- retention ------------------------------------------------------------------------


async def prune_alerts(cur: Cursor, before: str, batch: int) -> int:
    """Delete up to ``batch`` processed alerts received before ``before``; how many went.

    Kept, as in the SQLite store: alerts above the cursor, and firing alerts
    whose fingerprint belongs to an open incident.
    """
    await cur.execute(
        "DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts"
        f" WHERE received_at < %s AND seq <= {_CURSOR}"
        " AND NOT (status = 'firing' AND fingerprint IN (SELECT m.fingerprint"
        " FROM incident_members AS m JOIN incidents AS i ON i.id = m.incident_id"
        " WHERE i.status = 'open'))"
        " ORDER BY received_at LIMIT %s)",
        (before, batch),
    )
    return cur.rowcount


async def resolved_before(cur: Cursor, before: str, batch: int) -> list[str]:
    """Ids of up to ``batch`` incidents resolved before ``before``, oldest first."""
    await cur.execute(
        "SELECT id FROM incidents WHERE status = 'resolved' AND resolved_at < %s"
        " ORDER BY resolved_at LIMIT %s",
        (before, batch),
    )
    return [row[0] for row in await cur.fetchall()]


async def delete_incidents(cur: Cursor, ids: Sequence[str]) -> tuple[int, int, int]:
    """Delete incidents ``ids`` with their members and feedback; rows removed as
    (incidents, members, feedback)."""
    await cur.execute(listing.POSTGRES.delete_of, (list(ids),))
    counts = []
    for sql in (
        "DELETE FROM feedback WHERE incident_id = ANY(%s)",
        "DELETE FROM incident_members WHERE incident_id = ANY(%s)",
        "DELETE FROM incidents WHERE id = ANY(%s)",
    ):
        await cur.execute(sql, (list(ids),))
        counts.append(cur.rowcount)
    feedback_rows, members, incidents = counts
    return incidents, members, feedback_rows
