"""The SQLite store's tables, and the migrations that bring any older file up to date.

``PRAGMA user_version`` holds the schema version of a file. At start-up
:func:`migrate` runs, in one transaction, every step above the file's version:

- **1**: the tables of the first release: alerts, the worker's cursor,
  incidents, their members, feedback and the return trip's outbox. Every
  statement is ``IF NOT EXISTS``: files of that release exist with version 1
  or, older still, with no version stamp (0), some without the outbox table,
  and this step completes any of them.
- **2**: an index on ``alerts.received_at``, for retention.
- **3**: the outbox keeps each enriched copy's text once, in
  ``return_trip_copies``, instead of once per peer in ``return_trip``; new
  text is stored zlib-compressed (:mod:`~ai_sidecar.store.sqlite.outbox`).
  About 2 kB of JSON per copy and peer had made the outbox most of the file,
  more so as a row that large spills into an overflow page of its own in a
  table without rowid.
- **4**: ``llm_exchanges``, the LLM audit (:mod:`ai_sidecar.store.exchanges`).
- **5**: ``incident_actions``, what people did from the console
  (:mod:`ai_sidecar.store.actions`), and an index of feedback by time.
- **6**: ``console_users``, ``console_sessions`` and ``console_login_failures``
  (:mod:`ai_sidecar.store.accounts`).
- **7**: ``incident_listing``, a summary row per incident for the console's
  list (:mod:`ai_sidecar.store.listing`); the rows of incidents stored before
  it are written when the store opens.
- **8**: ``report_digests``, which scheduled report digests were sent and who
  is sending one (:mod:`ai_sidecar.store.digests`).
- **9**: ``console_preferences``, the console language each user chose
  (:mod:`ai_sidecar.store.accounts`).

A file stamped with a version above :data:`SCHEMA_VERSION` was written by a
newer Scout and is refused untouched (:class:`SchemaVersionError`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ai_sidecar.store.protocol import SchemaVersionError

_VERSION_1 = """
CREATE TABLE IF NOT EXISTS alerts (
    -- AUTOINCREMENT: a seq is never reused, even after pruning the newest rows,
    -- so an alert can never land below the worker's cursor and be skipped.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    ends_at TEXT,
    generator_url TEXT NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (fingerprint, status, starts_at)
);
CREATE TABLE IF NOT EXISTS progress (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    cursor INTEGER NOT NULL
);
INSERT OR IGNORE INTO progress (id, cursor) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    resolved_at TEXT,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS incidents_updated ON incidents (updated_at);
CREATE INDEX IF NOT EXISTS incidents_status_updated ON incidents (status, updated_at);
CREATE INDEX IF NOT EXISTS incidents_status_resolved ON incidents (status, resolved_at);
CREATE INDEX IF NOT EXISTS incidents_priority ON incidents (priority, updated_at);
-- Members apart from their incident: a storm changes a few members of a big
-- incident per batch, and only those rows are rewritten.
CREATE TABLE IF NOT EXISTS incident_members (
    incident_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    -- The order members joined in, which the API keeps.
    position INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (incident_id, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    useful INTEGER NOT NULL,
    comment TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_incident ON feedback (incident_id, id);
-- The return trip's outbox (ai_sidecar.store.protocol.OutboxRow).
CREATE TABLE IF NOT EXISTS return_trip (
    peer TEXT NOT NULL,
    -- The enriched copy's label-set fingerprint, as Alertmanager computes it.
    fingerprint TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    -- The raw alert's fingerprint (the incident member).
    member TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
    -- The postable alert as JSON without endsAt, which is set at each post.
    alert TEXT NOT NULL,
    -- The raw alert as JSON (labels, annotations, startsAt, generatorURL), to
    -- hand a resolution to the pipeline when reconciliation finds it gone.
    raw TEXT NOT NULL,
    -- Unix seconds. resolved: when it resolved, and until when to repeat it.
    ends_at REAL,
    resolved_until REAL,
    due_at REAL NOT NULL,
    posted_at REAL,
    -- Bumped by every change of the copy; a post only reschedules the
    -- revision it sent, so a change made meanwhile is never overwritten.
    revision INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, fingerprint)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS return_trip_due ON return_trip (due_at);
CREATE INDEX IF NOT EXISTS return_trip_peer_due ON return_trip (peer, due_at);
CREATE INDEX IF NOT EXISTS return_trip_member ON return_trip (member);
CREATE INDEX IF NOT EXISTS return_trip_incident ON return_trip (incident_id);
"""

_VERSION_2 = """
-- Retention finds the oldest alerts without reading them all.
CREATE INDEX IF NOT EXISTS alerts_received ON alerts (received_at);
"""

_VERSION_3 = """
-- One row per enriched copy: its text, shared by the copy's rows of every peer.
-- A rowid table: rows of a kilobyte or more pack several to a page here.
CREATE TABLE return_trip_copies (
    fingerprint TEXT PRIMARY KEY,
    -- zlib-compressed UTF-8 JSON (BLOB); JSON text in rows migrated from version 2.
    alert BLOB NOT NULL,
    raw BLOB NOT NULL
);
INSERT INTO return_trip_copies (fingerprint, alert, raw)
    SELECT fingerprint, alert, raw FROM return_trip AS t
    WHERE revision = (SELECT max(revision) FROM return_trip WHERE fingerprint = t.fingerprint)
    GROUP BY fingerprint;
CREATE TABLE return_trip_peers (
    peer TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    member TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
    ends_at REAL,
    resolved_until REAL,
    due_at REAL NOT NULL,
    posted_at REAL,
    revision INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, fingerprint)
) WITHOUT ROWID;
INSERT INTO return_trip_peers
    SELECT peer, fingerprint, incident_id, member, state, ends_at, resolved_until, due_at,
    posted_at, revision FROM return_trip;
DROP TABLE return_trip;
ALTER TABLE return_trip_peers RENAME TO return_trip;
CREATE INDEX return_trip_due ON return_trip (due_at);
CREATE INDEX return_trip_peer_due ON return_trip (peer, due_at);
CREATE INDEX return_trip_member ON return_trip (member);
CREATE INDEX return_trip_incident ON return_trip (incident_id);
-- Whether any peer still has a copy, when one peer's row goes.
CREATE INDEX return_trip_fingerprint ON return_trip (fingerprint);
"""

_VERSION_4 = """
-- The LLM audit: one row per exchange, the exchange as ASCII JSON in doc.
-- Kept for llm.audit_retention, apart from the incidents' retention.
CREATE TABLE llm_exchanges (
    id INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL,
    at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX llm_exchanges_at ON llm_exchanges (at);
CREATE INDEX llm_exchanges_incident ON llm_exchanges (incident_id, at);
"""

_VERSION_5 = """
-- What people did from the console (ai_sidecar.store.actions), and reports
-- that read feedback over a period.
CREATE TABLE IF NOT EXISTS incident_actions (
    id INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_actions_incident ON incident_actions (incident_id, id);
CREATE INDEX IF NOT EXISTS incident_actions_at ON incident_actions (at);
CREATE INDEX IF NOT EXISTS feedback_at ON feedback (at);
"""

_VERSION_6 = """
-- The console's users, sessions and failed sign-ins (ai_sidecar.store.accounts).
CREATE TABLE console_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator')),
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE console_sessions (
    -- SHA-256 of the cookie's id, never the id itself.
    key TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    credential TEXT NOT NULL,
    created_at TEXT NOT NULL,
    seen_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_user ON console_sessions (user_name);
CREATE TABLE console_login_failures (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX console_login_failures_key ON console_login_failures (key, at);
CREATE INDEX console_login_failures_at ON console_login_failures (at);
"""

_VERSION_7 = """
-- The console's incident list (ai_sidecar.store.listing): the columns it filters
-- and shows, apart from the incident's document, so a page reads no document.
-- A rowid table: its rows (a kilobyte of search text) pack several to a page,
-- which halves a search's scan and makes a deep page's offset a walk of the index.
CREATE TABLE incident_listing (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    resolved_at TEXT,
    site TEXT NOT NULL,
    -- The notifications' plain-words title, and the root cause in words.
    title TEXT NOT NULL,
    cause TEXT NOT NULL,
    members INTEGER NOT NULL,
    firing INTEGER NOT NULL,
    analyst TEXT NOT NULL,
    -- Case-folded title, root cause and member labels, for the text search.
    search TEXT NOT NULL
);
-- Newest first, whole or narrowed by status, priority or site.
CREATE INDEX incident_listing_created ON incident_listing (created_at, id);
CREATE INDEX incident_listing_status ON incident_listing (status, created_at, id);
CREATE INDEX incident_listing_priority ON incident_listing (priority, created_at, id);
CREATE INDEX incident_listing_site ON incident_listing (site, created_at, id);
"""

_VERSION_8 = """
-- Scheduled report digests: one row per slot, claimed by the replica sending it
-- (ai_sidecar.store.digests).
CREATE TABLE report_digests (
    slot TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    claimed_until TEXT NOT NULL,
    done_at TEXT
) WITHOUT ROWID;
"""

# Step n brings a file from version n - 1 to n.
_VERSION_9 = """
-- The console language each user chose (ai_sidecar.store.accounts).
CREATE TABLE console_preferences (
    user_name TEXT PRIMARY KEY,
    language TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
"""

MIGRATIONS: tuple[str, ...] = (
    _VERSION_1,
    _VERSION_2,
    _VERSION_3,
    _VERSION_4,
    _VERSION_5,
    _VERSION_6,
    _VERSION_7,
    _VERSION_8,
    _VERSION_9,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The version stamped in the open file (0: none, a new file or the first release's)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file behind ``conn`` (outside any transaction) to :data:`SCHEMA_VERSION`."""
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"cannot use the store {path}: it has schema version {version}, "
            f"newer than this Scout's {SCHEMA_VERSION}"
        )
    # Step 1 again on a version-1 file: the first release could leave it
    # without the outbox table, and every statement of it is idempotent.
    steps = MIGRATIONS[0 if version <= 1 else version :]
    if not steps:
        return
    # Transaction control lives inside the script: executescript() commits
    # any transaction already open before it runs.
    script = "\n".join(
        ("BEGIN IMMEDIATE;", *steps, f"PRAGMA user_version={SCHEMA_VERSION};", "COMMIT;")
    )
    try:
        conn.executescript(script)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
