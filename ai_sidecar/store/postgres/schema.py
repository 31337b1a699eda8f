"""The PostgreSQL store's tables, and the migrations that bring a database up to date.

The one row of ``scout_schema`` holds the schema version. At start-up
:func:`migrate` runs, in one transaction and under an advisory lock (two
replicas may start together), every step above the database's version:

- **1**: alerts, the worker's cursor, incidents, their members, feedback and
  the return trip's outbox, as in the SQLite store's version 2.
- **2**: ``lease``, one row whose ``epoch`` is the worker lease's fencing
  token (:mod:`ai_sidecar.store.postgres.lease`).
- **3**: ``llm_exchanges``, the LLM audit (:mod:`ai_sidecar.store.exchanges`).
- **4**: ``incident_actions``, what people did from the console
  (:mod:`ai_sidecar.store.actions`), and an index of feedback by time.
- **5**: ``console_users``, ``console_sessions`` and ``console_login_failures``
  (:mod:`ai_sidecar.store.accounts`).
- **6**: ``incident_listing``, a summary row per incident for the console's
  list (:mod:`ai_sidecar.store.listing`); the rows of incidents stored before
  it are written when the store opens. Its text columns are plain ``text``:
  they hold sanitised titles and case-folded search text, never U+0000.
- **7**: ``report_digests``, which scheduled report digests were sent and who
  is sending one (:mod:`ai_sidecar.store.digests`).
- **8**: ``console_preferences``, the console language each user chose
  (:mod:`ai_sidecar.store.accounts`).

A database stamped with a version above :data:`SCHEMA_VERSION` was written by
a newer Scout and is refused untouched (:class:`SchemaVersionError`).

Times are stored as the SQLite store stores them, fixed-width UTC text
(:func:`ai_sidecar.store.sqlite.incidents.stamp`): equal instants compare
equal, text order is time order, and microseconds survive. The outbox keeps
Unix seconds as ``double precision``. Everything a client sent (labels,
annotations, URLs) is kept as ASCII JSON text, never as ``jsonb`` or a bare
``text`` column, so no character of it (not even U+0000) can be refused.
Nor is it ever cast to ``json`` in a query: PostgreSQL's JSON parser refuses
a ``\\u0000`` escape or a lone surrogate, so the store parses docs in Python.
"""

from __future__ import annotations

from ai_sidecar.store.postgres.engine import LOCK_CLASS, MIGRATION_LOCK, Cursor
from ai_sidecar.store.protocol import SchemaVersionError

_VERSION_1 = """
CREATE TABLE alerts (
    -- From a sequence: never reused, even after pruning the newest rows, so an
    -- alert can never land below the worker's cursor and be skipped.
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint text NOT NULL,
    status text NOT NULL,
    starts_at text NOT NULL,
    -- labels, annotations, endsAt and generatorURL, as JSON.
    doc text NOT NULL,
    received_at text NOT NULL,
    UNIQUE (fingerprint, status, starts_at)
);
CREATE INDEX alerts_received ON alerts (received_at);
CREATE TABLE progress (
    id integer PRIMARY KEY CHECK (id = 0),
    cursor bigint NOT NULL
);
INSERT INTO progress (id, cursor) VALUES (0, 0);
CREATE TABLE incidents (
    id text PRIMARY KEY,
    status text NOT NULL,
    priority text NOT NULL,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    resolved_at text,
    doc text NOT NULL
);
CREATE INDEX incidents_updated ON incidents (updated_at);
CREATE INDEX incidents_status_updated ON incidents (status, updated_at);
CREATE INDEX incidents_status_resolved ON incidents (status, resolved_at);
CREATE INDEX incidents_priority ON incidents (priority, updated_at);
CREATE TABLE incident_members (
    incident_id text NOT NULL,
    fingerprint text NOT NULL,
    position integer NOT NULL,
    doc text NOT NULL,
    PRIMARY KEY (incident_id, fingerprint)
);
CREATE TABLE feedback (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id text NOT NULL REFERENCES incidents (id),
    useful boolean NOT NULL,
    -- As JSON: a comment is whatever a person typed.
    comment text NOT NULL,
    at text NOT NULL
);
CREATE INDEX feedback_incident ON feedback (incident_id, id);
CREATE TABLE return_trip (
    peer text NOT NULL,
    fingerprint text NOT NULL,
    incident_id text NOT NULL,
    member text NOT NULL,
    state text NOT NULL CHECK (state IN ('firing', 'resolved')),
    alert text NOT NULL,
    raw text NOT NULL,
    ends_at double precision,
    resolved_until double precision,
    due_at double precision NOT NULL,
    posted_at double precision,
    revision integer NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, fingerprint)
);
CREATE INDEX return_trip_due ON return_trip (due_at);
CREATE INDEX return_trip_peer_due ON return_trip (peer, due_at);
CREATE INDEX return_trip_member ON return_trip (member);
CREATE INDEX return_trip_incident ON return_trip (incident_id);
"""

_VERSION_2 = """
CREATE TABLE lease (
    id integer PRIMARY KEY CHECK (id = 0),
    -- Raised by each new holder of the worker lease; every fenced transaction
    -- proves (and holds, FOR SHARE, until it ends) the epoch of its holder.
    epoch bigint NOT NULL
);
INSERT INTO lease (id, epoch) VALUES (0, 0);
"""

_VERSION_3 = """
-- The LLM audit: one row per exchange, the exchange as ASCII JSON in doc.
CREATE TABLE llm_exchanges (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id text NOT NULL,
    at text NOT NULL,
    doc text NOT NULL
);
CREATE INDEX llm_exchanges_at ON llm_exchanges (at);
CREATE INDEX llm_exchanges_incident ON llm_exchanges (incident_id, at);
"""

_VERSION_4 = """
-- What people did from the console (ai_sidecar.store.actions), and reports
-- that read feedback over a period.
CREATE TABLE incident_actions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id text NOT NULL REFERENCES incidents (id),
    kind text NOT NULL,
    actor text NOT NULL,
    detail text NOT NULL,
    at text NOT NULL
);
CREATE INDEX incident_actions_incident ON incident_actions (incident_id, id);
CREATE INDEX incident_actions_at ON incident_actions (at);
CREATE INDEX feedback_at ON feedback (at);
"""

_VERSION_5 = """
-- The console's users, sessions and failed sign-ins (ai_sidecar.store.accounts).
CREATE TABLE console_users (
    name text PRIMARY KEY,
    role text NOT NULL CHECK (role IN ('viewer', 'operator')),
    password_hash text NOT NULL,
    created_at text NOT NULL,
    updated_at text NOT NULL
);
CREATE TABLE console_sessions (
    -- SHA-256 of the cookie's id, never the id itself.
    key text PRIMARY KEY,
    user_name text NOT NULL,
    csrf_token text NOT NULL,
    credential text NOT NULL,
    created_at text NOT NULL,
    seen_at text NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_name);
CREATE TABLE console_login_failures (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text NOT NULL,
    at text NOT NULL
);
CREATE INDEX console_login_failures_key ON console_login_failures (key, at);
CREATE INDEX console_login_failures_at ON console_login_failures (at);
"""

_VERSION_6 = """
-- The console's incident list (ai_sidecar.store.listing).
CREATE TABLE incident_listing (
    id text PRIMARY KEY,
    status text NOT NULL,
    priority text NOT NULL,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    resolved_at text,
    site text NOT NULL,
    -- The notifications' plain-words title, and the root cause in words.
    title text NOT NULL,
    cause text NOT NULL,
    members integer NOT NULL,
    firing integer NOT NULL,
    analyst text NOT NULL,
    -- Case-folded title, root cause and member labels, for the text search.
    search text NOT NULL
);
-- Newest first, whole or narrowed by status, priority or site.
CREATE INDEX incident_listing_created ON incident_listing (created_at, id);
CREATE INDEX incident_listing_status ON incident_listing (status, created_at, id);
CREATE INDEX incident_listing_priority ON incident_listing (priority, created_at, id);
CREATE INDEX incident_listing_site ON incident_listing (site, created_at, id);
"""

# Step n brings a database from version n - 1 to n.
_VERSION_7 = """
-- Scheduled report digests: one row per slot, claimed by the replica sending it
-- (ai_sidecar.store.digests).
CREATE TABLE report_digests (
    slot text PRIMARY KEY,
    holder text NOT NULL,
    claimed_until text NOT NULL,
    done_at text
);
"""

_VERSION_8 = """
-- The console language each user chose (ai_sidecar.store.accounts).
CREATE TABLE console_preferences (
    user_name text PRIMARY KEY,
    language text NOT NULL,
    updated_at text NOT NULL
);
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
)
SCHEMA_VERSION = len(MIGRATIONS)


async def schema_version(cur: Cursor) -> int:
    """The version stamped in the database (0: a new, empty one)."""
    await cur.execute("SELECT to_regclass('scout_schema') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    await cur.execute("SELECT version FROM scout_schema")
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def migrate(cur: Cursor, name: str) -> None:
    """Bring the database behind ``cur`` (inside a transaction) to :data:`SCHEMA_VERSION`."""
    await cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
    version = await schema_version(cur)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"cannot use the store {name}: it has schema version {version}, "
            f"newer than this Scout's {SCHEMA_VERSION}"
        )
    if version == SCHEMA_VERSION:
        return
    if version == 0:
        await cur.execute("CREATE TABLE scout_schema (version integer NOT NULL)")
        await cur.execute("INSERT INTO scout_schema (version) VALUES (0)")
    for step in MIGRATIONS[version:]:
        await cur.execute(step)
    await cur.execute("UPDATE scout_schema SET version = %s", (SCHEMA_VERSION,))
